"""The ``extract`` and ``inspect-activations`` verbs: values equal to ``probe``, the summaries, and one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

import torch_lstm_probe as tlp
import torch_lstm_probe.cli as cli
from torch_lstm_probe.cli import EXAMPLES, main

from .helpers import ATOL

EXAMPLE = EXAMPLES / "sentiment_lstm.keras"  # input (None, 4): int32 token ids in [0, 15)
SAMPLES = 40
BATCH = 16  # 40 samples: batches of 16, 16 and 8
SHARD_MB = "0.02"  # about 21 KB: a shard per batch, so three shards
EPS = {None: 0.0, "float16": 2.0**-10, "bfloat16": 2.0**-7}  # relative spacing of the stored dtype


@pytest.fixture(scope="module")
def model():
    return tlp.load_keras(EXAMPLE)


def _tokens(folder: Path, kind: str = "npy", seed: int = 0) -> tuple[Path, np.ndarray]:
    """Token ids written as a .npy, .npz or .safetensors data file; returns the path and the ids."""
    x = np.random.default_rng(seed).integers(0, 15, size=(SAMPLES, 4)).astype(np.int32)  # (samples, time)
    path = folder / f"tokens.{kind}"
    if kind == "npy":
        np.save(path, x)
    elif kind == "npz":
        np.savez(path, tokens=x)
    else:
        save_file({"tokens": x}, str(path))
    return path, x


def _extract(data: Path, out: Path, *flags: str) -> int:
    argv = ["extract", str(EXAMPLE), str(data), "--out", str(out), "--batch-size", str(BATCH)]
    return main([*argv, "--shard-mb", SHARD_MB, "--no-progress", *flags])


def _one_line_error(capsys, *needles: str) -> str:
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith("torch-lstm-probe: error: "), err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize(
    ("kind", "dtype"), [("npy", None), ("npz", "float16"), ("safetensors", "bfloat16"), ("npy", "float64")]
)
def test_extract_stores_what_probe_gives(tmp_path, capsys, model, kind, dtype):
    data, x = _tokens(tmp_path, kind)
    out = tmp_path / "acts"
    assert _extract(data, out, "--gates", *(["--dtype", dtype] if dtype else [])) == 0
    printed = capsys.readouterr().out.splitlines()
    acts = tlp.open_activations(out)
    shards = acts.index["shards"]
    assert len(shards) == 3  # --shard-mb and --batch-size reach tlp.extract
    assert re.fullmatch(
        rf"extracted {SAMPLES} samples, 12 keys, 3 shard\(s\), [0-9,]+ bytes \([0-9.]+ KiB\); "
        r"[0-9,]+ samples/s \([0-9.]+ s\)",
        printed[0],
    ), printed[0]
    nbytes = sum((out / s["file"]).stat().st_size for s in shards)
    assert f" {nbytes:,} bytes " in printed[0]
    assert printed[1].startswith(f"folder: {out}  (torch-lstm-probe inspect-activations {out})")
    assert len(acts) == SAMPLES
    for i in (0, 17, SAMPLES - 1):  # one sample from each shard
        expected = tlp.probe(model, x[i : i + 1], gates=True)
        assert acts.keys() == list(expected)
        for key, value in expected.items():
            stored = acts[key][i]
            assert stored.dtype == getattr(torch, dtype or "float32"), key
            torch.testing.assert_close(
                stored.double(), value[0].double(), atol=ATOL["cpu_float32"], rtol=EPS.get(dtype, 0.0), msg=key
            )


def test_extract_layers_flag_and_the_same_command_again(tmp_path, capsys, model):
    data, x = _tokens(tmp_path)
    out = tmp_path / "acts"
    assert _extract(data, out, "--layers", "lstm,output") == 0
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert tlp.open_activations(out).keys() == ["lstm", "output"]
    capsys.readouterr()

    assert _extract(data, out, "--layers", "lstm,output") == 0  # a finished folder: nothing recomputed
    assert "already complete, nothing computed" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first

    assert _extract(data, out, "--layers", "lstm") == 2  # other arguments into the same folder
    _one_line_error(capsys, "ExtractionMismatchError", "request.layers", "--overwrite")
    assert _extract(data, out, "--layers", "lstm", "--overwrite") == 0
    acts = tlp.open_activations(out)
    assert acts.keys() == ["lstm"]
    torch.testing.assert_close(acts["lstm"][3], tlp.probe(model, x[3:4], layers=["lstm"])["lstm"][0], atol=1e-5, rtol=0)


def test_extract_no_resume_refuses_a_started_folder(tmp_path, capsys):
    data, _ = _tokens(tmp_path)
    out = tmp_path / "acts"
    assert _extract(data, out) == 0
    capsys.readouterr()
    assert _extract(data, out, "--no-resume") == 2
    _one_line_error(capsys, "resume=False", "without --no-resume")


def _inspect(capsys, *argv: str) -> str:
    assert main(["inspect-activations", *argv]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    return captured.out


def _table(lines: list[str]) -> dict[str, tuple[str, ...]]:
    """The key table after the blank line: {key: (per sample, dtype, packed, meaning)}, cut at the header's columns."""
    header, *rows = lines[lines.index("") + 1 :]
    assert re.fullmatch(r"key +per sample +dtype +packed +meaning", header), header
    cuts = [0, *(header.index(title) for title in ("per sample", "dtype", "packed", "meaning")), None]
    table = {}
    for row in rows:
        cells = tuple(row[a:b].strip() for a, b in zip(cuts, cuts[1:]))
        table[cells[0]] = cells[1:]
    return table


def test_inspect_activations_prints_the_folder(tmp_path, capsys):
    data, _ = _tokens(tmp_path)
    out = tmp_path / "acts"
    assert _extract(data, out, "--gates", "--dtype", "float16") == 0
    capsys.readouterr()
    acts = tlp.open_activations(out)
    run = acts.run
    nbytes = sum(s["bytes"] for s in acts.index["shards"])
    lines = _inspect(capsys, str(out)).splitlines()
    assert lines[0] == f"folder   {out}"
    assert lines[1] == f"samples  {SAMPLES} in 3 shard(s), {nbytes:,} bytes ({nbytes / 1024:.1f} KiB)"
    assert lines[2] == (
        f"model    sentiment_lstm from {EXAMPLE} (Keras {run['model']['keras_version']}), "
        f"weights sha256 {run['model']['weights_sha256'][:12]}"
    )
    assert run["model"]["keras_version"].startswith("3.")
    assert lines[3] == f"request  layers all; gates yes; dtype float16; packed no; batch size {BATCH}"
    assert lines[4] == "data     npy tokens.npy"
    rows = _table(lines)
    assert list(rows) == acts.keys()
    assert rows["lstm"] == ("(64,)", "float16", "no", "layer output")
    assert rows["embeddings"] == ("(4, 100)", "float16", "no", "layer output")
    assert rows["lstm/gates/f"][:3] == ("(4, 64)", "float16", "no")
    assert rows["lstm/gates/f"][3].startswith("forget gate f = sigma(z_f)")


def test_inspect_activations_json_is_the_index_without_shard_lists(tmp_path, capsys):
    data, _ = _tokens(tmp_path)
    out = tmp_path / "acts"
    assert _extract(data, out, "--layers", "lstm", "--gates", "--packed", "--device", "cpu") == 0
    capsys.readouterr()
    summary = json.loads(_inspect(capsys, str(out / "index.json"), "--json"))
    index = json.loads((out / "index.json").read_text())
    assert summary["folder"] == str(out)
    assert summary["num_samples"] == SAMPLES
    assert summary["num_shards"] == len(index["shards"]) == 3
    assert summary["bytes"] == sum((out / s["file"]).stat().st_size for s in index["shards"])
    assert summary["model"] == index["run"]["model"]
    assert summary["request"] == index["run"]["request"]
    assert summary["request"]["layers"] == ["lstm"] and summary["request"]["gates"] is True
    assert summary["request"]["packed"] is True  # asked for; no key is packed, as this model has no mask
    assert not any(entry["packed"] for entry in summary["keys"])
    assert summary["data"]["kind"] == "npy"
    assert [k["key"] for k in summary["keys"]] == index["key_order"]
    for entry in summary["keys"]:
        assert {k: v for k, v in entry.items() if k != "key"} == index["keys"][entry["key"]]
    assert "shards" not in summary


def test_inspect_activations_shows_varying_axes_as_none(tmp_path, capsys):
    data, _ = _tokens(tmp_path)
    out = tmp_path / "acts"
    assert _extract(data, out, "--layers", "lstm", "--gates") == 0
    capsys.readouterr()
    index_path = out / "index.json"
    index = json.loads(index_path.read_text())
    index["keys"]["lstm/gates/f"]["sample_shape"] = [None, 64]  # as written for data whose time axis varies
    index_path.write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    rows = _table(_inspect(capsys, str(out)).splitlines())
    assert rows["lstm/gates/f"][0] == "(None, 64)"
    assert rows["lstm/gates/i"][0] == "(4, 64)"


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["{tmp}/missing.npy"], ["FileNotFoundError: DATA file not found", "missing.npy", ".npy/.npz/.safetensors"]),
        (["{tmp}/tokens.txt"], ["InputError: DATA", "tokens.txt"]),
        (["{tmp}/tokens.npy", "--device", "tpu"], ["--device 'tpu'", "cpu, cuda or cuda:N"]),
        (["{tmp}/tokens.npy", "--shard-mb", "0"], ["--shard-mb 0: expected a positive number of MiB"]),
        (["{tmp}/tokens.npy", "--batch-size", "0"], ["InputError: batch_size must be a positive int"]),
        (["{tmp}/tokens.npy", "--layers", "nope"], ["ProbeKeyError", "nope"]),
        (["{tmp}/tokens.npy", "--out", "{tmp}/tokens.txt"], ["InputError", "is not a folder"]),
    ],
)
def test_extract_user_errors_are_one_line_exit_2(tmp_path, capsys, args, needles):
    _tokens(tmp_path)
    (tmp_path / "tokens.txt").write_text("1 2 3")
    given = [a.replace("{tmp}", str(tmp_path)) for a in args]  # a later --out wins over the default one
    assert main(["extract", str(EXAMPLE), "--out", str(tmp_path / "acts"), "--no-progress", *given]) == 2
    _one_line_error(capsys, *needles)
    assert not (tmp_path / "acts").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where no CUDA device exists")
def test_extract_device_cuda_without_a_gpu_is_a_user_error(tmp_path, capsys):
    data, _ = _tokens(tmp_path)
    assert main(["extract", str(EXAMPLE), str(data), "--out", str(tmp_path / "acts"), "--device", "cuda"]) == 2
    _one_line_error(capsys, "--device cuda: no CUDA device is available here. Fix: --device cpu.")


@pytest.mark.parametrize("dtype", ["int8", "float8", "half"])
def test_extract_bad_dtype_is_a_usage_error(tmp_path, capsys, dtype):
    data, _ = _tokens(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["extract", str(EXAMPLE), str(data), "--out", str(tmp_path / "acts"), "--dtype", dtype])
    assert info.value.code == 2
    assert f"argument --dtype: invalid choice: '{dtype}'" in capsys.readouterr().err
    assert not (tmp_path / "acts").exists()


@pytest.mark.parametrize(
    ("setup", "needles"),
    [
        ("missing", ["InputError", "no such folder"]),
        ("empty", ["InputError", "index.json"]),
        ("corrupt", ["InputError", "index.json"]),
    ],
)
def test_inspect_activations_errors_are_one_line_exit_2(tmp_path, capsys, setup, needles):
    folder = tmp_path / "acts"
    if setup != "missing":
        folder.mkdir()
    if setup == "corrupt":
        (folder / "index.json").write_text('{"format": "torch_lstm_probe.activations", "version": 1')
    assert main(["inspect-activations", str(folder)]) == 2
    _one_line_error(capsys, *needles)


def test_extract_help_shows_the_key_grammar_and_the_library_default(capsys):
    from torch_lstm_probe.capture.keys import KEY_GRAMMAR
    from torch_lstm_probe.extract import DEFAULT_SHARD_BYTES

    with pytest.raises(SystemExit) as info:
        main(["extract", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for pattern, _ in KEY_GRAMMAR:
        assert pattern in text
    assert "resumes an interrupted extraction" in text
    assert cli.DEFAULT_SHARD_MB * 2**20 == DEFAULT_SHARD_BYTES


@pytest.mark.parametrize(
    ("nbytes", "shown"),
    [
        (0, "0 bytes"),
        (1023, "1,023 bytes"),
        (1536, "1,536 bytes (1.5 KiB)"),
        (5 * 2**30, "5,368,709,120 bytes (5.0 GiB)"),
    ],
)
def test_sizes_are_exact_then_binary_units(nbytes, shown):
    assert cli._size(nbytes) == shown
