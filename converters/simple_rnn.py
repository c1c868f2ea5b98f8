"""Converter for the Keras SimpleRNN layer (Keras 2, tf_keras and Keras 3 configs).

================================  =============  ==========================================
Keras array                       shape          PyTorch parameter
================================  =============  ==========================================
``kernel``                        ``(F, H)``     ``weight_ih_l0 = kernel.T``
``recurrent_kernel``              ``(H, H)``     ``weight_hh_l0 = recurrent_kernel.T``
``bias``                          ``(H,)``       ``bias_ih_l0 = bias``, ``bias_hh_l0 = 0``
================================  =============  ==========================================
"""

from __future__ import annotations

import torch

from torch_lstm_probe.layers.simple_rnn import SimpleRNNConfig

from .common import INIT_REG_CONSTRAINT, Context, ModuleSpec, check_keys, config_int, resolve_activation, to_tensor
from .legacy import modernize_rnn
from .recurrent import sequence_options, unpack_recurrent_weights
from .registry import register
from .spec import LayerSpec

__all__ = ["convert_simple_rnn"]

SIMPLE_RNN_SUPPORTED = frozenset(
    {
        "units",
        "activation",
        "use_bias",
        "return_sequences",
        "return_state",
        "go_backwards",
        "time_major",
        "stateful",
        "zero_output_for_mask",
    }
)
SIMPLE_RNN_IGNORED = frozenset(
    {"dropout", "recurrent_dropout", "unroll", "implementation", "seed"}
) | INIT_REG_CONSTRAINT("kernel", "recurrent", "bias")


@register("SimpleRNN")
def convert_simple_rnn(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``SimpleRNN`` → :class:`torch_lstm_probe.layers.SimpleRNN`."""
    layer = modernize_rnn(layer, ctx)
    cfg = layer.config
    check_keys(layer, ctx, SIMPLE_RNN_SUPPORTED, SIMPLE_RNN_IGNORED)
    units = config_int(layer, ctx, "units")
    use_bias = bool(cfg.get("use_bias", True))
    features, w = unpack_recurrent_weights(layer, ctx, 1, (units,) if use_bias else None)
    config = SimpleRNNConfig(
        input_size=features,
        hidden_size=units,
        activation=resolve_activation(layer, ctx, "activation", "tanh"),
        use_bias=use_bias,
        **sequence_options(layer, ctx),
    )
    state = {
        "weight_ih_l0": to_tensor(w["kernel"].T),  # (H, F)
        "weight_hh_l0": to_tensor(w["recurrent_kernel"].T),  # (H, H)
    }
    if use_bias:
        state["bias_ih_l0"] = to_tensor(w["bias"])  # (H,)
        state["bias_hh_l0"] = torch.zeros(units)
    return ModuleSpec("SimpleRNN", config, state, call="rnn")
