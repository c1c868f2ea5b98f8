"""Sinks: where captured values go. ``DictSink`` names one forward pass's values by probe key.

The extraction's shard writer and the statistics consume the ordered dicts a ``DictSink`` makes,
one batch at a time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from .keys import layer_key

if TYPE_CHECKING:
    from .plan import CapturePlan

__all__ = ["DictSink"]


class DictSink:
    """Collects hook values of one forward pass and names them by probe key, in plan order."""

    def __init__(self, plan: CapturePlan, keep_graph: bool = False) -> None:
        self.plan = plan
        self.keep_graph = keep_graph
        self._calls: list[list[tuple[int, Any]]] = [[] for _ in plan.targets]

    def record(self, index: int, output: Any) -> None:
        """Stores the ``index``-th target's output of its layer's current call.

        Gate and mask hook points fire inside their layer's call, before the layer's own hook,
        so the call they belong to is the number of calls the layer has finished (a mask fires
        only on calls that have one). A gate hook point that fires again within the same call
        (on the rerun a replacing gate hook causes) overwrites that call's value.
        """
        if isinstance(output, tuple) and not hasattr(output, "_fields"):
            output = tuple(self._keep(o) for o in output)
        else:
            output = self._keep(output)
        target = self.plan.targets[index]
        calls = self._calls[index]
        call = len(self._calls[target.owner]) if target.sub else len(calls)
        if calls and calls[-1][0] == call:
            calls.pop()
        calls.append((call, output))

    def _keep(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor) and not self.keep_graph:
            return value.detach()
        return value

    def result(self) -> dict[str, torch.Tensor]:
        """The selected keys, in plan order; raises ProbeKeyError for a request that matched nothing."""
        out: dict[str, Any] = {}
        for target, calls in zip(self.plan.targets, self._calls):
            many = max(target.calls, len(calls))
            for n, output in calls:
                if target.sub or not isinstance(output, tuple):
                    out[layer_key(target.path, n, many, target.sub)] = output
                else:
                    for k, value in enumerate(output):
                        out[layer_key(target.path, n, many, output=k)] = value
        selected = {k: v for k, v in out.items() if self.plan.selected(k)}
        self.plan.check_complete(list(selected))
        return selected
