"""LSTMVis export: the files read back with h5py equal probe at the valid tokens, and lstm.yml is what LSTMVis reads."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import torch_lstm_probe as tlp
from tests.helpers import assert_close
from tests.test_goldens import GOLDENS, golden_inputs, load_golden
from torch_lstm_probe.analysis.lstmvis import _dict_word, _Key, _valid_steps, _yaml_str, export_lstmvis
from torch_lstm_probe.errors import InputError, ProbeKeyError

EXAMPLE = Path(tlp.__file__).parent / "examples" / "sentiment_lstm.keras"
FILES = {"lstm.yml", "states.h5", "train.h5", "words.dict"}


@pytest.fixture(scope="module")
def example():
    model = tlp.load_keras(EXAMPLE)
    x = np.random.default_rng(0).integers(0, 15, size=(37, 4)).astype(np.int32)
    return model, x


@pytest.fixture(scope="module")
def masked():
    arrays, _ = load_golden("keras_masked_lstm_gru")
    return tlp.load_keras(GOLDENS / "keras_masked_lstm_gru.keras"), golden_inputs(arrays)[0]


def _read(path: Path) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    states: dict[str, np.ndarray] = {}
    with h5py.File(path / "states.h5", "r") as f:
        f.visititems(lambda name, obj: states.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    with h5py.File(path / "train.h5", "r") as f:
        return states, f["word_ids"][()], f["sample_offsets"][()]


def _lstmvis_dict(path: Path) -> dict[int, str]:
    """words.dict read the way LSTMVis' data handler reads it (two fields, or a line starting with a space)."""
    id_to_word = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if len(line.split()) == 2:
                word, i = line.split()
                id_to_word[int(i)] = word
            elif line[0] == " ":
                id_to_word[int(line.strip())] = " "
    return id_to_word


def _yaml(path: Path) -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_example_model_equals_probe(example, tmp_path):
    model, x = example
    words = [f"w{i}" for i in range(15)]
    result = export_lstmvis(model, x, tmp_path / "sentiment", vocab=words, gates="f,i", batch_size=8, progress=False)
    assert {p.name for p in (tmp_path / "sentiment").iterdir()} == FILES
    assert result.keys == ("lstm/gates/c", "lstm/gates/h", "lstm/gates/f", "lstm/gates/i")
    assert (result.num_samples, result.num_tokens) == (37, 37 * 4)
    states, ids, offsets = _read(tmp_path / "sentiment")
    assert sorted(states) == sorted(result.keys)
    acts = tlp.probe(model, x, gates=True)  # no mask: every step is a token
    for key in result.keys:
        assert states[key].dtype == np.float32
        assert_close(states[key], acts[key].reshape(37 * 4, -1), what=key)
    np.testing.assert_array_equal(ids, x.reshape(-1))
    np.testing.assert_array_equal(offsets, np.arange(38) * 4)
    assert _lstmvis_dict(result.dict_file) == {i: f"w{i}" for i in range(15)}
    with h5py.File(result.states_file) as f:
        assert f["lstm/gates/f"].chunks is not None and f["lstm/gates/f"].maxshape == (None, 64)
        assert f["lstm/gates/f"].attrs["cell"] == "LSTM" and not f["lstm/gates/f"].attrs["flipped"]

    config = result.config.read_text(encoding="utf-8").splitlines()
    assert config[config.index("word_sequence:") :][:4] == [
        "word_sequence:",
        '  file: "train"',
        '  path: "word_ids"',
        '  dict_file: "words"',
    ]
    assert '      path: "lstm/gates/c"' in config
    parsed = _yaml(result.config)
    assert parsed["files"] == {"states": "states.h5", "train": "train.h5", "words": "words.dict"}
    assert parsed["states"]["file"] == "states"
    assert parsed["states"]["types"] == [
        {"type": "state", "layer": 1, "path": "lstm/gates/c", "unsigned": False, "transform": "tanh"},
        {"type": "output", "layer": 1, "path": "lstm/gates/h", "unsigned": False, "transform": "none"},
        {"type": "gate f", "layer": 1, "path": "lstm/gates/f", "unsigned": True, "transform": "none"},
        {"type": "gate i", "layer": 1, "path": "lstm/gates/i", "unsigned": True, "transform": "none"},
    ]
    assert parsed["name"] == model.name and str(37 * 4) in parsed["description"]


def test_masked_golden_keeps_valid_steps_in_input_order(masked, tmp_path):
    model, x = masked
    result = export_lstmvis(model, x, tmp_path, states=["c", "h"], gates=["i", "f", "z"], batch_size=2, progress=False)
    acts = tlp.probe(model, x, gates=True)
    mask = acts["lstm/mask"]  # (5, 7) input order; sample 3 is all padding
    assert torch.equal(acts["gru/mask"], mask) and torch.equal(acts["bidirectional/mask"], mask)
    # The backward half runs in reversed order: flipped back, its i gate is 0 exactly at the masked steps.
    backward_i = acts["bidirectional/backward/gates/i"].flip(1)
    assert (backward_i[~mask] == 0).all() and (backward_i[mask] != 0).all()
    states, ids, offsets = _read(tmp_path)
    assert set(states) == set(result.keys) and len(result.keys) == 14  # lstm c h i f, gru h z, 2 x bi c h i f
    n = int(mask.sum())
    assert result.num_tokens == n == len(ids) and result.num_samples == 5
    for key in result.keys:
        value = acts[key].flip(1) if "/backward/" in key else acts[key]  # (5, 7, units), input order
        want = torch.cat([value[s][mask[s]] for s in range(5)])  # (n, units): valid steps, sample by sample
        assert_close(states[key], want, what=key)
    np.testing.assert_array_equal(ids, x[mask.numpy()])
    np.testing.assert_array_equal(offsets, np.concatenate([[0], np.cumsum(mask.sum(1).numpy())]))
    assert offsets[3] == offsets[4]  # the all-padding sample has no token
    assert _lstmvis_dict(result.dict_file) == {int(i): str(i) for i in np.unique(x[mask.numpy()])}
    types = _yaml(result.config)["states"]["types"]
    assert [t["path"] for t in types] == list(result.keys)
    assert [t["layer"] for t in types] == [1] * 4 + [2] * 2 + [3] * 8
    assert types[-4]["type"] == "backward state" and types[4]["type"] == "output"


def test_layer_selection_and_rerun(masked, tmp_path):
    model, x = masked
    export_lstmvis(model, x, tmp_path, states="c", progress=False)
    result = export_lstmvis(model, x, tmp_path, layers=["gru"], states="h", gates="z,r", progress=False)
    assert result.keys == ("gru/gates/h", "gru/gates/z", "gru/gates/r")
    states, _, _ = _read(tmp_path)
    assert sorted(states) == sorted(result.keys)  # the earlier run's datasets are gone
    assert {p.name for p in tmp_path.iterdir()} == FILES


def test_dictionary_words_survive_lstmvis_reader(masked, tmp_path):
    model, x = masked
    words = ["", "[UNK]", " ", "two words", "tab\there", "nl\nx", "ünï", "\u00a0nbsp"] + [f"w{i}" for i in range(8, 12)]
    result = export_lstmvis(model, x, tmp_path, vocab=words, progress=False)
    read = _lstmvis_dict(result.dict_file)
    assert sorted(read) == list(range(12))
    assert read[0] == "<pad>" and read[2] == " " and read[3] == "two_words" and read[4] == "tab\\there"
    assert read[5] == "nl\\nx" and read[6] == "ünï" and read[7] == "\\u00a0nbsp"
    assert all(_dict_word(w) for w in words)


def test_yaml_strings_escape_what_yaml_forbids():
    assert _yaml_str('a "b" \\ c') == '"a \\"b\\" \\\\ c"'
    assert _yaml_str("x\ny\x85\ufeffé") == '"x\\u000ay\\u0085\\ufeffé"'
    yaml = pytest.importorskip("yaml")
    for text in ('a "b" \\ c', "x\ny\x85\ufeffé", "lstm@1/gates/c", "dé\u2028jà 🎉"):
        assert yaml.safe_load(f"k: {_yaml_str(text)}") == {"k": text}


def test_masks_must_agree_and_steps_must_line_up():
    keys = [
        _Key("a/gates/h", "a", "", "h", "LSTM", "tanh", False, "a/mask"),
        _Key("b/gates/h", "b", "", "h", "LSTM", "tanh", False, "b/mask"),
    ]
    mask = torch.tensor([[True, False, True]])
    values = {"a/gates/h": torch.zeros(1, 3, 2), "b/gates/h": torch.zeros(1, 3, 2), "a/mask": mask, "b/mask": mask}
    assert torch.equal(_valid_steps(values, keys, torch.Size([1, 3])), mask)
    assert _valid_steps(values, keys[:1], torch.Size([1, 3])).sum() == 2
    with pytest.raises(InputError, match="a/mask and b/mask mask different steps"):
        _valid_steps({**values, "b/mask": ~mask}, keys, torch.Size([1, 3]))
    with pytest.raises(InputError, match="a/gates/h has 3 time steps but the token input has 4"):
        _valid_steps(values, keys, torch.Size([1, 4]))
    unmasked = [_Key("a/gates/h", "a", "", "h", "LSTM", "tanh", False, None)]
    assert _valid_steps(values, unmasked, torch.Size([1, 3])).all()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(states="c,x"), InputError, "states names 'x'. Expected some of c, h"),
        (dict(states=(), gates=()), InputError, "Nothing to export"),
        (dict(gates="f,q"), InputError, "gates names 'q'"),
        (dict(batch_size=0), InputError, "batch_size must be a positive int"),
        (dict(layers=["embedding"]), InputError, "'embedding' .* is not a recurrent layer"),
        (dict(layers=["nope"]), ProbeKeyError, "'nope' names no layer"),
        (dict(layers="gru", states="c"), InputError, "No layer among gru has c"),
        (dict(vocab=3.5), InputError, "Cannot read a vocabulary"),
    ],
)
def test_bad_arguments(masked, tmp_path, kwargs, error, match):
    model, x = masked
    (tmp_path / "lstm.yml").write_text("stale")
    with pytest.raises(error, match=match):
        export_lstmvis(model, x, tmp_path, progress=False, **kwargs)
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_failed_run_leaves_no_project(masked, tmp_path):
    model, x = masked
    (tmp_path / "lstm.yml").write_text("stale")
    with pytest.raises(InputError, match="not a recurrent layer"):
        export_lstmvis(model, x, tmp_path, layers=["embedding"], progress=False)
    assert list(tmp_path.iterdir()) == []  # the stale config is gone, no temporary file is left


def test_model_without_token_input(tmp_path):
    model = tlp.load_keras(GOLDENS / "keras_lstm_go_backwards.keras")
    arrays, _ = load_golden("keras_lstm_go_backwards")
    with pytest.raises(InputError, match="no integer \\(batch, time\\) token input"):
        export_lstmvis(model, golden_inputs(arrays)[0], tmp_path, progress=False)


def test_npy_file_equals_array(example, tmp_path):
    model, x = example
    np.save(tmp_path / "ids.npy", x)
    a = export_lstmvis(model, x, tmp_path / "a", states="h", batch_size=16, progress=False)
    b = export_lstmvis(model, str(tmp_path / "ids.npy"), tmp_path / "b", states="h", batch_size=5, progress=False)
    (states_a, ids_a, offsets_a), (states_b, ids_b, offsets_b) = _read(a.out_dir), _read(b.out_dir)
    np.testing.assert_array_equal(ids_a, ids_b)
    np.testing.assert_array_equal(offsets_a, offsets_b)
    assert_close(states_a["lstm/gates/h"], states_b["lstm/gates/h"], what="h by batch size")
    assert a.dict_file.read_text() == b.dict_file.read_text() == "".join(f"{i} {i}\n" for i in np.unique(x))
