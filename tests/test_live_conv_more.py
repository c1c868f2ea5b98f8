"""Transposed, depthwise and separable convolutions against Keras 3 and tf_keras.

Covers Conv1D/2D/3DTranspose (strides, "valid"/"same", output_padding, dilation, odd sizes),
DepthwiseConv1D/2D and SeparableConv1D/2D (depth_multiplier, strides, padding, dilation), one
encoder-decoder feeding an LSTM, channels_first through a channels-last twin, and the options the
converters refuse. Each model is run by Keras once and compared with its ``.keras`` and ``.h5``
loads (and a ``tlp.save``/``tlp.load`` round trip), every layer at ``ATOL["cpu_float32"]``.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest
import torch

import torch_lstm_probe as tlp
from tests.helpers import assert_close, keras_layer_outputs, library_name, save, seed, to_numpy
from tests.test_live_conv2d3d import _branches, _chain, _check, _convert, _randomize
from torch_lstm_probe.errors import InputError, UnsupportedOptionError
from torch_lstm_probe.layers.conv import (
    Conv1DTranspose,
    Conv2DTranspose,
    ConvTransposeConfig,
    DepthwiseConv2D,
    DepthwiseConvConfig,
    SeparableConv1D,
    SeparableConvConfig,
)

pytestmark = pytest.mark.keras

BATCH = 2
SEQUENCE = (9, 3)  # (L, C)
IMAGE = (7, 9, 4)  # (H, W, C): odd sizes, so "same" crops and pads unevenly
VOLUME = (3, 4, 5, 2)  # (D, H, W, C)


def _transpose1d(L) -> list:
    return [
        L.Conv1DTranspose(4, 3, strides=2, activation="relu", name="valid_s2"),
        L.Conv1DTranspose(3, 4, strides=3, padding="same", name="same_s3_even"),
        L.Conv1DTranspose(3, 2, strides=3, output_padding=2, name="valid_op2"),
        L.Conv1DTranspose(2, 4, strides=2, padding="same", output_padding=1, name="same_even_op1"),
        L.Conv1DTranspose(2, 3, strides=2, padding="same", output_padding=0, use_bias=False, name="same_op0"),
        L.Conv1DTranspose(3, 1, strides=3, name="valid_k1_s3"),
    ]


def _transpose2d(L) -> list:
    return [
        L.Conv2DTranspose(3, 3, strides=2, name="valid_s2"),
        L.Conv2DTranspose(3, (4, 3), strides=(2, 3), padding="same", name="same_s23"),
        L.Conv2DTranspose(2, (3, 2), strides=(3, 2), padding="same", output_padding=(2, 1), name="same_op"),
        L.Conv2DTranspose(2, 2, strides=(1, 2), output_padding=(0, 1), activation="tanh", name="valid_op"),
    ]


def _transpose3d(L) -> list:
    return [
        L.Conv3DTranspose(2, 2, strides=2, name="valid_s2"),
        L.Conv3DTranspose(2, (3, 2, 3), strides=(1, 2, 3), padding="same", output_padding=(0, 1, 2), name="same_op"),
        L.Conv3DTranspose(2, (1, 2, 3), strides=(2, 1, 2), padding="same", use_bias=False, name="same"),
    ]


def _depthwise1d(L) -> list:
    return [
        L.DepthwiseConv1D(3, activation="relu", name="dw_valid"),
        L.DepthwiseConv1D(4, strides=2, depth_multiplier=2, padding="same", name="dw_same_s2_m2"),
        L.DepthwiseConv1D(2, dilation_rate=3, padding="same", use_bias=False, activation="tanh", name="dw_same_d3"),
    ]


def _depthwise2d(L) -> list:
    return [
        L.DepthwiseConv2D(3, activation="relu", name="dw_valid"),
        L.DepthwiseConv2D((2, 3), strides=2, depth_multiplier=2, padding="same", name="dw_same_s2_m2"),
        L.DepthwiseConv2D(2, dilation_rate=(2, 1), padding="same", use_bias=False, name="dw_same_d21"),
        L.DepthwiseConv2D((3, 2), strides=2, depth_multiplier=3, name="dw_valid_m3"),  # TF: equal strides,
    ]


def _separable1d(L) -> list:
    return [
        L.SeparableConv1D(4, 3, name="sep_valid"),
        L.SeparableConv1D(3, 4, strides=2, depth_multiplier=3, padding="same", activation="relu", name="sep_s2"),
        L.SeparableConv1D(2, 2, dilation_rate=2, padding="same", use_bias=False, name="sep_same_d2"),
    ]


def _separable2d(L) -> list:
    return [
        L.SeparableConv2D(5, 3, name="sep_valid"),
        L.SeparableConv2D(3, (2, 3), strides=2, depth_multiplier=2, padding="same", activation="relu", name="sep_s2"),
        L.SeparableConv2D(2, 2, dilation_rate=2, padding="same", use_bias=False, name="sep_same_d2"),
    ]


CASES: dict[str, Callable[[Any], Any]] = {
    "conv1d_transpose": lambda k: _branches(k, SEQUENCE, _transpose1d, "conv1d_transpose"),
    "conv2d_transpose": lambda k: _branches(k, IMAGE, _transpose2d, "conv2d_transpose"),
    "conv3d_transpose": lambda k: _branches(k, VOLUME, _transpose3d, "conv3d_transpose"),
    "depthwise_separable_1d": lambda k: _branches(k, SEQUENCE, lambda L: _depthwise1d(L) + _separable1d(L), "ds1d"),
    "depthwise_separable_2d": lambda k: _branches(k, IMAGE, lambda L: _depthwise2d(L) + _separable2d(L), "ds2d"),
    "encoder_decoder_lstm": lambda k: _chain(
        k,
        (12, 3),
        lambda L: [
            L.SeparableConv1D(4, 3, padding="same", activation="relu", name="sep"),
            L.DepthwiseConv1D(3, strides=2, depth_multiplier=2, name="dw"),
            L.Conv1DTranspose(4, 3, strides=2, padding="same", name="up"),
            L.LSTM(5, return_sequences=True, name="lstm"),
            L.Dense(2, name="head"),
        ],
        "enc_dec_lstm",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_conv_more_models(klib, tmp_path, case):
    seed(klib)
    _check(klib, CASES[case](klib), tmp_path)


def test_separable_conv1d_causal(tf_keras, tmp_path):
    """tf_keras' SeparableConv1D also takes ``padding="causal"`` (Keras 3 refuses it)."""
    seed(tf_keras)
    model = _chain(
        tf_keras,
        SEQUENCE,
        lambda L: [L.SeparableConv1D(3, 3, dilation_rate=2, padding="causal", depth_multiplier=2, name="causal")],
        "separable_causal",
    )
    _check(tf_keras, model, tmp_path)


# ---------------------------------------------------------------------------- dilated transposed convolutions

# With oneDNN off (as in this suite) TensorFlow's CPU kernel refuses a dilated Conv2DBackpropInput,
# so a dilated transposed convolution is checked against its twin with dilation 1 and the kernel
# spread out: tap j sits at position j * d of a kernel (k - 1) * d + 1 long, zeros between. TF's
# output size and cropping depend on the dilated span only, so both give the same output.
DILATED: dict[str, tuple[tuple[int, ...], list[dict[str, Any]]]] = {
    "Conv1DTranspose": (
        SEQUENCE,
        [
            {"filters": 3, "kernel_size": (2,), "dilation_rate": (2,), "padding": "same"},
            {"filters": 3, "kernel_size": (3,), "dilation_rate": (2,), "output_padding": 0},
            {"filters": 2, "kernel_size": (3,), "dilation_rate": (2,), "padding": "same", "output_padding": 0},
        ],
    ),
    "Conv2DTranspose": (
        IMAGE,
        [
            {"filters": 3, "kernel_size": (2, 3), "dilation_rate": (2, 2), "padding": "same"},
            {"filters": 2, "kernel_size": (3, 2), "dilation_rate": (2, 2), "activation": "relu"},
        ],
    ),
    "Conv3DTranspose": (
        VOLUME,
        [{"filters": 2, "kernel_size": (2, 2, 2), "dilation_rate": (1, 2, 1), "padding": "same"}],
    ),
}


def _spread_kernel(kernel: np.ndarray, dilation: tuple[int, ...]) -> np.ndarray:
    """``(*k, out, in)`` → ``(*((k - 1) * d + 1), out, in)`` with tap ``j`` at ``j * d`` and zeros between."""
    rank = len(dilation)
    spans = [(k - 1) * d + 1 for k, d in zip(kernel.shape[:rank], dilation)]
    spread = np.zeros((*spans, *kernel.shape[rank:]), kernel.dtype)
    spread[tuple(slice(None, None, d) for d in dilation)] = kernel
    return spread


@pytest.mark.parametrize("class_name", list(DILATED))
def test_dilated_transpose_against_spread_twin(klib, tmp_path, class_name):
    if class_name == "Conv3DTranspose" and library_name(klib) == "tf_keras":
        pytest.skip("tf_keras' Conv3DTranspose ignores dilation_rate and drops it from its config")
    seed(klib)
    shape, options = DILATED[class_name]
    layer_type = getattr(klib.layers, class_name)
    dilated = _branches(
        klib, shape, lambda L: [layer_type(**o, name=f"d{i}") for i, o in enumerate(options)], "dilated"
    )
    _randomize(dilated, np.random.default_rng(0))

    def twin_layers(L) -> list:
        out = []
        for i, o in enumerate(options):
            spans = tuple((k - 1) * d + 1 for k, d in zip(o["kernel_size"], o["dilation_rate"]))
            out.append(layer_type(**{**o, "kernel_size": spans, "dilation_rate": 1}, name=f"d{i}"))
        return out

    twin = _branches(klib, shape, twin_layers, "spread_twin")
    for source, target in zip(dilated.layers[1:], twin.layers[1:]):
        kernel, bias = source.get_weights()
        target.set_weights([_spread_kernel(kernel, tuple(source.get_config()["dilation_rate"])), bias])
    x = np.random.default_rng(1).standard_normal((BATCH, *shape)).astype(np.float32)
    expected = keras_layer_outputs(klib, twin, [x])
    for fmt in ("keras", "h5"):
        acts = tlp.probe(tlp.load_keras(save(dilated, tmp_path, fmt)), x)
        for name, value in expected.items():
            assert_close(acts[name], value, what=f"{name} .{fmt}")


# ---------------------------------------------------------------------------- channels_first

TWINS: dict[str, tuple[tuple[int, ...], Callable[[Any, str], list]]] = {
    "front1d": (
        SEQUENCE,
        lambda L, f: [
            L.Conv1DTranspose(4, 3, strides=2, padding="same", output_padding=1, data_format=f, name="up"),
            L.DepthwiseConv1D(3, depth_multiplier=2, padding="same", data_format=f, name="dw"),
            L.SeparableConv1D(3, 2, strides=2, data_format=f, name="sep"),
        ],
    ),
    "front2d": (
        IMAGE,
        lambda L, f: [
            L.Conv2DTranspose(3, (3, 2), strides=(2, 3), padding="same", data_format=f, name="up"),
            L.DepthwiseConv2D(3, strides=2, depth_multiplier=2, padding="same", data_format=f, name="dw"),
            L.SeparableConv2D(4, 2, padding="same", data_format=f, name="sep"),
        ],
    ),
}


@pytest.mark.parametrize("case", list(TWINS))
def test_channels_first_against_channels_last_twin(klib, tmp_path, case):
    seed(klib)
    shape, make = TWINS[case]
    last = _chain(klib, shape, lambda L: make(L, "channels_last"), f"{case}_last")
    first = _chain(klib, (shape[-1], *shape[:-1]), lambda L: make(L, "channels_first"), f"{case}_first")
    _randomize(last, np.random.default_rng(0))
    for source, target in zip(last.layers, first.layers):
        target.set_weights(source.get_weights())
    x = np.random.default_rng(1).standard_normal((BATCH, *shape)).astype(np.float32)
    expected = keras_layer_outputs(klib, last, [x])  # channels last
    for fmt in ("keras", "h5"):
        acts = tlp.probe(tlp.load_keras(save(first, tmp_path, fmt)), np.moveaxis(x, -1, 1).copy())
        for name, value in expected.items():
            assert_close(np.moveaxis(to_numpy(acts[name]), 1, -1), value, what=f"{name} .{fmt} {library_name(klib)}")


# ---------------------------------------------------------------------------- refused options and input errors


@pytest.mark.parametrize(
    "class_name, config, weights, match",
    [
        pytest.param(
            "Conv2DTranspose",
            {"filters": 2, "kernel_size": [3, 3], "strides": [2, 2], "output_padding": [1, 2]},
            (np.zeros((3, 3, 2, 4)), np.zeros(2)),
            r"output_padding is \[1, 2\] with strides \[2, 2\].*smaller than its stride",
            id="output_padding_ge_stride",
        ),
        pytest.param(
            "Conv1DTranspose",
            {"filters": 2, "kernel_size": [2], "strides": [2], "padding": "same", "output_padding": [0]},
            (np.zeros((2, 2, 4)), np.zeros(2)),
            r"output_padding \[0\].*span 2 is even.*Expected output_padding >= 1",
            id="same_even_span_op0",
        ),
        pytest.param(
            "Conv2DTranspose",
            {"filters": 2, "kernel_size": [3, 3], "output_padding": [0, -1]},
            (),
            r"'output_padding' is \[0, -1\].*non-negative",
            id="output_padding_negative",
        ),
        pytest.param(
            "Conv1DTranspose",
            {"filters": 2, "kernel_size": [3], "padding": "causal"},
            (np.zeros((3, 2, 4)), np.zeros(2)),
            r"padding is 'causal'.*Expected one of \['valid', 'same'\]",
            id="transpose_causal",
        ),
        pytest.param(
            "Conv2DTranspose",
            {"filters": 2, "kernel_size": [3, 3], "groups": 2},
            (),
            r"'groups' is 2.*Expected one of \[1, None\]",
            id="transpose_groups",
        ),
        pytest.param(
            "DepthwiseConv2D",
            {"kernel_size": [3, 3], "groups": 3},
            (),
            r"'groups' is 3.*Expected one of \[1, None\]",
            id="depthwise_groups",
        ),
        pytest.param(
            "DepthwiseConv1D",
            {"kernel_size": [3], "padding": "causal"},
            (np.zeros((3, 4, 1)), np.zeros(4)),
            r"padding is 'causal'.*Expected one of \['valid', 'same'\]",
            id="depthwise_causal",
        ),
        pytest.param(
            "SeparableConv2D",
            {"filters": 2, "kernel_size": [3, 3], "padding": "causal"},
            (np.zeros((3, 3, 4, 1)), np.zeros((1, 1, 4, 2)), np.zeros(2)),
            r"padding is 'causal'.*Expected one of \['valid', 'same'\]",
            id="separable2d_causal",
        ),
        pytest.param(
            "SeparableConv2D",
            {"filters": 2, "kernel_size": [3, 3], "depth_multiplier": 0},
            (),
            r"'depth_multiplier' is 0.*positive integer",
            id="depth_multiplier_zero",
        ),
    ],
)
def test_refused_options(class_name, config, weights, match):
    with pytest.raises(UnsupportedOptionError, match=rf"'layer' \({class_name}\).*{match}"):
        _convert(class_name, config, weights)


def test_weight_shapes_checked():
    """A pointwise kernel that does not fit ``C * M`` is refused before any module is built."""
    from torch_lstm_probe.errors import WeightMismatchError

    weights = (np.zeros((3, 4, 2)), np.zeros((1, 4, 5)), np.zeros(5))
    with pytest.raises(WeightMismatchError, match=r"pointwise_kernel.*Expected \(1, 8, 5\)"):
        _convert("SeparableConv1D", {"filters": 5, "kernel_size": [3], "depth_multiplier": 2}, weights)


@pytest.mark.parametrize(
    "make, shape, match",
    [
        pytest.param(lambda: Conv2DTranspose(ConvTransposeConfig(3, 2, 3)), (2, 5, 5), r"rank 3", id="t_rank"),
        pytest.param(lambda: Conv2DTranspose(ConvTransposeConfig(3, 2, 3)), (2, 5, 5, 4), r"3 features", id="t_ch"),
        pytest.param(
            lambda: DepthwiseConv2D(DepthwiseConvConfig(3, 3)), (2, 2, 5, 3), r"needs at least \(3, 3\)", id="dw_small"
        ),
        pytest.param(
            lambda: SeparableConv1D(SeparableConvConfig(3, 2, 3, channels_first=True)),
            (2, 4, 9),
            r"3 channels on axis 1",
            id="sep_first",
        ),
    ],
)
def test_input_errors(make, shape, match):
    module = make()
    module.keras_name = "front"
    with pytest.raises(InputError, match=rf"'front' \({type(module).__name__}\).*{match}"):
        module(torch.zeros(shape))


@pytest.mark.parametrize(
    "config, match",
    [
        pytest.param(ConvTransposeConfig(2, 2, 3, stride=2, output_padding=2), r"\[0, stride\)", id="op_ge_stride"),
        pytest.param(
            ConvTransposeConfig(2, 2, 4, padding="same", output_padding=0), r"span is even", id="same_even_op0"
        ),
        pytest.param(ConvTransposeConfig(2, 2, 3, padding="causal"), r"padding must be one of", id="causal"),
    ],
)
def test_transpose_config_errors(config, match):
    with pytest.raises(ValueError, match=match):
        Conv1DTranspose(config)
