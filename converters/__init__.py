"""All Keras knowledge: readers that turn files into a neutral spec, and one converter per class.

Importing this package never imports TensorFlow or Keras.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from torch_lstm_probe.model import KerasModel

from . import (  # noqa: F401  (importing the converter modules fills the registry)
    activation_layers,
    attention,
    audio,
    bidirectional,
    conv,
    conv_lstm,
    core,
    einsum_dense,
    gru,
    image,
    legacy,
    locally_connected,
    merge,
    normalization,
    preprocessing,
    recurrent,
    reshape,
    rnn_cell,
    simple_rnn,
    text,
)
from .build import CustomConverter, convert_model
from .readers import read
from .registry import supported_classes
from .spec import ModelSpec

__all__ = ["load_keras", "read", "convert_model", "convert_with_source", "supported_classes", "ModelSpec"]


def load_keras(
    source: Any,
    weights: Any = None,
    custom_layers: Mapping[str, CustomConverter] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> KerasModel:
    """Loads a Keras model file (or live model) as a native PyTorch model. See tlp.load_keras."""
    model = convert_with_source(read(source, weights=weights), custom_layers)
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch dtype. Received {dtype}.")
    return model.to(device=device, dtype=dtype).eval()


def convert_with_source(spec: ModelSpec, custom_layers: Mapping[str, CustomConverter] | None = None) -> KerasModel:
    """``spec`` converted, with ``source_info`` (source, Keras version, file format, library) recorded."""
    model = convert_model(spec, custom_layers)
    model.source_info = {
        "source": spec.source,
        "keras_version": str(spec.keras_version),
        "file_format": spec.file_format,
        "library": spec.library,
    }
    return model
