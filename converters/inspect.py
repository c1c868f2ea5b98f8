"""The ``inspect`` report: each layer's class, output shape, parameters, convertibility, and in
words what a recurrent layer returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from torch_lstm_probe.errors import TorchLstmProbeError

from .build import CustomConverter, convert_layer, convert_model
from .common import Context
from .readers import read
from .spec import LayerSpec, ModelSpec

__all__ = ["LayerRow", "Report", "inspect_model", "format_report", "describe_recurrent"]

RECURRENT_CLASSES = (
    "LSTM",
    "GRU",
    "SimpleRNN",
    "CuDNNLSTM",
    "CuDNNGRU",
    "RNN",
    "ConvLSTM1D",
    "ConvLSTM2D",
    "ConvLSTM3D",
)


@dataclass
class LayerRow:
    path: str  # Keras layer name (nested: "outer/inner")
    class_name: str  # Keras class
    output_shapes: list[str]  # one per output tensor (and per call for shared layers)
    params: int  # number of stored weight values, as Keras counts them
    calls: int  # how many times the graph calls this layer
    problem: str | None = None  # why it cannot be converted, if it cannot
    note: str | None = None  # what a recurrent layer returns, in words


@dataclass
class Report:
    source: str
    keras_version: str
    file_format: str
    model_name: str
    inputs: list[str]
    outputs: list[str]
    rows: list[LayerRow] = field(default_factory=list)
    shape_note: str | None = None  # why output shapes are unknown, when they are

    @property
    def convertible(self) -> bool:
        return all(r.problem is None for r in self.rows)


def describe_recurrent(layer: LayerSpec) -> str | None:
    """What a recurrent layer returns, in words, from its config."""
    cfg = layer.config
    inner = cfg.get("layer") if layer.class_name == "Bidirectional" else None
    if inner is not None:
        cfg = inner.get("config", {})
    if layer.class_name not in RECURRENT_CLASSES and inner is None:
        return None
    cell = cfg.get("cell") if isinstance(cfg.get("cell"), dict) else None
    units = cfg.get("units", cfg.get("output_dim", cfg.get("filters", "?")))
    if cell is not None:  # RNN(cell): the cell's units (the last cell's for StackedRNNCells)
        cells = cell.get("config", {}).get("cells") or [cell]
        units = cells[-1].get("config", {}).get("units", "?") if isinstance(cells[-1], dict) else "?"
    seq = bool(cfg.get("return_sequences", False))
    state = bool(cfg.get("return_state", False))
    width = units
    if inner is not None and layer.config.get("merge_mode", "concat") == "concat" and isinstance(units, int):
        width = 2 * units
    if "filters" in cfg:  # ConvLSTM: feature maps
        width = f"*spatial, {width}" if cfg.get("data_format") != "channels_first" else f"{width}, *spatial"
    out = (
        f"every step's hidden state h_t, shape (batch, time, {width})"
        if seq
        else f"only the last step's hidden state h_T, shape (batch, {width})"
    )
    text = f"return_sequences={seq}: {out}"
    if inner is not None:
        mode = layer.config.get("merge_mode", "concat")
        text = (
            f"Bidirectional(merge_mode={mode!r}) of {inner.get('class_name')}: the forward half and the backward "
            f"half (its final state, or its sequence flipped back to input order) merged; " + text
        )
    if state:
        states = "h_T, c_T" if "LSTM" in str((inner or {}).get("class_name", layer.class_name)) else "h_T"
        text += f"; return_state=True: then also the final states {states}, each (batch, {units})"
    else:
        text += "; return_state=False: no states"
    if cfg.get("time_major"):
        text += "; time_major=True: the input and the sequence output are (time, batch, ...)"
    if cfg.get("go_backwards"):
        text += "; go_backwards=True: time runs backwards and the sequence output stays reversed"
    return text


def _shape_text(shape_a: tuple[int, ...], shape_b: tuple[int, ...] | None, fixed_batch: bool) -> str:
    dims = []
    for k, a in enumerate(shape_a):
        varies = shape_b is not None and (k >= len(shape_b) or shape_b[k] != a)
        dims.append("None" if varies or (k == 0 and not fixed_batch) else str(a))
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def _dummy_inputs(spec: ModelSpec, steps: int) -> list[torch.Tensor] | None:
    tensors = []
    for inp in spec.inputs:
        if inp.shape is None:
            return None
        dims = [2 if inp.shape[0] is None else inp.shape[0]]
        dims += [steps if d is None else d for d in inp.shape[1:]]
        dtype = torch.long if not inp.dtype.startswith(("float", "bfloat")) else torch.float32
        tensors.append(torch.zeros(dims, dtype=dtype))
    return tensors


def _output_shapes(spec: ModelSpec, custom_layers: Any) -> tuple[dict[str, list[str]], str | None]:
    """Each layer's output shapes from two runs on zeros (time lengths 2 and 3: a dimension
    that changes is shown as None), or an empty dict and the reason they are unknown."""
    import torch_lstm_probe as tlp

    model = convert_model(spec, custom_layers)
    runs = []
    for steps in (2, 3):
        inputs = _dummy_inputs(spec, steps)
        if inputs is None:
            return {}, "the file declares no input shape"
        try:
            acts = tlp.probe(model, inputs)
        except TorchLstmProbeError as err:
            return {}, f"a trial run on zeros failed: {str(err).splitlines()[0]}"
        runs.append({k: tuple(v.shape) for k, v in acts.items()})
    fixed = bool(spec.inputs and spec.inputs[0].shape and spec.inputs[0].shape[0] is not None)
    shapes: dict[str, list[str]] = {}
    for key, shape in runs[0].items():
        path = key.split("@")[0].split(":")[0]
        shapes.setdefault(path, []).append(_shape_text(shape, runs[1].get(key), fixed))
    return shapes, None


def _rows(spec: ModelSpec, ctx: Context, custom_layers: Any, prefix: str = "") -> list[LayerRow]:
    rows = []
    for layer in spec.layers:
        path = prefix + layer.name
        problem = None
        if layer.model is None:
            try:
                convert_layer(layer, ctx, custom_layers)
            except TorchLstmProbeError as err:
                problem = str(err).split(": ", 1)[-1] if ": layer" in str(err) else str(err)
        params = int(sum(int(np.prod(w.shape)) for w in layer.weights))
        rows.append(LayerRow(path, layer.class_name, [], params, len(layer.calls), problem, describe_recurrent(layer)))
        if layer.model is not None:
            inner_rows = _rows(layer.model, ctx, custom_layers, path + "/")
            rows[-1].params = sum(r.params for r in inner_rows)
            rows[-1].problem = (
                "contains layers that cannot be converted" if any(r.problem for r in inner_rows) else None
            )
            rows.extend(inner_rows)
    return rows


def inspect_model(source: Any, weights: Any = None, custom_layers: dict[str, CustomConverter] | None = None) -> Report:
    """Reads ``source`` and reports on every layer without raising for unsupported ones."""
    spec = read(source, weights=weights)
    batch = spec.inputs[0].shape[0] if spec.inputs and spec.inputs[0].shape else None
    ctx = Context(spec.source, spec.keras_version, spec.library, batch)
    rows = _rows(spec, ctx, custom_layers)
    report = Report(
        source=spec.source,
        keras_version=str(spec.keras_version),
        file_format=spec.file_format,
        model_name=spec.name,
        inputs=[f"{i.name} {_shape_or_q(i.shape)} {i.dtype}" for i in spec.inputs],
        outputs=[
            f"{r.layer}" + (f"@{r.node}" if r.node else "") + (f":{r.index}" if r.index else "") for r in spec.outputs
        ],
        rows=rows,
    )
    if report.convertible:
        shapes, report.shape_note = _output_shapes(spec, custom_layers)
        for row in rows:
            row.output_shapes = shapes.get(row.path, [])
    return report


def _shape_or_q(shape: Any) -> str:
    if shape is None:
        return "(?)"
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def format_report(report: Report) -> str:
    """The human-readable table printed by ``torch-lstm-probe inspect``."""
    lines = [
        f"Model {report.model_name!r} from {report.source}",
        f"  written by Keras {report.keras_version} ({report.file_format})",
        f"  inputs:  {', '.join(report.inputs) or '-'}",
        f"  outputs: {', '.join(report.outputs) or '-'}",
        "",
    ]
    header = ("layer", "class", "output shape", "params", "ok")
    table = [header]
    for row in report.rows:
        shape = " | ".join(row.output_shapes) if row.output_shapes else ("?" if report.convertible else "-")
        name = row.path + (f" (shared, {row.calls} calls)" if row.calls > 1 else "")
        table.append((name, row.class_name, shape, f"{row.params:,}", "yes" if row.problem is None else "NO"))
    widths = [max(len(r[k]) for r in table) for k in range(len(header))]
    for k, r in enumerate(table):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    if report.shape_note:
        lines.append(f"Output shapes unknown: {report.shape_note}.")
    notes = [(r.path, r.note) for r in report.rows if r.note]
    if notes:
        lines.append("")
        lines.append("Recurrent layers return:")
        for path, note in notes:
            lines.append(f"  {path}: {note}")
    lines.append("")
    total = sum(r.params for r in report.rows if "/" not in r.path)
    lines.append(f"Total params: {total:,}")
    bad = [r for r in report.rows if r.problem]
    if bad:
        lines.append(f"NOT convertible: {len(bad)} layer(s):")
        for row in bad:
            lines.append(f"  {row.path} ({row.class_name}): {row.problem}")
    else:
        lines.append("Every layer is convertible.")
    return "\n".join(lines)
