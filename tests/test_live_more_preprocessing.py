"""Live parity of Discretization, ThresholdedReLU, Hashing, RandomCrop and ReversibleEmbedding with
Keras 3 and tf_keras (where the layer exists).

Each model is saved as ``.keras`` and legacy ``.h5``, Keras runs once per model, and every layer's
output of each load is compared with it at ``ATOL["cpu_float32"]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch_lstm_probe.converters.common import Context
from torch_lstm_probe.converters.registry import lookup
from torch_lstm_probe.converters.spec import KerasVersion, LayerSpec

import torch_lstm_probe as tlp
from tests.helpers import assert_model_parity, keras_reference, library_name, save, seed
from torch_lstm_probe.errors import UnsupportedOptionError
from torch_lstm_probe.layers.preprocessing import Hashing, HashingConfig

pytestmark = pytest.mark.keras

BATCH = 4


def _keras3(klib) -> bool:
    return library_name(klib) == "keras"


def _check(klib, model, inputs: list[Any], tmp_path, formats: tuple[str, ...] = ("keras", "h5")) -> list[Any]:
    """Saves ``model`` in each format, checks each load against one Keras run; returns the loads."""
    reference = keras_reference(klib, model, inputs)
    loaded, failures = [], []
    for fmt in formats:
        try:
            converted = tlp.load_keras(save(model, tmp_path, fmt))
            assert_model_parity(klib, model, converted, inputs, reference=reference)
            loaded.append(converted)
        except Exception as err:  # noqa: BLE001 - collected and re-raised below
            failures.append(f"[{library_name(klib)} .{fmt}] {type(err).__name__}: {err}")
    assert not failures, "\n".join(failures)
    return loaded


def _refusal(class_name: str, config: dict[str, Any], match: str, keras_major: int = 3) -> None:
    layer = LayerSpec(name="pre", class_name=class_name, config=config)
    ctx = Context(source="test.keras", keras_version=KerasVersion(keras_major, 10))
    with pytest.raises(UnsupportedOptionError, match=rf"'pre' \({class_name}\).*{match}"):
        lookup(layer, ctx)(layer, ctx)


# ---------------------------------------------------------------------------- Discretization, ThresholdedReLU


def test_discretization_and_thresholded_relu(klib, tmp_path):
    """Given boundaries (int, count, one_hot on (B, 1) ids) and adapted ones (Keras 3: in the config;
    tf_keras: recomputed from the ``summary`` weight); inputs that sit on the boundaries. tf_keras
    adds ThresholdedReLU(theta=0.3). Keras 3 writes no ``trainable`` key for Discretization, which
    the legacy .h5 reader must not take for an op node."""
    seed(klib)
    rng = np.random.default_rng(0)
    layers = klib.layers
    adapted = layers.Discretization(num_bins=4, epsilon=0.01, name="adapted")
    adapted.adapt(rng.normal(size=(200,)).astype(np.float32))
    inp = klib.Input((5,))
    outs = [
        layers.Discretization(bin_boundaries=[-1.0, 0.0, 0.5, 2.0], name="given")(inp),
        adapted(inp),
        layers.Discretization(bin_boundaries=[-1.0, 0.0, 0.5], output_mode="count", name="count")(inp),
    ]
    column = klib.Input((1,), name="column")
    outs.append(layers.Discretization(bin_boundaries=[0.0, 1.0], output_mode="one_hot", name="one_hot")(column))
    if not _keras3(klib):
        outs.append(layers.ThresholdedReLU(theta=0.3, name="thr")(inp))
    model = klib.Model([inp, column], outs, name="discretize")
    x = rng.normal(size=(BATCH, 5)).astype(np.float32)
    x[0, :4] = [-1.0, 0.0, 0.5, 2.0]
    x[1, :2] = [0.3, np.float32(0.3) + np.float32(1e-7)]
    col = np.array([[-0.5], [0.0], [1.0], [3.0]], np.float32)
    converted = _check(klib, model, [x, col], tmp_path)[0]
    tlp.save(converted, tmp_path / "discretize.safetensors")
    restored = tlp.load(tmp_path / "discretize.safetensors")
    with torch.inference_mode():
        for got, expected in zip(restored(x, col), converted(x, col)):
            assert torch.equal(got, expected)


def test_thresholded_relu_passes_mask(tf_keras, tmp_path):
    """Embedding(mask_zero) -> ThresholdedReLU -> LSTM: the LSTM skips the padded steps."""
    seed(tf_keras)
    layers = tf_keras.layers
    model = tf_keras.Sequential(
        [
            tf_keras.Input((6,), dtype="int32"),
            layers.Embedding(9, 4, mask_zero=True, name="embed"),
            layers.ThresholdedReLU(theta=0.01, name="thr"),
            layers.LSTM(3, name="lstm"),
        ],
        name="thr_mask",
    )
    ids = np.random.default_rng(1).integers(1, 9, (BATCH, 6)).astype(np.int32)
    ids[0, 3:] = 0
    _check(tf_keras, model, [ids], tmp_path)


def test_discretization_refusals():
    _refusal("Discretization", {"bin_boundaries": [0.0], "sparse": True}, "'sparse' is True")
    _refusal("Discretization", {"bin_boundaries": [0.0], "output_mode": "tf_idf"}, "output_mode is 'tf_idf'")
    _refusal("Discretization", {"num_bins": 3}, "no bin boundaries")


# ---------------------------------------------------------------------------- Hashing


TEXTS = np.array(
    [["a", "", "hello world"], ["", "zzz", "a" * 70], ["Ç", "1", "x" * 20], ["b", "c", ""]],
    dtype=object,
)
INTS = np.array([[0, 1, -5], [123456789012, 0, 7], [3, 3, 0], [-1, 2, 99]], dtype=np.int64)


def test_hashing_strings_and_integers(klib, tmp_path):
    """FarmHash bins of strings (up to 70 bytes) and of integers (hashed as their decimal strings),
    each with and without a mask value."""
    layers = klib.layers
    texts = klib.Input((3,), dtype="string", name="texts")
    ints = klib.Input((3,), dtype="int64", name="ints")
    outs = [
        layers.Hashing(num_bins=7, name="text_bins")(texts),
        layers.Hashing(num_bins=5, mask_value="", name="text_masked")(texts),
        layers.Hashing(num_bins=9, name="int_bins")(ints),
        layers.Hashing(num_bins=4, mask_value=0, name="int_masked")(ints),
    ]
    model = klib.Model([texts, ints], outs, name="hashing")
    converted = _check(klib, model, [TEXTS, INTS], tmp_path)[0]
    tlp.save(converted, tmp_path / "hashing.safetensors")
    restored = tlp.load(tmp_path / "hashing.safetensors")
    with torch.inference_mode():
        for got, expected in zip(restored(TEXTS, INTS), converted(TEXTS, INTS)):
            assert torch.equal(got, expected)


def test_hashing_float_input_keras3(keras3, tmp_path):
    """Keras 3 truncates float inputs to int64 before hashing them as decimal strings."""
    inp = keras3.Input((3,), name="values")
    model = keras3.Model(inp, keras3.layers.Hashing(num_bins=6, name="bins")(inp), name="hash_floats")
    x = np.array([[1.7, -1.7, 0.2], [3.0, 250.9, -0.9], [7.5, 7.0, 1e6], [-3.2, 0.0, 2.5]], np.float32)
    _check(keras3, model, [x], tmp_path)


def test_hashing_refusals_and_tf_keras_floats():
    _refusal("Hashing", {"num_bins": 3, "salt": [133, 137]}, "'salt' is \\[133, 137\\]")
    _refusal("Hashing", {"num_bins": 3, "output_mode": "multi_hot"}, "'output_mode' is 'multi_hot'")
    with pytest.raises(Exception, match="strings or integers"):
        Hashing(HashingConfig(num_bins=3, cast_floats=False))(np.array([[1.5]], np.float32))


# ---------------------------------------------------------------------------- RandomCrop, ReversibleEmbedding


def test_random_crop_inference(klib, tmp_path):
    """At inference tf_keras crops the largest centered window of the target aspect ratio and resizes
    it bilinearly (a smaller, a taller and an equal target); Keras 3 returns the images unchanged."""
    seed(klib)
    layers = klib.layers
    inp = klib.Input((7, 9, 2))
    outs = [
        layers.RandomCrop(4, 6, name="smaller")(inp),
        layers.RandomCrop(9, 3, name="taller")(inp),
        layers.RandomCrop(7, 9, name="same")(inp),
    ]
    model = klib.Model(inp, outs, name="random_crop")
    x = np.random.default_rng(2).normal(size=(2, 7, 9, 2)).astype(np.float32)
    _check(klib, model, [x], tmp_path)


def test_reversible_embedding(keras3, tmp_path):
    """Tied and untied (with reverse_embeddings in the file) ReversibleEmbedding called forward, the
    untied one masking an LSTM; a graph with a reverse=True call is refused."""
    seed(keras3)
    layers = keras3.layers
    ids = keras3.Input((5,), dtype="int32")
    untied = layers.ReversibleEmbedding(11, 4, tie_weights=False, mask_zero=True, name="untied")(ids)
    outs = [layers.ReversibleEmbedding(11, 4, name="tied")(ids), untied, layers.LSTM(3, name="lstm")(untied)]
    model = keras3.Model(ids, outs, name="reversible")
    x = np.random.default_rng(3).integers(0, 11, (3, 5)).astype(np.int32)
    x[0, 3:] = 0
    _check(keras3, model, [x], tmp_path)
    hidden = keras3.Input((4,))
    shared = layers.ReversibleEmbedding(11, 4, name="shared")
    reverse = keras3.Model([ids, hidden], [shared(ids), shared(hidden, reverse=True)], name="reverse_call")
    with pytest.raises(UnsupportedOptionError, match=r"'shared' \(ReversibleEmbedding\).*reverse=True"):
        tlp.load_keras(save(reverse, tmp_path, "keras"))
