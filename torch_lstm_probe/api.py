"""The public entry points: load_keras, probe, extract, open_activations, save, load."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from .extract import extract, open_activations
from .io import load, save
from .model import KerasModel
from .probe import probe

__all__ = ["load_keras", "probe", "extract", "open_activations", "save", "load"]


def load_keras(
    source: Any,
    weights: Any = None,
    custom_layers: Mapping[str, Callable[[dict[str, Any], list[np.ndarray]], nn.Module]] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> KerasModel:
    """Loads a Keras model as a native PyTorch model whose outputs match Keras.

    Args:
        source: a Keras 3 ``.keras`` file, a legacy ``.h5`` (Keras 1/2, tf.keras, tf_keras,
            Keras 3), an architecture ``.json`` (with ``weights=``), or an in-memory Keras model.
        weights: the weights-only ``.h5`` that goes with a JSON architecture.
        custom_layers: ``{"ClassName": converter}``; ``converter(config, weights)`` gets the Keras
            config dict and the weights in ``get_weights()`` order and returns an ``nn.Module``
            that takes and returns tensors in Keras layout.
        device: where to put the model.
        dtype: floating dtype of the parameters (float32 by default).

    Returns:
        A :class:`KerasModel` in eval mode, with one submodule per Keras layer.

    Raises:
        KerasFileError: the file is not a Keras file, is damaged, or has no weights.
        UnsupportedLayerError: a layer class has no converter.
        UnsupportedOptionError: a layer option cannot be reproduced exactly.
        WeightMismatchError: stored weights do not fit the architecture.

    Example:
        >>> model = tlp.load_keras("model.h5")
        >>> y = model(x)
    """
    from torch_lstm_probe.converters import load_keras as _load  # lazy: the runtime never needs the converters

    return _load(source, weights=weights, custom_layers=custom_layers, device=device, dtype=dtype)
