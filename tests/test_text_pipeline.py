"""A model that takes raw strings, end to end: ``tlp.extract``, the CLI verbs on a text file (the analysis verbs
labelled with the words of the model's own text layer), and ``tlp.verify``.

One small Keras 3 model (adapted ``TextVectorization`` -> ``Embedding(mask_zero)`` -> ``LSTM`` -> ``Dense``)
is built and saved once for the module.
"""

from __future__ import annotations

import json
import re
import string

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import torch_lstm_probe as tlp
from tests.helpers import import_keras, save
from tests.test_gate_stats import _numpy_stats
from torch_lstm_probe.analysis import plots
from torch_lstm_probe.analysis.vocab import text_tokens
from torch_lstm_probe.cli import main
from torch_lstm_probe.errors import InputError
from torch_lstm_probe.verify import format_report, generate_inputs

pytestmark = pytest.mark.keras

ADAPT = ["the cat sat on the mat", "a dog ran far away", "tokyo is big and the dog is small"]
TEXTS = [
    "the cat sat",
    "A dog ran far away, on the mat!",
    "unknownword",
    "",
    "Tokyo is BIG.",
    "the",
    "mat mat mat mat mat mat mat mat mat",
    "dog? cat!",
    "far away",
    "ça va",
]


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    """The saved ``.keras`` file and its converted model."""
    keras = import_keras("keras")
    keras.utils.set_random_seed(7)
    tv = keras.layers.TextVectorization(output_sequence_length=6, name="tv")
    tv.adapt(ADAPT)
    inp = keras.Input((1,), dtype="string", name="text")
    x = keras.layers.Embedding(tv.vocabulary_size(), 5, mask_zero=True, name="embed")(tv(inp))
    x = keras.layers.LSTM(4, name="lstm")(x)
    model = keras.Model(inp, keras.layers.Dense(2, name="head")(x), name="text_lstm")
    path = save(model, tmp_path_factory.mktemp("text_model"), "keras")
    return path, tlp.load_keras(path)


@pytest.fixture
def texts_file(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return path


def _assert_same(acts, expected, keys):
    assert list(keys)
    for key in keys:
        torch.testing.assert_close(acts[key][:], expected[key], rtol=0, atol=1e-6, msg=key)


def test_extract_equals_probe(text_model, tmp_path):
    """Lists of str, batched unevenly, and an iterator of batches store what probe gives on all texts at once."""
    _, model = text_model
    expected = tlp.probe(model, TEXTS, gates=True)
    acts = tlp.extract(model, TEXTS, tmp_path / "list", gates=True, batch_size=3, progress=False)
    assert len(acts) == len(TEXTS)
    assert {"tv", "lstm", "lstm/gates/f", "lstm/gates/c", "head"} <= set(acts.keys())
    _assert_same(acts, expected, acts.keys())
    assert acts.run["data"]["inputs"] == [{"name": "text", "shape": [len(TEXTS)], "dtype": "str"}]
    stream = iter([TEXTS[:4], tuple(TEXTS[4:7]), *TEXTS[7:]])  # batches and single texts, regrouped by 4
    streamed = tlp.extract(model, stream, tmp_path / "stream", gates=True, batch_size=4, progress=False)
    assert streamed.run["data"]["kind"] == "text_stream"
    _assert_same(streamed, expected, acts.keys())
    again = tlp.extract(model, np.array(TEXTS), tmp_path / "list", gates=True, batch_size=3, progress=False)
    _assert_same(again, expected, ["head"])  # a finished folder of the same request is reopened


def test_extract_refuses_non_text_data(text_model, tmp_path):
    _, model = text_model
    with pytest.raises(
        InputError,
        match=r"takes text in input\(s\) \[.text.\]. Received a Tensor of dtype torch.float32 and shape \(3, 1\)",
    ):
        tlp.extract(model, torch.zeros(3, 1), tmp_path / "a", progress=False)
    with pytest.raises(InputError, match=r"Input 'text' takes text. Received an element 3 of type int"):
        tlp.extract(model, ["fine", 3], tmp_path / "b", progress=False)
    with pytest.raises(InputError, match=r"yielded no texts"):
        tlp.extract(model, iter([]), tmp_path / "c", progress=False)


def test_cli_probe_and_extract_on_text_file(text_model, texts_file, tmp_path, capsys):
    path, model = text_model
    expected = tlp.probe(model, TEXTS, gates=True)
    out = tmp_path / "probe.safetensors"
    assert main(["probe", str(path), "--input", str(texts_file), "--out", str(out), "--gates"]) == 0
    stored = load_file(str(out))
    for key in ("tv", "lstm/gates/i", "head"):
        torch.testing.assert_close(stored[key], expected[key], rtol=0, atol=1e-6)
    folder = tmp_path / "acts"
    assert main(["extract", str(path), str(texts_file), "--out", str(folder), "--gates", "--no-progress"]) == 0
    assert f"extracted {len(TEXTS)} samples" in capsys.readouterr().out
    _assert_same(tlp.open_activations(folder), expected, ["tv", "lstm", "lstm/gates/o", "head"])


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--vocab", "v.json"], r"--vocab: model 'text_lstm' tokenises its input \['text'\] itself"),
        (["--padding", "post", "--truncating", "pre"], r"--padding, --truncating: model .* tokenises its input"),
    ],
)
def test_cli_refuses_text_options(text_model, texts_file, capsys, extra, match):
    path, _ = text_model
    assert main(["stats", str(path), str(texts_file), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert re.search(match, err), err


def test_verify_generated_texts_live(text_model):
    """Generated texts (vocabulary words, an unknown word, punctuation) match live Keras layer by layer."""
    path, model = text_model
    (texts,) = generate_inputs(model)
    assert texts.shape == (4, 1) and texts.dtype == object
    words = " ".join(texts[:, 0]).replace(",", " ").replace("!", " ").replace("?", " ").split()
    assert "qzxvj" in words and set(words) - {"qzxvj"} <= set(" ".join(ADAPT).split())
    report = tlp.verify(path)
    assert report.ok, format_report(report)
    assert report.inputs == ["text (4, 1) object (generated)"]
    assert {r.name for r in report.rows if r.ok} == {"tv", "embed", "lstm", "head"}


def test_cli_refuses_array_data_for_text_model(text_model, tmp_path, capsys):
    path, _ = text_model
    np.save(tmp_path / "ids.npy", np.zeros((2, 6), dtype=np.int64))
    assert main(["stats", str(path), str(tmp_path / "ids.npy")]) == 2
    err = capsys.readouterr().err
    assert re.search(r"takes raw strings in input\(s\) \['text'\]. Expected a UTF-8 text file", err), err


def _expected_tokens(text: str) -> list[str]:
    """The text layer's tokens by its definition: ASCII lower case, no punctuation, 6 steps, [UNK] and <pad>."""
    known = set(" ".join(ADAPT).split())
    lowered = text.translate(str.maketrans(string.ascii_uppercase, string.ascii_lowercase))
    words = lowered.translate(str.maketrans("", "", string.punctuation)).split()[:6]
    return [w if w in known else "[UNK]" for w in words] + ["<pad>"] * (6 - min(len(words), 6))


def test_gate_stats_on_texts_equal_probe_gates(text_model):
    """Statistics over texts (batched unevenly) equal NumPy's over probe's gates at the steps the ids keep."""
    _, model = text_model
    assert text_tokens(model, TEXTS) == [_expected_tokens(t) for t in TEXTS]
    stats = tlp.gate_stats(model, TEXTS, batch_size=3, progress=False)
    acts = tlp.probe(model, TEXTS, gates=True)
    valid = (acts["tv"] != 0).numpy()  # (N, 6): the Embedding masks id 0
    assert list(stats) == [f"lstm/gates/{g}" for g in "ifgoch"]
    for key in stats:
        values = acts[key].numpy().astype(np.float64)  # (N, 6, 4)
        expected = _numpy_stats(values[valid], values, valid, "LSTM", key[-1])
        assert stats[key]["count"] == expected.pop("count") == valid.sum()
        for name, value in expected.items():
            np.testing.assert_allclose(stats[key][name].numpy(), value, rtol=1e-5, atol=1e-6, err_msg=f"{key} {name}")


def test_cli_analysis_verbs_on_text_file(text_model, texts_file, tmp_path, monkeypatch):
    """stats, plot, report and export-lstmvis read a text file; steps are labelled with the text layer's words."""
    path, model = text_model
    expected = [_expected_tokens(t) for t in TEXTS]
    common = ["--batch-size", "4", "--no-progress"]
    assert main(["stats", str(path), str(texts_file), "--out", str(tmp_path / "stats.json"), *common]) == 0
    saved = tlp.GateStats.load(tmp_path / "stats.json")
    direct = tlp.gate_stats(model, TEXTS, progress=False)
    for key in direct:
        torch.testing.assert_close(saved[key]["mean"], direct[key]["mean"], rtol=1e-6, atol=1e-7)

    drawn = []
    save_all = plots.save_all
    monkeypatch.setattr(plots, "save_all", lambda *a, **kw: drawn.append(kw["tokens"]) or save_all(*a, **kw))
    args = ["plot", str(path), str(texts_file), "--out", str(tmp_path / "plots"), "--sample", "1", *common]
    assert main(args) == 0
    assert drawn == [expected[1]] and (tmp_path / "plots" / "heatmap_lstm_gates_c.png").stat().st_size > 0

    report = tmp_path / "report.html"
    assert main(["report", str(path), str(texts_file), "--out", str(report), "--heatmaps", "c", *common]) == 0
    page = report.read_text(encoding="utf-8")
    view = json.loads(re.search(r'id="tlp-view-data">(.*?)</script>', page).group(1))
    assert view["layers"][0]["tokens"] == expected[:5]
    assert "(tokens are the words of the model's text layer)" in page

    out = tmp_path / "lstmvis"
    assert main(["export-lstmvis", str(path), str(texts_file), "--out", str(out), "--gates", "f", *common]) == 0
    words = dict(line.split()[::-1] for line in (out / "words.dict").read_text(encoding="utf-8").splitlines())
    with h5py.File(out / "train.h5", "r") as h5:
        shown = [words[str(i)] for i in h5["word_ids"][:]]
        offsets = h5["sample_offsets"][:].tolist()
    assert shown == [w for row in expected for w in row if w != "<pad>"]
    assert offsets == np.cumsum([0] + [sum(w != "<pad>" for w in row) for row in expected]).tolist()
