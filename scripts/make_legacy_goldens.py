"""Write golden files of older Keras generations and their reference outputs.

Standalone Keras 1.x and 2.0-2.2 cannot be installed next to a current TensorFlow, and the
CuDNN layers need a GPU to run, so this script writes those files itself with h5py, following
the layouts those Keras versions wrote:

* root attributes ``keras_version`` (absent in the oldest files), ``backend`` (Keras 2 only)
  and ``model_config`` (``{"class_name": "Sequential", "config": ...}``, where ``config`` is the
  list of layer dicts for Keras 1 - 2.2.2 and ``{"name", "layers"}`` from Keras 2.2.3 on);
* a ``model_weights`` group with ``layer_names``; Keras 2 also stores ``keras_version`` and
  ``backend`` there. tf_keras' loader treats a ``model_weights`` group without
  ``keras_version`` as Keras 1 and converts the weights;
* one group per layer with a ``weight_names`` attribute and one dataset per name. Keras 1 names
  the arrays ``<layer>_W_i`` (Theano backend) or ``<layer>_W_i:0`` (TensorFlow backend),
  Keras 2.0-2.2 ``<layer>/kernel:0`` (a sub-group per layer, no cell level).

One file is written by tf_keras itself: a model of ``CuDNNLSTM`` / ``CuDNNGRU`` layers can be
built and saved on a CPU (only running it needs cuDNN).

The reference outputs come from an independent float64 numpy implementation of the layer
equations in this file, applied to the arrays in the layout in which each file stores them
(Keras 1 per-gate arrays; cuDNN's row-major ``(units, features)`` gate matrices; ...). Every
reference is then checked against tf_keras: the file (or an equivalent modern tf_keras model
that loads the file's weights through tf_keras' own legacy converter) must give the same
per-layer outputs within ``ATOL``.

Outputs, under ``tests/goldens/legacy/``:

* ``<case>.h5`` (or ``<case>.json`` + a weights-only ``<case>.h5``): the file in its legacy layout;
* ``<case>.safetensors``: ``input:0``, ``output:0`` and ``layer:<name>`` (every layer's
  output), float32; metadata ``case``, ``generation``, ``keras_version``, ``written_by``,
  ``cross_check``, ``description``.

Usage::

    python scripts/make_legacy_goldens.py [--out tests/goldens/legacy] [--no-check]
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import h5py  # noqa: E402
import numpy as np  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "tests" / "goldens" / "legacy"
SEED = 20240601
BATCH, TIMESTEPS, FEATURES = 3, 7, 5
ATOL = 1e-5  # tf_keras (float32) against the float64 reference

# ==========================================================================
# Independent float64 reference implementation
# ==========================================================================


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _hard_sigmoid(x: np.ndarray) -> np.ndarray:
    # Keras 1 and 2 (TensorFlow and Theano backends): clip(0.2 x + 0.5, 0, 1)
    return np.clip(0.2 * x + 0.5, 0.0, 1.0)


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "hard_sigmoid": _hard_sigmoid,
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
}


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def run_recurrence(x, step, n_states, units, go_backwards=False, mask=None):
    """Keras' recurrence: processing order, masked steps carry the state and the previous output.

    Returns ``(sequence in processing order, last output)``.
    """
    batch, steps, _ = x.shape
    states = [np.zeros((batch, units)) for _ in range(n_states)]
    previous = np.zeros((batch, units))
    outputs = []
    for t in range(steps - 1, -1, -1) if go_backwards else range(steps):
        out, new_states = step(x[:, t, :], states)
        if mask is not None:
            keep = mask[:, t][:, None]
            out = np.where(keep, out, previous)
            new_states = [np.where(keep, n, s) for n, s in zip(new_states, states)]
        states, previous = new_states, out
        outputs.append(out)
    return np.stack(outputs, axis=1), previous


@dataclass
class Gate:
    """One gate's parameters in the plain algebraic form ``x @ wx + h @ wh + b``."""

    wx: np.ndarray  # (F, u)
    wh: np.ndarray  # (u, u)
    b: np.ndarray  # (u,)
    b_rec: np.ndarray | None = None  # (u,) recurrent bias (GRU reset_after / cuDNN)


def lstm_forward(
    x, gates: dict[str, Gate], activation, recurrent_activation, return_sequences, go_backwards=False, mask=None
):
    act, rec = ACTIVATIONS[activation], ACTIVATIONS[recurrent_activation]
    units = gates["i"].wh.shape[0]

    def pre(g: Gate, xt, h):
        z = xt @ g.wx + h @ g.wh + g.b
        return z if g.b_rec is None else z + g.b_rec

    def step(xt, states):
        h, c = states
        i = rec(pre(gates["i"], xt, h))
        f = rec(pre(gates["f"], xt, h))
        o = rec(pre(gates["o"], xt, h))
        c = f * c + i * act(pre(gates["c"], xt, h))
        h = o * act(c)
        return h, [h, c]

    seq, last = run_recurrence(x, step, 2, units, go_backwards, mask)
    return seq if return_sequences else last


def gru_forward(
    x,
    gates: dict[str, Gate],
    activation,
    recurrent_activation,
    return_sequences,
    reset_after,
    go_backwards=False,
    mask=None,
):
    act, rec = ACTIVATIONS[activation], ACTIVATIONS[recurrent_activation]
    units = gates["z"].wh.shape[0]

    def step(xt, states):
        (h,) = states
        gz, gr, gh = gates["z"], gates["r"], gates["h"]
        if reset_after:
            z = rec(xt @ gz.wx + gz.b + h @ gz.wh + gz.b_rec)
            r = rec(xt @ gr.wx + gr.b + h @ gr.wh + gr.b_rec)
            cand = act(xt @ gh.wx + gh.b + r * (h @ gh.wh + gh.b_rec))
        else:
            z = rec(xt @ gz.wx + gz.b + h @ gz.wh)
            r = rec(xt @ gr.wx + gr.b + h @ gr.wh)
            cand = act(xt @ gh.wx + gh.b + (r * h) @ gh.wh)
        h = z * h + (1.0 - z) * cand
        return h, [h]

    seq, last = run_recurrence(x, step, 1, units, go_backwards, mask)
    return seq if return_sequences else last


def simple_rnn_forward(x, w, u, b, activation, return_sequences, go_backwards=False, mask=None):
    act = ACTIVATIONS[activation]

    def step(xt, states):
        h = act(xt @ w + b + states[0] @ u)
        return h, [h]

    seq, last = run_recurrence(x, step, 1, u.shape[0], go_backwards, mask)
    return seq if return_sequences else last


def dense_forward(x, kernel, bias, activation):
    y = x @ kernel + bias
    return softmax(y) if activation == "softmax" else ACTIVATIONS[activation](y)


# --- how each generation stores a gate's parameters -------------------------------------------


def gates_from_packed(kernel, recurrent, bias, names):
    """Keras 2 layout (and Keras 1 consume_less='gpu'): gate blocks side by side along the columns."""
    u = recurrent.shape[0]
    out = {}
    for k, g in enumerate(names):
        cols = slice(k * u, (k + 1) * u)
        out[g] = Gate(kernel[:, cols], recurrent[:, cols], np.zeros(u) if bias is None else bias[cols])
    return out


def gates_from_keras2_gru_reset_after(kernel, recurrent, bias):
    u = recurrent.shape[0]
    out = {}
    for k, g in enumerate("zrh"):
        cols = slice(k * u, (k + 1) * u)
        out[g] = Gate(kernel[:, cols], recurrent[:, cols], bias[0, cols], bias[1, cols])
    return out


def gates_from_cudnn(kernel, recurrent, bias, names):
    """cuDNN semantics of CuDNNLSTM/CuDNNGRU weights.

    The layer flattens each gate's stored ``(F, u)`` column block row-major and hands it to
    cuDNN, which reads a flat gate block as a row-major ``(u, F)`` matrix ``A`` and computes
    ``A @ x``; the recurrent ``(u, u)`` block likewise becomes ``R`` with ``R @ h``. The bias
    holds all input biases, then all recurrent biases, each in the Keras gate order.
    """
    features, u = kernel.shape[0], recurrent.shape[0]
    n = len(names)
    out = {}
    for k, g in enumerate(names):
        cols = slice(k * u, (k + 1) * u)
        a = np.ascontiguousarray(kernel[:, cols]).ravel(order="C").reshape(u, features)
        r = np.ascontiguousarray(recurrent[:, cols]).ravel(order="C").reshape(u, u)
        out[g] = Gate(a.T, r.T, bias[cols], bias[n * u + k * u : n * u + (k + 1) * u])
    return out


# ==========================================================================
# Writing legacy files
# ==========================================================================


def _names_attr(names: list[str]) -> np.ndarray:
    return np.array([n.encode("utf8") for n in names])


def write_weight_groups(group: h5py.Group, layers: list[tuple[str, list[tuple[str, np.ndarray]]]]) -> None:
    """``layer_names`` plus one group per layer holding ``weight_names`` and the datasets."""
    group.attrs["layer_names"] = _names_attr([name for name, _ in layers])
    for name, weights in layers:
        g = group.create_group(name)
        if weights:
            g.attrs["weight_names"] = _names_attr([w for w, _ in weights])
        else:
            g.attrs["weight_names"] = np.array([], dtype="S1")
        for wname, value in weights:
            g.create_dataset(wname, data=np.asarray(value, dtype=np.float32))


def write_model_h5(path: Path, model_config: dict, layers, keras_version: str | None, backend: str | None) -> None:
    """A whole-model file (``model.save``). Keras 1 wrote no ``backend`` and no attributes on
    ``model_weights``; Keras 2 writes ``keras_version`` and ``backend`` at both places."""
    with h5py.File(path, "w") as f:
        if keras_version is not None:
            f.attrs["keras_version"] = keras_version.encode("utf8")
        if backend is not None:
            f.attrs["backend"] = backend.encode("utf8")
        f.attrs["model_config"] = json.dumps(model_config).encode("utf8")
        mw = f.create_group("model_weights")
        write_weight_groups(mw, layers)
        if keras_version is not None and not keras_version.startswith("1"):
            mw.attrs["backend"] = (backend or "tensorflow").encode("utf8")
            mw.attrs["keras_version"] = keras_version.encode("utf8")


def write_weights_only_h5(path: Path, layers, keras_version: str, backend: str) -> None:
    """A ``save_weights`` file of Keras 2: the layer groups sit at the root."""
    with h5py.File(path, "w") as f:
        write_weight_groups(f, layers)
        f.attrs["backend"] = backend.encode("utf8")
        f.attrs["keras_version"] = keras_version.encode("utf8")


# --- configs as each generation serialized them ---------------------------------------------------

_K2_GLOROT = {
    "class_name": "VarianceScaling",
    "config": {"scale": 1.0, "mode": "fan_avg", "distribution": "uniform", "seed": None},
}
_K2_ORTHO = {"class_name": "Orthogonal", "config": {"gain": 1.0, "seed": None}}
_K2_ZEROS = {"class_name": "Zeros", "config": {}}


def k1_embedding(name, vocab, dim, length, mask_zero):
    return {
        "class_name": "Embedding",
        "config": {
            "name": name,
            "trainable": True,
            "batch_input_shape": [None, length],
            "input_dtype": "int32",
            "input_dim": vocab,
            "output_dim": dim,
            "init": "uniform",
            "input_length": length,
            "W_regularizer": None,
            "activity_regularizer": None,
            "W_constraint": None,
            "mask_zero": mask_zero,
            "dropout": 0.0,
        },
    }


def k1_recurrent(
    cls,
    name,
    units,
    *,
    return_sequences=False,
    go_backwards=False,
    consume_less="cpu",
    activation="tanh",
    inner_activation="hard_sigmoid",
    input_dim=None,
    input_length=None,
    batch_input_shape=None,
    omit=(),
):
    cfg: dict[str, Any] = {"name": name, "trainable": True}
    if batch_input_shape is not None:
        cfg["batch_input_shape"] = batch_input_shape
        cfg["input_dtype"] = "float32"
    cfg.update(
        {
            "return_sequences": return_sequences,
            "go_backwards": go_backwards,
            "stateful": False,
            "unroll": False,
            "consume_less": consume_less,
            "input_dim": input_dim,
            "input_length": input_length,
            "output_dim": units,
            "init": "glorot_uniform",
            "inner_init": "orthogonal",
        }
    )
    if cls == "LSTM":
        cfg["forget_bias_init"] = "one"
    cfg["activation"] = activation
    if cls != "SimpleRNN":
        cfg["inner_activation"] = inner_activation
    cfg.update(
        {"W_regularizer": None, "U_regularizer": None, "b_regularizer": None, "dropout_W": 0.0, "dropout_U": 0.0}
    )
    for key in omit:
        cfg.pop(key, None)
    return {"class_name": cls, "config": cfg}


def k1_dense(name, units, activation, input_dim):
    return {
        "class_name": "Dense",
        "config": {
            "name": name,
            "trainable": True,
            "output_dim": units,
            "init": "glorot_uniform",
            "activation": activation,
            "W_regularizer": None,
            "b_regularizer": None,
            "activity_regularizer": None,
            "W_constraint": None,
            "b_constraint": None,
            "bias": True,
            "input_dim": input_dim,
        },
    }


def k1_dropout(name, p):
    return {"class_name": "Dropout", "config": {"name": name, "trainable": True, "p": p}}


def k2_recurrent(
    cls,
    name,
    units,
    *,
    return_sequences=False,
    go_backwards=False,
    activation="tanh",
    recurrent_activation="hard_sigmoid",
    use_bias=True,
    reset_after=None,
    batch_input_shape=None,
    return_state_key=True,
):
    cfg: dict[str, Any] = {"name": name, "trainable": True}
    if batch_input_shape is not None:
        cfg["batch_input_shape"] = batch_input_shape
        cfg["dtype"] = "float32"
    cfg["return_sequences"] = return_sequences
    if return_state_key:
        cfg["return_state"] = False
    cfg.update(
        {"go_backwards": go_backwards, "stateful": False, "unroll": False, "units": units, "activation": activation}
    )
    if cls != "SimpleRNN":
        cfg["recurrent_activation"] = recurrent_activation
    cfg.update(
        {
            "use_bias": use_bias,
            "kernel_initializer": _K2_GLOROT,
            "recurrent_initializer": _K2_ORTHO,
            "bias_initializer": _K2_ZEROS,
        }
    )
    if cls == "LSTM":
        cfg["unit_forget_bias"] = True
    cfg.update(
        {
            "kernel_regularizer": None,
            "recurrent_regularizer": None,
            "bias_regularizer": None,
            "activity_regularizer": None,
            "kernel_constraint": None,
            "recurrent_constraint": None,
            "bias_constraint": None,
            "dropout": 0.0,
            "recurrent_dropout": 0.0,
            "implementation": 1,
        }
    )
    if reset_after is not None:
        cfg["reset_after"] = reset_after
    return {"class_name": cls, "config": cfg}


def k2_cudnn(cls, name, units, *, return_sequences=False, go_backwards=False, batch_input_shape=None):
    cfg: dict[str, Any] = {"name": name, "trainable": True}
    if batch_input_shape is not None:
        cfg["batch_input_shape"] = batch_input_shape
        cfg["dtype"] = "float32"
    cfg.update(
        {
            "return_sequences": return_sequences,
            "return_state": False,
            "go_backwards": go_backwards,
            "stateful": False,
            "units": units,
            "kernel_initializer": _K2_GLOROT,
            "recurrent_initializer": _K2_ORTHO,
            "bias_initializer": _K2_ZEROS,
        }
    )
    if cls == "CuDNNLSTM":
        cfg["unit_forget_bias"] = True
    cfg.update(
        {
            "kernel_regularizer": None,
            "recurrent_regularizer": None,
            "bias_regularizer": None,
            "activity_regularizer": None,
            "kernel_constraint": None,
            "recurrent_constraint": None,
            "bias_constraint": None,
        }
    )
    return {"class_name": cls, "config": cfg}


def k2_dense(name, units, activation):
    return {
        "class_name": "Dense",
        "config": {
            "name": name,
            "trainable": True,
            "units": units,
            "activation": activation,
            "use_bias": True,
            "kernel_initializer": _K2_GLOROT,
            "bias_initializer": _K2_ZEROS,
            "kernel_regularizer": None,
            "bias_regularizer": None,
            "activity_regularizer": None,
            "kernel_constraint": None,
            "bias_constraint": None,
        },
    }


def sequential(layers: list[dict], keras_version: str, name: str = "sequential_1") -> dict:
    """Keras 1 - 2.2.2 serialized a Sequential model as the bare layer list; 2.2.3+ as a dict."""
    parts = [int(p) for p in keras_version.split(".")[:3]]
    if parts >= [2, 2, 3]:
        return {"class_name": "Sequential", "config": {"name": name, "layers": layers}}
    return {"class_name": "Sequential", "config": layers}


# ==========================================================================
# Cases
# ==========================================================================


@dataclass
class Golden:
    files: dict[str, Path]  # role -> path ("model", or "arch" + "weights")
    inputs: np.ndarray
    layers: dict[str, np.ndarray]  # layer name -> reference output (float64), in model order
    meta: dict[str, str]
    check: Callable[[Golden], dict[str, np.ndarray]] | None = None  # tf_keras per-layer outputs
    extra: dict[str, Any] = field(default_factory=dict)


def _w(rng, *shape, scale=0.6):
    return rng.uniform(-scale, scale, size=shape).astype(np.float32)


def _f64(*arrays):
    return [np.asarray(a, dtype=np.float64) for a in arrays]


def _float_inputs(rng, scale=1.5):
    return (scale * rng.standard_normal((BATCH, TIMESTEPS, FEATURES))).astype(np.float32)


def case_keras1_lstm_masked(out: Path, rng) -> Golden:
    """Keras 1.2.2, TensorFlow backend: Embedding(mask_zero) -> LSTM (12 arrays, consume_less
    'cpu') -> Dropout -> LSTM (12 arrays, 'mem', go_backwards) -> Dense(softmax)."""
    vocab, dim, length, u1, u2 = 10, 4, 6, 3, 2
    tokens = np.array([[3, 1, 4, 1, 5, 0], [9, 2, 6, 0, 0, 0], [5, 3, 0, 5, 8, 9]], dtype=np.int32)
    emb = _w(rng, vocab, dim, scale=1.0)
    keras1_gates = {}
    stored = {}
    for lname, units, features in (("lstm_1", u1, dim), ("lstm_2", u2, u1)):
        arrays = []
        for g in "icfo":  # Keras 1 trainable_weights order: i, c, f, o
            W, U, b = _w(rng, features, units), _w(rng, units, units), _w(rng, units, scale=0.3)
            arrays += [(f"{lname}_W_{g}:0", W), (f"{lname}_U_{g}:0", U), (f"{lname}_b_{g}:0", b)]
        stored[lname] = arrays
        d = dict((n.split(f"{lname}_")[1][:-2], a) for n, a in arrays)
        keras1_gates[lname] = {g: Gate(*_f64(d[f"W_{g}"], d[f"U_{g}"], d[f"b_{g}"])) for g in "icfo"}
    dk, db = _w(rng, u2, 2), _w(rng, 2, scale=0.3)
    config = sequential(
        [
            k1_embedding("embedding_1", vocab, dim, length, True),
            k1_recurrent("LSTM", "lstm_1", u1, return_sequences=True, consume_less="cpu", input_dim=dim),
            k1_dropout("dropout_1", 0.25),
            k1_recurrent("LSTM", "lstm_2", u2, go_backwards=True, consume_less="mem", input_dim=u1),
            k1_dense("dense_1", 2, "softmax", u2),
        ],
        "1.2.2",
    )
    path = out / "keras1_lstm_masked.h5"
    write_model_h5(
        path,
        config,
        [
            ("embedding_1", [("embedding_1_W:0", emb)]),
            ("lstm_1", stored["lstm_1"]),
            ("dropout_1", []),
            ("lstm_2", stored["lstm_2"]),
            ("dense_1", [("dense_1_W:0", dk), ("dense_1_b:0", db)]),
        ],
        keras_version="1.2.2",
        backend=None,
    )
    mask = tokens != 0
    x = np.asarray(emb, np.float64)[tokens]
    y1 = lstm_forward(x, keras1_gates["lstm_1"], "tanh", "hard_sigmoid", True, mask=mask)
    y2 = lstm_forward(y1, keras1_gates["lstm_2"], "tanh", "hard_sigmoid", False, go_backwards=True, mask=mask)
    y3 = dense_forward(y2, *_f64(dk, db), "softmax")
    layers = {"embedding_1": x, "lstm_1": y1, "dropout_1": y1, "lstm_2": y2, "dense_1": y3}

    def check(golden: Golden):
        import tf_keras as K

        model = K.Sequential(
            [
                K.layers.Embedding(vocab, dim, mask_zero=True, input_length=length, name="embedding_1"),
                K.layers.LSTM(u1, recurrent_activation="hard_sigmoid", return_sequences=True, name="lstm_1"),
                K.layers.Dropout(0.25, name="dropout_1"),
                K.layers.LSTM(u2, recurrent_activation="hard_sigmoid", go_backwards=True, name="lstm_2"),
                K.layers.Dense(2, activation="softmax", name="dense_1"),
            ]
        )
        model.build((None, length))
        model.load_weights(str(golden.files["model"]))  # tf_keras converts the Keras 1 arrays
        return tf_keras_layer_outputs(model, golden.inputs)

    return Golden(
        {"model": path},
        tokens,
        layers,
        {
            "generation": "keras1",
            "keras_version": "1.2.2",
            "written_by": "h5py, Keras 1.2.2 layout (TensorFlow backend names)",
            "cross_check": "tf_keras Sequential(Embedding, LSTM(hard_sigmoid), Dropout, LSTM(hard_sigmoid, go_backwards), Dense) "
            ".load_weights(file): tf_keras' Keras 1 converter (i, c, f, o -> i, f, c, o)",
            "description": "Keras 1.2.2: Embedding(mask_zero) -> LSTM(3, seq, consume_less=cpu, 12 arrays) -> Dropout(p) -> "
            "LSTM(2, go_backwards, consume_less=mem) -> Dense(softmax); right-padded and holed masks",
        },
        check,
    )


def case_keras1_bidirectional_lstm(out: Path, rng) -> Golden:
    """Keras 1.2.2: Embedding(mask_zero) -> Bidirectional(LSTM, concat) -> Dense. The wrapper's
    group holds the forward layer's 12 arrays (``forward_lstm_1_W_i:0`` ...) then the backward's."""
    vocab, dim, length, units = 12, 4, 6, 3
    tokens = np.array([[7, 1, 4, 11, 5, 2], [9, 2, 6, 0, 0, 0], [0, 0, 3, 5, 8, 9]], dtype=np.int32)
    emb = _w(rng, vocab, dim, scale=1.0)
    stored, gates = [], {}
    for half in ("forward", "backward"):
        prefix = f"{half}_lstm_1"
        arrays = {}
        for g in "icfo":
            arrays[g] = (_w(rng, dim, units), _w(rng, units, units), _w(rng, units, scale=0.3))
            stored += [(f"{prefix}_{k}_{g}:0", a) for k, a in zip("WUb", arrays[g])]
        gates[half] = {g: Gate(*_f64(*arrays[g])) for g in "icfo"}
    dk, db = _w(rng, 2 * units, 2), _w(rng, 2, scale=0.3)
    inner = k1_recurrent("LSTM", "lstm_1", units, consume_less="cpu", input_dim=dim)
    config = sequential(
        [
            k1_embedding("embedding_1", vocab, dim, length, True),
            {
                "class_name": "Bidirectional",
                "config": {"name": "bidirectional_1", "trainable": True, "layer": inner, "merge_mode": "concat"},
            },
            k1_dense("dense_1", 2, "linear", 2 * units),
        ],
        "1.2.2",
    )
    path = out / "keras1_bidirectional_lstm.h5"
    write_model_h5(
        path,
        config,
        [
            ("embedding_1", [("embedding_1_W:0", emb)]),
            ("bidirectional_1", stored),
            ("dense_1", [("dense_1_W:0", dk), ("dense_1_b:0", db)]),
        ],
        keras_version="1.2.2",
        backend=None,
    )
    mask = tokens != 0
    x = np.asarray(emb, np.float64)[tokens]
    fwd = lstm_forward(x, gates["forward"], "tanh", "hard_sigmoid", False, mask=mask)
    bwd = lstm_forward(x, gates["backward"], "tanh", "hard_sigmoid", False, go_backwards=True, mask=mask)
    y2 = np.concatenate([fwd, bwd], axis=-1)
    y3 = dense_forward(y2, *_f64(dk, db), "linear")

    def check(golden: Golden):
        import tf_keras as K

        model = K.Sequential(
            [
                K.layers.Embedding(vocab, dim, mask_zero=True, input_length=length, name="embedding_1"),
                K.layers.Bidirectional(
                    K.layers.LSTM(units, recurrent_activation="hard_sigmoid"),
                    merge_mode="concat",
                    name="bidirectional_1",
                ),
                K.layers.Dense(2, name="dense_1"),
            ]
        )
        model.build((None, length))
        model.load_weights(str(golden.files["model"]))  # converts each half from Keras 1
        return tf_keras_layer_outputs(model, golden.inputs)

    return Golden(
        {"model": path},
        tokens,
        {"embedding_1": x, "bidirectional_1": y2, "dense_1": y3},
        {
            "generation": "keras1",
            "keras_version": "1.2.2",
            "written_by": "h5py, Keras 1.2.2 layout (TensorFlow backend names)",
            "cross_check": "tf_keras Sequential(Embedding, Bidirectional(LSTM(hard_sigmoid)), Dense).load_weights(file): "
            "tf_keras converts each half from Keras 1",
            "description": "Keras 1.2.2: Embedding(mask_zero) -> Bidirectional(LSTM(3), concat; 24 arrays) -> Dense, "
            "right- and left-padded masks",
        },
        check,
    )


def case_keras1_lstm_gpu_noversion(out: Path, rng) -> Golden:
    """A Keras 1 file without ``keras_version`` (Theano backend names, no ``:0``), LSTMs saved
    with consume_less='gpu' (3 packed arrays), the first with no activation keys at all."""
    u1, u2 = 4, 3
    stored, gates = {}, {}
    for lname, units, features in (("lstm_1", u1, FEATURES), ("lstm_2", u2, u1)):
        W, U, b = _w(rng, features, 4 * units), _w(rng, units, 4 * units), _w(rng, 4 * units, scale=0.3)
        stored[lname] = [(f"{lname}_W", W), (f"{lname}_U", U), (f"{lname}_b", b)]
        gates[lname] = gates_from_packed(*_f64(W, U, b), "ifco")  # Keras 1 'gpu' step: z0..z3 = i, f, c, o
    config = sequential(
        [
            k1_recurrent(
                "LSTM",
                "lstm_1",
                u1,
                return_sequences=True,
                consume_less="gpu",
                batch_input_shape=[None, TIMESTEPS, FEATURES],
                input_dim=FEATURES,
                input_length=TIMESTEPS,
                omit=("activation", "inner_activation"),
            ),
            k1_recurrent(
                "LSTM", "lstm_2", u2, consume_less="gpu", activation="relu", inner_activation="sigmoid", input_dim=u1
            ),
        ],
        "1.0.0",
    )
    path = out / "keras1_lstm_gpu_noversion.h5"
    write_model_h5(
        path, config, [("lstm_1", stored["lstm_1"]), ("lstm_2", stored["lstm_2"])], keras_version=None, backend=None
    )
    x = _float_inputs(rng)
    y1 = lstm_forward(np.float64(x), gates["lstm_1"], "tanh", "hard_sigmoid", True)
    y2 = lstm_forward(y1, gates["lstm_2"], "relu", "sigmoid", False)

    def check(golden: Golden):
        import tf_keras as K

        model = K.Sequential(
            [
                K.layers.LSTM(
                    u1,
                    recurrent_activation="hard_sigmoid",
                    return_sequences=True,
                    name="lstm_1",
                    input_shape=(TIMESTEPS, FEATURES),
                ),
                K.layers.LSTM(u2, activation="relu", recurrent_activation="sigmoid", name="lstm_2"),
            ]
        )
        model.load_weights(str(golden.files["model"]))
        return tf_keras_layer_outputs(model, golden.inputs)

    return Golden(
        {"model": path},
        x,
        {"lstm_1": y1, "lstm_2": y2},
        {
            "generation": "keras1",
            "keras_version": "(absent)",
            "written_by": "h5py, Keras 1 layout (Theano backend names)",
            "cross_check": "tf_keras Sequential(LSTM(hard_sigmoid), LSTM(relu, sigmoid)).load_weights(file); "
            "tf_keras passes 3-array Keras 1 LSTMs through unchanged",
            "description": "Keras 1 without keras_version: LSTM(4, seq, consume_less=gpu, activation keys absent -> "
            "tanh / hard_sigmoid) -> LSTM(3, relu / sigmoid, consume_less=gpu)",
        },
        check,
    )


def case_keras1_gru(out: Path, rng) -> Golden:
    """Keras 1.2.2 GRU: 9 arrays (z, r, h) with consume_less='cpu', then 3 packed arrays ('gpu')."""
    u1, u2 = 3, 2
    W1 = {g: (_w(rng, FEATURES, u1), _w(rng, u1, u1), _w(rng, u1, scale=0.3)) for g in "zrh"}
    stored1 = [(f"gru_1_{k}_{g}:0", W1[g][j]) for g in "zrh" for j, k in enumerate("WUb")]
    gates1 = {g: Gate(*_f64(*W1[g])) for g in "zrh"}
    W2, U2, b2 = _w(rng, u1, 3 * u2), _w(rng, u2, 3 * u2), _w(rng, 3 * u2, scale=0.3)
    gates2 = gates_from_packed(*_f64(W2, U2, b2), "zrh")
    dk, db = _w(rng, u2, 1), _w(rng, 1, scale=0.3)
    config = sequential(
        [
            k1_recurrent(
                "GRU",
                "gru_1",
                u1,
                return_sequences=True,
                consume_less="cpu",
                batch_input_shape=[None, TIMESTEPS, FEATURES],
                input_dim=FEATURES,
                input_length=TIMESTEPS,
            ),
            k1_recurrent("GRU", "gru_2", u2, go_backwards=True, consume_less="gpu", input_dim=u1),
            k1_dense("dense_1", 1, "linear", u2),
        ],
        "1.2.2",
    )
    path = out / "keras1_gru.h5"
    write_model_h5(
        path,
        config,
        [
            ("gru_1", stored1),
            ("gru_2", [("gru_2_W:0", W2), ("gru_2_U:0", U2), ("gru_2_b:0", b2)]),
            ("dense_1", [("dense_1_W:0", dk), ("dense_1_b:0", db)]),
        ],
        keras_version="1.2.2",
        backend=None,
    )
    x = _float_inputs(rng)
    y1 = gru_forward(np.float64(x), gates1, "tanh", "hard_sigmoid", True, reset_after=False)
    y2 = gru_forward(y1, gates2, "tanh", "hard_sigmoid", False, reset_after=False, go_backwards=True)
    y3 = dense_forward(y2, *_f64(dk, db), "linear")

    def check(golden: Golden):
        import tf_keras as K

        model = K.Sequential(
            [
                K.layers.GRU(
                    u1,
                    recurrent_activation="hard_sigmoid",
                    reset_after=False,
                    return_sequences=True,
                    name="gru_1",
                    input_shape=(TIMESTEPS, FEATURES),
                ),
                K.layers.GRU(
                    u2, recurrent_activation="hard_sigmoid", reset_after=False, go_backwards=True, name="gru_2"
                ),
                K.layers.Dense(1, name="dense_1"),
            ]
        )
        model.load_weights(str(golden.files["model"]))  # tf_keras packs the 9 Keras 1 arrays
        return tf_keras_layer_outputs(model, golden.inputs)

    return Golden(
        {"model": path},
        x,
        {"gru_1": y1, "gru_2": y2, "dense_1": y3},
        {
            "generation": "keras1",
            "keras_version": "1.2.2",
            "written_by": "h5py, Keras 1.2.2 layout (TensorFlow backend names)",
            "cross_check": "tf_keras Sequential(GRU(hard_sigmoid, reset_after=False) x2, Dense).load_weights(file)",
            "description": "Keras 1.2.2: GRU(3, seq, consume_less=cpu, 9 arrays z, r, h) -> GRU(2, go_backwards, "
            "consume_less=gpu, 3 arrays) -> Dense",
        },
        check,
    )


def case_keras1_simplernn(out: Path, rng) -> Golden:
    """Keras 1.2.2 SimpleRNN: W, U, b."""
    u1, u2 = 3, 2
    p1 = (_w(rng, FEATURES, u1), _w(rng, u1, u1), _w(rng, u1, scale=0.3))
    p2 = (_w(rng, u1, u2), _w(rng, u2, u2), _w(rng, u2, scale=0.3))
    config = sequential(
        [
            k1_recurrent(
                "SimpleRNN",
                "simplernn_1",
                u1,
                return_sequences=True,
                consume_less="cpu",
                batch_input_shape=[None, TIMESTEPS, FEATURES],
                input_dim=FEATURES,
                input_length=TIMESTEPS,
            ),
            k1_recurrent("SimpleRNN", "simplernn_2", u2, activation="relu", consume_less="cpu", input_dim=u1),
        ],
        "1.2.2",
    )
    path = out / "keras1_simplernn.h5"
    write_model_h5(
        path,
        config,
        [
            ("simplernn_1", [(f"simplernn_1_{k}:0", a) for k, a in zip("WUb", p1)]),
            ("simplernn_2", [(f"simplernn_2_{k}:0", a) for k, a in zip("WUb", p2)]),
        ],
        keras_version="1.2.2",
        backend=None,
    )
    x = _float_inputs(rng)
    y1 = simple_rnn_forward(np.float64(x), *_f64(*p1), "tanh", True)
    y2 = simple_rnn_forward(y1, *_f64(*p2), "relu", False)

    def check(golden: Golden):
        import tf_keras as K

        model = K.Sequential(
            [
                K.layers.SimpleRNN(u1, return_sequences=True, name="simplernn_1", input_shape=(TIMESTEPS, FEATURES)),
                K.layers.SimpleRNN(u2, activation="relu", name="simplernn_2"),
            ]
        )
        model.load_weights(str(golden.files["model"]))
        return tf_keras_layer_outputs(model, golden.inputs)

    return Golden(
        {"model": path},
        x,
        {"simplernn_1": y1, "simplernn_2": y2},
        {
            "generation": "keras1",
            "keras_version": "1.2.2",
            "written_by": "h5py, Keras 1.2.2 layout (TensorFlow backend names)",
            "cross_check": "tf_keras Sequential(SimpleRNN, SimpleRNN(relu)).load_weights(file)",
            "description": "Keras 1.2.2: SimpleRNN(3, seq) -> SimpleRNN(2, relu)",
        },
        check,
    )


def _keras2_lstm_case(out: Path, rng, version: str, fname: str, go_backwards: bool) -> Golden:
    """Keras 2.1.6 / 2.2.4 whole-model file: LSTM(hard_sigmoid) -> LSTM(use_bias=False) -> Dense."""
    u1, u2 = 4, 3
    k1, r1, b1 = _w(rng, FEATURES, 4 * u1), _w(rng, u1, 4 * u1), _w(rng, 4 * u1, scale=0.3)
    k2, r2 = _w(rng, u1, 4 * u2), _w(rng, u2, 4 * u2)
    dk, db = _w(rng, u2, 2), _w(rng, 2, scale=0.3)
    config = sequential(
        [
            k2_recurrent(
                "LSTM",
                "lstm_1",
                u1,
                return_sequences=True,
                go_backwards=go_backwards,
                batch_input_shape=[None, TIMESTEPS, FEATURES],
            ),
            k2_recurrent("LSTM", "lstm_2", u2, use_bias=False, activation="relu"),
            k2_dense("dense_1", 2, "linear"),
        ],
        version,
    )
    path = out / fname
    write_model_h5(
        path,
        config,
        [
            ("lstm_1", [("lstm_1/kernel:0", k1), ("lstm_1/recurrent_kernel:0", r1), ("lstm_1/bias:0", b1)]),
            ("lstm_2", [("lstm_2/kernel:0", k2), ("lstm_2/recurrent_kernel:0", r2)]),
            ("dense_1", [("dense_1/kernel:0", dk), ("dense_1/bias:0", db)]),
        ],
        keras_version=version,
        backend="tensorflow",
    )
    x = _float_inputs(rng)
    y1 = lstm_forward(
        np.float64(x),
        gates_from_packed(*_f64(k1, r1, b1), "ifco"),
        "tanh",
        "hard_sigmoid",
        True,
        go_backwards=go_backwards,
    )
    y2 = lstm_forward(y1, gates_from_packed(*_f64(k2, r2), None, "ifco"), "relu", "hard_sigmoid", False)
    y3 = dense_forward(y2, *_f64(dk, db), "linear")

    def check(golden: Golden):
        import tf_keras as K

        model = K.models.load_model(str(golden.files["model"]), compile=False)  # the file itself
        return tf_keras_layer_outputs(model, golden.inputs)

    layout = "list" if version < "2.2.3" else "{name, layers}"
    return Golden(
        {"model": path},
        x,
        {"lstm_1": y1, "lstm_2": y2, "dense_1": y3},
        {
            "generation": "keras2.0-2.2",
            "keras_version": version,
            "written_by": f"h5py, Keras {version} layout",
            "cross_check": "tf_keras.models.load_model(file)",
            "description": f"Keras {version} (Sequential config as {layout}): LSTM(4, seq, hard_sigmoid"
            f"{', go_backwards' if go_backwards else ''}) -> LSTM(3, relu, use_bias=False) -> Dense",
        },
        check,
    )


def case_keras2_1_6_lstm(out: Path, rng) -> Golden:
    return _keras2_lstm_case(out, rng, "2.1.6", "keras2_1_6_lstm.h5", go_backwards=False)


def case_keras2_2_4_lstm(out: Path, rng) -> Golden:
    return _keras2_lstm_case(out, rng, "2.2.4", "keras2_2_4_lstm.h5", go_backwards=True)


def case_keras2_0_8_lstm_implicit_defaults(out: Path, rng) -> Golden:
    """Keras 2.0.8 LSTM configs without ``activation`` / ``recurrent_activation`` keys: the
    Keras 2.0-2.2 defaults apply (tanh / hard_sigmoid), not the later sigmoid."""
    u1, u2 = 4, 3
    k1, r1, b1 = _w(rng, FEATURES, 4 * u1), _w(rng, u1, 4 * u1), _w(rng, 4 * u1, scale=0.3)
    k2, r2, b2 = _w(rng, u1, 4 * u2), _w(rng, u2, 4 * u2), _w(rng, 4 * u2, scale=0.3)
    minimal1 = {
        "class_name": "LSTM",
        "config": {
            "name": "lstm_1",
            "trainable": True,
            "batch_input_shape": [None, TIMESTEPS, FEATURES],
            "dtype": "float32",
            "units": u1,
            "return_sequences": True,
        },
    }
    minimal2 = {"class_name": "LSTM", "config": {"name": "lstm_2", "trainable": True, "units": u2}}
    config = sequential([minimal1, minimal2], "2.0.8")
    path = out / "keras2_0_8_lstm_implicit_defaults.h5"
    write_model_h5(
        path,
        config,
        [
            ("lstm_1", [("lstm_1/kernel:0", k1), ("lstm_1/recurrent_kernel:0", r1), ("lstm_1/bias:0", b1)]),
            ("lstm_2", [("lstm_2/kernel:0", k2), ("lstm_2/recurrent_kernel:0", r2), ("lstm_2/bias:0", b2)]),
        ],
        keras_version="2.0.8",
        backend="tensorflow",
    )
    x = _float_inputs(rng)
    y1 = lstm_forward(np.float64(x), gates_from_packed(*_f64(k1, r1, b1), "ifco"), "tanh", "hard_sigmoid", True)
    y2 = lstm_forward(y1, gates_from_packed(*_f64(k2, r2, b2), "ifco"), "tanh", "hard_sigmoid", False)

    def check(golden: Golden):
        import tf_keras as K

        # tf_keras' own default is sigmoid, so the Keras 2.0.8 default is spelled out here.
        model = K.Sequential(
            [
                K.layers.LSTM(
                    u1,
                    recurrent_activation="hard_sigmoid",
                    return_sequences=True,
                    name="lstm_1",
                    input_shape=(TIMESTEPS, FEATURES),
                ),
                K.layers.LSTM(u2, recurrent_activation="hard_sigmoid", name="lstm_2"),
            ]
        )
        model.load_weights(str(golden.files["model"]))
        return tf_keras_layer_outputs(model, golden.inputs)

    return Golden(
        {"model": path},
        x,
        {"lstm_1": y1, "lstm_2": y2},
        {
            "generation": "keras2.0-2.2",
            "keras_version": "2.0.8",
            "written_by": "h5py, Keras 2.0.8 layout, minimal configs",
            "cross_check": "tf_keras Sequential(LSTM(recurrent_activation='hard_sigmoid') x2).load_weights(file)",
            "description": "Keras 2.0.8 with configs lacking activation / recurrent_activation: the defaults of "
            "Keras < 2.3 (tanh / hard_sigmoid) apply",
        },
        check,
    )


def case_keras2_2_4_gru(out: Path, rng) -> Golden:
    """Keras 2.2.4: GRU(reset_after=False, hard_sigmoid) -> GRU(reset_after=True, sigmoid) -> Dense."""
    u1, u2 = 3, 2
    k1, r1, b1 = _w(rng, FEATURES, 3 * u1), _w(rng, u1, 3 * u1), _w(rng, 3 * u1, scale=0.3)
    k2, r2, b2 = _w(rng, u1, 3 * u2), _w(rng, u2, 3 * u2), _w(rng, 2, 3 * u2, scale=0.3)
    dk, db = _w(rng, u2, 2), _w(rng, 2, scale=0.3)
    config = sequential(
        [
            k2_recurrent(
                "GRU",
                "gru_1",
                u1,
                return_sequences=True,
                reset_after=False,
                batch_input_shape=[None, TIMESTEPS, FEATURES],
            ),
            k2_recurrent("GRU", "gru_2", u2, recurrent_activation="sigmoid", reset_after=True, go_backwards=True),
            k2_dense("dense_1", 2, "linear"),
        ],
        "2.2.4",
    )
    path = out / "keras2_2_4_gru.h5"
    write_model_h5(
        path,
        config,
        [
            ("gru_1", [("gru_1/kernel:0", k1), ("gru_1/recurrent_kernel:0", r1), ("gru_1/bias:0", b1)]),
            ("gru_2", [("gru_2/kernel:0", k2), ("gru_2/recurrent_kernel:0", r2), ("gru_2/bias:0", b2)]),
            ("dense_1", [("dense_1/kernel:0", dk), ("dense_1/bias:0", db)]),
        ],
        keras_version="2.2.4",
        backend="tensorflow",
    )
    x = _float_inputs(rng)
    y1 = gru_forward(
        np.float64(x), gates_from_packed(*_f64(k1, r1, b1), "zrh"), "tanh", "hard_sigmoid", True, reset_after=False
    )
    y2 = gru_forward(
        y1,
        gates_from_keras2_gru_reset_after(*_f64(k2, r2, b2)),
        "tanh",
        "sigmoid",
        False,
        reset_after=True,
        go_backwards=True,
    )
    y3 = dense_forward(y2, *_f64(dk, db), "linear")

    def check(golden: Golden):
        import tf_keras as K

        model = K.models.load_model(str(golden.files["model"]), compile=False)
        return tf_keras_layer_outputs(model, golden.inputs)

    return Golden(
        {"model": path},
        x,
        {"gru_1": y1, "gru_2": y2, "dense_1": y3},
        {
            "generation": "keras2.0-2.2",
            "keras_version": "2.2.4",
            "written_by": "h5py, Keras 2.2.4 layout",
            "cross_check": "tf_keras.models.load_model(file)",
            "description": "Keras 2.2.4: GRU(3, seq, reset_after=False, hard_sigmoid) -> GRU(2, reset_after=True, "
            "sigmoid, go_backwards) -> Dense",
        },
        check,
    )


def _cudnn_weights(rng, features, units, n_gates):
    return (
        _w(rng, features, n_gates * units),
        _w(rng, units, n_gates * units),
        _w(rng, 2 * n_gates * units, scale=0.3),
    )


def _check_cudnn_through_tf_keras(golden: Golden, layer_specs, weights_path: Path) -> dict[str, np.ndarray]:
    """Builds the equivalent LSTM/GRU model in tf_keras, converts the stored cuDNN arrays with
    tf_keras' ``preprocess_weights_for_loading`` and runs it; then also loads the file with
    ``load_weights`` (the same converter, reached through tf_keras' file loader) and checks
    both routes agree."""
    import tf_keras as K
    from tf_keras.src.saving.legacy import hdf5_format

    def build():
        layers = []
        for kind, name, units, kwargs in layer_specs:
            cls = {"LSTM": K.layers.LSTM, "GRU": K.layers.GRU, "Dense": K.layers.Dense}[kind]
            layers.append(cls(units, name=name, **kwargs))
        model = K.Sequential(layers)
        model.build((None, TIMESTEPS, FEATURES))
        return model

    model = build()
    with h5py.File(weights_path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f
        for layer in model.layers:
            g = group[layer.name]
            names = [n.decode() if isinstance(n, bytes) else n for n in g.attrs["weight_names"]]
            stored = [np.asarray(g[n]) for n in names]
            layer.set_weights(hdf5_format.preprocess_weights_for_loading(layer, stored, "2.2.4", "tensorflow"))
    direct = tf_keras_layer_outputs(model, golden.inputs)
    loaded = build()
    loaded.load_weights(str(weights_path))
    again = tf_keras_layer_outputs(loaded, golden.inputs)
    for key in direct:
        assert np.array_equal(direct[key], again[key]), key
    return direct


def case_cudnn_keras2_2_4(out: Path, rng) -> Golden:
    """Standalone Keras 2.2.4 ``CuDNNLSTM`` -> ``CuDNNGRU`` -> Dense, names ``cu_dnnlstm_1/kernel:0``."""
    u1, u2 = 4, 3
    k1, r1, b1 = _cudnn_weights(rng, FEATURES, u1, 4)
    k2, r2, b2 = _cudnn_weights(rng, u1, u2, 3)
    dk, db = _w(rng, u2, 2), _w(rng, 2, scale=0.3)
    config = sequential(
        [
            k2_cudnn(
                "CuDNNLSTM", "cu_dnnlstm_1", u1, return_sequences=True, batch_input_shape=[None, TIMESTEPS, FEATURES]
            ),
            k2_cudnn("CuDNNGRU", "cu_dnngru_1", u2),
            k2_dense("dense_1", 2, "linear"),
        ],
        "2.2.4",
    )
    path = out / "cudnn_keras2_2_4.h5"
    write_model_h5(
        path,
        config,
        [
            (
                "cu_dnnlstm_1",
                [("cu_dnnlstm_1/kernel:0", k1), ("cu_dnnlstm_1/recurrent_kernel:0", r1), ("cu_dnnlstm_1/bias:0", b1)],
            ),
            (
                "cu_dnngru_1",
                [("cu_dnngru_1/kernel:0", k2), ("cu_dnngru_1/recurrent_kernel:0", r2), ("cu_dnngru_1/bias:0", b2)],
            ),
            ("dense_1", [("dense_1/kernel:0", dk), ("dense_1/bias:0", db)]),
        ],
        keras_version="2.2.4",
        backend="tensorflow",
    )
    x = _float_inputs(rng)
    y1 = lstm_forward(np.float64(x), gates_from_cudnn(*_f64(k1, r1, b1), "ifco"), "tanh", "sigmoid", True)
    y2 = gru_forward(y1, gates_from_cudnn(*_f64(k2, r2, b2), "zrh"), "tanh", "sigmoid", False, reset_after=True)
    y3 = dense_forward(y2, *_f64(dk, db), "linear")
    specs = [
        ("LSTM", "cu_dnnlstm_1", u1, {"return_sequences": True}),
        ("GRU", "cu_dnngru_1", u2, {"reset_after": True}),
        ("Dense", "dense_1", 2, {}),
    ]
    return Golden(
        {"model": path},
        x,
        {"cu_dnnlstm_1": y1, "cu_dnngru_1": y2, "dense_1": y3},
        {
            "generation": "cudnn",
            "keras_version": "2.2.4",
            "written_by": "h5py, Keras 2.2.4 CuDNNLSTM/CuDNNGRU layout",
            "cross_check": "tf_keras LSTM/GRU(reset_after=True) with the arrays converted by tf_keras' "
            "preprocess_weights_for_loading, and the same model after load_weights(file)",
            "description": "Keras 2.2.4: CuDNNLSTM(4, seq) -> CuDNNGRU(3) -> Dense; bias (8u,) / (6u,)",
        },
        lambda g: _check_cudnn_through_tf_keras(g, specs, path),
    )


def case_cudnn_tf_keras(out: Path, rng) -> Golden:
    """A CuDNNLSTM(go_backwards) -> CuDNNGRU -> Dense model built and saved by tf_keras itself."""
    import tf_keras as K
    from tf_keras.src.layers.rnn.cudnn_gru import CuDNNGRU
    from tf_keras.src.layers.rnn.cudnn_lstm import CuDNNLSTM

    u1, u2 = 4, 3
    model = K.Sequential(
        [
            K.Input((TIMESTEPS, FEATURES), name="input"),
            CuDNNLSTM(u1, return_sequences=True, go_backwards=True, name="enc"),
            CuDNNGRU(u2, name="dec"),
            K.layers.Dense(2, name="head"),
        ],
        name="cudnn_tf_keras",
    )
    k1, r1, b1 = _cudnn_weights(rng, FEATURES, u1, 4)
    k2, r2, b2 = _cudnn_weights(rng, u1, u2, 3)
    dk, db = _w(rng, u2, 2), _w(rng, 2, scale=0.3)
    model.get_layer("enc").set_weights([k1, r1, b1])
    model.get_layer("dec").set_weights([k2, r2, b2])
    model.get_layer("head").set_weights([dk, db])
    path = out / "cudnn_tf_keras.h5"
    model.save(str(path), save_format="h5")
    x = _float_inputs(rng)
    y1 = lstm_forward(
        np.float64(x), gates_from_cudnn(*_f64(k1, r1, b1), "ifco"), "tanh", "sigmoid", True, go_backwards=True
    )
    y2 = gru_forward(y1, gates_from_cudnn(*_f64(k2, r2, b2), "zrh"), "tanh", "sigmoid", False, reset_after=True)
    y3 = dense_forward(y2, *_f64(dk, db), "linear")
    specs = [
        ("LSTM", "enc", u1, {"return_sequences": True, "go_backwards": True}),
        ("GRU", "dec", u2, {"reset_after": True}),
        ("Dense", "head", 2, {}),
    ]
    return Golden(
        {"model": path},
        x,
        {"enc": y1, "dec": y2, "head": y3},
        {
            "generation": "cudnn",
            "keras_version": K.__version__,
            "written_by": f"tf_keras {K.__version__} model.save (h5)",
            "cross_check": "tf_keras LSTM/GRU(reset_after=True) with the arrays converted by tf_keras' "
            "preprocess_weights_for_loading, and the same model after load_weights(file)",
            "description": "tf_keras: CuDNNLSTM(4, seq, go_backwards) -> CuDNNGRU(3) -> Dense, saved by tf_keras",
        },
        lambda g: _check_cudnn_through_tf_keras(g, specs, path),
    )


def case_lstm_arch_cudnn_weights(out: Path, rng) -> Golden:
    """Architecture JSON of an LSTM model (Keras 2.2.4 ``to_json``) + ``save_weights`` of a
    CuDNNLSTM model: the LSTM layer receives weights in cuDNN layout (bias (8u,))."""
    u1 = 4
    k1, r1, b1 = _cudnn_weights(rng, FEATURES, u1, 4)
    dk, db = _w(rng, u1, 2), _w(rng, 2, scale=0.3)
    arch = sequential(
        [
            k2_recurrent(
                "LSTM",
                "rnn",
                u1,
                return_sequences=True,
                recurrent_activation="sigmoid",
                batch_input_shape=[None, TIMESTEPS, FEATURES],
            ),
            k2_dense("head", 2, "linear"),
        ],
        "2.2.4",
    )
    arch.update({"keras_version": "2.2.4", "backend": "tensorflow"})
    arch_path, weights_path = out / "lstm_arch_cudnn_weights.json", out / "lstm_arch_cudnn_weights.h5"
    arch_path.write_text(json.dumps(arch))
    write_weights_only_h5(
        weights_path,
        [
            ("rnn", [("rnn/kernel:0", k1), ("rnn/recurrent_kernel:0", r1), ("rnn/bias:0", b1)]),
            ("head", [("head/kernel:0", dk), ("head/bias:0", db)]),
        ],
        "2.2.4",
        "tensorflow",
    )
    x = _float_inputs(rng)
    y1 = lstm_forward(np.float64(x), gates_from_cudnn(*_f64(k1, r1, b1), "ifco"), "tanh", "sigmoid", True)
    y2 = dense_forward(y1, *_f64(dk, db), "linear")

    def check(golden: Golden):
        import tf_keras as K

        model = K.models.model_from_json(arch_path.read_text())
        model.load_weights(str(weights_path))  # tf_keras converts the cuDNN arrays for the LSTM
        return tf_keras_layer_outputs(model, golden.inputs)

    return Golden(
        {"arch": arch_path, "weights": weights_path},
        x,
        {"rnn": y1, "head": y2},
        {
            "generation": "cudnn",
            "keras_version": "2.2.4",
            "written_by": "json + h5py, Keras 2.2.4 to_json / save_weights layout",
            "cross_check": "tf_keras.models.model_from_json(arch).load_weights(weights)",
            "description": "LSTM(4, seq, sigmoid) -> Dense architecture with weights saved from a CuDNNLSTM (bias (8u,))",
        },
        check,
    )


def case_cudnn_arch_lstm_weights(out: Path, rng) -> Golden:
    """The reverse: a CuDNNLSTM architecture with weights saved from a plain LSTM (bias (4u,))."""
    u1 = 3
    k1, r1, b1 = _w(rng, FEATURES, 4 * u1), _w(rng, u1, 4 * u1), _w(rng, 4 * u1, scale=0.3)
    arch = sequential(
        [k2_cudnn("CuDNNLSTM", "rnn", u1, return_sequences=True, batch_input_shape=[None, TIMESTEPS, FEATURES])],
        "2.2.4",
    )
    arch.update({"keras_version": "2.2.4", "backend": "tensorflow"})
    arch_path, weights_path = out / "cudnn_arch_lstm_weights.json", out / "cudnn_arch_lstm_weights.h5"
    arch_path.write_text(json.dumps(arch))
    write_weights_only_h5(
        weights_path,
        [
            ("rnn", [("rnn/kernel:0", k1), ("rnn/recurrent_kernel:0", r1), ("rnn/bias:0", b1)]),
        ],
        "2.2.4",
        "tensorflow",
    )
    x = _float_inputs(rng)
    y1 = lstm_forward(np.float64(x), gates_from_packed(*_f64(k1, r1, b1), "ifco"), "tanh", "sigmoid", True)

    def check(golden: Golden):
        import tf_keras as K
        from tf_keras.src.saving.legacy import hdf5_format

        # tf_keras builds the CuDNNLSTM model on a CPU and loads the LSTM arrays into it,
        # converting them to the cuDNN layout; converting those back into an LSTM must give
        # the LSTM arrays, which then run in a tf_keras LSTM.
        cudnn = K.models.model_from_json(arch_path.read_text())
        cudnn.load_weights(str(weights_path))
        lstm = K.Sequential([K.layers.LSTM(u1, return_sequences=True, name="rnn")])
        lstm.build((None, TIMESTEPS, FEATURES))
        back = hdf5_format.preprocess_weights_for_loading(lstm.layers[0], cudnn.layers[0].get_weights(), "2.2.4")
        assert cudnn.layers[0].get_weights()[2].shape == (8 * u1,)
        for a, b in zip(back, (k1, r1, b1)):
            assert np.allclose(a, b, atol=1e-7)
        lstm.layers[0].set_weights(back)
        return tf_keras_layer_outputs(lstm, golden.inputs)

    return Golden(
        {"arch": arch_path, "weights": weights_path},
        x,
        {"rnn": y1},
        {
            "generation": "cudnn",
            "keras_version": "2.2.4",
            "written_by": "json + h5py, Keras 2.2.4 to_json / save_weights layout",
            "cross_check": "tf_keras model_from_json(CuDNNLSTM arch).load_weights(LSTM weights) then converted back with "
            "preprocess_weights_for_loading and run as a tf_keras LSTM",
            "description": "CuDNNLSTM(3, seq) architecture with weights saved from an LSTM (bias (4u,))",
        },
        check,
    )


CASES: dict[str, Callable[[Path, np.random.Generator], Golden]] = {
    "keras1_lstm_masked": case_keras1_lstm_masked,
    "keras1_lstm_gpu_noversion": case_keras1_lstm_gpu_noversion,
    "keras1_gru": case_keras1_gru,
    "keras1_simplernn": case_keras1_simplernn,
    "keras2_0_8_lstm_implicit_defaults": case_keras2_0_8_lstm_implicit_defaults,
    "keras2_1_6_lstm": case_keras2_1_6_lstm,
    "keras2_2_4_lstm": case_keras2_2_4_lstm,
    "keras2_2_4_gru": case_keras2_2_4_gru,
    "cudnn_keras2_2_4": case_cudnn_keras2_2_4,
    "cudnn_tf_keras": case_cudnn_tf_keras,
    "lstm_arch_cudnn_weights": case_lstm_arch_cudnn_weights,
    "cudnn_arch_lstm_weights": case_cudnn_arch_lstm_weights,
    "keras1_bidirectional_lstm": case_keras1_bidirectional_lstm,
}


# ==========================================================================
# tf_keras cross-check and output
# ==========================================================================


def tf_keras_layer_outputs(model, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """Every layer's output of a tf_keras Sequential model, by layer name."""
    import tf_keras as K

    layers = [layer for layer in model.layers if layer.__class__.__name__ != "InputLayer"]
    probe = K.Model(model.inputs, [layer.output for layer in layers])
    values = probe(inputs, training=False)
    values = values if isinstance(values, (list, tuple)) else [values]
    return {layer.name: np.asarray(v, dtype=np.float64) for layer, v in zip(layers, values)}


def cross_check(golden: Golden) -> float:
    """Max abs difference between tf_keras and the reference, over every layer; raises above ATOL."""
    assert golden.check is not None
    got = golden.check(golden)
    worst = 0.0
    for name, want in golden.layers.items():
        assert name in got, f"tf_keras model has no layer {name!r} ({sorted(got)})"
        assert got[name].shape == want.shape, f"{name}: tf_keras shape {got[name].shape} != reference {want.shape}"
        err = float(np.max(np.abs(got[name] - want)))
        assert err <= ATOL, f"{name}: tf_keras differs from the reference by {err:.3g} > {ATOL}"
        worst = max(worst, err)
    return worst


def save_reference(golden: Golden, case: str, out: Path) -> Path:
    from safetensors.numpy import save_file

    tensors = {"input:0": np.ascontiguousarray(golden.inputs)}
    names = list(golden.layers)
    tensors["output:0"] = np.ascontiguousarray(golden.layers[names[-1]], dtype=np.float32)
    for name in names:
        tensors[f"layer:{name}"] = np.ascontiguousarray(golden.layers[name], dtype=np.float32)
    meta = {"case": case, **{k: str(v) for k, v in golden.meta.items()}}
    path = out / f"{case}.safetensors"
    save_file(tensors, str(path), metadata=meta)
    return path


def build_case(case: str, out: Path) -> Golden:
    """Writes one case's file(s) into ``out`` (a fixed seed per case) and returns its golden."""
    rng = np.random.default_rng([SEED, list(CASES).index(case)])
    return CASES[case](out, rng)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--no-check", action="store_true", help="skip the tf_keras cross-check")
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="only these cases")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for case in args.case or list(CASES):
        golden = build_case(case, args.out)
        note = "not cross-checked"
        if not args.no_check:
            note = f"tf_keras max abs diff {cross_check(golden):.2e}"
        save_reference(golden, case, args.out)
        print(f"{case:36s} {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
