"""The ``stats``, ``plot`` and ``export-lstmvis`` verbs end to end on the bundled example, text DATA, and errors."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

import torch_lstm_probe as tlp
import torch_lstm_probe.cli as cli
from tests.test_cli_extract import _one_line_error
from torch_lstm_probe.analysis import plots
from torch_lstm_probe.cli import EXAMPLES, main

from .helpers import ATOL

EXAMPLE = EXAMPLES / "sentiment_lstm.keras"  # input (None, 4): int32 token ids in [0, 15); one LSTM(64), no mask
META = json.loads((EXAMPLES / "sentiment_lstm.json").read_text(encoding="utf-8"))  # docs, word_index, padded
SAMPLES = 24
BATCH = 16  # two batches: 16 and 8
GATES = ("i", "f", "g", "o", "c", "h")
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


@pytest.fixture(scope="module")
def model():
    return tlp.load_keras(EXAMPLE)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Token ids as .npy and .safetensors, the example's texts (one per line) and its word index as a vocabulary."""
    folder = tmp_path_factory.mktemp("data")
    x = np.random.default_rng(0).integers(0, 15, size=(SAMPLES, 4)).astype(np.int32)  # (samples, time)
    np.save(folder / "ids.npy", x)
    save_file({"tokens": x}, str(folder / "ids.safetensors"))
    (folder / "texts.txt").write_text("\n".join(META["docs"]) + "\n", encoding="utf-8")
    (folder / "vocab.json").write_text(json.dumps(META["word_index"]), encoding="utf-8")
    return types.SimpleNamespace(folder=folder, x=x, texts=list(META["docs"]), vocab=folder / "vocab.json")


def _ids(texts, padding="pre", truncating="pre", maxlen=4):
    """Text ids as the library makes them: texts_to_sequences + pad_sequences."""
    return tlp.load_vocabulary(META["word_index"]).texts_to_ids(
        texts, maxlen=maxlen, padding=padding, truncating=truncating
    )


# ---------------------------------------------------------------------------------------------- stats
@pytest.mark.parametrize("kind", ["npy", "safetensors"])
def test_stats_writes_what_gate_stats_gives_and_prints_the_table(tmp_path, capsys, model, files, kind):
    out = tmp_path / "sub" / "stats.json"
    data = files.folder / f"ids.{kind}"
    assert main(["stats", str(EXAMPLE), str(data), "--out", str(out), "--batch-size", str(BATCH), "--no-progress"]) == 0
    expected = tlp.gate_stats(model, files.x, batch_size=BATCH, progress=False)
    assert json.loads(out.read_text()) == json.loads(json.dumps(expected.to_dict()))
    assert tlp.GateStats.load(out).keys() == expected.keys()

    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"gate statistics of {SAMPLES} samples, 6 gate keys"
    assert printed[1].split() == ["layer", "gate", "steps", "mean", "std", "sat<0.1", "sat>0.9", "timescale"]
    rows = {line.split()[1]: line.split() for line in printed[2:8]}
    assert sorted(rows) == sorted(GATES)
    for gate in GATES:
        entry = expected[f"lstm/gates/{gate}"]
        row = rows[gate]
        assert row[0] == "lstm"
        assert row[2] == str(SAMPLES * 4)  # every step is valid: no mask
        assert row[3] == f"{float(entry['mean'].mean()):.4f}"
        assert row[4] == f"{float(entry['std'].mean()):.4f}"
        sigmoid = gate in ("i", "f", "o")
        assert row[5] == (f"{float(entry['sat_low'].mean()):.4f}" if sigmoid else "-")
        assert row[6] == (f"{float(entry['sat_high'].mean()):.4f}" if sigmoid else "-")
        assert row[7] == (f"{float(entry['timescale'].median()):.2f}" if gate == "f" else "-")
    assert printed[-1].startswith(f"wrote {out}")


def test_stats_layers_and_no_out(capsys, files):
    assert main(["stats", str(EXAMPLE), str(files.folder / "ids.npy"), "--layers", "lstm", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "6 gate keys" in printed
    assert "wrote" not in printed


# ---------------------------------------------------------------------------------------------- text DATA
@pytest.mark.parametrize(("padding", "truncating"), [(None, None), ("post", None), ("pre", "post"), ("post", "post")])
def test_text_data_becomes_the_ids_of_the_library(files, model, padding, truncating):
    texts = [*files.texts, "could have done better well done poor work"]  # the last is longer than 4 words
    path = files.folder / f"texts_{padding}_{truncating}.txt"
    path.write_text("\n".join(texts), encoding="utf-8")
    args = argparse.Namespace(data=str(path), vocab=str(files.vocab), padding=padding, truncating=truncating)
    data = cli._load_data(args, model)
    expected = _ids(texts, padding or "pre", truncating or "pre")
    assert isinstance(data.source, np.ndarray)
    np.testing.assert_array_equal(data.source, expected)
    assert data.source.dtype == expected.dtype == np.int32
    assert data.num_samples == len(texts)
    assert data.texts == texts
    if padding == "post":
        np.testing.assert_array_equal(data.source[: len(META["padded"])], META["padded"])  # how the example was made


def test_text_data_without_a_fixed_time_axis_pads_to_the_longest_line(files):
    free = types.SimpleNamespace(name="m", input_specs=[{"name": "tokens", "shape": [None, None], "dtype": "int32"}])
    args = argparse.Namespace(
        data=str(files.folder / "texts.txt"), vocab=str(files.vocab), padding=None, truncating=None
    )
    data = cli._load_data(args, free)
    assert data.source.shape == (10, 4)  # "Could have done better." is the longest line
    np.testing.assert_array_equal(data.source, _ids(files.texts, maxlen=None))


def test_stats_of_text_data_equal_gate_stats_of_its_ids(tmp_path, model, files):
    out = tmp_path / "stats.json"
    argv = ["stats", str(EXAMPLE), str(files.folder / "texts.txt"), "--vocab", str(files.vocab), "--padding", "post"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    expected = tlp.gate_stats(model, _ids(files.texts, "post"), progress=False)
    assert json.loads(out.read_text()) == json.loads(json.dumps(expected.to_dict()))


# ---------------------------------------------------------------------------------------------- export-lstmvis
@pytest.mark.parametrize("text", [False, True], ids=["ids", "text"])
def test_export_lstmvis_files_hold_the_probe_values(tmp_path, capsys, model, files, text):
    import h5py

    out = tmp_path / "project"
    data = files.folder / ("texts.txt" if text else "ids.npy")
    x = _ids(files.texts, "post") if text else files.x
    argv = ["export-lstmvis", str(EXAMPLE), str(data), "--out", str(out), "--vocab", str(files.vocab)]
    argv += ["--padding", "post"] if text else []
    assert main([*argv, "--gates", "f", "--batch-size", str(BATCH), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"exported {len(x)} samples, {x.size} tokens, 3 keys: lstm/gates/c, lstm/gates/h, lstm/gates/f" in printed
    assert f"python lstm_server.py -dir {out}" in printed
    for name in ("lstm.yml", "states.h5", "train.h5", "words.dict"):
        assert (out / name).is_file()
        assert str(out / name) in printed
    acts = tlp.probe(model, x, layers=["lstm"], gates=True)
    with h5py.File(out / "states.h5", "r") as states, h5py.File(out / "train.h5", "r") as words:
        np.testing.assert_array_equal(words["word_ids"][:], x.reshape(-1))  # no mask: every token
        for gate in ("c", "h", "f"):
            expected = acts[f"lstm/gates/{gate}"].reshape(x.size, -1).numpy()  # (tokens, units)
            np.testing.assert_allclose(states[f"lstm/gates/{gate}"][:], expected, atol=ATOL["cpu_float32"], rtol=0)
    assert "well 6\n" in (out / "words.dict").read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------- plot
@pytest.fixture(scope="module")
def plotted(tmp_path_factory, files):
    """One plot run (drawing is the slow part): text DATA, its last sample, the arguments save_all received."""
    if not HAS_MATPLOTLIB:
        pytest.skip("matplotlib is not installed")
    out = tmp_path_factory.mktemp("plots") / "png"
    seen: dict = {}
    real = plots.save_all

    def spy(stats, out_dir, sample=None, tokens=None, *, reversed_keys=None):
        seen.update(stats=stats, sample=sample, tokens=tokens, reversed_keys=reversed_keys)
        return real(stats, out_dir, sample=sample, tokens=tokens, reversed_keys=reversed_keys)

    argv = ["plot", str(EXAMPLE), str(files.folder / "texts.txt"), "--vocab", str(files.vocab), "--padding", "post"]
    stdout = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(stdout):
        patch.setattr(plots, "save_all", spy)
        code = main([*argv, "--out", str(out), "--sample", "9", "--no-progress"])
    return types.SimpleNamespace(code=code, out=out, printed=stdout.getvalue().splitlines(), **seen)


def test_plot_writes_non_blank_pngs_and_prints_their_paths(plotted):
    from PIL import Image

    assert plotted.code == 0
    names = ["saturation.png", "timescales.png", *(f"mean_by_step_{g}.png" for g in "ifo")]
    names += [f"heatmap_lstm_gates_{g}.png" for g in GATES]
    assert plotted.printed[:-1] == [str(plotted.out / name) for name in names]
    assert plotted.printed[-1] == f"wrote {len(names)} PNG files to {plotted.out} (heatmaps of sample 9)"
    assert sorted(p.name for p in plotted.out.iterdir()) == sorted(names)
    for name in names:
        with Image.open(plotted.out / name) as image:
            assert image.format == "PNG"
            assert image.width > 200 and image.height > 200
            grey = np.asarray(image.convert("L"))
            assert grey.min() < 100 and grey.max() > 200  # drawn on, not one flat colour
            assert (grey < 250).mean() > 0.02


def test_plot_shows_the_sample_asked_for_with_its_words(plotted, model, files):
    assert plotted.tokens == ["could", "have", "done", "better"]  # line 9, with --vocab
    assert plotted.reversed_keys == set()  # a forward LSTM
    x = _ids(files.texts, "post")
    expected = tlp.probe(model, x[9:10], layers=["lstm"], gates=True)
    assert list(plotted.sample) == [f"lstm/gates/{g}" for g in GATES]
    for key, value in plotted.sample.items():
        torch.testing.assert_close(value, expected[key], atol=0, rtol=0)  # the same one-sample run
    reference = tlp.gate_stats(model, x, progress=False)
    assert json.dumps(plotted.stats.to_dict()) == json.dumps(reference.to_dict())


@pytest.mark.parametrize(
    ("golden", "expected"),
    [
        ("keras_bidirectional.keras", {"bidirectional/backward", "bidirectional_1/backward"}),
        ("keras_lstm_go_backwards.keras", {"lstm", "lstm_1"}),
        ("keras_masked_lstm_gru.keras", {"bidirectional/backward"}),  # lstm, gru run forward
    ],
)
def test_heatmaps_of_reversed_layers_get_reversed_words(golden, expected):
    model = tlp.load_keras(Path(__file__).parent / "goldens" / golden)
    spec = model.input_specs[0]
    shape = [2 if d is None else d for d in spec["shape"]]
    x = torch.ones(shape, dtype=torch.int32 if "int" in spec["dtype"] else torch.float32)
    keys = [k for k in tlp.probe(model, x, gates=True) if "/gates/" in k]
    assert keys
    assert cli._reversed_layers(model, keys) == expected


# ---------------------------------------------------------------------------------------------- errors
def _error_cases(folder):
    example, ids, texts, vocab = (
        str(EXAMPLE),
        str(folder / "ids.npy"),
        str(folder / "texts.txt"),
        str(folder / "v.json"),
    )
    return [
        (["stats", example, texts], ("texts.txt", "with --vocab")),
        (["stats", example, str(folder / "missing.npy")], ("FileNotFoundError", "missing.npy")),
        (["stats", example, texts, "--vocab", str(folder / "nope.json")], ("InputError", "nope.json")),
        (["stats", example, ids, "--padding", "post"], ("--padding and --truncating", "Fix: leave them out")),
        (["stats", example, ids, "--batch-size", "0"], ("--batch-size 0",)),
        (["stats", example, ids, "--layers", "nosuch"], ("nosuch",)),
        (["stats", example, ids, "--layers", "dense"], ("InputError", "recurrent")),
        (["stats", example, str(folder / "junk.txt"), "--vocab", vocab], ("no line holds a word",)),
        (["stats", example, ids, "--out", str(folder)], ("is a folder",)),
        (["plot", example, ids, "--out", str(folder / "p"), "--sample", "24"], ("--sample 24", "24 sample(s)")),
        (["plot", example, ids, "--out", ids], ("is a file",)),
        (["export-lstmvis", example, ids, "--out", str(folder / "lv"), "--states", "x"], ("states names 'x'",)),
        (["export-lstmvis", example, ids, "--out", str(folder / "lv"), "--gates", "z"], ("InputError",)),
    ]


def test_errors_exit_2_with_one_line(tmp_path, capsys, files):
    (tmp_path / "ids.npy").write_bytes((files.folder / "ids.npy").read_bytes())
    (tmp_path / "texts.txt").write_text("Well done!\n", encoding="utf-8")
    (tmp_path / "junk.txt").write_text("zzz qqq\n\n", encoding="utf-8")
    (tmp_path / "v.json").write_text(json.dumps(META["word_index"]), encoding="utf-8")
    for argv, needles in _error_cases(tmp_path):
        assert main([*argv, "--no-progress"]) == 2, argv
        _one_line_error(capsys, *needles)


def test_plot_without_matplotlib_says_how_to_install_it(tmp_path, capsys, files, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    assert main(["plot", str(EXAMPLE), str(files.folder / "ids.npy"), "--out", str(tmp_path / "p")]) == 2
    _one_line_error(capsys, "matplotlib", "pip install 'torch-lstm-probe[plots]'")
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("verb", ["stats", "plot", "export-lstmvis"])
def test_help_names_the_padding_and_the_data(capsys, verb):
    with pytest.raises(SystemExit) as exit_info:
        main([verb, "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for needle in ("--vocab", "pad_sequences", "'pre'", "'post'", ".npy, .npz or .safetensors", "--no-progress"):
        assert needle in text, needle
