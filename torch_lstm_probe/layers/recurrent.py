"""The one recurrent skeleton that LSTM, GRU and SimpleRNN specialise: masks, ``go_backwards``,
``time_major``, stateful buffers, ``initial_state``, ``return_state``, gate hook points, the fused
kernel (plain and under a contiguous mask) and the exact step loop are written here once; a
subclass adds its cell (one step, its state and gate names). Shape legend used in the comments:

    N = batch size, L = time steps, F = input features, H = units (hidden size).

Tensors are batch-first inside (``(N, L, ·)``) and in Keras layout at the border.

Where the Keras generations differ at call time, the config names the rule to follow:

=========================================  ===============================================
``initial_state_rule``                     which state a stateful call given ``initial_state``
                                           starts from
=========================================  ===============================================
``"given"`` (Keras 3, Keras ≤ 2.3)         always the given ``initial_state``
``"carried_unless_zero"`` (tf.keras,       the carried state if any element of any carried
tf_keras)                                  state tensor is non-zero, else the given one
=========================================  ===============================================

A call with ``apply_mask=False`` runs unmasked although it receives the input mask (which
still becomes its output mask): Keras 3 passes the automatic mask only to a layer called with
exactly one tensor argument, so an RNN called with ``initial_state`` tensors runs unmasked.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..errors import InputError
from ..masking import (
    Compaction,
    compact_rows,
    compaction,
    expand_gates,
    expand_outputs,
    expand_states,
    last_real_step,
)
from ..tracing import is_tracing
from .base import HookPoint, check_float_input, run_fused_kernel

__all__ = [
    "INITIAL_STATE_RULES",
    "CellStep",
    "Edit",
    "Recurrent",
    "RecurrentConfig",
    "RecurrentMixin",
    "States",
    "StepEdit",
]

Edit = Callable[[int, torch.Tensor], torch.Tensor]  # (step in processing order, value (N, H)) -> value (N, H)
StepEdit = Callable[[str, torch.Tensor], torch.Tensor]  # one step's edit: (gate name, value (N, H)) -> value (N, H)
States = tuple[torch.Tensor, ...]  # a cell's states (or gates), each (N, H)
CellStep = Callable[[torch.Tensor, States, "StepEdit | None"], tuple[States, States]]  # one step, as _cell

# How a stateful layer called with initial_state picks its start state (see the module docstring).
INITIAL_STATE_RULES = ("given", "carried_unless_zero")


@dataclass(frozen=True)
class RecurrentConfig:
    """The fields every Keras recurrent layer has; a cell's config adds its own after these."""

    input_size: int  # F: features per time step (rows of the Keras kernel)
    hidden_size: int  # H: Keras `units`
    activation: str = "tanh"  # runtime activation name of the candidate (and of act(c) in an LSTM)
    use_bias: bool = True  # Keras `use_bias`
    return_sequences: bool = False  # output every step (N, L, H) instead of the last (N, H)
    return_state: bool = False  # also return the final states: [output, *states]
    go_backwards: bool = False  # process time in reverse; sequence output stays reversed
    time_major: bool = False  # Keras 2 `time_major`: input and sequence output are (L, N, ·)
    stateful: bool = False  # carry the final state to the next call, per batch row
    batch_size: int | None = None  # the fixed batch size of a stateful layer
    zero_output_for_mask: bool = False  # masked steps output 0 instead of the previous output
    initial_state_rule: str = "given"  # stateful + initial_state: "given" | "carried_unless_zero"


class RecurrentMixin:
    """What every Keras recurrent layer here shares, whatever its cell: gate hook points, the
    gate path switch, stateful buffers ``state_<s>`` for each state, the output masks, and the
    checks of ``initial_state`` and ``mask``.

    A subclass sets ``STATE_NAMES`` (``("h",)`` or ``("h", "c")``) and ``GATE_NAMES`` and calls
    :meth:`_init_recurrent` after its parent's ``__init__``.
    """

    STATE_NAMES: ClassVar[tuple[str, ...]] = ("h",)  # what return_state returns after the output
    GATE_NAMES: ClassVar[tuple[str, ...]]
    config: Any
    gate_path: str
    hook_mask: HookPoint
    describe: Any  # ConfigMixin.describe in the concrete classes
    mask_mode = "custom"
    takes_mask = True

    def _init_recurrent(self) -> None:
        """Hook points, the gate path switch and stateful buffers (call after the parent init)."""
        cfg = self.config
        if cfg.initial_state_rule not in INITIAL_STATE_RULES:
            raise ValueError(
                f"{type(self).__name__} initial_state_rule must be one of {list(INITIAL_STATE_RULES)}. "
                f"Received {cfg.initial_state_rule!r}."
            )
        for name in self.GATE_NAMES:
            self.add_module(f"hook_{name}", HookPoint())  # type: ignore[attr-defined]
        self.hook_mask = HookPoint()  # sees the bool (N, L) mask applied, in input time order
        self.gate_path = "auto"  # how gates are computed: "auto", "fused" or "loop"
        if cfg.stateful:
            if cfg.batch_size is None:
                raise ValueError(f"A stateful {type(self).__name__} needs its fixed batch_size.")
            for state in self.STATE_NAMES:
                zeros = torch.zeros(cfg.batch_size, cfg.hidden_size)
                self.register_buffer(f"state_{state}", zeros, persistent=False)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ public API
    def reset_states(self) -> None:
        """Zeros the carried state of a stateful layer (no-op otherwise)."""
        if self.config.stateful:
            for state in self.STATE_NAMES:
                getattr(self, f"state_{state}").zero_()

    def compute_mask(self, x: torch.Tensor, mask: torch.Tensor | None) -> Any:
        """The mask of each output: the input mask for a sequence output, else none."""
        out_mask = mask if (self.config.return_sequences and mask is not None) else None
        if self.config.return_state:
            return (out_mask,) + (None,) * len(self.STATE_NAMES)
        return out_mask

    def gate_hooks_active(self) -> bool:
        return any(getattr(self, f"hook_{g}").has_hooks() for g in self.GATE_NAMES)

    def gate_points(self) -> list[tuple[str, HookPoint]]:
        """``(probe key suffix, hook point)`` for every gate and the applied mask."""
        points = [(f"/gates/{g}", getattr(self, f"hook_{g}")) for g in self.GATE_NAMES]
        return points + [("/mask", self.hook_mask)]

    # ------------------------------------------------------------------ shared internals
    def _gates_after_fused(self, x: torch.Tensor) -> bool:
        """Whether gates are re-derived after a fused pass (else the step loop computes them).

        ``gate_path`` is ``"auto"`` (fused on accelerators; on CPU the step loop is faster),
        ``"fused"`` or ``"loop"``. Layers without a fused kernel always use the loop.
        """
        if self.gate_path == "auto":
            return x.device.type != "cpu"
        return self.gate_path == "fused"

    def _initial_states(
        self, x: torch.Tensor, n: int, initial_state: Sequence[torch.Tensor] | torch.Tensor | None
    ) -> tuple[torch.Tensor, ...]:
        """The states a call starts from: given, carried (stateful) or zeros; each ``(N, H)``.

        A stateful layer given ``initial_state`` follows ``config.initial_state_rule``: with
        ``"carried_unless_zero"`` it starts from the carried states when any of their elements
        is non-zero (one test over every state tensor and row, as tf_keras' ``_process_inputs``
        counts them), else from the given ones. The choice is a ``torch.where`` on a 0-d flag,
        so the call stays traceable.
        """
        cfg = self.config
        names = self.STATE_NAMES
        if cfg.stateful and n != cfg.batch_size:
            raise InputError(
                f"{self.describe()} is stateful with a batch size fixed at {cfg.batch_size} by the file. "
                f"Received a batch of {n}. Fix: feed batches of exactly {cfg.batch_size} rows."
            )
        if initial_state is not None:
            states = [initial_state] if isinstance(initial_state, torch.Tensor) else list(initial_state)
            if len(states) != len(names) or (isinstance(initial_state, torch.Tensor) and len(names) != 1):
                raise InputError(
                    f"{self.describe()} takes initial_state=[{', '.join(names)}]. Received {len(states)} tensors."
                )
            for name, state in zip(names, states):
                if tuple(state.shape) != (n, cfg.hidden_size):
                    raise InputError(
                        f"{self.describe()}: initial state {name} has shape {tuple(state.shape)}. "
                        f"Expected ({n}, {cfg.hidden_size}) (batch, units)."
                    )
            given = tuple(state.to(x.dtype).contiguous() for state in states)
            if not (cfg.stateful and cfg.initial_state_rule == "carried_unless_zero"):
                return given
            carried = self._carried_states(x)
            nonzero = torch.stack([(state != 0).any() for state in carried]).any()  # () bool
            return tuple(torch.where(nonzero, c, g) for c, g in zip(carried, given))
        if cfg.stateful:
            return self._carried_states(x)
        zeros = x.new_zeros(n, cfg.hidden_size)
        return (zeros,) * len(names)

    def _carried_states(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The carried states of a stateful layer, each ``(N, H)`` in ``x``'s dtype."""
        return tuple(getattr(self, f"state_{name}").to(x.dtype) for name in self.STATE_NAMES)

    def _store_states(self, *states: torch.Tensor) -> None:
        """A stateful layer keeps its final states for the next call."""
        if self.config.stateful:
            for name, state in zip(self.STATE_NAMES, states):
                getattr(self, f"state_{name}").copy_(state.detach())

    def _check_mask(self, mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if tuple(mask.shape) != tuple(x.shape[:2]):
            raise InputError(
                f"{self.describe()}: mask has shape {tuple(mask.shape)}. Expected {tuple(x.shape[:2])} (batch, time)."
            )
        return mask.to(device=x.device, dtype=torch.bool)


class Recurrent(RecurrentMixin):
    """Keras RNN semantics for any cell, around a fused PyTorch kernel: the one recurrent skeleton.

    A subclass (also an ``nn.RNNBase``) provides:

    * ``Gates``: a NamedTuple of the cell's gates followed by its states (``GATE_STATES``, in
      gate order); ``GATE_NAMES`` its field names; ``STATE_NAMES`` the states in Keras'
      ``return_state`` order, ``h`` (the output) first;
    * ``_torch_rnn``: the ``nn.RNNBase`` subclass whose ``forward`` is the fused kernel;
    * ``_input_projection(x)``: the input part of every pre-activation, ``(N, L, kH)``;
    * ``_cell(xp_t, states)``: one exact step, returning ``(new states, (gate, ...))`` (the
      gates without the states);
    * ``_gates_from_outputs(x, states0, seq)``: every gate of an unmasked call, given all outputs;
    * optionally ``_fast_loop(x, states0, want_gates)``: a faster unmasked loop, or ``None``.

    The subclass sets ``self._fusable`` (may the fused kernel compute this layer) and calls
    ``_init_recurrent()`` for the hook points and stateful buffers.
    """

    Gates: ClassVar[type]
    GATE_STATES: ClassVar[tuple[str, ...]] = ("h",)
    _torch_rnn: ClassVar[type[nn.RNNBase]]
    _fusable: bool

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        initial_state: Sequence[torch.Tensor] | torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        return_gates: bool = False,
        apply_mask: bool = True,
        edits: Mapping[str, Edit] | None = None,
    ) -> Any:
        """Runs the layer on ``x`` in Keras layout.

        Args:
            x: ``(N, L, F)`` (``(L, N, F)`` when ``time_major``).
            edits: ``{gate name: fn(step, value) -> value}``: inside the exact step loop, each
                named gate or state of every step (processing order) at which some row is
                unmasked is replaced by ``fn``'s result before the step goes on, so the edit
                flows into the rest of the step, the later steps and the output. ``None`` or
                empty: no edit, and the fused paths run as usual.
            initial_state: optional states in ``STATE_NAMES`` order, each ``(N, H)`` (a single
                state may be passed as one tensor).
            mask: optional bool ``(N, L)`` (``(L, N)`` when ``time_major``); False steps are
                skipped and carry the state, as in Keras.
            apply_mask: False runs the layer unmasked whatever ``mask`` says; the graph executor
                still hands the input mask over for the output mask (Keras 3 runs an RNN called
                with ``initial_state`` tensors unmasked but passes its input mask on).
            return_gates: also return the gates NamedTuple of the layer.

        Returns:
            The Keras output (a tensor, or ``(output, *states)`` with ``return_state``), and with
            ``return_gates`` a pair ``(that, gates)``.
        """
        cfg = self.config
        if not apply_mask:
            mask = None
        check_float_input(self, x, 3, cfg.input_size, "a 3-D input (batch, time, features)")  # type: ignore[arg-type]
        if cfg.time_major:
            x = x.transpose(0, 1)  # (N, L, F)
            mask = mask.transpose(0, 1) if mask is not None else None
        states0 = self._initial_states(x, x.shape[0], initial_state)  # each (N, H)
        if mask is not None:
            mask = self._check_mask(mask, x)
            if self.hook_mask.has_hooks():
                self.hook_mask(mask)
        if cfg.go_backwards:
            x = x.flip(1)
            mask = mask.flip(1) if mask is not None else None

        want_gates = return_gates or self.gate_hooks_active()
        fused = not edits and self._fusable and (not want_gates or self._gates_after_fused(x))
        if edits:
            seq, states, last, gates = self._step_loop(x, states0, mask, want_gates, self._check_edits(edits))
        elif fused and mask is None:
            seq, states = self._fused(x, states0)  # seq (N, L, H)
            gates = self._gates_from_outputs(x, states0, seq) if want_gates else None
            last = states[0]
        elif fused:
            seq, states, last, gates = self._fused_masked(x, states0, compaction(mask), want_gates)  # type: ignore[arg-type]
        else:
            run = self._fast_loop(x, states0, want_gates) if mask is None else None
            seq, states, last, gates = run if run is not None else self._step_loop(x, states0, mask, want_gates)

        if gates is not None and self.gate_hooks_active():
            seq, states, last, gates = self._fire_gate_hooks(x, states0, mask, edits, (seq, states, last, gates))
        self._store_states(*states)

        if cfg.return_sequences:
            out = seq.transpose(0, 1) if cfg.time_major else seq
        else:
            out = last
        result: Any = (out, *states) if cfg.return_state else out
        return (result, gates) if return_gates else result

    # ------------------------------------------------------------------ internals
    def _input_projection(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} defines no input projection")

    def _cell(self, xp: torch.Tensor, states: States, edit: StepEdit | None) -> tuple[States, States]:
        """One exact step; ``edit(name, value)``, when given, replaces each gate and state as it is computed."""
        raise NotImplementedError(f"{type(self).__name__} defines no cell step")

    def _gates_from_outputs(self, x: torch.Tensor, states0: tuple[torch.Tensor, ...], seq: torch.Tensor) -> Any:
        raise NotImplementedError(f"{type(self).__name__} cannot derive gates from the fused outputs")

    def _fire_gate_hooks(
        self,
        x: torch.Tensor,
        states0: tuple[torch.Tensor, ...],
        mask: torch.Tensor | None,
        edits: Mapping[str, Edit] | None,
        run: tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor, Any],
        cell: CellStep | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor, Any]:
        """Passes each gate through its hook point, in gate order; hooks may replace gates.

        Every hook point fires on ``run``. A hook that returns a tensor makes it the gate: the
        exact step loop then runs once more with every returned tensor substituted whole, at
        every step (``edits`` as before, plus ``{name: lambda t, v: returned[:, t]}``), and the
        hook points that replaced nothing fire again on that run, so readers record the edited
        run. Returns ``run`` or the rerun.
        """
        substitutes: dict[str, Edit] = {}
        for name, value in zip(self.GATE_NAMES, run[3]):  # each (N, L, H), processing order
            out = getattr(self, f"hook_{name}")(value)
            if out is not value:
                where = f"A forward hook on hook_{name} of {self.describe()}"
                wanted = "None (to read the gate) or a tensor of shape {shape} (batch, time, units) to replace it"
                substitutes[name] = functools.partial(_substitute, _checked_like(value, out, where, wanted))
        if not substitutes:
            return run
        run = self._step_loop(x, states0, mask, True, {**(edits or {}), **substitutes}, cell)
        for name, value in zip(self.GATE_NAMES, run[3]):
            if name not in substitutes and getattr(self, f"hook_{name}")(value) is not value:
                raise InputError(
                    f"A forward hook on hook_{name} of {self.describe()} returned a tensor only on the rerun that "
                    f"another gate's replacement caused ({', '.join(substitutes)}). Gate hooks that replace must "
                    "do so on their first call. Fix: return the replacement every time, or None."
                )
        return run

    def _check_edits(self, edits: Mapping[str, Edit]) -> dict[str, Edit]:
        unknown = sorted(set(edits) - set(self.GATE_NAMES))
        if unknown:
            raise InputError(
                f"{self.describe()} has no gate or state {', '.join(map(repr, unknown))} to edit. "
                f"Expected some of {', '.join(self.GATE_NAMES)}."
            )
        for name, fn in edits.items():
            if not callable(fn):
                raise InputError(f"The edit of {name!r} in {self.describe()} is {fn!r}. Expected fn(step, value).")
        return dict(edits)

    def _fast_loop(self, x: torch.Tensor, states0: tuple[torch.Tensor, ...], want_gates: bool) -> Any:
        """A cell's own faster unmasked loop ``(seq, states, last, gates)``, or ``None`` for :meth:`_step_loop`."""
        return None

    def _fused(self, x: Any, states0: tuple[torch.Tensor, ...]) -> tuple[Any, tuple[torch.Tensor, ...]]:
        """The fused kernel on ``x`` (a tensor or a PackedSequence): ``(outputs, final states)``."""
        hx = states0[0].unsqueeze(0) if len(states0) == 1 else tuple(s.unsqueeze(0) for s in states0)
        y, hn = run_fused_kernel(self, self._torch_rnn.forward, x, hx)
        finals = (hn[0],) if isinstance(hn, torch.Tensor) else tuple(s[0] for s in hn)  # each (N, H)
        return y, finals

    def _step_loop(
        self,
        x: torch.Tensor,
        states: tuple[torch.Tensor, ...],
        mask: torch.Tensor | None,
        want_gates: bool,
        edits: dict[str, Edit] | None = None,
        cell: CellStep | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor, Any]:
        """Exact loop over time with the input projection hoisted out of the loop.

        At a masked step every state is carried, the output is the previous output (or 0 with
        ``zero_output_for_mask``), and the gates read 0, as in Keras. ``cell`` is the step to run
        (default :meth:`_cell`): a layer whose step depends on the call (a ConvLSTM's spatial grid)
        binds it per call and passes it here, and :meth:`_gates_view` gets it back.
        """
        step = self._cell if cell is None else cell
        n, steps, _ = x.shape
        hidden = self.config.hidden_size
        zero_output = self.config.zero_output_for_mask
        inner_count = len(self.GATE_NAMES) - len(self.GATE_STATES)
        state_at = [self.STATE_NAMES.index(name) for name in self.GATE_STATES]
        xp = self._input_projection(x)  # (N, L, kH)
        seq = x.new_empty(n, steps, hidden)  # (N, L, H)
        if want_gates:
            buf = x.new_empty(len(self.GATE_NAMES), n, steps, hidden)  # every gate, each (N, L, H)
        if mask is not None:
            prev_out = x.new_zeros(n, hidden)  # Keras' "previous output" starts at 0
        for t in range(steps):
            edit = None
            if edits and (mask is None or bool(mask[:, t].any())):
                edit = _step_edit(self, edits, t)
            new, inner = step(xp[:, t], states, edit)  # states (N, H) each, gates without states
            if mask is None:
                states = new
                seq[:, t] = new[0]
            else:
                m = mask[:, t, None]  # (N, 1)
                states = tuple(torch.where(m, a, b) for a, b in zip(new, states))
                out_t = torch.where(m, new[0], torch.zeros_like(new[0]) if zero_output else prev_out)
                seq[:, t] = out_t
                prev_out = out_t
                if want_gates:
                    inner = tuple(torch.where(m, v, torch.zeros_like(v)) for v in inner)
            if want_gates:
                for k, v in enumerate(inner):
                    buf[k, :, t] = v
                for k, at in enumerate(state_at):
                    buf[inner_count + k, :, t] = states[at]
        last = states[0] if mask is None else seq[:, -1]
        gates = self._gates_view(self.Gates(*buf.unbind(0)), cell) if want_gates else None
        return seq, states, last, gates

    def _gates_view(self, gates: Any, cell: CellStep | None) -> Any:
        """The gates of a step-loop run as the layer shows them (hooks, ``return_gates``): as they are."""
        return gates

    def _fused_masked(
        self, x: torch.Tensor, states0: tuple[torch.Tensor, ...], comp: Compaction, want_gates: bool
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor, Any]:
        """Any mask on the fused kernel (see :mod:`torch_lstm_probe.masking`).

        Each row's real steps are moved to the front; the fused kernel then runs either on the
        packed sequence (when a final state other than the output is needed: ``return_state`` or
        ``stateful`` with several states; under tracing that state comes from the gates instead)
        or on the whole compact tensor, whose steps past each row's end are never read (the
        final ``h`` is then the output at the row's last real step). Every step is then put back
        in place, masked steps filled as Keras does.
        """
        cfg = self.config
        xs = compact_rows(x, comp)  # (N, L, F), real steps first
        empty = (comp.length == 0)[:, None]  # (N, 1): fully masked rows keep the initial state
        finals: list[torch.Tensor | None]
        several = len(states0) > 1 and (cfg.return_state or cfg.stateful)
        if several and not is_tracing():
            lengths = comp.length.clamp(min=1).cpu()
            packed = pack_padded_sequence(xs, lengths, batch_first=True, enforce_sorted=False)
            out, ends = self._fused(packed, states0)
            y, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])  # (N, L, H)
            finals = [torch.where(empty, s0, s) for s0, s in zip(states0, ends)]
        else:
            y, _ = self._fused(xs, states0)  # (N, L, H); steps past each row's length hold unused values
            finals = [torch.where(empty, states0[0], last_real_step(y, comp))] + [None] * (len(states0) - 1)
        g = self._gates_from_outputs(xs, states0, y) if (want_gates or (several and is_tracing())) else None
        inner_count = len(self.GATE_NAMES) - len(self.GATE_STATES)
        if g is not None:  # states other than the output, at each row's last real step
            for name, value in zip(self.GATE_STATES, g[inner_count:]):
                at = self.STATE_NAMES.index(name)
                if finals[at] is None:
                    finals[at] = torch.where(empty, states0[at], last_real_step(value, comp))
        h = finals[0]
        assert h is not None
        final_out = torch.where(empty, torch.zeros_like(h), h)
        gates = None
        if want_gates and g is not None:
            held = [
                expand_states(value, comp, states0[self.STATE_NAMES.index(name)])
                for name, value in zip(self.GATE_STATES, g[inner_count:])
            ]
            gates = self.Gates(*(expand_gates(v, comp) for v in g[:inner_count]), *held)
        # Last: with right padding this writes into y, which the gates above read.
        seq = expand_outputs(y, comp, final_out, cfg.zero_output_for_mask)
        return seq, tuple(finals), seq[:, -1], gates  # type: ignore[arg-type]

    def _repr_parts(self, activations: Sequence[str]) -> list[str]:
        cfg = self.config
        parts = [f"{cfg.input_size}, {cfg.hidden_size}"]
        for key in activations:
            parts.append(f"{key}={getattr(cfg, key)!r}")
        for key in ("use_bias", "return_sequences", "return_state", "go_backwards", "time_major", "stateful"):
            default = key == "use_bias"
            if getattr(cfg, key) != default:
                parts.append(f"{key}={getattr(cfg, key)}")
        return parts


def _substitute(values: torch.Tensor, step: int, value: torch.Tensor) -> torch.Tensor:
    """The edit that replaces a gate by ``values[:, step]`` (``values`` is ``(N, L, H)``)."""
    return values[:, step]


def _step_edit(layer: Any, edits: dict[str, Edit], step: int) -> Callable[[str, torch.Tensor], torch.Tensor]:
    """The edit of one step: ``edits[name](step, value)`` where ``name`` is edited, checked to keep its shape."""

    def edit(name: str, value: torch.Tensor) -> torch.Tensor:
        fn = edits.get(name)
        if fn is None:
            return value
        where = f"The edit of {name!r} in {layer.describe()} at step {step}"
        return _checked_like(value, fn(step, value), where, "a tensor of shape {shape} (batch, units)")

    return edit


def _checked_like(value: torch.Tensor, out: Any, where: str, wanted: str) -> torch.Tensor:
    """``out`` in ``value``'s dtype if it is a tensor of ``value``'s shape, else an InputError
    "``where`` returned … Expected ``wanted``" (``{shape}`` in ``wanted`` is ``value``'s shape)."""
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(value.shape):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(f"{where} returned {got}. Expected {wanted.format(shape=tuple(value.shape))}.")
    return out.to(value.dtype)
