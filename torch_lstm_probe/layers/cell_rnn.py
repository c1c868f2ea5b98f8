"""``keras.layers.RNN`` around a user's cell: the recurrent skeleton runs the cell one step at a time.

A cell module (from ``custom_layers={"MyCell": converter}``) computes one step::

    output, new_states = cell(x_t, states)    # x_t (N, F); states: list of (N, H) tensors

and says how many states it carries with ``state_size`` (an int for one state, or a list of
ints, all equal to the units ``H``, as Keras' ``cell.state_size``). The output must be the first
new state, as for every built-in cell (``h``). The skeleton then gives it what the built-in layers
have: masks (a masked step carries every state), ``go_backwards``, ``return_sequences``,
``return_state``, ``initial_state``, ``stateful``, ``Bidirectional``, the probe key
``"<layer>/gates/h"`` and ``tlp.intervene`` edits of ``h``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from ..errors import InputError
from ..registry import register_module
from .base import ConfigMixin
from .recurrent import Recurrent, RecurrentConfig, States, StepEdit

__all__ = ["CellRNN", "CellRNNConfig", "CellGates", "cell_state_sizes"]


class CellGates(NamedTuple):
    """Per-step output of a user's cell, ``(N, L, H)`` in processing order (the carried one at masked steps)."""

    h: torch.Tensor


@dataclass(frozen=True)
class CellRNNConfig(RecurrentConfig):
    """The RNN layer's recurrent fields; ``hidden_size`` is the cell's units."""

    num_states: int = 1  # how many state tensors the cell carries (h first)


def cell_state_sizes(cell: nn.Module) -> list[int]:
    """The cell's ``state_size`` as a list of ints; ValueError when it is missing or malformed."""
    size = getattr(cell, "state_size", None)
    sizes = [size] if isinstance(size, int) else list(size) if isinstance(size, (list, tuple)) else None
    if not sizes or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes):
        raise ValueError(
            f"The cell module {type(cell).__name__} has state_size {size!r}. Expected a positive int or a list of "
            "positive ints (the size of each state, as Keras' cell.state_size)."
        )
    return sizes


@register_module("CellRNN")
class CellRNN(Recurrent, ConfigMixin, nn.Module):
    r"""A Keras ``RNN(cell)`` whose cell is the user's module ``cell``.

    For each step t (in processing order), with the skeleton's Keras rules around it:

    .. math::
        (o_t, s_t) = \mathrm{cell}(x_t, s_{t-1}), \quad o_t = s_t[0] = h_t

    Shapes: input ``(N, L, F)``, each state ``(N, H)``, output ``(N, L, H)`` with
    ``return_sequences`` else ``(N, H)``; ``return_state`` appends the final states.
    """

    Config = CellRNNConfig
    Gates = CellGates
    GATE_NAMES = ("h",)

    def __init__(self, config: CellRNNConfig, cell: nn.Module) -> None:
        nn.Module.__init__(self)
        self.config = config
        self.cell = cell
        self.STATE_NAMES = ("h",) + tuple(f"s{k}" for k in range(1, config.num_states))  # type: ignore[misc]
        self._fusable = False
        self._init_recurrent()

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> nn.Module:
        raise TypeError("CellRNN wraps a user's cell module; it cannot be rebuilt from a config.")

    def get_config(self) -> dict[str, Any]:
        raise TypeError(
            f"{self.describe()} runs a custom cell ({type(self.cell).__name__}) with no saved config. Models with "
            "custom_layers cannot be saved by tlp.save; save the state_dict instead."
        )

    def _input_projection(self, x: torch.Tensor) -> torch.Tensor:
        return x  # (N, L, F): the cell sees the raw step input

    def _cell(self, xp: torch.Tensor, states: States, edit: StepEdit | None) -> tuple[States, States]:
        out, new = self.cell(xp, list(states))  # out (N, H), new [(N, H), ...]
        new = tuple(new) if isinstance(new, (list, tuple)) else (new,)
        if len(new) != len(states) or any(not isinstance(s, torch.Tensor) or s.shape != states[0].shape for s in new):
            raise InputError(
                f"The cell of {self.describe()} returned states {[tuple(getattr(s, 'shape', ())) for s in new]}. "
                f"Expected {len(states)} tensors of shape {tuple(states[0].shape)} (its state_size)."
            )
        if out is not new[0] and not torch.equal(out, new[0]):
            raise InputError(
                f"The cell of {self.describe()} returned an output that is not its first state. Expected "
                "output == new_states[0], as for Keras' built-in cells (h). Fix: return h first in the states."
            )
        h = new[0] if edit is None else edit("h", new[0])
        return (h, *new[1:]), ()

    def extra_repr(self) -> str:
        cfg = self.config
        return f"{cfg.input_size}, {cfg.hidden_size}, states={cfg.num_states}, cell={type(self.cell).__name__}"
