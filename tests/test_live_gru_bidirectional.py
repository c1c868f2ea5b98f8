"""Live parity of GRU, SimpleRNN and Bidirectional models with Keras 3 and tf_keras.

Each case builds a small Keras model with random non-zero biases, saves it as ``.keras`` and
as legacy ``.h5``, loads each file with ``tlp.load_keras`` and compares every layer's output
with Keras at ``ATOL["cpu_float32"]``. To stay fast, one model holds many layers side by
side (one branch per option set), so one build and save covers a whole grid; a failure names
the layer, hence the option set.

Masks come from ``Embedding(mask_zero=True)``. Every masked model is run on two batches: one
whose rows are padded contiguously (right, left, both sides, fully masked: the fused kernel
path) and one with holes (the exact step loop).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest
import torch

import torch_lstm_probe as tlp
from tests.helpers import (
    ATOL,
    assert_close,
    assert_model_parity,
    keras_reference,
    library_name,
    randomize_biases,
    save,
    seed,
)

pytestmark = pytest.mark.keras

BATCH, STEPS, FEATURES = 5, 7, 4
VOCAB, EMBED = 12, 4
FORMATS = ("keras", "h5")


# ---------------------------------------------------------------------------- helpers


def _float_inputs() -> list[list[np.ndarray]]:
    rng = np.random.default_rng(1)
    return [[rng.standard_normal((BATCH, STEPS, FEATURES)).astype(np.float32)]]


def _token_inputs() -> list[list[np.ndarray]]:
    """Two token batches: contiguous padding only, and with holes. 0 is the masked id."""
    rng = np.random.default_rng(2)
    padded = rng.integers(1, VOCAB, size=(BATCH, STEPS)).astype(np.int32)
    padded[0, 4:] = 0  # right padding
    padded[1, :3] = 0  # left padding
    padded[2, :1] = 0  # both sides
    padded[2, 5:] = 0
    padded[3, :] = 0  # fully masked row
    holes = rng.integers(1, VOCAB, size=(BATCH, STEPS)).astype(np.int32)
    holes[0, [1, 4]] = 0
    holes[1, :2] = 0
    holes[1, 5] = 0
    holes[2, 6] = 0
    holes[4, 2:4] = 0
    return [[padded], [holes]]


def _check_files(klib, model, input_sets: list[list[np.ndarray]], tmp_path) -> None:
    """Loads ``model`` from ``.keras`` and ``.h5`` and checks each against Keras on every input set.

    Every source is checked before failing, so one report lists all broken sources. Keras runs
    once per input set; both loads are compared with that one result.
    """
    references = [keras_reference(klib, model, inputs) for inputs in input_sets]
    failures = []
    for fmt in FORMATS:
        try:
            converted = tlp.load_keras(save(model, tmp_path, fmt))
            for inputs, reference in zip(input_sets, references):
                assert_model_parity(klib, model, converted, inputs, ATOL["cpu_float32"], reference)
        except Exception as err:  # noqa: BLE001 - collected and re-raised below
            failures.append(f"[{library_name(klib)} .{fmt}] {type(err).__name__}: {err}")
    assert not failures, "\n".join(failures)


def _branches(klib, name: str, masked: bool, layers: dict[str, Any]):
    """A Functional model applying every layer of ``layers`` to the same (masked) input."""
    if masked:
        inp = klib.Input(shape=(STEPS,), dtype="int32", name="tokens")
        x = klib.layers.Embedding(VOCAB, EMBED, mask_zero=True, name="emb")(inp)
    else:
        inp = klib.Input(shape=(STEPS, FEATURES), name="features")
        x = inp
    outputs = []
    for layer in layers.values():
        out = layer(x)
        outputs.extend(out if isinstance(out, (list, tuple)) else [out])
    return klib.Model(inp, outputs, name=name)


def _run(klib, tmp_path, name: str, masked: bool, make_layers: Callable[[Any], dict[str, Any]]) -> None:
    seed(klib)
    model = _branches(klib, name, masked, make_layers(klib))
    randomize_biases(model, np.random.default_rng(0))
    inputs = _token_inputs() if masked else _float_inputs()
    _check_files(klib, model, inputs, tmp_path)


# ---------------------------------------------------------------------------- GRU and SimpleRNN

# (layer name, options); one model per group, every layer reads the same input.
GRU_OPTIONS: dict[str, dict[str, Any]] = {
    "gru_after_seq": {"return_sequences": True},
    "gru_before_seq": {"reset_after": False, "return_sequences": True},
    "gru_after_last": {},
    "gru_before_state_back": {"reset_after": False, "return_state": True, "go_backwards": True},
    "gru_after_state_back_seq": {"return_state": True, "go_backwards": True, "return_sequences": True},
    "gru_relu_hardsig": {"activation": "relu", "recurrent_activation": "hard_sigmoid", "return_sequences": True},
    "gru_before_softsign_tanh_nobias": {
        "reset_after": False,
        "activation": "softsign",
        "recurrent_activation": "tanh",
        "use_bias": False,
        "return_sequences": True,
    },
    "gru_after_nobias_elu": {"use_bias": False, "activation": "elu", "return_sequences": True},
    "gru_linear_swish": {"activation": "linear", "recurrent_activation": "swish", "return_sequences": True},
    "gru_before_selu_state": {"reset_after": False, "activation": "selu", "return_state": True},
}
SIMPLE_RNN_OPTIONS: dict[str, dict[str, Any]] = {
    "rnn_tanh_seq": {"return_sequences": True},
    "rnn_relu_state": {"activation": "relu", "return_state": True},
    "rnn_elu_back_seq_nobias": {"activation": "elu", "go_backwards": True, "return_sequences": True, "use_bias": False},
    "rnn_softsign_state_back": {
        "activation": "softsign",
        "go_backwards": True,
        "return_state": True,
        "return_sequences": True,
    },
    "rnn_hardsig_last": {"activation": "hard_sigmoid"},
}
MASKED_OPTIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "m_gru_after_seq": ("GRU", {"return_sequences": True}),
    "m_gru_before_seq": ("GRU", {"reset_after": False, "return_sequences": True}),
    "m_gru_after_last": ("GRU", {}),
    "m_gru_after_back_state": ("GRU", {"go_backwards": True, "return_sequences": True, "return_state": True}),
    "m_gru_before_back_last": ("GRU", {"reset_after": False, "go_backwards": True}),
    "m_gru_relu_seq": ("GRU", {"activation": "relu", "return_sequences": True}),
    "m_rnn_tanh_seq": ("SimpleRNN", {"return_sequences": True}),
    "m_rnn_relu_back_state": ("SimpleRNN", {"activation": "relu", "go_backwards": True, "return_state": True}),
    "m_rnn_elu_last": ("SimpleRNN", {"activation": "elu"}),
}


def _gru_layers(klib) -> dict[str, Any]:
    return {name: klib.layers.GRU(3, name=name, **opts) for name, opts in GRU_OPTIONS.items()}


def _simple_rnn_layers(klib) -> dict[str, Any]:
    return {name: klib.layers.SimpleRNN(3, name=name, **opts) for name, opts in SIMPLE_RNN_OPTIONS.items()}


def _masked_layers(klib) -> dict[str, Any]:
    return {name: getattr(klib.layers, cls)(3, name=name, **opts) for name, (cls, opts) in MASKED_OPTIONS.items()}


def test_gru_options(klib, tmp_path):
    _run(klib, tmp_path, "gru_grid", False, _gru_layers)


def test_simple_rnn_options(klib, tmp_path):
    _run(klib, tmp_path, "simple_rnn_grid", False, _simple_rnn_layers)


def test_masked_gru_simple_rnn(klib, tmp_path):
    _run(klib, tmp_path, "masked_grid", True, _masked_layers)


def test_masked_stack(klib, tmp_path):
    """The mask passes through a sequence-returning GRU into the next recurrent layer."""
    seed(klib)
    k = klib
    inp = k.Input(shape=(STEPS,), dtype="int32")
    x = k.layers.Embedding(VOCAB, EMBED, mask_zero=True, name="emb")(inp)
    x = k.layers.GRU(5, return_sequences=True, go_backwards=True, name="gru_a")(x)
    x = k.layers.SimpleRNN(4, return_sequences=True, name="rnn_b")(x)
    x = k.layers.GRU(3, reset_after=False, name="gru_c")(x)
    model = k.Model(inp, k.layers.Dense(2, name="head")(x), name="masked_stack")
    randomize_biases(model, np.random.default_rng(0))
    _check_files(klib, model, _token_inputs(), tmp_path)


def test_gru_initial_state(klib, tmp_path):
    """A GRU decoder started from an encoder GRU's final state (initial_state=[h])."""
    seed(klib)
    k = klib
    enc_in = k.Input(shape=(STEPS, FEATURES), name="enc_in")
    dec_in = k.Input(shape=(STEPS - 2, 3), name="dec_in")
    _, h = k.layers.GRU(4, return_state=True, reset_after=False, name="encoder")(enc_in)
    dec = k.layers.GRU(4, return_sequences=True, name="decoder")(dec_in, initial_state=[h])
    model = k.Model([enc_in, dec_in], dec, name="gru_enc_dec")
    randomize_biases(model, np.random.default_rng(0))
    rng = np.random.default_rng(3)
    inputs = [
        rng.standard_normal((BATCH, STEPS, FEATURES)).astype(np.float32),
        rng.standard_normal((BATCH, STEPS - 2, 3)).astype(np.float32),
    ]
    _check_files(klib, model, [inputs], tmp_path)


# ---------------------------------------------------------------------------- Bidirectional

# (return_sequences, return_state) per merge mode: every combination for the two modes that
# shape the outputs differently (concat, None); two complementary ones for the arithmetic modes.
MERGE_GRID: dict[str | None, list[tuple[bool, bool]]] = {
    "concat": [(True, True), (True, False), (False, True), (False, False)],
    None: [(True, True), (True, False), (False, True), (False, False)],
    "sum": [(True, True), (False, False)],
    "ave": [(True, False), (False, True)],
    "mul": [(True, True), (False, False)],
}


def _merge_grid(klib) -> dict[str, Any]:
    """Merge modes × return_sequences × return_state, around SimpleRNN (the cheapest layer to
    build: the merging logic does not depend on the wrapped class)."""
    layers = {}
    for mode, combos in MERGE_GRID.items():
        for seq, state in combos:
            name = f"bi_{mode or 'none'}_{'seq' if seq else 'last'}{'_state' if state else ''}"
            cell = klib.layers.SimpleRNN(3, return_sequences=seq, return_state=state)
            layers[name] = klib.layers.Bidirectional(cell, merge_mode=mode, name=name)
    return layers


def _lstm_gru_layers(klib, masked: bool) -> dict[str, Any]:
    """LSTM and GRU halves: state order [h_f, c_f, h_b, c_b] / [h_f, h_b], both GRU variants."""
    L = klib.layers
    layers = {
        "bi_lstm_concat_seq_state": L.Bidirectional(L.LSTM(3, return_sequences=True, return_state=True)),
        "bi_gru_ave_seq_state": L.Bidirectional(L.GRU(3, return_sequences=True, return_state=True), merge_mode="ave"),
        "bi_gru_before_mul_last": L.Bidirectional(L.GRU(3, reset_after=False), merge_mode="mul"),
    }
    if masked:
        layers.update(
            {
                "bi_lstm_none_last_state": L.Bidirectional(L.LSTM(2, return_state=True), merge_mode=None),
                "bi_lstm_sum_seq": L.Bidirectional(
                    L.LSTM(3, return_sequences=True, activation="relu"), merge_mode="sum"
                ),
                "bi_gru_before_none_seq": L.Bidirectional(
                    L.GRU(2, reset_after=False, return_sequences=True, recurrent_activation="hard_sigmoid"),
                    merge_mode=None,
                ),
            }
        )
    return layers


def test_bidirectional_merge_grid(klib, tmp_path):
    _run(klib, tmp_path, "bi_merge", True, _merge_grid)


@pytest.mark.parametrize("masked", [False, True], ids=["plain", "masked"])
def test_bidirectional_lstm_gru(klib, tmp_path, masked):
    _run(klib, tmp_path, "bi_lstm_gru", masked, lambda k: _lstm_gru_layers(k, masked))


def test_probe_gates_and_safetensors(klib, tmp_path):
    """Gate probe keys of GRU, SimpleRNN and both Bidirectional halves; a safetensors round trip."""
    seed(klib)
    L = klib.layers
    model = _branches(
        klib,
        "gates",
        True,
        {
            "gru": L.GRU(3, return_sequences=True, name="gru"),
            "rnn": L.SimpleRNN(2, return_state=True, name="rnn"),
            "bi": L.Bidirectional(
                L.LSTM(3, return_state=True),
                backward_layer=L.LSTM(3, go_backwards=True, return_state=True, activation="relu"),
                name="bi",
            ),
        },
    )
    randomize_biases(model, np.random.default_rng(0))
    (tokens,) = _token_inputs()[1]
    converted = tlp.load_keras(save(model, tmp_path, "keras"))
    acts = tlp.probe(converted, tokens, gates=True)
    for key in [
        "gru/gates/z",
        "gru/gates/r",
        "gru/gates/n",
        "gru/gates/h",
        "rnn/gates/h",
        "bi/forward/gates/c",
        "bi/backward/gates/i",
    ]:
        assert acts[key].shape == (BATCH, STEPS, 2 if key.startswith("rnn") else 3), key
    mask = tokens != 0
    for layer in ("gru", "rnn", "bi"):
        assert acts[f"{layer}/mask"].tolist() == mask.tolist()
    # masked steps carry both the state and the output (zero before the first real step)
    assert_close(acts["gru/gates/h"], acts["gru"], what="GRU h = its sequence output")
    assert_close(acts["rnn/gates/h"][:, -1], acts["rnn:1"], what="SimpleRNN final state")
    assert_close(acts["bi/forward/gates/h"][:, -1], acts["bi:1"], what="forward h_f")
    assert_close(acts["bi/forward/gates/c"][:, -1], acts["bi:2"], what="forward c_f")
    # the backward half's gates are in its processing order: its last row is the state after input step 0
    assert_close(acts["bi/backward/gates/h"][:, -1], acts["bi:3"], what="backward h_b")
    masked_steps = ~torch.as_tensor(mask).flip(1)  # in the backward half's processing order
    assert float(acts["bi/backward/gates/i"][masked_steps].abs().max()) == 0.0, "input gate is 0 at masked steps"
    path = tmp_path / "gates.safetensors"
    tlp.save(converted, path)
    reloaded = tlp.load(path)
    for a, b in zip(converted(tokens), reloaded(tokens)):
        assert_close(a, b, atol=0.0, what="safetensors round trip")


def _backward_layers(klib) -> dict[str, Any]:
    """Backward layers that differ from the forward one: units, activation, class, reset_after."""
    L = klib.layers
    keras3 = library_name(klib) == "keras"
    layers = {
        "bi_lstm_relu_back": L.Bidirectional(
            L.LSTM(3, return_sequences=True),
            backward_layer=L.LSTM(2, activation="relu", go_backwards=True, return_sequences=True),
        ),
        "bi_gru_elu_sum_seq_state": L.Bidirectional(
            L.GRU(3, return_sequences=True, return_state=True),
            backward_layer=L.GRU(
                3,
                activation="elu",
                recurrent_activation="hard_sigmoid",
                go_backwards=True,
                return_sequences=True,
                return_state=True,
                reset_after=False,
            ),
            merge_mode="sum",
        ),
        "bi_rnn_lstm_nobias": L.Bidirectional(
            L.SimpleRNN(3, return_sequences=True, use_bias=False),
            backward_layer=L.LSTM(3, go_backwards=True, return_sequences=True),
            merge_mode="mul",
        ),
    }
    if not keras3:
        # Keras 3 assumes the backward layer has the forward layer's states: with return_state
        # and different classes its symbolic outputs do not match its call (6 vs 5 tensors).
        layers["bi_lstm_gru_state"] = L.Bidirectional(
            L.LSTM(3, return_state=True),
            backward_layer=L.GRU(4, go_backwards=True, return_state=True, reset_after=False),
            merge_mode=None,
        )
        # tf_keras builds the default backward copy by flipping go_backwards, so a forward layer
        # reading backwards is allowed (Keras 3 sets go_backwards=True on both and refuses).
        layers["bi_rnn_back_forward"] = L.Bidirectional(
            L.SimpleRNN(3, go_backwards=True, return_sequences=True), merge_mode="ave"
        )
    return layers


def test_bidirectional_backward_layer(klib, tmp_path):
    _run(klib, tmp_path, "bi_backward", True, _backward_layers)


def test_bidirectional_initial_state_and_stack(klib, tmp_path):
    """Encoder states feed a Bidirectional decoder, split half/half; stacked bidirectional layers."""
    seed(klib)
    k = klib
    L = k.layers
    enc_in = k.Input(shape=(STEPS,), dtype="int32", name="enc_in")
    dec_in = k.Input(shape=(STEPS - 2, 3), name="dec_in")
    emb = L.Embedding(VOCAB, EMBED, mask_zero=True, name="emb")(enc_in)
    seq = L.Bidirectional(L.SimpleRNN(4, return_sequences=True), name="bi_enc_seq")(emb)
    _, h_f, c_f, h_b, c_b = L.Bidirectional(L.LSTM(4, return_state=True), name="bi_enc")(seq)
    dec = L.Bidirectional(L.LSTM(4, return_sequences=True), merge_mode="sum", name="bi_dec")(
        dec_in, initial_state=[h_f, c_f, h_b, c_b]
    )
    model = k.Model([enc_in, dec_in], dec, name="bi_enc_dec")
    randomize_biases(model, np.random.default_rng(0))
    dec_x = np.random.default_rng(4).standard_normal((BATCH, STEPS - 2, 3)).astype(np.float32)
    input_sets = [[tokens[0], dec_x] for tokens in _token_inputs()]
    _check_files(klib, model, input_sets, tmp_path)
