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
    # the row uniform). "keras3_softmax": Keras 3 with dropout > 0 runs the Softmax layer on every
    # call. "subtract": tf_keras lowers masked scores by 1e9 (the row uniform).
    mask_rule: str = "keras3"
    # Keras 3's MultiHeadAttention deletes the masks of the tensors it reads, so layers the graph
    # runs after it see them unmasked.
    clears_input_masks: bool = False
    # Keras `attention_axes`: input axes attended over (None: every axis between batch and features).
    attention_axes: tuple[int, ...] | None = None
    # Which library's rules place the attention axes and masks: "keras3" counts a negative axis
    # from the input's rank and gives the query mask a size-1 axis last, the value/key masks one
    # before their last; "tf_keras" counts from the rank of the projected (N, ..., h, d) tensor
    # and inserts those size-1 axes at axis 2 (query) and axis 1 (value/key).
    axes_rule: str = "keras3"


def _attention_equations(rank: int, axes: tuple[int, ...]) -> tuple[str, str]:
    """Keras' einsum equations for projected tensors of ``rank`` ``(N, ..., h, d)`` attending over
    ``axes``: the scores ``k, q → s`` and the combination ``s, v → context``.

    Every axis but the attended ones and the last (``d``) is a batch axis ``B`` (the heads
    included); ``s`` is laid out ``(B..., query axes..., key axes...)``.
    """
    target = "".join(chr(ord("a") + i) for i in range(rank))  # the query's / context's letters
    batch = [i for i in range(rank - 1) if i not in axes]
    fresh = iter(chr(ord("a") + rank + i) for i in range(len(axes)))
    source = "".join(target[i] if i in batch or i == rank - 1 else next(fresh) for i in range(rank))
    product = "".join([target[i] for i in batch] + [target[i] for i in axes] + [source[i] for i in axes])
    return f"{source},{target}->{product}", f"{product},{source}->{target}"


@register_module("MultiHeadAttention")
class MultiHeadAttention(_AttentionBase):
    """Keras ``MultiHeadAttention`` over any ``attention_axes`` of inputs of rank ≥ 3.

    Steps axis (rank 3, ``attention_axes`` None or [1]): with ``q = x_q W_q + b_q`` ``(N, T, h, d)``,
    ``k``, ``v`` likewise ``(N, S, h, d)``: ``a = softmax(masked(q kᵀ / √d))`` ``(N, h, T, S)``,
    ``out = Σ_h (a v)_h W_o + b_o`` ``(N, T, F)``.
    The mask on the scores is the AND of the query mask ``(N, T, 1)``, the value mask and the
    key mask ``(N, 1, S)``, and the causal mask (``mask_rule`` says what a fully masked row, a
    masked query step, gets); the output carries the query's mask.

    Other axes: the projections of ``(N, A₁…A_m, D)`` are ``(N, A₁…A_m, h, d)``; with ``P`` the
    attended axes and ``B`` the others (heads included), ``s[B, P_q, P_k] = Σ_d q[B, P_q, d] k[B, P_k, d] / √d``,
    ``a = softmax_{P_k}(masked(s))`` over all attended key axes together
    (``exp(s - logsumexp_{P_k} s)`` when there are several), ``context[B, P_q, d] = Σ_{P_k} a v``,
    ``out = Σ_{h, d} context W_o + b_o`` ``(N, A₁…A_m, F)``. The masks are combined as for rank 3
    (Keras 3: query ``m_q[..., None]``, value/key ``m_v[..., None, :]``; tf_keras: ``m_q[:, :, None]``,
    ``m_v[:, None]``; causal ``(1, A₁, A₁')``) and then
    given size-1 axes at ``-2|P| - 1`` until they have the scores' rank; Keras 3 selects -1e9 on
    masked scores and zeroes their weights, tf_keras lowers them by 1e9.

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
        if config.axes_rule not in ("keras3", "tf_keras"):
            raise ValueError(f"axes_rule must be 'keras3' or 'tf_keras'. Received {config.axes_rule!r}.")

    def _axes(self, rank: int) -> tuple[int, ...]:
        """The attended axes of a rank-``rank`` input, as non-negative axes of the input (and of
        its projection, which only appends ``(h, d)``)."""
        axes = self.config.attention_axes
        if axes is None:
            return tuple(range(1, rank - 1))
        shift = rank if self.config.axes_rule == "keras3" else rank + 1
        resolved = tuple(a + shift if a < 0 else a for a in axes)
        if len(set(resolved)) != len(resolved) or any(not 1 <= a <= rank - 2 for a in resolved):
            raise InputError(
                f"{self.describe()} has attention_axes {tuple(axes)}, which for a rank-{rank} input are not "
                f"distinct axes between the batch and the features (1 to {rank - 2}). Attention over the "
                "heads or batch axis is not reproduced."
            )
        return resolved

    def _project(self, x: torch.Tensor, name: str) -> torch.Tensor:
        kernel = getattr(self, f"{name}_kernel")  # (D, h, d)
        bias = getattr(self, f"{name}_bias")  # (h, d) or None
        if x.dim() != 3:
            y = torch.einsum("...d,dhk->...hk", x, kernel)  # (N, A..., h, d)
            return y + bias if bias is not None else y
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
        if isinstance(query, torch.Tensor) and query.dim() != 3:
            return self._forward_axes(
                query, value, key, (q_mask, v_mask, k_mask), return_attention_scores, use_causal_mask
            )
        self._axes(3)  # a rank-3 input attends over its steps axis only
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
        elif return_attention_scores or cfg.mask_rule == "keras3_softmax":
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

    def _forward_axes(
        self,
        query: torch.Tensor,
        value: torch.Tensor,
        key: torch.Tensor,
        masks: tuple[torch.Tensor | None, ...],
        return_attention_scores: bool,
        use_causal_mask: bool,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attention over ``attention_axes`` of inputs ``(N, A₁…A_m, D)`` of any rank ≥ 3."""
        cfg = self.config
        rank = query.dim()
        for name, x, dim in (
            ("query", query, cfg.query_dim),
            ("value", value, cfg.value_dim_in),
            ("key", key, cfg.key_dim_in),
        ):
            if not isinstance(x, torch.Tensor) or x.dim() != rank or not x.is_floating_point() or x.shape[-1] != dim:
                shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise InputError(
                    f"{self.describe()} expects a float {name} of rank {rank} with {dim} features. Received {shape}."
                )
        if value.shape[:-1] != key.shape[:-1]:
            raise InputError(
                f"{self.describe()} expects value and key alike but for the features. "
                f"Received {tuple(value.shape)} and {tuple(key.shape)}."
            )
        if cfg.num_kv_heads:  # GroupQueryAttention
            raise InputError(
                f"{self.describe()} expects (batch, steps, features) inputs. Received {tuple(query.shape)}."
            )
        axes = self._axes(rank)
        scores_eq, combine_eq = _attention_equations(rank + 1, axes)
        q = self._project(query, "query") * (1.0 / math.sqrt(float(cfg.key_dim)))  # (N, A..., h, d)
        k = self._project(key, "key")  # (N, A'..., h, d)
        v = self._project(value, "value")  # (N, A'..., h, d_v)
        scores = torch.einsum(scores_eq, k, q)  # (B..., P_q..., P_k...)
        keep = None
        q_mask, v_mask, k_mask = masks
        q_axis, kv_axis = (-1, -2) if cfg.axes_rule == "keras3" else (2, 1)
        for m, axis in ((q_mask, q_axis), (v_mask, kv_axis), (k_mask, kv_axis)):
            if m is not None:
                part = m.bool().unsqueeze(axis)  # keras3: (N, A..., 1), (N, ..., 1, A_m); tf_keras: 1 at 2, at 1
                keep = part if keep is None else keep & part
        if use_causal_mask:
            causal = causal_mask(query.shape[1], value.shape[1], scores.device)  # (1, A₁, A₁')
            keep = causal if keep is None else keep & causal
        if keep is not None:
            expand = -2 * len(axes) - 1
            while keep.dim() < scores.dim():
                if keep.dim() + 1 < -expand:
                    keep = None
                    break
                keep = keep.unsqueeze(expand)
            if (
                keep is None
                or keep.dim() > scores.dim()
                or any(m not in (1, s) for m, s in zip(keep.shape[::-1], scores.shape[::-1]))
            ):
                raise InputError(
                    f"{self.describe()}: the masks of its inputs do not broadcast to its attention scores "
                    f"{tuple(scores.shape)} over attention_axes {axes} (Keras rejects them too)."
                )
        norm = tuple(range(scores.dim() - len(axes), scores.dim()))  # the key axes P_k
        if keep is not None:
            if cfg.mask_rule == "subtract":
                scores = torch.where(keep, scores, scores - MASKED_SCORE)
            else:
                scores = torch.where(keep, scores, torch.full((), -MASKED_SCORE, dtype=scores.dtype))
        if len(norm) > 1:
            weights = torch.exp(scores - torch.logsumexp(scores, dim=norm, keepdim=True))
        else:
            weights = torch.softmax(scores, dim=norm[0])
        if keep is not None and cfg.mask_rule != "subtract":
            weights = torch.where(keep, weights, torch.zeros((), dtype=weights.dtype))
        weights = self.hook_scores(weights)  # (B..., P_q..., P_k...)
        context = torch.einsum(combine_eq, weights, v)  # (N, A..., h, d_v)
        out = torch.einsum("...hd,hdf->...f", context, self.output_kernel)  # (N, A..., F)
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
