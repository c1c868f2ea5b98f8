"""The torch-lstm-probe command line: inspect, probe, demo, and its error contract."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import torch_lstm_probe as tlp
import torch_lstm_probe.cli as cli
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
    assert "Traceback" not in err


def test_probe_writes_safetensors_with_metadata(tmp_path, capsys):
    x = np.random.default_rng(0).standard_normal((2, 7, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "acts.safetensors"
    model = GOLDENS / "keras_lstm_u16_stacked.keras"
    assert (
        main(
            [
                "probe",
                str(model),
                "--input",
                str(tmp_path / "x.npy"),
                "--layers",
                "lstm_1",
                "--gates",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    with safe_open(str(out), framework="np") as f:
        keys = set(f.keys())
        meta = f.metadata()
        assert f.get_tensor("lstm_1/gates/f").shape == (2, 7, 16)
    aliases = json.loads(meta["aliases"])
    assert set(json.loads(meta["keys"])) == {"lstm_1"} | {f"lstm_1/gates/{g}" for g in "ifgoch"}
    assert keys == set(json.loads(meta["keys"])) - set(aliases)
    assert set(aliases.values()) <= keys
    assert meta["keras_version"] == "3.15.1"
    assert len(meta["source_sha256"]) == 64
    assert json.loads(meta["layer_names"]) == ["lstm", "lstm_1", "lstm_2"]
    assert "<layer>/gates/<g>" in json.loads(meta["key_meanings"])


def test_probe_wrong_input_shape_is_a_clear_error(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((2, 7, 4), np.float32))
    code = main(
        [
            "probe",
            str(GOLDENS / "keras_lstm_u16_stacked.keras"),
            "--input",
            str(tmp_path / "x.npy"),
            "--out",
            str(tmp_path / "a.safetensors"),
        ]
    )
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


README = Path(__file__).resolve().parent.parent / "README.md"
EXAMPLE = EXAMPLES / "sentiment_lstm.keras"


def _example_tokens(tmp_path: Path) -> tuple[Path, np.ndarray]:
    meta = json.loads((EXAMPLES / "sentiment_lstm.json").read_text())
    x = np.asarray(meta["padded"], dtype=np.int64)
    np.save(tmp_path / "x.npy", x)
    return tmp_path / "x.npy", x


def _readme_probe_synopsis() -> list[str]:
    """The README's own ``probe`` line, optional parts dropped: ``probe FILE --input x.npy --out acts.safetensors``."""
    line = next(x for x in README.read_text().splitlines() if x.startswith("torch-lstm-probe probe "))
    return re.sub(r"\[[^]]*\]", "", line).split()[1:]


@pytest.mark.parametrize("gates", [False, True])
def test_probe_readme_synopsis_every_layer_stores_each_tensor_once(tmp_path, monkeypatch, capsys, gates):
    x_path, x = _example_tokens(tmp_path)
    monkeypatch.chdir(tmp_path)
    argv = [str(EXAMPLE) if w == "FILE" else w for w in _readme_probe_synopsis()]
    assert argv == ["probe", str(EXAMPLE), "--input", "x.npy", "--out", "acts.safetensors"]
    assert main(argv + (["--gates"] if gates else [])) == 0
    out = capsys.readouterr().out
    assert re.search(r"^dropout +\(10, 64\)  torch.float32  \(same tensor as lstm\)$", out, flags=re.M)
    assert (
        out.strip().splitlines()[-1]
        == f"wrote {6 + 6 * gates} keys ({4 + 6 * gates} tensors, 2 aliases) to acts.safetensors"
    )
    expected = tlp.probe(tlp.load_keras(EXAMPLE), x, gates=gates)
    with safe_open("acts.safetensors", framework="pt") as f:
        meta = f.metadata()
        stored = set(f.keys())
    aliases = json.loads(meta["aliases"])
    assert aliases == {"dropout": "lstm", "dropout_1": "dense"}
    assert json.loads(meta["keys"]) == list(expected)
    assert stored == set(expected) - set(aliases)
    tensors = load_file("acts.safetensors")
    recovered = {key: tensors[aliases.get(key, key)] for key in json.loads(meta["keys"])}
    assert recovered.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(recovered[key], value, rtol=0, atol=0, msg=key)


def _views(case: str) -> dict[str, torch.Tensor]:
    base = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)  # (batch, time, units)
    if case == "same object":
        return {"a": base, "b": base}
    if case == "same view, other object":
        return {"a": base, "b": base.view(2, 3, 4)}
    if case == "overlapping slice":
        return {"seq": base, "last": base[:, -1]}  # (batch, units), a view inside seq
    if case == "reinterpreted dtype":
        return {"a": base, "b": base.view(torch.int32)}
    return {"a": base[:, :0], "b": base[:, :0], "c": base}  # empty views


@pytest.mark.parametrize(
    "case", ["same object", "same view, other object", "overlapping slice", "reinterpreted dtype", "empty views"]
)
def test_store_once_writes_every_view_loadably(tmp_path, case):
    acts = _views(case)
    stored, aliases = cli._store_once(acts)
    want_aliases = {"b": "a"} if case in ("same object", "same view, other object") else {}
    assert aliases == want_aliases
    save_file(stored, str(tmp_path / "v.safetensors"))
    back = load_file(str(tmp_path / "v.safetensors"))
    for key, value in acts.items():
        assert torch.equal(back[aliases.get(key, key)], value), key


def test_probe_out_into_missing_folders_creates_them(tmp_path, capsys):
    x_path, _ = _example_tokens(tmp_path)
    out = tmp_path / "new" / "deeper" / "acts.safetensors"
    assert main(["probe", str(EXAMPLE), "--input", str(x_path), "--layers", "lstm", "--out", str(out)]) == 0
    assert load_file(str(out))["lstm"].shape == (10, 64)


@pytest.mark.parametrize(
    ("out", "message"),
    [("blocker/acts.safetensors", "cannot create the folder .*blocker"), ("folder", "is a folder. Expected a file")],
)
def test_probe_out_that_cannot_be_written_is_one_line(tmp_path, capsys, out, message):
    x_path, _ = _example_tokens(tmp_path)
    (tmp_path / "blocker").write_text("a file where a folder should be")
    (tmp_path / "folder").mkdir()
    assert main(["probe", str(EXAMPLE), "--input", str(x_path), "--out", str(tmp_path / out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"torch-lstm-probe: error: --out {tmp_path / out}:")
    assert re.search(message, err)
    assert len(err.strip().splitlines()) == 1


def _boom(args):
    raise RuntimeError("something broke\nsecond line")


def _raise_unsupported(*args, **kwargs):
    raise tlp.UnsupportedLayerError("m.h5: layer 'x' (Lambda): Lambda layers run Python code; refused.")


@pytest.mark.parametrize(
    ("argv", "code", "stderr"),
    [
        (["inspect", str(EXAMPLE)], 0, ""),
        (["inspect", "{tmp}/missing.keras"], 2, "error: FileNotFoundError: Keras model file not found"),
        (["inspect", "{tmp}/x.npy"], 2, "error: KerasFileError:"),
        (["probe", str(EXAMPLE), "--input", "{tmp}/x.txt", "--out", "{tmp}/a.st"], 2, "error: InputError: --input"),
        (["probe", str(EXAMPLE), "--input", "{tmp}/bad.npy", "--out", "{tmp}/a.st"], 2, "cannot read it as .npy"),
        (
            ["probe", str(EXAMPLE), "--input", "{tmp}/x.npy", "--layers", "nope", "--out", "{tmp}/a.st"],
            2,
            "ProbeKeyError",
        ),
        (["demo"], 3, "internal error: RuntimeError: something broke (run with --debug for the traceback)"),
        (["inspect", "{tmp}/m.h5"], 1, "not convertible: UnsupportedLayerError: m.h5: layer 'x' (Lambda)"),
    ],
)
def test_exit_codes_and_one_line_messages(tmp_path, capsys, monkeypatch, argv, code, stderr):
    import torch_lstm_probe.converters.inspect as inspect_module

    _example_tokens(tmp_path)
    (tmp_path / "x.txt").write_text("1 2 3")
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    monkeypatch.setattr(cli, "_cmd_demo", _boom)
    if "m.h5" in " ".join(argv):
        (tmp_path / "m.h5").write_bytes(b"")
        monkeypatch.setattr(inspect_module, "inspect_model", _raise_unsupported)
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == code
    err = capsys.readouterr().err
    if code == 0:
        assert err == ""
        return
    assert err.startswith("torch-lstm-probe: ") and stderr in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_argparse_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["probe", str(EXAMPLE)])
    assert info.value.code == 2
    assert "the following arguments are required: --input, --out" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["before the verb", "after the verb", "at the end"])
@pytest.mark.parametrize("kind", ["user", "internal"])
def test_debug_anywhere_adds_the_traceback(tmp_path, capsys, monkeypatch, where, kind):
    monkeypatch.setattr(cli, "_cmd_demo", _boom)
    argv = ["inspect", str(tmp_path / "missing.keras")] if kind == "user" else ["demo"]
    position = {"before the verb": 0, "after the verb": 1, "at the end": len(argv)}[where]
    argv.insert(position, "--debug")
    assert main(argv) == (2 if kind == "user" else 3)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[-1].startswith(
        "torch-lstm-probe: error: FileNotFoundError" if kind == "user" else "torch-lstm-probe: internal error"
    )


def test_every_flag_has_help_and_is_kebab_case():
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    verbs = dict(subparsers.choices)
    assert {"inspect", "probe", "demo"} <= set(verbs)
    for name, p in [("", parser), *verbs.items()]:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
            for flag in action.option_strings:
                assert re.fullmatch(r"-h|--[a-z]+(-[a-z]+)*", flag), f"{name} {flag}"


CUSTOM_LAYERS_SOURCE = """
from torch import nn

def convert_fancy(config, weights):
    assert config["activation"] == "softmax" and weights == []
    return nn.Softmax(dim=-1)

LAYERS = {"FancyLayer": convert_fancy}
NOT_A_DICT = 3
"""


def _fancy_model(tmp_path: Path) -> Path:
    """The golden classifier with its Activation layer renamed to a class that has no converter."""
    path = tmp_path / "fancy.h5"
    shutil.copy(GOLDENS / "tf_keras_embedding_classifier.h5", path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        next(x for x in config["config"]["layers"] if x["class_name"] == "Activation")["class_name"] = "FancyLayer"
        f.attrs["model_config"] = json.dumps(config)
    return path


@pytest.mark.parametrize("form", ["module on sys.path", "module in the current folder", "file path"])
def test_custom_layers_from_a_module_or_a_file(tmp_path, capsys, monkeypatch, form):
    module = f"fancy_layers_{form.split()[0]}_{form.split()[-1]}".replace(".", "_")
    code_dir = tmp_path / "code"
    code_dir.mkdir()
    (code_dir / f"{module}.py").write_text(CUSTOM_LAYERS_SOURCE)
    monkeypatch.delitem(sys.modules, module, raising=False)
    if form == "module on sys.path":
        monkeypatch.syspath_prepend(str(code_dir))
        spec = f"{module}:LAYERS"
    elif form == "module in the current folder":
        monkeypatch.chdir(code_dir)  # as with the console script, whose sys.path lacks the current folder
        monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(code_dir))])
        spec = f"{module}:LAYERS"
    else:
        spec = f"{code_dir / module}.py:LAYERS"
    model = _fancy_model(tmp_path)
    assert main(["inspect", str(model)]) == 1
    assert main(["inspect", str(model), "--custom-layers", spec]) == 0
    assert "Every layer is convertible." in capsys.readouterr().out
    x = np.random.default_rng(0).integers(0, 5, size=(3, 6))
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "acts.safetensors"
    assert (
        main(["probe", str(model), "--input", str(tmp_path / "x.npy"), "--custom-layers", spec, "--out", str(out)]) == 0
    )
    monkeypatch.delitem(sys.modules, module, raising=False)
    want = tlp.probe(tlp.load_keras(GOLDENS / "tf_keras_embedding_classifier.h5"), x)["activation"]
    torch.testing.assert_close(load_file(str(out))["activation"], want, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("LAYERS", "expected MODULE:NAME or path/to/file.py:NAME"),
        ("no_such_module_xyz:LAYERS", "importing module 'no_such_module_xyz' failed: ModuleNotFoundError"),
        ("{code}/missing.py:LAYERS", "file '.*missing.py' not found"),
        ("{code}/layers.py:MISSING", "has no attribute 'MISSING'"),
        ("{code}/layers.py:NOT_A_DICT", "is a int. Expected a dict"),
        ("{code}/broken.py:LAYERS", "running '.*broken.py' failed: ZeroDivisionError"),
    ],
)
def test_custom_layers_errors_are_user_errors(tmp_path, capsys, spec, message):
    (tmp_path / "layers.py").write_text(CUSTOM_LAYERS_SOURCE)
    (tmp_path / "broken.py").write_text("x = 1 / 0\n")
    argv = ["inspect", str(EXAMPLE), "--custom-layers", spec.replace("{code}", str(tmp_path))]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("torch-lstm-probe: error: --custom-layers")
    assert re.search(message, err), err
    assert len(err.strip().splitlines()) == 1


def test_python_dash_m_runs_the_cli():
    result = subprocess.run([sys.executable, "-m", "torch_lstm_probe", "--help"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "inspect" in result.stdout and "probe" in result.stdout and "demo" in result.stdout


def test_internal_error_in_a_real_process_exits_3_without_traceback():
    script = (
        "import sys, torch_lstm_probe.cli as cli\n"
        "def boom(args):\n"
        "    raise ZeroDivisionError('division by zero')\n"
        "cli._cmd_demo = boom\n"
        "sys.argv = ['torch-lstm-probe', 'demo']\n"
        "import runpy\n"
        "runpy.run_module('torch_lstm_probe', run_name='__main__')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 3
    assert result.stderr.strip() == (
        "torch-lstm-probe: internal error: ZeroDivisionError: division by zero (run with --debug for the traceback)"
    )


def test_every_package_folder_is_listed_for_the_wheel():
    """pyproject.toml lists packages by hand (converters/ installs as torch_lstm_probe.converters):
    a new sub-package folder must be listed, or the installed command would fail to import it."""
    tomllib = pytest.importorskip("tomllib")
    root = Path(__file__).resolve().parent.parent
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {"torch_lstm_probe.converters": "converters"}
    found = set()
    for folder, name in [("torch_lstm_probe", "torch_lstm_probe"), ("converters", "torch_lstm_probe.converters")]:
        for init in (root / folder).rglob("__init__.py"):
            found.add(".".join((name, *init.parent.relative_to(root / folder).parts)))
    assert sorted(found) == sorted(config["packages"])
