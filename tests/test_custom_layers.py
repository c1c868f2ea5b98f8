"""custom_layers: user converters for classes we do not know, and the hint when they are missing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import torch_lstm_probe as tlp
from tests.helpers import assert_model_parity, save, seed

pytestmark = pytest.mark.keras


def _scale_layer_class(klib):
    """A custom Keras layer with one weight: y = x * w (w per feature)."""
    register = klib.saving.register_keras_serializable if hasattr(klib, "saving") else klib.utils.register_keras_serializable

    @register(package="tests")
    class Scale(klib.layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(name="w", shape=(input_shape[-1],), initializer="random_normal")

        def call(self, x):
            return x * self.w

    return Scale


class TorchScale(nn.Module):
    """What a user writes: takes and returns tensors in Keras layout."""

    def __init__(self, w: np.ndarray) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.from_numpy(w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w


def _model(klib):
    seed(klib)
    scale = _scale_layer_class(klib)
    L = klib.layers
    inp = klib.Input((6, 4))
    y = scale(name="scale")(inp)
    y = L.LSTM(3, name="lstm")(y)
    return klib.Model(inp, y)


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_custom_converter_matches_keras(klib, tmp_path, fmt):
    model = _model(klib)
    path = save(model, tmp_path, fmt)
    received = {}

    def convert_scale(config, weights):
        received.update(config=config, weights=weights)
        return TorchScale(weights[0])

    converted = tlp.load_keras(path, custom_layers={"Scale": convert_scale})
    assert received["config"]["name"] == "scale"
    assert [w.shape for w in received["weights"]] == [(4,)]
    x = np.random.default_rng(0).standard_normal((2, 6, 4)).astype(np.float32)
    assert_model_parity(klib, model, converted, [x])
    with pytest.raises(TypeError, match="custom module .*TorchScale.*cannot be saved"):
        tlp.save(converted, tmp_path / "m.safetensors")


def test_unknown_custom_class_shows_the_option(klib, tmp_path):
    path = save(_model(klib), tmp_path, "h5")
    with pytest.raises(tlp.UnsupportedLayerError, match=r"layer 'scale' \(Scale\).*custom_layers=\{'Scale': converter\}"):
        tlp.load_keras(path)


def test_custom_converter_must_return_a_module(klib, tmp_path):
    path = save(_model(klib), tmp_path, "h5")
    with pytest.raises(TypeError, match=r"custom_layers\['Scale'\] returned a int. Expected an nn.Module"):
        tlp.load_keras(path, custom_layers={"Scale": lambda config, weights: 3})
