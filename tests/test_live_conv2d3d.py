"""2-D and 3-D front ends of CRNN, speech and lip-reading models against Keras 3 and tf_keras.

Covers Conv2D/3D, Max/AveragePooling2D/3D, ZeroPadding2D/3D, Cropping2D/3D, UpSampling2D/3D,
GlobalMax/AveragePooling2D/3D, SpatialDropout2D/3D and BatchNormalization on rank 4/5 inputs,
plain and inside TimeDistributed. Each case is one small model (several parallel branches
where the layers are independent): Keras runs it once, and the model loaded from ``.keras``,
from ``.h5`` and after a ``tlp.save``/``tlp.load`` round trip is compared with that run, every
layer at ``ATOL["cpu_float32"]``.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest
import torch
from torch_lstm_probe.converters.common import Context
from torch_lstm_probe.converters.registry import lookup
from torch_lstm_probe.converters.spec import KerasVersion, LayerSpec

import torch_lstm_probe as tlp
from tests.helpers import (
    assert_close,
    assert_model_parity,
    keras_layer_outputs,
    keras_reference,
    save,
    seed,
    to_numpy,
)
from torch_lstm_probe.errors import InputError, UnsupportedOptionError
from torch_lstm_probe.layers.conv import Conv2D, ConvConfig, MaxPooling3D, PoolingConfig
from torch_lstm_probe.layers.reshape import UpSampling2D, UpSamplingConfig, ZeroPadding2D, ZeroPaddingConfig

pytestmark = pytest.mark.keras

BATCH = 2


def _randomize(model, rng: np.random.Generator) -> None:
    """Random values for every weight (variances in [0.5, 1.5]), so no default 0 or 1 hides a bug."""
    for layer in model.layers:
        variables = layer.weights
        if not variables:
            continue
        values = [
            rng.uniform(0.5, 1.5, v.shape) if "variance" in v.name else rng.uniform(-0.6, 0.6, v.shape)
            for v in variables
        ]
        layer.set_weights([a.astype(np.float32) for a in values])


def _branches(klib, shape: tuple[int, ...], make: Callable[[Any], list], name: str):
    """A model applying each layer of ``make(klib.layers)`` to one input ``(N, *shape)``: one output per layer."""
    inp = klib.Input(shape)
    return klib.Model(inp, [layer(inp) for layer in make(klib.layers)], name=name)


def _chain(klib, shape: tuple[int, ...], make: Callable[[Any], list], name: str):
    """A Sequential model of the layers of ``make(klib.layers)`` on inputs ``(N, *shape)``."""
    return klib.Sequential([klib.Input(shape), *make(klib.layers)], name=name)


def _check(klib, model, tmp_path) -> None:
    """Loads ``model`` from ``.keras`` and ``.h5`` (and reloads one from safetensors); compares each with one Keras run."""
    _randomize(model, np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((BATCH, *model.inputs[0].shape[1:])).astype(np.float32)
    reference = keras_reference(klib, model, [x])
    for fmt in ("keras", "h5"):
        converted = tlp.load_keras(save(model, tmp_path, fmt))
        assert_model_parity(klib, model, converted, [x], reference=reference)
    tlp.save(converted, tmp_path / "m.safetensors")
    assert_model_parity(klib, model, tlp.load(tmp_path / "m.safetensors"), [x], reference=reference)


# ---------------------------------------------------------------------------- cases

IMAGE = (7, 9, 4)  # (H, W, C): odd sizes, so "same" padding is uneven
VOLUME = (5, 6, 7, 2)  # (D, H, W, C)

CASES: dict[str, Callable[[Any], Any]] = {
    "conv2d_valid_same": lambda k: _branches(
        k,
        IMAGE,
        lambda L: [
            L.Conv2D(3, 3, activation="relu", name="valid"),
            L.Conv2D(3, (2, 3), padding="same", name="same"),
            L.Conv2D(2, (3, 2), use_bias=False, activation="tanh", name="no_bias"),
        ],
        "conv2d",
    ),
    "conv2d_strides2": lambda k: _branches(
        k,
        IMAGE,
        lambda L: [
            L.Conv2D(3, 3, strides=2, name="valid_s2"),
            L.Conv2D(3, (4, 3), strides=2, padding="same", name="same_s2"),
            L.Conv2D(3, 3, strides=(1, 2), padding="same", name="same_s12"),
        ],
        "conv2d_strides",
    ),
    "conv2d_dilation2": lambda k: _branches(
        k,
        IMAGE,
        lambda L: [
            L.Conv2D(3, 3, dilation_rate=2, name="valid_d2"),
            L.Conv2D(3, 2, dilation_rate=(2, 1), padding="same", name="same_d21"),
        ],
        "conv2d_dilation",
    ),
    "conv2d_groups2": lambda k: _branches(
        k, IMAGE, lambda L: [L.Conv2D(6, 3, groups=2, padding="same", name="groups")], "conv2d_groups"
    ),
    "conv3d": lambda k: _branches(
        k,
        VOLUME,
        lambda L: [
            L.Conv3D(3, 2, activation="relu", name="valid"),
            L.Conv3D(3, (3, 2, 3), strides=(1, 2, 2), padding="same", name="same_s"),
            L.Conv3D(2, 2, dilation_rate=(1, 2, 1), padding="same", name="same_d"),
            L.Conv3D(4, (1, 2, 3), groups=2, name="groups"),
        ],
        "conv3d",
    ),
    "pooling2d": lambda k: _branches(
        k,
        IMAGE,
        lambda L: [
            L.MaxPooling2D(name="max_valid"),
            L.MaxPooling2D(3, strides=2, padding="same", name="max_same"),
            L.MaxPooling2D((3, 2), strides=(1, 3), name="max_odd"),
            L.AveragePooling2D(2, name="avg_valid"),
            L.AveragePooling2D(3, strides=2, padding="same", name="avg_same"),
            L.AveragePooling2D((2, 3), strides=(3, 1), padding="same", name="avg_odd_same"),
            L.AveragePooling2D(3, strides=1, name="avg_s1"),
        ],
        "pooling2d",
    ),
    "pooling3d": lambda k: _branches(
        k,
        VOLUME,
        lambda L: [
            L.MaxPooling3D(name="max_valid"),
            L.MaxPooling3D((1, 3, 2), strides=(2, 2, 3), padding="same", name="max_same"),
            L.AveragePooling3D(2, name="avg_valid"),
            L.AveragePooling3D(3, strides=2, padding="same", name="avg_same"),
            L.AveragePooling3D((2, 1, 3), strides=1, padding="same", name="avg_s1"),
        ],
        "pooling3d",
    ),
    "global_pooling2d": lambda k: _branches(
        k,
        IMAGE,
        lambda L: [
            L.GlobalMaxPooling2D(name="gmax"),
            L.GlobalAveragePooling2D(name="gavg"),
            L.GlobalMaxPooling2D(keepdims=True, name="gmax_keep"),
            L.GlobalAveragePooling2D(keepdims=True, name="gavg_keep"),
            L.GlobalMaxPooling2D(data_format="channels_first", keepdims=True, name="gmax_first"),
            L.GlobalAveragePooling2D(data_format="channels_first", name="gavg_first"),
        ],
        "global_pooling2d",
    ),
    "padding_cropping_2d": lambda k: _branches(
        k,
        IMAGE,
        lambda L: [
            L.ZeroPadding2D(name="pad_default"),
            L.ZeroPadding2D(2, name="pad_int"),
            L.ZeroPadding2D((1, 3), name="pad_pair"),
            L.ZeroPadding2D(((0, 2), (3, 1)), name="pad_pairs"),
            L.Cropping2D(1, name="crop_int"),
            L.Cropping2D((2, 1), name="crop_pair"),
            L.Cropping2D(((0, 3), (2, 0)), name="crop_pairs"),
            L.ZeroPadding2D(((1, 0), (0, 2)), data_format="channels_first", name="pad_first"),
            L.Cropping2D(((1, 0), (0, 1)), data_format="channels_first", name="crop_first"),
        ],
        "padding_cropping_2d",
    ),
    "padding_cropping_3d": lambda k: _branches(
        k,
        VOLUME,
        lambda L: [
            L.ZeroPadding3D(name="pad_default"),
            L.ZeroPadding3D(((0, 1), (2, 0), (1, 1)), name="pad_pairs"),
            L.Cropping3D(((1, 0), (0, 2), (1, 1)), name="crop_pairs"),
            L.UpSampling3D((1, 2, 3), name="up"),
            L.GlobalMaxPooling3D(name="gmax"),
            L.GlobalAveragePooling3D(keepdims=True, name="gavg_keep"),
            L.GlobalAveragePooling3D(data_format="channels_first", name="gavg_first"),
        ],
        "padding_cropping_3d",
    ),
    "up_sampling2d": lambda k: _branches(
        k,
        IMAGE,
        lambda L: [
            L.UpSampling2D(name="nearest"),
            L.UpSampling2D((3, 2), name="nearest_32"),
            L.UpSampling2D(name="bilinear", interpolation="bilinear"),
            L.UpSampling2D((3, 2), name="bilinear_32", interpolation="bilinear"),
            L.UpSampling2D((2, 3), data_format="channels_first", interpolation="bilinear", name="bilinear_first"),
        ],
        "up_sampling2d",
    ),
    "batch_norm_rank4_rank5": lambda k: _branches(
        k,
        VOLUME,
        lambda L: [
            L.BatchNormalization(name="bn_last"),
            L.BatchNormalization(axis=1, epsilon=0.01, name="bn_first"),
            L.BatchNormalization(center=False, name="bn_no_beta"),
        ],
        "batch_norm_rank5",
    ),
    "batch_norm_rank4": lambda k: _chain(
        k,
        IMAGE,
        lambda L: [
            L.Conv2D(3, 3, name="conv"),
            L.BatchNormalization(name="bn"),
            L.SpatialDropout2D(0.3, name="drop"),
            L.Permute((3, 1, 2), name="to_first"),
            L.BatchNormalization(axis=1, scale=False, name="bn_first"),
        ],
        "batch_norm_rank4",
    ),
    "crnn": lambda k: _chain(
        k,
        (32, 16, 1),
        lambda L: [
            L.Conv2D(4, 3, padding="same", activation="relu", name="conv"),
            L.MaxPooling2D(2, name="pool"),
            L.Reshape((16, 32), name="frames"),
            L.LSTM(5, name="lstm"),
            L.Dense(3, name="head"),
        ],
        "crnn",
    ),
    "lip_reading_td_conv2d": lambda k: _chain(
        k,
        (4, 10, 8, 1),  # (frames, H, W, C)
        lambda L: [
            L.TimeDistributed(L.Conv2D(3, 3, activation="relu"), name="td_conv"),
            L.TimeDistributed(L.MaxPooling2D(padding="same"), name="td_pool"),
            L.TimeDistributed(L.GlobalAveragePooling2D(), name="td_gap"),
            L.LSTM(4, return_sequences=True, name="lstm"),
            L.Dense(2, name="head"),
        ],
        "lip_td",
    ),
    "lip_reading_conv3d": lambda k: _chain(
        k,
        (4, 10, 8, 1),
        lambda L: [
            L.ZeroPadding3D((1, 2, 2), name="pad"),
            L.Conv3D(3, (3, 5, 5), strides=(1, 2, 2), activation="relu", name="conv"),
            L.BatchNormalization(name="bn"),
            L.SpatialDropout3D(0.2, name="drop"),
            L.MaxPooling3D((1, 2, 2), name="pool"),
            L.TimeDistributed(L.Flatten(), name="flat"),
            L.LSTM(4, name="lstm"),
        ],
        "lip_conv3d",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_conv2d3d_models(klib, tmp_path, case):
    seed(klib)
    _check(klib, CASES[case](klib), tmp_path)


# ---------------------------------------------------------------------------- channels_first

# TensorFlow's CPU kernels refuse NCHW for Conv2D (Keras 3 and tf_keras) and for Conv3D and
# Max/AveragePooling2D (tf_keras), so a channels_first model is checked against its channels-last
# twin with the same weights: every layer's output, moved to channels last, must match.
TWINS: dict[str, tuple[tuple[int, ...], Callable[[Any, str], list]]] = {
    "front2d": (
        (9, 11, 4),
        lambda L, f: [
            L.Conv2D(4, 3, strides=2, padding="same", data_format=f, name="conv_s2"),
            L.Conv2D(4, 3, groups=2, padding="same", activation="relu", data_format=f, name="conv_groups"),
            L.Conv2D(3, 2, dilation_rate=2, data_format=f, name="conv_d2"),
            L.MaxPooling2D(2, padding="same", data_format=f, name="max"),
            L.AveragePooling2D(3, strides=1, padding="same", data_format=f, name="avg"),
        ],
    ),
    "front3d": (
        (5, 6, 7, 2),
        lambda L, f: [
            L.Conv3D(4, (2, 3, 2), strides=(1, 2, 2), padding="same", data_format=f, name="conv_s"),
            L.Conv3D(2, 2, groups=2, dilation_rate=(2, 1, 1), data_format=f, name="conv_groups"),
            L.MaxPooling3D((2, 1, 2), padding="same", data_format=f, name="max"),
            L.AveragePooling3D(2, strides=1, padding="same", data_format=f, name="avg"),
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
            assert_close(np.moveaxis(to_numpy(acts[name]), 1, -1), value, what=f"{name} .{fmt}")


# ---------------------------------------------------------------------------- refused options and input errors


def _convert(class_name: str, config: dict[str, Any], weights: tuple[np.ndarray, ...] = ()):
    layer = LayerSpec(name="layer", class_name=class_name, config=config, weights=weights)
    ctx = Context(source="test.keras", keras_version=KerasVersion(3))
    return lookup(layer, ctx)(layer, ctx)


@pytest.mark.parametrize(
    "class_name, config, weights, match",
    [
        pytest.param("UpSampling2D", {"size": [2, 2], "interpolation": "bicubic"}, (), "interpolation", id="bicubic"),
        pytest.param("UpSampling2D", {"size": [2, 2], "interpolation": "lanczos3"}, (), "lanczos3", id="lanczos"),
        pytest.param(
            "Conv2D",
            {"filters": 2, "kernel_size": [3, 3], "padding": "causal"},
            (np.zeros((3, 3, 4, 2)), np.zeros(2)),
            "padding",
            id="causal",
        ),
        pytest.param(
            "Conv3D", {"filters": 2, "kernel_size": [3, 3], "padding": "valid"}, (), "kernel_size", id="kernel_rank"
        ),
        pytest.param("MaxPooling2D", {"pool_size": [2, 0]}, (), "pool_size", id="pool_zero"),
        pytest.param("ZeroPadding2D", {"padding": [[1, 2, 3], [0, 0]]}, (), "padding", id="pad_triple"),
        pytest.param("Cropping2D", {"cropping": -1}, (), "cropping", id="crop_negative"),
        pytest.param("GlobalMaxPooling2D", {"data_format": "NHWC"}, (), "data_format", id="data_format"),
        pytest.param("SpatialDropout2D", {"rate": 0.1, "data_format": "channels_middle"}, (), "data_format", id="drop"),
    ],
)
def test_refused_options(class_name, config, weights, match):
    with pytest.raises(UnsupportedOptionError, match=rf"'layer' \({class_name}\).*{match}"):
        _convert(class_name, config, weights)


@pytest.mark.parametrize(
    "module, shape, match",
    [
        pytest.param(Conv2D(ConvConfig(3, 2, 3)), (2, 9, 3), r"rank 3.*Expected rank 4", id="conv_rank"),
        pytest.param(Conv2D(ConvConfig(3, 2, 3)), (2, 5, 5, 4), r"3 features", id="conv_channels"),
        pytest.param(
            Conv2D(ConvConfig(3, 2, 3, channels_first=True)), (2, 4, 5, 5), r"3 channels on axis 1", id="conv_first"
        ),
        pytest.param(Conv2D(ConvConfig(3, 2, 3)), (2, 2, 5, 3), r"needs at least \(3, 3\)", id="conv_small"),
        pytest.param(MaxPooling3D(PoolingConfig(2, 2)), (2, 4, 4, 3), r"rank 4.*Expected rank 5", id="pool_rank"),
        pytest.param(MaxPooling3D(PoolingConfig(2, 2)), (2, 1, 4, 4, 3), r"needs at least", id="pool_small"),
        pytest.param(ZeroPadding2D(ZeroPaddingConfig((1, 1), (1, 1))), (2, 4, 3), r"rank 3", id="pad_rank"),
        pytest.param(UpSampling2D(UpSamplingConfig((2, 2), "bilinear")), (2, 4, 3), r"rank 3", id="up_rank"),
    ],
)
def test_input_errors(module, shape, match):
    module.keras_name = "front"
    with pytest.raises(InputError, match=rf"'front' \({type(module).__name__}\).*{match}"):
        module(torch.zeros(shape))
