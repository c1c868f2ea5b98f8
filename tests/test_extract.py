"""tlp.extract / tlp.open_activations: every key of every golden model equals probe (and Keras) per sample;
packed storage, storage dtypes, resume after a crash, refusals, and torchrun."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import torch_lstm_probe as tlp
from tests.helpers import ATOL
from tests.test_goldens import CASES, GOLDENS, golden_inputs, load_golden
from torch_lstm_probe.extract import ExtractionMismatchError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "torch_lstm_probe" / "examples" / "sentiment_lstm.keras"
# A model whose input fixes the batch (a time-major layer reading Keras' batch axis as time) has keys
# without a per-sample axis: extraction refuses them by name.
NO_SAMPLE_AXIS = {"tf_keras_lstm_time_major"}


def _sample(x, i):
    return [v[i : i + 1] for v in x] if isinstance(x, list) else x[i : i + 1]


def _probe_sample(model, x, i, key, spec):
    """probe on sample i alone, taken at that sample along the key's batch axis (packed: valid steps only)."""
    acts = tlp.probe(model, _sample(x, i), gates=True)
    value = acts[key].select(spec["batch_axis"], 0)
    if spec["packed"]:
        mask = acts[spec["mask"] + "/mask"][0]
        value = value[mask.flip(0) if spec["flip"] else mask]
    return value


def _extract(model, x, out, **kw):
    kw.setdefault("progress", False)
    return tlp.extract(model, x, out=out, **kw)


@pytest.mark.parametrize("case", [c for c in CASES if c not in NO_SAMPLE_AXIS])
def test_every_key_of_every_golden_equals_probe_per_sample_and_keras(case, tmp_path):
    arrays, _ = load_golden(case)
    inputs = golden_inputs(arrays)
    x = inputs if len(inputs) > 1 else inputs[0]
    model = tlp.load_keras(GOLDENS / f"{case}.keras")
    # Two samples a batch and shards of one batch: every value crosses a batch and a shard boundary.
    acts = _extract(model, x, tmp_path / "acts", gates=True, batch_size=2, shard_bytes=1)
    n = inputs[0].shape[0]
    assert len(acts) == n and len(acts.index["shards"]) == -(-n // 2)
    assert acts.keys() == list(tlp.probe(model, _sample(x, 0), gates=True))
    for i in range(n):
        acts_i = tlp.probe(model, _sample(x, i), gates=True)
        for key in acts.keys():
            spec = acts.index["keys"][key]
            expected = acts_i[key].select(spec["batch_axis"], 0)
            got = acts[key][i]
            assert got.dtype == expected.dtype and got.shape == expected.shape, key
            torch.testing.assert_close(got, expected, atol=ATOL["cpu_float32"], rtol=0, msg=key)
    for name in [k[len("layer:") :] for k in arrays if k.startswith("layer:")]:  # what Keras itself computed
        keras = torch.from_numpy(arrays[f"layer:{name}"])
        torch.testing.assert_close(acts[name].torch().float(), keras, atol=ATOL["cpu_float32"], rtol=0, msg=name)


def test_a_key_without_a_sample_axis_is_refused_by_name(tmp_path):
    arrays, _ = load_golden("tf_keras_lstm_time_major")
    model = tlp.load_keras(GOLDENS / "tf_keras_lstm_time_major.keras")
    with pytest.raises(tlp.InputError, match="has no batch axis.*layers="):
        _extract(model, golden_inputs(arrays)[0], tmp_path / "acts")


@pytest.mark.parametrize("case", ["keras_masked_lstm_gru", "tf_keras_masking_layer", "keras_lstm_go_backwards"])
@pytest.mark.parametrize("dtype", [None, "float16", "bfloat16"])
def test_packed_keeps_only_valid_steps_in_processing_order(case, dtype, tmp_path):
    arrays, _ = load_golden(case)
    x = golden_inputs(arrays)[0]
    model = tlp.load_keras(GOLDENS / f"{case}.keras")
    acts = _extract(model, x, tmp_path / "acts", gates=True, batch_size=2, shard_bytes=1, packed=True, dtype=dtype)
    storage = getattr(torch, dtype) if dtype else torch.float32
    masked = [k for k in acts.keys() if acts.index["keys"][k]["mask"]]
    if case == "keras_lstm_go_backwards":
        assert not masked and acts.lengths is None  # no mask: nothing to pack, values stored whole
    else:
        assert masked and all(acts.index["keys"][k]["packed"] for k in masked if "/gates/" in k)
        lengths = acts.lengths
        assert lengths is not None and lengths.min() < lengths.max()  # ragged: packing is exercised
    for i in range(len(acts)):
        for key in acts.keys():
            spec = acts.index["keys"][key]
            expected = _probe_sample(model, x, i, key, spec)
            got = acts[key][i]
            if expected.is_floating_point():
                assert got.dtype == storage
                torch.testing.assert_close(got, expected.to(storage), atol=ATOL["cpu_float32"], rtol=0, msg=key)
            else:
                assert torch.equal(got, expected), key
            if spec["packed"]:
                assert got.shape[0] == int(acts.masks[spec["mask"]][i].sum())


def test_multi_input_dict_and_npz_path_give_the_same_values(tmp_path):
    arrays, _ = load_golden("keras_seq2seq")
    inputs = golden_inputs(arrays)
    model = tlp.load_keras(GOLDENS / "keras_seq2seq.keras")
    by_list = _extract(model, inputs, tmp_path / "a", gates=True, batch_size=2)
    by_dict = _extract(model, dict(zip(model.input_names, inputs)), tmp_path / "b", gates=True, batch_size=2)
    path = tmp_path / "x.npz"
    np.savez(path, **dict(zip(model.input_names, inputs)))
    by_file = _extract(model, path, tmp_path / "c", gates=True, batch_size=2)
    for key in by_list.keys():
        assert torch.equal(by_list[key].torch(), by_dict[key].torch())
        assert torch.equal(by_list[key].torch(), by_file[key].torch())
    assert _files(tmp_path / "a", "shard-") == _files(tmp_path / "b", "shard-")


def test_variable_length_batches_of_a_dataloader_are_stored_as_blocks(tmp_path):
    arrays, _ = load_golden("keras_masked_lstm_gru")
    x = golden_inputs(arrays)[0]
    fixed = tlp.load_keras(GOLDENS / "keras_masked_lstm_gru.keras")
    config = fixed.get_config()
    config["inputs"][0]["shape"] = [None, None]  # the same model with a free time axis
    model = tlp.KerasModel(config)
    model.load_state_dict(fixed.state_dict())
    model.eval()
    items = [torch.from_numpy(x[i, : 3 + i]) for i in range(len(x))]  # lengths 3, 4, 5, ...
    loader = torch.utils.data.DataLoader(items, batch_size=2, collate_fn=_pad)
    acts = _extract(model, loader, tmp_path / "acts", gates=True, shard_bytes=1 << 20)
    key = "lstm/gates/c" if "lstm/gates/c" in acts.keys() else next(k for k in acts.keys() if "/gates/" in k)
    assert acts.index["keys"][key]["sample_shape"][0] is None  # time varies between blocks
    for i in range(len(items)):
        batch = i // 2
        padded = _pad(items[2 * batch : 2 * batch + 2])
        expected = tlp.probe(model, padded, gates=True)[key][i % 2]
        torch.testing.assert_close(acts[key][i], expected, atol=ATOL["cpu_float32"], rtol=0)


def _pad(rows):
    return torch.nn.utils.rnn.pad_sequence(list(rows), batch_first=True)


def _files(folder: Path, prefix: str = "") -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name.startswith(prefix) or not prefix}


def _example_ids(n: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.integers(1, 15, size=(n, 4)).astype(np.int32)
    x[rng.random(n) < 0.3, 2:] = 0
    return x


def test_rerun_resumes_to_byte_identical_files_and_refuses_changes(tmp_path):
    model = tlp.load_keras(EXAMPLE)
    x = _example_ids()
    whole = tmp_path / "whole"
    _extract(model, x, whole, gates=True, batch_size=4, shard_bytes=1, dtype="float16")
    reference = _files(whole)
    assert len([n for n in reference if n.startswith("shard-")]) == 10
    (whole / "index.json").unlink()  # as if killed before the end, some shards lost or half-written
    (whole / "shard-00007.safetensors").unlink()
    (whole / ".shard-00008.safetensors.tmp").write_bytes(b"half a shard")
    _extract(model, x, whole, gates=True, batch_size=4, shard_bytes=1, dtype="float16")
    assert _files(whole) == reference
    again = _extract(model, x, whole, gates=True, batch_size=4, shard_bytes=1, dtype="float16")  # complete: no work
    assert len(again) == len(x) and _files(whole) == reference

    with pytest.raises(ExtractionMismatchError, match="request.dtype.*overwrite=True"):
        _extract(model, x, whole, gates=True, batch_size=4, shard_bytes=1, dtype="bfloat16")
    other = tlp.load_keras(EXAMPLE)
    with torch.no_grad():
        other.layer("dense").weight.add_(1e-3)
    with pytest.raises(ExtractionMismatchError, match="weights_sha256"):
        _extract(other, x, whole, gates=True, batch_size=4, shard_bytes=1, dtype="float16")
    changed = x.copy()
    changed[5, 0] = 1 + changed[5, 0] % 13
    (whole / "index.json").unlink()
    with pytest.raises(ExtractionMismatchError, match="other input data.*shard 1"):
        _extract(model, changed, whole, gates=True, batch_size=4, shard_bytes=1, dtype="float16")
    acts = _extract(model, changed, whole, gates=True, batch_size=4, shard_bytes=1, dtype="float16", overwrite=True)
    torch.testing.assert_close(acts["lstm"][5], tlp.probe(model, changed[5:6])["lstm"][0].half(), atol=1e-3, rtol=0)
    with pytest.raises(ExtractionMismatchError, match="resume=False"):
        _extract(model, changed, whole, gates=True, batch_size=4, shard_bytes=1, dtype="float16", resume=False)


def test_refusals(tmp_path):
    model = tlp.load_keras(EXAMPLE)
    x = _example_ids(8)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(tlp.InputError, match="not empty.*notes.txt"):
        _extract(model, x, tmp_path / "busy")
    with pytest.raises(tlp.InputError, match="storage dtype"):
        _extract(model, x, tmp_path / "a", dtype="int8")
    with pytest.raises(tlp.InputError, match="batch_size"):
        _extract(model, x, tmp_path / "a", batch_size=0)
    with pytest.raises(tlp.ProbeKeyError, match="nope"):
        _extract(model, x, tmp_path / "a", layers=["nope"])
    assert not (tmp_path / "a").exists()  # nothing written before the request is known to be valid


def test_stateful_models_are_refused(tmp_path):
    arrays, _ = load_golden("keras_lstm_default_u3")
    model = tlp.load_keras(GOLDENS / "keras_lstm_default_u3.keras")
    lstm = next(m for _, m in model.iter_layers() if isinstance(m, torch.nn.LSTM))
    object.__setattr__(lstm.config, "stateful", True) if hasattr(lstm.config, "__dataclass_fields__") else None
    with pytest.raises(tlp.InputError, match="stateful.*stateful=False"):
        _extract(model, golden_inputs(arrays)[0], tmp_path / "a")


def _run_in_this_process(script: Path | str, *args: str) -> None:
    """Runs ``script`` as ``__main__`` here, on one torch thread as the subprocess runs are (OMP_NUM_THREADS=1).

    The uninterrupted single-process run that subprocess runs are compared with: the same script and
    arguments, without starting Python and importing torch once more (5 s).
    """
    saved_argv, saved_threads = sys.argv, torch.get_num_threads()
    sys.argv = [str(script), *args]
    torch.set_num_threads(1)
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = saved_argv
        torch.set_num_threads(saved_threads)


KILLED = """
import os, signal, sys
import numpy as np, torch
import torch_lstm_probe as tlp

class Ids(torch.utils.data.Dataset):
    def __init__(self, x, kill_at):
        self.x, self.kill_at = x, kill_at
    def __len__(self):
        return len(self.x)
    def __getitem__(self, i):
        if i == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return torch.from_numpy(self.x[i])

x = np.load(sys.argv[1])
model = tlp.load_keras(sys.argv[2])
tlp.extract(model, Ids(x, int(sys.argv[4])), out=sys.argv[3], gates=True, batch_size=4, shard_bytes=4000,
            dtype="float16", progress=False)
"""


def test_a_run_killed_mid_shard_resumes_to_byte_identical_output(tmp_path):
    x = _example_ids(64)
    np.save(tmp_path / "x.npy", x)
    script = tmp_path / "run.py"
    script.write_text(KILLED)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

    def run(out: str, kill_at: int) -> subprocess.CompletedProcess:
        args = [sys.executable, str(script), str(tmp_path / "x.npy"), str(EXAMPLE), str(tmp_path / out), str(kill_at)]
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)

    _run_in_this_process(script, str(tmp_path / "x.npy"), str(EXAMPLE), str(tmp_path / "whole"), "-1")
    killed = run("killed", 37)  # in the middle of a shard: earlier shards are done, one is half-built
    assert killed.returncode == -9, killed.stderr
    left = sorted(p.name for p in (tmp_path / "killed").iterdir())
    assert "index.json" not in left and any(n.startswith("shard-") for n in left)
    assert any(n.endswith((".spool", ".tmp")) for n in left) or len(left) > 1
    assert run("killed", -1).returncode == 0
    assert _files(tmp_path / "killed") == _files(tmp_path / "whole")


TORCHRUN = """
import sys
import numpy as np
import torch
import torch_lstm_probe as tlp

torch.set_num_threads(1)
model = tlp.load_keras(sys.argv[2])
x = np.load(sys.argv[1])
tlp.extract(model, x, out=sys.argv[3], gates=True, batch_size=4, shard_bytes=4000, stats=True, progress=False)
stats = tlp.gate_stats(model, x, batch_size=4, progress=False)  # batches split over ranks, partials merged
dist = torch.distributed
if not (dist.is_initialized() and dist.get_rank() > 0):
    stats.save(sys.argv[3] + ".gate_stats.json")
"""


def test_torchrun_two_processes_write_what_one_process_writes(tmp_path):
    x = _example_ids(50)
    np.save(tmp_path / "x.npy", x)
    script = tmp_path / "run.py"
    script.write_text(TORCHRUN)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    common = [str(script), str(tmp_path / "x.npy"), str(EXAMPLE)]
    _run_in_this_process(*common, str(tmp_path / "one"))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    two = subprocess.run(
        [*launcher, *common, str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=300
    )
    assert two.returncode == 0, two.stderr[-3000:]
    files = _files(tmp_path / "two")
    assert len([n for n in files if n.startswith("shard-")]) >= 3
    assert files == _files(tmp_path / "one")
    index = json.loads(files["index.json"])
    assert index["num_samples"] == 50 and "stats.json" in files  # statistics merged shard by shard: same bytes
    one_stats = tlp.GateStats.load(str(tmp_path / "one") + ".gate_stats.json")
    two_stats = tlp.GateStats.load(str(tmp_path / "two") + ".gate_stats.json")
    assert list(one_stats) == list(two_stats) == [k for k in index["key_order"] if "/gates/" in k]
    for key in one_stats:
        for name, value in one_stats[key].items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(two_stats[key][name], value, rtol=1e-12, atol=1e-12)
            else:
                assert two_stats[key][name] == value


@pytest.mark.gpu
@pytest.mark.parametrize("case", ["keras_masked_lstm_gru", "keras_bidirectional", "keras_lstm_u16_stacked"])
def test_extract_on_cuda_equals_cpu_and_keras(case, tmp_path):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    arrays, _ = load_golden(case)
    inputs = golden_inputs(arrays)
    x = inputs if len(inputs) > 1 else inputs[0]
    cpu = _extract(tlp.load_keras(GOLDENS / f"{case}.keras"), x, tmp_path / "cpu", gates=True, batch_size=2)
    gpu_model = tlp.load_keras(GOLDENS / f"{case}.keras")
    gpu = _extract(gpu_model, x, tmp_path / "gpu", gates=True, batch_size=2, device="cuda")
    for key in cpu.keys():
        torch.testing.assert_close(gpu[key].torch(), cpu[key].torch(), atol=ATOL["gpu_float32"], rtol=0, msg=key)
    for name in [k[len("layer:") :] for k in arrays if k.startswith("layer:")]:
        keras = torch.from_numpy(arrays[f"layer:{name}"])
        torch.testing.assert_close(gpu[name].torch(), keras, atol=ATOL["gpu_float32"], rtol=0, msg=name)
