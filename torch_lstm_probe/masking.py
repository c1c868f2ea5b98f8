"""Keras mask semantics on fused kernels, for any mask.

Keras skips a masked step: the state is carried, and the output is the previous output (or 0
with ``zero_output_for_mask``); before the first real step the previous output is 0. Skipping a
step and carrying the state is the same as never running it, so any mask (right or left
padding, holes, fully masked rows) comes out of one fused pass over each row's real steps moved
to the front, in order (the *compact* layout), followed by one gather that puts every step back:
a real step reads its own compact step, a masked step the compact step of the last real step
before it (its carried state and previous output), or the initial value when there is none.

Every index is computed with tensor operations, so the same code runs eagerly and under
``torch.export``/``torch.compile``; only the eager shortcut for right padding (no gather) looks
at the mask's values.

Shapes: N = batch, L = time steps, H = units; masks are bool ``(N, L)``, True = real step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .tracing import is_tracing

__all__ = [
    "Compaction",
    "compaction",
    "compact_rows",
    "last_real_step",
    "expand_outputs",
    "expand_states",
    "expand_gates",
]


@dataclass(frozen=True)
class Compaction:
    """Where each row's real steps go in the compact layout and where every step comes back from."""

    mask: torch.Tensor  # (N, L) bool, True at real steps
    order: torch.Tensor  # (N, L) long: compact step k of row n is step order[n, k] (real steps first, in order)
    source: torch.Tensor  # (N, L) long: the compact step of the last real step at or before t, -1 if none
    length: torch.Tensor  # (N,) long: real steps per row
    aligned: bool  # the real steps of every row already come first (right padding); eager only


def compaction(mask: torch.Tensor) -> Compaction:
    """The compact layout of ``mask`` (bool ``(N, L)``)."""
    steps = mask.shape[1]
    t = torch.arange(steps, device=mask.device).expand_as(mask)  # (N, L)
    source = mask.long().cumsum(1) - 1  # (N, L): rank of each real step
    length = source[:, -1] + 1  # (N,)
    # Real steps go to their rank, masked ones after all of them, in order; ``order`` inverts that
    # (a scatter rather than a stable sort, which ONNX lacks).
    dest = torch.where(mask, source, length[:, None] + (~mask).long().cumsum(1) - 1)  # (N, L)
    order = torch.zeros_like(dest).scatter(1, dest, t)  # (N, L)
    aligned = False
    if not is_tracing():
        aligned = bool((mask == (t < length[:, None])).all())
    return Compaction(mask, order, source, length, aligned)


def _gather_time(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``out[n, t] = x[n, index[n, t]]`` for ``x`` of shape ``(N, L, ...)``.

    One ``index_select`` over the flattened (batch × time) rows: the index is ``(N·L,)``,
    not the full tensor shape, which keeps the gather cheap.
    """
    n, steps = index.shape
    rows = (index + torch.arange(n, device=index.device)[:, None] * steps).reshape(-1)  # (N·L,)
    flat = x.reshape(n * steps, *x.shape[2:])
    return flat.index_select(0, rows).reshape(x.shape)


def compact_rows(x: torch.Tensor, comp: Compaction) -> torch.Tensor:
    """Each row's real steps first, in order: ``out[n, k] = x[n, order[n, k]]``; ``(N, L, ·)``."""
    return x if comp.aligned else _gather_time(x, comp.order)


def last_real_step(y: torch.Tensor, comp: Compaction) -> torch.Tensor:
    """``y[n, length_n - 1]`` for a compact ``(N, L, H)`` tensor (step 0 for empty rows)."""
    index = (comp.length - 1).clamp(min=0)  # (N,)
    return y[torch.arange(y.shape[0], device=y.device), index]  # (N, H)


def _expand(y: torch.Tensor, comp: Compaction) -> torch.Tensor:
    """``out[n, t] = y[n, source[n, t]]`` (step 0 where ``source`` is -1); a fresh tensor."""
    return _gather_time(y, comp.source.clamp(min=0))


def expand_outputs(
    y: torch.Tensor, comp: Compaction, final_output: torch.Tensor, zero_output_for_mask: bool
) -> torch.Tensor:
    """Sequence outputs back in place, with Keras' values at masked steps.

    Args:
        y: ``(N, L, H)`` outputs in compact layout. Overwritten when the layout is aligned
            (right padding): pass a tensor nobody else reads.
        final_output: ``(N, H)`` the output at each row's last real step (0 for empty rows).
    """
    masked = ~comp.mask[..., None]  # (N, L, 1)
    if comp.aligned:  # real steps are in place; every masked step comes after them
        if zero_output_for_mask:
            return y.masked_fill_(masked, 0.0)
        return torch.where(masked, final_output[:, None, :], y)
    back = _expand(y, comp)  # (N, L, H)
    empty = masked if zero_output_for_mask else (comp.source < 0)[..., None]
    return back.masked_fill_(empty, 0.0)


def expand_states(y: torch.Tensor, comp: Compaction, initial: torch.Tensor) -> torch.Tensor:
    """A per-step state back in place: carried over masked steps, ``initial`` before the first real one."""
    if comp.aligned:  # real steps in place, then the last one's state carried (initial for empty rows)
        carried = torch.where((comp.length > 0)[:, None], last_real_step(y, comp), initial)  # (N, H)
        return torch.where(comp.mask[..., None], y, carried[:, None, :])
    return torch.where((comp.source < 0)[..., None], initial[:, None, :], _expand(y, comp))


def expand_gates(y: torch.Tensor, comp: Compaction) -> torch.Tensor:
    """A per-step gate back in place, 0 at masked steps."""
    back = y if comp.aligned else _expand(y, comp)
    return torch.where(comp.mask[..., None], back, torch.zeros((), dtype=y.dtype, device=y.device))
