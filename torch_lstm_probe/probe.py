"""``probe``: a capture plan, a dict sink and one forward pass.

Keys follow the one grammar of :mod:`torch_lstm_probe.capture.keys`:

* ``"<layer>"`` / ``"<layer>:<k>"``: the output / k-th output of a layer;
* ``"<layer>@<n>"``: the n-th call of a shared layer (with ``:<k>`` as ``"<layer>@<n>:<k>"``);
* ``"<outer>/<inner>"``: a layer inside a nested model;
* ``"<layer>/gates/<g>"``: with ``gates=True``, an LSTM's ``i f g o c h``, each ``(N, L, H)``.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .capture.plan import gate_modules, plan_capture, run_plan
from .model import KerasModel

__all__ = ["probe", "gate_modules"]


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
    return run_plan(model, plan_capture(model, layers, gates), x, grad=grad)
