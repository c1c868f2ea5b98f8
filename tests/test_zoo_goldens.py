"""Parity against the committed "zoo" goldens (``tests/goldens/zoo/``), no TensorFlow needed.

The zoo holds the newer layer families (RNN cells, attention, ConvLSTM2D, 2-D CNN + LSTM,
preprocessing, text) from Keras 3 and tf_keras; see ``tests/goldens/zoo/README.md``. Each model is
loaded from every saved format and compared layer by layer with the outputs Keras computed.
String inputs are stored as JSON in the safetensors metadata (``input:<i>``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import torch_lstm_probe as tlp
from tests.helpers import ATOL
from tests.test_goldens import GOLDENS, check_golden, load_golden

ZOO = GOLDENS / "zoo"
CASES = sorted(p.stem for p in ZOO.glob("*.safetensors"))
FORMAT_CASES = [(case, fmt) for case in CASES for fmt in ("keras", "h5") if (ZOO / f"{case}.{fmt}").exists()]


def load_zoo(case: str) -> dict[str, np.ndarray]:
    """Arrays of one zoo golden, with string inputs from the metadata as object arrays (Keras' layout)."""
    arrays, meta = load_golden(f"zoo/{case}")  # load_golden reads GOLDENS / "<case>.safetensors"
    texts = {k: np.array(json.loads(v), dtype=object) for k, v in meta.items() if k.startswith("input:")}
    return {**arrays, **texts}


def test_zoo_goldens_present():
    assert len(CASES) >= 15, f"expected the committed zoo goldens, found {CASES}"
    assert {c.startswith("tf_keras_") for c in CASES} == {True, False}, "both libraries"
    for case in CASES:
        assert (ZOO / f"{case}.keras").exists(), case


@pytest.mark.parametrize(("case", "fmt"), FORMAT_CASES)
def test_zoo_golden_parity_cpu(case: str, fmt: str):
    model = tlp.load_keras(ZOO / f"{case}.{fmt}")
    check_golden(model, load_zoo(case), ATOL["cpu_float32"])


@pytest.mark.gpu
@pytest.mark.parametrize(("case", "fmt"), FORMAT_CASES)
def test_zoo_golden_parity_cuda(case: str, fmt: str):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = tlp.load_keras(ZOO / f"{case}.{fmt}", device="cuda")
    check_golden(model, load_zoo(case), ATOL["gpu_float32"])
