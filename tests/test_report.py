"""The HTML report: its structure, numbers equal to the library's, inline PNGs, the token view's JSON, escaping, CLI."""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import shutil
import subprocess
from html.parser import HTMLParser
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")

from PIL import Image  # noqa: E402
from torch_lstm_probe.converters.inspect import inspect_model  # noqa: E402

import torch_lstm_probe as tlp  # noqa: E402
from tests.test_goldens import GOLDENS, golden_inputs, load_golden  # noqa: E402
from torch_lstm_probe.analysis import report  # noqa: E402
from torch_lstm_probe.analysis.report import VALUE_DECIMALS, build_report  # noqa: E402
from torch_lstm_probe.cli import EXAMPLES, main  # noqa: E402
from torch_lstm_probe.errors import InputError  # noqa: E402

EXAMPLE = EXAMPLES / "sentiment_lstm.keras"
MASKED = GOLDENS / "keras_masked_lstm_gru.keras"
HOSTILE = '<b>&"x'  # a vocabulary word that must reach the page escaped
TITLE = 'Gates of <i>sentiment</i> & "friends"'
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """What the tests read from a report: tables with their rows and cells, figures, images, scripts."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[dict[str, Any]] = []
        self.figures: list[dict[str, str]] = []
        self.scripts: list[tuple[dict[str, str], str]] = []
        self.title = ""
        self._stack: list[str] = []
        self._cell: dict[str, Any] | None = None
        self._script: dict[str, str] | None = None
        self._figure: dict[str, str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self._stack.append(tag)
        if tag == "table":
            self.tables.append({"attrs": a, "rows": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append({"attrs": a, "cells": []})
        elif tag in ("td", "th") and self.tables and self.tables[-1]["rows"]:
            self._cell = {"attrs": a, "text": ""}
            self.tables[-1]["rows"][-1]["cells"].append(self._cell)
        elif tag == "script":
            self._script = a
            self.scripts.append((a, ""))
        elif tag == "figure":
            self._figure = {"plot": a.get("data-plot", ""), "src": ""}
            self.figures.append(self._figure)
        elif tag == "img" and self._figure is not None:
            self._figure["src"] = a.get("src", "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self._cell = None
        elif tag == "script":
            self._script = None
        elif tag == "figure":
            self._figure = None
        if self._stack and self._stack[-1] == tag:
            self._stack.pop()

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell["text"] += data
        if self._script is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)
        if self._stack and self._stack[-1] == "title":
            self.title += data

    def view(self) -> dict[str, Any]:
        texts = [text for attrs, text in self.scripts if attrs.get("id") == "tlp-view-data"]
        assert len(texts) == 1, "the token view's JSON is missing"
        return json.loads(texts[0])


def example_vocab() -> list[str]:
    meta = json.loads((EXAMPLES / "sentiment_lstm.json").read_text())
    words = [""] * (max(meta["word_index"].values()) + 1)
    for word, i in meta["word_index"].items():
        words[i] = word
    words[meta["word_index"]["well"]] = HOSTILE  # sample 0 is "well done"
    return words


def tiny_png_uri() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "white").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


@pytest.fixture(scope="module")
def example_case(tmp_path_factory) -> dict[str, Any]:
    """The bundled example, reported end to end through the command line with a word list and a title."""
    meta = json.loads((EXAMPLES / "sentiment_lstm.json").read_text())
    ids = np.random.default_rng(0).integers(0, 15, size=(40, 4)).astype(np.int32)  # (N, T)
    ids[:10] = np.asarray(meta["padded"], dtype=np.int32)
    folder = tmp_path_factory.mktemp("report_cli")
    np.save(folder / "ids.npy", ids)
    (folder / "words.txt").write_text("\n".join(example_vocab()) + "\n", encoding="utf-8")
    out = folder / "nested" / "example.html"
    args = ["report", str(EXAMPLE), str(folder / "ids.npy"), "--vocab", str(folder / "words.txt")]
    assert main([*args, "--out", str(out), "--samples", "4", "--title", TITLE, "--no-progress"]) == 0
    return {
        "model": tlp.load_keras(EXAMPLE),
        "x": ids,
        "source": EXAMPLE,
        "text": out.read_text(encoding="utf-8"),
        "samples": 4,
        "heatmaps": ("f", "c", "h"),
        "drawn": None,  # real PNGs
    }


@pytest.fixture(scope="module")
def masked_case(tmp_path_factory) -> dict[str, Any]:
    """LSTM -> GRU -> Bidirectional(LSTM) over padded rows, through the API; plots drawn but not rasterised."""
    arrays, _ = load_golden("keras_masked_lstm_gru")
    x = golden_inputs(arrays)[0]  # (5, 7) int32, with masked steps
    model = tlp.load_keras(MASKED)
    out = tmp_path_factory.mktemp("report") / "masked.html"
    drawn: list[Any] = []
    uri = tiny_png_uri()

    def fake_png(fig: Any) -> str:  # rasterising is what takes time; the example's PNGs are real
        drawn.append(fig)
        return uri

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report, "_png_uri", fake_png)
        assert build_report(model, x, out, samples=3, heatmaps="h", progress=False) == out
    return {
        "model": model,
        "x": x,
        "source": MASKED,
        "text": out.read_text(encoding="utf-8"),
        "samples": 3,
        "heatmaps": ("h",),
        "drawn": drawn,
    }


@pytest.fixture(params=["example", "masked"])
def case(request) -> dict[str, Any]:
    return request.getfixturevalue(f"{request.param}_case")


def test_model_table_rows_are_the_inspect_table(case):
    page = Page(case["text"])
    rows = {
        row["attrs"]["data-layer"]: [c["text"] for c in row["cells"]]
        for table in page.tables
        if table["attrs"].get("class") == "model"
        for row in table["rows"]
        if "data-layer" in row["attrs"]
    }
    expected = inspect_model(case["source"])
    assert list(rows) == [r.path for r in expected.rows] == case["model"].layer_names
    for row in expected.rows:
        assert rows[row.path] == [row.path, row.class_name, " | ".join(row.output_shapes), f"{row.params:,}", "yes"]


def test_stats_tables_equal_gate_stats(case):
    stats = tlp.gate_stats(case["model"], case["x"], progress=False)
    page = Page(case["text"])
    tables = {t["attrs"]["data-layer"]: t for t in page.tables if t["attrs"].get("class") == "stats"}
    assert list(tables) == list(dict.fromkeys(stats.layers.values()))
    seen = []
    for layer, table in tables.items():
        for row in table["rows"]:
            if "data-key" not in row["attrs"]:
                continue  # the header
            key = row["attrs"]["data-key"]
            seen.append(key)
            assert stats.layers[key] == layer
            entry = stats[key]
            values = [float(c["attrs"]["data-value"]) for c in row["cells"][2:]]
            tau = entry["timescale"].numpy() if "timescale" in entry else None
            expected = [
                entry["count"],
                *(float(entry[name].mean()) if name in entry else math.nan for name in report.STATS_COLUMNS[3:9]),
                float(np.median(tau)) if tau is not None else math.nan,
            ]
            assert values == pytest.approx(expected, rel=1e-12, nan_ok=True), key
            assert row["cells"][0]["text"] == key.rsplit("/", 1)[1]
    assert seen == list(stats)


def test_plots_are_inline_pngs(case):
    stats = tlp.gate_stats(case["model"], case["x"], progress=False)
    sigmoid = [g for g in "ifozr" if any(k.endswith(f"/gates/{g}") for k in stats)]
    heatmaps = [f"heatmap:{k}" for k in stats if k.rsplit("/", 1)[1] in case["heatmaps"]]
    page = Page(case["text"])
    assert [f["plot"] for f in page.figures] == [
        "saturation",
        "timescales",
        *(f"mean_by_step:{g}" for g in sigmoid),
        *heatmaps,
    ]
    if case["drawn"] is not None:
        from matplotlib.figure import Figure

        assert len(case["drawn"]) == len(page.figures) and all(isinstance(f, Figure) for f in case["drawn"])
    for figure in page.figures:
        prefix = "data:image/png;base64,"
        assert figure["src"].startswith(prefix), figure["plot"]
        data = base64.b64decode(figure["src"][len(prefix) :], validate=True)
        assert data.startswith(PNG_SIGNATURE)
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        if case["drawn"] is not None:
            continue
        with Image.open(io.BytesIO(data)) as image:
            assert min(image.size) > 100
            assert len(set(image.convert("L").getdata())) > 2, f"{figure['plot']} looks blank"
    assert case["text"].count("<img ") == len(page.figures)


def test_token_view_json_equals_probe(case):
    model, n = case["model"], case["samples"]
    x = case["x"][:n]
    acts = tlp.probe(model, x, gates=True)
    view = Page(case["text"]).view()
    assert view["samples"] == n and view["decimals"] == VALUE_DECIMALS
    names = [layer["name"] for layer in view["layers"]]
    assert names == list(dict.fromkeys(k.rsplit("/gates/", 1)[0] for k in acts if "/gates/" in k))
    checked = 0
    for layer in view["layers"]:
        name = layer["name"]
        mask_key = name.split("/")[0] + "/mask"
        mask = acts[mask_key].numpy() if mask_key in acts else np.ones(x.shape, dtype=bool)  # (n, T) input order
        assert layer["reversed"] == name.endswith("/backward")
        for gate, values in layer["values"].items():
            expected = acts[f"{name}/gates/{gate}"].numpy().astype(np.float64)  # (n, T, units) processing order
            if layer["reversed"]:
                expected = expected[:, ::-1]
            got = np.array([[[math.nan if v is None else v for v in step] for step in row] for row in values])
            assert got.shape == expected.shape == (n, layer["steps"], layer["units"])
            assert np.array_equal(np.isnan(got).all(axis=2), ~mask), f"{name}/{gate}: masked steps"
            valid = ~np.isnan(got)
            assert np.abs(got[valid] - expected[valid]).max() <= 0.5 * 10**-VALUE_DECIMALS + 1e-9
            checked += 1
        choices = [c[0] for c in layer["choices"]]
        assert choices[0] == ("tanh_c" if layer["cell"] == "LSTM" else "h")
        assert sorted(set(choices) - {"tanh_c"}) == sorted(layer["values"])
    assert checked == sum("/gates/" in k for k in acts)


def test_tokens_come_from_the_vocabulary_or_the_ids(example_case, masked_case):
    view = Page(example_case["text"]).view()
    assert view["layers"][0]["tokens"][0] == [HOSTILE, "done", "<pad>", "<pad>"]
    ids = masked_case["x"][:3]
    for layer in Page(masked_case["text"]).view()["layers"]:
        assert layer["tokens"] == [[str(i) for i in row] for row in ids.tolist()]


def test_everything_is_inline_and_escaped(case):
    text = case["text"]
    for external in ("http://", "https://", 'src="//', 'href="//', "url(", "<link", "@import"):
        assert external not in text
    assert re.findall(r'src="([^"]{0,22})', text) == ["data:image/png;base64,"] * text.count('src="')
    assert re.findall(r'href="([^"]*)"', text) == ["#model", "#stats", "#tokens", "#plots"]
    for script in re.findall(r"<script[^>]*>(.*?)</script>", text, flags=re.S):
        assert "</" not in script and "<!--" not in script
    if case["source"] == EXAMPLE:
        assert HOSTILE not in text and "<i>" not in text
        assert html.escape(HOSTILE, quote=True) in text  # the script-free rendering of the tokens
        assert "\\u003cb\\u003e\\u0026" in text  # the JSON
        page = Page(text)
        assert page.title == TITLE


def test_example_report_is_small(example_case):
    assert len(example_case["text"].encode("utf-8")) < 1_000_000


def test_model_table_without_a_source_file(example_case):
    model = example_case["model"]
    section = report._model_section(model, None, None, None)
    rows = [r for t in Page(section).tables for r in t["rows"][1:]]
    assert [r["cells"][0]["text"] for r in rows] == model.layer_names
    lstm = next(r for r in rows if r["cells"][0]["text"] == "lstm")
    assert lstm["cells"][3]["text"] == f"{sum(p.numel() for p in model.layer('lstm').parameters()):,}"
    assert "no Keras file is known" in section


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"samples": 0}, "samples .* must be a positive int"),
        ({"heatmaps": ("c", "q")}, r"heatmaps names \['q'\]"),
        ({"layers": ["dense"]}, "no recurrent layer"),
    ],
)
def test_bad_arguments(example_case, tmp_path, kwargs, match):
    with pytest.raises(InputError, match=match):
        build_report(example_case["model"], example_case["x"][:4], tmp_path / "r.html", **{"heatmaps": (), **kwargs})
    assert not (tmp_path / "r.html").exists()


def test_out_must_not_be_a_folder(example_case, tmp_path):
    with pytest.raises(InputError, match="is a folder"):
        build_report(example_case["model"], example_case["x"][:4], tmp_path)


def test_cli_text_data_with_vocabulary(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(report, "_png_uri", lambda fig: tiny_png_uri())
    meta = json.loads((EXAMPLES / "sentiment_lstm.json").read_text())
    (tmp_path / "docs.txt").write_text("\n".join(meta["docs"][:3]) + "\n", encoding="utf-8")
    (tmp_path / "words.json").write_text(json.dumps(meta["word_index"]), encoding="utf-8")
    out = tmp_path / "r.html"
    args = ["report", str(EXAMPLE), str(tmp_path / "docs.txt"), "--vocab", str(tmp_path / "words.json")]
    assert main([*args, "--out", str(out), "--heatmaps", "", "--layers", "lstm", "--padding", "post"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    page = Page(out.read_text(encoding="utf-8"))
    assert page.view()["layers"][0]["tokens"] == [["well", "done", "<pad>", "<pad>"], ["good", "work", "<pad>", "<pad>"], ["great", "effort", "<pad>", "<pad>"]]  # fmt: skip
    assert not [f for f in page.figures if f["plot"].startswith("heatmap:")]


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--samples", "0"], "--samples 0: expected a positive number"),
        (["--batch-size", "0"], "--batch-size 0"),
    ],
)
def test_cli_user_errors_exit_2(tmp_path, capsys, extra, match):
    np.save(tmp_path / "ids.npy", np.zeros((2, 4), dtype=np.int32))
    assert main(["report", str(EXAMPLE), str(tmp_path / "ids.npy"), "--out", str(tmp_path / "r.html"), *extra]) == 2
    err = capsys.readouterr().err
    assert re.search(match, err) and err.count("\n") == 1 and "Traceback" not in err


def test_cli_text_data_needs_a_vocabulary(tmp_path, capsys):
    (tmp_path / "docs.txt").write_text("well done\n", encoding="utf-8")
    assert main(["report", str(EXAMPLE), str(tmp_path / "docs.txt"), "--out", str(tmp_path / "r.html")]) == 2
    assert "with --vocab" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium to run the page's script")
def test_browser_recolours_from_the_address(masked_case, tmp_path):
    """The page's script, run by headless Chromium, draws the layer, gate and unit the address names."""
    path = tmp_path / "masked.html"
    path.write_text(masked_case["text"], encoding="utf-8")
    url = path.as_uri() + "#layer=bidirectional%2Fbackward&gate=f&unit=1"
    command = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=3000", "--dump-dom"]
    dom = subprocess.run([*command, url], capture_output=True, text=True, timeout=120, check=True).stdout
    samples = dom.split('id="tlp-samples"', 1)[1].split("</section>", 1)[0]
    shown = re.findall(r'class="tok"[^>]*data-value="([^"]*)"', samples)
    layer = next(la for la in Page(masked_case["text"]).view()["layers"] if la["name"] == "bidirectional/backward")
    expected = [step[1] for row in layer["values"]["f"] for step in row]
    assert [None if v == "" else float(v) for v in shown] == expected
    assert "bidirectional/backward · f: forget gate f · unit 1" in dom


def test_static_tokens_use_the_default_choice(example_case):
    """Without script the page still shows layer 0's default choice (tanh(c)) for unit 0."""
    acts = tlp.probe(example_case["model"], example_case["x"][:1], gates=True)
    section = example_case["text"].split('id="tlp-samples">', 1)[1].split("<script", 1)[0]
    first = section.split('<div class="sample">')[1]
    shown = [float(v) for v in re.findall(r'title="step \d+, unit 0: (-?[0-9.]+)"', first)]
    expected = torch.tanh(acts["lstm/gates/c"][0, :, 0].double()).tolist()
    assert shown == pytest.approx(expected, abs=1e-4)
