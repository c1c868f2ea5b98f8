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
    register = (
        klib.saving.register_keras_serializable if hasattr(klib, "saving") else klib.utils.register_keras_serializable
    )

    @register(package="tests")
    class Scale(klib.layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(name="w", shape=(input_shape[-1],), initializer="random_normal")

        def call(self, x):
            return x * self.w

        def compute_output_shape(self, input_shape):  # TimeDistributed asks for it
            return input_shape

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
    with pytest.raises(
        tlp.UnsupportedLayerError, match=r"layer 'scale' \(Scale\).*custom_layers=\{'Scale': converter\}"
    ):
        tlp.load_keras(path)


def test_custom_converter_must_return_a_module(klib, tmp_path):
    path = save(_model(klib), tmp_path, "h5")
    with pytest.raises(TypeError, match=r"custom_layers\['Scale'\] returned a int. Expected an nn.Module"):
        tlp.load_keras(path, custom_layers={"Scale": lambda config, weights: 3})


# ---------------------------------------------------------------------------- custom layers inside wrappers


def _simple_rnn_class(klib):
    """A custom recurrent class: Keras' SimpleRNN under another registered name."""
    saving = klib.saving if hasattr(klib, "saving") else klib.utils
    register = saving.register_keras_serializable

    @register(package="tests")
    class MySimpleRNN(klib.layers.SimpleRNN):
        pass

    return MySimpleRNN


class TorchSimpleRNN(nn.Module):
    """What a user writes for MySimpleRNN: h_t = tanh(x_t W + h_{t-1} U + b), Keras layout."""

    def __init__(self, config: dict, weights: list[np.ndarray]) -> None:
        super().__init__()
        self.kernel, self.recurrent, self.bias = (nn.Parameter(torch.from_numpy(w)) for w in weights)
        self.go_backwards = bool(config.get("go_backwards", False))
        self.return_sequences = bool(config.get("return_sequences", False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = x.flip(1) if self.go_backwards else x  # (N, L, F), in processing order
        h = x.new_zeros(x.shape[0], self.recurrent.shape[0])  # (N, H)
        outputs = []
        for t in range(steps.shape[1]):
            h = torch.tanh(steps[:, t] @ self.kernel + h @ self.recurrent + self.bias)  # (N, H)
            outputs.append(h)
        return torch.stack(outputs, 1) if self.return_sequences else h  # (N, L, H) or (N, H)


def _wrapped_model(klib, wrapper: str):
    seed(klib)
    L = klib.layers
    inp = klib.Input((6, 4))
    if wrapper == "TimeDistributed":
        y = L.TimeDistributed(_scale_layer_class(klib)(name="scale"), name="wrapped")(inp)
    else:
        y = L.Bidirectional(_simple_rnn_class(klib)(3, return_sequences=True, name="rnn"), name="wrapped")(inp)
    return klib.Model(inp, L.LSTM(2, name="lstm")(y))


@pytest.mark.parametrize("fmt", ["keras", "h5"])
@pytest.mark.parametrize("wrapper", ["TimeDistributed", "Bidirectional"])
def test_custom_converter_inside_a_wrapper(klib, tmp_path, wrapper, fmt):
    model = _wrapped_model(klib, wrapper)
    path = save(model, tmp_path, fmt)
    name = "Scale" if wrapper == "TimeDistributed" else "MySimpleRNN"
    hint = rf"layer 'wrapped/(layer|forward_layer)' \({name}\).*custom_layers=\{{'{name}'"
    with pytest.raises(tlp.UnsupportedLayerError, match=hint):
        tlp.load_keras(path)
    received: list[dict] = []

    def convert(config, weights):
        received.append(config)
        return TorchScale(weights[0]) if name == "Scale" else TorchSimpleRNN(config, weights)

    converted = tlp.load_keras(path, custom_layers={name: convert})
    x = np.random.default_rng(0).standard_normal((2, 6, 4)).astype(np.float32)
    assert_model_parity(klib, model, converted, [x])
    if wrapper == "Bidirectional":  # one call per half; the backward half's config runs backwards, as Keras builds it
        assert [bool(c.get("go_backwards")) for c in received] == [False, True]
    with pytest.raises(TypeError, match="cannot be saved|has no config"):
        tlp.save(converted, tmp_path / "m.safetensors")


def test_custom_converter_inside_a_wrapper_must_return_a_module(klib, tmp_path):
    path = save(_wrapped_model(klib, "TimeDistributed"), tmp_path, "h5")
    with pytest.raises(TypeError, match=r"layer 'wrapped/layer' \(Scale\): custom_layers\['Scale'\] returned a int"):
        tlp.load_keras(path, custom_layers={"Scale": lambda config, weights: 3})
