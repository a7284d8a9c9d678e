"""Costs of a model config: analytic formulas (`analytic`, no torch), counts of the real modules on the
meta device (`measured`) and live activation bytes (`live_bytes`). Imports only matcher's top level
(config, errors) and, in `measured`, matcher.models."""
