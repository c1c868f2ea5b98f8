"""Capture of layer outputs and recurrent gates by Keras name, through scoped forward hooks.

Keys (see the design card):

* ``"<layer>"`` / ``"<layer>:<k>"``: the output / k-th output of a layer;
* ``"<layer>@<n>"``: the n-th call of a shared layer (with ``:<k>`` as ``"<layer>@<n>:<k>"``);
* ``"<outer>/<inner>"``: a layer inside a nested model;
* ``"<layer>/gates/<g>"``: with ``gates=True``, an LSTM's ``i f g o c h``, each ``(N, L, H)``.
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import nn

from .errors import ProbeKeyError
from .model import KerasModel

__all__ = ["probe", "capture", "gate_modules"]


def gate_modules(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(probe key suffix, hook point)`` for each gate of a recurrent module (none otherwise).

    Recurrent modules list their gate hook points through ``gate_points()``, e.g.
    ``("/gates/i", lstm.hook_i)`` or ``("/backward/gates/f", bi.backward_layer.hook_f)``.
    """
    points = getattr(module, "gate_points", None)
    return list(points()) if callable(points) else []


class _Recorder:
    """Collects hook outputs per module path and call."""

    def __init__(self, keep_graph: bool) -> None:
        self.keep_graph = keep_graph
        self.calls: dict[str, list[Any]] = {}

    def record(self, path: str, module: nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, tuple) and not hasattr(output, "_fields"):
            output = tuple(self._keep(o) for o in output)
        else:
            output = self._keep(output)
        self.calls.setdefault(path, []).append(output)

    def _keep(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor) and not self.keep_graph:
            return value.detach()
        return value


@contextlib.contextmanager
def capture(targets: Sequence[tuple[str, nn.Module]], keep_graph: bool = False) -> Iterator[_Recorder]:
    """Registers one forward hook per ``(path, module)`` and always removes them on exit."""
    recorder = _Recorder(keep_graph)
    handles = []
    try:
        for path, module in targets:
            handles.append(module.register_forward_hook(partial(_hook, recorder, path)))
        yield recorder
    finally:
        for handle in handles:
            handle.remove()


def _hook(recorder: _Recorder, path: str, module: nn.Module, args: Any, output: Any) -> None:
    recorder.record(path, module, args, output)


def _keys_for(path: str, calls: list[Any], sub: str = "") -> dict[str, Any]:
    """Flattens recorded calls of one hook target into probe keys."""
    out: dict[str, Any] = {}
    shared = len(calls) > 1
    for n, output in enumerate(calls):
        base = f"{path}@{n}" if shared else path
        if sub:
            out[f"{base}{sub}"] = output
        elif isinstance(output, tuple):
            for k, value in enumerate(output):
                out[f"{base}:{k}"] = value
        else:
            out[base] = output
    return out


def _matches(key: str, request: str) -> bool:
    return key == request or key.startswith((request + ":", request + "@", request + "/"))


def probe(
    model: KerasModel,
    x: Any,
    layers: Sequence[str] | str | None = None,
    gates: bool = False,
    grad: bool = False,
) -> dict[str, torch.Tensor]:
    """Runs ``model`` on ``x`` and returns layer outputs (and gates) by probe key.

    Args:
        model: a converted model.
        x: what the model takes: a tensor/array, a list/tuple in Keras input order, or a dict.
        layers: layer names or probe keys to return; ``None`` means every layer.
        gates: also return ``"<layer>/gates/<g>"`` for every recurrent layer asked for.
        grad: keep the autograd graph (run outside ``inference_mode``), so results can be
            differentiated; otherwise everything runs under ``torch.inference_mode()``.

    Returns:
        ``dict[str, Tensor]`` in graph order, keys as in the module docstring.

    Raises:
        ProbeKeyError: a requested name matches no layer, output or gate.

    Example:
        >>> acts = tlp.probe(model, x, layers=["lstm"], gates=True)
        >>> acts["lstm"].shape, acts["lstm/gates/f"].shape
    """
    requests = [layers] if isinstance(layers, str) else (list(layers) if layers is not None else None)
    all_layers = list(model.iter_layers())
    if requests is not None:
        paths = {p for p, _ in all_layers}
        for request in requests:
            if not any(_matches(p, request) or _matches(request, p) for p in paths):
                raise ProbeKeyError(
                    f"Probe key {request!r} names no layer of model {model.name!r}. Layers: {', '.join(sorted(paths))}."
                )
        wanted = [(p, m) for p, m in all_layers if any(_matches(p, r) or _matches(r, p) for r in requests)]
    else:
        wanted = all_layers
    targets: list[tuple[str, nn.Module]] = list(wanted)
    gate_targets: dict[str, tuple[str, str]] = {}
    if gates:
        for path, module in wanted:
            for suffix, hook_point in gate_modules(module):
                target = f"{path}#{suffix}"
                gate_targets[target] = (path, suffix)
                targets.append((target, hook_point))
    several = isinstance(x, (list, tuple)) and len(model.input_names) > 1
    args = tuple(x) if several else (x,)  # one input may itself be a (nested) list of tokens
    context = torch.enable_grad() if grad else torch.inference_mode()
    with context, capture(targets, keep_graph=grad) as recorder:
        if isinstance(x, Mapping):
            model(x)
        else:
            model(*args)
    result: dict[str, torch.Tensor] = {}
    for path, _ in wanted:
        result.update(_keys_for(path, recorder.calls.get(path, [])))
        for target, (owner, sub) in gate_targets.items():
            if owner == path and target in recorder.calls:
                result.update(_keys_for(path, recorder.calls[target], sub))
    if requests is not None:
        result = {k: v for k, v in result.items() if any(_matches(k, r) for r in requests)}
        for request in requests:
            if not any(_matches(k, request) for k in result):
                raise ProbeKeyError(
                    f"Probe key {request!r} matched no output. Available keys: {', '.join(result) or '(none)'}."
                )
    return result
