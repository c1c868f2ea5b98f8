"""torch_lstm_probe: Keras LSTM models as native, exact, fast PyTorch modules you can probe.

>>> import torch_lstm_probe as tlp
>>> model = tlp.load_keras("model.keras")
>>> acts = tlp.probe(model, x, layers=["lstm"], gates=True)
"""

from __future__ import annotations

from . import layers
from .analysis import GateStats, Vocabulary, export_lstmvis, gate_stats, load_vocabulary
from .api import extract, load, load_keras, open_activations, probe, save
from .errors import (
    FileLimitError,
    GraphError,
    InputError,
    KerasFileError,
    MultipleErrors,
    PortError,
    ProbeKeyError,
    TorchLstmProbeError,
    UnsafeFileError,
    UnsupportedLayerError,
    UnsupportedOptionError,
    WeightMismatchError,
)
from .extract import extract_ray
from .intervene import ablate_units, activation_patch, intervene, patch_units, scale_units, set_units
from .layers.lstm import LSTMGates
from .model import KerasModel
from .port import port
from .verify import VerifyReport, VerifyRow, verify

__version__ = "0.1.0"

__all__ = [
    "load_keras",
    "probe",
    "intervene",
    "set_units",
    "scale_units",
    "ablate_units",
    "activation_patch",
    "patch_units",
    "verify",
    "VerifyReport",
    "VerifyRow",
    "extract",
    "open_activations",
    "extract_ray",
    "gate_stats",
    "GateStats",
    "export_lstmvis",
    "load_vocabulary",
    "Vocabulary",
    "save",
    "load",
    "port",
    "KerasModel",
    "LSTMGates",
    "layers",
    "TorchLstmProbeError",
    "KerasFileError",
    "UnsafeFileError",
    "FileLimitError",
    "MultipleErrors",
    "UnsupportedLayerError",
    "UnsupportedOptionError",
    "WeightMismatchError",
    "GraphError",
    "InputError",
    "ProbeKeyError",
    "PortError",
]
