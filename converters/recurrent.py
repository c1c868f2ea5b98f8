"""Converters for Keras recurrent layers: LSTM.

Weight layout (Keras → PyTorch), gates packed ``[i, f, c, o]`` in Keras and ``[i, f, g, o]``
in PyTorch, which is the same order:

================================  =========================  ==============================
Keras array                       shape                      PyTorch parameter
================================  =========================  ==============================
``kernel``                        ``(F, 4H)``                ``weight_ih_l0 = kernel.T``
``recurrent_kernel``              ``(H, 4H)``                ``weight_hh_l0 = recurrent_kernel.T``
``bias``                          ``(4H,)``                  ``bias_ih_l0 = bias``, ``bias_hh_l0 = 0``
================================  =========================  ==============================
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from torch_lstm_probe.errors import UnsupportedOptionError, WeightMismatchError
from torch_lstm_probe.layers.lstm import LSTMConfig

from .common import (
    INIT_REG_CONSTRAINT,
    Context,
    ModuleSpec,
    check_keys,
    config_int,
    layer_label,
    resolve_activation,
    to_tensor,
    unpack_weights,
)
from .legacy import modernize_rnn
from .registry import register
from .spec import LayerSpec

__all__ = [
    "convert_lstm",
    "initial_state_rule",
    "sequence_options",
    "stateful_batch_size",
    "unpack_recurrent_weights",
]

RNN_SUPPORTED = frozenset(
    {
        "units",
        "activation",
        "recurrent_activation",
        "use_bias",
        "return_sequences",
        "return_state",
        "go_backwards",
        "time_major",
        "stateful",
        "zero_output_for_mask",
    }
)
RNN_IGNORED = frozenset(
    {"dropout", "recurrent_dropout", "unroll", "implementation", "unit_forget_bias", "seed", "reset_after"}
) | INIT_REG_CONSTRAINT("kernel", "recurrent", "bias")


def initial_state_rule(ctx: Context) -> str:
    """Which state a stateful layer called with ``initial_state`` starts from, by the file's writer.

    ======================================  ====================================================
    writer                                  rule
    ======================================  ====================================================
    tf.keras, tf_keras (``library``         ``"carried_unless_zero"``: the carried state while any
    ``"tf_keras"``)                         of it is non-zero, the given one after creation or
                                            ``reset_states()`` (``RNN._process_inputs``)
    Keras 3; standalone Keras 2.0-2.3       ``"given"``: the given ``initial_state`` always wins
                                            (``RNN.call``)
    ======================================  ====================================================
    """
    return "carried_unless_zero" if ctx.library == "tf_keras" and ctx.keras_version.major < 3 else "given"


def sequence_options(layer: LayerSpec, ctx: Context) -> dict[str, Any]:
    """The options every recurrent runtime config shares, read from the Keras config (and, for
    the call rules that differ between Keras generations, from the file's writer)."""
    cfg = layer.config
    return {
        "return_sequences": bool(cfg.get("return_sequences", False)),
        "return_state": bool(cfg.get("return_state", False)),
        "go_backwards": bool(cfg.get("go_backwards", False)),
        "time_major": bool(cfg.get("time_major", False)),
        "stateful": bool(cfg.get("stateful", False)),
        "batch_size": stateful_batch_size(layer, ctx),
        "zero_output_for_mask": bool(cfg.get("zero_output_for_mask", False)),
        "initial_state_rule": initial_state_rule(ctx),
    }


def unpack_recurrent_weights(
    layer: LayerSpec, ctx: Context, gates: int, bias_shape: tuple[int, ...] | None
) -> tuple[int, dict[str, np.ndarray]]:
    """``(input features, {kernel, recurrent_kernel[, bias]})`` of a recurrent layer with
    ``gates`` gate blocks, checked against the config's ``units``."""
    units = config_int(layer, ctx, "units")
    if not layer.weights:
        unpack_weights(layer, ctx, {"kernel": (0, gates * units)})  # raises: no weights
    kernel = layer.weights[0]
    features = int(kernel.shape[0]) if kernel.ndim == 2 else 0
    if features < 1:
        raise WeightMismatchError(
            f"{layer_label(layer, ctx)}: weight 'kernel' has shape {tuple(kernel.shape)}. Expected "
            f"(input features >= 1, {gates * units}). The weights do not belong to this layer, or the file is damaged."
        )
    expected: dict[str, tuple[int, ...]] = {
        "kernel": (features, gates * units),
        "recurrent_kernel": (units, gates * units),
    }
    if bias_shape is not None:
        expected["bias"] = bias_shape
    return features, unpack_weights(layer, ctx, expected)


def stateful_batch_size(layer: LayerSpec, ctx: Context) -> int | None:
    if not layer.config.get("stateful", False):
        return None
    shape = layer.config.get("batch_input_shape") or layer.config.get("batch_shape")
    batch = shape[0] if shape else ctx.batch_size
    if batch is None:
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)} is stateful but the file fixes no batch size (batch_input_shape / "
            "batch_shape). Keras needs one for stateful layers. Fix: save the model with a fixed batch size."
        )
    return int(batch)


@register("LSTM")
def convert_lstm(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``LSTM`` → :class:`torch_lstm_probe.layers.LSTM`."""
    layer = modernize_rnn(layer, ctx)
    cfg = layer.config
    check_keys(layer, ctx, RNN_SUPPORTED, RNN_IGNORED)
    units = config_int(layer, ctx, "units")
    use_bias = bool(cfg.get("use_bias", True))
    features, w = unpack_recurrent_weights(layer, ctx, 4, (4 * units,) if use_bias else None)
    config = LSTMConfig(
        input_size=features,
        hidden_size=units,
        activation=resolve_activation(layer, ctx, "activation", "tanh"),
        recurrent_activation=resolve_activation(layer, ctx, "recurrent_activation", "sigmoid"),
        use_bias=use_bias,
        **sequence_options(layer, ctx),
    )
    state = {
        "weight_ih_l0": to_tensor(w["kernel"].T),  # (4H, F)
        "weight_hh_l0": to_tensor(w["recurrent_kernel"].T),  # (4H, H)
    }
    if use_bias:
        state["bias_ih_l0"] = to_tensor(w["bias"])  # (4H,)
        state["bias_hh_l0"] = torch.zeros(4 * units)
    return ModuleSpec("LSTM", config, state, call="rnn")
