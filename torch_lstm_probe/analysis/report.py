"""The HTML report: one self-contained file with the model table, gate statistics, plots and a token view.

:func:`build_report` writes a single ``.html`` file that needs no server and no network: CSS and
JavaScript are inline, plots are base64 PNG ``data:`` URIs, and the values behind the token view are
inline JSON. It holds, in order:

* the model table of ``torch-lstm-probe inspect`` (each layer's class, output shapes and parameters);
* gate statistics over the whole dataset (:func:`~torch_lstm_probe.analysis.gate_stats`): one table per
  recurrent layer (a Bidirectional layer's halves apart), one row per gate;
* the plots of :mod:`~torch_lstm_probe.analysis.plots`: saturation scatter, forget timescales, mean gate
  value by step, and heatmaps of every gate of the first sample;
* a token view of the first few samples: each token coloured by one unit's value, with selectors for
  the layer, the gate or state (``tanh(c)`` by default) and the unit, recoloured in the browser from the
  inline JSON. The selection can be given in the address, e.g. ``report.html#layer=lstm&gate=f&unit=5``.

In the token view every layer's values are in input order (the values of ``go_backwards`` layers and of
Bidirectional backward halves are flipped back, so each token shows the value computed at it), masked
steps are grey, and values are rounded to ``VALUE_DECIMALS`` decimals. Everything read from files or
the model (layer names, tokens, paths) is HTML-escaped; the JSON escapes ``<``, ``>`` and ``&``.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError, TorchLstmProbeError
from .stats import SIGMOID_GATES, GateStats
from .vocab import Vocabulary, load_vocabulary, text_layer_ids

__all__ = ["build_report", "VALUE_DECIMALS", "DEFAULT_SAMPLES", "DEFAULT_HEATMAPS"]

VALUE_DECIMALS = 4  # decimals kept of each token-view value (the colours change far more coarsely)
DEFAULT_SAMPLES = 5  # samples shown in the token view
DEFAULT_HEATMAPS = ("f", "z", "c", "h")  # gates drawn as heatmaps of the first sample: the memory of each cell
_GATE_ORDER = {"LSTM": ("i", "f", "g", "o", "c", "h"), "GRU": ("z", "r", "n", "h"), "SimpleRNN": ("h",)}
_VIEW_CHOICES = {  # gate/state choices of the token view, default first; "tanh_c" is computed from c in the browser
    "LSTM": ("tanh_c", "c", "h", "i", "f", "g", "o"),
    "GRU": ("h", "z", "r", "n"),
    "SimpleRNN": ("h",),
}
_CHOICE_NAMES = {"tanh_c": "tanh(c): squashed cell state"}


# ---------------------------------------------------------------------------------------------- public API
def build_report(
    model: Any,
    data: Any,
    out: str | os.PathLike[str],
    vocab: Any = None,
    layers: Sequence[str] | str | None = None,
    samples: int = DEFAULT_SAMPLES,
    batch_size: int = 256,
    title: str | None = None,
    source: Any = None,
    *,
    weights: Any = None,
    custom_layers: Mapping[str, Any] | None = None,
    heatmaps: Sequence[str] | str | None = DEFAULT_HEATMAPS,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> Path:
    """Writes one self-contained HTML report of a model's gates over a dataset.

    Args:
        model: a converted model, or a Keras model file (then loaded with ``weights`` and ``custom_layers``).
        data: anything :func:`torch_lstm_probe.gate_stats` takes (arrays, a list or dict of them,
            ``.npy``/``.npz``/``.safetensors`` paths, torch datasets and loaders; a list of texts for a
            model whose input takes strings). Statistics cover all of it; the token view and the heatmaps
            show its first samples.
        out: the ``.html`` file to write (missing folders are created).
        vocab: labels for token ids: anything :func:`~torch_lstm_probe.analysis.load_vocabulary` reads.
            Without it tokens are shown as their ids (or as step numbers when no input holds ids); a
            model that takes strings shows the words its own text layer made of them.
        layers: recurrent layer names; ``None`` means every recurrent layer.
        samples: how many samples the token view shows.
        batch_size: samples per forward pass of the statistics.
        title: the page title (default: the model's name).
        source: what the model table describes: a Keras file (or ``keras.Model``); default: the file
            the model was loaded from. When none is known, or it cannot be read, the table lists the
            converted model's layers and says why.
        weights: weights-only ``.h5`` for an architecture ``.json`` ``source``.
        custom_layers: converters for layers without a built-in one, as for ``load_keras``.
        heatmaps: gate letters drawn as heatmaps of the first sample, for each layer that has them
            (default: the forget or update gate and the states, ``f z c h``); ``None`` draws every
            gate, ``()`` none. Each plot takes about half a second to draw.
        device: where to run (default: the model's device); the model stays there.
        progress: a progress meter on stderr (when it is a terminal) during the statistics pass.

    Returns:
        ``out`` as a :class:`~pathlib.Path`.

    Raises:
        InputError: bad arguments or data, no recurrent layer among ``layers``, or ``out`` is a folder.
        ProbeKeyError: a requested layer name matches no layer.
        ImportError: matplotlib is not installed (``pip install 'torch-lstm-probe[plots]'``).

    Example:
        >>> build_report(model, "ids.npy", "report.html", vocab="tokenizer.json", samples=8)
        PosixPath('report.html')
    """
    from . import plots
    from .gate_stats import gate_stats

    plots._matplotlib()  # fail before the long pass when plots cannot be drawn
    heatmap_gates = _heatmap_gates(heatmaps)
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise InputError(f"samples (the token view's samples) must be a positive int. Received {samples!r}.")
    target = Path(out)
    if target.is_dir():
        raise InputError(f"Report path {target} is a folder. Expected a file path such as {target / 'report.html'}.")
    model, source = _model_and_source(model, source, weights, custom_layers)
    vocabulary = load_vocabulary(vocab) if vocab is not None else None
    layer_list = [layers] if isinstance(layers, str) else (list(layers) if layers is not None else None)
    stats = gate_stats(model, data, layers=layer_list, batch_size=batch_size, device=device, progress=progress)
    view = _token_view(model, data, layer_list, int(samples), vocabulary)
    page_title = title if title is not None else f"{model.name}: gate report"
    sections = [
        _model_section(model, source, weights, custom_layers),
        _stats_section(stats, _num_samples(model, data)),
        _tokens_section(view, stats, vocabulary),
        _plots_section(stats, view, heatmap_gates),
    ]
    document = _page(page_title, model, data, sections)
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(target, document)
    return target


# ---------------------------------------------------------------------------------------------- inputs
def _heatmap_gates(heatmaps: Any) -> tuple[str, ...] | None:
    """The gate letters of ``heatmaps`` (``None``: every gate), checked against the letters gates have."""
    if heatmaps is None:
        return None
    letters = heatmaps.split(",") if isinstance(heatmaps, str) else heatmaps
    if not isinstance(letters, (list, tuple)) or not all(isinstance(g, str) for g in letters):
        raise InputError(f"heatmaps must be gate letters such as ('c', 'h'), or None. Received {heatmaps!r}.")
    chosen = tuple(dict.fromkeys(g.strip() for g in letters if g.strip()))
    known = sorted({g for gates in _GATE_ORDER.values() for g in gates})
    unknown = [g for g in chosen if g not in known]
    if unknown:
        raise InputError(f"heatmaps names {unknown}, which no gate is. Expected some of {', '.join(known)}.")
    return chosen


def _model_and_source(model: Any, source: Any, weights: Any, custom_layers: Any) -> tuple[Any, Any]:
    from ..model import KerasModel

    if isinstance(model, (str, os.PathLike)):
        from ..api import load_keras

        return load_keras(model, weights=weights, custom_layers=custom_layers), source if source is not None else model
    if not isinstance(model, KerasModel):
        raise InputError(
            f"build_report takes a converted model (tlp.load_keras) or a Keras model file. Received "
            f"{type(model).__name__}."
        )
    if source is None:
        known = (getattr(model, "source_info", {}) or {}).get("source")
        if isinstance(known, str) and Path(known).is_file():
            source = known
    return model, source


def _num_samples(model: Any, data: Any) -> int | None:
    from ..extract.sources import as_source, text_input_names

    return as_source(data, model.input_names, 1, text_inputs=text_input_names(model)).num_samples


def _first_inputs(model: Any, data: Any, count: int) -> list[Any]:
    """The first ``count`` samples of ``data`` (fewer when it holds fewer), one CPU tensor per input (an object
    array of str per text input)."""
    from ..extract.sources import as_source, text_input_names

    parts: list[list[Any]] = []
    taken = 0
    batches = as_source(data, model.input_names, count, text_inputs=text_input_names(model)).batches()
    try:
        for batch in batches:
            if batch.inputs is None:
                continue
            parts.append(batch.inputs)
            taken += batch.size
            if taken >= count:
                break
    finally:
        batches.close()  # type: ignore[attr-defined]
    if not parts:
        raise InputError("The data holds no samples. Expected at least one.")
    return [_concat([p[k] for p in parts])[:count] for k in range(len(parts[0]))]


def _concat(parts: list[Any]) -> Any:
    return np.concatenate(parts) if isinstance(parts[0], np.ndarray) else torch.cat(parts)


def _token_input(inputs: Sequence[Any]) -> int | None:
    """The position of the first integer ``(batch, time)`` input (the token ids), if any."""
    for n, x in enumerate(inputs):
        if (
            isinstance(x, torch.Tensor)
            and x.dim() == 2
            and not x.is_floating_point()
            and not x.is_complex()
            and x.dtype != torch.bool
        ):
            return n
    return None


# ---------------------------------------------------------------------------------------------- token view
@dataclass
class _Layer:
    """One recurrent layer (or Bidirectional half) of the token view."""

    name: str  # layer path: "lstm", "bi/backward", "lstm@1"
    cell: str  # LSTM / GRU / SimpleRNN
    reversed: bool  # processing order runs against input order
    units: int
    steps: int
    keys: dict[str, str] = field(default_factory=dict)  # gate letter -> probe key
    values: dict[str, np.ndarray] = field(default_factory=dict)  # gate letter -> (n, T, units) input order, NaN masked
    heat: dict[str, np.ndarray] = field(default_factory=dict)  # gate key -> (T, units) of sample 0, processing order


@dataclass
class _View:
    tokens: list[list[str]] | None  # per sample, input order; None: no token input
    layers: list[_Layer]
    words: str | None = None  # what the tokens are when a text model's own text layer made them


def _token_view(model: Any, data: Any, layers: list[str] | None, count: int, vocab: Vocabulary | None) -> _View:
    """Gates of the first samples, grouped by layer, in input order with masked steps as NaN."""
    from ..capture.keys import split_key
    from ..capture.plan import plan_capture, run_plan
    from ..extract.run import layout_of
    from ..extract.sources import to_device

    host = _first_inputs(model, data, count)
    device = model._device_dtype()[0]
    inputs = [to_device(x, device) for x in host]
    plan = plan_capture(model, layers, gates=True, masks=True)
    layout = layout_of(model, plan, inputs, None, False, True)
    x: Any = inputs[0] if len(inputs) == 1 else list(inputs)
    values = run_plan(model, plan, x)
    found: dict[str, _Layer] = {}
    for spec in layout.keys:
        path, sub = split_key(spec.key)
        if "/gates/" not in sub or spec.key not in values:
            continue
        name, gate = spec.key.rsplit("/gates/", 1)
        value = values[spec.key].detach().to("cpu", torch.float64)  # (n, T, units) processing order
        layer = found.get(name)
        if layer is None:
            layer = _Layer(name, spec.cell or "", spec.flip, int(value.shape[2]), int(value.shape[1]))
            found[name] = layer
        valid = torch.ones(value.shape[:2], dtype=torch.bool)
        mask_key = layout.mask_keys.get(spec.mask) if spec.mask is not None else None
        if mask_key is not None and mask_key in values:
            valid = values[mask_key].detach().to("cpu", torch.bool)  # (n, T) input order
        ordered = value.flip(1) if spec.flip else value  # (n, T, units) input order
        ordered = ordered.masked_fill(~valid[..., None], math.nan)
        layer.keys[gate] = spec.key
        layer.values[gate] = ordered.numpy()
        layer.heat[spec.key] = (ordered.flip(1) if spec.flip else ordered)[0].numpy()  # (T, units)
    text = text_layer_ids(model, host)
    if text is not None and text[1].dim() == 2:
        _, ids, layer_vocab = text  # (n, T) ids of the model's own text layer
        labels = vocab if vocab is not None else layer_vocab
        words = "vocabulary words" if vocab is not None else "the words of the model's text layer"
        return _View(labels.tokens(ids), list(found.values()), words)
    position = _token_input(inputs)
    tokens = None
    if position is not None:
        ids = inputs[position].detach().to("cpu")
        tokens = vocab.tokens(ids) if vocab is not None else [[str(i) for i in row] for row in ids.tolist()]
    return _View(tokens, list(found.values()))


def _layer_tokens(view: _View, layer: _Layer, sample: int) -> list[str] | None:
    """The sample's tokens when they line up with the layer's steps, else ``None``."""
    if view.tokens is None or len(view.tokens[sample]) != layer.steps:
        return None
    return [str(t) for t in view.tokens[sample]]


def _view_json(view: _View, stats: GateStats) -> dict[str, Any]:
    """The inline JSON of the token view: tokens, each layer's values by gate, and per-unit statistics."""
    count = len(view.layers[0].values[next(iter(view.layers[0].values))]) if view.layers else 0
    layers = []
    for layer in view.layers:
        choices = [c for c in _VIEW_CHOICES.get(layer.cell, ()) if (c[-1] if c == "tanh_c" else c) in layer.values]
        choices += [g for g in layer.values if g not in choices]
        unit_stats = {}
        for gate, key in layer.keys.items():
            if key in stats:
                entry = stats[key]
                unit_stats[gate] = {
                    name: _rounded(entry[name].numpy(), 6)
                    for name in ("mean", "std", "min", "max", "sat_low", "sat_high", "timescale")
                    if name in entry
                }
        layers.append(
            {
                "name": layer.name,
                "cell": layer.cell,
                "reversed": layer.reversed,
                "units": layer.units,
                "steps": layer.steps,
                "tokens": [_layer_tokens(view, layer, s) for s in range(count)],
                "choices": [[c, _choice_name(c), _signed(layer.cell, c)] for c in choices],
                "values": {gate: _rounded(values, VALUE_DECIMALS) for gate, values in layer.values.items()},
                "unit_stats": unit_stats,
            }
        )
    return {"samples": count, "decimals": VALUE_DECIMALS, "layers": layers, "colours": _colours()}


def _choice_name(choice: str) -> str:
    from .plots import GATE_NAMES

    return _CHOICE_NAMES.get(choice, f"{choice}: {GATE_NAMES.get(choice, choice)}")


def _signed(cell: str, choice: str) -> bool:
    return choice not in SIGMOID_GATES.get(cell, ())


def _colours() -> dict[str, Any]:
    """The token colours of :func:`~torch_lstm_probe.analysis.plots.token_html`, for the browser."""
    from . import plots

    return {
        "negative": list(plots._NEGATIVE),
        "positive": list(plots._POSITIVE),
        "unsigned": list(plots._UNSIGNED),
        "masked": plots._MASKED,
        "strength": plots._STRENGTH,
    }


def _rounded(values: np.ndarray, decimals: int) -> Any:
    """Nested lists of ``values`` rounded to ``decimals``, NaN as ``None`` (JSON null)."""
    array = np.round(np.asarray(values, dtype=np.float64), decimals) + 0.0  # + 0.0: -0.0 becomes 0.0
    listed = array.tolist()
    return listed if np.isfinite(array).all() else _nan_to_none(listed)


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _script_json(value: Any) -> str:
    """JSON safe inside ``<script>``: ``<``, ``>``, ``&`` and the line separators as ``\\u`` escapes."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    for raw, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, escaped)
    return text


# ---------------------------------------------------------------------------------------------- sections
def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _model_section(model: Any, source: Any, weights: Any, custom_layers: Any) -> str:
    """The inspect table: from the Keras source when it can be read, else from the converted model."""
    problem = "no Keras file is known for this model (pass source=)"
    if source is not None:
        try:
            from torch_lstm_probe.converters.inspect import inspect_model

            return _inspect_table(inspect_model(source, weights=weights, custom_layers=custom_layers))
        except (TorchLstmProbeError, OSError) as err:
            problem = f"{source} could not be read: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
    rows = []
    for name in model.layer_names:
        module = model.layer(name)
        params = sum(int(p.numel()) for p in module.parameters())
        rows.append(
            f"<tr><td>{_esc(name)}</td><td>{_esc(type(module).__name__)}</td><td>?</td>"
            f'<td class="num">{params:,}</td><td>yes</td></tr>'
        )
    return (
        '<section id="model"><h2>Model</h2>'
        f'<p class="note">The converted model\'s layers (PyTorch classes and parameter counts): {_esc(problem)}.</p>'
        '<table class="model"><thead><tr><th>layer</th><th>class</th><th>output shape</th><th>params</th>'
        f"<th>ok</th></tr></thead><tbody>{''.join(rows)}</tbody></table></section>"
    )


def _inspect_table(report: Any) -> str:
    """The table ``torch-lstm-probe inspect`` prints, as HTML (same columns, notes and total)."""
    facts = [
        ("model", f"{report.model_name} from {report.source}"),
        ("written by", f"Keras {report.keras_version} ({report.file_format})"),
        ("inputs", ", ".join(report.inputs) or "-"),
        ("outputs", ", ".join(report.outputs) or "-"),
    ]
    head = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in facts)
    rows = []
    for row in report.rows:
        shape = " | ".join(row.output_shapes) if row.output_shapes else ("?" if report.convertible else "-")
        name = row.path + (f" (shared, {row.calls} calls)" if row.calls > 1 else "")
        ok = "yes" if row.problem is None else "NO"
        nested = ' class="nested"' if "/" in row.path else ""
        rows.append(
            f'<tr{nested} data-layer="{_esc(row.path)}"><td>{_esc(name)}</td><td>{_esc(row.class_name)}</td>'
            f'<td class="shape">{_esc(shape)}</td><td class="num">{row.params:,}</td><td>{ok}</td></tr>'
        )
    total = sum(r.params for r in report.rows if "/" not in r.path)
    parts = [
        '<section id="model"><h2>Model</h2>',
        f'<table class="facts"><tbody>{head}</tbody></table>',
        '<table class="model"><thead><tr><th>layer</th><th>class</th><th>output shape</th><th>params</th>'
        f"<th>ok</th></tr></thead><tbody>{''.join(rows)}</tbody>"
        f'<tfoot><tr><td colspan="3">Total params</td><td class="num">{total:,}</td><td></td></tr></tfoot></table>',
    ]
    if report.shape_note:
        parts.append(f'<p class="note">Output shapes unknown: {_esc(report.shape_note)}.</p>')
    notes = [(r.path, r.note) for r in report.rows if r.note]
    if notes:
        items = "".join(f"<li><b>{_esc(p)}</b>: {_esc(n)}</li>" for p, n in notes)
        parts.append(f'<p class="note">Recurrent layers return:</p><ul class="notes">{items}</ul>')
    bad = [r for r in report.rows if r.problem]
    if bad:
        items = "".join(f"<li>{_esc(r.path)} ({_esc(r.class_name)}): {_esc(r.problem)}</li>" for r in bad)
        parts.append(f'<p class="note">NOT convertible: {len(bad)} layer(s):</p><ul class="notes">{items}</ul>')
    parts.append("</section>")
    return "".join(parts)


def _number(value: float, fmt: str) -> str:
    """A table cell: shown with ``fmt``, exact in ``data-value`` (``nan`` when there is no value)."""
    if not math.isfinite(value):
        return '<td class="num" data-value="nan">–</td>'
    return f'<td class="num" data-value="{value!r}">{format(value, fmt)}</td>'


def _unit_mean(entry: Mapping[str, Any], name: str) -> float:
    if name not in entry:
        return math.nan
    values = entry[name].to(torch.float64)
    return float(values.mean()) if values.numel() else math.nan


def _median_timescale(entry: Mapping[str, Any]) -> float:
    """The median unit's timescale, as the dotted line of the timescale plot (finite units only)."""
    if "timescale" not in entry:
        return math.nan
    tau = entry["timescale"].to(torch.float64).numpy()
    tau = tau[np.isfinite(tau)]
    return float(np.median(tau)) if tau.size else math.nan


STATS_COLUMNS = ("gate", "what", "count", "mean", "std", "min", "max", "sat_low", "sat_high", "timescale")


def _stats_section(stats: GateStats, num_samples: int | None) -> str:
    """One table per recurrent layer (Bidirectional halves apart): a row per gate, figures averaged over units."""
    from .plots import GATE_NAMES

    groups: dict[str, list[str]] = {}
    for key, layer in stats.layers.items():
        groups.setdefault(layer, []).append(key)
    over = f"{num_samples:,} samples" if num_samples is not None else "every sample"
    parts = [
        '<section id="stats"><h2>Gate statistics</h2>',
        f'<p class="note">Over the valid (unmasked) steps of {over}. <b>mean</b>, <b>std</b>, <b>min</b> and '
        "<b>max</b> are each unit's figure averaged over the units; <b>&lt; 0.1</b> and <b>&gt; 0.9</b> the "
        "average fraction of steps a sigmoid gate is saturated low or high; <b>timescale</b> the median unit's "
        "mean forget timescale &minus;1/ln&nbsp;f in steps (how long the cell remembers). <b>count</b> is the "
        "number of valid steps.</p>",
    ]
    header = (
        "<tr><th>gate</th><th>what</th><th>count</th><th>mean</th><th>std</th><th>min</th><th>max</th>"
        "<th>&lt; 0.1</th><th>&gt; 0.9</th><th>timescale</th></tr>"
    )
    for layer, keys in groups.items():
        cell = stats.cells.get(keys[0], "")
        units = int(stats[keys[0]]["mean"].shape[0])
        count = int(stats[keys[0]]["count"])
        rows = []
        for key in keys:
            entry = stats[key]
            gate = key.rsplit("/", 1)[1]
            rows.append(
                f'<tr data-key="{_esc(key)}"><td class="gate">{_esc(gate)}</td>'
                f"<td>{_esc(GATE_NAMES.get(gate, gate))}</td>"
                f'<td class="num" data-value="{int(entry["count"])}">{int(entry["count"]):,}</td>'
                + _number(_unit_mean(entry, "mean"), ".4g")
                + _number(_unit_mean(entry, "std"), ".4g")
                + _number(_unit_mean(entry, "min"), ".4g")
                + _number(_unit_mean(entry, "max"), ".4g")
                + _number(_unit_mean(entry, "sat_low"), ".3f")
                + _number(_unit_mean(entry, "sat_high"), ".3f")
                + _number(_median_timescale(entry), ".3g")
                + "</tr>"
            )
        parts.append(
            f'<table class="stats" data-layer="{_esc(layer)}"><caption><b>{_esc(layer)}</b>: {_esc(cell or "?")}, '
            f"{units:,} units, {count:,} valid steps</caption><thead>{header}</thead><tbody>{''.join(rows)}</tbody>"
            "</table>"
        )
    parts.append("</section>")
    return "".join(parts)


def _png_uri(fig: Any) -> str:
    """The figure as a palette PNG (:func:`~torch_lstm_probe.analysis.plots.save_png`) in a ``data:`` URI."""
    from .plots import save_png

    with tempfile.TemporaryDirectory() as folder:
        path = save_png(fig, Path(folder) / "plot.png")
        data = path.read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _figure(fig: Any, plot: str, alt: str, caption: str, css: str = "") -> str:
    """A ``<figure>`` with the plot as an inline PNG; ``data-plot`` names the plot (e.g. ``heatmap:lstm/gates/c``)."""
    return (
        f'<figure class="{css}" data-plot="{_esc(plot)}"><img src="{_png_uri(fig)}" alt="{_esc(alt)}">'
        f"<figcaption>{_esc(caption)}</figcaption></figure>"
    )


def _plots_section(stats: GateStats, view: _View, heatmap_gates: tuple[str, ...] | None) -> str:
    """Saturation scatter, forget timescales, mean by step for each sigmoid gate, heatmaps of the first sample."""
    from . import plots

    figures: list[str] = []
    sigmoid = [
        g for g in ("i", "f", "o", "z", "r") if any(k.endswith(f"/gates/{g}") and "sat_low" in stats[k] for k in stats)
    ]
    if sigmoid:
        figures.append(
            _figure(
                plots.saturation_scatter(stats),
                "saturation",
                "gate saturation scatter",
                "Saturation: each point is a unit, its fraction of steps with the gate below 0.1 (x) against "
                "above 0.9 (y).",
            )
        )
    if any("timescale" in stats[k] for k in stats):
        figures.append(
            _figure(
                plots.timescale_hist(stats),
                "timescales",
                "forget-gate timescale histograms",
                "Forget timescales -1/ln f in steps: every step (filled) and each unit's mean (outlined).",
            )
        )
    for gate in sigmoid:
        figures.append(
            _figure(
                plots.mean_by_step(stats, gate),
                f"mean_by_step:{gate}",
                f"mean of gate {gate} by step",
                f"Mean {plots.GATE_NAMES[gate]} over units and valid samples at each step (processing order).",
                "half",
            )
        )
    parts = ['<section id="plots"><h2>Plots</h2><div class="figures">', *figures, "</div>"]
    shown = [
        (layer, {k: v for k, v in layer.heat.items() if heatmap_gates is None or k.rsplit("/", 1)[1] in heatmap_gates})
        for layer in view.layers
    ]
    shown = [(layer, heat) for layer, heat in shown if heat]
    if shown:
        parts.append(
            "<h3>Heatmaps of the first sample</h3>"
            '<p class="note">Unit &times; step, in processing order (reversed layers say so and have their tokens '
            "reversed); masked steps are blank.</p>"
        )
        for n, (layer, values) in enumerate(shown):
            tokens = _layer_tokens(view, layer, 0)
            heat = plots.sample_heatmaps(stats, values, tokens, reversed_keys=[layer.name] if layer.reversed else [])
            items = [_figure(fig, f"heatmap:{key}", f"heatmap of {key}", key) for key, fig in heat.items()]
            open_ = " open" if n == 0 else ""
            parts.append(
                f'<details class="heatmaps"{open_}><summary>{_esc(layer.name)} ({_esc(layer.cell)}, '
                f'{layer.units} units)</summary><div class="figures">{"".join(items)}</div></details>'
            )
    parts.append("</section>")
    return "".join(parts)


def _tokens_section(view: _View, stats: GateStats, vocab: Vocabulary | None) -> str:
    """The token view: selectors, a legend, one coloured line per sample, and the inline JSON behind them."""
    if not view.layers:
        return '<section id="tokens"><h2>Tokens</h2><p class="note">No recurrent layer to show.</p></section>'
    data = _view_json(view, stats)
    first = view.layers[0]
    options = "".join(
        f'<option value="{n}">{_esc(layer.name)} ({_esc(layer.cell)}, {layer.units} units)</option>'
        for n, layer in enumerate(view.layers)
    )
    labels = view.words or (
        "vocabulary words" if vocab is not None else ("token ids" if view.tokens is not None else "step numbers")
    )
    fallback = _static_tokens(view, data)
    return (
        '<section id="tokens"><h2>Tokens</h2>'
        f'<p class="note">The first {data["samples"]} sample(s), each token coloured by one unit\'s value (tokens are '
        f"{labels}). Values are in input order, also for layers that run backwards; grey steps are masked. "
        "Hover a token for its value. The selection is kept in the address "
        "(#layer=…&amp;gate=…&amp;unit=…&amp;scale=unit).</p>"
        '<form class="controls" id="tlp-controls" onsubmit="return false">'
        f'<label>layer <select id="tlp-layer">{options}</select></label>'
        '<label>gate / state <select id="tlp-gate"></select></label>'
        f'<label>unit <input type="range" id="tlp-unit" min="0" max="{first.units - 1}" value="0" step="1">'
        f'<input type="number" id="tlp-unit-number" min="0" max="{first.units - 1}" value="0" step="1"></label>'
        '<label>colour scale <select id="tlp-scale"><option value="fixed">fixed: -1 to 1 (gates 0 to 1)</option>'
        '<option value="unit">this unit\'s range in these samples</option></select></label>'
        "</form>"
        '<div class="legend" id="tlp-legend"></div>'
        '<p class="unit-stats" id="tlp-unit-stats"></p>'
        f'<div class="samples" id="tlp-samples">{fallback}</div>'
        f'<script type="application/json" id="tlp-view-data">{_script_json(data)}</script>'
        f"<script>{_SCRIPT}</script>"
        "</section>"
    )


def _static_tokens(view: _View, data: Mapping[str, Any]) -> str:
    """The default selection drawn without script (layer 0, its default choice, unit 0), via ``token_html``."""
    from .plots import token_html

    layer = view.layers[0]
    choice = data["layers"][0]["choices"][0][0]
    gate = "c" if choice == "tanh_c" else choice
    lines = []
    for s in range(int(data["samples"])):
        values = layer.values[gate][s][:, 0]  # (T,) input order
        if choice == "tanh_c":
            values = np.tanh(values)
        tokens = _layer_tokens(view, layer, s) or [str(t) for t in range(layer.steps)]
        lines.append(
            f'<div class="sample"><span class="label">sample {s}</span>'
            + token_html(values, tokens, unit=0, signed=_signed(layer.cell, choice))
            + "</div>"
        )
    return "".join(lines)


def _data_text(data: Any) -> str:
    if isinstance(data, (str, os.PathLike)):
        return os.fspath(data)
    if isinstance(data, (np.ndarray, torch.Tensor)):
        return f"{type(data).__name__} {tuple(data.shape)} {data.dtype}"
    if isinstance(data, (list, tuple)) and data and all(isinstance(t, str) for t in data):
        return f"{len(data)} texts"
    return type(data).__name__


def _page(title: str, model: Any, data: Any, sections: Sequence[str]) -> str:
    from .. import __version__

    nav = "".join(
        f'<a href="#{anchor}">{name}</a>'
        for anchor, name in (("model", "Model"), ("stats", "Statistics"), ("tokens", "Tokens"), ("plots", "Plots"))
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_esc(title)}</h1>"
        f'<p class="note">Model <b>{_esc(model.name)}</b> · data {_esc(_data_text(data))} · '
        f"torch-lstm-probe {_esc(__version__)}</p><nav>{nav}</nav></header><main>"
        + "".join(sections)
        + "</main></body></html>\n"
    )


def _write_atomically(path: Path, text: str) -> None:
    """Writes ``text`` beside ``path`` and renames it into place, so a failed run leaves no half report."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


_CSS = """
:root{--fg:#1f2328;--muted:#57606a;--line:#d0d7de;--band:#f6f8fa;--accent:#0b5cad}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:#fff}
header{padding:1.2em 2em .6em;border-bottom:1px solid var(--line);background:var(--band)}
h1{margin:0 0 .2em;font-size:1.5em}
h2{margin:1.6em 0 .5em;font-size:1.25em;border-bottom:1px solid var(--line);padding-bottom:.2em}
h3{font-size:1.05em;margin:1.2em 0 .4em}
nav a{margin-right:1.2em;color:var(--accent);text-decoration:none;font-weight:600}
main{padding:0 2em 3em;max-width:1400px}
.note{color:var(--muted);font-size:.9em;margin:.3em 0 .7em}
table{border-collapse:collapse;margin:.4em 0 1.2em;font-size:.9em}
th,td{border:1px solid var(--line);padding:.25em .6em;text-align:left;vertical-align:top}
thead th{background:var(--band)}
tbody tr:nth-child(even){background:#fafbfc}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.shape{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.95em}
td.gate{font-weight:700;font-family:ui-monospace,monospace}
tr.nested td:first-child{padding-left:1.6em}
tfoot td{font-weight:600}
table.facts th{background:var(--band);width:8em}
caption{text-align:left;padding:.3em 0;font-size:1em}
ul.notes{margin:.2em 0 1em;font-size:.9em;color:var(--muted)}
.figures{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
figure{margin:0;border:1px solid var(--line);border-radius:6px;padding:.5em;background:#fff;max-width:100%}
figure img{display:block;max-width:100%;height:auto}
figcaption{font-size:.8em;color:var(--muted);margin-top:.3em;max-width:60em}
details.heatmaps{margin:.5em 0}
details.heatmaps figure{width:calc(33.3% - .7em)}
details.heatmaps summary{cursor:pointer;font-weight:600;margin:.3em 0}
figure.half{width:calc(50% - .5em)}
.controls{display:flex;flex-wrap:wrap;gap:1.2em;align-items:center;padding:.6em .8em;background:var(--band);
border:1px solid var(--line);border-radius:6px;position:sticky;top:0;z-index:1}
.controls label{font-weight:600;font-size:.9em;display:flex;align-items:center;gap:.4em}
.controls select,.controls input{font:inherit;font-weight:400}
#tlp-unit{width:14em}
#tlp-unit-number{width:5em}
.legend{margin:.6em 0 .2em;font-size:.85em;color:var(--muted);display:flex;align-items:center;gap:.5em}
.legend b{margin-left:1.5em;color:var(--fg);font-weight:600}
.legend .bar{display:inline-block;width:12em;height:.9em;border:1px solid var(--line);border-radius:2px}
.unit-stats{font-size:.85em;color:var(--muted);margin:.2em 0 .6em;font-variant-numeric:tabular-nums}
.sample{display:flex;align-items:baseline;gap:.8em;border-bottom:1px dashed var(--line);padding:.15em 0}
.sample .label{flex:none;width:5.5em;color:var(--muted);font-size:.8em}
.sample .tlp-tokens{margin:.1em 0 !important}
.tok{padding:.1em .3em;margin:0 .1em;border-radius:.2em;display:inline-block;min-width:.6em;
font-family:ui-monospace,SFMono-Regular,Menlo,monospace;line-height:1.9;white-space:pre}
"""

_SCRIPT = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("tlp-view-data").textContent);
  var layerBox = document.getElementById("tlp-layer");
  var gateBox = document.getElementById("tlp-gate");
  var unitRange = document.getElementById("tlp-unit");
  var unitNumber = document.getElementById("tlp-unit-number");
  var scaleBox = document.getElementById("tlp-scale");
  var legend = document.getElementById("tlp-legend");
  var unitStats = document.getElementById("tlp-unit-stats");
  var samples = document.getElementById("tlp-samples");
  var colours = data.colours;

  function hex(n) { return (n < 16 ? "0" : "") + n.toString(16); }
  function blend(rgb, amount) {
    return "#" + rgb.map(function (c) { return hex(Math.round(255 + (c - 255) * amount)); }).join("");
  }
  function colour(value, signed) {
    if (value === null || !isFinite(value)) { return colours.masked; }
    if (signed) {
      var v = Math.max(-1, Math.min(1, value));
      return blend(v >= 0 ? colours.positive : colours.negative, colours.strength * Math.abs(v));
    }
    return blend(colours.unsigned, colours.strength * Math.max(0, Math.min(1, value)));
  }
  function layer() { return data.layers[Number(layerBox.value)]; }
  function choice() {
    var l = layer();
    for (var k = 0; k < l.choices.length; k++) { if (l.choices[k][0] === gateBox.value) { return l.choices[k]; } }
    return l.choices[0];
  }
  function fillGates(wanted) {
    var l = layer();
    gateBox.textContent = "";
    l.choices.forEach(function (c) {
      var option = document.createElement("option");
      option.value = c[0];
      option.textContent = c[1];
      gateBox.appendChild(option);
    });
    var names = l.choices.map(function (c) { return c[0]; });
    gateBox.value = names.indexOf(wanted) >= 0 ? wanted : names[0];
    unitRange.max = unitNumber.max = String(l.units - 1);
  }
  function setUnit(u) {
    var l = layer();
    u = Math.max(0, Math.min(l.units - 1, Math.round(Number(u)) || 0));
    unitRange.value = unitNumber.value = String(u);
    return u;
  }
  function fmt(x, digits) { return x === null || x === undefined ? "–" : String(Number(Number(x).toPrecision(digits))); }
  function render() {
    var l = layer(), c = choice(), unit = setUnit(unitNumber.value);
    var gate = c[0] === "tanh_c" ? "c" : c[0], signed = c[2], squash = c[0] === "tanh_c";
    var values = l.values[gate];
    var shown = [];
    for (var n0 = 0; n0 < data.samples; n0++) {
      for (var t0 = 0; t0 < l.steps; t0++) {
        var r0 = values[n0][t0][unit];
        if (r0 !== null) { shown.push(squash ? Math.tanh(r0) : r0); }
      }
    }
    var lo = signed ? -1 : 0, hi = 1;
    if (scaleBox.value === "unit" && shown.length) {
      if (signed) {
        hi = Math.max.apply(null, shown.map(Math.abs)) || 1;
        lo = -hi;
      } else {
        lo = Math.min.apply(null, shown);
        hi = Math.max.apply(null, shown);
        if (hi <= lo) { hi = lo + 1; }
      }
    }
    function scaled(v) {
      if (v === null) { return null; }
      return signed ? v / hi : (v - lo) / (hi - lo);
    }
    legend.textContent = "";
    var bar = document.createElement("span");
    bar.className = "bar";
    bar.style.background = signed
      ? "linear-gradient(to right," + blend(colours.negative, colours.strength) + ",#ffffff," +
        blend(colours.positive, colours.strength) + ")"
      : "linear-gradient(to right,#ffffff," + blend(colours.unsigned, colours.strength) + ")";
    legend.appendChild(document.createTextNode(fmt(lo, 3)));
    legend.appendChild(bar);
    legend.appendChild(document.createTextNode(fmt(hi, 3)));
    var what = document.createElement("b");
    what.textContent = l.name + " · " + c[1] + " · unit " + unit +
      (l.reversed ? " · runs backwards (shown in input order)" : "");
    legend.appendChild(what);
    var s = l.unit_stats[gate];
    if (s) {
      var parts = ["unit " + unit + " over the dataset (" + gate + "): mean " + fmt(s.mean[unit], 3),
        "std " + fmt(s.std[unit], 3), "min " + fmt(s.min[unit], 3), "max " + fmt(s.max[unit], 3)];
      if (s.sat_low) { parts.push("< 0.1 " + fmt(s.sat_low[unit], 3), "> 0.9 " + fmt(s.sat_high[unit], 3)); }
      if (s.timescale) { parts.push("timescale " + fmt(s.timescale[unit], 3) + " steps"); }
      unitStats.textContent = parts.join(" · ");
    } else {
      unitStats.textContent = "";
    }
    samples.textContent = "";
    for (var n = 0; n < data.samples; n++) {
      var row = document.createElement("div");
      row.className = "sample";
      var label = document.createElement("span");
      label.className = "label";
      label.textContent = "sample " + n;
      row.appendChild(label);
      var line = document.createElement("div");
      var tokens = l.tokens[n];
      for (var t = 0; t < l.steps; t++) {
        var raw = values[n][t][unit];
        var v = raw === null ? null : (squash ? Math.tanh(raw) : raw);
        var span = document.createElement("span");
        span.className = "tok";
        span.textContent = tokens ? (tokens[t] === "" ? " " : tokens[t]) : String(t);
        span.style.backgroundColor = colour(scaled(v), signed);
        span.title = "step " + t + ", unit " + unit + ": " + (v === null ? "masked" : v.toFixed(data.decimals));
        span.setAttribute("data-value", v === null ? "" : String(v));
        line.appendChild(span);
        line.appendChild(document.createTextNode(" "));
      }
      row.appendChild(line);
      samples.appendChild(row);
    }
    var hash = "#layer=" + encodeURIComponent(l.name) + "&gate=" + encodeURIComponent(c[0]) + "&unit=" + unit +
      (scaleBox.value === "unit" ? "&scale=unit" : "");
    if (location.hash !== hash) {
      try { history.replaceState(null, "", hash); } catch (e) { /* some viewers forbid it */ }
    }
  }
  function selection() {
    var params = new URLSearchParams(location.hash.replace(/^#/, ""));
    return params.has("layer") || params.has("gate") || params.has("unit") ? params : null;
  }
  function readHash(params) {
    var name = params.get("layer");
    for (var k = 0; k < data.layers.length; k++) {
      if (data.layers[k].name === name) { layerBox.value = String(k); }
    }
    fillGates(params.get("gate"));
    setUnit(params.get("unit") || 0);
    scaleBox.value = params.get("scale") === "unit" ? "unit" : "fixed";
  }
  layerBox.addEventListener("change", function () { fillGates(gateBox.value); render(); });
  gateBox.addEventListener("change", render);
  scaleBox.addEventListener("change", render);
  unitRange.addEventListener("input", function () { unitNumber.value = unitRange.value; render(); });
  unitNumber.addEventListener("input", render);
  window.addEventListener("hashchange", function () {
    var params = selection();  // the section links (#tokens) keep the selection
    if (params) { readHash(params); render(); }
  });
  var given = selection();
  readHash(given || new URLSearchParams(""));
  render();
  if (given) { document.getElementById("tokens").scrollIntoView(); }
})();
"""
