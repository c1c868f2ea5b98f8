"""CNN front ends of real LSTM models against Keras: Conv1D → pooling → LSTM, the
Reshape → TimeDistributed(Conv1D/MaxPooling1D/Flatten) → LSTM pattern, and an LSTM feeding
convolutions."""

from __future__ import annotations

import numpy as np
import pytest

import torch_lstm_probe as tlp
from tests.helpers import assert_model_parity, randomize_biases, save, seed

pytestmark = pytest.mark.keras


def _input(klib, shape):
    return klib.Input(shape)


def conv_front(klib):
    L = klib.layers
    inp = _input(klib, (20, 4))
    y = L.Conv1D(6, 3, padding="causal", dilation_rate=2, activation="relu", name="conv")(inp)
    y = L.MaxPooling1D(2, name="pool")(y)
    y = L.Conv1D(5, 3, strides=2, padding="same", name="conv2")(y)
    y = L.LSTM(4, return_sequences=True, name="lstm")(y)
    y = L.GlobalAveragePooling1D(name="gap")(y)
    return klib.Model(inp, L.Dense(2, name="head")(y))


def time_distributed_cnn(klib):
    L = klib.layers
    inp = _input(klib, (24, 3))
    y = L.Reshape((4, 6, 3), name="windows")(inp)  # 4 windows of 6 steps
    y = L.TimeDistributed(L.Conv1D(5, 3, activation="relu"), name="td_conv")(y)
    y = L.TimeDistributed(L.MaxPooling1D(2), name="td_pool")(y)
    y = L.TimeDistributed(L.Flatten(), name="td_flat")(y)
    y = L.LSTM(4, name="lstm")(y)
    return klib.Model(inp, L.Dense(1, activation="sigmoid", name="head")(y))


def lstm_into_conv(klib):
    L = klib.layers
    inp = _input(klib, (12, 3))
    y = L.LSTM(6, return_sequences=True, name="lstm")(inp)
    y = L.Conv1D(4, 3, padding="same", name="conv")(y)
    y = L.AveragePooling1D(2, name="pool")(y)
    y = L.Flatten(name="flat")(y)
    return klib.Model(inp, L.Dense(3, name="head")(y))


BUILDERS = {"conv_front": conv_front, "time_distributed_cnn": time_distributed_cnn, "lstm_into_conv": lstm_into_conv}


@pytest.mark.parametrize("fmt", ["keras", "h5"])
@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_cnn_lstm_models(klib, tmp_path, kind, fmt):
    seed(klib)
    model = BUILDERS[kind](klib)
    randomize_biases(model, np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((3, *tuple(model.inputs[0].shape[1:]))).astype(np.float32)
    converted = tlp.load_keras(save(model, tmp_path, fmt))
    assert_model_parity(klib, model, converted, [x])
    tlp.save(converted, tmp_path / "m.safetensors")
    assert_model_parity(klib, model, tlp.load(tmp_path / "m.safetensors"), [x])
