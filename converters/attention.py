"""Converters for Keras attention layers: Attention, AdditiveAttention, MultiHeadAttention,
GroupQueryAttention.

======================================  ===================  ==================================
Keras array                             shape                runtime parameter
======================================  ===================  ==================================
Attention ``scale``, ``concat_score_``  ``()``               ``scale``, ``concat_score_weight``
``weight``
AdditiveAttention ``scale``             ``(D,)``             ``scale``
MultiHeadAttention ``query_dense``      ``(D, h, d)``,       ``query_kernel``, ``query_bias``
kernel, bias                            ``(h, d)``
``key_dense``, ``value_dense``          likewise             ``key_*``, ``value_*``
``output_dense`` kernel, bias           ``(h, d_v, F)``,     ``output_kernel``, ``output_bias``
                                        ``(F,)``
======================================  ===================  ==================================

Call rules by writer: tf_keras zeroes a masked query step of ``Attention`` by multiplying with
the mask, Keras 3 by selecting 0. A masked query step of ``MultiHeadAttention`` gets uniform
weights in tf_keras and in a Keras 3 call without ``return_attention_scores`` (its fused
``dot_product_attention``), zero weights in a Keras 3 call with it (its ``Softmax`` layer). Keras 3's ``MultiHeadAttention``
also deletes the Keras masks of the tensors it reads, so the graph's later readers of those
tensors run unmasked; the runtime reproduces that in its own (topological) layer order.

``MultiHeadAttention`` ``attention_axes`` may name any distinct axes between the batch and the
features of inputs of any rank: Keras 3 counts a negative axis from the input's rank, tf_keras
from the projection's ``(N, ..., h, d)`` rank, and the two libraries give the Keras masks of
inputs of rank > 3 their size-1 axes at different places. Axes reaching the batch or heads axis
are refused (here where the config says the query's rank, tf_keras; else on the first call).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from torch_lstm_probe.errors import UnsupportedOptionError, WeightMismatchError
from torch_lstm_probe.layers.attention import AttentionConfig, MultiHeadAttentionConfig

from .common import (
    INIT_REG_CONSTRAINT,
    Context,
    ModuleSpec,
    check_keys,
    config_int,
    layer_label,
    refuse_unless,
    to_tensor,
)
from .registry import register
from .spec import LayerSpec

__all__ = ["convert_attention", "convert_multi_head_attention"]

_PROJECTIONS = ("query", "key", "value", "output")


def _zero_masked(ctx: Context) -> str:
    return "where" if ctx.keras_version.major >= 3 else "multiply"


def _arrays(layer: LayerSpec, ctx: Context, shapes: list[tuple[str, tuple[int, ...]]]) -> dict[str, np.ndarray]:
    """The layer's arrays by name, checked against the expected ``(name, shape)`` list in order."""
    got = [tuple(w.shape) for w in layer.weights]
    want = [shape for _, shape in shapes]
    if got != want:
        raise WeightMismatchError(
            f"{layer_label(layer, ctx)}: the weights have shapes {got}. Expected {want} "
            f"({', '.join(name for name, _ in shapes) or 'no weights'}) from its config. The weights do not "
            "belong to this layer, or the file is damaged."
        )
    return {name: w for (name, _), w in zip(shapes, layer.weights)}


@register("Attention", "AdditiveAttention")
def convert_attention(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``Attention``/``AdditiveAttention`` → the runtime module of the same name."""
    cfg = layer.config
    check_keys(layer, ctx, {"use_scale", "score_mode", "causal"}, {"dropout", "seed"})
    additive = layer.class_name == "AdditiveAttention"
    use_scale = bool(cfg.get("use_scale", additive))
    score_mode = "additive" if additive else str(cfg.get("score_mode", "dot"))
    if score_mode not in ("dot", "concat", "additive"):
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: score_mode is {cfg.get('score_mode')!r}. Expected 'dot' or 'concat'."
        )
    shapes: list[tuple[str, tuple[int, ...]]] = []
    dim = 0
    if additive and use_scale:
        dim = int(layer.weights[0].shape[0]) if layer.weights and layer.weights[0].ndim == 1 else 0
        shapes.append(("scale", (dim,)))
    elif use_scale:
        shapes.append(("scale", ()))
    if score_mode == "concat":
        shapes.append(("concat_score_weight", ()))
    w = _arrays(layer, ctx, shapes)
    config = AttentionConfig(use_scale, score_mode, dim, bool(cfg.get("causal", False)), _zero_masked(ctx))
    return ModuleSpec(layer.class_name, config, {k: to_tensor(v) for k, v in w.items()}, call="attention")


def _attention_axes(layer: LayerSpec, ctx: Context) -> tuple[int, ...] | None:
    """``attention_axes`` as a tuple of input axes (None: every axis between batch and features).

    Keras 3 counts a negative axis from the input's rank, tf_keras from the projection's
    ``(N, ..., h, d)`` rank; where the file records the query's shape (tf_keras) the axes are
    checked and made non-negative here, otherwise when the layer is called.
    """
    raw = layer.config.get("attention_axes")
    if raw is None:
        return None
    items = raw if isinstance(raw, (list, tuple)) else [raw]
    if not items or any(isinstance(a, bool) or not isinstance(a, int) for a in items):
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: attention_axes is {raw!r}. Expected None, an axis or a list of axes."
        )
    axes = tuple(int(a) for a in items)
    if 0 in axes:
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: attention_axes is {raw!r}. Attention over the batch axis is not reproduced."
        )
    shape = layer.config.get("query_shape")
    if ctx.keras_version.major < 3 and isinstance(shape, (list, tuple)) and len(shape) >= 3:
        rank = len(shape)
        axes = tuple(a + rank + 1 if a < 0 else a for a in axes)  # tf_keras: from the (N, ..., h, d) rank
        if len(set(axes)) != len(axes) or any(not 1 <= a <= rank - 2 for a in axes):
            raise UnsupportedOptionError(
                f"{layer_label(layer, ctx)}: attention_axes is {raw!r}, for a rank-{rank} query. Only attention "
                f"over distinct axes between the batch and the features (1 to {rank - 2}) is reproduced, not over "
                "the heads axis."
            )
    return axes


def _mha_mask_rule(layer: LayerSpec, ctx: Context) -> str:
    """Keras 3 takes its fused dot_product_attention (a fully masked row uniform) only for a call
    that does not return scores and a layer without dropout; else its Softmax layer (the row
    zeroed). tf_keras always lowers masked scores by 1e9."""
    if ctx.keras_version.major < 3:
        return "subtract"
    dropout = layer.config.get("dropout", 0.0)
    return "keras3_softmax" if isinstance(dropout, (int, float)) and dropout > 0 else "keras3"


@register("MultiHeadAttention", "GroupQueryAttention", "GroupedQueryAttention")
def convert_multi_head_attention(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``MultiHeadAttention`` (inputs of any rank ≥ 3, any ``attention_axes`` between the
    batch and the features) and Keras 3 ``GroupQueryAttention`` → the runtime module of the same name."""
    cfg = layer.config
    gqa = layer.class_name in ("GroupQueryAttention", "GroupedQueryAttention")  # .keras / .h5 names
    known = (
        {
            "head_dim",
            "num_query_heads",
            "num_key_value_heads",
            "use_bias",
            "flash_attention",
            "use_gate",
            "sliding_window",
        }
        if gqa
        else {
            "num_heads",
            "key_dim",
            "value_dim",
            "use_bias",
            "output_shape",
            "attention_axes",
            "use_gate",
            "sliding_window",
            "flash_attention",
            "query_shape",
            "key_shape",
            "value_shape",
            "softmax_robust_masking",
        }
    )
    check_keys(layer, ctx, known, {"dropout", "seed"} | INIT_REG_CONSTRAINT("kernel", "bias"))
    refuse_unless(layer, ctx, "use_gate", [None, False], "Gated attention is not reproduced.")
    refuse_unless(layer, ctx, "sliding_window", [None], "Sliding-window attention is not reproduced.")
    refuse_unless(
        layer,
        ctx,
        "softmax_robust_masking",
        [None, False],
        "Robust masking (a masked score replaced by -1e9, not lowered by it) is not reproduced.",
    )
    heads = config_int(layer, ctx, "num_query_heads" if gqa else "num_heads")
    kv_heads = config_int(layer, ctx, "num_key_value_heads") if gqa else 0
    key_dim = config_int(layer, ctx, "head_dim" if gqa else "key_dim")
    value_dim = key_dim if gqa or cfg.get("value_dim") is None else config_int(layer, ctx, "value_dim")
    use_bias = bool(cfg.get("use_bias", True))
    if len(layer.weights) != (8 if use_bias else 4):
        raise WeightMismatchError(
            f"{layer_label(layer, ctx)}: {len(layer.weights)} weight arrays. Expected {8 if use_bias else 4} "
            "(query, key, value and output projections, each a kernel" + (" and a bias)." if use_bias else ").")
        )
    out_shape = cfg.get("output_shape")
    if isinstance(out_shape, (list, tuple)) and len(out_shape) > 1:
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: output_shape is {out_shape!r}. Only an output of one feature axis is reproduced."
        )
    kernels = layer.weights[:: 2 if use_bias else 1]
    if any(k.ndim != 3 for k in kernels):
        raise WeightMismatchError(
            f"{layer_label(layer, ctx)}: projection kernels have shapes {[tuple(k.shape) for k in kernels]}. "
            "Expected 3-D einsum kernels (features, heads, head size) and (heads, head size, features); an "
            "output_shape of more than one axis is not reproduced."
        )
    query_dim, key_in, value_in, output_dim = (
        int(kernels[0].shape[0]),
        int(kernels[1].shape[0]),
        int(kernels[2].shape[0]),
        int(kernels[3].shape[2]),
    )
    axes = None if gqa else _attention_axes(layer, ctx)
    kv = kv_heads or heads
    shapes: list[tuple[str, tuple[int, ...]]] = []
    for name, shape in zip(
        _PROJECTIONS,
        [(query_dim, heads, key_dim), (key_in, kv, key_dim), (value_in, kv, value_dim), (heads, value_dim, output_dim)],
    ):
        shapes.append((f"{name}_kernel", shape))
        if use_bias:
            shapes.append((f"{name}_bias", shape[1:] if name != "output" else (output_dim,)))
    w = _arrays(layer, ctx, shapes)
    config = MultiHeadAttentionConfig(
        query_dim=query_dim,
        value_dim_in=value_in,
        key_dim_in=key_in,
        num_heads=heads,
        key_dim=key_dim,
        value_dim=value_dim,
        output_dim=output_dim,
        num_kv_heads=kv_heads,
        use_bias=use_bias,
        mask_rule=_mha_mask_rule(layer, ctx),
        clears_input_masks=not gqa and ctx.keras_version.major >= 3,
        attention_axes=axes,
        axes_rule="keras3" if ctx.keras_version.major >= 3 else "tf_keras",
    )
    state: dict[str, Any] = {k: to_tensor(v) for k, v in w.items()}
    return ModuleSpec("GroupQueryAttention" if gqa else "MultiHeadAttention", config, state, call="attention")
