"""The one hierarchy of errors raised by torch_lstm_probe and its converters."""

from __future__ import annotations

__all__ = [
    "TorchLstmProbeError",
    "KerasFileError",
    "UnsupportedLayerError",
    "UnsupportedOptionError",
    "WeightMismatchError",
    "GraphError",
    "InputError",
    "ProbeKeyError",
]


class TorchLstmProbeError(Exception):
    """Base class of every error this package raises on purpose."""


class KerasFileError(TorchLstmProbeError, ValueError):
    """The file is not a Keras model file, is damaged, or lacks what a model needs."""


class UnsupportedLayerError(TorchLstmProbeError, ValueError):
    """A layer class has no converter (and no ``custom_layers`` entry)."""


class UnsupportedOptionError(TorchLstmProbeError, ValueError):
    """A layer uses a config key or value that cannot be reproduced exactly."""


class WeightMismatchError(TorchLstmProbeError, ValueError):
    """Stored weights are missing, surplus, or do not have the shapes the config implies."""


class GraphError(TorchLstmProbeError, ValueError):
    """A model graph refers to tensors or layers that do not exist, or has a cycle."""


class InputError(TorchLstmProbeError, ValueError):
    """An input given to a converted model has the wrong rank, size or dtype."""


class ProbeKeyError(TorchLstmProbeError, KeyError):
    """A probe key names no layer, output or gate of the model."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""
