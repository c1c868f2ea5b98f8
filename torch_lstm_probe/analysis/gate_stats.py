"""``gate_stats``: one streaming pass over a dataset, folding every batch's gates into the statistics sink.

The pass is the extraction's (same data sources, capture plan and batches) without storage.
Under ``torchrun`` each rank folds in every ``world``-th batch and the partial results are
gathered and merged in rank order, so every rank returns the same statistics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..capture.plan import plan_capture, run_plan
from ..errors import InputError
from ..extract import distributed as dist
from ..extract.run import Layout, _progress, _refuse_stateful, layout_of
from ..extract.sources import as_source, positive_int, text_input_names, to_device
from ..model import KerasModel
from .stats import GateStats, StatsAccumulator

__all__ = ["gate_stats", "accumulator_for"]


def accumulator_for(layout: Layout) -> StatsAccumulator:
    """The statistics sink for the gate keys of an extraction layout (masks are not statistics)."""
    keys = {
        spec.key: (spec.cell, spec.mask, spec.flip, spec.activation) for spec in layout.keys if "/gates/" in spec.key
    }
    return StatsAccumulator(keys)


def fold(accumulator: StatsAccumulator, values: Mapping[str, torch.Tensor], layout: Layout) -> None:
    """Folds one batch of probe values (gate keys and mask keys) into ``accumulator``."""
    masks = {name: values[key] for name, key in layout.mask_keys.items()}
    accumulator.add(values, masks)


def merge_ranks(accumulator: StatsAccumulator) -> StatsAccumulator:
    """Under torchrun: every rank's partial result, merged in rank order (a no-op in one process)."""
    world, _ = dist.world()
    if world == 1:
        return accumulator
    parts: list[Any] = [None] * world
    torch.distributed.all_gather_object(parts, accumulator)
    merged = parts[0]
    for part in parts[1:]:
        merged.merge(part)
    return merged


def gate_stats(
    model: KerasModel,
    data: Any,
    layers: Sequence[str] | str | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> GateStats:
    """Statistics of every gate of the recurrent layers asked for, over the valid steps of a whole dataset.

    Args:
        model: a converted model.
        data: anything :func:`torch_lstm_probe.extract` takes (arrays, a list or dict of them,
            ``.npy``/``.npz``/``.safetensors`` paths, torch datasets and loaders), or texts (a list of
            str, or an iterator of them) for a model whose input takes strings.
        layers: layer names; ``None`` means every recurrent layer.
        batch_size: samples per forward pass.
        device: where to run (default: the model's device).
        progress: a progress meter on stderr when it is a terminal.

    Returns:
        :class:`GateStats`: ``stats["lstm/gates/f"]["mean"]`` is ``(units,)``; fields in
        :mod:`torch_lstm_probe.analysis.stats`.

    Raises:
        InputError: bad data, or no recurrent layer among ``layers``.
        ProbeKeyError: a requested name matches no layer.

    Example:
        >>> stats = tlp.gate_stats(model, "ids.npy")
        >>> stats["lstm/gates/f"]["sat_high"]   # fraction of steps each unit's forget gate is > 0.9
    """
    positive_int("batch_size", batch_size)
    _refuse_stateful(model)
    world, rank = dist.world()
    if device is not None:
        model.to(dist.local_device(device))
    model.eval()
    run_device = model._device_dtype()[0]
    source = as_source(data, model.input_names, batch_size, text_inputs=text_input_names(model))
    plan = plan_capture(model, layers, gates=True, masks=True)
    accumulator: StatsAccumulator | None = None
    layout: Layout | None = None
    meter = _progress(source.num_samples, progress)
    try:
        for batch in source.batches(want=lambda j: j == 0 or j % world == rank):
            if batch.inputs is None:
                continue
            inputs = [to_device(x, run_device, non_blocking=True) for x in batch.inputs]
            if layout is None:
                layout = layout_of(model, plan, inputs, None, False, True)
                accumulator = accumulator_for(layout)
                if not accumulator.keys:
                    raise InputError(
                        f"Model {model.name!r} has no recurrent layer among {layers or 'its layers'}: no gates to "
                        "summarise. Fix: name LSTM, GRU, SimpleRNN or Bidirectional layers."
                    )
            if batch.index % world != rank:
                continue
            fold(accumulator, run_plan(model, plan, inputs), layout)  # type: ignore[arg-type]
            if meter is not None:
                meter.update(batch.size)
    finally:
        if meter is not None:
            meter.close()
    if accumulator is None:
        raise InputError("The data holds no samples. Expected at least one.")
    return merge_ranks(accumulator).result()
