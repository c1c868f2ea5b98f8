"""Plots of gate statistics and of one sample's gates: saturation, heatmaps, coloured text, timescales, step means.

Every plotting function returns a :class:`matplotlib.figure.Figure` made without ``pyplot``, so
nothing is shown, no backend is switched and no global figure registry grows; save it with
``fig.savefig("x.png")``, or :func:`save_png` for a small palette PNG, or all at once with
:func:`save_all`. :func:`token_html` returns an HTML fragment and needs no matplotlib.
matplotlib is an optional dependency: ``pip install 'torch-lstm-probe[plots]'``.

The figures follow Karpathy, Johnson and Fei-Fei, "Visualizing and Understanding Recurrent
Networks" (2015): the saturation scatter puts each unit's fraction of left-saturated steps
(gate < 0.1) against its fraction of right-saturated steps (gate > 0.9), one colour per layer.
"""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import InputError
from .stats import SIGMOID_GATES, GateStats

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "saturation_scatter",
    "heatmap",
    "token_html",
    "token_figure",
    "timescale_hist",
    "mean_by_step",
    "save_all",
    "save_png",
    "sample_heatmaps",
    "GATE_NAMES",
]

INSTALL_HINT = "pip install 'torch-lstm-probe[plots]'"
GATE_NAMES = {
    "i": "input gate i",
    "f": "forget gate f",
    "g": "cell candidate g",
    "o": "output gate o",
    "c": "cell state c",
    "h": "hidden state h",
    "z": "update gate z",
    "r": "reset gate r",
    "n": "candidate n",
}
_GATE_ORDER = ("i", "f", "o", "z", "r", "g", "n", "c", "h")
_DPI = 100
_NEGATIVE = (33, 102, 172)  # token colours: blue for -1, red for +1, orange for 1 on a [0, 1] scale
_POSITIVE = (178, 24, 43)
_UNSIGNED = (230, 85, 13)
_MASKED = "#d9d9d9"
_STRENGTH = 0.85  # the colour at |value| = 1: white blended this far toward the end colour


def _matplotlib() -> Any:
    """Imports matplotlib, or says how to install it."""
    try:
        import matplotlib
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError as err:
        raise ImportError(f"Plotting needs matplotlib, which is not installed. Fix: {INSTALL_HINT}.") from err
    return matplotlib


def _figure(width: float, height: float) -> Figure:
    _matplotlib()
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=_DPI, layout="constrained")


def _gate_of(key: str) -> str:
    return key.rsplit("/", 1)[1]


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float64).numpy()
    return np.asarray(value, dtype=np.float64)


def _layer_colours(layers: Sequence[str]) -> dict[str, Any]:
    """One colour per layer, in first-seen order (tab10, then tab20 for more than ten layers)."""
    mpl = _matplotlib()
    cmap = mpl.colormaps["tab10" if len(layers) <= 10 else "tab20"]
    return {layer: cmap(j % cmap.N) for j, layer in enumerate(layers)}


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _check_stats(stats: Any, where: str) -> None:
    if not isinstance(stats, GateStats):
        raise InputError(
            f"{where} takes the GateStats of tlp.gate_stats (or GateStats.load). Received {type(stats).__name__}. "
            "Fix: stats = tlp.gate_stats(model, data)."
        )


def saturation_scatter(stats: GateStats, gates: Sequence[str] | None = None) -> Figure:
    """The gate saturation scatter: each unit's left- against right-saturated fraction, one panel per gate type.

    One panel per sigmoid gate type present (LSTM ``i f o``, GRU ``z r``), x = ``sat_low`` (fraction
    of valid steps the gate is below 0.1), y = ``sat_high`` (above 0.9), one point per unit, one
    colour per layer (a Bidirectional layer's halves are separate layers, e.g. ``"bi/forward"``),
    one legend below the panels.
    Points lie on or below the dashed line x + y = 1; a unit near (0, 0) is never saturated, near
    the line always is, and near (0, 1) is almost always open.

    Args:
        stats: gate statistics from :func:`torch_lstm_probe.gate_stats`.
        gates: gate letters to draw (e.g. ``["f"]``); ``None`` draws every sigmoid gate present.

    Returns:
        The figure: ``fig.axes[:panels]`` are the panels, whose titles count the units never
        saturated; in each, layer ``L``'s points are the collection with gid ``L``, and its
        ``get_offsets()`` are ``(sat_low, sat_high)`` per unit. The last axes holds the legend.

    Raises:
        InputError: ``stats`` has no sigmoid gate (SimpleRNN layers have none), or a letter of
            ``gates`` is not among them.
        ImportError: matplotlib is not installed.

    Example:
        >>> stats = tlp.gate_stats(model, ids)
        >>> saturation_scatter(stats).savefig("saturation.png")
    """
    _check_stats(stats, "saturation_scatter")
    keys = [k for k in stats if "sat_low" in stats[k]]
    present = [g for g in _GATE_ORDER if any(_gate_of(k) == g for k in keys)]
    if not present:
        raise InputError(
            f"saturation_scatter needs sigmoid gates (LSTM i f o, GRU z r). Received statistics of "
            f"{sorted(set(stats.cells.values())) or 'no layer'}: {list(stats)[:6]}. Fix: pass the statistics of an "
            "LSTM or GRU layer."
        )
    if gates is not None:
        wanted = [gates] if isinstance(gates, str) else list(gates)
        unknown = [g for g in wanted if g not in present]
        if unknown or not wanted:
            raise InputError(
                f"saturation_scatter: gates {unknown or wanted!r} have no saturation statistics. Expected some of "
                f"{present}."
            )
        present = [g for g in present if g in wanted]
        keys = [k for k in keys if _gate_of(k) in present]
    layers = stats.layers
    names = _unique([layers[k] for k in keys])
    colours = _layer_colours(names)
    units = {layers[k]: int(stats[k]["sat_low"].shape[0]) for k in keys}
    legend_labels = [f"{name} ({units[name]} units)" for name in names]
    width = 3.4 * len(present) + 0.4
    columns = max(1, min(len(names), int(width / (0.1 * max(len(t) for t in legend_labels) + 0.6))))
    legend_height = 0.3 * math.ceil(len(names) / columns) + 0.2
    fig = _figure(width, 3.9 + legend_height)
    grid = fig.add_gridspec(2, len(present), height_ratios=(3.9, legend_height))
    axes = [fig.add_subplot(grid[0, j]) for j in range(len(present))]
    for ax, gate in zip(axes, present):
        ax.plot([0, 1], [1, 0], linestyle="--", color="0.6", linewidth=1, label="_boundary")
        total = never = 0
        for key in keys:
            if _gate_of(key) != gate:
                continue
            layer = layers[key]
            low = _numpy(stats[key]["sat_low"])  # (units,)
            high = _numpy(stats[key]["sat_high"])  # (units,)
            points = ax.scatter(low, high, s=16, alpha=0.75, color=colours[layer], label=layer, linewidths=0)
            points.set_gid(layer)
            total += low.shape[0]
            never += int(((low + high) == 0).sum())
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(-0.03, 1.03)
        ax.set_aspect("equal")
        ax.set_title(f"{GATE_NAMES[gate]}\n{never} of {total} units never saturated", fontsize="medium")
        ax.set_xlabel("fraction left-saturated (< 0.1)")
        ax.grid(True, linewidth=0.4, alpha=0.5)
    axes[0].set_ylabel("fraction right-saturated (> 0.9)")
    from matplotlib.lines import Line2D

    holder = fig.add_subplot(grid[1, :])
    holder.axis("off")
    handles = [
        Line2D([], [], linestyle="none", marker="o", markersize=5, color=colours[name], alpha=0.75) for name in names
    ]
    holder.legend(handles, legend_labels, loc="center", ncols=columns, fontsize="small", frameon=False)
    return fig


def _as_matrix(values: Any, where: str) -> np.ndarray:
    array = _numpy(values)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise InputError(
            f"{where} takes one sample's values, (time, units). Received shape {tuple(array.shape)}. "
            "Fix: pass acts[key][j] for sample j."
        )
    return array


def _check_tokens(tokens: Sequence[str], steps: int, where: str) -> list[str]:
    if isinstance(tokens, str):
        raise InputError(f"{where}: tokens must be a list of strings, one per step. Received one string.")
    tokens = [str(t) for t in tokens]
    if len(tokens) != steps:
        raise InputError(
            f"{where}: {len(tokens)} tokens for {steps} time steps. Expected one token per step. Fix: pass the "
            "sample's tokens, padding included, or slice the values to the tokens."
        )
    return tokens


def _is_signed(array: np.ndarray, signed: bool | None) -> bool:
    if signed is not None:
        return signed
    finite = array[np.isfinite(array)]
    return bool(finite.size and finite.min() < 0)


def heatmap(
    values: Any,
    tokens: Sequence[str] | None = None,
    title: str | None = None,
    units: Sequence[int] | None = None,
    *,
    signed: bool | None = None,
) -> Figure:
    """A unit x time heatmap of one sample's gate or state.

    Signed values (e.g. ``c``, ``h``, ``g``) use a diverging colour map centred at 0 and symmetric
    about it; values in [0, 1] (sigmoid gates) use a sequential map over exactly [0, 1]. NaN
    steps (e.g. masked ones set to NaN) stay blank.

    Args:
        values: ``(time, units)`` tensor or array (a leading batch axis of 1 is dropped), in the
            order the gates are stored: processing order, reversed for ``go_backwards`` layers
            and Bidirectional backward halves.
        tokens: one label per time step, in the same order as ``values``.
        title: the figure's title.
        units: indices of the units to draw, in that order (default: every unit).
        signed: force the diverging (``True``) or the [0, 1] (``False``) scale; ``None`` picks the
            diverging one when some value is negative.

    Returns:
        The figure; its first image's array is ``values[:, units].T`` (units x time).

    Raises:
        InputError: ``values`` is not ``(time, units)``, a unit is out of range, or the tokens do
            not match the time steps.
        ImportError: matplotlib is not installed.

    Example:
        >>> acts = tlp.probe(model, ids[:1], gates=True)
        >>> heatmap(acts["lstm/gates/c"][0], tokens=["well", "done", "<pad>", "<pad>"]).savefig("c.png")
    """
    array = _as_matrix(values, "heatmap")
    steps, width = array.shape
    if units is not None:
        rows = [int(u) for u in units]
        bad = [u for u in rows if not 0 <= u < width]
        if bad or not rows:
            raise InputError(f"heatmap: units {bad or rows} out of range. Expected indices in [0, {width}).")
    else:
        rows = list(range(width))
    if tokens is not None:
        tokens = _check_tokens(tokens, steps, "heatmap")
    image = array[:, rows].T  # (units, time)
    is_signed = _is_signed(image, signed)
    if is_signed:
        finite = np.abs(image[np.isfinite(image)])
        vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
        cmap, vmin = "RdBu_r", -vmax
    else:
        cmap, vmin, vmax = "viridis", 0.0, 1.0
    label_width = max((len(t) for t in tokens), default=0) if tokens else 0
    fig_width = min(max(4.0, 0.32 * steps + 2.2), 16.0)
    stride = max(1, math.ceil(steps / 60))
    # tokens lie flat when they fit side by side (about 0.075 inch per character at small size)
    vertical = len(range(0, steps, stride)) * (label_width + 1) * 0.075 > fig_width - 1.8
    fig = _figure(
        fig_width,
        min(max(2.6, 0.08 * len(rows) + 1.4 + (0.07 * min(label_width, 20) if vertical else 0.0)), 10.0),
    )
    ax = fig.subplots()
    im = ax.imshow(image, aspect="auto", interpolation="nearest", cmap=cmap, vmin=vmin, vmax=vmax)
    fig.colorbar(im, ax=ax, shrink=0.9, pad=0.02)
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(nbins=min(len(rows), 12), integer=True))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: str(rows[int(y)]) if 0 <= int(y) < len(rows) else ""))
    ax.set_ylabel("unit")
    if tokens is not None:
        ticks = list(range(0, steps, stride))
        ax.set_xticks(ticks)
        ax.set_xticklabels([tokens[t] for t in ticks], rotation=90 if vertical else 0, fontsize="small")
        ax.set_xlabel("token")
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=min(steps, 16), integer=True))
        ax.set_xlabel("step")
    if title:
        ax.set_title(title)
    return fig


def _blend(colour: tuple[int, int, int], amount: float) -> str:
    """White blended toward ``colour`` by ``amount`` in [0, 1], as ``#rrggbb``."""
    r, g, b = (round(255 + (c - 255) * amount) for c in colour)
    return f"#{r:02x}{g:02x}{b:02x}"


def _token_values(
    values: Any, tokens: Sequence[str], unit: int | None, signed: bool | None, where: str
) -> tuple[np.ndarray, list[str], bool]:
    """One unit's values (time,), the tokens as strings, and whether the signed scale applies."""
    array = _numpy(values)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 2:
        if isinstance(unit, bool) or not isinstance(unit, (int, np.integer)) or not 0 <= unit < array.shape[1]:
            raise InputError(
                f"{where}: values of shape {tuple(array.shape)} need unit in [0, {array.shape[1]}). "
                f"Received unit={unit!r}. Fix: {where}(values, tokens, unit=3)."
            )
        array = array[:, int(unit)]
    elif array.ndim != 1:
        raise InputError(
            f"{where} takes one unit's values (time,) or one sample's (time, units). Received shape "
            f"{tuple(array.shape)}."
        )
    return array, _check_tokens(tokens, array.shape[0], where), _is_signed(array, signed)


def _token_colour(value: float, signed: bool) -> str:
    """The background of a token: white at 0, toward red (+1) / blue (-1), or orange (1) on [0, 1]."""
    if not math.isfinite(value):
        return _MASKED
    if signed:
        clipped = max(-1.0, min(1.0, value))
        return _blend(_POSITIVE if clipped >= 0 else _NEGATIVE, _STRENGTH * abs(clipped))
    return _blend(_UNSIGNED, _STRENGTH * max(0.0, min(1.0, value)))


def token_html(
    values: Any,
    tokens: Sequence[str],
    unit: int | None = None,
    title: str | None = None,
    *,
    signed: bool | None = None,
) -> str:
    """Text coloured token by token by one unit's value: an HTML fragment with inline styles and no script.

    Each token is one ``<span>`` whose background goes from white (0) to red (+1) or blue (-1) on
    the signed scale (values clipped to [-1, 1], e.g. ``tanh(c)``), or from white (0) to orange (1)
    on the [0, 1] scale of a sigmoid gate; the exact value is in the span's ``title`` (a tooltip).
    NaN values (masked steps) are grey. Tokens and the title are HTML-escaped. Needs no matplotlib.

    Args:
        values: ``(time,)`` one unit's values, or ``(time, units)`` with ``unit`` choosing the
            column (a leading batch axis of 1 is dropped).
        tokens: one string per time step, in the same order as ``values``.
        unit: the unit to show when ``values`` has a units axis; also named in the tooltips.
        title: a caption above the text.
        signed: force the signed (``True``) or the [0, 1] (``False``) scale; ``None`` picks the
            signed one when some value is negative, so pass ``True`` for ``tanh(c)`` or ``h``.

    Returns:
        ``<div>`` … ``</div>`` with exactly one ``<span>`` per token.

    Raises:
        InputError: the shapes, the unit or the number of tokens do not fit.

    Example:
        >>> acts = tlp.probe(model, ids[:1], gates=True)
        >>> token_html(torch.tanh(acts["lstm/gates/c"][0]), ["well", "done", "", ""], unit=7, signed=True)
    """
    array, tokens, is_signed = _token_values(values, tokens, unit, signed, "token_html")
    spans = []
    for step, (token, value) in enumerate(zip(tokens, array.tolist())):
        where = f"step {step}" + (f", unit {int(unit)}" if unit is not None else "")
        tip = f"{where}: {value:.4f}" if math.isfinite(value) else f"{where}: masked"
        spans.append(
            f'<span title="{html.escape(tip, quote=True)}" style="background-color:{_token_colour(value, is_signed)};'
            'padding:0.1em 0.25em;margin:0 0.1em;border-radius:0.2em;display:inline-block;min-width:0.5em;">'
            f"{html.escape(token, quote=True)}</span>"
        )
    if is_signed:
        scale = (
            f'<b style="color:{_blend(_NEGATIVE, 1.0)}">blue = -1</b> · white = 0 · '
            f'<b style="color:{_blend(_POSITIVE, 1.0)}">red = +1</b>'
        )
    else:
        scale = f'white = 0 · <b style="color:{_blend(_UNSIGNED, 1.0)}">orange = 1</b>'
    caption = f"<b>{html.escape(title, quote=True)}</b> " if title else ""
    return (
        '<div class="tlp-tokens" style="font-family:ui-monospace,monospace;line-height:2;margin:0.5em 0;">'
        f'<div style="font-size:0.85em;color:#444;">{caption}({scale})</div>'
        f"<div>{' '.join(spans)}</div></div>"
    )


def token_figure(
    values: Any,
    tokens: Sequence[str],
    unit: int | None = None,
    title: str | None = None,
    *,
    signed: bool | None = None,
    width: float = 8.0,
) -> Figure:
    """The coloured text of :func:`token_html` as a figure, for places that show images but not HTML.

    Tokens are laid out left to right in a monospace font and wrap at ``width`` inches; each
    token's box has the colour :func:`token_html` gives it, and a colour bar shows the scale.

    Args:
        values: ``(time,)`` or ``(time, units)`` with ``unit``, as for :func:`token_html`.
        tokens: one string per time step (drawn as plain text, never as math).
        unit: the unit to show when ``values`` has a units axis.
        title: the figure's title.
        signed: the scale, as for :func:`token_html`.
        width: the figure's width in inches.

    Returns:
        The figure; its axes' texts are the tokens in order, each with its background colour as
        the text's bbox face colour.

    Raises:
        InputError: the shapes, the unit or the number of tokens do not fit.
        ImportError: matplotlib is not installed.

    Example:
        >>> token_figure(torch.tanh(acts["lstm/gates/c"][0]), tokens, unit=7, signed=True).savefig("tokens.png")
    """
    array, tokens, is_signed = _token_values(values, tokens, unit, signed, "token_figure")
    char, gap, line, margin = 0.1, 0.16, 0.42, 0.25  # inches: a monospace character at 11 pt, spacing
    places: list[tuple[float, int]] = []  # (x, row) of each token
    x, row = margin, 0
    for token in tokens:
        span = max(len(token), 1) * char + gap
        if x + span > width - margin and x > margin:
            x, row = margin, row + 1
        places.append((x, row))
        x += span
    top = 0.55 if title else 0.25
    height = top + (row + 1) * line + 0.75
    fig = _figure(width, height)
    fig.set_layout_engine("none")
    ax = fig.add_axes((0.0, 0.75 / height, 1.0, 1 - (0.75 + top - 0.1) / height))
    ax.set_xlim(0, width)
    ax.set_ylim((row + 1) * line, 0)
    ax.axis("off")
    for (x, r), token, value in zip(places, tokens, array.tolist()):
        ax.text(
            x,
            (r + 0.5) * line,
            token or " ",
            family="monospace",
            fontsize=11,
            va="center",
            ha="left",
            parse_math=False,
            bbox={"boxstyle": "round,pad=0.25", "facecolor": _token_colour(value, is_signed), "edgecolor": "none"},
        )
    if title:
        fig.suptitle(title, y=1 - 0.12 / height, va="top", fontsize="medium")
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LinearSegmentedColormap, Normalize

    if is_signed:
        ends = [_blend(_NEGATIVE, _STRENGTH), "#ffffff", _blend(_POSITIVE, _STRENGTH)]
        norm = Normalize(-1.0, 1.0)
    else:
        ends = ["#ffffff", _blend(_UNSIGNED, _STRENGTH)]
        norm = Normalize(0.0, 1.0)
    bar = fig.add_axes((0.3, 0.32 / height, 0.4, 0.14 / height))
    colorbar = fig.colorbar(
        ScalarMappable(norm, LinearSegmentedColormap.from_list("tokens", ends)), cax=bar, orientation="horizontal"
    )
    colorbar.set_ticks([-1.0, -0.5, 0.0, 0.5, 1.0] if is_signed else [0.0, 0.5, 1.0])
    bar.tick_params(labelsize="x-small")
    return fig


def _grid(n: int, width: float, height: float) -> tuple[Figure, list[Any]]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = _figure(width * cols + 0.4, height * rows + 0.3)
    axes = list(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def timescale_hist(stats: GateStats) -> Figure:
    """Forget-gate timescales per LSTM layer: how many steps each unit remembers.

    The timescale of a step is ``-1 / ln f`` (the number of steps over which the forget gate
    ``f`` alone shrinks the cell state by ``1/e``). One panel per LSTM layer (Bidirectional halves
    apart), log-scaled x axis in steps from 1 to 10^4 (values outside in the end bins): filled,
    the distribution over every unit and valid step (``timescale_hist``); outlined, the
    distribution of the units' mean timescales (``timescale``) over the same bins; the dotted line
    is the median unit.

    Args:
        stats: gate statistics from :func:`torch_lstm_probe.gate_stats`.

    Returns:
        The figure; each panel's first patch (the filled stairs) holds ``timescale_hist / sum``,
        the second the fraction of units per bin.

    Raises:
        InputError: ``stats`` has no LSTM forget gate.
        ImportError: matplotlib is not installed.

    Example:
        >>> timescale_hist(tlp.gate_stats(model, ids)).savefig("timescales.png")
    """
    _check_stats(stats, "timescale_hist")
    _matplotlib()
    from matplotlib.ticker import FuncFormatter, LogLocator

    keys = [k for k in stats if "timescale" in stats[k]]
    if not keys:
        raise InputError(
            f"timescale_hist needs LSTM forget gates. Received statistics of {list(stats)[:6]}. Fix: pass the "
            "statistics of an LSTM layer."
        )
    layers = stats.layers
    colours = _layer_colours([layers[k] for k in keys])
    fig, axes = _grid(len(keys), 3.8, 3.0)
    for ax, key in zip(axes, keys):
        entry = stats[key]
        edges = _numpy(entry["timescale_edges"])  # (bins + 1,) log10 steps
        steps = _numpy(entry["timescale_hist"])  # (bins,)
        unit_tau = _numpy(entry["timescale"])  # (units,)
        unit_tau = unit_tau[np.isfinite(unit_tau)]
        per_unit = _unit_histogram(unit_tau, edges)
        colour = colours[layers[key]]
        ax.stairs(steps / max(steps.sum(), 1), 10**edges, fill=True, color=colour, alpha=0.35, label="every step")
        ax.stairs(per_unit, 10**edges, color=colour, linewidth=1.6, label="unit means")
        if unit_tau.size:
            median = float(np.median(unit_tau))
            ax.axvline(median, color="0.25", linestyle=":", linewidth=1.2, label=f"median unit: {median:.3g} steps")
        ax.set_xscale("log")
        lo, hi = _shown_range(edges, steps + per_unit)
        ax.set_xlim(lo, hi)
        subs = (1.0, 2.0, 5.0) if hi / lo <= 200 else (1.0,)  # label 2 and 5 too when under two decades show
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_ylim(bottom=0)
        ax.set_title(f"{layers[key]}: {unit_tau.size} units, {entry['count']} steps", fontsize="medium")
        ax.set_xlabel("timescale -1/ln f (steps)")
        ax.set_ylabel("fraction")
        ax.legend(fontsize="x-small", loc="upper right")
    return fig


def _shown_range(edges: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
    """The x range in steps: the occupied bins and half a decade either side, within the edges."""
    occupied = np.flatnonzero(counts > 0)
    if not occupied.size:
        return 10 ** edges[0], 10 ** edges[-1]
    lo = max(edges[0], edges[occupied[0]] - 0.5)
    hi = min(edges[-1], edges[occupied[-1] + 1] + 0.5)
    return 10**lo, 10**hi


def _unit_histogram(unit_tau: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Fraction of units per log10 bin of ``edges``, values outside counted in the end bins."""
    bins = edges.shape[0] - 1
    if not unit_tau.size:
        return np.zeros(bins)
    log_tau = np.log10(np.maximum(unit_tau, 1e-300))
    index = np.clip(np.floor((log_tau - edges[0]) * (bins / (edges[-1] - edges[0]))), 0, bins - 1).astype(np.int64)
    return np.bincount(index, minlength=bins) / unit_tau.size


def mean_by_step(stats: GateStats, gate: str = "f") -> Figure:
    """The mean of one gate over units and valid samples at each time step, one line per layer.

    Steps are in processing order (reversed time for ``go_backwards`` layers and Bidirectional
    backward halves); a step no sample reaches (all masked) leaves a gap.

    Args:
        stats: gate statistics from :func:`torch_lstm_probe.gate_stats`.
        gate: the gate letter (LSTM ``i f g o c h``, GRU ``z r n h``, SimpleRNN ``h``).

    Returns:
        The figure; the line labelled ``L`` holds layer ``L``'s ``mean_by_step`` (NaN where no
        value was seen).

    Raises:
        InputError: no layer in ``stats`` has that gate.
        ImportError: matplotlib is not installed.

    Example:
        >>> mean_by_step(tlp.gate_stats(model, ids), gate="i").savefig("input_gate_by_step.png")
    """
    _check_stats(stats, "mean_by_step")
    keys = [k for k in stats if _gate_of(k) == gate]
    if not keys:
        present = [g for g in _GATE_ORDER if any(_gate_of(k) == g for k in stats)]
        raise InputError(f"mean_by_step: no layer has gate {gate!r}. Expected one of {present}.")
    layers = stats.layers
    colours = _layer_colours([layers[k] for k in keys])
    longest = max(int(stats[k]["mean_by_step"].shape[0]) for k in keys)
    legend_width = 0.075 * max(len(layers[k]) for k in keys) + 0.6  # inches beside the plot
    fig = _figure(min(max(4.0, 0.25 * longest + 2.6), 12.0) + legend_width, 3.4)
    ax = fig.subplots()
    for key in keys:
        means = _numpy(stats[key]["mean_by_step"])  # (T,)
        counts = _numpy(stats[key]["count_by_step"])  # (T,)
        means = np.where(counts > 0, means, np.nan)
        ax.plot(
            np.arange(means.shape[0]),
            means,
            marker="o" if means.shape[0] <= 40 else None,
            markersize=4,
            color=colours[layers[key]],
            label=layers[key],
        )
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if all(gate in SIGMOID_GATES.get(stats.cells.get(k, ""), ()) for k in keys):
        ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("step (processing order)")
    ax.set_ylabel(f"mean {gate}")
    ax.set_title(f"mean {GATE_NAMES.get(gate, gate)} by step")
    ax.grid(True, linewidth=0.4, alpha=0.5)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # never over a line
    return fig


def save_png(fig: Figure, path: str | Path, dpi: int = _DPI) -> Path:
    """Saves a figure as a small PNG: rendered at ``dpi``, then reduced to a 256-colour palette.

    Plots have few colours, so the palette costs nothing visible (colour bars get 256 steps) and
    makes the files two to three times smaller. Pillow, which matplotlib depends on, does it.

    Args:
        fig: the figure.
        path: the file to write.
        dpi: dots per inch.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Example:
        >>> save_png(saturation_scatter(stats), "saturation.png")
    """
    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    buffer.seek(0)
    with Image.open(buffer) as image:
        palette = image.convert("RGB").quantize(256)
    target = Path(path)
    palette.save(target, format="PNG")
    return target


def _file_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@-]+", "_", text).strip("_") or "x"


def save_all(
    stats: GateStats,
    out_dir: str | Path,
    sample: Mapping[str, Any] | None = None,
    tokens: Sequence[str] | None = None,
    *,
    reversed_keys: Collection[str] | None = None,
) -> list[Path]:
    """Writes every plot of the statistics (and of one sample) as small PNG files (:func:`save_png`).

    Files: ``saturation.png`` (when a sigmoid gate is present), ``timescales.png`` (when an LSTM
    forget gate is), ``mean_by_step_<g>.png`` for each sigmoid gate letter ``g`` present, and,
    with ``sample``, ``heatmap_<key>.png`` for each of its gate keys (``/`` spelled ``_``).

    Args:
        stats: gate statistics from :func:`torch_lstm_probe.gate_stats`.
        out_dir: the folder (created when missing).
        sample: one sample's probe values, e.g. ``tlp.probe(model, x[:1], gates=True)``: gate key
            -> ``(1, time, units)`` or ``(time, units)``. Keys without ``/gates/`` are skipped.
        tokens: the sample's tokens in input time order, one per step; for a model that takes strings,
            ``text_tokens(model, [text])[0]`` (:mod:`torch_lstm_probe.analysis.vocab`) gives the words its
            own text layer made.
        reversed_keys: gate keys or layer paths whose values run in reversed time, so their
            heatmaps get the tokens reversed (see :func:`sample_heatmaps`).

    Returns:
        The paths written, in that order.

    Raises:
        InputError: as the plotting functions; a sample value with more than one sample.
        ImportError: matplotlib is not installed.

    Example:
        >>> stats = tlp.gate_stats(model, ids)
        >>> save_all(stats, "plots", sample=tlp.probe(model, ids[:1], gates=True), tokens=["well", "done", "", ""])
    """
    _check_stats(stats, "save_all")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(fig: Figure, name: str) -> None:
        written.append(save_png(fig, out / name))

    sigmoid = [g for g in _GATE_ORDER if any("sat_low" in stats[k] and _gate_of(k) == g for k in stats)]
    if sigmoid:
        save(saturation_scatter(stats), "saturation.png")
    if any("timescale" in stats[k] for k in stats):
        save(timescale_hist(stats), "timescales.png")
    for gate in sigmoid:
        save(mean_by_step(stats, gate), f"mean_by_step_{gate}.png")
    if sample is not None:
        for key, fig in sample_heatmaps(stats, sample, tokens, reversed_keys=reversed_keys).items():
            save(fig, f"heatmap_{_file_part(key)}.png")
    return written


def sample_heatmaps(
    stats: GateStats,
    sample: Mapping[str, Any],
    tokens: Sequence[str] | None = None,
    *,
    reversed_keys: Collection[str] | None = None,
) -> dict[str, Figure]:
    """A :func:`heatmap` of every gate of one sample, titled and scaled by what each gate is.

    Sigmoid gates (per ``stats.cells``) get the [0, 1] scale, the others the diverging one; the
    tokens are reversed for gates that run in reversed time, whose titles say so.

    Args:
        stats: gate statistics from :func:`torch_lstm_probe.gate_stats` (for the cell kinds).
        sample: one sample's probe values: gate key -> ``(1, time, units)`` or ``(time, units)``;
            keys without ``/gates/`` (layer outputs, masks) are skipped.
        tokens: the sample's tokens in input time order, one per step.
        reversed_keys: gate keys or layer paths whose values run in reversed time (``go_backwards``
            layers; an activations folder's index says ``"flip": true``). ``None``: the
            Bidirectional backward halves (``"<layer>/backward"``), which always run reversed.

    Returns:
        Gate key -> figure, in the order of ``sample``.

    Raises:
        InputError: a value is not one sample's ``(time, units)``, or the tokens do not fit.
        ImportError: matplotlib is not installed.

    Example:
        >>> figs = sample_heatmaps(stats, tlp.probe(model, ids[:1], gates=True), ["well", "done", "", ""])
    """
    _check_stats(stats, "sample_heatmaps")
    backward = set(reversed_keys) if reversed_keys is not None else None
    figures: dict[str, Figure] = {}
    for key, value in sample.items():
        if "/gates/" not in key:
            continue
        array = _as_matrix(value, f"sample_heatmaps: sample[{key!r}]")
        layer = key.rsplit("/gates/", 1)[0]
        flipped = layer.endswith("/backward") if backward is None else (key in backward or layer in backward)
        labels = None
        if tokens is not None:
            labels = _check_tokens(tokens, array.shape[0], f"sample_heatmaps: sample[{key!r}]")
            labels = labels[::-1] if flipped else labels
        gate = _gate_of(key)
        cell = stats.cells.get(key, "")
        title = f"{layer}: {GATE_NAMES.get(gate, gate)}" + (" (reversed time)" if flipped else "")
        signed = None if not cell else gate not in SIGMOID_GATES.get(cell, ())
        figures[key] = heatmap(array, tokens=labels, title=title, signed=signed)
    return figures
