"""Older file generations rewritten as modern layer specs.

Converters of recurrent layers call :func:`modernize_rnn` first. It returns an equivalent
layer spec in the Keras 2 form (config keys and weight layout), so one converter per runtime
module serves every generation. It is a pure function (no I/O) and idempotent: a spec that is
already in the Keras 2 form comes back unchanged. This module also registers the converters of
``CuDNNLSTM`` and ``CuDNNGRU``, which become plain LSTM / GRU(reset_after=True) modules.

Config keys
===========

==============================  ==========================  ==========================================
Keras 1 key                     Keras 2 key                 note
==============================  ==========================  ==========================================
``output_dim``                  ``units``
``inner_activation``            ``recurrent_activation``    missing: ``hard_sigmoid`` (Keras 1 default)
``activation``                  ``activation``              missing: ``tanh`` (Keras 1 default)
``consume_less``                (dropped)                   only picks the weight layout, see below
``init``, ``inner_init``        (dropped)                   initialisation only
``forget_bias_init``            (dropped)                   initialisation only; the bias is saved
``W_/U_/b_regularizer``         (dropped)                   training only
``dropout_W``, ``dropout_U``    (dropped)                   identity at inference
``input_dim``, ``input_length`` (dropped)                   the input shape comes from the graph
(none)                          ``use_bias = True``         Keras 1 recurrent layers always have a bias
(none)                          ``reset_after = False``     GRU: Keras 1 resets before the matmul
==============================  ==========================  ==========================================

Any other Keras 1 key is kept, so the converter's key check refuses it rather than ignoring it.

Keras 2.0 - 2.2 wrote LSTM/GRU with ``recurrent_activation='hard_sigmoid'`` as the default, 2.3
onwards ``sigmoid``. A config that lacks the key is completed from the file's ``keras_version``.
A GRU config without ``reset_after`` from before Keras 2.4 means ``reset_after=False``, so such a
layer cannot take CuDNNGRU weights.

Weight layouts (``F`` input features, ``u`` units)
==================================================

======================================  =====================================  ==========================================
stored arrays                           where from                             Keras 2 form
======================================  =====================================  ==========================================
LSTM, 12 arrays: ``W_i U_i b_i W_c U_c  Keras 1, ``consume_less='cpu'|'mem'``  ``kernel = [W_i W_f W_c W_o]`` (F, 4u),
b_c W_f U_f b_f W_o U_o b_o``                                                  ``recurrent_kernel = [U_i U_f U_c U_o]``,
(W (F, u), U (u, u), b (u,))                                                   ``bias = [b_i b_f b_c b_o]``: gates i, f, c, o
LSTM, 3 arrays ``W U b``                Keras 1, ``consume_less='gpu'``        unchanged: already packed i, f, c, o
GRU, 9 arrays: ``W_z U_z b_z W_r U_r    Keras 1, ``consume_less='cpu'|'mem'``  ``kernel = [W_z W_r W_h]`` (F, 3u), ... ,
b_r W_h U_h b_h``                                                              ``bias`` (3u,), ``reset_after=False``
GRU, 3 arrays ``W U b``                 Keras 1, ``consume_less='gpu'``        unchanged: already packed z, r, h
SimpleRNN, 3 arrays ``W U b``           Keras 1                                unchanged: ``kernel, recurrent_kernel, bias``
LSTM bias (8u,)                         ``CuDNNLSTM`` (standalone Keras 2,     per gate g in i, f, c, o (column block S_g):
                                        tf.keras, tf_keras), also inside      ``kernel_g = S_g.reshape(u, F).T``,
                                        an ``LSTM`` layer whose weights came   ``recurrent_g = R_g.T``,
                                        from a CuDNNLSTM                       ``bias = b[:4u] + b[4u:]`` (input + recurrent)
GRU bias (6u,)                          ``CuDNNGRU``, or a GRU layer holding   per gate g in z, r, h: same kernel rules,
                                        CuDNNGRU weights                       ``bias = b.reshape(2, 3u)``; needs reset_after=True
======================================  =====================================  ==========================================

Why the kernels change for cuDNN: ``CuDNNLSTM``/``CuDNNGRU`` hand each gate's ``(F, u)`` block to
cuDNN by flattening it in row-major order (``canonical_to_params(transpose_weights=False)``), and
cuDNN reads a flat block as a row-major ``(u, F)`` matrix ``A`` applied as ``A @ x``. The Keras
kernel with the same effect is ``A.T = S_g.reshape(u, F).T``, which is what tf_keras'
``_convert_rnn_weights`` computes as ``S_g.T.reshape(S_g.shape, order='F')``. A square recurrent
block is simply transposed. The saved CuDNN kernels are therefore *not* in the canonical Keras
layout; loading them into an LSTM without this per-gate step gives wrong results.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from torch_lstm_probe.errors import UnsupportedLayerError, WeightMismatchError

from .common import INIT_REG_CONSTRAINT, Context, ModuleSpec, check_keys, config_int, layer_label
from .registry import register
from .spec import KerasVersion, LayerSpec

__all__ = ["modernize_rnn", "convert_cudnn_lstm", "convert_cudnn_gru", "is_keras1_config"]

# Keras 1 config keys that change nothing at inference (initialisers, regularisers, dropout,
# the memory/speed trade-off ``consume_less``, and input-shape hints the graph already has).
_KERAS1_DROPPED = frozenset(
    {
        "consume_less",
        "init",
        "inner_init",
        "forget_bias_init",
        "W_regularizer",
        "U_regularizer",
        "b_regularizer",
        "dropout_W",
        "dropout_U",
        "input_dim",
        "input_length",
    }
)

# Gate order of the arrays each Keras 1 layer stores with consume_less 'cpu' / 'mem', and the
# position of each gate in the Keras 2 packed order.
_KERAS1_GATES = {
    "LSTM": (("i", "c", "f", "o"), ("i", "f", "c", "o")),
    "GRU": (("z", "r", "h"), ("z", "r", "h")),
}

_N_GATES = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}

# Keras 2 versions before 2.3 defaulted recurrent_activation to hard_sigmoid.
_SIGMOID_DEFAULT_FROM = KerasVersion(2, 3, 0)
# Keras 2 GRU defaulted to reset_after=False until the TF2 layers (tf.keras 2.4+ / Keras 3).
_RESET_AFTER_DEFAULT_FROM = KerasVersion(2, 4, 0)

_CUDNN_SUPPORTED = frozenset({"units", "return_sequences", "return_state", "go_backwards", "stateful", "time_major"})
_CUDNN_IGNORED = INIT_REG_CONSTRAINT("kernel", "recurrent", "bias")


def is_keras1_config(config: Mapping[str, Any]) -> bool:
    """A Keras 1 recurrent config names its size ``output_dim``; Keras 2+ names it ``units``."""
    return "output_dim" in config and "units" not in config


def modernize_rnn(layer: LayerSpec, ctx: Context) -> LayerSpec:
    """Returns ``layer`` in the Keras 2 form: Keras 2 config keys and Keras 2 weight layout.

    Handles ``LSTM``, ``GRU`` and ``SimpleRNN`` specs of any generation, and ``CuDNNLSTM`` /
    ``CuDNNGRU`` specs (returned as ``LSTM`` / ``GRU(reset_after=True)`` with tanh/sigmoid).
    Other classes come back unchanged.

    Raises:
        WeightMismatchError: the arrays fit none of the layouts this generation wrote.
    """
    cls = layer.class_name
    if cls == "CuDNNLSTM":
        layer = _cudnn_as_modern(layer, ctx, "LSTM")
        cls = "LSTM"
    elif cls == "CuDNNGRU":
        layer = _cudnn_as_modern(layer, ctx, "GRU")
        cls = "GRU"
    if cls not in _N_GATES:
        return layer
    config = dict(layer.config)
    weights = tuple(layer.weights)
    keras1 = ctx.keras_version.major < 2 or is_keras1_config(config)
    if keras1:
        config = _keras1_config(cls, config)
        weights = _keras1_weights(layer, ctx, cls, config, weights)
    else:
        if (
            cls in ("LSTM", "GRU")
            and "recurrent_activation" not in config
            and ctx.keras_version < _SIGMOID_DEFAULT_FROM
        ):
            config["recurrent_activation"] = "hard_sigmoid"
    weights = _from_cudnn_layout(layer, ctx, cls, config, weights)
    if config == dict(layer.config) and _same_arrays(weights, layer.weights):
        return layer
    return dataclasses.replace(layer, config=config, weights=weights)


def _same_arrays(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


# --------------------------------------------------------------------------- Keras 1


def _keras1_config(cls: str, config: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in config.items() if k not in _KERAS1_DROPPED}
    if "output_dim" in out:
        out["units"] = out.pop("output_dim")
    out.setdefault("activation", "tanh")
    if cls in ("LSTM", "GRU"):
        inner = out.pop("inner_activation", "hard_sigmoid")
        out.setdefault("recurrent_activation", inner)
    out.setdefault("use_bias", True)
    if cls == "GRU":
        out.setdefault("reset_after", False)
    return out


def _keras1_weights(
    layer: LayerSpec, ctx: Context, cls: str, config: Mapping[str, Any], weights: tuple[np.ndarray, ...]
) -> tuple[np.ndarray, ...]:
    """Packs Keras 1 per-gate arrays (consume_less 'cpu'/'mem') into kernel, recurrent_kernel, bias."""
    if not weights or cls == "SimpleRNN" or len(weights) == 3:
        return weights  # no weights (reported by the converter), SimpleRNN, or consume_less='gpu'
    stored, packed = _KERAS1_GATES[cls]
    n = len(stored)
    if len(weights) != 3 * n:
        names = ", ".join(f"W_{g}, U_{g}, b_{g}" for g in stored)
        raise WeightMismatchError(
            f"{layer_label(layer, ctx)}: a Keras 1 {cls} stores {3 * n} arrays ({names}; consume_less "
            f"'cpu' or 'mem') or 3 arrays (W, U, b; consume_less 'gpu'). The file has {len(weights)} "
            f"array(s) with shapes {[tuple(w.shape) for w in weights]}."
        )
    units = config.get("units")
    arrays = {}
    for k, gate in enumerate(stored):
        arrays[gate] = weights[3 * k : 3 * k + 3]
    features = int(arrays[stored[0]][0].shape[0]) if arrays[stored[0]][0].ndim == 2 else -1
    u = config_int(layer, ctx, "units", config=config) if units is not None else int(arrays[stored[0]][0].shape[-1])
    want = ((features, u), (u, u), (u,))
    for gate in stored:
        for kind, array, shape in zip(("W", "U", "b"), arrays[gate], want):
            if tuple(array.shape) != shape:
                raise WeightMismatchError(
                    f"{layer_label(layer, ctx)}: Keras 1 weight {kind}_{gate} has shape {tuple(array.shape)}. "
                    f"Expected {shape} from output_dim={u} and {features} input features. All shapes: "
                    f"{[tuple(w.shape) for w in weights]}."
                )
    kernel = np.concatenate([arrays[g][0] for g in packed], axis=-1)
    recurrent = np.concatenate([arrays[g][1] for g in packed], axis=-1)
    bias = np.concatenate([arrays[g][2] for g in packed], axis=-1)
    return (kernel, recurrent, bias)


# --------------------------------------------------------------------------- cuDNN layout


def _per_gate(matrix: np.ndarray, n_gates: int, fn) -> np.ndarray:
    blocks = np.split(matrix, n_gates, axis=1)
    return np.concatenate([fn(b) for b in blocks], axis=1)


def _cudnn_input_block(block: np.ndarray) -> np.ndarray:
    """A gate's stored ``(F, u)`` block is a row-major ``(u, F)`` cuDNN matrix; return its Keras form."""
    features, units = block.shape
    return np.ascontiguousarray(block.reshape(units, features).T)


def _cudnn_recurrent_block(block: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(block.T)


def _from_cudnn_layout(
    layer: LayerSpec, ctx: Context, cls: str, config: Mapping[str, Any], weights: tuple[np.ndarray, ...]
) -> tuple[np.ndarray, ...]:
    """Converts CuDNNLSTM / CuDNNGRU weights (recognised by their bias shape) to the Keras layout."""
    if cls not in ("LSTM", "GRU") or len(weights) != 3:
        return weights
    kernel, recurrent, bias = weights
    n = _N_GATES[cls]
    units = config.get("units")
    u = config_int(layer, ctx, "units", config=config) if units is not None else int(recurrent.shape[0])
    if tuple(bias.shape) != (2 * n * u,):
        if cls == "GRU" and "reset_after" in config and tuple(bias.shape) in ((n * u,), (2, n * u)):
            _check_gru_bias_matches(layer, ctx, config, tuple(bias.shape), u)
        return weights  # canonical layout (or a mismatch the converter reports with the shapes)
    if kernel.ndim != 2 or recurrent.shape != (u, n * u) or kernel.shape[1] != n * u:
        return weights  # not consistent with any layout: the converter reports the shapes
    # A GRU config without reset_after: Keras 2 before the TF2 layers defaulted to False.
    default_reset_after = ctx.keras_version >= _RESET_AFTER_DEFAULT_FROM
    if cls == "GRU" and not bool(config.get("reset_after", default_reset_after)):
        raise WeightMismatchError(
            f"{layer_label(layer, ctx)}: the bias has shape {tuple(bias.shape)}, the layout of CuDNNGRU "
            "weights, but the layer has reset_after=False. CuDNNGRU computes the reset_after=True formula, "
            "so its weights cannot be used by GRU(reset_after=False) (Keras refuses this too). Fix: use "
            "GRU(reset_after=True, recurrent_activation='sigmoid') in the architecture."
        )
    new_kernel = _per_gate(kernel, n, _cudnn_input_block)
    new_recurrent = _per_gate(recurrent, n, _cudnn_recurrent_block)
    if cls == "LSTM":
        new_bias = bias[: n * u] + bias[n * u :]  # cuDNN adds an input and a recurrent bias
    else:
        new_bias = np.ascontiguousarray(bias.reshape(2, n * u))  # rows: input, recurrent
    return (new_kernel, new_recurrent, new_bias)


def _check_gru_bias_matches(
    layer: LayerSpec, ctx: Context, config: Mapping[str, Any], shape: tuple[int, ...], u: int
) -> None:
    reset_after = bool(config.get("reset_after", False))
    if shape == (3 * u,) and reset_after:
        raise WeightMismatchError(
            f"{layer_label(layer, ctx)}: the bias has shape {shape}, the layout of GRU(reset_after=False), but "
            "the layer has reset_after=True (as CuDNNGRU does). The two formulas differ, so these weights "
            "cannot be used. Fix: use GRU(reset_after=False) in the architecture."
        )
    if shape == (2, 3 * u) and not reset_after:
        raise WeightMismatchError(
            f"{layer_label(layer, ctx)}: the bias has shape {shape}, the layout of GRU(reset_after=True), but "
            "the layer has reset_after=False. Fix: use GRU(reset_after=True) in the architecture."
        )


# --------------------------------------------------------------------------- CuDNN classes


def _cudnn_as_modern(layer: LayerSpec, ctx: Context, target: str) -> LayerSpec:
    """A ``CuDNNLSTM``/``CuDNNGRU`` spec as the equivalent ``LSTM``/``GRU`` spec (weights untouched)."""
    ignored = _CUDNN_IGNORED | ({"unit_forget_bias"} if target == "LSTM" else set())
    check_keys(layer, ctx, _CUDNN_SUPPORTED, ignored)
    keep = ("name", "trainable", "dtype", "batch_input_shape", "batch_shape", "batch_size", "input_shape")
    config: dict[str, Any] = {k: layer.config[k] for k in keep if k in layer.config}
    if "units" not in layer.config:
        raise WeightMismatchError(
            f"{layer_label(layer, ctx)}: the config has no 'units', so the weights cannot be checked."
        )
    config.update(
        units=layer.config["units"],
        activation="tanh",  # cuDNN's fixed activations
        recurrent_activation="sigmoid",
        use_bias=True,
        return_sequences=bool(layer.config.get("return_sequences", False)),
        return_state=bool(layer.config.get("return_state", False)),
        go_backwards=bool(layer.config.get("go_backwards", False)),
        stateful=bool(layer.config.get("stateful", False)),
        time_major=bool(layer.config.get("time_major", False)),
    )
    if target == "GRU":
        config["reset_after"] = True
    return dataclasses.replace(layer, class_name=target, config=config)


@register("CuDNNLSTM")
def convert_cudnn_lstm(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``CuDNNLSTM`` → the LSTM runtime module (tanh / sigmoid, bias = input + recurrent).

    cuDNN's masking-free fused kernel computes the same function as ``LSTM`` with
    ``activation='tanh'``, ``recurrent_activation='sigmoid'``; see the module docstring for
    the weight layout.
    """
    from .recurrent import convert_lstm  # lazy: recurrent imports this module

    return convert_lstm(modernize_rnn(layer, ctx), ctx)


@register("CuDNNGRU")
def convert_cudnn_gru(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``CuDNNGRU`` → the GRU runtime module with ``reset_after=True`` (bias (6u,) → (2, 3u))."""
    modern = modernize_rnn(layer, ctx)
    try:
        from .gru import convert_gru  # lazy: the GRU converter lives in its own module
    except ImportError as err:
        raise UnsupportedLayerError(
            f"{layer_label(layer, ctx)}: CuDNNGRU converts to a GRU, and this installation has no GRU "
            f"converter ({err})."
        ) from err
    return convert_gru(modern, ctx)
