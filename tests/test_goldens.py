"""Parity against committed goldens that Keras 3 and tf_keras produced (no TensorFlow needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import torch_lstm_probe as tlp
from tests.helpers import ATOL, assert_close

GOLDENS = Path(__file__).parent / "goldens"
CASES = sorted(p.stem for p in GOLDENS.glob("*.safetensors"))


def load_golden(case: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    with safe_open(str(GOLDENS / f"{case}.safetensors"), framework="np") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}


def golden_inputs(arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
    n = len([k for k in arrays if k.startswith("input:")])
    return [arrays[f"input:{i}"] for i in range(n)]


def check_golden(model: tlp.KerasModel, arrays: dict[str, np.ndarray], atol: float) -> None:
    inputs = golden_inputs(arrays)
    acts = tlp.probe(model, inputs if len(inputs) > 1 else inputs[0])
    layer_keys = [k for k in arrays if k.startswith("layer:")]
    assert layer_keys, "golden has no per-layer outputs"
    for key in layer_keys:
        name = key[len("layer:") :]
        assert name in acts, f"probe lacks {name!r}; has {sorted(acts)}"
        assert_close(acts[name], arrays[key], atol, f"layer {name}")
    with torch.inference_mode():
        out = model(*inputs)
    outs = out if isinstance(out, list) else [out]
    n_out = len([k for k in arrays if k.startswith("output:")])
    assert len(outs) == n_out
    for i, o in enumerate(outs):
        assert_close(o, arrays[f"output:{i}"], atol, f"output {i}")


def test_goldens_present():
    assert len(CASES) >= 20, f"expected the committed goldens, found {CASES}"


@pytest.mark.parametrize("fmt", ["keras", "h5"])
@pytest.mark.parametrize("case", CASES)
def test_golden_parity_cpu(case: str, fmt: str):
    arrays, meta = load_golden(case)
    model = tlp.load_keras(GOLDENS / f"{case}.{fmt}")
    check_golden(model, arrays, ATOL["cpu_float32"])


@pytest.mark.parametrize("case", CASES)
def test_golden_parity_float64(case: str):
    arrays, _ = load_golden(case)
    model = tlp.load_keras(GOLDENS / f"{case}.keras", dtype=torch.float64)
    check_golden(model, arrays, ATOL["cpu_float64"])


@pytest.mark.parametrize("case", CASES)
def test_golden_save_load_roundtrip(case: str, tmp_path: Path):
    arrays, _ = load_golden(case)
    model = tlp.load_keras(GOLDENS / f"{case}.keras")
    tlp.save(model, tmp_path / "m.safetensors")
    again = tlp.load(tmp_path / "m.safetensors")
    assert again.layer_names == model.layer_names
    assert again.state_dict().keys() == model.state_dict().keys()
    check_golden(again, arrays, ATOL["cpu_float32"])


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES)
def test_golden_parity_cuda(case: str):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    arrays, _ = load_golden(case)
    model = tlp.load_keras(GOLDENS / f"{case}.keras", device="cuda")
    check_golden(model, arrays, ATOL["gpu_float32"])
