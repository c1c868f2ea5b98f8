"""Causal edits of gates and states inside the recurrence: ``tlp.intervene``.

An edit is ``fn(step, value) -> value`` for one probe gate key, e.g. ``"lstm/gates/f"`` (a
Bidirectional half: ``"bi/forward/gates/f"``). The recurrent layer then runs its exact step loop,
and at every step (processing order) where some row is unmasked the named gate or state is
replaced by ``fn``'s result as soon as it is computed, so the edit flows into the rest of the step,
every later step and every later layer:

- ``i f g o`` (LSTM): ``c_t = f c_{t-1} + i g`` and ``h_t = o act(c_t)`` read the edited values;
- ``c``: ``h_t`` and the carried cell read it; ``h``: the step's output and the carried ``h``;
- GRU ``z r n h`` and SimpleRNN ``h`` alike.

At masked ``(row, step)`` positions an edit has no effect: Keras skips the step there and carries
the state. Layers without edits run as usual (on the fused kernels).

The edits reach the layer as a call argument (``edits=``), handed over by a forward pre-hook that
exists only for the duration of the call.

A forward hook on a gate's hook point (``model.layer("lstm").hook_f``) that returns a tensor
replaces that gate whole, at every step, as the edit ``lambda t, v: returned[:, t]`` would (see
``Recurrent._fire_gate_hooks``): it fixes the values it was handed, where an edit function sees
each step's value of the edited run.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from .capture.plan import plan_capture, run_plan
from .errors import InputError, ProbeKeyError
from .model import KerasModel

__all__ = [
    "EDIT_SYNTAX",
    "ablate_units",
    "activation_patch",
    "intervene",
    "parse_edit",
    "patch_units",
    "scale_units",
    "set_units",
]

Edit = Callable[[int, torch.Tensor], torch.Tensor]


def intervene(
    model: KerasModel,
    x: Any,
    edits: Mapping[str, Edit],
    layers: Sequence[str] | str | None = None,
    gates: bool = False,
    grad: bool = False,
) -> dict[str, torch.Tensor]:
    """Runs ``model`` on ``x`` with gates or states replaced inside the recurrence.

    Args:
        model: a converted model.
        x: as for :func:`torch_lstm_probe.probe`.
        edits: ``{gate key: fn(step, value)}``; ``value`` is ``(batch, units)`` at one step in
            processing order and ``fn`` returns the replacement of the same shape.
        layers, gates, grad: as for :func:`torch_lstm_probe.probe`.

    Returns:
        What :func:`torch_lstm_probe.probe` returns, for the edited run (gate keys hold the
        edited values). With ``edits={}`` it equals ``probe`` exactly.

    Raises:
        ProbeKeyError: an edit key names no gate of the model.
        InputError: an edit returns a value of another shape.

    Example:
        >>> tlp.intervene(model, x, {"lstm/gates/f": tlp.set_units(1.0, units=[0, 1, 2])})["output"]
    """
    targets = _edit_targets(model, edits)
    handles = [
        module.register_forward_pre_hook(functools.partial(_hand_over, table), with_kwargs=True)
        for module, table in targets
    ]
    try:
        return run_plan(model, plan_capture(model, layers, gates), x, grad=grad)
    finally:
        for handle in handles:
            handle.remove()


Where = Sequence[int] | slice | None  # units or steps: a list, a slice (start:stop), or None for all


def set_units(value: float, units: Where = None, steps: Where = None) -> Edit:
    """An edit that sets ``units`` (all by default) to ``value`` at ``steps`` (all by default)."""
    return _unit_edit(lambda v: torch.full_like(v, value), units, steps)


def scale_units(factor: float, units: Where = None, steps: Where = None) -> Edit:
    """An edit that multiplies ``units`` (all by default) by ``factor`` at ``steps`` (all by default)."""
    return _unit_edit(lambda v: v * factor, units, steps)


def ablate_units(mean: Any = 0.0, units: Where = None, steps: Where = None) -> Edit:
    """Zero-ablation (``mean=0``) or mean-ablation of ``units``: each is replaced by its entry of ``mean``,
    a ``(units,)`` vector over all the gate's units (e.g. ``tlp.gate_stats(model, data)[key]["mean"]``)
    or one number, at ``steps`` (all by default)."""
    if isinstance(mean, (int, float)):
        return set_units(float(mean), units, steps)
    vector = torch.as_tensor(mean)

    def replace(value: torch.Tensor, where: Any, step: int) -> torch.Tensor:
        return vector.to(value)[where].expand(value.shape[0], -1)  # (N, selected units)

    return _unit_edit(replace, units, steps, indexed=True)


def patch_units(recorded: Any, units: Where = None, steps: Where = None) -> Edit:
    """Activation patching: ``units`` (all by default) at ``steps`` (all by default) take their values
    from ``recorded``, a gate of another run as :func:`tlp.probe` gives it, ``(batch, time, units)``
    in processing order (a batch of 1 is used for every row)."""
    source = torch.as_tensor(recorded)
    if source.dim() != 3:
        raise InputError(
            f"patch_units takes a recorded gate of shape (batch, time, units). Received shape {tuple(source.shape)}."
        )

    def replace(value: torch.Tensor, where: Any, step: int) -> torch.Tensor:
        if step >= source.shape[1] or source.shape[0] not in (1, value.shape[0]):
            raise InputError(
                f"patch_units: the recorded gate has shape {tuple(source.shape)} (batch, time, units); the run "
                f"needs step {step} of a batch of {value.shape[0]} (or 1). Fix: record the source with as many "
                "steps as the target and one row or as many rows."
            )
        return source[:, step].to(value)[:, where].expand(value.shape[0], -1)  # (N, selected units)

    return _unit_edit(replace, units, steps, indexed=True)


def activation_patch(
    model: KerasModel,
    source: Any,
    target: Any,
    keys: Sequence[str] | str,
    units: Where = None,
    steps: Where = None,
    layers: Sequence[str] | str | None = None,
    gates: bool = False,
    grad: bool = False,
) -> dict[str, torch.Tensor]:
    """Runs ``source``, records the gate ``keys``, and runs ``target`` with those gates' ``units`` at
    ``steps`` patched in from the source run (:func:`patch_units`); the patched values flow on as
    every edit does.

    Args:
        source, target: model inputs with the same number of steps; ``source`` has one row or
            as many rows as ``target``.
        keys: gate keys, e.g. ``"lstm/gates/c"``.
        units, steps: what to patch (all by default); steps in processing order.
        layers, gates, grad: what to return, as for :func:`torch_lstm_probe.probe`.

    Returns:
        What :func:`intervene` returns for the patched run on ``target``.

    Example:
        >>> tlp.activation_patch(model, clean, corrupted, "lstm/gates/c", steps=[3])["output"]
    """
    names = [keys] if isinstance(keys, str) else list(keys)
    recorded = run_plan(model, plan_capture(model, names, gates=True), source)
    edits = {key: patch_units(recorded[key], units, steps) for key in names}
    return intervene(model, target, edits, layers=layers, gates=gates, grad=grad)


EDIT_SYNTAX = """KEY[units=U;steps=S]=VALUE sets, KEY[...]*=FACTOR scales; the [...] part and each of its
options may be left out (all units, all steps). U and S: one index (3), a list (0,2,5) or a range
(0:3, 5:, :4; the end excluded). Steps count in processing order. Examples:
  lstm/gates/f[units=0:3]=1.0        forget gate of units 0-2 held open at every step
  lstm/gates/c[units=7;steps=5:]=0   unit 7's cell zeroed from step 5 on
  bi/backward/gates/o*=0.5           the backward half's output gate halved"""


def parse_edit(text: str) -> tuple[str, Edit]:
    """``(gate key, edit)`` from the command line's edit syntax (:data:`EDIT_SYNTAX`).

    Raises:
        InputError: ``text`` does not follow the syntax (the message shows it).
    """
    match = _EDIT_RE.fullmatch(text.strip())
    if match is None:
        raise InputError(f"Edit {text!r} does not follow KEY[units=U;steps=S]=VALUE or KEY[...]*=FACTOR.")
    key, options, scale, number = match.group("key", "options", "scale", "value")
    where: dict[str, Where] = {"units": None, "steps": None}
    for part in filter(None, (options or "").split(";")):
        name, _, spec = part.partition("=")
        if name.strip() not in where or not spec.strip():
            raise InputError(f"Edit {text!r}: option {part!r} is not units=… or steps=….")
        where[name.strip()] = _indices(spec.strip(), text)
    value = float(number)
    if scale:
        return key, scale_units(value, where["units"], where["steps"])
    return key, set_units(value, where["units"], where["steps"])


# ---------------------------------------------------------------------------------------------- internals
_EDIT_RE = re.compile(
    r"(?P<key>[^\[\]=*\s]+)(?:\[(?P<options>[^\]]*)\])?\s*(?P<scale>\*)?=\s*"
    r"(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
)


def _indices(spec: str, text: str) -> Where:
    try:
        if ":" in spec:
            start, _, stop = spec.partition(":")
            return slice(int(start) if start.strip() else None, int(stop) if stop.strip() else None)
        return [int(s) for s in spec.split(",")]
    except ValueError:
        raise InputError(f"Edit {text!r}: {spec!r} is not an index, a list (0,2) or a range (0:3).") from None


def _in(step: int, steps: Where) -> bool:
    if steps is None:
        return True
    if isinstance(steps, slice):
        start = 0 if steps.start is None else steps.start
        return step >= start and (steps.stop is None or step < steps.stop)
    return step in steps


def _unit_edit(change: Callable[..., torch.Tensor], units: Any, steps: Where, indexed: bool = False) -> Edit:
    """An edit applying ``change`` to the chosen units at the chosen steps (``indexed``: ``change`` also
    receives the unit selection and the step)."""
    chosen = steps if steps is None or isinstance(steps, slice) else [int(s) for s in steps]
    where = slice(None) if units is None else (units if isinstance(units, slice) else [int(u) for u in units])

    def edit(step: int, value: torch.Tensor) -> torch.Tensor:
        if not _in(step, chosen):
            return value
        out = value.clone()  # (N, H)
        out[:, where] = change(value[:, where], where, step) if indexed else change(value[:, where])
        return out

    return edit


def _hand_over(
    table: dict[str, Edit], module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return args, {**kwargs, "edits": table}


def _edit_targets(model: KerasModel, edits: Mapping[str, Edit]) -> list[tuple[nn.Module, dict[str, Edit]]]:
    """``(recurrent module, {gate name: fn})`` for every module an edit names."""
    known: dict[str, tuple[nn.Module, str]] = {}
    for path, module in model.iter_layers():
        points = getattr(module, "gate_points", None)
        if not callable(points):
            continue
        cells = [m for m in module.modules() if hasattr(m, "GATE_NAMES")]
        for suffix, hook in points():
            for cell in cells:
                names: tuple[str, ...] = getattr(cell, "GATE_NAMES", ())
                for name in names:
                    if getattr(cell, f"hook_{name}", None) is hook:
                        known[path + suffix] = (cell, name)
    by_module: dict[int, tuple[nn.Module, dict[str, Edit]]] = {}
    for key, fn in edits.items():
        if key not in known:
            raise ProbeKeyError(
                f"No gate {key!r} to edit. Expected a gate key such as "
                f"{', '.join(repr(k) for k in list(known)[:6]) or '(this model has no recurrent layer)'}."
            )
        cell, name = known[key]
        by_module.setdefault(id(cell), (cell, {}))[1][name] = fn
    return list(by_module.values())
