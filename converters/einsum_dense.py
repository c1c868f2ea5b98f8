"""Converter for Keras ``EinsumDense``.

==================  ==========================================  ====================
Keras array         shape                                       PyTorch parameter
==================  ==========================================  ====================
``kernel``          one size per kernel letter of the equation  ``weight`` (as is)
``bias``            output sizes from the first ``bias_axes``   ``bias`` (as is)
                    letter on, 1 on the other output letters
                    and on each axis a right ``...`` elides
==================  ==========================================  ====================
"""

from __future__ import annotations

from typing import Any

from torch_lstm_probe.errors import UnsupportedOptionError, WeightMismatchError
from torch_lstm_probe.layers.einsum_dense import EINSUM_DENSE_EQUATION, EinsumDenseConfig

from .common import (
    INIT_REG_CONSTRAINT,
    Context,
    ModuleSpec,
    check_keys,
    layer_label,
    refuse_unless,
    resolve_activation,
    to_tensor,
    unpack_weights,
)
from .registry import register
from .spec import LayerSpec

__all__ = ["convert_einsum_dense"]


@register("EinsumDense")
def convert_einsum_dense(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``EinsumDense`` → :class:`torch_lstm_probe.layers.einsum_dense.EinsumDense`.

    The equation runs unchanged in ``torch.einsum``. ``output_shape`` only sizes the weights
    Keras builds, which the file holds, so it is not needed at inference.
    """
    cfg = layer.config
    check_keys(
        layer,
        ctx,
        {"equation", "output_shape", "activation", "bias_axes", "lora_rank", "lora_alpha", "quantization_config"},
        INIT_REG_CONSTRAINT("kernel", "bias") | {"gptq_unpacked_column_size"},
    )
    refuse_unless(
        layer,
        ctx,
        "lora_rank",
        [None, 0],
        "LoRA-adapted weights are not merged by this converter. Fix: merge the LoRA factors into the kernel in "
        "Keras before saving.",
    )
    refuse_unless(
        layer, ctx, "quantization_config", [None], "Quantized layers are not supported. Fix: save the float model."
    )
    equation: Any = cfg.get("equation")
    if not isinstance(equation, str) or EINSUM_DENSE_EQUATION.fullmatch(equation) is None:
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: config key 'equation' is {equation!r}. Expected 'in,kernel->out', "
            "'...in,kernel->...out' or 'in...,kernel->out...' with letters a-z, A-Z."
        )
    kernel_spec = equation.split(",")[1].split("->")[0]
    output_spec = equation.split("->")[1].replace("...", "")
    bias_axes: Any = cfg.get("bias_axes")
    if bias_axes is not None and (
        not isinstance(bias_axes, str) or not bias_axes or any(c not in output_spec for c in bias_axes)
    ):
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: config key 'bias_axes' is {bias_axes!r}. Expected None or letters of the "
            f"output {output_spec!r}."
        )
    kernel_shape = tuple(int(d) for d in layer.weights[0].shape) if layer.weights else (0,)
    if len(kernel_shape) != len(kernel_spec):
        raise WeightMismatchError(
            f"{layer_label(layer, ctx)}: weight 'kernel' has shape {kernel_shape}. Expected one size per kernel "
            f"letter of {equation!r} ({len(kernel_spec)})."
        )
    expected = {"kernel": kernel_shape}
    bias_shape = None
    if bias_axes:
        bias_rank = len(output_spec) - min(output_spec.find(c) for c in bias_axes)
        bias_shape = tuple(int(d) for d in layer.weights[1].shape) if len(layer.weights) > 1 else (0,)
        # Right-elided equations ("in...,kernel->out...") append a 1 per elided input axis.
        right_elided = equation.endswith("...")
        extra = bias_shape[bias_rank:]
        if len(bias_shape) < bias_rank or (extra and (not right_elided or any(d != 1 for d in extra))):
            raise WeightMismatchError(
                f"{layer_label(layer, ctx)}: weight 'bias' has shape {bias_shape}. Expected rank {bias_rank} for "
                f"bias_axes {bias_axes!r} of {equation!r}" + (", then a 1 per elided axis." if right_elided else ".")
            )
        expected["bias"] = bias_shape
    w = unpack_weights(layer, ctx, expected)
    config = EinsumDenseConfig(equation, kernel_shape, bias_shape, resolve_activation(layer, ctx, "activation"))
    state = {"weight": to_tensor(w["kernel"])}
    if bias_shape is not None:
        state["bias"] = to_tensor(w["bias"])
    return ModuleSpec("EinsumDense", config, state)
