"""PyTorch modules of the la / dr / dr_da models: one file per idea, the variants are configurations."""

from matcher.models.cache import DepthKV, KVCache
from matcher.models.model import IGNORE_INDEX, Model

__all__ = ["Model", "KVCache", "DepthKV", "IGNORE_INDEX"]
