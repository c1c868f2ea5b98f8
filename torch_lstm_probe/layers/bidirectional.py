"""The Keras ``Bidirectional`` wrapper: two recurrent modules over the same input, merged.

Shape legend used in the comments of this file:

    N = batch size, L = time steps, H_f / H_b = units of the forward / backward layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import torch
from torch import nn

from ..errors import InputError
from ..registry import build_module, module_type_name, register_module
from .base import ConfigMixin, HookPoint

__all__ = ["Bidirectional", "BidirectionalConfig", "BidirectionalGates", "MERGE_MODES"]

MERGE_MODES = ("concat", "sum", "ave", "mul", None)


class BidirectionalGates(NamedTuple):
    """The gates of both halves, each the inner layer's gates NamedTuple.

    ``forward`` is in input time order. ``backward`` is in the backward layer's processing
    order, i.e. reversed time: index 0 is the last input step.
    """

    forward: Any  # e.g. LSTMGates / GRUGates of forward_layer
    backward: Any  # the same for backward_layer, in reversed time


@dataclass(frozen=True)
class BidirectionalConfig:
    forward_layer: dict[str, Any]  # {"type": runtime module type, "config": its config}
    backward_layer: dict[str, Any]  # the same for the layer run backwards (go_backwards=True)
    merge_mode: str | None = "concat"  # "concat" | "sum" | "ave" | "mul" | None (two outputs)


class Bidirectional(ConfigMixin, nn.Module):
    r"""Keras ``Bidirectional(layer, merge_mode, backward_layer)`` over recurrent modules.

    ``forward_layer`` reads the input in time order and ``backward_layer`` (``go_backwards``)
    in reverse. With ``return_sequences`` the backward output, which is in reversed time, is
    flipped back to input order before merging; without it the backward output is its final
    state, i.e. the state after input step 0. Both halves run with
    ``zero_output_for_mask = return_sequences``, as Keras forces (the converter sets it).

    Merging of the forward output ``y`` and backward output ``y_b``:

    ============  ===========================================
    ``concat``    ``cat([y, y_b], -1)``, ``(…, H_f + H_b)``
    ``sum``       ``y + y_b``
    ``ave``       ``(y + y_b) / 2``
    ``mul``       ``y * y_b``
    ``None``      the two outputs separately: ``(y, y_b)``
    ============  ===========================================

    Shapes:

    ============================  ===============================================================
    input ``x``                   ``(N, L, F)`` (``(L, N, F)`` for time-major inner layers)
    ``mask`` (optional, bool)     ``(N, L)``, True where a step is real
    ``initial_state`` (optional)  the forward layer's states then the backward layer's, split
                                  half/half: ``[h_f, c_f, h_b, c_b]`` (LSTM), ``[h_f, h_b]`` (GRU)
    output                        the merged output; with ``merge_mode=None`` ``(y, y_b)``
    with ``return_state``         ``(*outputs, *forward states, *backward states)``, e.g.
                                  ``(out, h_f, c_f, h_b, c_b)``
    ============================  ===============================================================

    Gates: probe keys ``"/forward/gates/<g>"`` and ``"/backward/gates/<g>"`` come from the
    inner layers' hook points; the backward gates are in the backward layer's processing order
    (reversed time). ``hook_mask`` sees the applied mask in input time order.
    """

    Config = BidirectionalConfig
    mask_mode = "custom"
    takes_mask = True

    def __init__(
        self,
        config: BidirectionalConfig,
        forward_layer: nn.Module | None = None,
        backward_layer: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if config.merge_mode not in MERGE_MODES:
            raise ValueError(
                f"Bidirectional merge_mode must be one of {list(MERGE_MODES)}. Received {config.merge_mode!r}."
            )
        self.config = config
        if forward_layer is None:
            forward_layer = build_module(config.forward_layer["type"], config.forward_layer["config"])
        if backward_layer is None:
            backward_layer = build_module(config.backward_layer["type"], config.backward_layer["config"])
        self.forward_layer = forward_layer
        self.backward_layer = backward_layer
        fwd, bwd = self.forward_layer.config, self.backward_layer.config  # type: ignore[union-attr]
        for key in ("return_sequences", "return_state", "stateful"):
            if getattr(fwd, key) != getattr(bwd, key):
                raise ValueError(
                    f"Bidirectional halves must agree on {key}. Received forward {getattr(fwd, key)} and "
                    f"backward {getattr(bwd, key)}."
                )
        if fwd.time_major != bwd.time_major:
            raise ValueError("Bidirectional halves must agree on time_major.")
        self.hook_mask = HookPoint()  # sees the bool (N, L) mask applied, in input time order

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> nn.Module:
        return cls(
            BidirectionalConfig(
                forward_layer=dict(config["forward_layer"]),
                backward_layer=dict(config["backward_layer"]),
                merge_mode=config.get("merge_mode", "concat"),
            )
        )

    def get_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in ("forward_layer", "backward_layer"):
            module = getattr(self, key)
            type_name = module_type_name(module)
            if type_name is None:
                raise TypeError(f"Bidirectional {key} is a foreign module {type(module).__name__}; it has no config.")
            out[key] = {"type": type_name, "config": module.get_config()}
        out["merge_mode"] = self.config.merge_mode
        return out

    # ------------------------------------------------------------------ public API
    @property
    def _inner(self) -> Any:
        return self.forward_layer.config  # type: ignore[union-attr]

    def reset_states(self) -> None:
        """Zeros the carried state of both halves (no-op unless stateful)."""
        self.forward_layer.reset_states()  # type: ignore[operator]
        self.backward_layer.reset_states()  # type: ignore[operator]

    def compute_mask(self, x: torch.Tensor, mask: torch.Tensor | None) -> Any:
        """The input mask on each sequence output; none on last outputs and states."""
        cfg = self._inner
        out_mask = mask if cfg.return_sequences else None
        masks: list[torch.Tensor | None] = [out_mask] * (2 if self.config.merge_mode is None else 1)
        if cfg.return_state:
            masks += [None] * (self._state_count(self.forward_layer) + self._state_count(self.backward_layer))
        return tuple(masks) if len(masks) > 1 else masks[0]

    def gate_points(self) -> list[tuple[str, HookPoint]]:
        """``(probe key suffix, hook point)``: both halves' gates, then the applied mask.

        The backward half's gates are in its processing order (reversed time).
        """
        points: list[tuple[str, HookPoint]] = []
        for prefix, module in (("/forward", self.forward_layer), ("/backward", self.backward_layer)):
            inner = getattr(module, "gate_points", None)
            if callable(inner):
                points += [(prefix + suffix, hook) for suffix, hook in inner() if suffix != "/mask"]
        return points + [("/mask", self.hook_mask)]

    def forward(
        self,
        x: torch.Tensor,
        initial_state: Sequence[torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
        return_gates: bool = False,
        apply_mask: bool = True,
    ) -> Any:
        """Runs both halves on ``x`` and merges them as Keras does.

        Args:
            x: ``(N, L, F)`` (``(L, N, F)`` for time-major inner layers).
            initial_state: optional, the forward states then the backward states. Each half
                applies its own ``initial_state_rule`` when stateful.
            mask: optional bool ``(N, L)``; False steps are skipped by both halves.
            apply_mask: False runs both halves unmasked whatever ``mask`` says (Keras 3 with
                ``initial_state`` tensors and no explicit mask); the graph executor still hands
                the input mask over for the output mask.
            return_gates: also return a :class:`BidirectionalGates`.

        Returns:
            The Keras output (a tensor, a tuple of two with ``merge_mode=None``, or with
            ``return_state`` a tuple of outputs then states), and with ``return_gates`` a pair
            ``(that, gates)``.
        """
        cfg = self._inner
        if not apply_mask:
            mask = None
        fwd_state = bwd_state = None
        if initial_state is not None:
            states = list(initial_state)
            half = len(states) // 2
            expected = self._state_count(self.forward_layer) + self._state_count(self.backward_layer)
            if len(states) != expected or half != self._state_count(self.forward_layer):
                raise InputError(
                    f"{self.describe()} takes initial_state with the forward layer's states then the backward "
                    f"layer's ({expected} tensors). Received {len(states)}."
                )
            fwd_state, bwd_state = states[:half], states[half:]
        if mask is not None and self.hook_mask.has_hooks():
            self.hook_mask(mask.transpose(0, 1) if cfg.time_major else mask)
        kwargs: dict[str, Any] = {"mask": mask} if mask is not None else {}
        y = self.forward_layer(x, initial_state=fwd_state, return_gates=return_gates, **kwargs)
        y_rev = self.backward_layer(x, initial_state=bwd_state, return_gates=return_gates, **kwargs)
        gates = None
        if return_gates:
            (y, g_fwd), (y_rev, g_bwd) = y, y_rev
            gates = BidirectionalGates(g_fwd, g_bwd)
        states_out: tuple[torch.Tensor, ...] = ()
        if cfg.return_state:
            states_out = tuple(y[1:]) + tuple(y_rev[1:])
            y, y_rev = y[0], y_rev[0]
        if cfg.return_sequences:
            y_rev = y_rev.flip(0 if cfg.time_major else 1)  # back to input time order
        outputs = self._merge(y, y_rev)
        result: Any = outputs + states_out
        if len(result) == 1:
            result = result[0]
        return (result, gates) if return_gates else result

    # ------------------------------------------------------------------ internals
    def _merge(self, y: torch.Tensor, y_rev: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mode = self.config.merge_mode
        if mode == "concat":
            return (torch.cat([y, y_rev], dim=-1),)
        if mode == "sum":
            return (y + y_rev,)
        if mode == "ave":
            return ((y + y_rev) / 2,)
        if mode == "mul":
            return (y * y_rev,)
        return (y, y_rev)

    @staticmethod
    def _state_count(module: nn.Module) -> int:
        """How many states the layer returns with return_state (LSTM: h and c; others: h)."""
        return len(module.STATE_NAMES)  # type: ignore[arg-type]

    def extra_repr(self) -> str:
        return f"merge_mode={self.config.merge_mode!r}"


register_module("Bidirectional")(Bidirectional)
