"""GroupNormalization, RMSNormalization, EinsumDense, Resizing and CenterCrop around LSTMs, live
against Keras 3 and tf_keras, saved as ``.keras`` and ``.h5``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import torch_lstm_probe as tlp
from tests.helpers import assert_model_parity, import_keras, keras_reference, save, seed

BOTH = [("keras", ("keras", "h5")), ("tf_keras", ("keras", "h5"))]


def _randomize(model, rng: np.random.Generator) -> None:
    """Every weight drawn at random, so gamma, beta and biases are not their ones/zeros defaults."""
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(w.dtype) * rng.choice([-1, 1]) for w in weights])


def _check(k, model, inputs, tmp_path: Path, formats) -> None:
    _randomize(model, np.random.default_rng(1))
    reference = keras_reference(k, model, inputs)
    for fmt in formats:
        assert_model_parity(k, model, tlp.load_keras(save(model, tmp_path, fmt)), inputs, reference=reference)


def _norms_model(k):
    L = k.layers
    steps = k.Input((6, 8), name="steps")
    x = L.Masking(name="masking")(steps) if hasattr(L, "RMSNormalization") else steps
    x = L.GroupNormalization(groups=4, name="gn_last")(x)  # Keras 3 passes the mask on to the LSTM
    x = L.LSTM(8, return_sequences=True, name="lstm")(x)
    x = L.GroupNormalization(groups=2, axis=1, epsilon=0.01, name="gn_time")(x)
    x = L.GroupNormalization(groups=-1, center=False, name="gn_instance")(x)
    x = L.GroupNormalization(groups=2, scale=False, center=False, axis=-2, name="gn_plain")(x)
    if hasattr(L, "RMSNormalization"):
        x = L.RMSNormalization(name="rms_last")(x)
        x = L.RMSNormalization(axis=[1, 2], epsilon=1e-3, name="rms_both")(x)
    return k.Model(steps, x, name="norms")


@pytest.mark.parametrize("library, formats", BOTH)
def test_group_and_rms_normalization_match_keras(library: str, formats, tmp_path: Path):
    k = import_keras(library)
    seed(k)
    steps = np.random.default_rng(0).normal(1.0, 2.0, size=(3, 6, 8)).astype("float32")
    steps[1, 4:] = 0.0  # masked steps in Keras 3
    _check(k, _norms_model(k), [steps], tmp_path, formats)


def test_tf_keras_group_normalization_weighs_moments_by_the_mask(tmp_path: Path):
    """tf_keras broadcasts the (N, T) mask to the input (N, T, C) with NumPy rules: only shapes
    where that works (here N = 1, T = C) run, and each channel then takes the weight of one step."""
    k = import_keras("tf_keras")
    seed(k)
    steps = k.Input((4, 4), name="steps")
    x = k.layers.Masking(name="masking")(steps)
    x = k.layers.GroupNormalization(groups=2, name="gn_masked")(x)
    model = k.Model(steps, k.layers.LSTM(3, return_sequences=True, name="lstm")(x), name="gn_mask")
    inputs = np.random.default_rng(0).normal(size=(1, 4, 4)).astype("float32")
    inputs[0, 1] = 0.0  # a masked step
    _check(k, model, [inputs], tmp_path, ("keras", "h5"))


def _einsum_model(k):
    L = k.layers
    steps = k.Input((6, 8), name="steps")
    x = L.EinsumDense("abc,cd->abd", (6, 5), bias_axes="d", activation="tanh", name="ein_proj")(steps)
    x = L.LSTM(6, return_sequences=True, name="lstm")(x)
    time_bias = L.EinsumDense("abc,cd->abd", (6, 4), bias_axes="bd", name="ein_time_bias")(x)
    split = L.EinsumDense("...c,cde->...de", (2, 3), bias_axes="e", name="ein_split")(x)
    heads = L.EinsumDense("abde,ef->abdf", (None, 2, 4), name="ein_heads")(split)
    right = L.EinsumDense("ab...,bc->ac...", (3, None), bias_axes="c", name="ein_right")(x)
    flat = L.Reshape((6, 8), name="flat")(heads)
    joined = L.Concatenate(name="join")([flat, time_bias])
    summary = L.LSTM(3, name="lstm_out")(joined)
    return k.Model(steps, [summary, right], name="einsum")


@pytest.mark.parametrize("library, formats", BOTH)
def test_einsum_dense_matches_keras(library: str, formats, tmp_path: Path):
    k = import_keras(library)
    seed(k)
    steps = np.random.default_rng(0).normal(size=(3, 6, 8)).astype("float32")
    _check(k, _einsum_model(k), [steps], tmp_path, formats)


def _image_model(k, channels_first: bool = False):
    L = k.layers
    fmt = {"data_format": "channels_first"} if channels_first else {}
    images = k.Input((3, 9, 7) if channels_first else (9, 7, 3), name="images")
    up = L.Resizing(12, 10, name="up_bilinear", **fmt)(images)
    down = L.Resizing(5, 4, interpolation="nearest", name="down_nearest", **fmt)(up)
    aspect = L.Resizing(6, 6, crop_to_aspect_ratio=True, name="aspect_bilinear", **fmt)(images)
    aspect_nn = L.Resizing(4, 8, interpolation="nearest", crop_to_aspect_ratio=True, name="aspect_nearest", **fmt)(
        images
    )
    crop = L.CenterCrop(4, 5, name="crop", **fmt)(up)
    grow = L.CenterCrop(10, 6, name="crop_grow", **fmt)(images)  # taller than the input: crop + resize
    parts = [down, aspect, aspect_nn, crop, grow]
    if channels_first:
        parts = [L.Permute((2, 3, 1), name=f"nhwc_{i}")(p) for i, p in enumerate(parts)]
    flat = [L.Reshape((-1, 3), name=f"pixels_{i}")(p) for i, p in enumerate(parts)]
    pixels = L.Concatenate(axis=1, name="pixels")(flat)
    return k.Model(images, L.LSTM(4, name="lstm")(pixels), name="image_cf" if channels_first else "image")


@pytest.mark.parametrize("library, formats", BOTH)
def test_resizing_and_center_crop_match_keras(library: str, formats, tmp_path: Path):
    k = import_keras(library)
    seed(k)
    images = np.random.default_rng(0).uniform(size=(2, 9, 7, 3)).astype("float32")
    _check(k, _image_model(k), [images], tmp_path, formats)
    if library == "keras":
        _check(k, _image_model(k, True), [images.transpose(0, 3, 1, 2).copy()], tmp_path, ("keras",))


@pytest.mark.parametrize(
    "class_name, config, weights, option, received",
    [
        ("Resizing", {"height": 4, "width": 4, "interpolation": "bicubic"}, (), "interpolation", "'bicubic'"),
        ("Resizing", {"height": 4, "width": 4, "antialias": True}, (), "antialias", "True"),
        ("Resizing", {"height": 4, "width": 4, "pad_to_aspect_ratio": True}, (), "pad_to_aspect_ratio", "True"),
        ("EinsumDense", {"equation": "ab,bc->ac..."}, (np.ones((2, 3)),), "equation", "'ab,bc->ac...'"),
        ("EinsumDense", {"equation": "ab,bc->ac", "lora_rank": 2}, (np.ones((2, 3)),), "lora_rank", "2"),
        ("GroupNormalization", {"groups": 2, "axis": [1, 2]}, (np.ones(4),) * 2, "axis", "[1, 2]"),
        ("GroupNormalization", {"groups": 3, "axis": -1}, (np.ones(4),) * 2, "groups", "3"),
        ("SpectralNormalization", {"layer": {"class_name": "Embedding", "config": {}}}, (), "layer", "Embedding"),
    ],
)
def test_unreproduced_options_are_refused(class_name, config, weights, option, received):
    from torch_lstm_probe.converters.common import Context
    from torch_lstm_probe.converters.registry import CONVERTERS
    from torch_lstm_probe.converters.spec import KerasVersion, LayerSpec

    layer = LayerSpec(name="probe_me", class_name=class_name, config=config, weights=weights)
    with pytest.raises(tlp.UnsupportedOptionError) as err:
        CONVERTERS[class_name](layer, Context("model.keras", KerasVersion(3)))
    message = str(err.value)
    assert "probe_me" in message and class_name in message and option in message and received in message
    assert "Expected" in message


def test_spectral_normalization_matches_keras(tmp_path: Path):
    k = import_keras("keras")  # tf_keras' SpectralNormalization cannot be built alongside Keras 3 (its InputSpec)
    seed(k)
    L = k.layers
    steps = k.Input((6, 4), name="steps")
    masked = L.Masking(name="masking")(steps)
    x = L.SpectralNormalization(L.Dense(5, activation="tanh"), name="sn_dense")(masked)  # drops the mask
    x = L.SpectralNormalization(L.Conv1D(4, 2, use_bias=False), power_iterations=2, name="sn_conv")(x)
    x = L.LSTM(6, return_sequences=True, name="lstm")(x)
    x = L.SpectralNormalization(L.EinsumDense("abc,cd->abd", (5, 3), bias_axes="d"), name="sn_einsum")(x)
    model = k.Model(steps, x, name="spectral")
    inputs = np.random.default_rng(0).normal(size=(3, 6, 4)).astype("float32")
    inputs[0, 3:] = 0.0  # masked steps, were the mask not dropped
    _randomize(model, np.random.default_rng(1))
    model(inputs, training=True)  # one training call stores the normalized kernels and vector_u
    reference = keras_reference(k, model, [inputs])
    for fmt in ("keras", "h5"):
        assert_model_parity(k, model, tlp.load_keras(save(model, tmp_path, fmt)), [inputs], reference=reference)


@pytest.mark.parametrize("method", ["bilinear", "nearest"])
def test_resize_matches_tf_image_resize_on_many_sizes(method: str):
    tf = pytest.importorskip("tensorflow")
    import torch

    from torch_lstm_probe.layers.image import resize_nhwc

    rng = np.random.default_rng(0)
    for in_h, in_w in [(1, 3), (5, 2), (7, 13), (31, 9)]:
        images = rng.normal(size=(2, in_h, in_w, 2)).astype("float32")
        for out_h, out_w in [(1, 1), (3, 4), (9, 6), (64, 17)]:
            expected = tf.image.resize(images, (out_h, out_w), method=method).numpy()
            got = resize_nhwc(torch.from_numpy(images), out_h, out_w, method).numpy()
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6, err_msg=f"{(in_h, in_w)} -> {(out_h, out_w)}")
