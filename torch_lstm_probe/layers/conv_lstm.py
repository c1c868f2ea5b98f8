"""Keras ``ConvLSTM1D``/``ConvLSTM2D``/``ConvLSTM3D``: an LSTM whose gates are convolutions, on the
recurrent skeleton.

Shape legend used in the comments of this file:

    N = batch size, L = time steps, C = input channels, F = filters,
    S = the input's spatial sizes ``(W,)``, ``(H, W)`` or ``(D, H, W)``,
    T = the state's spatial sizes (the input convolution's output), P = prod(T) positions.

At the border tensors are in Keras layout: ``(N, L, *S, C)`` in and ``(N, L, *T, F)`` out for
``channels_last``, ``(N, L, C, *S)`` and ``(N, L, F, *T)`` for ``channels_first``. Inside, each
spatial position of the state is one row of the skeleton: the step loop runs on ``(N·P, L, 4F)``
input projections and ``(N·P, F)`` states, so the masks, ``go_backwards``, stateful states,
``initial_state``, edits and gate hooks are the skeleton's, per position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..activations import get_activation
from ..errors import InputError
from ..registry import register_module
from .base import ConfigMixin
from .conv import same_padding
from .recurrent import Edit, Recurrent, RecurrentConfig, States, StepEdit

__all__ = ["ConvLSTM", "ConvLSTMConfig", "ConvLSTMGates", "conv_lstm_output_size"]

_CONV: dict[int, Callable[..., torch.Tensor]] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_AXES = {1: ("steps",), 2: ("height", "width"), 3: ("depth", "height", "width")}


class ConvLSTMGates(NamedTuple):
    """Per-step gates and states of one ConvLSTM call as feature maps, each ``(N, L, *T, F)``
    (channels last whatever the layer's ``data_format``), in processing order.

    At a masked step (or masked position) ``i f g o`` are 0 and ``c h`` hold the carried state.
    """

    i: torch.Tensor  # input gate σ(z_i)
    f: torch.Tensor  # forget gate σ(z_f)
    g: torch.Tensor  # candidate act(z_c)
    o: torch.Tensor  # output gate σ(z_o)
    c: torch.Tensor  # cell state after the step
    h: torch.Tensor  # hidden state after the step


@dataclass(frozen=True)
class ConvLSTMConfig(RecurrentConfig):
    """A ConvLSTM's config: the recurrent fields (:class:`RecurrentConfig`, with ``input_size`` the
    input channels C and ``hidden_size`` the filters F) and:"""

    rank: int = 2  # spatial axes: 1, 2 or 3 (ConvLSTM1D/2D/3D)
    kernel_size: tuple[int, ...] = (3, 3)  # Keras `kernel_size`, one per spatial axis
    strides: tuple[int, ...] = (1, 1)  # Keras `strides` of the input convolution
    dilation: tuple[int, ...] = (1, 1)  # Keras `dilation_rate` of the input convolution
    padding: str = "valid"  # input convolution: "valid" | "same" (TensorFlow's split)
    channels_first: bool = False  # Keras data_format "channels_first"
    recurrent_activation: str = "sigmoid"  # runtime activation name, used for i, f, o


def conv_lstm_output_size(size: int, kernel: int, stride: int, dilation: int, padding: str) -> int:
    """The state's size on one spatial axis: ``ceil(S / s)`` for ``"same"``,
    ``ceil((S - (k - 1) d) / s)`` for ``"valid"``."""
    if padding == "same":
        return math.ceil(size / stride)
    return math.ceil((size - (kernel - 1) * dilation) / stride)


class ConvLSTM(Recurrent, ConfigMixin, nn.Module):
    r"""A Keras ``ConvLSTM1D/2D/3D`` layer with Keras semantics.

    For each step t (in processing order), with ``*`` a convolution and the gate blocks packed
    ``[i, f, c, o]`` as in Keras:

    .. math::
        z_t = W * x_t + b + U *_{same} h_{t-1} \\
        i_t = σ(z_i),\ f_t = σ(z_f),\ g_t = act(z_c),\ o_t = σ(z_o) \\
        c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t \\
        h_t = o_t ⊙ act(c_t)

    where ``W * x_t`` uses the layer's ``strides``, ``dilation`` and ``padding`` (``"same"``
    split as TensorFlow does), and ``U *_{same} h`` is always stride 1, no dilation, padding
    ``"same"``; σ is ``recurrent_activation`` and act is ``activation``. Parameters:
    ``weight_ih`` ``(4F, C, *k)`` is the Keras ``kernel`` ``(*k, C, 4F)`` moved; ``weight_hh``
    ``(4F, F, *k)`` the ``recurrent_kernel`` ``(*k, F, 4F)``; ``bias`` ``(4F,)``.

    Shapes (channels last; channels first puts C or F right after L):

    ============================  ===========================================
    input ``x``                   ``(N, L, *S, C)``
    ``mask`` (optional, bool)     ``(N, L)``, or ``(N, L, *T)`` per position
    ``initial_state`` (optional)  ``[h_0, c_0]``, each ``(N, *T, F)``
    output                        ``(N, L, *T, F)`` if ``return_sequences`` else ``(N, *T, F)``
    with ``return_state``         ``(output, h_n, c_n)``, states ``(N, *T, F)``
    ============================  ===========================================

    Gates (``return_gates=True`` or a hook on ``hook_i … hook_h``) are :class:`ConvLSTMGates`;
    ``edits`` take and return one step's map ``(N, *T, F)``.
    """

    Config = ConvLSTMConfig
    Gates = ConvLSTMGates
    STATE_NAMES = ("h", "c")
    GATE_NAMES = ("i", "f", "g", "o", "c", "h")
    GATE_STATES = ("c", "h")

    def __init__(self, config: ConvLSTMConfig) -> None:
        super().__init__()
        _check_config(config)
        self.config = config
        k, filters = tuple(config.kernel_size), config.hidden_size
        self.weight_ih = nn.Parameter(torch.zeros(4 * filters, config.input_size, *k))  # (4F, C, *k)
        self.weight_hh = nn.Parameter(torch.zeros(4 * filters, filters, *k))  # (4F, F, *k)
        self.bias = nn.Parameter(torch.zeros(4 * filters)) if config.use_bias else None  # (4F,)
        self._act = get_activation(config.activation)
        self._ract = get_activation(config.recurrent_activation)
        self._fusable = False
        self._init_recurrent()
        if config.stateful:  # sized by the first call: (N, *T, F) once a state is carried
            for name in self.STATE_NAMES:
                self.register_buffer(f"state_{name}", torch.zeros(0), persistent=False)

    # ------------------------------------------------------------------ public API
    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        initial_state: Sequence[torch.Tensor] | torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        return_gates: bool = False,
        apply_mask: bool = True,
        edits: Mapping[str, Edit] | None = None,
    ) -> Any:
        """Runs the layer on ``x`` in Keras layout (see the class docstring for shapes).

        Args:
            x: ``(N, L, *S, C)`` (``(N, L, C, *S)`` for channels first).
            initial_state: ``[h_0, c_0]`` in the layout of the states.
            mask: optional bool ``(N, L)``, or ``(N, L, *T)`` (the mask a Keras ``Masking``
                computes on a channels-last input whose state keeps its spatial size): False
                skips the step (at that position) and carries the state, as in Keras.
            apply_mask: False runs unmasked whatever ``mask`` says (see the skeleton).
            return_gates: also return the :class:`ConvLSTMGates` of the call.
            edits: ``{gate name: fn(step, value) -> value}`` on each step's map ``(N, *T, F)``.

        Returns:
            The Keras output (a tensor, or ``(output, h_n, c_n)`` with ``return_state``), and
            with ``return_gates`` a pair ``(that, gates)``.
        """
        cfg = self.config
        self._check_input(x)
        xt = x if cfg.channels_first else x.movedim(-1, 2)  # (N, L, C, *S)
        n = x.shape[0]
        xp, grid = self._input_maps(xt)  # (N·P, L, 4F), T
        step = _GridStep(self, n, grid)  # the cell step on this call's grid
        states0 = self._start_states(x, n, grid, initial_state)  # each (N·P, F)
        rows = None
        if mask is not None and apply_mask:
            rows = self._mask_rows(mask, x, n, grid)  # (N·P, L)
            if self.hook_mask.has_hooks():
                self.hook_mask(mask.to(device=x.device, dtype=torch.bool))
        if cfg.go_backwards:
            xp = xp.flip(1)
            rows = rows.flip(1) if rows is not None else None
        want_gates = return_gates or self.gate_hooks_active()
        checked = self._check_edits(edits) if edits else None
        run = self._step_loop(xp, states0, rows, want_gates, checked, step)
        if run[3] is not None and self.gate_hooks_active():
            run = self._fire_gate_hooks(xp, states0, rows, edits, run, step)
        seq, states, last, gates = run
        self._store_maps(*(step.maps(s) for s in states))
        if cfg.return_sequences:
            out = self._to_keras(seq.unflatten(0, (n, *grid)).movedim(-2, 1))  # (N, L, *T, F)
        else:
            out = self._to_keras(step.maps(last))  # (N, *T, F)
        result: Any = (out, *(self._to_keras(step.maps(s)) for s in states)) if cfg.return_state else out
        return (result, gates) if return_gates else result

    # ------------------------------------------------------------------ the cell
    def _input_maps(self, xt: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """``W * x_t + b`` for every step at once: ``((N·P, L, 4F), T)``."""
        cfg = self.config
        n, steps = xt.shape[:2]
        frames = xt.flatten(0, 1)  # (N·L, C, *S)
        if cfg.padding == "same":
            pads = [same_padding(*a) for a in zip(frames.shape[2:], cfg.kernel_size, cfg.strides, cfg.dilation)]
            frames = _pad(frames, pads)  # (N·L, C, *(S + padding))
        z = _CONV[cfg.rank](frames, self.weight_ih, self.bias, cfg.strides, 0, cfg.dilation)  # (N·L, 4F, *T)
        grid = tuple(z.shape[2:])
        z = z.unflatten(0, (n, steps)).movedim(2, -1).movedim(1, -2)  # (N, *T, L, 4F)
        return z.flatten(0, cfg.rank), grid  # (N·P, L, 4F)

    def _input_projection(self, x: torch.Tensor) -> torch.Tensor:
        """The skeleton's step loop receives the input convolution already applied (:meth:`_input_maps`)."""
        return x

    def _recurrent_conv(self, h: torch.Tensor, step: _GridStep) -> torch.Tensor:
        """``U *_{same} h``: stride 1, no dilation, TensorFlow's SAME split; ``(N·P, F)`` → ``(N·P, 4F)``."""
        cfg = self.config
        maps = step.maps(h).movedim(-1, 1)  # (N, F, *T)
        maps = _pad(maps, [same_padding(size, k, 1) for size, k in zip(step.grid, cfg.kernel_size)])
        z = _CONV[cfg.rank](maps, self.weight_hh)  # (N, 4F, *T)
        return z.movedim(1, -1).reshape(-1, 4 * cfg.hidden_size)  # (N·P, 4F)

    def _grid_cell(
        self, step: _GridStep, xp: torch.Tensor, states: States, edit: StepEdit | None
    ) -> tuple[States, States]:
        """One exact step from ``(h, c)`` ``(N·P, F)``: ``((h_t, c_t), (i, f, g, o))``; an edit sees
        and returns the map ``(N, *T, F)`` of a gate or state before anything reads it."""
        h, c = states
        z = xp + self._recurrent_conv(h, step)  # (N·P, 4F), blocks [i f c o]
        zi, zf, zc, zo = z.chunk(4, 1)
        i, f, g, o = self._ract(zi), self._ract(zf), self._act(zc), self._ract(zo)
        if edit is None:
            c_new = f * c + i * g
            return (o * self._act(c_new), c_new), (i, f, g, o)
        ed = step.map_edit(edit)
        i, f, g, o = ed("i", i), ed("f", f), ed("g", g), ed("o", o)
        c_new = ed("c", f * c + i * g)
        return (ed("h", o * self._act(c_new)), c_new), (i, f, g, o)

    def _gates_view(self, gates: Any, cell: Any) -> ConvLSTMGates:
        """Row gates ``(N·P, L, F)`` as maps ``(N, L, *T, F)`` on the grid of ``cell``."""
        n, grid = cell.n, cell.grid
        return ConvLSTMGates(*(g.unflatten(0, (n, *grid)).movedim(-2, 1) for g in gates))

    # ------------------------------------------------------------------ layouts and states
    def _to_keras(self, maps: torch.Tensor) -> torch.Tensor:
        """Channels-last maps ``(…, *T, F)`` → the layer's layout (``(…, F, *T)`` for channels first)."""
        return maps.movedim(-1, -1 - self.config.rank) if self.config.channels_first else maps

    def _state_shape(self, n: int, grid: tuple[int, ...]) -> tuple[int, ...]:
        filters = self.config.hidden_size
        return (n, filters, *grid) if self.config.channels_first else (n, *grid, filters)

    def _start_states(
        self,
        x: torch.Tensor,
        n: int,
        grid: tuple[int, ...],
        initial_state: Sequence[torch.Tensor] | torch.Tensor | None,
    ) -> tuple[torch.Tensor, ...]:
        """The rows ``(N·P, F)`` of each state a call starts from: given, carried or zeros, with
        ``config.initial_state_rule`` choosing between a given and a carried state."""
        cfg = self.config
        if cfg.stateful and n != cfg.batch_size:
            raise InputError(
                f"{self.describe()} is stateful with a batch size fixed at {cfg.batch_size} by the file. "
                f"Received a batch of {n}. Fix: feed batches of exactly {cfg.batch_size} rows."
            )
        if initial_state is None:
            if cfg.stateful:
                return self._carried_rows(x, n, grid)
            zeros = x.new_zeros(n * math.prod(grid), cfg.hidden_size)  # (N·P, F)
            return (zeros, zeros)
        given = self._given_rows(x, n, grid, initial_state)
        if not (cfg.stateful and cfg.initial_state_rule == "carried_unless_zero"):
            return given
        carried = self._carried_rows(x, n, grid)
        nonzero = torch.stack([(state != 0).any() for state in carried]).any()  # () bool
        return tuple(torch.where(nonzero, c, g) for c, g in zip(carried, given))

    def _given_rows(
        self, x: torch.Tensor, n: int, grid: tuple[int, ...], initial_state: Sequence[torch.Tensor] | torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """``initial_state`` checked against the state layout, as rows ``(N·P, F)``."""
        states = [initial_state] if isinstance(initial_state, torch.Tensor) else list(initial_state)
        if len(states) != len(self.STATE_NAMES):
            raise InputError(f"{self.describe()} takes initial_state=[h, c]. Received {len(states)} tensors.")
        expected = self._state_shape(n, grid)
        rows = []
        for name, state in zip(self.STATE_NAMES, states):
            if tuple(state.shape) != expected:
                raise InputError(
                    f"{self.describe()}: initial state {name} has shape {tuple(state.shape)}. Expected {expected} "
                    f"({self._layout_text('filters', 'batch')}) for this input."
                )
            maps = state.to(x.dtype).movedim(1, -1) if self.config.channels_first else state.to(x.dtype)
            rows.append(maps.reshape(-1, self.config.hidden_size))  # (N·P, F)
        return tuple(rows)

    def _carried_rows(self, x: torch.Tensor, n: int, grid: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
        """The carried states of a stateful layer as rows ``(N·P, F)`` (zeros before the first call)."""
        expected = (n, *grid, self.config.hidden_size)
        rows = []
        for name in self.STATE_NAMES:
            state = getattr(self, f"state_{name}")
            if state.numel() == 0:
                state = x.new_zeros(expected)
            elif tuple(state.shape) != expected:
                raise InputError(
                    f"{self.describe()} is stateful and carries states of spatial size {tuple(state.shape[1:-1])}. "
                    f"Received an input whose states have size {grid}. Fix: keep the input's spatial size, or "
                    "call reset_states() after clearing the model's states."
                )
            rows.append(state.to(x.dtype).reshape(-1, self.config.hidden_size))
        return tuple(rows)

    def _store_maps(self, *states: torch.Tensor) -> None:
        """A stateful layer keeps its final states as maps ``(N, *T, F)`` for the next call."""
        if self.config.stateful:
            for name, state in zip(self.STATE_NAMES, states):
                setattr(self, f"state_{name}", state.detach().clone())

    def reset_states(self) -> None:
        """Forgets the carried state of a stateful layer: the next call starts from zeros."""
        if self.config.stateful:
            for name in self.STATE_NAMES:
                setattr(self, f"state_{name}", getattr(self, f"state_{name}").new_zeros(0))

    # ------------------------------------------------------------------ checks
    def _layout_text(self, channels: str, lead: str = "batch, time") -> str:
        axes = _AXES[self.config.rank]
        inner = (channels, *axes) if self.config.channels_first else (*axes, channels)
        return ", ".join((lead, *inner))

    def _check_input(self, x: torch.Tensor) -> None:
        cfg = self.config
        layout = self._layout_text("channels")
        channel_axis = 2 if cfg.channels_first else -1
        if x.dim() != cfg.rank + 3 or x.shape[channel_axis] != cfg.input_size:
            raise InputError(
                f"{self.describe()} expects an input ({layout}) with {cfg.input_size} channels. "
                f"Received shape {tuple(x.shape)}."
            )
        if not x.is_floating_point():
            raise InputError(f"{self.describe()} expects a floating-point tensor. Received dtype {x.dtype}.")
        spatial = x.shape[3:] if cfg.channels_first else x.shape[2:-1]
        for size, k, s, d in zip(spatial, cfg.kernel_size, cfg.strides, cfg.dilation):
            if conv_lstm_output_size(size, k, s, d, cfg.padding) < 1:
                raise InputError(
                    f"{self.describe()} has kernel_size {cfg.kernel_size} (dilation {cfg.dilation}) and padding "
                    f"{cfg.padding!r}, so each spatial axis needs at least (k - 1) * d + 1 cells. "
                    f"Received shape {tuple(x.shape)}."
                )

    def _mask_rows(self, mask: torch.Tensor, x: torch.Tensor, n: int, grid: tuple[int, ...]) -> torch.Tensor:
        """A ``(N, L)`` or per-position ``(N, L, *T)`` mask as the skeleton's rows ``(N·P, L)``."""
        steps = x.shape[1]
        mask = mask.to(device=x.device, dtype=torch.bool)
        if tuple(mask.shape) == (n, steps):
            return mask[(slice(None), *([None] * len(grid)))].expand(n, *grid, steps).reshape(-1, steps)
        if tuple(mask.shape) == (n, steps, *grid) and not self.config.channels_first:
            return mask.movedim(1, -1).reshape(-1, steps)  # (N, *T, L) → (N·P, L)
        raise InputError(
            f"{self.describe()}: mask has shape {tuple(mask.shape)}. Expected ({n}, {steps}) (batch, time)"
            + ("" if self.config.channels_first else f" or {(n, steps, *grid)} (batch, time, positions of the state)")
            + "."
        )

    def extra_repr(self) -> str:
        cfg = self.config
        parts = [f"{cfg.input_size}, {cfg.hidden_size}, kernel_size={cfg.kernel_size}"]
        for key in ("strides", "dilation"):
            if any(v != 1 for v in getattr(cfg, key)):
                parts.append(f"{key}={getattr(cfg, key)}")
        parts.append(f"padding={cfg.padding!r}")
        if cfg.channels_first:
            parts.append("channels_first=True")
        return ", ".join(parts + self._repr_parts(("activation", "recurrent_activation"))[1:])


register_module("ConvLSTM")(ConvLSTM)


def _check_config(config: ConvLSTMConfig) -> None:
    """Raises ValueError for a config this layer cannot run."""
    rank = config.rank
    if rank not in _CONV:
        raise ValueError(f"ConvLSTM rank must be 1, 2 or 3. Received {rank!r}.")
    for key in ("kernel_size", "strides", "dilation"):
        value = tuple(getattr(config, key))
        if len(value) != rank or not all(isinstance(v, int) and v >= 1 for v in value):
            raise ValueError(f"ConvLSTM {key} must be {rank} ints >= 1. Received {value!r}.")
    if config.padding not in ("valid", "same"):
        raise ValueError(f"ConvLSTM padding must be 'valid' or 'same'. Received {config.padding!r}.")
    if config.time_major:
        raise ValueError("ConvLSTM has no time-major layout: time_major must be False.")


def _pad(maps: torch.Tensor, pads: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Zero-pads ``(N, C, *S)`` by ``(before, after)`` per spatial axis."""
    if not any(p for pair in pads for p in pair):
        return maps
    return F.pad(maps, tuple(p for pair in reversed(pads) for p in pair))  # last axis first


@dataclass(frozen=True)
class _GridStep:
    """The cell step of one call, on that call's grid: the skeleton's step loop runs it."""

    layer: ConvLSTM
    n: int  # batch size
    grid: tuple[int, ...]  # the state's spatial size T

    def __call__(self, xp: torch.Tensor, states: States, edit: StepEdit | None) -> tuple[States, States]:
        return self.layer._grid_cell(self, xp, states, edit)

    def maps(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows ``(N·P, F)`` → channels-last maps ``(N, *T, F)``."""
        return rows.reshape(self.n, *self.grid, self.layer.config.hidden_size)

    def map_edit(self, edit: StepEdit) -> StepEdit:
        """``edit`` on maps ``(N, *T, F)`` as an edit on rows ``(N·P, F)``."""
        filters = self.layer.config.hidden_size

        def on_rows(name: str, value: torch.Tensor) -> torch.Tensor:
            return edit(name, self.maps(value)).reshape(-1, filters)

        return on_rows
