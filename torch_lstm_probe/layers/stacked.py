"""Keras ``RNN(StackedRNNCells([cell_0, …, cell_n]))``: one recurrent layer per cell, run one after another.

Shape legend used in the comments of this file:

    N = batch size, L = time steps, F = input features, H_k = units of cell k.

Keras runs every cell at each step, cell k reading cell k-1's output of the same step. That is
the same as running whole layers in turn: layer k over every step of layer k-1's output
sequence, all sharing the input mask (a step that is masked is skipped by every cell). With
``go_backwards`` only the first layer reads backwards; it emits its sequence in processing
order (reversed time), which the later layers then read forwards, with the mask reversed to
match.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import torch
from torch import nn

from ..errors import InputError
from ..registry import build_module, register_module
from .base import ConfigMixin, HookPoint
from .recurrent import INITIAL_STATE_RULES

__all__ = ["StackedRecurrent", "StackedRecurrentConfig", "StackedGates"]


class StackedGates(NamedTuple):
    """The gates of every cell, each the cell layer's gates NamedTuple, all in processing order."""

    cells: tuple[Any, ...]  # LSTMGates / GRUGates / SimpleRNNGates of cell_0, cell_1, ...


@dataclass(frozen=True)
class StackedRecurrentConfig:
    # {"type": runtime recurrent type, "config": its config} per cell, in stack order. Every layer
    # but the last returns sequences; only the first may go backwards; their initial_state_rule is
    # "given" (this module picks the start states of all cells together).
    cells: tuple[dict[str, Any], ...]
    return_sequences: bool = False  # the last cell's output at every step (N, L, H_n), else the last (N, H_n)
    return_state: bool = False  # also return every cell's final states, cell by cell
    go_backwards: bool = False  # the first cell reads time in reverse; the sequence output stays reversed
    time_major: bool = False  # Keras 2 `time_major`: input and sequence output are (L, N, ·)
    stateful: bool = False  # every cell carries its final state to the next call
    initial_state_rule: str = "given"  # stateful + initial_state: "given" | "carried_unless_zero"


class StackedRecurrent(ConfigMixin, nn.Module):
    r"""Keras ``RNN(StackedRNNCells([...]))`` as recurrent layers ``cell_0 … cell_n`` run in turn.

    Shapes (batch-first; swap N and L when ``time_major``):

    ============================  ===============================================================
    input ``x``                   ``(N, L, F)``
    ``mask`` (optional, bool)     ``(N, L)``, True where a step is real
    ``initial_state`` (optional)  every cell's states, cell by cell, e.g. ``[h_0, c_0, h_1]`` for
                                  an LSTM cell then a GRU cell; each ``(N, H_k)``
    output                        ``(N, L, H_n)`` if ``return_sequences`` else ``(N, H_n)``
    with ``return_state``         ``(output, *states of cell_0, *states of cell_1, …)``
    ============================  ===============================================================

    A stateful layer given ``initial_state`` follows ``config.initial_state_rule`` over the
    carried states of all cells together, as Keras does for the one RNN layer.

    Gates: probe keys ``"/cell_<k>/gates/<g>"`` come from the cell layers' hook points, each in
    processing order (reversed time for ``go_backwards``); ``hook_mask`` sees the applied mask in
    input time order.
    """

    Config = StackedRecurrentConfig
    mask_mode = "custom"
    takes_mask = True

    def __init__(self, config: StackedRecurrentConfig) -> None:
        super().__init__()
        if not config.cells:
            raise ValueError("StackedRecurrent needs at least one cell.")
        if config.initial_state_rule not in INITIAL_STATE_RULES:
            raise ValueError(
                f"StackedRecurrent initial_state_rule must be one of {list(INITIAL_STATE_RULES)}. "
                f"Received {config.initial_state_rule!r}."
            )
        self.config = config
        for k, entry in enumerate(config.cells):
            self.add_module(f"cell_{k}", build_module(entry["type"], dict(entry["config"])))
        self.hook_mask = HookPoint()  # sees the bool (N, L) mask applied, in input time order
        self._keras_name = ""

    @property
    def keras_name(self) -> str:  # type: ignore[override]
        return self._keras_name

    @keras_name.setter
    def keras_name(self, path: str) -> None:
        """The Keras name of the RNN layer; each cell layer is named ``<path>/cell_<k>`` in messages."""
        self._keras_name = path
        for k, layer in enumerate(self.layers):
            layer.keras_name = f"{path}/cell_{k}" if path else ""  # type: ignore[assignment]

    # ------------------------------------------------------------------ public API
    @property
    def layers(self) -> list[nn.Module]:
        """The cell layers ``cell_0 … cell_n`` in stack order."""
        return [getattr(self, f"cell_{k}") for k in range(len(self.config.cells))]

    @property
    def STATE_NAMES(self) -> tuple[str, ...]:  # the name the recurrent layers use
        """What ``return_state`` returns after the output: ``cell_<k>/<state>`` for every cell."""
        return tuple(f"cell_{k}/{s}" for k, layer in enumerate(self.layers) for s in layer.STATE_NAMES)  # type: ignore[union-attr]

    def reset_states(self) -> None:
        """Zeros the carried state of every cell (no-op unless stateful)."""
        for layer in self.layers:
            layer.reset_states()  # type: ignore[operator]

    def compute_mask(self, x: torch.Tensor, mask: torch.Tensor | None) -> Any:
        """The input mask on a sequence output; none on a last output and on the states."""
        out_mask = mask if (self.config.return_sequences and mask is not None) else None
        if self.config.return_state:
            return (out_mask,) + (None,) * len(self.STATE_NAMES)
        return out_mask

    def gate_points(self) -> list[tuple[str, HookPoint]]:
        """``(probe key suffix, hook point)``: every cell's gates as ``/cell_<k>/gates/<g>``, then the mask."""
        points: list[tuple[str, HookPoint]] = []
        for k, layer in enumerate(self.layers):
            inner = layer.gate_points()  # type: ignore[operator]
            points += [(f"/cell_{k}{suffix}", hook) for suffix, hook in inner if suffix != "/mask"]
        return points + [("/mask", self.hook_mask)]

    def forward(
        self,
        x: torch.Tensor,
        initial_state: Sequence[torch.Tensor] | torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        return_gates: bool = False,
        apply_mask: bool = True,
    ) -> Any:
        """Runs the cells in turn on ``x`` in Keras layout.

        Args:
            x: ``(N, L, F)`` (``(L, N, F)`` when ``time_major``).
            initial_state: optional, every cell's states, cell by cell.
            mask: optional bool ``(N, L)`` (``(L, N)`` when ``time_major``); False steps are skipped
                by every cell.
            apply_mask: False runs unmasked whatever ``mask`` says (Keras 3 with ``initial_state``
                tensors and no explicit mask); the graph executor still hands the input mask over
                for the output mask.
            return_gates: also return a :class:`StackedGates`.

        Returns:
            The Keras output (a tensor, or ``(output, *states)`` with ``return_state``), and with
            ``return_gates`` a pair ``(that, gates)``.
        """
        cfg = self.config
        if not apply_mask:
            mask = None
        starts = self._start_states(x, initial_state)
        time_axis = 0 if cfg.time_major else 1
        if mask is not None and self.hook_mask.has_hooks():
            self.hook_mask(mask.transpose(0, 1) if cfg.time_major else mask)
        # Cells after the first read the first cell's output, which is in processing order.
        later_mask = mask.flip(time_axis) if (mask is not None and cfg.go_backwards) else mask
        y = x
        states: list[torch.Tensor] = []
        gates: list[Any] = []
        for k, layer in enumerate(self.layers):
            kwargs: dict[str, Any] = {}
            if mask is not None:
                kwargs["mask"] = mask if k == 0 else later_mask
            out = layer(y, initial_state=starts[k], return_gates=return_gates, **kwargs)
            if return_gates:
                out, cell_gates = out
                gates.append(cell_gates)
            if cfg.return_state:
                y, *cell_states = out  # y: (N, L, H_k), or (N, H_n) for the last cell
                states += cell_states  # each (N, H_k)
            else:
                y = out
        result: Any = (y, *states) if cfg.return_state else y
        return (result, StackedGates(tuple(gates))) if return_gates else result

    # ------------------------------------------------------------------ internals
    def _start_states(
        self, x: torch.Tensor, initial_state: Sequence[torch.Tensor] | torch.Tensor | None
    ) -> list[list[torch.Tensor] | None]:
        """The ``initial_state`` of each cell layer: the given states split per cell, or None.

        With ``"carried_unless_zero"`` a stateful layer starts every cell from its carried states
        when any element of any cell's carried state is non-zero, else from the given ones (one
        test over all cells, as tf_keras makes it for the one RNN layer); a ``torch.where`` on a
        0-d flag keeps the call traceable.
        """
        layers = self.layers
        if initial_state is None:
            return [None] * len(layers)
        given = [initial_state] if isinstance(initial_state, torch.Tensor) else list(initial_state)
        counts = [len(layer.STATE_NAMES) for layer in layers]  # type: ignore[arg-type]
        if len(given) != sum(counts):
            raise InputError(
                f"{self.describe()} takes initial_state with every cell's states, cell by cell "
                f"([{', '.join(self.STATE_NAMES)}]: {sum(counts)} tensors). Received {len(given)}."
            )
        if self.config.stateful and self.config.initial_state_rule == "carried_unless_zero":
            carried = [s for layer in layers for s in layer._carried_states(x)]  # type: ignore[operator]
            for name, c, g in zip(self.STATE_NAMES, carried, given):
                if tuple(g.shape) != tuple(c.shape):
                    raise InputError(
                        f"{self.describe()}: initial state {name} has shape {tuple(g.shape)}. "
                        f"Expected {tuple(c.shape)} (batch, units)."
                    )
            nonzero = torch.stack([(state != 0).any() for state in carried]).any()  # () bool
            given = [torch.where(nonzero, c, g.to(c.dtype)) for c, g in zip(carried, given)]
        starts: list[list[torch.Tensor] | None] = []
        offset = 0
        for count in counts:
            starts.append(given[offset : offset + count])
            offset += count
        return starts

    def extra_repr(self) -> str:
        cfg = self.config
        parts = [f"cells={len(cfg.cells)}"]
        for key in ("return_sequences", "return_state", "go_backwards", "time_major", "stateful"):
            if getattr(cfg, key):
                parts.append(f"{key}=True")
        return ", ".join(parts)


register_module("StackedRecurrent")(StackedRecurrent)
