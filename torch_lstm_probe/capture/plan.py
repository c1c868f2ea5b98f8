"""Capture plans: requests resolved to hook targets before the run, and one forward that fills a sink.

A plan knows, from the graph alone, which modules to hook, what each hook's values will be
called (``@n`` for a layer the graph calls more than once, nested calls multiplied out), and in
which order keys come. Running it is one forward pass with scoped hooks.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import partial
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import nn

from ..errors import ProbeKeyError
from ..model import KerasModel
from .keys import matches
from .sinks import DictSink

__all__ = ["Target", "CapturePlan", "plan_capture", "run_plan", "gate_modules"]


@dataclass(frozen=True)
class Target:
    """One hook: the values of ``module`` at each call become keys ``path[@n]sub`` (``:k`` for tuples)."""

    path: str  # layer path in the graph, e.g. "enc/lstm"
    sub: str  # "" for the layer's outputs, else a gate or mask suffix such as "/backward/gates/f"
    module: nn.Module  # the module (layer or hook point) the forward hook goes on
    calls: int  # how often one forward pass calls it (from the graph)
    owner: int  # index (in the plan) of the target of this layer's own outputs


@dataclass(frozen=True)
class CapturePlan:
    """Hook targets in key order, and the requests that filter the keys.

    Attributes:
        targets: per layer path in graph order, its output target then its gate/mask targets.
        requests: the requested names (``None``: every key).
        model_name: for error messages.
    """

    targets: tuple[Target, ...]
    requests: tuple[str, ...] | None
    model_name: str

    def selected(self, key: str) -> bool:
        return self.requests is None or any(matches(key, r) for r in self.requests)

    def check_complete(self, keys: Sequence[str]) -> None:
        """Raises ProbeKeyError when a request matched no key of a run."""
        for request in self.requests or ():
            if not any(matches(k, request) for k in keys):
                raise ProbeKeyError(
                    f"Probe key {request!r} matched no output. Available keys: {', '.join(keys) or '(none)'}."
                )


def gate_modules(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(probe key suffix, hook point)`` for each gate of a recurrent module (none otherwise).

    Recurrent modules list their gate hook points through ``gate_points()``, e.g.
    ``("/gates/i", lstm.hook_i)`` or ``("/backward/gates/f", bi.backward_layer.hook_f)``.
    """
    points = getattr(module, "gate_points", None)
    return list(points()) if callable(points) else []


def _call_counts(model: KerasModel) -> dict[str, int]:
    """How often one forward pass calls each layer path (nested models' calls multiplied)."""
    counts: dict[str, int] = {}

    def walk(sub: KerasModel, prefix: str, times: int) -> None:
        own = sub.call_counts()
        for name in sub.layer_names:
            n = own.get(name, 0) * times
            counts[prefix + name] = n
            inner = sub.layer(name)
            if isinstance(inner, KerasModel):
                walk(inner, prefix + name + "/", n)

    walk(model, "", 1)
    return counts


def plan_capture(
    model: KerasModel,
    layers: Sequence[str] | str | None = None,
    gates: bool = False,
    masks: bool = False,
) -> CapturePlan:
    """Resolves a probe request to hook targets, before anything runs.

    Args:
        model: a converted model.
        layers: layer names or probe keys; ``None`` means every layer.
        gates: hook every gate (and applied mask) of the recurrent layers asked for.
        masks: hook the applied mask of those recurrent layers even without ``gates`` (the
            extraction stores masks beside the values).

    Raises:
        ProbeKeyError: a requested name matches no layer.
    """
    requests = [layers] if isinstance(layers, str) else (list(layers) if layers is not None else None)
    all_layers = list(model.iter_layers())
    if requests is not None:
        paths = {p for p, _ in all_layers}
        for request in requests:
            if not isinstance(request, str) or not any(matches(p, request) or matches(request, p) for p in paths):
                raise ProbeKeyError(
                    f"Probe key {request!r} names no layer of model {model.name!r}. Layers: {', '.join(sorted(paths))}."
                )
        wanted = [(p, m) for p, m in all_layers if any(matches(p, r) or matches(r, p) for r in requests)]
    else:
        wanted = all_layers
    counts = _call_counts(model)
    targets: list[Target] = []
    for path, module in wanted:
        calls, owner = counts.get(path, 0), len(targets)
        targets.append(Target(path, "", module, calls, owner))
        for suffix, point in gate_modules(module):
            if gates or (masks and suffix == "/mask"):
                targets.append(Target(path, suffix, point, calls, owner))
    return CapturePlan(tuple(targets), tuple(requests) if requests is not None else None, model.name)


@contextlib.contextmanager
def _hooked(plan: CapturePlan, sink: DictSink) -> Iterator[None]:
    """One forward hook per target, always removed on exit."""
    handles = []
    try:
        for index, target in enumerate(plan.targets):
            if isinstance(target.module, KerasModel):  # a nested model: its call may return masks too
                handles.append(target.module.register_forward_hook(partial(_model_hook, sink, index), with_kwargs=True))
            else:
                handles.append(target.module.register_forward_hook(partial(_hook, sink, index)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _hook(sink: DictSink, index: int, module: nn.Module, args: Any, output: Any) -> None:
    sink.record(index, output)


def _model_hook(sink: DictSink, index: int, module: nn.Module, args: Any, kwargs: dict[str, Any], output: Any) -> None:
    sink.record(index, output[0] if kwargs.get("return_masks") else output)  # (result, masks): the result


def run_plan(model: KerasModel, plan: CapturePlan, x: Any, grad: bool = False) -> dict[str, torch.Tensor]:
    """One forward pass of ``model`` on ``x`` with the plan's hooks; returns the selected keys in order.

    Args:
        model: the model the plan was made for.
        plan: from :func:`plan_capture`.
        x: what the model takes (a tensor/array, a list/tuple in Keras input order, or a dict).
        grad: keep the autograd graph; otherwise the pass runs under ``torch.inference_mode()``.
    """
    sink = DictSink(plan, keep_graph=grad)
    several = isinstance(x, (list, tuple)) and len(model.input_names) > 1
    args = tuple(x) if several else (x,)  # one input may itself be a (nested) list of tokens
    context = torch.enable_grad() if grad else torch.inference_mode()
    with context, _hooked(plan, sink):
        if isinstance(x, Mapping):
            model(x)
        else:
            model(*args)
    return sink.result()
