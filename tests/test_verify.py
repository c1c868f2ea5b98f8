"""``tlp.verify`` and ``torch-lstm-probe verify``: per-layer parity tables against the goldens (no
TensorFlow), live Keras for a few representative models, perturbed weights, generated inputs, the
decisions column and argument errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

import torch_lstm_probe as tlp
from tests.test_cli_extract import _one_line_error
from torch_lstm_probe.cli import main
from torch_lstm_probe.verify import format_report, generate_inputs

GOLDENS = Path(__file__).parent / "goldens"
LEGACY = GOLDENS / "legacy"
# Every golden model with its stored reference: both libraries, both formats, and the legacy
# files (Keras 1, Keras 2.x, CuDNN layouts) that are whole models.
MODELS = sorted(
    [p for p in GOLDENS.glob("*.keras")]
    + [p for p in GOLDENS.glob("*.h5")]
    + [p for p in LEGACY.glob("*.h5") if not p.with_suffix(".json").exists()]
)
HARD_SIGMOID = {"keras": "relu6(x + 3) / 6", "tf_keras": "clip(0.2x + 0.5, 0, 1)"}


def _reference(path: Path) -> Path:
    return path.with_suffix(".safetensors")


def _id(path: Path) -> str:
    return str(path.relative_to(GOLDENS))


@pytest.mark.parametrize("path", MODELS, ids=_id)
def test_table_against_stored_reference(path: Path):
    report = tlp.verify(path, reference=_reference(path))
    stored = {k.split(":")[1] for k in load_file(str(_reference(path))) if k.startswith("layer:")}
    assert [r.name for r in report.rows if r.ok is not None] == [r.name for r in report.rows if r.name in stored]
    bad = [(r.name, r.max_abs, r.note) for r in report.rows if r.ok is False]
    assert report.ok, bad
    text = format_report(report)
    for row in report.rows:
        assert row.name in text
        if row.ok:
            assert row.max_abs is not None and row.max_rel is not None
            assert row.worst is not None and row.worst_key in row.keys
    assert "within atol 1e-05" in text


@pytest.fixture(scope="module")
def stacked() -> tlp.KerasModel:
    return tlp.load_keras(GOLDENS / "keras_lstm_u16_stacked.keras")


def test_perturbed_kernel_fails_and_names_the_layer(stacked: tlp.KerasModel):
    reference = _reference(GOLDENS / "keras_lstm_u16_stacked.keras")
    assert tlp.verify(stacked, reference=reference).ok
    kernel = stacked.layer("lstm_1").weight_ih_l0
    with torch.no_grad():
        kernel.add_(1e-3)
    try:
        report = tlp.verify(stacked, reference=reference)
    finally:
        with torch.no_grad():
            kernel.sub_(1e-3)
    assert not report.ok
    status = {r.name: r.ok for r in report.rows}
    assert status["lstm"] is True and status["lstm_1"] is False  # the first layer beyond atol is the edited one
    text = format_report(report)
    assert "lstm_1" in text.splitlines()[-1] and "beyond atol" in text
    row = next(line for line in text.splitlines() if line.startswith("lstm_1 "))
    assert "FAIL" in row


def test_cli_exit_1_names_the_layer_beyond_atol(tmp_path: Path, capsys):
    path = GOLDENS / "keras_lstm_u16_stacked.keras"
    arrays = load_file(str(_reference(path)))
    arrays["layer:lstm_1"] = arrays["layer:lstm_1"] + np.float32(1e-3)
    reference = tmp_path / "ref.npz"
    np.savez(reference, **arrays)
    assert main(["verify", str(path), "--reference", str(reference)]) == 1
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("lstm_1 "))
    assert "FAIL" in row and "1.00e-03" in row
    assert out.splitlines()[-1].endswith(": lstm_1")
    assert main(["verify", str(path), "--reference", str(_reference(path))]) == 0
    assert "All 3 compared layer(s) within atol 1e-05." in capsys.readouterr().out


@pytest.mark.parametrize("library", ["keras", "tf_keras"])
def test_decisions_show_the_hard_sigmoid_formula_of_each_generation(library: str):
    path = GOLDENS / f"{library}_lstm_hard_sigmoid.h5"
    report = tlp.verify(path, reference=_reference(path))
    other = HARD_SIGMOID["tf_keras" if library == "keras" else "keras"]
    for row in report.rows:
        text = " | ".join(row.decisions)
        assert f"recurrent_activation: hard_sigmoid as Keras {'3' if library == 'keras' else '1/2'}" in text
        assert HARD_SIGMOID[library] in text and other not in text
    assert HARD_SIGMOID[library] in format_report(report)


def test_decisions_name_cudnn_layout_bias_split_and_call_rules():
    def decisions(path: Path) -> dict[str, str]:
        report = tlp.verify(path, reference=_reference(path))
        return {r.name: " | ".join(r.decisions) for r in report.rows}

    cudnn = decisions(LEGACY / "cudnn_keras2_2_4.h5")
    assert "CuDNN layout" in cudnn["cu_dnnlstm_1"] and "bias (8u,)" in cudnn["cu_dnnlstm_1"]
    assert "CuDNN layout" in cudnn["cu_dnngru_1"] and "bias (6u,)" in cudnn["cu_dnngru_1"]
    gru = decisions(GOLDENS / "tf_keras_gru_reset_before.h5")
    assert "reset_after=False: own cell" in gru["gru"]
    assert "bias_hh_l0 = row 1" in decisions(GOLDENS / "keras_gru_reset_after.keras")["gru"]
    seq2seq = decisions(GOLDENS / "keras_seq2seq.keras")
    assert "apply_mask=False" in seq2seq["decoder"] and "initial_state_rule=given" in seq2seq["decoder"]
    assert "apply_mask=False" not in decisions(GOLDENS / "tf_keras_seq2seq.h5")["decoder"]
    masked = decisions(GOLDENS / "keras_masked_lstm_gru.keras")
    assert "mask applied" in masked["lstm"] and "mask_zero" in masked["embedding"]


def test_generated_inputs_are_valid_token_ids_with_padding():
    model = tlp.load_keras(GOLDENS / "keras_masked_lstm_gru.keras")  # Embedding(12, 4, mask_zero) on (None, 7)
    (ids,) = generate_inputs(model)
    assert ids.shape == (4, 7) and ids.dtype.kind == "i"
    assert ids.min() >= 0 and ids.max() < 12
    for row in ids:
        real = np.flatnonzero(row)
        assert real.size >= 1 and real[0] == 0 and np.all(row[: real[-1] + 1] != 0)  # tokens, then only padding
    assert (ids[0] != 0).all() and (ids[1:] == 0).any()  # one full row, padded rows
    floats = generate_inputs(tlp.load_keras(GOLDENS / "keras_lstm_default_u3.keras"))[0]
    assert floats.shape == (4, 7, 5) and floats.dtype == np.float32 and 0.3 < floats.std() < 3


@pytest.mark.keras
@pytest.mark.parametrize("name", ["keras_masked_lstm_gru.keras", "tf_keras_lstm_hard_sigmoid.h5"])
def test_live_keras_cli(name: str, capsys):
    pytest.importorskip("tf_keras" if name.startswith("tf_keras") else "keras")
    assert main(["verify", str(GOLDENS / name)]) == 0
    out = capsys.readouterr().out
    library = "tf_keras" if name.startswith("tf_keras") else "keras"
    assert f"reference: live {library} " in out and "(generated)" in out and "FAIL" not in out
    if "hard_sigmoid" in name:
        assert HARD_SIGMOID[library] in out
    else:
        assert "mask applied" in out  # the generated token ids are padded


@pytest.mark.keras
def test_live_keras_compares_every_output_of_a_return_state_layer():
    pytest.importorskip("keras")
    path = GOLDENS / "keras_lstm_return_state.keras"
    report = tlp.verify(path, x=load_file(str(_reference(path)))["input:0"])
    multi = [r for r in report.rows if len(r.keys) == 3]
    assert multi and all(r.keys == [f"{r.name}:0", f"{r.name}:1", f"{r.name}:2"] for r in multi)
    assert report.ok


def test_no_keras_and_no_reference_is_one_line_exit_2(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "keras", None)  # import keras now raises ImportError
    assert main(["verify", str(GOLDENS / "keras_lstm_default_u3.keras")]) == 2
    _one_line_error(capsys, "keras", "--reference", "pip install")


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--atol", "0"], ["atol must be a positive number"]),
        (["--atol", "nan"], ["atol must be a positive number"]),
        (["--reference", "missing.npz"], ["reference file not found"]),
        (["--reference", "ref.txt"], ["expected a .npz or .safetensors"]),
        (["--reference", "GOLDEN", "--input", "x.npy"], ["not both"]),
        (["--reference", "noinputs.npz"], ["holds no input:<i>"]),
        (["--input", "wrong.npy"], ["expects shape"]),
    ],
)
def test_bad_arguments_are_one_line_exit_2(tmp_path: Path, monkeypatch, capsys, extra, needles):
    monkeypatch.chdir(tmp_path)
    path = GOLDENS / "keras_lstm_default_u3.keras"
    (tmp_path / "ref.txt").write_text("x")
    arrays = load_file(str(_reference(path)))
    np.save(tmp_path / "x.npy", arrays["input:0"])
    np.save(tmp_path / "wrong.npy", np.zeros((2, 7, 4), np.float32))
    np.savez(tmp_path / "noinputs.npz", **{k: v for k, v in arrays.items() if k.startswith("layer:")})
    extra = [str(_reference(path)) if e == "GOLDEN" else e for e in extra]
    assert main(["verify", str(path), *extra]) == 2
    _one_line_error(capsys, *needles)


def test_missing_model_is_one_line_exit_2(capsys):
    assert (
        main(["verify", "no_such_model.keras", "--reference", str(_reference(GOLDENS / "keras_simple_rnn.keras"))]) == 2
    )
    _one_line_error(capsys)
