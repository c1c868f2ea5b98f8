"""Attention layers with Keras semantics: ``Attention`` (Luong), ``AdditiveAttention`` (Bahdanau),
``MultiHeadAttention`` and ``GroupQueryAttention``.

Each keeps its attention weights (the softmax Keras returns with ``return_attention_scores``) at a
hook point, ``hook_scores``, so ``"<layer>/scores"`` is a probe key like a recurrent gate.

Masking follows Keras exactly. A masked key position gets ``score - 1e9`` before the softmax
(Keras' ``65504`` only applies to float16), so its weight underflows to 0 and a row with every
position masked becomes uniform, as in Keras. The output mask is the query's mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..errors import InputError
from ..registry import register_module
from .base import ConfigMixin, HookPoint

__all__ = ["Attention", "AdditiveAttention", "MultiHeadAttention", "GroupQueryAttention"]

MASKED_SCORE = 1.0e9  # what Keras subtracts from a masked score (float32)
LOWEST_LOGIT = -0.7 * 3.38953e38  # what Keras 3's TensorFlow dot_product_attention puts in place


def _masks(mask: torch.Tensor | Sequence[torch.Tensor | None] | None, n: int) -> list[torch.Tensor | None]:
    """The per-input masks as a list of ``n`` (the graph hands one mask, a list, or None)."""
    if mask is None:
        return [None] * n
    if isinstance(mask, torch.Tensor):
        return [mask] + [None] * (n - 1)
    masks = list(mask) + [None] * n
    return masks[:n]


def causal_mask(queries: int, keys: int, device: torch.device) -> torch.Tensor:
    """``(1, Tq, Tv)`` bool: query step i sees key steps j <= i (Keras' lower-triangular mask)."""
    rows = torch.arange(queries, device=device)[:, None]  # (Tq, 1)
    cols = torch.arange(keys, device=device)[None, :]  # (1, Tv)
    return (rows >= cols)[None]  # (1, Tq, Tv)


def masked_softmax(scores: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """``softmax(where(keep, s, s - 1e9))`` over the last axis: how Keras' ``Attention`` layers
    and tf_keras' ``Softmax`` mask scores (a row with every position masked comes out uniform)."""
    if keep is not None:
        scores = torch.where(keep, scores, scores - MASKED_SCORE)
    return torch.softmax(scores, dim=-1)


def masked_softmax_zeroed(scores: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """Keras 3's ``Softmax`` with a mask: ``where(keep, softmax(where(keep, s, -1e9)), 0)``, so a
    row with every position masked comes out as zeros."""
    if keep is None:
        return torch.softmax(scores, dim=-1)
    weights = torch.softmax(torch.where(keep, scores, torch.full((), -MASKED_SCORE, dtype=scores.dtype)), dim=-1)
    return torch.where(keep, weights, torch.zeros((), dtype=weights.dtype))


def _check_rank3(layer: ConfigMixin, name: str, x: torch.Tensor, dim: int | None = None) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"{layer.describe()} expects a float {name} (batch, steps, features). Received {shape}.")
    if dim is not None and x.shape[-1] != dim:
        raise InputError(f"{layer.describe()} expects a {name} with {dim} features. Received shape {tuple(x.shape)}.")


@dataclass(frozen=True)
class AttentionConfig:
    use_scale: bool = False  # Keras `use_scale`: a learned scalar (Attention) or vector (AdditiveAttention)
    score_mode: str = "dot"  # Attention: "dot" or "concat"; AdditiveAttention: "additive"
    dim: int = 0  # features of query and key (the AdditiveAttention scale's length)
    causal: bool = False  # tf_keras `causal` config: a causal mask on every call
    # How a masked query step's output is zeroed: "where" (Keras 3 selects 0) or "multiply"
    # (tf_keras multiplies by the mask, so inf/NaN there still spread).
    zero_masked: str = "where"


class _AttentionBase(ConfigMixin, nn.Module):
    """What every attention layer shares: the scores hook point (probe key ``"<layer>/scores"``)
    and the output mask, the query's (none on the scores)."""

    mask_mode = "custom"
    takes_mask = True

    def __init__(self) -> None:
        super().__init__()
        self.hook_scores = HookPoint()  # sees the attention weights (N, [heads,] Tq, Tv)

    def gate_points(self) -> list[tuple[str, HookPoint]]:
        return [("/scores", self.hook_scores)]

    def compute_mask(self, *xs: torch.Tensor, mask: object = None) -> tuple[torch.Tensor | None, None]:
        return _masks(mask, len(xs))[0], None  # type: ignore[arg-type]


class _DenseAttention(_AttentionBase):
    """What ``Attention`` and ``AdditiveAttention`` share: inputs ``[query, value(, key)]``, the
    value mask and the causal mask on the scores, the softmax, and the query mask on the output.

    ``out = softmax(masked(score(q, k))) @ v`` ``(N, Tq, D)``; masked query steps give 0.
    """

    Config = AttentionConfig

    def __init__(self, config: AttentionConfig) -> None:
        super().__init__()
        if config.zero_masked not in ("where", "multiply"):
            raise ValueError(f"zero_masked must be 'where' or 'multiply'. Received {config.zero_masked!r}.")
        self.config = config

    def _scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self,
        query: torch.Tensor,
        value: torch.Tensor,
        key: torch.Tensor | None = None,
        mask: torch.Tensor | Sequence[torch.Tensor | None] | None = None,
        return_attention_scores: bool = False,
        use_causal_mask: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        key = value if key is None else key
        for name, x in (("query", query), ("value", value), ("key", key)):
            _check_rank3(self, name, x)
        q_mask, v_mask = _masks(mask, 2)
        scores = self._scores(query, key)  # (N, Tq, Tv)
        keep = v_mask.bool()[:, None, :] if v_mask is not None else None  # (N, 1, Tv)
        if cfg.causal or use_causal_mask:
            causal = causal_mask(scores.shape[1], scores.shape[2], scores.device)  # (1, Tq, Tv)
            keep = causal if keep is None else keep & causal
        weights = self.hook_scores(masked_softmax(scores, keep))  # (N, Tq, Tv)
        out = weights @ value  # (N, Tq, D)
        if q_mask is not None:
            q_keep = q_mask.bool()[:, :, None]  # (N, Tq, 1)
            out = (
                torch.where(q_keep, out, torch.zeros((), dtype=out.dtype))
                if cfg.zero_masked == "where"
                else out * q_keep
            )
        return (out, weights) if return_attention_scores else out


@register_module("Attention")
class Attention(_DenseAttention):
    """Keras ``Attention`` (Luong). ``"dot"``: ``s = scale · q kᵀ``; ``"concat"``:
    ``s = w · Σ_d tanh(scale · (q_i + k_j))``. ``scale`` and ``w`` are learned scalars (``scale``
    only with ``use_scale``). Shapes: ``q (N, Tq, D)``, ``k (N, Tv, D)`` → ``s (N, Tq, Tv)``."""

    def __init__(self, config: AttentionConfig) -> None:
        super().__init__(config)
        if config.score_mode not in ("dot", "concat"):
            raise ValueError(f"Attention score_mode must be 'dot' or 'concat'. Received {config.score_mode!r}.")
        self.scale = nn.Parameter(torch.ones(())) if config.use_scale else None
        self.concat_score_weight = nn.Parameter(torch.ones(())) if config.score_mode == "concat" else None

    def _scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        if self.concat_score_weight is None:
            scores = q @ k.transpose(-2, -1)  # (N, Tq, Tv)
            return scores * self.scale if self.scale is not None else scores
        pairs = q[:, :, None, :] + k[:, None, :, :]  # (N, Tq, Tv, D)
        if self.scale is not None:
            pairs = self.scale * pairs
        return self.concat_score_weight * torch.tanh(pairs).sum(-1)  # (N, Tq, Tv)

    def extra_repr(self) -> str:
        return f"score_mode={self.config.score_mode!r}, use_scale={self.config.use_scale}"


@register_module("AdditiveAttention")
class AdditiveAttention(_DenseAttention):
    """Keras ``AdditiveAttention`` (Bahdanau): ``s_ij = Σ_d scale_d · tanh(q_id + k_jd)``, with a
    learned ``scale (D,)`` when ``use_scale`` (else 1). Shapes as for ``Attention``."""

    def __init__(self, config: AttentionConfig) -> None:
        super().__init__(config)
        self.scale = nn.Parameter(torch.ones(config.dim)) if config.use_scale else None

    def _scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        pairs = torch.tanh(q[:, :, None, :] + k[:, None, :, :])  # (N, Tq, Tv, D)
        return (pairs * self.scale if self.scale is not None else pairs).sum(-1)  # (N, Tq, Tv)

    def extra_repr(self) -> str:
        return f"use_scale={self.config.use_scale}"


@dataclass(frozen=True)
class MultiHeadAttentionConfig:
    query_dim: int  # features of the query
    value_dim_in: int  # features of the value
    key_dim_in: int  # features of the key (the value's when no key is given)
    num_heads: int  # Keras `num_heads` (GroupQueryAttention: `num_query_heads`)
    key_dim: int  # Keras `key_dim` (GroupQueryAttention: `head_dim`)
    value_dim: int  # Keras `value_dim` (defaults to key_dim)
    output_dim: int  # last axis of the output (Keras `output_shape`, default the query's features)
    num_kv_heads: int = 0  # GroupQueryAttention `num_key_value_heads`; 0 for MultiHeadAttention
    use_bias: bool = True  # Keras `use_bias`: biases on the four projections
    # How masked scores are dropped (and so what a fully masked row, a masked query step, gets):
    # "keras3": a call returning the scores runs Keras 3's Softmax layer (-1e9 in place, the row
    # zeroed); any other call its fused dot_product_attention (a very large negative in place,
    # the row uniform). "subtract": tf_keras lowers masked scores by 1e9 (the row uniform).
    mask_rule: str = "keras3"
    # Keras 3's MultiHeadAttention deletes the masks of the tensors it reads, so layers the graph
    # runs after it see them unmasked.
    clears_input_masks: bool = False


@register_module("MultiHeadAttention")
class MultiHeadAttention(_AttentionBase):
    """Keras ``MultiHeadAttention`` over the steps axis (``attention_axes=None``, rank-3 inputs).

    With ``q = x_q W_q + b_q`` ``(N, T, h, d)``, ``k``, ``v`` likewise ``(N, S, h, d)``:
    ``a = softmax(masked(q kᵀ / √d))`` ``(N, h, T, S)``, ``out = Σ_h (a v)_h W_o + b_o`` ``(N, T, F)``.
    The mask on the scores is the AND of the query mask ``(N, T, 1)``, the value mask and the
    key mask ``(N, 1, S)``, and the causal mask (``mask_rule`` says what a fully masked row, a
    masked query step, gets); the output carries the query's mask.
    Weights keep Keras' einsum layouts: ``query_kernel (D, h, d)``, ``query_bias (h, d)``, …,
    ``output_kernel (h, d_v, F)``, ``output_bias (F,)``.
    """

    Config = MultiHeadAttentionConfig

    def __init__(self, config: MultiHeadAttentionConfig) -> None:
        super().__init__()
        self.config = config
        kv_heads = config.num_kv_heads or config.num_heads
        if config.num_heads % kv_heads:
            raise ValueError(f"num_heads={config.num_heads} must be a multiple of num_kv_heads={kv_heads}.")
        shapes = {
            "query": (config.query_dim, config.num_heads, config.key_dim),
            "key": (config.key_dim_in, kv_heads, config.key_dim),
            "value": (config.value_dim_in, kv_heads, config.value_dim),
        }
        for name, shape in shapes.items():
            self.register_parameter(f"{name}_kernel", nn.Parameter(torch.empty(shape)))
            bias = nn.Parameter(torch.zeros(shape[1:])) if config.use_bias else None
            self.register_parameter(f"{name}_bias", bias)
        self.output_kernel = nn.Parameter(torch.empty(config.num_heads, config.value_dim, config.output_dim))
        self.output_bias = nn.Parameter(torch.zeros(config.output_dim)) if config.use_bias else None
        self.clears_input_masks = config.clears_input_masks

    def _project(self, x: torch.Tensor, name: str) -> torch.Tensor:
        kernel = getattr(self, f"{name}_kernel")  # (D, h, d)
        bias = getattr(self, f"{name}_bias")  # (h, d) or None
        y = torch.einsum("nsd,dhk->nshk", x, kernel)  # (N, S, h, d)
        return y + bias if bias is not None else y

    def forward(
        self,
        query: torch.Tensor,
        value: torch.Tensor,
        key: torch.Tensor | None = None,
        mask: torch.Tensor | Sequence[torch.Tensor | None] | None = None,
        return_attention_scores: bool = False,
        use_causal_mask: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        masks = _masks(mask, 3 if key is not None else 2)
        q_mask, v_mask = masks[0], masks[1]
        k_mask = masks[2] if key is not None else None
        key = value if key is None else key
        _check_rank3(self, "query", query, cfg.query_dim)
        _check_rank3(self, "value", value, cfg.value_dim_in)
        _check_rank3(self, "key", key, cfg.key_dim_in)
        q = self._project(query, "query") * (1.0 / math.sqrt(float(cfg.key_dim)))  # (N, T, h, d)
        k = self._project(key, "key")  # (N, S, h_kv, d)
        v = self._project(value, "value")  # (N, S, h_kv, d_v)
        if cfg.num_kv_heads and cfg.num_kv_heads != cfg.num_heads:
            repeat = cfg.num_heads // cfg.num_kv_heads
            k = k.repeat_interleave(repeat, dim=2)  # (N, S, h, d)
            v = v.repeat_interleave(repeat, dim=2)  # (N, S, h, d_v)
        scores = torch.einsum("nthd,nshd->nhts", q, k)  # (N, h, T, S)
        keep = None
        for m, shape in (
            (q_mask, (-1, scores.shape[2], 1)),
            (v_mask, (-1, 1, scores.shape[3])),
            (k_mask, (-1, 1, scores.shape[3])),
        ):
            if m is not None:
                part = m.bool().reshape(shape)  # (N, T, 1) or (N, 1, S)
                keep = part if keep is None else keep & part
        if use_causal_mask:
            causal = causal_mask(scores.shape[2], scores.shape[3], scores.device)  # (1, T, S)
            keep = causal if keep is None else keep & causal
        keep = keep[:, None] if keep is not None else None  # (N or 1, 1, T or 1, S or 1)
        if cfg.mask_rule == "subtract":
            weights = masked_softmax(scores, keep)  # (N, h, T, S)
        elif return_attention_scores:
            weights = masked_softmax_zeroed(scores, keep)
        else:
            lowest = torch.full((), LOWEST_LOGIT, dtype=scores.dtype)
            weights = torch.softmax(torch.where(keep, scores, lowest) if keep is not None else scores, dim=-1)
        weights = self.hook_scores(weights)
        context = torch.einsum("nhts,nshd->nthd", weights, v)  # (N, T, h, d_v)
        out = torch.einsum("nthd,hdf->ntf", context, self.output_kernel)  # (N, T, F)
        if self.output_bias is not None:
            out = out + self.output_bias
        return (out, weights) if return_attention_scores else out

    def extra_repr(self) -> str:
        cfg = self.config
        kv = f", num_kv_heads={cfg.num_kv_heads}" if cfg.num_kv_heads else ""
        return f"num_heads={cfg.num_heads}{kv}, key_dim={cfg.key_dim}, value_dim={cfg.value_dim}, output_dim={cfg.output_dim}"


@register_module("GroupQueryAttention")
class GroupQueryAttention(MultiHeadAttention):
    """Keras 3 ``GroupQueryAttention``: ``MultiHeadAttention`` whose ``num_kv_heads`` key/value
    heads are each shared by ``num_heads / num_kv_heads`` query heads (``repeat_interleave``)."""
