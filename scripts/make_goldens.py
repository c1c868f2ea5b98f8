"""Generate golden Keras models and the arrays Keras computes on them.

For every case in ``CASES`` and every requested library this writes, into
``tests/goldens/`` (or ``--out``):

* ``<library>_<case>.keras``        -- model saved in the zipped Keras format
* ``<library>_<case>.h5``           -- same model saved in the legacy HDF5 format
* ``<library>_<case>.safetensors``  -- reference arrays computed by that library:

  - ``input:<i>``   the i-th model input (model.inputs order)
  - ``output:<i>``  the i-th model output
  - ``layer:<name>`` output of every non-InputLayer layer, or
    ``layer:<name>:<k>`` for the k-th output of a layer with several outputs

Keras 3 (``keras``) and ``tf_keras`` never share a process: with
``--library all`` (the default) the script runs itself once per library.

Usage::

    python scripts/make_goldens.py [--library keras|tf_keras|all] [--out tests/goldens]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "tests" / "goldens"
LIBRARIES = ("keras", "tf_keras")

SEED = 1234
BATCH = 3
TIMESTEPS = 7
FEATURES = 5
BIAS_NOISE = 0.1
ATOL = 1e-6


# --------------------------------------------------------------------------
# Input generators
# --------------------------------------------------------------------------


def normal_inputs(shape: tuple[int, ...], scale: float = 1.0) -> Callable[[np.random.Generator], list[np.ndarray]]:
    def make(rng: np.random.Generator) -> list[np.ndarray]:
        return [(scale * rng.standard_normal(shape)).astype(np.float32)]

    return make


def integer_inputs(shape: tuple[int, ...], high: int) -> Callable[[np.random.Generator], list[np.ndarray]]:
    def make(rng: np.random.Generator) -> list[np.ndarray]:
        return [rng.integers(0, high, size=shape).astype(np.int32)]

    return make


SEQ_INPUT = normal_inputs((BATCH, TIMESTEPS, FEATURES))


# --------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    build: Callable  # (K, library) -> model
    inputs: Callable[[np.random.Generator], list[np.ndarray]]
    libraries: tuple[str, ...] = LIBRARIES
    # Extra weight changes after the bias noise, e.g. normalization statistics.
    adjust: Callable[[object, np.random.Generator], None] | None = None
    # Saved formats; "h5" is left out where the legacy file cannot hold the model (e.g. an adapted vocabulary).
    formats: tuple[str, ...] = ("keras", "h5")
    # "<library>/<format>" files that library writes but cannot load back itself (Keras 3 reads its own
    # legacy .h5 of attention on masked inputs as an unknown 'NotEqual' layer): saved, not reload-checked.
    no_reload: tuple[str, ...] = ()


def pick_activation(K, preferred: str, fallback: str) -> str:
    """Return ``preferred`` if the library knows that activation name, else ``fallback``."""
    try:
        K.activations.get(preferred)
    except (ValueError, KeyError, TypeError):
        print(f"  note: activation {preferred!r} rejected, using {fallback!r}")
        return fallback
    return preferred


def seq_input(K):
    return K.Input((TIMESTEPS, FEATURES), name="input")


def build_lstm_default_u3(K, lib):
    return K.Sequential([seq_input(K), K.layers.LSTM(3, name="lstm")], name="lstm_default_u3")


def build_lstm_u1_seq(K, lib):
    return K.Sequential([seq_input(K), K.layers.LSTM(1, return_sequences=True, name="lstm")], name="lstm_u1_seq")


def build_lstm_u16_stacked(K, lib):
    return K.Sequential(
        [
            seq_input(K),
            K.layers.LSTM(16, return_sequences=True, name="lstm"),
            K.layers.LSTM(16, return_sequences=True, name="lstm_1"),
            K.layers.LSTM(3, name="lstm_2"),
        ],
        name="lstm_u16_stacked",
    )


def build_lstm_go_backwards(K, lib):
    return K.Sequential(
        [
            seq_input(K),
            K.layers.LSTM(3, return_sequences=True, go_backwards=True, name="lstm"),
            K.layers.LSTM(3, go_backwards=True, name="lstm_1"),
        ],
        name="lstm_go_backwards",
    )


def build_lstm_relu_act(K, lib):
    return K.Sequential(
        [seq_input(K), K.layers.LSTM(3, activation="relu", return_sequences=True, name="lstm")],
        name="lstm_relu_act",
    )


def build_lstm_other_acts(K, lib):
    layers = [seq_input(K)]
    specs = [
        (("elu", "tanh"), ("sigmoid", "sigmoid"), True),
        (("softsign", "tanh"), ("tanh", "sigmoid"), True),
        (("linear", "tanh"), ("swish", "sigmoid"), False),
    ]
    for i, ((act, act_fb), (rec, rec_fb), return_sequences) in enumerate(specs):
        layers.append(
            K.layers.LSTM(
                3,
                activation=pick_activation(K, act, act_fb),
                recurrent_activation=pick_activation(K, rec, rec_fb),
                return_sequences=return_sequences,
                name="lstm" if i == 0 else f"lstm_{i}",
            )
        )
    return K.Sequential(layers, name="lstm_other_acts")


def build_lstm_hard_sigmoid(K, lib):
    return K.Sequential(
        [
            seq_input(K),
            K.layers.LSTM(3, recurrent_activation="hard_sigmoid", return_sequences=True, name="lstm"),
            K.layers.LSTM(16, recurrent_activation="hard_sigmoid", name="lstm_1"),
        ],
        name="lstm_hard_sigmoid",
    )


def build_lstm_no_bias(K, lib):
    return K.Sequential(
        [
            seq_input(K),
            K.layers.LSTM(3, use_bias=False, return_sequences=True, name="lstm"),
            K.layers.LSTM(3, use_bias=False, name="lstm_1"),
        ],
        name="lstm_no_bias",
    )


def build_lstm_return_state(K, lib):
    inp = seq_input(K)
    seq, h, c = K.layers.LSTM(3, return_sequences=True, return_state=True, name="enc")(inp)
    out2, h2, c2 = K.layers.LSTM(3, return_state=True, name="enc2")(seq)
    return K.Model(inp, [seq, h, c, out2, h2, c2], name="lstm_return_state")


def build_lstm_unit_forget_bias_false(K, lib):
    return K.Sequential(
        [
            seq_input(K),
            K.layers.LSTM(3, unit_forget_bias=False, return_sequences=True, name="lstm"),
        ],
        name="lstm_unit_forget_bias_false",
    )


def build_lstm_time_major(K, lib):
    # tf_keras reads a time_major LSTM input as (time, batch, features); a fixed
    # batch_shape on the Input makes that explicit: axis 0 is time (7), axis 1
    # is the batch (3).
    inp = K.Input(batch_shape=(TIMESTEPS, BATCH, FEATURES), name="input")
    x = K.layers.LSTM(3, time_major=True, return_sequences=True, name="lstm")(inp)
    y = K.layers.LSTM(3, time_major=True, name="lstm_1")(x)
    return K.Model(inp, y, name="lstm_time_major")


def build_embedding_classifier(K, lib):
    return K.Sequential(
        [
            K.Input((6,), dtype="int32", name="input"),
            K.layers.Embedding(20, 8, name="embedding"),
            K.layers.LSTM(16, return_sequences=True, name="lstm"),
            K.layers.TimeDistributed(K.layers.Dense(4, name="dense"), name="time_distributed"),
            K.layers.LSTM(3, name="lstm_1"),
            K.layers.Dropout(0.5, name="dropout"),
            K.layers.Dense(4, activation="relu", name="dense_1"),
            K.layers.Activation("softmax", name="activation"),
        ],
        name="embedding_classifier",
    )


def build_dense_3d(K, lib):
    return K.Sequential(
        [
            seq_input(K),
            K.layers.Dense(6, activation="tanh", name="dense"),
            K.layers.LSTM(3, return_sequences=True, name="lstm"),
            K.layers.Dense(2, name="dense_1"),
            K.layers.Activation("sigmoid", name="activation"),
        ],
        name="dense_3d",
    )


# -- GRU / SimpleRNN -------------------------------------------------------


def build_gru_reset_after(K, lib):
    return K.Sequential(
        [
            seq_input(K),
            K.layers.GRU(4, reset_after=True, return_sequences=True, name="gru"),
            K.layers.GRU(3, reset_after=True, go_backwards=True, name="gru_1"),
        ],
        name="gru_reset_after",
    )


def build_gru_reset_before(K, lib):
    return K.Sequential(
        [
            seq_input(K),
            K.layers.GRU(4, reset_after=False, return_sequences=True, name="gru"),
            K.layers.GRU(3, reset_after=False, go_backwards=True, name="gru_1"),
        ],
        name="gru_reset_before",
    )


def build_simple_rnn(K, lib):
    return K.Sequential(
        [
            seq_input(K),
            K.layers.SimpleRNN(4, activation="tanh", return_sequences=True, name="simple_rnn"),
            K.layers.SimpleRNN(3, activation="relu", go_backwards=True, name="simple_rnn_1"),
        ],
        name="simple_rnn",
    )


# -- Bidirectional ---------------------------------------------------------


def build_bidirectional(K, lib):
    inp = seq_input(K)
    x = K.layers.Bidirectional(
        K.layers.LSTM(4, return_sequences=True, name="lstm"), merge_mode="concat", name="bidirectional"
    )(inp)
    y = K.layers.Bidirectional(K.layers.GRU(3, name="gru"), merge_mode="sum", name="bidirectional_1")(x)
    return K.Model(inp, y, name="bidirectional")


def build_bidirectional_states(K, lib):
    inp = seq_input(K)
    out, h_f, c_f, h_b, c_b = K.layers.Bidirectional(
        K.layers.LSTM(3, return_state=True, name="lstm"), name="bidirectional"
    )(inp)
    return K.Model(inp, [out, h_f, c_f, h_b, c_b], name="bidirectional_states")


# -- Masks -----------------------------------------------------------------

MASK_TIMESTEPS = 7
MASK_VOCAB = 12


def padded_token_inputs(rng: np.random.Generator) -> list[np.ndarray]:
    """Token ids in [1, MASK_VOCAB) with 0 as padding: right, left, hole, fully padded, none."""
    tokens = rng.integers(1, MASK_VOCAB, size=(5, MASK_TIMESTEPS))
    tokens[0, 4:] = 0  # right padding
    tokens[1, :3] = 0  # left padding
    tokens[2, 2:4] = 0  # hole in the middle
    tokens[3, :] = 0  # fully padded
    return [tokens.astype(np.int32)]


def zero_step_inputs(rng: np.random.Generator) -> list[np.ndarray]:
    """Float steps with all features 0 (masked by Masking): right, left, both sides, none."""
    x = rng.standard_normal((4, TIMESTEPS, FEATURES)).astype(np.float32)
    x[0, 5:] = 0.0  # right padding
    x[1, :2] = 0.0  # left padding
    x[2, :1] = 0.0  # both sides
    x[2, 6:] = 0.0
    return [x]


def build_masked_lstm_gru(K, lib):
    return K.Sequential(
        [
            K.Input((MASK_TIMESTEPS,), dtype="int32", name="input"),
            K.layers.Embedding(MASK_VOCAB, 4, mask_zero=True, name="embedding"),
            K.layers.LSTM(4, return_sequences=True, name="lstm"),
            K.layers.GRU(3, return_sequences=True, name="gru"),
            K.layers.Bidirectional(K.layers.LSTM(2, name="lstm_1"), name="bidirectional"),
        ],
        name="masked_lstm_gru",
    )


def build_masking_layer(K, lib):
    return K.Sequential(
        [
            seq_input(K),
            K.layers.Masking(mask_value=0.0, name="masking"),
            K.layers.LSTM(4, return_sequences=True, go_backwards=True, name="lstm"),
            K.layers.LSTM(3, name="lstm_1"),
        ],
        name="masking_layer",
    )


# -- Encoder / decoder -----------------------------------------------------

DECODER_TIMESTEPS = 6
DECODER_FEATURES = 4


def seq2seq_inputs(rng: np.random.Generator) -> list[np.ndarray]:
    enc = rng.standard_normal((BATCH, TIMESTEPS, FEATURES)).astype(np.float32)
    dec = rng.standard_normal((BATCH, DECODER_TIMESTEPS, DECODER_FEATURES)).astype(np.float32)
    return [enc, dec]


def build_seq2seq(K, lib):
    enc_in = K.Input((TIMESTEPS, FEATURES), name="encoder_input")
    dec_in = K.Input((DECODER_TIMESTEPS, DECODER_FEATURES), name="decoder_input")
    _, h, c = K.layers.LSTM(4, return_state=True, name="encoder")(enc_in)
    dec = K.layers.LSTM(4, return_sequences=True, name="decoder")(dec_in, initial_state=[h, c])
    out = K.layers.TimeDistributed(K.layers.Dense(3, name="dense"), name="time_distributed")(dec)
    return K.Model([enc_in, dec_in], out, name="seq2seq")


# -- Convolutions ----------------------------------------------------------

CNN_TIMESTEPS = 8


def build_cnn_lstm(K, lib):
    return K.Sequential(
        [
            K.Input((CNN_TIMESTEPS, FEATURES), name="input"),
            K.layers.Conv1D(6, 3, padding="causal", activation="relu", name="conv1d"),
            K.layers.MaxPooling1D(2, name="max_pooling1d"),
            K.layers.LSTM(4, name="lstm"),
            K.layers.Dense(2, name="dense"),
        ],
        name="cnn_lstm",
    )


TD_FEATURES = 9  # 8 * 9 = 72 = 4 * 6 * 3


def build_td_cnn_lstm(K, lib):
    return K.Sequential(
        [
            K.Input((CNN_TIMESTEPS, TD_FEATURES), name="input"),
            K.layers.Reshape((4, 6, 3), name="reshape"),
            K.layers.TimeDistributed(K.layers.Conv1D(4, 3, activation="relu", name="conv1d"), name="time_distributed"),
            K.layers.TimeDistributed(K.layers.MaxPooling1D(2, name="max_pooling1d"), name="time_distributed_1"),
            K.layers.TimeDistributed(K.layers.Flatten(name="flatten"), name="time_distributed_2"),
            K.layers.LSTM(3, name="lstm"),
        ],
        name="td_cnn_lstm",
    )


# -- Merges and normalizations ---------------------------------------------

SECOND_FEATURES = 3


def two_sequence_inputs(rng: np.random.Generator) -> list[np.ndarray]:
    a = rng.standard_normal((BATCH, TIMESTEPS, FEATURES)).astype(np.float32)
    b = rng.standard_normal((BATCH, TIMESTEPS, SECOND_FEATURES)).astype(np.float32)
    return [a, b]


def build_merges_norms(K, lib):
    in_a = K.Input((TIMESTEPS, FEATURES), name="input_a")
    in_b = K.Input((TIMESTEPS, SECOND_FEATURES), name="input_b")
    a = K.layers.LSTM(4, return_sequences=True, name="lstm_a")(in_a)
    b = K.layers.LSTM(4, return_sequences=True, name="lstm_b")(in_b)
    added = K.layers.Add(name="add")([a, b])
    multiplied = K.layers.Multiply(name="multiply")([a, b])
    x = K.layers.Concatenate(name="concatenate")([a, added, multiplied])
    x = K.layers.BatchNormalization(name="batch_normalization")(x)
    x = K.layers.LayerNormalization(name="layer_normalization")(x)
    out = K.layers.Dense(2, name="dense")(x)
    return K.Model([in_a, in_b], out, name="merges_norms")


def randomize_norms(model, rng: np.random.Generator) -> None:
    """Non-trivial BatchNormalization statistics and LayerNormalization scale/offset."""
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "BatchNormalization":
            gamma, beta, mean, var = layer.get_weights()
            n = gamma.shape
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, n).astype(gamma.dtype),
                    rng.uniform(-0.2, 0.2, n).astype(beta.dtype),
                    rng.uniform(-0.3, 0.3, n).astype(mean.dtype),
                    rng.uniform(0.2, 1.5, n).astype(var.dtype),
                ]
            )
        elif kind == "LayerNormalization":
            gamma, beta = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.8, 1.2, gamma.shape).astype(gamma.dtype),
                    rng.uniform(-0.1, 0.1, beta.shape).astype(beta.dtype),
                ]
            )


CASES: list[Case] = [
    Case(
        "lstm_default_u3",
        "Sequential Input(7,5) -> LSTM(3) with default settings.",
        build_lstm_default_u3,
        SEQ_INPUT,
    ),
    Case(
        "lstm_u1_seq",
        "Sequential Input(7,5) -> LSTM(1, return_sequences=True).",
        build_lstm_u1_seq,
        SEQ_INPUT,
    ),
    Case(
        "lstm_u16_stacked",
        "Stacked LSTM(16, seq) -> LSTM(16, seq) -> LSTM(3).",
        build_lstm_u16_stacked,
        SEQ_INPUT,
    ),
    Case(
        "lstm_go_backwards",
        "LSTM(3, seq, go_backwards) -> LSTM(3, go_backwards); backwards sequences are not re-reversed.",
        build_lstm_go_backwards,
        SEQ_INPUT,
    ),
    Case(
        "lstm_relu_act",
        "LSTM(3, activation=relu, return_sequences=True).",
        build_lstm_relu_act,
        SEQ_INPUT,
    ),
    Case(
        "lstm_other_acts",
        "LSTM(elu/sigmoid, seq) -> LSTM(softsign/tanh, seq) -> LSTM(linear/swish); activation/recurrent_activation.",
        build_lstm_other_acts,
        SEQ_INPUT,
    ),
    Case(
        "lstm_hard_sigmoid",
        "LSTM(3, recurrent_activation=hard_sigmoid, seq) -> LSTM(16, hard_sigmoid); inputs ~ N(0, 2^2) so gates "
        "leave the linear region; hard_sigmoid is the library's own definition.",
        build_lstm_hard_sigmoid,
        normal_inputs((BATCH, TIMESTEPS, FEATURES), scale=2.0),
    ),
    Case(
        "lstm_no_bias",
        "LSTM(3, use_bias=False, seq) -> LSTM(3, use_bias=False).",
        build_lstm_no_bias,
        SEQ_INPUT,
    ),
    Case(
        "lstm_return_state",
        "Functional: enc=LSTM(3, seq, return_state) -> enc2=LSTM(3, return_state) on enc's sequence; outputs "
        "[enc seq, enc h, enc c, enc2 out, enc2 h, enc2 c].",
        build_lstm_return_state,
        SEQ_INPUT,
    ),
    Case(
        "lstm_unit_forget_bias_false",
        "LSTM(3, unit_forget_bias=False, return_sequences=True).",
        build_lstm_unit_forget_bias_false,
        SEQ_INPUT,
    ),
    Case(
        "lstm_time_major",
        "Functional Input(batch_shape=(7, 3, 5)) -> LSTM(3, time_major, seq) -> LSTM(3, time_major); axis 0 is "
        "time (7), axis 1 batch (3); output (3, 3), intermediate (7, 3, 3).",
        build_lstm_time_major,
        normal_inputs((TIMESTEPS, BATCH, FEATURES)),
        libraries=("tf_keras",),
    ),
    Case(
        "embedding_classifier",
        "Input(6,int32) -> Embedding(20,8) -> LSTM(16,seq) -> TimeDistributed(Dense(4)) -> LSTM(3) -> "
        "Dropout(0.5) -> Dense(4,relu) -> Activation(softmax); token ids in [0, 20).",
        build_embedding_classifier,
        integer_inputs((BATCH, 6), high=20),
    ),
    Case(
        "dense_3d",
        "Input(7,5) -> Dense(6,tanh) on 3-D input -> LSTM(3,seq) -> Dense(2) -> Activation(sigmoid).",
        build_dense_3d,
        SEQ_INPUT,
    ),
    Case(
        "gru_reset_after",
        "GRU(4, reset_after=True, seq) -> GRU(3, reset_after=True, go_backwards).",
        build_gru_reset_after,
        SEQ_INPUT,
    ),
    Case(
        "gru_reset_before",
        "GRU(4, reset_after=False, seq) -> GRU(3, reset_after=False, go_backwards).",
        build_gru_reset_before,
        SEQ_INPUT,
    ),
    Case(
        "simple_rnn",
        "SimpleRNN(4, tanh, seq) -> SimpleRNN(3, relu, go_backwards).",
        build_simple_rnn,
        SEQ_INPUT,
    ),
    Case(
        "bidirectional",
        "Functional Bidirectional(LSTM(4, seq), concat) -> Bidirectional(GRU(3), sum).",
        build_bidirectional,
        SEQ_INPUT,
    ),
    Case(
        "bidirectional_states",
        "Functional Bidirectional(LSTM(3, return_state), concat); outputs [out, h_fw, c_fw, h_bw, c_bw].",
        build_bidirectional_states,
        SEQ_INPUT,
    ),
    Case(
        "masked_lstm_gru",
        "Input(7,int32) -> Embedding(12,4,mask_zero) -> LSTM(4,seq) -> GRU(3,seq) -> Bidirectional(LSTM(2)); "
        "batch 5, rows: right padding, left padding, hole in the middle, fully padded, no padding (0 = pad).",
        build_masked_lstm_gru,
        padded_token_inputs,
    ),
    Case(
        "masking_layer",
        "Input(7,5) -> Masking(0) -> LSTM(4, seq, go_backwards) -> LSTM(3); batch 4, all-zero steps: right "
        "padding, left padding, both sides, none.",
        build_masking_layer,
        zero_step_inputs,
    ),
    Case(
        "seq2seq",
        "Inputs encoder (7,5), decoder (6,4); encoder=LSTM(4, return_state) -> decoder=LSTM(4, seq, "
        "initial_state=[h, c]) -> TimeDistributed(Dense(3)).",
        build_seq2seq,
        seq2seq_inputs,
    ),
    Case(
        "cnn_lstm",
        "Input(8,5) -> Conv1D(6, 3, causal, relu) -> MaxPooling1D(2) -> LSTM(4) -> Dense(2).",
        build_cnn_lstm,
        normal_inputs((BATCH, CNN_TIMESTEPS, FEATURES)),
    ),
    Case(
        "td_cnn_lstm",
        "Input(8,9) -> Reshape(4,6,3) -> TimeDistributed(Conv1D(4,3,relu)) -> TimeDistributed(MaxPooling1D(2)) "
        "-> TimeDistributed(Flatten) -> LSTM(3).",
        build_td_cnn_lstm,
        normal_inputs((BATCH, CNN_TIMESTEPS, TD_FEATURES)),
    ),
    Case(
        "merges_norms",
        "Inputs a (7,5), b (7,3) -> LSTM(4, seq) each -> Concatenate([a, Add(a,b), Multiply(a,b)]) -> "
        "BatchNormalization (random moving stats) -> LayerNormalization -> Dense(2).",
        build_merges_norms,
        two_sequence_inputs,
        adjust=randomize_norms,
    ),
]


# --------------------------------------------------------------------------
# Worker: runs inside one library only
# --------------------------------------------------------------------------


def quiet_tensorflow() -> None:
    import logging
    import warnings

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*HDF5 file.*")
    warnings.filterwarnings("ignore", message=".*legacy.*")


def import_library(library: str):
    quiet_tensorflow()
    if library == "keras":
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        import keras as K
    elif library == "tf_keras":
        import tf_keras as K
    else:  # pragma: no cover - argparse restricts the choices
        raise ValueError(library)
    return K


def is_bias(weight) -> bool:
    name = getattr(weight, "path", None) or weight.name
    last = name.split("/")[-1].split(":")[0]
    return last == "bias"


def perturb_biases(model, rng: np.random.Generator) -> None:
    """Add uniform(-BIAS_NOISE, BIAS_NOISE) to every bias (defaults are zero / unit forget)."""
    for layer in model.layers:
        weights = layer.weights
        if not weights:
            continue
        values = layer.get_weights()
        changed = False
        for i, w in enumerate(weights):
            if is_bias(w):
                noise = rng.uniform(-BIAS_NOISE, BIAS_NOISE, size=values[i].shape)
                values[i] = (values[i] + noise).astype(values[i].dtype)
                changed = True
        if changed:
            layer.set_weights(values)


def non_input_layers(K, model):
    return [layer for layer in model.layers if not isinstance(layer, K.layers.InputLayer)]


def as_list(x) -> list:
    if isinstance(x, (list, tuple)):
        return list(x)
    return [x]


def predict(model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    # One batch for everything: a time_major model has time on axis 0, and
    # predict() must not split that axis.
    feed = inputs[0] if len(inputs) == 1 else inputs
    if any(is_text(x) for x in inputs):  # Keras 3's predict() refuses object arrays; a direct call takes them
        out = model(feed, training=False)
        return [np.asarray(o) for o in as_list(out)]
    out = model.predict(feed, batch_size=max(64, inputs[0].shape[0]), verbose=0)
    return [np.asarray(o) for o in as_list(out)]


def is_text(a: np.ndarray) -> bool:
    """String inputs (object / bytes / str arrays): kept in the metadata as JSON, not as tensors."""
    return a.dtype.kind in "OSU"


def text_metadata(inputs: list[np.ndarray]) -> dict[str, str]:
    """``{"input:<i>": JSON}`` for every string input: nested lists of str with the input's shape."""
    out = {}
    for i, x in enumerate(inputs):
        if is_text(x):
            values = np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else str(v), otypes=[object])(x)
            out[f"input:{i}"] = json.dumps(values.tolist(), ensure_ascii=False)
    return out


def text_inputs(metadata: dict[str, str]) -> dict[str, np.ndarray]:
    """Inverse of ``text_metadata``: object arrays of str, as Keras' ``Input(dtype="string")`` takes them."""
    return {k: np.array(json.loads(v), dtype=object) for k, v in metadata.items() if k.startswith("input:")}


def to_stored(a: np.ndarray) -> np.ndarray:
    if np.issubdtype(a.dtype, np.floating):
        return np.ascontiguousarray(a, dtype=np.float32)
    if np.issubdtype(a.dtype, np.integer):
        return np.ascontiguousarray(a, dtype=np.int32)
    raise TypeError(f"unexpected dtype {a.dtype}")


def compute_arrays(K, model, inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for i, x in enumerate(inputs):
        if not is_text(x):  # string inputs go into the metadata (text_metadata)
            arrays[f"input:{i}"] = to_stored(x)
    for i, y in enumerate(predict(model, inputs)):
        arrays[f"output:{i}"] = to_stored(y)
    for layer in non_input_layers(K, model):
        sub = K.Model(model.inputs, layer.output)
        outs = predict(sub, inputs)
        if isinstance(layer.output, (list, tuple)):
            for k, y in enumerate(outs):
                arrays[f"layer:{layer.name}:{k}"] = to_stored(y)
        else:
            (y,) = outs
            arrays[f"layer:{layer.name}"] = to_stored(y)
    return arrays


def check_against(
    K, model, expected: dict[str, np.ndarray], label: str, metadata: dict[str, str] | None = None
) -> None:
    given = {**expected, **text_inputs(metadata or {})}
    inputs = [given[f"input:{i}"] for i in range(len(model.inputs))]
    got = compute_arrays(K, model, inputs)
    if sorted(got) != sorted(expected):
        raise AssertionError(f"{label}: keys differ: {sorted(got)} != {sorted(expected)}")
    for key, want in expected.items():
        if got[key].shape != want.shape:
            raise AssertionError(f"{label}: {key} shape {got[key].shape} != {want.shape}")
        np.testing.assert_allclose(got[key], want, atol=ATOL, rtol=0, err_msg=f"{label}: {key}")


def run_library(library: str, out_dir: Path, only: set[str] | None, cases: list[Case] | None = None) -> None:
    K = import_library(library)
    from safetensors.numpy import load_file, save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    version = K.__version__
    print(f"[{library} {version}]")
    for case_index, case in enumerate(CASES if cases is None else cases):
        if library not in case.libraries or (only and case.name not in only):
            continue
        K.backend.clear_session()
        K.utils.set_random_seed(SEED)
        model = case.build(K, library)
        rng = np.random.default_rng(SEED + case_index)
        perturb_biases(model, rng)
        if case.adjust is not None:
            case.adjust(model, rng)
        inputs = case.inputs(rng)
        arrays = compute_arrays(K, model, inputs)

        stem = out_dir / f"{library}_{case.name}"
        model_paths = [stem.with_suffix(f".{fmt}") for fmt in case.formats]
        st_path = stem.with_suffix(".safetensors")
        for path in model_paths:
            if path.exists():
                path.unlink()
            model.save(str(path))
        texts = text_metadata(inputs)
        save_file(
            arrays,
            str(st_path),
            metadata={
                "library": library,
                "keras_version": version,
                "case": case.name,
                "description": case.description,
                **texts,
            },
        )

        # Sanity checks: the stored arrays load back, and each saved model,
        # re-loaded by the same library, reproduces them.
        st_path.chmod(0o644)
        stored = load_file(str(st_path))
        for path in model_paths:
            if f"{library}/{path.suffix[1:]}" in case.no_reload:
                print(f"  note: {library} cannot load back {path.name}; not reload-checked")
                continue
            K.backend.clear_session()
            reloaded = K.models.load_model(str(path), compile=False)
            check_against(K, reloaded, stored, f"{library}/{path.name}", texts)
        print(f"  {case.name}: {len(stored)} arrays, reload ok ({', '.join(sorted(stored))})")


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def main(
    argv: list[str] | None = None,
    cases: list[Case] | None = None,
    default_out: Path = DEFAULT_OUT,
    script: Path | None = None,
    description: str | None = None,
) -> int:
    """Command line; another script passes its own ``cases``, ``default_out`` and ``script`` (re-run per library)."""
    parser = argparse.ArgumentParser(description=description or __doc__.splitlines()[0])
    parser.add_argument("--library", choices=(*LIBRARIES, "all"), default="all")
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument("--case", action="append", help="only generate this case (repeatable)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    out_dir = args.out.resolve()

    if args.worker:
        run_library(args.library, out_dir, set(args.case) if args.case else None, cases)
        return 0

    libraries = LIBRARIES if args.library == "all" else (args.library,)
    status = 0
    for library in libraries:
        cmd = [
            sys.executable,
            str(Path(script or __file__).resolve()),
            "--worker",
            "--library",
            library,
            "--out",
            str(out_dir),
        ]
        for name in args.case or ():
            cmd += ["--case", name]
        result = subprocess.run(cmd, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        if result.returncode != 0:
            print(f"{library}: generation failed (exit {result.returncode})", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
