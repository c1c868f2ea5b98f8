"""extract_ray: a Ray Data actor pool writes, file for file and byte for byte, the folder tlp.extract writes,
resumes a folder tlp.extract left unfinished, and refuses data of unknown length before starting Ray."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import torch_lstm_probe as tlp
from tests.test_goldens import GOLDENS, golden_inputs, load_golden
from torch_lstm_probe.extract import ExtractionMismatchError
from torch_lstm_probe.extract.ray_data import (
    _BatchExtractor,
    _describe_error,
    _error_from,
    _pack,
    _shipment,
    _task_blocks,
    _unpack,
    extract_ray,
)
from torch_lstm_probe.extract.run import _Work
from torch_lstm_probe.extract.sources import Batch

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "torch_lstm_probe" / "examples" / "sentiment_lstm.keras"


@pytest.fixture(scope="module")
def local_ray():
    """A small Ray instance of its own for the module (never one found running); starting it takes seconds."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _example_ids(n: int = 22, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 15, size=(n, 4)).astype(np.int32)  # (n, 4) token ids


def test_example_model_folder_is_byte_identical_to_extract(local_ray, tmp_path):
    model = tlp.load_keras(EXAMPLE)
    x = _example_ids()
    kw = dict(gates=True, dtype="float16", batch_size=4, shard_bytes=3000)
    tlp.extract(model, x, out=tmp_path / "one", progress=False, **kw)
    acts = extract_ray(model, x, out=tmp_path / "ray", concurrency=2, progress=False, **kw)
    expected = _files(tmp_path / "one")
    assert len(acts.index["shards"]) >= 3  # several shards, several batches in a shard, a short last batch
    assert [s["stop"] - s["start"] for s in acts.index["shards"]][-1] % 4 != 0
    assert _files(tmp_path / "ray") == expected
    assert acts["lstm/gates/f"][21].dtype == torch.float16


def test_masked_packed_run_left_unfinished_by_extract_is_finished_identically(local_ray, tmp_path):
    arrays, _ = load_golden("keras_masked_lstm_gru")
    x = golden_inputs(arrays)[0]
    model = tlp.load_keras(GOLDENS / "keras_masked_lstm_gru.keras")
    kw = dict(gates=True, dtype="float16", packed=True, batch_size=2, shard_bytes=1)
    full = tlp.extract(model, x, out=tmp_path / "one", progress=False, **kw)
    assert full.lengths is not None and full.lengths.min() < full.lengths.max()  # ragged: packing is exercised
    expected = _files(tmp_path / "one")
    assert len(full.index["shards"]) >= 2
    # A run that died after its first shard: extract_ray checks that shard's input hash and computes the rest.
    (tmp_path / "part").mkdir()
    for name in ("manifest.json", "shard-00000.safetensors"):
        (tmp_path / "part" / name).write_bytes(expected[name])
    acts = extract_ray(model, x, out=tmp_path / "part", concurrency=1, progress=False, **kw)
    assert _files(tmp_path / "part") == expected
    assert any(acts.index["keys"][k]["packed"] for k in acts.keys())


def test_payload_round_trip_keeps_order_dtypes_and_empty_tensors():
    values = {
        "b": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3),
        "a": torch.zeros(0, 5, dtype=torch.float16),
        "lstm/mask": torch.tensor([[True, False], [True, True]]),
    }
    masks = {"lstm": torch.tensor([[True, False], [True, True]])}
    steps = {"lstm": torch.tensor([1, 2])}
    work = _Work(Batch(0, 0, 2, None), values, masks, steps, "d", None)
    got = _unpack(_pack(work))
    for sent, back in zip((values, masks, steps), got):
        assert list(back) == list(sent)
        for key in sent:
            assert back[key].dtype == sent[key].dtype and torch.equal(back[key], sent[key]), key


@pytest.mark.parametrize(
    ("total", "batch_bytes", "actors", "per_task"),
    [(1, 10, 2, 1), (157, 2**20, 1, 40), (157, 2**20, 2, 20), (1000, 2**20, 2, 64), (9, 2**30, 2, 1)],
)
def test_task_blocks_cover_every_batch_in_order_in_bounded_runs(total, batch_bytes, actors, per_task):
    blocks = _task_blocks(total, batch_bytes, actors)
    assert np.concatenate(blocks).tolist() == list(range(total))
    assert max(len(b) for b in blocks) == per_task  # <= 64 MiB of values a task, >= 4 tasks an actor when it can


class _OneBadItem(torch.utils.data.Dataset):
    """Ten samples of 4 token ids, but item 6 has 5: the batch holding it cannot be stacked."""

    def __len__(self):
        return 10

    def __getitem__(self, i):
        return np.zeros(5 if i == 6 else 4, dtype=np.int32)


def test_a_worker_sends_errors_of_ours_back_as_data_and_the_driver_raises_the_same_class():
    model = tlp.load_keras(EXAMPLE)
    ship = dict(layers=None, gates=False, batch_size=4, layout=None, per_shard=1, done=frozenset(), use_gpu=False)
    worker = _BatchExtractor([_shipment(model, _OneBadItem(), **ship)])  # in this process: no Ray needed
    rows = worker({"data": np.array([1])})  # batch 1: items 4..7
    assert list(rows["batch"]) == [1] and rows["payload"][0] == b""
    err = _error_from(rows["error"][0])
    assert type(err) is tlp.InputError
    with pytest.raises(tlp.InputError, match=r"On a Ray worker: Input .* of items 4 to 7 .* cannot be stacked"):
        raise err
    # Set-up errors (here the data does not fit the model's inputs) come back with the first batch.
    worker = _BatchExtractor([_shipment(model, {"tokens": _example_ids(3)}, **ship)])
    with pytest.raises(tlp.InputError, match="On a Ray worker: The model takes inputs .*unknown"):
        raise _error_from(worker({"data": np.array([0])})["error"][0])
    for sent in (tlp.ProbeKeyError("no layer 'x'"), ExtractionMismatchError("other data")):
        back = _error_from(_describe_error(sent))
        assert type(back) is type(sent) and str(back) == f"On a Ray worker: {sent}"
    assert type(_error_from("builtins:ValueError\nnot ours")) is tlp.InputError  # only our classes are rebuilt


def test_data_of_unknown_length_is_refused_before_ray_starts(tmp_path):
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(_example_ids(3))

    model = tlp.load_keras(EXAMPLE)
    with pytest.raises(tlp.InputError, match="needs the number of samples ahead.*tlp.extract.*torchrun"):
        extract_ray(model, Stream(), out=tmp_path / "acts")
    assert not (tmp_path / "acts").exists()
    with pytest.raises(tlp.InputError, match="concurrency must be a positive int"):
        extract_ray(model, _example_ids(3), out=tmp_path / "acts", concurrency=0)
