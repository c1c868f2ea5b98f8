"""The torch-lstm-probe command line: inspect, probe, demo, and its error contract."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from safetensors import safe_open

from torch_lstm_probe.cli import EXAMPLES, main

GOLDENS = Path(__file__).parent / "goldens"


def test_inspect_table_and_recurrent_notes(capsys):
    assert main(["inspect", str(GOLDENS / "tf_keras_lstm_return_state.h5")]) == 0
    out = capsys.readouterr().out
    assert "written by Keras 2.21.0 (legacy_h5)" in out
    assert "enc    LSTM   (None, 7, 3) | (None, 3) | (None, 3)  108" in out
    assert "return_sequences=True: every step's hidden state" in out
    assert "return_state=True: then also the final states h_T, c_T" in out
    assert "Every layer is convertible." in out


def test_inspect_example_shapes_and_params(capsys):
    assert main(["inspect", str(EXAMPLES / "sentiment_lstm.keras")]) == 0
    out = capsys.readouterr().out
    assert "lstm        LSTM       (None, 64)      42,240  yes" in out
    assert "Total params: 47,965" in out


def test_inspect_names_unconvertible_layers(tmp_path, capsys):
    path = tmp_path / "m.h5"
    shutil.copy(GOLDENS / "tf_keras_embedding_classifier.h5", path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        next(x for x in config["config"]["layers"] if x["class_name"] == "Activation")["class_name"] = "FancyLayer"
        f.attrs["model_config"] = json.dumps(config)
    assert main(["inspect", str(path)]) == 1
    out = capsys.readouterr().out
    assert "NOT convertible: 1 layer(s):" in out
    assert "(FancyLayer): no converter for Keras class 'FancyLayer'" in out


def test_user_error_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not a model")
    assert main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("torch-lstm-probe: error: KerasFileError:")
    assert len(err.strip().splitlines()) == 1
    from torch_lstm_probe.errors import KerasFileError

    with pytest.raises(KerasFileError):
        main(["--debug", "inspect", str(bad)])


def test_probe_writes_safetensors_with_metadata(tmp_path, capsys):
    x = np.random.default_rng(0).standard_normal((2, 7, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "acts.safetensors"
    model = GOLDENS / "keras_lstm_u16_stacked.keras"
    assert main(["probe", str(model), "--input", str(tmp_path / "x.npy"), "--layers", "lstm_1", "--gates", "--out", str(out)]) == 0
    with safe_open(str(out), framework="np") as f:
        keys = set(f.keys())
        meta = f.metadata()
        assert f.get_tensor("lstm_1/gates/f").shape == (2, 7, 16)
    assert keys == {"lstm_1"} | {f"lstm_1/gates/{g}" for g in "ifgoch"}
    assert meta["keras_version"] == "3.15.1"
    assert len(meta["source_sha256"]) == 64
    assert json.loads(meta["layer_names"]) == ["lstm", "lstm_1", "lstm_2"]
    assert "<layer>/gates/<g>" in json.loads(meta["key_meanings"])


def test_probe_wrong_input_shape_is_a_clear_error(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((2, 7, 4), np.float32))
    code = main(["probe", str(GOLDENS / "keras_lstm_u16_stacked.keras"), "--input", str(tmp_path / "x.npy"), "--out", str(tmp_path / "a.safetensors")])
    assert code == 2
    assert "InputError: Input 'input' of model" in capsys.readouterr().err


def test_demo_prints_vectors_and_parity(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "'Well done!'" in out and "'Could have done better.'" in out
    assert "parity OK (atol 1e-5)" in out


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "torch-lstm-probe"
    assert exe.exists(), "pip install -e . installs the torch-lstm-probe entry point"
    result = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True)
    assert "inspect" in result.stdout and "probe" in result.stdout


def test_inspect_says_why_output_shapes_are_unknown(tmp_path, capsys):
    path = tmp_path / "m.h5"
    shutil.copy(GOLDENS / "tf_keras_lstm_u16_stacked.h5", path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        for layer in config["config"]["layers"]:
            layer["config"].pop("batch_input_shape", None)
        config["config"]["layers"] = [x for x in config["config"]["layers"] if x["class_name"] != "InputLayer"]
        config["config"].pop("build_input_shape", None)
        f.attrs["model_config"] = json.dumps(config)
    assert main(["inspect", str(path)]) == 0
    assert "Output shapes unknown: the file declares no input shape." in capsys.readouterr().out
