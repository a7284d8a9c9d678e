"""One module per CLI subcommand: plain functions that matcher/cli.py calls."""
