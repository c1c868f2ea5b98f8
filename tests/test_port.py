"""tlp.port: every golden model, written out as plain PyTorch, runs where torch_lstm_probe cannot be
imported and reproduces Keras' outputs.

All ported models run in one fresh interpreter (``python -I`` plus an import blocker for this
package), so the file costs one interpreter start, not one per model.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import torch_lstm_probe as tlp
from torch_lstm_probe.cli import main
from torch_lstm_probe.model import KerasModel

GOLDENS = Path(__file__).parent / "goldens"
CASES = (
    sorted(p.name for p in GOLDENS.glob("*.keras"))
    + sorted(p.name for p in GOLDENS.glob("*.h5"))
    # the Keras 1/2 files; an architecture JSON stands for itself plus its weights-only .h5
    + sorted(
        f"legacy/{p.name}"
        for p in (GOLDENS / "legacy").glob("*.*")
        if p.suffix == ".json" or p.suffix == ".h5" and not p.with_suffix(".json").exists()
    )
)
ATOL = 1e-5

# Runs first in the driver: any import of this package fails, so a ported file cannot lean on it.
BLOCKER = """
import sys


class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch_lstm_probe" or name.startswith("torch_lstm_probe."):
            raise ImportError(f"{name} is blocked in this interpreter")
        return None


sys.meta_path.insert(0, _Block())
"""

DRIVER = (
    BLOCKER
    + """
import importlib.util
import json

import torch
from safetensors.torch import load_file

torch.set_num_threads(1)
results = {}
for k, (folder, golden) in enumerate(json.loads(sys.argv[1])):
    spec = importlib.util.spec_from_file_location(f"ported_{k}", f"{folder}/model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.load()
    arrays = load_file(golden)
    inputs = [arrays[f"input:{i}"] for i in range(sum(key.startswith("input:") for key in arrays))]
    wanted = [arrays[f"output:{i}"] for i in range(sum(key.startswith("output:") for key in arrays))]
    with torch.no_grad():
        got = model(*inputs)
    got = got if isinstance(got, list) else [got]
    results[folder] = {
        "count": [len(got), len(wanted)],
        "errors": [float((g - w).abs().max()) for g, w in zip(got, wanted)],
        "training": model.training,
    }
print(json.dumps(results))
"""
)


def _golden_arrays(case: str) -> Path:
    return GOLDENS / (case.rsplit(".", 1)[0] + ".safetensors")


@pytest.fixture(scope="module")
def ported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every golden model ported into its own folder."""
    root = tmp_path_factory.mktemp("ported")
    folders = {}
    for case in CASES:
        folders[case] = root / case.replace(".", "_").replace("/", "_")
        path = GOLDENS / case
        model = tlp.load_keras(path, weights=path.with_suffix(".h5")) if path.suffix == ".json" else path
        tlp.port(model, folders[case], check=False)  # the driver compares with Keras itself
    return folders


@pytest.fixture(scope="module")
def results(ported: dict[str, Path]) -> dict[str, dict]:
    """The driver's report on every ported model, from one isolated interpreter."""
    jobs = [[str(folder), str(_golden_arrays(case))] for case, folder in ported.items()]
    run = subprocess.run(
        [sys.executable, "-I", "-c", DRIVER, json.dumps(jobs)], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-4000:]
    report = json.loads(run.stdout)
    return {case: report[str(folder)] for case, folder in ported.items()}


@pytest.mark.parametrize("case", CASES)
def test_ported_golden_matches_keras(case: str, results: dict[str, dict]) -> None:
    got = results[case]
    assert got["count"][0] == got["count"][1], f"{case}: {got['count'][0]} outputs, Keras has {got['count'][1]}"
    assert max(got["errors"]) <= ATOL, f"{case}: max errors {got['errors']}"
    assert got["training"] is False  # load() returns the model in eval mode


def test_blocker_stops_this_package() -> None:
    """The driver's interpreter cannot import torch_lstm_probe; the same interpreter without the blocker can."""
    blocked = subprocess.run(
        [sys.executable, "-I", "-c", BLOCKER + "import torch_lstm_probe"], capture_output=True, text=True, timeout=120
    )
    assert blocked.returncode != 0 and "torch_lstm_probe is blocked" in blocked.stderr
    control = subprocess.run(
        [sys.executable, "-I", "-c", "import torch_lstm_probe"], capture_output=True, text=True, timeout=120
    )
    assert control.returncode == 0, control.stderr


def test_generated_source_is_plain(ported: dict[str, Path]) -> None:
    sources = {case: (folder / "model.py").read_text() for case, folder in ported.items()}
    for case, source in sources.items():
        assert "torch_lstm_probe" not in source, case
    plain = sources["keras_lstm_default_u3.keras"]
    assert "self.lstm = nn.LSTM(5, 3, batch_first=True)" in plain
    assert "class LstmDefaultU3(nn.Module):" in plain and "def load(" in plain
    for helper in ("def masked_rnn", "def lstm_loop", "def gru_loop", "def rnn_loop", "import torch.nn.functional"):
        assert helper not in plain  # only the helpers a model needs
    assert "def lstm_loop" in sources["keras_lstm_hard_sigmoid.keras"]
    assert "def gru_loop" in sources["tf_keras_gru_reset_before.h5"]
    masked = sources["keras_masked_lstm_gru.keras"]
    assert "embedding_mask = input != 0" in masked and "def masked_rnn" in masked


def test_generated_source_is_ruff_clean(ported: dict[str, Path]) -> None:
    ruff = Path(sys.executable).with_name("ruff")
    exe = str(ruff) if ruff.exists() else shutil.which("ruff")
    if exe is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]' installs it)")
    files = [str(folder / "model.py") for folder in ported.values()]
    for args in (["format", "--isolated", "--check"], ["check", "--isolated"]):
        run = subprocess.run([exe, *args, *files], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


def _one_layer_model(layer_type: str, config: dict, shape: list) -> KerasModel:
    return KerasModel(
        {
            "name": "tiny",
            "inputs": [{"name": "x", "shape": shape, "dtype": "float32"}],
            "layers": [{"name": "odd", "type": layer_type, "config": config}],
            "nodes": [{"layer": "odd", "inputs": [["x", 0, 0]]}],
            "outputs": [["odd", 0, 0]],
        }
    )


def test_unsupported_layer_is_a_typed_error(tmp_path: Path) -> None:
    model = _one_layer_model("UpSampling1D", {"size": 2}, [None, 4, 3])
    with pytest.raises(tlp.PortError, match=r"'odd' \(UpSampling1D\).*Supported runtime layers: .*LSTM"):
        tlp.port(model, tmp_path)
    assert not (tmp_path / "model.py").exists()


def test_unsupported_layer_read_by_a_later_layer_is_a_typed_error(tmp_path: Path) -> None:
    model = tlp.KerasModel(
        {
            "name": "two",
            "inputs": [{"name": "x", "shape": [None, 4, 3], "dtype": "float32"}],
            "layers": [
                {"name": "odd", "type": "UpSampling1D", "config": {"size": 2}},
                {"name": "head", "type": "Dense", "config": {"in_features": 3, "out_features": 2}},
            ],
            "nodes": [{"layer": "odd", "inputs": [["x", 0, 0]]}, {"layer": "head", "inputs": [["odd", 0, 0]]}],
            "outputs": [["head", 0, 0]],
        }
    )
    with pytest.raises(tlp.PortError, match=r"no plain-PyTorch writer for layer\(s\) 'odd' \(UpSampling1D\)"):
        tlp.port(model, tmp_path)


def test_unsupported_option_is_a_typed_error(tmp_path: Path) -> None:
    config = {"input_size": 3, "hidden_size": 2, "stateful": True, "batch_size": 2}
    model = _one_layer_model("LSTM", config, [2, 4, 3])
    with pytest.raises(tlp.PortError, match=r"layer 'odd' \(LSTM\): stateful=True .*Fix: "):
        tlp.port(model, tmp_path)


def test_cli_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["port", str(GOLDENS / "keras_lstm_default_u3.h5"), str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "model.py").is_file() and (tmp_path / "out" / "model.safetensors").is_file()
    assert main(["port", str(tmp_path / "missing.keras"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("torch-lstm-probe: error:") and "\n" not in err
