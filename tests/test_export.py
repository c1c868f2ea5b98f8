"""Portable converted models: ``torch.export`` and ONNX (run in ONNX Runtime) over one golden model
per layer family, ``torch.compile`` over two, all against the outputs Keras produced, with the
batch axis left dynamic (checked on another batch size than the one traced)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

import torch_lstm_probe as tlp
from tests.helpers import ATOL, assert_close
from tests.test_goldens import GOLDENS, golden_inputs, load_golden

# One golden per layer family: masks with holes + LSTM/GRU/Bidirectional, seq2seq (initial_state,
# return_state), TimeDistributed Conv1D front end, merges and norms, hard_sigmoid, SimpleRNN,
# time_major with a fixed input shape, the Masking layer.
FAMILIES = [
    "keras_masked_lstm_gru",
    "tf_keras_seq2seq",
    "keras_td_cnn_lstm",
    "tf_keras_merges_norms",
    "tf_keras_lstm_hard_sigmoid",
    "keras_simple_rnn",
    "tf_keras_lstm_time_major",
    "keras_masking_layer",
]


def _flat(out: Any) -> list[torch.Tensor]:
    return [out] if isinstance(out, torch.Tensor) else [t for o in out for t in _flat(o)]


def _golden(case: str, fmt: str = "keras") -> tuple[tlp.KerasModel, tuple[torch.Tensor, ...], dict]:
    arrays, _ = load_golden(case)
    inputs = tuple(torch.as_tensor(a) for a in golden_inputs(arrays))
    return tlp.load_keras(GOLDENS / f"{case}.{fmt}"), inputs, arrays


def _check_outputs(outs: list[Any], arrays: dict, what: str) -> None:
    expected = [arrays[k] for k in sorted((k for k in arrays if k.startswith("output:")), key=lambda k: int(k[7:]))]
    assert len(outs) == len(expected), what
    for k, (got, want) in enumerate(zip(outs, expected)):
        assert_close(torch.as_tensor(np.asarray(got)), want, ATOL["cpu_float32"], f"{what} output {k}")


def _other_sizes(model: tlp.KerasModel, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The inputs with another batch size (the number of steps is fixed at export)."""
    out = []
    for spec, x in zip(model.input_specs, inputs):
        shape = spec["shape"]
        if shape[0] is None:
            x = torch.cat([x, x[:1]])  # one more row
        out.append(x.contiguous())
    return tuple(out)


@pytest.mark.parametrize("case", FAMILIES)
def test_torch_export_matches_keras_with_a_dynamic_batch(case: str):
    model, inputs, arrays = _golden(case)
    program = torch.export.export(model, inputs, dynamic_shapes=model.dynamic_shapes())
    exported = program.module()
    other = _other_sizes(model, inputs)
    with torch.no_grad():
        _check_outputs(_flat(exported(*inputs)), arrays, f"{case} exported")
        for got, want in zip(_flat(exported(*other)), _flat(model(*other))):
            torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("case", FAMILIES)
def test_onnx_in_onnx_runtime_matches_keras(case: str, tmp_path: Path):
    model, inputs, arrays = _golden(case, "h5")
    path = tmp_path / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, inputs, str(path), dynamic_shapes=model.dynamic_shapes(), dynamo=True, verbose=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    _check_outputs(session.run(None, dict(zip(names, (x.numpy() for x in inputs)))), arrays, f"{case} ONNX")
    other = _other_sizes(model, inputs)
    with torch.inference_mode():
        eager = _flat(model(*other))
    for got, want in zip(session.run(None, dict(zip(names, (x.numpy() for x in other)))), eager):
        np.testing.assert_allclose(got, want.numpy(), atol=1e-6, rtol=1e-5)


def test_torch_compile_matches_keras():
    """By default Dynamo leaves nn.LSTM/GRU/RNN modules to eager (a graph break at each recurrent
    layer); with ``allow_rnn`` the whole model is one graph. Both match Keras."""
    model, inputs, arrays = _golden("keras_lstm_u16_stacked")
    torch._dynamo.reset()
    assert torch._dynamo.explain(model)(*inputs).graph_break_count > 0  # what the README documents
    with torch.inference_mode():
        _check_outputs(_flat(torch.compile(model)(*inputs)), arrays, "compiled")
    model, inputs, arrays = _golden("keras_masked_lstm_gru")
    with torch._dynamo.config.patch(allow_rnn=True):
        torch._dynamo.reset()
        assert torch._dynamo.explain(model)(*inputs).graph_count == 1
        with torch.inference_mode():
            compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
            _check_outputs(_flat(compiled(*inputs)), arrays, "compiled, one graph")
    torch._dynamo.reset()
