"""Converter for the Keras GRU layer (Keras 2, tf_keras and Keras 3 configs).

Weight layout (Keras → PyTorch). Keras packs the gate blocks ``[z, r, h]`` along the last
axis, PyTorch ``[r, z, n]`` along the first; ``reorder`` below moves the blocks:

===============================  ==================  ===================================================
Keras array                      shape               PyTorch parameter
===============================  ==================  ===================================================
``kernel``                       ``(F, 3H)``         ``weight_ih_l0 = reorder(kernel).T`` ``(3H, F)``
``recurrent_kernel``             ``(H, 3H)``         ``weight_hh_l0 = reorder(recurrent_kernel).T``
``bias`` (reset_after=True)      ``(2, 3H)``         ``bias_ih_l0 = reorder(bias[0])``, ``bias_hh_l0 = reorder(bias[1])``
``bias`` (reset_after=False)     ``(3H,)``           ``bias_ih_l0 = reorder(bias)``, ``bias_hh_l0 = 0``
===============================  ==================  ===================================================

A config without ``reset_after`` (Keras ≤ 2.1.2) means ``reset_after=False``; when the key is
missing the bias shape decides.
"""

from __future__ import annotations

import numpy as np
import torch

from torch_lstm_probe.layers.gru import GRUConfig

from .common import INIT_REG_CONSTRAINT, Context, ModuleSpec, check_keys, config_int, resolve_activation, to_tensor
from .legacy import modernize_rnn
from .recurrent import sequence_options, unpack_recurrent_weights
from .registry import register
from .spec import LayerSpec

__all__ = ["convert_gru", "keras_to_torch_gate_order"]

GRU_SUPPORTED = frozenset(
    {
        "units",
        "activation",
        "recurrent_activation",
        "use_bias",
        "reset_after",
        "return_sequences",
        "return_state",
        "go_backwards",
        "time_major",
        "stateful",
        "zero_output_for_mask",
    }
)
GRU_IGNORED = frozenset(
    {"dropout", "recurrent_dropout", "unroll", "implementation", "seed", "use_cudnn"}
) | INIT_REG_CONSTRAINT("kernel", "recurrent", "bias")


def keras_to_torch_gate_order(array: np.ndarray, units: int) -> np.ndarray:
    """Reorders the last axis from Keras' ``[z, r, h]`` blocks to PyTorch's ``[r, z, n]``."""
    z, r, h = array[..., :units], array[..., units : 2 * units], array[..., 2 * units :]
    return np.concatenate([r, z, h], axis=-1)


def _reset_after(layer: LayerSpec) -> bool:
    cfg = layer.config
    if "reset_after" in cfg:
        return bool(cfg["reset_after"])
    bias_index = 2
    if cfg.get("use_bias", True) and len(layer.weights) > bias_index:
        return layer.weights[bias_index].ndim == 2  # (2, 3H) only exists with reset_after
    return False


@register("GRU")
def convert_gru(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``GRU`` → :class:`torch_lstm_probe.layers.GRU`."""
    layer = modernize_rnn(layer, ctx)
    cfg = layer.config
    check_keys(layer, ctx, GRU_SUPPORTED, GRU_IGNORED)
    units = config_int(layer, ctx, "units")
    use_bias = bool(cfg.get("use_bias", True))
    reset_after = _reset_after(layer)
    bias_shape = ((2, 3 * units) if reset_after else (3 * units,)) if use_bias else None
    features, w = unpack_recurrent_weights(layer, ctx, 3, bias_shape)
    config = GRUConfig(
        input_size=features,
        hidden_size=units,
        activation=resolve_activation(layer, ctx, "activation", "tanh"),
        recurrent_activation=resolve_activation(layer, ctx, "recurrent_activation", "sigmoid"),
        use_bias=use_bias,
        reset_after=reset_after,
        **sequence_options(layer, ctx),
    )
    state = {
        "weight_ih_l0": to_tensor(keras_to_torch_gate_order(w["kernel"], units).T),  # (3H, F)
        "weight_hh_l0": to_tensor(keras_to_torch_gate_order(w["recurrent_kernel"], units).T),  # (3H, H)
    }
    if use_bias:
        bias = keras_to_torch_gate_order(w["bias"], units)
        if reset_after:
            state["bias_ih_l0"] = to_tensor(bias[0])  # (3H,) input bias
            state["bias_hh_l0"] = to_tensor(bias[1])  # (3H,) recurrent bias
        else:
            state["bias_ih_l0"] = to_tensor(bias)  # (3H,)
            state["bias_hh_l0"] = torch.zeros(3 * units)
    return ModuleSpec("GRU", config, state, call="rnn")
