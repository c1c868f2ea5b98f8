"""Keras mask semantics on fused kernels.

Keras skips a masked step: the state is carried, and the output is the previous output (or 0
with ``zero_output_for_mask``); before the first real step the previous output is 0. When
every row's real steps form one contiguous block ``[start, start + length)`` (right padding,
left padding, or both), the same result comes from one fused pass: shift each row so its block
starts at step 0, run the packed sequence, and shift the outputs back. Masks with holes need
the exact step loop.

Shapes: N = batch, L = time steps, H = units; masks are bool ``(N, L)``, True = real step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "Blocks",
    "contiguous_blocks",
    "shift_rows",
    "last_real_step",
    "unshift_outputs",
    "unshift_states",
    "unshift_gates",
]


@dataclass(frozen=True)
class Blocks:
    """The real steps of each row: ``start`` and ``length``, both ``(N,)`` long."""

    start: torch.Tensor  # (N,) first real step (0 for a fully masked row)
    length: torch.Tensor  # (N,) number of real steps (0 for a fully masked row)

    @property
    def right_aligned(self) -> bool:
        """True when every block starts at step 0 (right padding): no shifting needed."""
        return not bool(self.start.any())


def contiguous_blocks(mask: torch.Tensor) -> Blocks | None:
    """The per-row blocks of a mask, or None when some row has a hole (non-contiguous)."""
    n, steps = mask.shape
    t = torch.arange(steps, device=mask.device).expand(n, steps)  # (N, L)
    count = mask.sum(1)  # (N,)
    first = torch.where(mask, t, steps).amin(1)  # (N,)
    last = torch.where(mask, t, -1).amax(1)  # (N,)
    has_any = count > 0
    if not bool(((last - first + 1 == count) | ~has_any).all()):
        return None
    start = torch.where(has_any, first, torch.zeros_like(first))
    return Blocks(start, count)


def _gather_time(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``out[n, t] = x[n, index[n, t]]`` for ``x`` of shape ``(N, L, ...)``.

    One ``index_select`` over the flattened (batch × time) rows: the index is ``(N·L,)``,
    not the full tensor shape, which keeps the shift cheap.
    """
    n, steps = index.shape
    rows = (index + torch.arange(n, device=index.device)[:, None] * steps).reshape(-1)  # (N·L,)
    flat = x.reshape(n * steps, *x.shape[2:])
    return flat.index_select(0, rows).reshape(x.shape)


def last_real_step(y: torch.Tensor, blocks: Blocks) -> torch.Tensor:
    """``y[n, length_n - 1]`` for a shifted ``(N, L, H)`` tensor (row 0 for empty rows)."""
    n = y.shape[0]
    index = (blocks.length - 1).clamp(min=0)  # (N,)
    return y[torch.arange(n, device=y.device), index]  # (N, H)


def shift_rows(x: torch.Tensor, blocks: Blocks) -> torch.Tensor:
    """Moves each row's block to the front: ``out[n, t] = x[n, (t + start_n) mod L]``."""
    if blocks.right_aligned:
        return x
    steps = x.shape[1]
    t = torch.arange(steps, device=x.device)
    index = (t[None, :] + blocks.start[:, None]) % steps  # (N, L)
    return _gather_time(x, index)


def _unshift_index(blocks: Blocks, steps: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    t = torch.arange(steps, device=device)
    rel = t[None, :] - blocks.start[:, None]  # (N, L): position inside the shifted row
    inside = (rel >= 0) & (rel < blocks.length[:, None])  # (N, L): a real step
    after = rel >= blocks.length[:, None]  # (N, L): after the block
    return rel.clamp(0, steps - 1), inside, after


def unshift_outputs(
    y: torch.Tensor, blocks: Blocks, final_output: torch.Tensor, zero_output_for_mask: bool
) -> torch.Tensor:
    """Sequence outputs back in place, with Keras' values at masked steps.

    Args:
        y: ``(N, L, H)`` outputs in shifted layout (real steps first). Overwritten when no shift
            is needed (right padding): pass a tensor nobody else reads.
        final_output: ``(N, H)`` the output at each row's last real step (0 for empty rows).
    """
    rel, inside, after = _unshift_index(blocks, y.shape[1], y.device)
    if blocks.right_aligned:
        back = y  # no steps before the blocks
    else:
        back = _gather_time(y, rel)  # (N, L, H), a fresh tensor
        back.masked_fill_(_before(blocks, y)[..., None], 0.0)
    if zero_output_for_mask:
        return back.masked_fill_(after[..., None], 0.0)
    if bool(after.any()):
        back = torch.where(after[..., None], final_output[:, None, :], back)
    return back


def _before(blocks: Blocks, y: torch.Tensor) -> torch.Tensor:
    """(N, L) True at steps before each row's block."""
    t = torch.arange(y.shape[1], device=y.device)
    return t[None, :] < blocks.start[:, None]


def unshift_states(y: torch.Tensor, blocks: Blocks, initial: torch.Tensor, final: torch.Tensor) -> torch.Tensor:
    """A per-step state back in place: the initial state before a block, the final one after."""
    rel, inside, after = _unshift_index(blocks, y.shape[1], y.device)
    back = y if blocks.right_aligned else _gather_time(y, rel)
    outside = torch.where(after[..., None], final[:, None, :], initial[:, None, :])
    return torch.where(inside[..., None], back, outside)


def unshift_gates(y: torch.Tensor, blocks: Blocks) -> torch.Tensor:
    """A per-step gate back in place, 0 at masked steps."""
    rel, inside, _ = _unshift_index(blocks, y.shape[1], y.device)
    back = y if blocks.right_aligned else _gather_time(y, rel)
    return torch.where(inside[..., None], back, torch.zeros((), dtype=y.dtype, device=y.device))
