"""Live parity of the numeric preprocessing layers with Keras 3 and tf_keras.

Rescaling, Normalization (adapted weights and config statistics, ``axis``, ``invert``, the
epsilon floor), CategoryEncoding (each mode, rank-1 and rank-2 ids) and ActivityRegularization
(after a masked Embedding). Each model is saved as ``.keras`` and legacy ``.h5``, Keras runs once
per model, and every layer's output of each load is compared with it at ``ATOL["cpu_float32"]``.
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
from tests.helpers import ATOL, assert_close, assert_model_parity, keras_reference, library_name, save, seed
from torch_lstm_probe.errors import (
    InputError,
    KerasFileError,
    UnsupportedOptionError,
    WeightMismatchError,
)

pytestmark = pytest.mark.keras

BATCH, STEPS, FEATURES = 4, 7, 6
FORMATS = ("keras", "h5")


def _keras3(klib) -> bool:
    return library_name(klib) == "keras"


def _check(klib, model, inputs: list[np.ndarray], tmp_path) -> list[Any]:
    """Saves ``model`` as ``.keras`` and ``.h5``, checks each load against one Keras run; returns the loads."""
    reference = keras_reference(klib, model, inputs)
    loaded, failures = [], []
    for fmt in FORMATS:
        try:
            converted = tlp.load_keras(save(model, tmp_path, fmt))
            assert_model_parity(klib, model, converted, inputs, reference=reference)
            loaded.append(converted)
        except Exception as err:  # noqa: BLE001 - collected and re-raised below
            failures.append(f"[{library_name(klib)} .{fmt}] {type(err).__name__}: {err}")
    assert not failures, "\n".join(failures)
    return loaded


def _adapted_normalization(klib, data: np.ndarray, **options):
    layer = klib.layers.Normalization(name="norm", **options)
    layer.adapt(data)
    return layer


# ---------------------------------------------------------------------------- Rescaling, Normalization


def test_rescaling_normalization_dense(klib, tmp_path):
    """Input((6,)) -> Rescaling(per-channel scale, scalar offset) -> Normalization(adapted) -> Dense."""
    seed(klib)
    rng = np.random.default_rng(0)
    scale: Any = [0.5, -1.0, 2.0, 0.25, 3.0, 1.5]
    if _keras3(klib):
        scale = np.array(scale, np.float32)  # Keras 3 writes {"class_name": "__numpy__", ...}
    norm = _adapted_normalization(klib, rng.normal(2.0, 3.0, (64, FEATURES)).astype(np.float32))
    model = klib.Sequential(
        [
            klib.Input((FEATURES,)),
            klib.layers.Rescaling(scale, offset=0.25, name="rescale"),
            norm,
            klib.layers.Dense(3, name="head"),
        ],
        name="rescale_norm",
    )
    _check(klib, model, [rng.normal(size=(BATCH, FEATURES)).astype(np.float32)], tmp_path)


def test_config_statistics_invert_and_int_input(klib, tmp_path):
    """Integer pixels -> Rescaling(1/255, offset -1) -> Normalization(config mean/variance, invert)
    -> Normalization(axis=None, scalar config statistics) -> Dense."""
    seed(klib)
    model = klib.Sequential(
        [
            klib.Input((FEATURES,), dtype="int32"),
            klib.layers.Rescaling(1.0 / 255, offset=-1.0, name="rescale"),
            klib.layers.Normalization(
                mean=[0.1, -0.2, 0.3, 0.0, 0.5, -0.6], variance=[1.0, 4.0, 0.25, 2.0, 9.0, 0.5], invert=True, name="inv"
            ),
            klib.layers.Normalization(axis=None, mean=0.5, variance=2.0, name="scalar"),
            klib.layers.Dense(2, name="head"),
        ],
        name="config_stats",
    )
    x = np.random.default_rng(1).integers(0, 256, (BATCH, FEATURES)).astype(np.int32)
    _check(klib, model, [x], tmp_path)


@pytest.mark.parametrize("axis", [-1, (1, 2), None], ids=["features", "steps_and_features", "scalar"])
def test_normalization_lstm(klib, tmp_path, axis):
    """Input((T, F)) -> Normalization(axis) -> LSTM, one variance set to 0 so the epsilon floor
    ``max(sqrt(var), 1e-7)`` decides that channel."""
    seed(klib)
    rng = np.random.default_rng(2)
    norm = _adapted_normalization(klib, rng.normal(1.0, 2.0, (32, STEPS, FEATURES)).astype(np.float32), axis=axis)
    mean, variance, count = norm.get_weights()
    variance.reshape(-1)[0] = 0.0
    norm.set_weights([mean, variance, count])
    norm.finalize_state()  # Keras computes with statistics cached at adapt/load until this refresh
    model = klib.Sequential([klib.Input((STEPS, FEATURES)), norm, klib.layers.LSTM(3, name="lstm")], name="norm_lstm")
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype(np.float32)
    x[..., 0] = mean.reshape(-1)[0]  # the zero-variance channel sits at its mean: 0 / 1e-7
    x[0, 0, 0] += 1e-6  # one value off the mean by 10 epsilons
    _check(klib, model, [x], tmp_path)


# ---------------------------------------------------------------------------- CategoryEncoding

TOKENS = 5


def _encoding_model(klib, shape: tuple[int, ...], modes: tuple[str, ...]):
    inp = klib.Input(shape, dtype="int32", name="ids")
    outs = [klib.layers.CategoryEncoding(TOKENS, output_mode=mode, name=mode)(inp) for mode in modes]
    return klib.Model(inp, outs, name=f"encode_rank{len(shape) + 1}_{shape[-1] if shape else 0}")


@pytest.mark.parametrize(
    "shape",
    [pytest.param((), id="rank1"), pytest.param((3,), id="rank2"), pytest.param((1,), id="rank2_k1")],
)
def test_category_encoding(klib, tmp_path, shape):
    """Each mode on ids (B,), (B, k) and (B, 1). A rank-1 input is one sample for multi_hot and
    count in both libraries ((B,) -> (N,)); one_hot on (B, k>1) gives (B, k, N) in Keras 3 and is
    refused by tf_keras when the model is built."""
    modes: tuple[str, ...] = ("one_hot", "multi_hot", "count")
    if shape == (3,) and not _keras3(klib):
        with pytest.raises(ValueError, match="maximum supported output rank is 2"):
            _encoding_model(klib, shape, ("one_hot",))
        modes = ("multi_hot", "count")
    model = _encoding_model(klib, shape, modes)
    ids = np.array([0, 3, 3, 1, 4, 0, 2, 2, 2, 4, 1, 0], dtype=np.int32)[: BATCH * (shape[0] if shape else 1)]
    _check(klib, model, [ids.reshape(BATCH, *shape)], tmp_path)


def test_category_encoding_dense_and_errors(klib, tmp_path):
    """count -> Dense; ids outside [0, num_tokens) and non-integral floats raise InputError."""
    seed(klib)
    inp = klib.Input((3,), dtype="int32")
    y = klib.layers.CategoryEncoding(TOKENS, output_mode="count", name="count")(inp)
    model = klib.Model(inp, klib.layers.Dense(2, name="head")(y), name="count_dense")
    ids = np.array([[0, 1, 1], [4, 4, 4], [2, 0, 3], [1, 2, 3]], dtype=np.int32)
    converted = _check(klib, model, [ids], tmp_path)[0]
    for bad in (np.array([[0, 5, 1]] * 2), np.array([[0, -1, 1]] * 2)):
        with pytest.raises(InputError, match=r"num_tokens 5: ids must lie in \[0, 4\]"):
            converted(bad)
    with pytest.raises(InputError, match="not whole numbers"):
        converted.layer("count")(torch.tensor([[0.5, 1.0, 2.0]]))


# ---------------------------------------------------------------------------- ActivityRegularization


def test_activity_regularization_passes_mask(klib, tmp_path):
    """Embedding(mask_zero) -> ActivityRegularization -> LSTM on right-padded ids: the LSTM skips
    the padded steps only if the mask passes through."""
    seed(klib)
    model = klib.Sequential(
        [
            klib.Input((STEPS,), dtype="int32"),
            klib.layers.Embedding(9, 4, mask_zero=True, name="embed"),
            klib.layers.ActivityRegularization(l1=0.01, l2=0.02, name="reg"),
            klib.layers.LSTM(3, name="lstm"),
        ],
        name="reg_mask",
    )
    ids = np.random.default_rng(3).integers(1, 9, (BATCH, STEPS)).astype(np.int32)
    ids[0, 3:] = 0
    ids[2, 5:] = 0
    _check(klib, model, [ids], tmp_path)


@pytest.mark.parametrize("between", ["rescale", "norm"])
def test_mask_passes_in_keras3_only(klib, tmp_path, between):
    """Embedding(mask_zero) -> Rescaling or Normalization -> LSTM: Keras 3 passes the mask to the
    LSTM; tf_keras drops it there (the layer does not support masking), so the LSTM runs every step."""
    seed(klib)
    layer = {
        "rescale": lambda: klib.layers.Rescaling(2.0, offset=0.5, name="rescale"),
        "norm": lambda: klib.layers.Normalization(mean=0.25, variance=1.5, name="norm"),
    }[between]()
    model = klib.Sequential(
        [
            klib.Input((STEPS,), dtype="int32"),
            klib.layers.Embedding(9, 4, mask_zero=True, name="embed"),
            layer,
            klib.layers.LSTM(3, name="lstm"),
        ],
        name=f"mask_{between}",
    )
    ids = np.random.default_rng(4).integers(1, 9, (BATCH, STEPS)).astype(np.int32)
    ids[1, 2:] = 0
    _check(klib, model, [ids], tmp_path)


def test_normalization_config_statistics_broadcast(klib, tmp_path):
    """Config mean/variance of shape (F,) for axis (1, 2) broadcast over the steps, as both libraries
    align them with the last kept axes."""
    seed(klib)
    rng = np.random.default_rng(6)
    model = klib.Sequential(
        [
            klib.Input((STEPS, FEATURES)),
            klib.layers.Normalization(
                axis=(1, 2), mean=rng.normal(size=FEATURES).tolist(), variance=rng.uniform(0.5, 2, FEATURES).tolist()
            ),
            klib.layers.LSTM(3, name="lstm"),
        ],
        name="norm_broadcast",
    )
    _check(klib, model, [rng.normal(size=(BATCH, STEPS, FEATURES)).astype(np.float32)], tmp_path)


# ---------------------------------------------------------------------------- IntegerLookup

LOOKUP_IDS = np.array([[12, 0, 5, 7, 36], [3, 6, -7, 1138, 0], [42, 42, 9, 0, -8]], dtype=np.int64)


def test_integer_lookup(klib, tmp_path):
    """One OOV index, no mask; and mask_token 0 with 3 OOV indices (floormod) feeding a masked
    Embedding -> LSTM, so index 0 masks the padded steps."""
    seed(klib)
    layers = klib.layers
    inp = klib.Input((5,), dtype="int64")
    plain = layers.IntegerLookup(vocabulary=[12, 36, 1138, 42, 5], name="plain")(inp)
    masked = layers.IntegerLookup(
        vocabulary=[5, 6, 12, 42], num_oov_indices=3, mask_token=0, oov_token=-7, name="masked"
    )(inp)
    y = layers.LSTM(2, name="lstm")(layers.Embedding(8, 3, mask_zero=True, name="embed")(masked))
    model = klib.Model(inp, [plain, masked, y], name="lookup")
    _check(klib, model, [LOOKUP_IDS], tmp_path)


def test_integer_lookup_special_tokens_and_no_oov(keras3, tmp_path):
    """A vocabulary that starts with [mask, oov] is stripped of them as Keras strips it; with
    num_oov_indices=0 an unknown token raises InputError."""
    layers = keras3.layers
    inp = keras3.Input((5,), dtype="int64")
    special = layers.IntegerLookup(vocabulary=[0, -1, 5, 12, 42], mask_token=0, name="special")(inp)
    strict = layers.IntegerLookup(vocabulary=[0, 5, 12, 42, 36, 7, 6, 3, 9, 1138, -7, -8], num_oov_indices=0)(inp)
    model = keras3.Model(inp, [special, strict], name="lookup_special")
    converted = _check(keras3, model, [LOOKUP_IDS], tmp_path)[0]
    with pytest.raises(InputError, match=r"num_oov_indices 0.*unknown tokens \[99\]"):
        converted(np.array([[0, 5, 99, 12, 42]]))


def _adapted_lookups(klib):
    """Input((5,), int64) -> IntegerLookup(adapted) and IntegerLookup(adapted, mask 0, 3 OOV ids,
    max_tokens) -> Embedding(mask_zero) -> LSTM."""
    seed(klib)
    layers = klib.layers
    plain = layers.IntegerLookup(name="plain")
    plain.adapt(np.array([12, 36, 36, 1138, 42, 5, -8, 0]))
    masked = layers.IntegerLookup(mask_token=0, num_oov_indices=3, oov_token=-7, max_tokens=7, name="masked")
    masked.adapt(np.array([5, 6, 6, 12, 42, 42, 42, 9, 3, 1138]))
    inp = klib.Input((5,), dtype="int64")
    ids = masked(inp)
    y = layers.LSTM(2, name="lstm")(layers.Embedding(8, 3, mask_zero=True, name="embed")(ids))
    return klib.Model(inp, [plain(inp), ids, y], name="adapted_lookup")


def test_adapted_integer_lookup(klib, tmp_path):
    """The adapted vocabulary comes from the .keras archive's assets and from the live layers; a
    legacy .h5 keeps none (Keras 3 writes a null vocabulary: refused with the fix; tf_keras refuses to
    save the layer as .h5)."""
    model = _adapted_lookups(klib)
    reference = keras_reference(klib, model, [LOOKUP_IDS])
    assert model.get_layer("plain").get_config()["vocabulary"] is None
    for source in (save(model, tmp_path, "keras"), model):
        assert_model_parity(klib, model, tlp.load_keras(source), [LOOKUP_IDS], reference=reference)
    if _keras3(klib):
        with pytest.raises(
            UnsupportedOptionError, match=r"'plain' \(IntegerLookup\).*no vocabulary.*\.keras.*vocabulary=layer"
        ):
            tlp.load_keras(save(model, tmp_path, "h5"))
    else:
        with pytest.raises(NotImplementedError):
            save(model, tmp_path, "h5")


@pytest.mark.parametrize(
    "vocabulary, match",
    [
        (b"-1\n7\nseven\n9", r"line 3 of its vocabulary file 'vocabulary.txt' is 'seven'"),
        (b"-1\n7\n9\n7", "repeats a token"),
        (b"-1\n7\n99999999999999999999", "int64 range"),
        (b"-1\n\xff7", "not UTF-8"),
    ],
    ids=["not_a_number", "repeat", "too_large", "not_utf8"],
)
def test_damaged_integer_vocabulary_file(vocabulary, match):
    """A vocabulary file Keras would refuse to load is a KerasFileError naming the layer."""
    layer = LayerSpec(name="pre", class_name="IntegerLookup", config={}, assets={"vocabulary.txt": vocabulary})
    ctx = Context(source="test.keras", keras_version=KerasVersion(3, 10))
    with pytest.raises(KerasFileError, match=rf"'pre' \(IntegerLookup\).*{match}"):
        lookup(layer, ctx)(layer, ctx)


def test_integer_vocabulary_file_lines_per_library():
    """Keras 3 reads the lines with str.splitlines() and drops trailing empty ones; tf_keras splits on
    newlines only, so a trailing newline is an empty token it cannot parse."""
    layer = LayerSpec(name="pre", class_name="IntegerLookup", config={}, assets={"vocabulary.txt": b"-1\r\n7\n 9\n"})
    keras3_ctx = Context(source="test.keras", keras_version=KerasVersion(3, 10))
    assert lookup(layer, keras3_ctx)(layer, keras3_ctx).config.vocabulary == (7, 9)
    tf_ctx = Context(source="test.keras", keras_version=KerasVersion(2, 21), library="tf_keras")
    with pytest.raises(KerasFileError, match="line 4 of its vocabulary file 'vocabulary.txt' is ''"):
        lookup(layer, tf_ctx)(layer, tf_ctx)


# ---------------------------------------------------------------------------- refusals


def test_string_layers_take_strings(klib, tmp_path):
    """StringLookup and TextVectorization convert (converters/text.py): the model takes the texts."""
    texts = np.array([["a"], ["b"], ["zz"]])
    for cls, options in (
        ("StringLookup", {"vocabulary": ["a", "b"]}),
        ("TextVectorization", {"vocabulary": ["a", "b"], "output_sequence_length": 4}),
    ):
        inp = klib.Input((1,), dtype="string")
        out = klib.layers.Embedding(5, 2)(getattr(klib.layers, cls)(name="strings", **options)(inp))
        model = klib.Model(inp, out, name=f"strings_{cls.lower()}")
        converted = tlp.load_keras(save(model, tmp_path, "keras"))
        with torch.inference_mode():
            assert_close(converted(texts), np.asarray(model(texts)), ATOL["cpu_float32"], cls)


def _convert(class_name: str, config: dict[str, Any], weights: tuple[np.ndarray, ...] = ()):
    layer = LayerSpec(name="pre", class_name=class_name, config=config, weights=weights)
    ctx = Context(source="test.keras", keras_version=KerasVersion(3, 10))
    return lookup(layer, ctx)(layer, ctx)


@pytest.mark.parametrize(
    "class_name, config, error, match",
    [
        ("CategoryEncoding", {"num_tokens": 4, "sparse": True}, UnsupportedOptionError, "'sparse' is True"),
        ("CategoryEncoding", {"num_tokens": 4, "output_mode": "tf_idf"}, UnsupportedOptionError, "'tf_idf'"),
        ("CategoryEncoding", {"num_tokens": 0}, KerasFileError, "'num_tokens' is 0"),
        ("Rescaling", {"scale": "x"}, KerasFileError, "'scale' is 'x'"),
        ("Rescaling", {"scale": [[1.0], [1.0, 2.0]]}, KerasFileError, "not a rectangular array"),
        ("Rescaling", {"scale": 1.0, "data_format": "x"}, UnsupportedOptionError, "'data_format'"),
        ("Normalization", {"mean": 1.0, "variance": None}, KerasFileError, "only one of mean and variance"),
        ("Normalization", {"axis": -1, "mean": [[1.0]], "variance": [[1.0]]}, KerasFileError, "rank 2"),
        ("Normalization", {"axis": "x", "mean": 1.0, "variance": 1.0}, UnsupportedOptionError, "axis is 'x'"),
        ("ActivityRegularization", {"l1": "big"}, KerasFileError, "'l1' is 'big'"),
        ("IntegerLookup", {"vocabulary": [1], "output_mode": "count"}, UnsupportedOptionError, "'output_mode'"),
        ("IntegerLookup", {"vocabulary": [1], "invert": True}, UnsupportedOptionError, "'invert' is True"),
        ("IntegerLookup", {"vocabulary": "/etc/v.txt"}, UnsupportedOptionError, "the file '/etc/v.txt'"),
        ("IntegerLookup", {"vocabulary": [1, 2, 1]}, KerasFileError, "repeats a token"),
        ("IntegerLookup", {"vocabulary": [1.5]}, KerasFileError, "Expected an integer token"),
        ("IntegerLookup", {"vocabulary": [2**63]}, KerasFileError, "int64 range"),
        (
            "IntegerLookup",
            {"vocabulary": [1], "num_oov_indices": 2, "oov_method": "farmhash"},
            UnsupportedOptionError,
            "'oov_method' is 'farmhash'",
        ),
    ],
)
def test_converter_refusals(class_name, config, error, match):
    with pytest.raises(error, match=match):
        _convert(class_name, config)


def test_normalization_weights_are_checked():
    with pytest.raises(WeightMismatchError, match="Expected 3"):
        _convert("Normalization", {"axis": [-1]}, (np.zeros(3, np.float32),))


def test_save_load_and_float64(keras3, tmp_path):
    """The runtime configs round-trip through tlp.save / tlp.load, and a float64 load computes in float64."""
    seed(keras3)
    layers = keras3.layers
    inp = keras3.Input((3,), dtype="int32")
    y = layers.CategoryEncoding(TOKENS, output_mode="count", name="count")(inp)
    y = layers.Rescaling([0.5, 1.0, 2.0, 1.5, 1.0], offset=0.1, name="rescale")(y)
    y = _adapted_normalization(keras3, np.random.default_rng(5).normal(size=(16, TOKENS)).astype(np.float32))(y)
    y = layers.ActivityRegularization(l2=0.1, name="reg")(y)
    model = keras3.Model(inp, layers.Dense(2, name="head")(y), name="round_trip")
    ids = np.array([[0, 1, 1], [4, 4, 4], [2, 0, 3]], dtype=np.int32)
    expected = np.asarray(model(ids))
    converted = tlp.load_keras(model)
    tlp.save(converted, tmp_path / "model.tlp")
    with torch.inference_mode():
        restored = tlp.load(tmp_path / "model.tlp")(ids)
        wide = tlp.load_keras(model, dtype=torch.float64)(ids)
    assert_close(restored, expected, what="tlp.load")
    assert wide.dtype == torch.float64
    assert_close(wide, expected, what="float64")


def test_torch_export(keras3):
    """IntegerLookup -> CategoryEncoding -> Rescaling -> Normalization -> ActivityRegularization -> Dense
    exports with torch.export (no value-dependent branch under tracing) and matches Keras."""
    seed(keras3)
    layers = keras3.layers
    inp = keras3.Input((5,), dtype="int64")
    y = layers.IntegerLookup(vocabulary=[5, 6, 12, 42], num_oov_indices=3, mask_token=0, name="lookup")(inp)
    y = layers.CategoryEncoding(8, output_mode="multi_hot", name="encode")(y)
    y = layers.Normalization(mean=0.1, variance=2.0, name="norm")(layers.Rescaling(0.5, name="rescale")(y))
    model = keras3.Model(inp, layers.Dense(2, name="head")(layers.ActivityRegularization(name="reg")(y)))
    converted = tlp.load_keras(model)
    ids = torch.from_numpy(LOOKUP_IDS)
    program = torch.export.export(converted, (ids,), dynamic_shapes=converted.dynamic_shapes())
    with torch.inference_mode():
        assert_close(program.module()(ids), np.asarray(model(LOOKUP_IDS)), what="exported")
