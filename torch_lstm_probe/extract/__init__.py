"""Extraction over whole datasets: data sources, the streaming loop, shards and their reader."""

from __future__ import annotations

from .ray_data import extract_ray
from .reader import Activations, Column, MaskColumn, open_activations
from .run import DEFAULT_SHARD_BYTES, ExtractionMismatchError, extract

__all__ = [
    "extract",
    "extract_ray",
    "open_activations",
    "Activations",
    "Column",
    "MaskColumn",
    "ExtractionMismatchError",
    "DEFAULT_SHARD_BYTES",
]
