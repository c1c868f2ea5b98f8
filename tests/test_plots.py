"""Plots of gate statistics: each kind renders to a non-blank PNG and draws exactly the statistics' numbers."""

from __future__ import annotations

import html
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")

from matplotlib.image import imread  # noqa: E402

import torch_lstm_probe as tlp  # noqa: E402
from tests.test_goldens import GOLDENS, golden_inputs, load_golden  # noqa: E402
from torch_lstm_probe.analysis import (  # noqa: E402
    GateStats,
    gate_stats,
    plots,  # noqa: E402
)
from torch_lstm_probe.errors import InputError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "torch_lstm_probe" / "examples" / "sentiment_lstm.keras"


@pytest.fixture(scope="module")
def example() -> tuple[tlp.KerasModel, np.ndarray]:
    model = tlp.load_keras(EXAMPLE)
    ids = np.random.default_rng(0).integers(0, 15, size=(48, 4)).astype(np.int32)  # (N, T)
    return model, ids


@pytest.fixture(scope="module")
def masked() -> tuple[tlp.KerasModel, np.ndarray]:
    """LSTM -> GRU -> Bidirectional(LSTM) over padded rows (one fully padded)."""
    arrays, _ = load_golden("keras_masked_lstm_gru")
    return tlp.load_keras(GOLDENS / "keras_masked_lstm_gru.keras"), golden_inputs(arrays)[0]


@pytest.fixture(scope="module")
def stats_by_case(example, masked) -> dict[str, GateStats]:
    return {
        "example": gate_stats(example[0], example[1], progress=False),
        "masked": gate_stats(masked[0], masked[1], progress=False),
    }


def check_png(path: Path, min_bytes: int = 2000) -> None:
    assert path.is_file() and path.stat().st_size > min_bytes, f"{path} is missing or tiny"
    pixels = imread(str(path))  # (H, W, C) floats in [0, 1]
    assert pixels.ndim == 3 and min(pixels.shape[:2]) > 100
    assert float(pixels[..., :3].var()) > 1e-3, f"{path} looks blank"


def layer_points(ax, layer: str) -> np.ndarray:
    found = [c for c in ax.collections if c.get_gid() == layer]
    assert len(found) == 1, f"expected one collection for {layer!r}, found {[c.get_gid() for c in ax.collections]}"
    return np.asarray(found[0].get_offsets())


@pytest.mark.parametrize("case", ["example", "masked"])
def test_saturation_scatter_draws_each_units_fractions(stats_by_case, case):
    stats = stats_by_case[case]
    fig = plots.saturation_scatter(stats)
    expected_gates = ["i", "f", "o"] + (["z", "r"] if case == "masked" else [])
    panels = fig.axes[: len(expected_gates)]
    assert [ax.get_title().split("\n")[0] for ax in panels] == [plots.GATE_NAMES[g] for g in expected_gates]
    for ax, gate in zip(panels, expected_gates):
        keys = [k for k in stats if k.endswith(f"/gates/{gate}")]
        assert len(ax.collections) == len(keys)
        units = sum(int(stats[k]["sat_low"].shape[0]) for k in keys)
        never = sum(int(((stats[k]["sat_low"] + stats[k]["sat_high"]) == 0).sum()) for k in keys)
        assert ax.get_title().split("\n")[1] == f"{never} of {units} units never saturated"
        for key in keys:
            entry = stats[key]
            points = layer_points(ax, stats.layers[key])  # (units, 2)
            expected = torch.stack([entry["sat_low"], entry["sat_high"]], dim=1).numpy()
            np.testing.assert_allclose(points, expected, rtol=0, atol=0)
        assert ax.get_xlim()[0] <= 0 and ax.get_xlim()[1] >= 1
        boundary = ax.lines[0].get_xydata()
        np.testing.assert_allclose(boundary, [[0, 1], [1, 0]])
    legend = fig.axes[-1].get_legend()
    layers = list(dict.fromkeys(stats.layers[k] for k in stats if "sat_low" in stats[k]))
    assert [t.get_text().split(" (")[0] for t in legend.get_texts()] == layers
    if case == "masked":  # both Bidirectional halves are layers of their own, in their own colours
        f_axis = fig.axes[1]
        halves = [c for c in f_axis.collections if c.get_gid().startswith("bidirectional/")]
        assert {c.get_gid() for c in halves} == {"bidirectional/forward", "bidirectional/backward"}
        assert not np.allclose(halves[0].get_facecolor(), halves[1].get_facecolor())


def test_saturation_scatter_selects_gates(stats_by_case):
    fig = plots.saturation_scatter(stats_by_case["masked"], gates=["f", "z"])
    assert [ax.get_title().split("\n")[0] for ax in fig.axes[:-1]] == [plots.GATE_NAMES[g] for g in ("f", "z")]
    with pytest.raises(InputError, match=r"gates \['n'\] have no saturation statistics"):
        plots.saturation_scatter(stats_by_case["masked"], gates=["n"])


@pytest.mark.parametrize("signed", [True, False], ids=["cell_state", "forget_gate"])
def test_heatmap_shows_the_values_with_tokens(example, signed, tmp_path):
    model, ids = example
    acts = tlp.probe(model, ids[:1], gates=True)
    key = "lstm/gates/c" if signed else "lstm/gates/f"
    values = acts[key][0]  # (T, units)
    tokens = ["could", "<have>", "done", "better"]
    fig = plots.heatmap(values, tokens=tokens, title=key)
    image = fig.axes[0].images[0]
    np.testing.assert_array_equal(np.asarray(image.get_array()), values.double().numpy().T)
    vmin, vmax = image.get_clim()
    if signed:
        assert vmin == -vmax and vmax == pytest.approx(float(values.abs().max()))
        assert image.get_cmap().name == "RdBu_r"
    else:
        assert (vmin, vmax) == (0.0, 1.0)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == tokens
    assert fig.axes[0].get_title() == key
    if signed:  # the PNG of each statistics plot is checked in test_save_all_writes_every_plot
        check_png(plots.save_png(fig, tmp_path / "heatmap.png"))


def test_heatmap_selected_units_and_errors():
    values = np.linspace(-1, 1, 5 * 6).reshape(5, 6)  # (T, units)
    fig = plots.heatmap(values, units=[4, 1])
    np.testing.assert_array_equal(np.asarray(fig.axes[0].images[0].get_array()), values[:, [4, 1]].T)
    with pytest.raises(InputError, match=r"3 tokens for 5 time steps"):
        plots.heatmap(values, tokens=["a", "b", "c"])
    with pytest.raises(InputError, match=r"units \[6\] out of range"):
        plots.heatmap(values, units=[6])
    with pytest.raises(InputError, match=r"Received shape \(2, 5, 6\)"):
        plots.heatmap(np.zeros((2, 5, 6)))


def test_token_html_colours_every_escaped_token():
    values = np.array([[0.5, -0.9], [-0.25, 0.0], [float("nan"), 1.5]])  # (T, units)
    tokens = ["<b>", 'say "hi"', "&amp"]
    fragment = plots.token_html(values, tokens, unit=0, title="unit <0>")
    assert fragment.count("<span") == len(tokens) == fragment.count("</span>")
    for token in tokens:
        assert f">{html.escape(token, quote=True)}</span>" in fragment
    assert "><b></span>" not in fragment and '>say "hi"</span>' not in fragment  # no raw token markup
    assert "unit &lt;0&gt;" in fragment and "<script" not in fragment
    titles = re.findall(r'<span title="([^"]*)" style="background-color:(#[0-9a-f]{6})', fragment)
    assert [t for t, _ in titles] == ["step 0, unit 0: 0.5000", "step 1, unit 0: -0.2500", "step 2, unit 0: masked"]
    colours = [c for _, c in titles]
    assert colours[0] == plots._blend(plots._POSITIVE, 0.85 * 0.5)  # red side, half strength
    assert colours[1] == plots._blend(plots._NEGATIVE, 0.85 * 0.25)  # blue side
    assert colours[2] == plots._MASKED
    # one unit's values in [0, 1] use the orange scale; a value above 1 is clipped for colour only
    gates = plots.token_html(np.array([0.0, 1.0, 2.0]), ["a", "b", "c"])
    spans = re.findall(r'title="([^"]*)" style="background-color:(#[0-9a-f]{6})', gates)
    assert spans[0][1] == "#ffffff" and spans[1][1] == spans[2][1] == plots._blend(plots._UNSIGNED, 0.85)
    assert spans[2][0] == "step 2: 2.0000"


def test_token_html_errors():
    with pytest.raises(InputError, match=r"need unit in \[0, 2\)"):
        plots.token_html(np.zeros((3, 2)), ["a", "b", "c"])
    with pytest.raises(InputError, match=r"2 tokens for 3 time steps"):
        plots.token_html(np.zeros(3), ["a", "b"])


def test_token_figure_boxes_match_the_html_colours(tmp_path):
    values = torch.tensor([0.8, -0.6, 0.1, 0.0, -1.0])  # (T,)
    tokens = ["$x$", "not", "a", "", "bad"]
    fig = plots.token_figure(values, tokens, title="tanh(c)", signed=True)
    texts = fig.axes[0].texts
    assert [t.get_text() for t in texts] == ["$x$", "not", "a", " ", "bad"]
    for text, value in zip(texts, values.tolist()):
        expected = plots._token_colour(value, True)
        assert np.allclose(
            text.get_bbox_patch().get_facecolor()[:3], [int(expected[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        )
    check_png(plots.save_png(fig, tmp_path / "tokens.png"), min_bytes=1000)


@pytest.mark.parametrize("case", ["example", "masked"])
def test_timescale_hist_draws_the_step_and_unit_distributions(stats_by_case, case):
    stats = stats_by_case[case]
    keys = [k for k in stats if "timescale" in stats[k]]
    assert len(keys) == (1 if case == "example" else 3)  # lstm; lstm and both Bidirectional halves
    fig = plots.timescale_hist(stats)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == len(keys)
    for ax, key in zip(axes, keys):
        entry = stats[key]
        assert ax.get_title().startswith(f"{stats.layers[key]}:") and ax.get_xscale() == "log"
        steps, units = ax.patches[0], ax.patches[1]  # stairs
        counts = entry["timescale_hist"].double()
        np.testing.assert_allclose(steps.get_data().values, (counts / counts.sum()).numpy())
        np.testing.assert_allclose(steps.get_data().edges, 10 ** entry["timescale_edges"].numpy())
        log_tau = torch.log10(entry["timescale"]).numpy()
        expected, _ = np.histogram(np.clip(log_tau, 0, 4 - 1e-9), bins=entry["timescale_edges"].numpy())
        np.testing.assert_allclose(units.get_data().values, expected / log_tau.size)
        median = ax.lines[0].get_xdata()[0]
        assert median == pytest.approx(float(np.median(entry["timescale"].numpy())))


@pytest.mark.parametrize("gate", ["f", "h"])
def test_mean_by_step_one_line_per_layer(stats_by_case, gate):
    stats = stats_by_case["masked"]
    keys = [k for k in stats if k.endswith(f"/gates/{gate}")]
    fig = plots.mean_by_step(stats, gate)
    lines = {line.get_label(): line for line in fig.axes[0].lines}
    assert set(lines) == {stats.layers[k] for k in keys}
    for key in keys:
        x, y = lines[stats.layers[key]].get_data()
        entry = stats[key]
        np.testing.assert_array_equal(x, np.arange(entry["mean_by_step"].shape[0]))
        expected = np.where(entry["count_by_step"].numpy() > 0, entry["mean_by_step"].numpy(), np.nan)
        np.testing.assert_allclose(y, expected)
    with pytest.raises(InputError, match=r"no layer has gate 'q'"):
        plots.mean_by_step(stats, "q")


def test_save_all_writes_every_plot(masked, stats_by_case, tmp_path):
    model, x = masked
    acts = tlp.probe(model, x[:1], gates=True)
    chosen = ["lstm", "bidirectional/backward/gates/c", "lstm/mask"]
    sample = {k: acts[k] for k in chosen}  # keys without /gates/ are skipped
    tokens = [f"w{int(t)}" for t in x[0]]
    paths = plots.save_all(stats_by_case["masked"], tmp_path / "out", sample=sample, tokens=tokens)
    names = [p.name for p in paths]
    assert names[:7] == [
        "saturation.png",
        "timescales.png",
        *(f"mean_by_step_{g}.png" for g in ("i", "f", "o", "z", "r")),
    ]
    heatmaps = [k for k in sample if "/gates/" in k]
    assert names[7:] == [f"heatmap_{k.replace('/', '_')}.png" for k in heatmaps]
    for path in paths:
        check_png(path, min_bytes=1000)
        assert path.stat().st_size < 60_000


def test_sample_heatmaps_reverse_tokens_of_reversed_layers(masked, stats_by_case):
    model, x = masked
    acts = tlp.probe(model, x[:1], gates=True)
    sample = {k: acts[k] for k in ["lstm/gates/h", "bidirectional/forward/gates/i", "bidirectional/backward/gates/f"]}
    tokens = [f"w{int(t)}" for t in x[0]]
    stats = stats_by_case["masked"]

    def labels(fig):
        return [t.get_text() for t in fig.axes[0].get_xticklabels()]

    figs = plots.sample_heatmaps(stats, sample, tokens)
    assert list(figs) == list(sample)
    assert labels(figs["lstm/gates/h"]) == tokens and labels(figs["bidirectional/forward/gates/i"]) == tokens
    assert labels(figs["bidirectional/backward/gates/f"]) == tokens[::-1]
    assert figs["bidirectional/backward/gates/f"].axes[0].get_title().endswith("(reversed time)")
    assert figs["bidirectional/forward/gates/i"].axes[0].images[0].get_clim() == (0.0, 1.0)  # sigmoid gate
    assert figs["lstm/gates/h"].axes[0].images[0].get_cmap().name == "RdBu_r"  # tanh state, always signed
    figs = plots.sample_heatmaps(stats, sample, tokens, reversed_keys=["lstm"])  # e.g. a go_backwards layer
    assert labels(figs["lstm/gates/h"]) == tokens[::-1] and labels(figs["bidirectional/backward/gates/f"]) == tokens


def test_bad_stats_and_missing_matplotlib(monkeypatch):
    with pytest.raises(InputError, match="takes the GateStats"):
        plots.saturation_scatter({"lstm/gates/f": {}})
    simple = GateStats({"rnn/gates/h": {"count": 1, "mean_by_step": torch.zeros(2)}}, {"rnn/gates/h": "SimpleRNN"})
    with pytest.raises(InputError, match="needs sigmoid gates"):
        plots.saturation_scatter(simple)
    with pytest.raises(InputError, match="needs LSTM forget gates"):
        plots.timescale_hist(simple)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'torch-lstm-probe\[plots\]'"):
        plots.heatmap(np.zeros((2, 2)))
