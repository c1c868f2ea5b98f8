"""Live parity of converted LSTM models with Keras 3 and tf_keras.

Each case builds a small Keras model with default (realistic) initializers and random
non-zero biases, then loads it with ``tlp.load_keras`` three ways: from the in-memory model,
from a ``.keras`` file and from a legacy ``.h5`` file. Every layer's output and every model
output must match Keras to ``ATOL["cpu_float32"]``.

Cases cover each LSTM option on its own plus a handful of combinations, rather than the full
cartesian product, so the file stays fast.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

import torch_lstm_probe as tlp
from tests.helpers import ATOL, assert_model_parity, keras_reference, library_name, randomize_biases, save, seed

pytestmark = pytest.mark.keras

BATCH, STEPS, FEATURES = 3, 7, 5
VOCAB = 20
FORMATS = ("keras", "h5")


# ---------------------------------------------------------------------------- helpers


def _inputs(rng: np.random.Generator, shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _check_all_sources(klib, model, inputs: list[np.ndarray], tmp_path, atol: float = ATOL["cpu_float32"]) -> None:
    """Loads ``model`` from memory, ``.keras`` and ``.h5`` and checks each against Keras.

    Every source is checked before failing, so one failure report lists all broken sources.
    """
    reference = keras_reference(klib, model, inputs)  # one Keras run, compared with every load
    for k, value in enumerate(reference.outputs):
        assert np.all(np.isfinite(value)), f"Keras output {k} is not finite: the case itself is ill-posed"
    sources: list[tuple[str, Any]] = [("in-memory", model)]
    for fmt in FORMATS:
        sources.append((f".{fmt}", save(model, tmp_path, fmt)))
    failures = []
    for label, source in sources:
        try:
            converted = tlp.load_keras(source)
            assert_model_parity(klib, model, converted, inputs, atol, reference)
        except Exception as err:  # noqa: BLE001 - collected and re-raised below
            failures.append(f"[{library_name(klib)} {label}] {type(err).__name__}: {err}")
    assert not failures, "\n".join(failures)


def _single_lstm(klib, name: str, units: int, **options: Any):
    """``Input(7, 5) -> LSTM``; a Functional model with outputs [out, h, c] under return_state."""
    inp = klib.Input(shape=(STEPS, FEATURES))
    layer = klib.layers.LSTM(units, name="lstm", **options)
    if options.get("return_state"):
        out, h, c = layer(inp)
        return klib.Model(inp, [out, h, c], name=name)
    return klib.Sequential([inp, layer], name=name)


# ---------------------------------------------------------------------------- single LSTM: one option at a time

# (id, units, LSTM options, input scale)
SINGLE_CASES: list[tuple[str, int, dict[str, Any], float]] = [
    ("units1", 1, {}, 1.0),
    ("units3", 3, {}, 1.0),
    ("units16", 16, {}, 1.0),
    ("return_sequences", 3, {"return_sequences": True}, 1.0),
    ("return_sequences_false", 3, {"return_sequences": False}, 1.0),
    ("return_state", 3, {"return_state": True}, 1.0),
    ("go_backwards", 3, {"go_backwards": True}, 1.0),
    ("go_backwards_seq", 3, {"go_backwards": True, "return_sequences": True}, 1.0),
    ("no_bias", 3, {"use_bias": False}, 1.0),
    ("unit_forget_bias_false", 3, {"unit_forget_bias": False}, 1.0),
]
SINGLE_CASES += [
    (f"act_{act}", 1 if act == "exponential" else 3, {"activation": act, "return_sequences": True}, scale)
    for act, scale in [
        ("relu", 1.0),
        ("elu", 1.0),
        ("selu", 1.0),
        ("softsign", 1.0),
        ("linear", 1.0),
        ("swish", 1.0),
        ("gelu", 1.0),
        ("exponential", 0.3),  # run with 1 unit below: wider layers feed exp(c) back and overflow
        ("softplus", 1.0),
        ("hard_sigmoid", 2.0),
    ]
]
SINGLE_CASES += [
    (f"ract_{ract}", 3, {"recurrent_activation": ract, "return_sequences": True}, scale)
    for ract, scale in [
        ("sigmoid", 1.0),
        ("hard_sigmoid", 2.0),
        ("tanh", 1.0),
        ("relu", 1.0),
        ("linear", 1.0),
    ]
]

# A few combinations of options in one layer.
COMBINED_CASES: list[tuple[str, int, dict[str, Any], float]] = [
    (
        "u16_back_seq_relu_hardsig_nobias",
        16,
        {
            "go_backwards": True,
            "return_sequences": True,
            "activation": "relu",
            "recurrent_activation": "hard_sigmoid",
            "use_bias": False,
        },
        2.0,
    ),
    ("state_back_seq", 4, {"return_state": True, "go_backwards": True, "return_sequences": True}, 1.0),
    (
        "state_last_softsign_tanh",
        2,
        {"return_state": True, "activation": "softsign", "recurrent_activation": "tanh"},
        1.0,
    ),
    ("u1_nofb_elu_seq", 1, {"unit_forget_bias": False, "activation": "elu", "return_sequences": True}, 1.0),
    (
        "hardsig_both_back",
        5,
        {"activation": "hard_sigmoid", "recurrent_activation": "hard_sigmoid", "go_backwards": True},
        2.0,
    ),
]


@pytest.mark.parametrize(
    "units, options, scale",
    [pytest.param(u, o, s, id=i) for i, u, o, s in SINGLE_CASES + COMBINED_CASES],
)
def test_single_lstm(klib, tmp_path, units, options, scale):
    seed(klib)
    model = _single_lstm(klib, "single", units, **options)
    randomize_biases(model, np.random.default_rng(0))
    x = _inputs(np.random.default_rng(1), (BATCH, STEPS, FEATURES), scale)
    _check_all_sources(klib, model, [x], tmp_path)


# ---------------------------------------------------------------------------- time_major (tf_keras only)


@pytest.mark.parametrize(
    "input_form, options",
    [
        pytest.param("batch_shape", {}, id="fixed_last"),
        pytest.param("batch_shape", {"return_sequences": True}, id="fixed_seq"),
        pytest.param("free_time_batch", {"return_sequences": True}, id="free_seq"),
        pytest.param("free_time_batch", {"return_state": True, "return_sequences": True}, id="free_state_seq"),
        pytest.param(
            "batch_shape",
            {"go_backwards": True, "return_sequences": True, "activation": "relu"},
            id="fixed_back_seq_relu",
        ),
    ],
)
def test_time_major_tf_keras(tf_keras, tmp_path, input_form, options):
    """A time-major tf_keras LSTM reads (time, batch, features); time=7, batch=3 here."""
    k = tf_keras
    seed(k)
    if input_form == "batch_shape":
        inp = k.Input(batch_shape=(STEPS, BATCH, FEATURES))
    else:
        inp = k.Input(shape=(None, FEATURES))  # (time, batch, features), both free
    layer = k.layers.LSTM(4, time_major=True, name="lstm_tm", **options)
    out = layer(inp)
    if options.get("return_state"):
        seq, h, c = out
        # a time-major sequence output feeding a time-major LSTM stays time-major
        tail = k.layers.LSTM(3, time_major=True, name="lstm_tail")(seq)
        model = k.Model(inp, [seq, h, c, tail], name="time_major")
    else:
        model = k.Model(inp, out, name="time_major")
    randomize_biases(model, np.random.default_rng(0))
    x = _inputs(np.random.default_rng(1), (STEPS, BATCH, FEATURES))
    y = model(x)
    first = np.asarray(y[0] if isinstance(y, (list, tuple)) else y)
    # the layer really is time-major: a sequence output leads with time, a last output with batch
    assert first.shape[0] == (STEPS if options.get("return_sequences") else BATCH)
    _check_all_sources(k, model, [x], tmp_path)


# ---------------------------------------------------------------------------- stacked LSTMs


def _stack_back_then_plain(klib):
    return klib.Sequential(
        [
            klib.Input(shape=(STEPS, FEATURES)),
            klib.layers.LSTM(8, go_backwards=True, return_sequences=True, name="lstm_back"),
            klib.layers.LSTM(4, name="lstm_plain"),
        ],
        name="stack2",
    )


def _stack_three_mixed(klib):
    return klib.Sequential(
        [
            klib.Input(shape=(STEPS, FEATURES)),
            klib.layers.LSTM(6, return_sequences=True, activation="relu", name="lstm_a"),
            klib.layers.LSTM(
                5, return_sequences=True, recurrent_activation="hard_sigmoid", use_bias=False, name="lstm_b"
            ),
            klib.layers.LSTM(3, go_backwards=True, unit_forget_bias=False, activation="softsign", name="lstm_c"),
        ],
        name="stack3",
    )


def _stack_functional_states(klib):
    """Encoder with return_state whose sequence feeds a second LSTM; all outputs exposed."""
    inp = klib.Input(shape=(STEPS, FEATURES))
    seq, h, c = klib.layers.LSTM(4, return_sequences=True, return_state=True, go_backwards=True, name="enc")(inp)
    top = klib.layers.LSTM(16, return_sequences=True, activation="elu", name="mid")(seq)
    last = klib.layers.LSTM(2, name="top")(top)
    return klib.Model(inp, [last, h, c], name="stack_states")


def _encoder_decoder(klib):
    """A decoder LSTM started from the encoder's final [h, c]."""
    enc_in = klib.Input(shape=(STEPS, FEATURES), name="enc_in")
    dec_in = klib.Input(shape=(STEPS - 2, 3), name="dec_in")
    _, h, c = klib.layers.LSTM(6, return_state=True, name="encoder")(enc_in)
    dec = klib.layers.LSTM(6, return_sequences=True, name="decoder")(dec_in, initial_state=[h, c])
    out = klib.layers.TimeDistributed(klib.layers.Dense(2), name="td")(dec)
    return klib.Model([enc_in, dec_in], out, name="enc_dec")


STACKS: dict[str, Callable] = {
    "back_seq_into_plain": _stack_back_then_plain,
    "three_mixed": _stack_three_mixed,
    "functional_states": _stack_functional_states,
    "encoder_decoder": _encoder_decoder,
}


@pytest.mark.parametrize("builder", list(STACKS.values()), ids=list(STACKS))
def test_stacked(klib, tmp_path, builder):
    seed(klib)
    model = builder(klib)
    randomize_biases(model, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    inputs = [_inputs(rng, (BATCH, *tuple(t.shape[1:]))) for t in model.inputs]
    _check_all_sources(klib, model, inputs, tmp_path)


# ---------------------------------------------------------------------------- with other layers


def _embedding_classifier(klib):
    return klib.Sequential(
        [
            klib.Input(shape=(STEPS,), dtype="int32"),
            klib.layers.Embedding(VOCAB, 6, name="emb"),
            klib.layers.LSTM(4, name="lstm"),
            klib.layers.Dense(3, activation="softmax", name="head"),
        ],
        name="emb_cls",
    )


def _embedding_seq_tagger(klib):
    return klib.Sequential(
        [
            klib.Input(shape=(STEPS,), dtype="int32"),
            klib.layers.Embedding(VOCAB, 5, name="emb"),
            klib.layers.Dropout(0.5, name="drop"),
            klib.layers.LSTM(4, return_sequences=True, go_backwards=True, name="lstm"),
            klib.layers.TimeDistributed(klib.layers.Dense(3), name="td"),
            klib.layers.Activation("softmax", name="act"),
        ],
        name="emb_tagger",
    )


@pytest.mark.parametrize("int_dtype", [np.int32, np.int64], ids=["int32", "int64"])
@pytest.mark.parametrize("builder", [_embedding_classifier, _embedding_seq_tagger], ids=["classifier", "tagger"])
def test_embedding(klib, tmp_path, builder, int_dtype):
    seed(klib)
    model = builder(klib)
    randomize_biases(model, np.random.default_rng(0))
    x = np.random.default_rng(1).integers(0, VOCAB, size=(BATCH, STEPS)).astype(int_dtype)
    x[0, :2] = 0  # index 0 is an ordinary row (mask_zero is off)
    x[1, -1] = VOCAB - 1
    _check_all_sources(klib, model, [x], tmp_path)


def _dense_2d(klib):
    return klib.Sequential(
        [
            klib.Input(shape=(STEPS, FEATURES)),
            klib.layers.LSTM(6, name="lstm"),
            klib.layers.Dropout(0.3, name="drop"),
            klib.layers.Dense(4, activation="relu", name="dense_relu"),
            klib.layers.Dense(2, name="dense_out"),
            klib.layers.Activation("tanh", name="act"),
        ],
        name="dense2d",
    )


def _dense_3d(klib):
    return klib.Sequential(
        [
            klib.Input(shape=(STEPS, FEATURES)),
            klib.layers.Dense(8, activation="tanh", name="dense_in"),  # 3-D input
            klib.layers.LSTM(4, return_sequences=True, name="lstm"),
            klib.layers.Dense(3, name="dense_seq"),  # 3-D input
            klib.layers.Activation("sigmoid", name="act"),
        ],
        name="dense3d",
    )


def _time_distributed(klib):
    inp = klib.Input(shape=(STEPS, FEATURES))
    x = klib.layers.TimeDistributed(klib.layers.Dense(6, activation="relu"), name="td_in")(inp)
    x = klib.layers.Dropout(0.2, name="drop")(x)
    x = klib.layers.LSTM(5, return_sequences=True, recurrent_activation="hard_sigmoid", name="lstm")(x)
    x = klib.layers.TimeDistributed(klib.layers.Dense(2, use_bias=False), name="td_out")(x)
    return klib.Model(inp, x, name="timedist")


OTHER_LAYERS = {"dense_2d": _dense_2d, "dense_3d": _dense_3d, "time_distributed": _time_distributed}


@pytest.mark.parametrize("builder", list(OTHER_LAYERS.values()), ids=list(OTHER_LAYERS))
def test_with_other_layers(klib, tmp_path, builder):
    seed(klib)
    model = builder(klib)
    randomize_biases(model, np.random.default_rng(0))
    x = _inputs(np.random.default_rng(1), (BATCH, STEPS, FEATURES), 2.0)
    _check_all_sources(klib, model, [x], tmp_path)
