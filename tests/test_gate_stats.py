"""gate_stats: equal to NumPy over the stored gates (masks, go_backwards, both Bidirectional halves, GRU), the same
whether computed alone, inside extract(stats=True), over other batchings, or resumed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torch_lstm_probe as tlp
from tests.test_goldens import GOLDENS, golden_inputs, load_golden
from torch_lstm_probe.analysis.stats import GateStats, StatsAccumulator

CASES = ["keras_masked_lstm_gru", "tf_keras_masking_layer", "keras_lstm_go_backwards", "keras_bidirectional"]
SIGMOID = {"LSTM": "ifo", "GRU": "zr"}


def _numpy_stats(rows: np.ndarray, by_step: np.ndarray, valid: np.ndarray, cell: str, gate: str) -> dict:
    """The statistics by their definitions, in NumPy: rows (K, H) of valid steps; by_step (N, T, H); valid (N, T)."""
    out = {
        "count": rows.shape[0],
        "mean": rows.mean(0),
        "std": rows.std(0),
        "min": rows.min(0),
        "max": rows.max(0),
    }
    if gate in SIGMOID.get(cell, ""):
        out["sat_low"] = (rows < 0.1).mean(0)
        out["sat_high"] = (rows > 0.9).mean(0)
    if cell == "LSTM" and gate == "f":
        out["timescale"] = (-1.0 / np.log(np.clip(rows, 1e-6, 1 - 1e-6))).mean(0)
    sums = (by_step * valid[..., None]).sum(axis=(0, 2))
    counts = valid.sum(0) * by_step.shape[2]
    out["mean_by_step"] = sums / np.maximum(counts, 1)
    return out


@pytest.mark.parametrize("case", CASES)
def test_stats_equal_numpy_over_the_stored_gates(case, tmp_path):
    arrays, _ = load_golden(case)
    x = golden_inputs(arrays)[0]
    model = tlp.load_keras(GOLDENS / f"{case}.keras")
    acts = tlp.extract(
        model, x, out=tmp_path / "a", gates=True, batch_size=2, shard_bytes=1, stats=True, progress=False
    )
    stats = acts.stats
    gate_keys = [k for k in acts.keys() if "/gates/" in k]
    assert list(stats) == gate_keys and len(acts.index["shards"]) > 1
    if case in ("keras_masked_lstm_gru", "tf_keras_masking_layer"):
        assert any(acts.index["keys"][k]["mask"] for k in gate_keys)
    for key in gate_keys:
        spec = acts.index["keys"][key]
        values = acts[key].numpy().astype(np.float64)  # (N, T, H), processing order
        valid = np.ones(values.shape[:2], dtype=bool)
        if spec["mask"]:
            valid = np.stack([acts.masks[spec["mask"]][i].numpy() for i in range(len(acts))])
            valid = valid[:, ::-1] if spec["flip"] else valid
        rows = values[valid]
        cell, gate = stats.cells[key], key.rsplit("/", 1)[1]
        expected = _numpy_stats(rows, values, valid, cell, gate)
        got = stats[key]
        assert got["count"] == expected.pop("count")
        for name, value in expected.items():
            np.testing.assert_allclose(got[name].numpy(), value, rtol=1e-12, atol=1e-12, err_msg=f"{key} {name}")
        lo, hi = got["hist_edges"][0].item(), got["hist_edges"][-1].item()
        bins = len(got["hist"])
        index = np.clip(np.floor((rows - lo) * (bins / (hi - lo))), 0, bins - 1).astype(int)
        assert got["hist"].tolist() == np.bincount(index.ravel(), minlength=bins).tolist(), key
        assert int(got["hist"].sum()) == rows.size

    alone = tlp.gate_stats(model, x, batch_size=2, progress=False)  # the same pass without storage
    for key in gate_keys:
        for name, value in stats[key].items():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                torch.testing.assert_close(alone[key][name], value, rtol=1e-9, atol=1e-9, msg=f"{key} {name}")
            elif isinstance(value, torch.Tensor):
                assert torch.equal(alone[key][name], value), (key, name)
            else:
                assert alone[key][name] == value


def test_stats_survive_a_resume_and_round_trip_as_json(tmp_path):
    arrays, _ = load_golden("keras_masked_lstm_gru")
    x = golden_inputs(arrays)[0]
    model = tlp.load_keras(GOLDENS / "keras_masked_lstm_gru.keras")
    kw = dict(gates=True, batch_size=2, shard_bytes=1, stats=True, progress=False)
    whole = tlp.extract(model, x, out=tmp_path / "a", **kw)
    reference = (tmp_path / "a" / "stats.json").read_bytes()
    (tmp_path / "a" / "index.json").unlink()
    (tmp_path / "a" / "shard-00001.safetensors").unlink()
    (tmp_path / "a" / "stats.json").unlink()
    tlp.extract(model, x, out=tmp_path / "a", **kw)
    assert (tmp_path / "a" / "stats.json").read_bytes() == reference
    again = GateStats.load(tmp_path / "a" / "stats.json")
    assert list(again) == list(whole.stats) and again.cells == whole.stats.cells
    key = "lstm/gates/f"
    assert torch.equal(again[key]["timescale"], whole.stats[key]["timescale"])


def test_partial_results_merge_in_any_grouping():
    torch.manual_seed(0)
    spec = {"l/gates/f": ("LSTM", "l", False, "tanh")}
    batches = [(torch.rand(3, 6, 4), torch.rand(3, 6) > 0.3) for _ in range(5)]
    one = StatsAccumulator(spec)
    for v, m in batches:
        one.add({"l/gates/f": v}, {"l": m})
    left, right = StatsAccumulator(spec), StatsAccumulator(spec)
    for k, (v, m) in enumerate(batches):
        (left if k % 2 else right).add({"l/gates/f": v}, {"l": m})
    left.merge(right)
    a, b = one.result()["l/gates/f"], left.result()["l/gates/f"]
    for name in a:
        if isinstance(a[name], torch.Tensor):
            torch.testing.assert_close(a[name], b[name], rtol=1e-12, atol=1e-12)


def test_layers_without_gates_are_refused():
    arrays, _ = load_golden("keras_masked_lstm_gru")
    model = tlp.load_keras(GOLDENS / "keras_masked_lstm_gru.keras")
    with pytest.raises(tlp.InputError, match="no recurrent layer"):
        tlp.gate_stats(model, golden_inputs(arrays)[0], layers=["embedding"], progress=False)


def test_extract_stats_without_gate_keys_is_refused_not_empty(tmp_path):
    arrays, _ = load_golden("keras_masked_lstm_gru")
    model = tlp.load_keras(GOLDENS / "keras_masked_lstm_gru.keras")
    x = golden_inputs(arrays)[0]
    with pytest.raises(tlp.InputError, match="gates=True"):
        tlp.extract(model, x, out=tmp_path / "a", stats=True, progress=False)
    acts = tlp.extract(model, x, out=tmp_path / "b", layers=["lstm"], gates=True, stats=True, progress=False)
    assert acts.stats is not None and list(acts.stats) and all(k.startswith("lstm/gates/") for k in acts.stats)


@pytest.mark.gpu
@pytest.mark.parametrize("case", ["keras_masked_lstm_gru", "keras_bidirectional"])
def test_stats_on_cuda_equal_cpu(case):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    arrays, _ = load_golden(case)
    x = golden_inputs(arrays)[0]
    cpu = tlp.gate_stats(tlp.load_keras(GOLDENS / f"{case}.keras"), x, batch_size=2, progress=False)
    gpu = tlp.gate_stats(tlp.load_keras(GOLDENS / f"{case}.keras"), x, batch_size=2, device="cuda", progress=False)
    assert list(gpu) == list(cpu)
    for key in cpu:
        assert gpu[key]["count"] == cpu[key]["count"]
        for name in ("mean", "std", "min", "max", "mean_by_step"):
            torch.testing.assert_close(gpu[key][name], cpu[key][name], atol=1e-5, rtol=0, msg=f"{key} {name}")
