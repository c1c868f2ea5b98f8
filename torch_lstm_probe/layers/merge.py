"""Keras merge layers: Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate and Dot.

Masks follow the Keras version that wrote the file (``mask_rules``):

=============  ==================================================  ================================
mask_rules     output mask (inputs' masks ``m_i``, ``None`` = none)  values
=============  ==================================================  ================================
``"keras2"``   AND of the masks that exist; none if all are none    never depend on masks
``"keras3"``   OR of the masks when every input has one, else none  Multiply, Maximum and Minimum
                                                                    skip masked entries (below)
=============  ==================================================  ================================

Keras 3 ``Multiply`` replaces a masked entry by 1 before multiplying and, when every input has a
mask, zeroes the entries that every input masks. Keras 3 ``Maximum``/``Minimum`` fold the inputs
left to right; at each step a masked entry of one side takes the other side's value, and the
running mask is the OR of both, or none once an input without a mask joins.

``Concatenate`` builds each input's mask as a tensor of the input's shape (all True without a
mask), concatenates those along ``axis`` and reduces the last axis with ``all`` (Keras 2) or
``any`` (Keras 3). ``Dot`` never passes a mask on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from ..errors import InputError
from ..registry import register_module
from ..tracing import is_tracing
from .base import ConfigMixin

__all__ = ["Merge", "Concatenate", "Dot", "MERGE_OPS"]

MERGE_OPS = ("add", "subtract", "multiply", "average", "maximum", "minimum")
MASK_RULES = ("keras2", "keras3")
L2_RULES = ("keras2", "keras3")

Masks = Sequence[torch.Tensor | None] | torch.Tensor | None


def _mask_list(mask: Masks, count: int) -> list[torch.Tensor | None]:
    """The executor passes one mask for a single input, a list for several, or None."""
    if mask is None:
        return [None] * count
    if isinstance(mask, torch.Tensor):
        return [mask] + [None] * (count - 1)
    masks = list(mask)
    return masks + [None] * (count - len(masks))


def _spread(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A ``(N, L)`` mask broadcast to the shape of ``x`` ``(N, L, ...)`` (Keras: expand last, broadcast)."""
    mask = mask.bool()
    if mask.dim() < x.dim():
        mask = mask.reshape(mask.shape + (1,) * (x.dim() - mask.dim()))
    return mask.expand(x.shape)


def _check_inputs(layer: ConfigMixin, xs: Sequence[torch.Tensor], exactly: int | None = None) -> None:
    if exactly is not None and len(xs) != exactly:
        raise InputError(f"{layer.describe()} takes exactly {exactly} inputs. Received {len(xs)}.")
    if not xs:
        raise InputError(f"{layer.describe()} takes at least one input. Received none.")
    for x in xs:
        if not x.is_floating_point():
            raise InputError(f"{layer.describe()} expects floating-point tensors. Received dtype {x.dtype}.")
    if not is_tracing() and len({x.shape[0] for x in xs}) > 1:  # traced: the ops below check
        raise InputError(
            f"{layer.describe()} cannot merge tensors with different batch sizes: {[tuple(x.shape) for x in xs]}."
        )


@dataclass(frozen=True)
class MergeConfig:
    op: str  # "add" | "subtract" | "multiply" | "average" | "maximum" | "minimum"
    mask_rules: str = "keras3"  # "keras2" | "keras3": see the module docstring


@register_module("Merge")
class Merge(ConfigMixin, nn.Module):
    """Keras ``Add``/``Subtract``/``Multiply``/``Average``/``Maximum``/``Minimum`` of several tensors.

    Inputs of lower rank get axes inserted at position 1 until all ranks match (as Keras does),
    then broadcast. ``Subtract`` takes exactly two inputs. Shapes: ``(N, *)`` each → ``(N, *)``.
    """

    Config = MergeConfig
    mask_mode = "custom"
    takes_mask = True

    def __init__(self, config: MergeConfig) -> None:
        super().__init__()
        if config.op not in MERGE_OPS:
            raise ValueError(f"Merge op must be one of {MERGE_OPS}. Received {config.op!r}.")
        if config.mask_rules not in MASK_RULES:
            raise ValueError(f"mask_rules must be one of {MASK_RULES}. Received {config.mask_rules!r}.")
        self.config = config

    def compute_mask(self, *xs: torch.Tensor, mask: Masks = None) -> torch.Tensor | None:
        masks = _mask_list(mask, len(xs))
        present = [m.bool() for m in masks if m is not None]
        if not present:
            return None
        if self.config.mask_rules == "keras2":
            out = present[0]
            for m in present[1:]:
                out = out & m
            return out
        if len(present) < len(masks):
            return None
        out = present[0]
        for m in present[1:]:
            out = out | m
        return out

    def forward(self, *xs: torch.Tensor, mask: Masks = None) -> torch.Tensor:
        cfg = self.config
        _check_inputs(self, xs, 2 if cfg.op == "subtract" else None)
        masks = _mask_list(mask, len(xs))
        rank = max(x.dim() for x in xs)
        if any(x.dim() != rank for x in xs):
            # Keras inserts axes at 1; the reshaped tensors no longer carry their masks.
            masks = [m if x.dim() == rank else None for x, m in zip(xs, masks)]
            xs = tuple(x.reshape(x.shape[:1] + (1,) * (rank - x.dim()) + x.shape[1:]) for x in xs)
        use_masks = cfg.mask_rules == "keras3" and any(m is not None for m in masks)
        if cfg.op == "add":
            return _fold(xs, torch.add)
        if cfg.op == "subtract":
            return xs[0] - xs[1]
        if cfg.op == "average":
            return _fold(xs, torch.add) / len(xs)
        if cfg.op == "multiply":
            return _masked_product(xs, masks) if use_masks else _fold(xs, torch.mul)
        op = torch.maximum if cfg.op == "maximum" else torch.minimum
        return _masked_extremum(xs, masks, op) if use_masks else _fold(xs, op)

    def extra_repr(self) -> str:
        return f"op={self.config.op!r}, mask_rules={self.config.mask_rules!r}"


def _fold(xs: Sequence[torch.Tensor], op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    out = xs[0]
    for x in xs[1:]:
        out = op(out, x)
    return out


def _masked_product(xs: Sequence[torch.Tensor], masks: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """Keras 3 ``Multiply`` with masks: masked entries count as 1; all-masked entries become 0."""
    every = all(m is not None for m in masks)
    one = torch.ones((), dtype=xs[0].dtype, device=xs[0].device)
    factors = [x if m is None else torch.where(_spread(m, x), x, one) for x, m in zip(xs, masks)]
    out = _fold(factors, torch.mul)
    if every:
        out_mask = _fold([_spread(m, x) for x, m in zip(xs, masks) if m is not None], torch.logical_or)
        out = torch.where(out_mask, out, torch.zeros((), dtype=out.dtype, device=out.device))
    return out


def _masked_extremum(
    xs: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor | None],
    op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Keras 3 ``Maximum``/``Minimum`` with masks: a masked entry takes the other side's value."""
    out = xs[0]
    out_mask = _spread(masks[0], out) if masks[0] is not None else None
    for x, m in zip(xs[1:], masks[1:]):
        keep = _spread(m, x) if m is not None else None
        if keep is not None:
            x = torch.where(keep, x, out)
        if out_mask is not None:
            out = torch.where(out_mask, out, x)
        out_mask = out_mask | keep if (keep is not None and out_mask is not None) else None
        out = op(out, x)
    return out


@dataclass(frozen=True)
class ConcatenateConfig:
    axis: int = -1  # Keras `axis`, counted with the batch axis; negative counts from the end
    mask_rules: str = "keras3"  # "keras2" (reduce masks with all) | "keras3" (with any)


@register_module("Concatenate")
class Concatenate(ConfigMixin, nn.Module):
    """Keras ``Concatenate``: ``torch.cat(inputs, dim=axis)``; see the module docstring for masks."""

    Config = ConcatenateConfig
    mask_mode = "custom"

    def __init__(self, config: ConcatenateConfig) -> None:
        super().__init__()
        if config.mask_rules not in MASK_RULES:
            raise ValueError(f"mask_rules must be one of {MASK_RULES}. Received {config.mask_rules!r}.")
        self.config = config

    def compute_mask(self, *xs: torch.Tensor, mask: Masks = None) -> torch.Tensor | None:
        masks = _mask_list(mask, len(xs))
        if all(m is None for m in masks):
            return None
        full = [
            _spread(m, x) if m is not None else torch.ones(x.shape, dtype=torch.bool, device=x.device)
            for x, m in zip(xs, masks)
        ]
        joined = torch.cat(full, dim=self.config.axis)  # same shape as the output
        return joined.all(dim=-1) if self.config.mask_rules == "keras2" else joined.any(dim=-1)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        _check_inputs(self, xs)
        rank = xs[0].dim()
        axis = self.config.axis
        if any(x.dim() != rank for x in xs) or not -rank <= axis < rank or axis % rank == 0:
            raise InputError(
                f"{self.describe()} concatenates on axis {axis} tensors of equal rank (axis 0, the batch, "
                f"excluded). Received shapes {[tuple(x.shape) for x in xs]}."
            )
        try:
            return torch.cat(xs, dim=axis)
        except RuntimeError as err:
            raise InputError(
                f"{self.describe()} cannot concatenate shapes {[tuple(x.shape) for x in xs]} on axis {axis}: "
                "all other axes must match."
            ) from err

    def extra_repr(self) -> str:
        return f"axis={self.config.axis}"


@dataclass(frozen=True)
class DotConfig:
    axes: tuple[int, int]  # Keras `axes` for (first, second) input; negative counts from the end
    normalize: bool = False  # Keras `normalize`: L2-normalize both inputs along their axis first
    # How L2 normalization guards tiny norms: "keras3" x * min(rsqrt(sum x^2), 1e7) (1 / epsilon);
    # "keras2" x * rsqrt(max(sum x^2, 1e-12)) (tf.math.l2_normalize).
    l2_rule: str = "keras3"


@register_module("Dot")
class Dot(ConfigMixin, nn.Module):
    """Keras ``Dot``: the batch-wise dot product of two tensors along one axis each.

    The output keeps the first input's other axes, then the second input's (batch excluded):
    ``(N, a, D)`` · ``(N, b, D)`` with ``axes=(2, 2)`` → ``(N, a, b)``; two ``(N, D)`` give
    ``(N, 1)``.
    """

    Config = DotConfig

    def __init__(self, config: DotConfig) -> None:
        super().__init__()
        if config.l2_rule not in L2_RULES:
            raise ValueError(f"l2_rule must be one of {L2_RULES}. Received {config.l2_rule!r}.")
        self.config = config

    def _normalize(self, x: torch.Tensor, axis: int) -> torch.Tensor:
        square_sum = x.square().sum(dim=axis, keepdim=True)
        if self.config.l2_rule == "keras3":
            return x * torch.rsqrt(square_sum).clamp(max=1e7)
        return x * torch.rsqrt(square_sum.clamp(min=1e-12))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_inputs(self, (x, y), 2)
        if x.dim() < 2 or y.dim() < 2:
            raise InputError(
                f"{self.describe()} needs inputs of rank 2 or more. Received {tuple(x.shape)} and {tuple(y.shape)}."
            )
        ax, ay = self.config.axes[0] % x.dim(), self.config.axes[1] % y.dim()
        if ax == 0 or ay == 0 or x.shape[ax] != y.shape[ay]:
            raise InputError(
                f"{self.describe()} takes the dot product over axis {ax} of {tuple(x.shape)} and axis {ay} of "
                f"{tuple(y.shape)}: these must be non-batch axes of equal size."
            )
        if self.config.normalize:
            x, y = self._normalize(x, ax), self._normalize(y, ay)
        xm = x.movedim(ax, -1)  # (N, *X, D)
        ym = y.movedim(ay, 1)  # (N, D, *Y)
        n, depth = x.shape[0], x.shape[ax]
        out = torch.bmm(xm.reshape(n, -1, depth), ym.reshape(n, depth, -1))  # (N, prod X, prod Y)
        out = out.reshape(n, *xm.shape[1:-1], *ym.shape[2:])  # (N, *X, *Y)
        return out.reshape(n, 1) if out.dim() == 1 else out

    def extra_repr(self) -> str:
        return f"axes={self.config.axes}, normalize={self.config.normalize}"
