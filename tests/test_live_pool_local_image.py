"""Adaptive pooling (Keras 3), LocallyConnected1D/2D (tf_keras) and deterministic image layers.

Each model is run by Keras once and compared with its ``.keras`` and ``.h5`` loads (and a
``tlp.save``/``tlp.load`` round trip), every layer at ``ATOL["cpu_float32"]``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torch_lstm_probe as tlp
from tests.helpers import assert_close, assert_model_parity, keras_reference, save
from tests.test_live_conv2d3d import _branches, _check, _convert
from torch_lstm_probe.errors import UnsupportedOptionError
from torch_lstm_probe.layers.conv import adaptive_bins

pytestmark = pytest.mark.keras

SEQUENCE = (9, 3)  # (L, C)
IMAGE = (7, 9, 4)  # (H, W, C)
VOLUME = (3, 4, 5, 2)  # (D, H, W, C)


# ---------------------------------------------------------------------------- adaptive pooling


def _adaptive(L, rank: int, sizes: list, data_format: str = "channels_last") -> list:
    layers = []
    for kind in ("Max", "Average"):
        layer_type = getattr(L, f"Adaptive{kind}Pooling{rank}D")
        for i, size in enumerate(sizes):
            layers.append(layer_type(size, data_format=data_format, name=f"{kind.lower()}{i}"))
    return layers


ADAPTIVE = {
    "1d": (SEQUENCE, 1, [4, 3, 1, 12]),  # uneven, even, global, more outputs than steps
    "2d": (IMAGE, 2, [(3, 4), (7, 2), (10, 5)]),
    "3d": (VOLUME, 3, [(2, 3, 2), (3, 1, 4)]),
    "2d_first": ((4, 7, 9), 2, [(3, 4), (5, 2)]),
}


@pytest.mark.parametrize("case", list(ADAPTIVE))
def test_adaptive_pooling(keras3, tmp_path, case):
    shape, rank, sizes = ADAPTIVE[case]
    fmt = "channels_first" if case.endswith("first") else "channels_last"
    keras3.utils.set_random_seed(0)
    model = _branches(keras3, shape, lambda L: _adaptive(L, rank, sizes, fmt), f"adaptive_{case}")
    _check(keras3, model, tmp_path)


@pytest.mark.parametrize("length, out", [(9, 4), (5, 3), (3, 5), (7, 7), (10, 4), (1, 3)])
def test_adaptive_bins(length, out):
    """Windows ``[floor(i L / O), ceil((i + 1) L / O))``, each ``small`` or ``small + 1`` long."""
    small, starts, is_big = adaptive_bins(length, out)
    for i, (start, big) in enumerate(zip(starts, is_big)):
        end = -(-(i + 1) * length // out)
        assert start == i * length // out
        assert end - start == small + big


def test_adaptive_refused():
    with pytest.raises(UnsupportedOptionError, match=r"'output_size' is \[2, 0\]"):
        _convert("AdaptiveMaxPooling2D", {"output_size": [2, 0]})
    with pytest.raises(UnsupportedOptionError, match=r"data_format is 'NHWC'"):
        _convert("AdaptiveAveragePooling1D", {"output_size": [2], "data_format": "NHWC"})
    spec = _convert("AdaptiveAveragePooling3D", {"output_size": [1, 2, 1]})
    assert spec.config.output_size == (1, 2, 1)


# ---------------------------------------------------------------------------- LocallyConnected (tf_keras)


def _local1d(L, f: str = "channels_last") -> list:
    C = L.LocallyConnected1D
    return [
        C(4, 3, implementation=1, activation="relu", data_format=f, name="i1_valid"),
        C(3, 2, strides=2, implementation=1, use_bias=False, data_format=f, name="i1_s2"),
        C(3, 3, strides=2, padding="same", implementation=2, data_format=f, name="i2_same_s2"),
        C(2, 4, strides=3, implementation=2, use_bias=False, activation="tanh", data_format=f, name="i2_valid"),
        C(2, 4, strides=3, padding="same", implementation=3, data_format=f, name="i3_same_s3"),
        C(3, 2, implementation=3, data_format=f, name="i3_valid"),
        C(2, 2, padding="same", implementation=2, data_format=f, name="i2_same_even"),
    ]


def _local2d(L, f: str = "channels_last") -> list:
    C = L.LocallyConnected2D
    return [
        C(3, (3, 2), strides=(2, 1), implementation=1, activation="relu", data_format=f, name="i1_valid"),
        C(2, 2, implementation=1, use_bias=False, data_format=f, name="i1_nobias"),
        C(2, 3, strides=2, padding="same", implementation=2, data_format=f, name="i2_same"),
        C(3, (2, 3), implementation=2, use_bias=False, activation="tanh", data_format=f, name="i2_valid"),
        C(2, (2, 3), strides=(1, 2), padding="same", implementation=3, data_format=f, name="i3_same"),
        C(2, (3, 3), strides=(2, 3), implementation=3, data_format=f, name="i3_valid"),
    ]


LOCAL = {
    "1d": (SEQUENCE, _local1d, "channels_last"),
    "2d": ((5, 6, 3), _local2d, "channels_last"),
    "1d_first": ((3, 9), _local1d, "channels_first"),
    "2d_first": ((3, 5, 6), _local2d, "channels_first"),
}


@pytest.mark.parametrize("case", list(LOCAL))
def test_locally_connected(tf_keras, tmp_path, case):
    shape, make, fmt = LOCAL[case]
    tf_keras.utils.set_random_seed(0)
    model = _branches(tf_keras, shape, lambda L: make(L, fmt), f"local_{case}")
    _check(tf_keras, model, tmp_path)


def _lc(config: dict, weights=(), class_name: str = "LocallyConnected1D"):
    return _convert(class_name, {"filters": 2, "kernel_size": [3], "strides": [1], **config}, weights)


def test_locally_connected_refused():
    with pytest.raises(UnsupportedOptionError, match=r"'implementation' is 4.*Expected one of \[1, 2, 3\]"):
        _lc({"implementation": 4})
    with pytest.raises(UnsupportedOptionError, match=r"padding is 'same' with implementation 1.*\['valid'\]"):
        _lc({"implementation": 1, "padding": "same"})
    with pytest.raises(UnsupportedOptionError, match=r"padding is 'causal'.*\['valid', 'same'\]"):
        _lc({"implementation": 2, "padding": "causal"})
    with pytest.raises(UnsupportedOptionError, match=r"implementation 3 with use_bias False.*Expected use_bias True"):
        _lc({"implementation": 3, "use_bias": False}, (np.zeros(42, np.float32),))
    # 20 values with 1 filter and 2 outputs: 4 taps x 5 channels (L = 3) or 5 taps x 4 channels (L = 4).
    ambiguous = (np.zeros(20, np.float32), np.zeros((2, 1), np.float32))
    with pytest.raises(UnsupportedOptionError, match=r"stores 20 kernel values, which fit 2 input sizes"):
        _lc({"implementation": 3, "padding": "same", "strides": [2], "filters": 1}, ambiguous)


def test_locally_connected_weight_shapes_checked():
    from torch_lstm_probe.errors import WeightMismatchError

    with pytest.raises(WeightMismatchError, match=r"'kernel' has shape \(5, 6\). Expected 3 axes for implementation 1"):
        _lc({"implementation": 1}, (np.zeros((5, 6), np.float32), np.zeros((5, 2), np.float32)))
    with pytest.raises(WeightMismatchError, match=r"no weights"):
        _lc({"implementation": 2})


def test_locally_connected_input_size_checked():
    from torch_lstm_probe.errors import InputError
    from torch_lstm_probe.layers.locally_connected import LocallyConnected1D, LocallyConnectedConfig

    module = LocallyConnected1D(LocallyConnectedConfig(3, 2, 7, 3, output_size=(7,)))
    module.keras_name = "lc"
    with pytest.raises(InputError, match=r"'lc' \(LocallyConnected1D\).*one kernel per output position"):
        module(torch.zeros(1, 8, 3))
    assert module(torch.zeros(1, 9, 3)).shape == (1, 7, 2)


# ---------------------------------------------------------------------------- image layers (Keras 3)


def _image_layers(L) -> list:
    return [
        L.AutoContrast(name="contrast_255"),
        L.AutoContrast(value_range=(-1, 2), name="contrast_range"),
        L.AutoContrast(value_range=(0, 1), data_format="channels_first", name="contrast_first"),
    ]


def test_image_layers(keras3, tmp_path):
    keras3.utils.set_random_seed(0)
    model = _branches(keras3, (5, 6, 3), _image_layers, "image_layers")
    x = np.random.default_rng(1).uniform(-0.5, 1.5, (2, 5, 6, 3)).astype(np.float32)
    x[1, :, :, 1] = 0.25  # a constant channel: AutoContrast keeps it (NaN scale)
    x[0, :, 2, :] = 0.75  # a constant column of the channels_first view
    reference = keras_reference(keras3, model, [x])
    for fmt in ("keras", "h5"):
        assert_model_parity(keras3, model, tlp.load_keras(save(model, tmp_path, fmt)), [x], reference=reference)


IDENTITY_AT_INFERENCE = {
    # Keras 3 cannot write Solarization to .h5 (its config deep copy fails), so .keras only.
    "solarization": (lambda L: L.Solarization(0.3, (0.2, 0.6), value_range=(0, 1), seed=3), ("keras",)),
    "equalization": (lambda L: L.Equalization(value_range=(0, 1), bins=16), ("keras", "h5")),
}


@pytest.mark.parametrize("case", list(IDENTITY_AT_INFERENCE))
def test_identity_at_inference(keras3, tmp_path, case):
    """Solarization and Equalization return their input at inference. Equalization returns the input
    tensor itself, so a functional model cannot branch on it (Keras reports a cycle): both are
    checked in a Sequential model on the final output."""
    make, formats = IDENTITY_AT_INFERENCE[case]
    model = keras3.Sequential(
        [keras3.Input((5, 6, 3)), make(keras3.layers), keras3.layers.Activation("tanh")], name=case
    )
    x = np.random.default_rng(1).uniform(0, 1, (2, 5, 6, 3)).astype(np.float32)
    expected = np.asarray(model(x, training=False))
    for fmt in formats:
        with torch.inference_mode():
            assert_close(tlp.load_keras(save(model, tmp_path, fmt))(x), expected, what=fmt)


def test_image_layers_refused():
    with pytest.raises(UnsupportedOptionError, match=r"'layer' \(AutoContrast\).*'value_range' is \[1, 1\]"):
        _convert("AutoContrast", {"value_range": [1, 1]})
    with pytest.raises(UnsupportedOptionError, match=r"'layer' \(Solarization\).*'value_range' is 'abc'"):
        _convert("Solarization", {"value_range": "abc"})
