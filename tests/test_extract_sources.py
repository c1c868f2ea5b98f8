"""Extraction data sources: every accepted kind of data yields the right batches, in order, a batch at a time."""

from __future__ import annotations

import json
import os
import tracemalloc

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from torch_lstm_probe.errors import InputError
from torch_lstm_probe.extract import sources
from torch_lstm_probe.extract.sources import Batch, as_source, hash_inputs

TOKEN_DTYPES = [np.int32, np.int64, np.uint16, np.uint8]


def _tokens(n: int = 10, steps: int = 5, dtype: type = np.int64) -> np.ndarray:
    return (np.arange(n * steps).reshape(n, steps) % 50).astype(dtype)  # (n, steps) padded-id like


def _features(n: int = 10, steps: int = 5, width: int = 3) -> np.ndarray:
    return np.arange(n * steps * width, dtype=np.float32).reshape(n, steps, width) / 7  # (n, steps, width)


def _collect(source: sources.Source, want=None) -> list[Batch]:
    return list(source.batches(want))


def _stacked(batches: list[Batch], k: int = 0) -> np.ndarray:
    return torch.cat([b.inputs[k] for b in batches if b.inputs is not None]).numpy()


def _check_layout(batches: list[Batch], n: int, size: int) -> None:
    assert [b.index for b in batches] == list(range(len(batches)))
    assert [(b.start, b.size) for b in batches] == [(s, min(size, n - s)) for s in range(0, n, size)]


# ---------------------------------------------------------------------------------------------------------------
# in-memory arrays and tensors


@pytest.mark.parametrize("dtype", TOKEN_DTYPES)
@pytest.mark.parametrize("batch_size", [1, 3, 10, 64])
def test_token_array_batches_keep_integer_dtype(dtype, batch_size):
    x = _tokens(dtype=dtype)
    source = as_source(x, ["tokens"], batch_size)
    assert (source.kind, source.num_samples, source.batch_size) == ("arrays", 10, batch_size)
    batches = _collect(source)
    _check_layout(batches, 10, batch_size)
    assert all(b.inputs[0].dtype == torch.from_numpy(x).dtype for b in batches)
    np.testing.assert_array_equal(_stacked(batches), x)


def test_batches_are_copies_of_just_their_rows():
    x = _tokens()
    batch = next(as_source(x, ["tokens"], 4).batches())
    assert not np.shares_memory(batch.inputs[0].numpy(), x)
    batch.inputs[0][:] = -1
    assert x.min() >= 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64, torch.bool])
def test_tensor_input_keeps_dtype(dtype):
    x = torch.arange(40).reshape(8, 5).to(dtype)
    batches = _collect(as_source(x, ["x"], 3))
    _check_layout(batches, 8, 3)
    assert torch.equal(torch.cat([b.inputs[0] for b in batches]), x)
    assert all(b.inputs[0].dtype == dtype and b.inputs[0].device.type == "cpu" for b in batches)


@pytest.mark.parametrize("form", ["list", "tuple", "dict", "dict_reordered", "one_in_list"])
def test_several_inputs_in_keras_order(form):
    tokens, feats = _tokens(), _features()
    names = ["tokens", "feats"]
    data = {
        "list": [tokens, torch.from_numpy(feats)],
        "tuple": (tokens, torch.from_numpy(feats)),
        "dict": {"tokens": tokens, "feats": torch.from_numpy(feats)},
        "dict_reordered": {"feats": torch.from_numpy(feats), "tokens": tokens},
        "one_in_list": [tokens],
    }[form]
    if form == "one_in_list":
        names = ["tokens"]
    source = as_source(data, names, 4)
    batches = _collect(source)
    np.testing.assert_array_equal(_stacked(batches, 0), tokens)
    if len(names) == 2:
        np.testing.assert_array_equal(_stacked(batches, 1), feats)
    description = source.describe()
    assert json.dumps(description, sort_keys=True) == json.dumps(as_source(data, names, 4).describe(), sort_keys=True)
    assert [i["name"] for i in description["inputs"]] == names
    assert description["inputs"][0] == {"name": "tokens", "shape": [10, 5], "dtype": "int64"}


@pytest.mark.parametrize(
    "data, names, match",
    [
        ({"tokens": _tokens()}, ["tokens", "feats"], r"missing \['feats'\]"),
        ({"tokens": _tokens(), "other": _tokens()}, ["tokens"], r"unknown \['other'\]"),
        ([_tokens()], ["tokens", "feats"], r"takes 2 input\(s\) \['tokens', 'feats'\].*Received a list of 1"),
        (_tokens(), ["tokens", "feats"], r"takes 2 inputs.*Received one ndarray"),
        ([_tokens(10), _features(9)], ["tokens", "feats"], r"same number of samples.*'tokens': 10, 'feats': 9"),
        ({"tokens": _tokens(10), "feats": _features(7)}, ["tokens", "feats"], r"same number of samples"),
        (_tokens(0), ["tokens"], r"holds no samples"),
        (np.array(["a", "b"]), ["tokens"], r"Input 'tokens' has dtype <U1, which is not numeric"),
        (np.array([{}, {}], dtype=object), ["tokens"], r"not numeric"),
        (torch.zeros(3, dtype=torch.complex64), ["x"], r"not real numbers"),
        (np.float32(3.0), ["x"], r"Cannot extract from a numpy.float32"),
        ([[1, 2], [3, 4]], ["a", "b"], r"Input 'a' is a list\. Expected a numpy array or torch tensor"),
        (np.zeros(()), ["x"], r"scalar"),
        (object(), ["x"], r"Cannot extract from a builtins.object\. Expected a numpy array or torch tensor"),
    ],
)
def test_array_errors(data, names, match):
    with pytest.raises(InputError, match=match):
        as_source(data, names, 4)


@pytest.mark.parametrize("batch_size", [0, -1, 2.0, True, None])
def test_batch_size_must_be_positive_int(batch_size):
    with pytest.raises(InputError, match="batch_size must be a positive int"):
        as_source(_tokens(), ["x"], batch_size)


# ---------------------------------------------------------------------------------------------------------------
# files


def _save_npz(path, compressed: bool, *args, **kwargs) -> None:
    (np.savez_compressed if compressed else np.savez)(path, *args, **kwargs)


@pytest.mark.parametrize("dtype", TOKEN_DTYPES + [np.float16, np.dtype(">f4"), np.bool_])
def test_npy_is_memory_mapped(tmp_path, dtype):
    x = _tokens(dtype=dtype)
    np.save(tmp_path / "x.npy", x)
    source = as_source(tmp_path / "x.npy", ["tokens"], 4)
    assert source.kind == "npy" and source.num_samples == 10
    batches = _collect(source)
    _check_layout(batches, 10, 4)
    np.testing.assert_array_equal(_stacked(batches), x)
    assert batches[0].inputs[0].dtype == torch.from_numpy(x.astype(x.dtype.newbyteorder("="))).dtype
    description = source.describe()
    assert description["file"] == "x.npy" and description["bytes"] == os.path.getsize(tmp_path / "x.npy")
    assert isinstance(source._columns[0].array, np.memmap)


def test_npy_refuses_object_arrays_and_other_files(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match=r"obj\.npy cannot be memory-mapped.*Object arrays are refused"):
        as_source(tmp_path / "obj.npy", ["x"], 4)
    (tmp_path / "text.npy").write_text("hello")
    with pytest.raises(InputError, match=r"text\.npy is not an \.npy file"):
        as_source(str(tmp_path / "text.npy"), ["x"], 4)
    np.save(tmp_path / "x.npy", _tokens())
    with pytest.raises(InputError, match=r"holds one array, but the model takes 2 inputs"):
        as_source(tmp_path / "x.npy", ["a", "b"], 4)


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "deflated"])
@pytest.mark.parametrize("batch_size", [3, 100])
def test_npz_members_by_name(tmp_path, compressed, batch_size):
    tokens, feats = _tokens(dtype=np.uint16), _features()
    _save_npz(tmp_path / "d.npz", compressed, feats=feats, tokens=tokens, labels=np.arange(10))
    source = as_source(tmp_path / "d.npz", ["tokens", "feats"], batch_size)
    assert source.kind == "npz" and source.num_samples == 10
    batches = _collect(source)
    _check_layout(batches, 10, batch_size)
    np.testing.assert_array_equal(_stacked(batches, 0), tokens)
    np.testing.assert_array_equal(_stacked(batches, 1), feats)
    assert batches[0].inputs[0].dtype == torch.uint16
    inputs = source.describe()["inputs"]
    assert [(i["member"], i["compression"]) for i in inputs] == [
        ("tokens", "deflated" if compressed else "stored"),
        ("feats", "deflated" if compressed else "stored"),
    ]
    assert _collect(source)[0].inputs[0].tolist() == tokens[:batch_size].tolist()  # a second pass starts over


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "deflated"])
def test_npz_single_member_and_positional_members(tmp_path, compressed):
    x, y = _tokens(dtype=np.dtype(">i4")), _features()
    _save_npz(tmp_path / "one.npz", compressed, whatever=x)
    np.testing.assert_array_equal(_stacked(_collect(as_source(tmp_path / "one.npz", ["tokens"], 4))), x)
    _save_npz(tmp_path / "pos.npz", compressed, x, y)  # members arr_0, arr_1
    batches = _collect(as_source(tmp_path / "pos.npz", ["a", "b"], 4))
    np.testing.assert_array_equal(_stacked(batches, 0), x)
    np.testing.assert_array_equal(_stacked(batches, 1), y)


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "deflated"])
def test_npz_errors(tmp_path, compressed):
    _save_npz(tmp_path / "d.npz", compressed, tokens=_tokens(), other=_features())
    with pytest.raises(InputError, match=r"holds members \['other', 'tokens'\].*inputs \['tokens', 'feats'\]"):
        as_source(tmp_path / "d.npz", ["tokens", "feats"], 4)
    _save_npz(tmp_path / "short.npz", compressed, tokens=_tokens(10), feats=_features(6))
    with pytest.raises(InputError, match=r"short\.npz: all inputs must have the same number of samples"):
        as_source(tmp_path / "short.npz", ["tokens", "feats"], 4)
    _save_npz(tmp_path / "text.npz", compressed, x=np.array(["a", "b"]))
    with pytest.raises(InputError, match=r"Member 'x' of .*text\.npz has dtype <U1, which is not numeric"):
        as_source(tmp_path / "text.npz", ["x"], 4)
    _save_npz(tmp_path / "obj.npz", compressed, x=np.array([None, 1], dtype=object))
    with pytest.raises(InputError, match=r"Member 'x' of .*obj\.npz holds Python objects"):
        as_source(tmp_path / "obj.npz", ["x"], 4)
    _save_npz(tmp_path / "empty.npz", compressed, x=_tokens(0))
    with pytest.raises(InputError, match=r"empty\.npz holds no samples"):
        as_source(tmp_path / "empty.npz", ["x"], 4)


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "deflated"])
def test_npz_fortran_order(tmp_path, compressed):
    x = np.asfortranarray(_features())
    _save_npz(tmp_path / "f.npz", compressed, x=x)
    if compressed:
        with pytest.raises(InputError, match=r"Fortran order, so its rows cannot be streamed"):
            as_source(tmp_path / "f.npz", ["x"], 4)
    else:
        np.testing.assert_array_equal(_stacked(_collect(as_source(tmp_path / "f.npz", ["x"], 4))), x)


def test_damaged_files_are_input_errors(tmp_path):
    _save_npz(tmp_path / "d.npz", True, x=_features(200))
    data = (tmp_path / "d.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.npz is not a readable \.npz"):
        as_source(tmp_path / "cut.npz", ["x"], 4)
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(InputError, match=r"bad\.safetensors is not a readable \.safetensors file"):
        as_source(tmp_path / "bad.safetensors", ["x"], 4)


def test_stored_npz_member_declaring_more_rows_than_it_holds(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 3), dtype=np.float32))
    data = bytearray((tmp_path / "d.npz").read_bytes())
    at = data.index(b"(4, 3)")
    data[at : at + 6] = b"(9, 3)"  # the header now claims 9 rows; the member holds 4
    (tmp_path / "lie.npz").write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"declares shape \(9, 3\).*The file is damaged"):
        as_source(tmp_path / "lie.npz", ["x"], 4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int32, torch.uint16])
def test_safetensors_by_name_and_single(tmp_path, dtype):
    tokens = torch.from_numpy(_tokens()).to(dtype)
    feats = torch.from_numpy(_features())
    save_file({"tokens": tokens, "feats": feats, "labels": torch.arange(10)}, tmp_path / "d.safetensors")
    source = as_source(tmp_path / "d.safetensors", ["tokens", "feats"], 4)
    assert source.kind == "safetensors" and source.num_samples == 10
    batches = _collect(source)
    _check_layout(batches, 10, 4)
    assert torch.equal(torch.cat([b.inputs[0] for b in batches]), tokens)
    assert torch.equal(torch.cat([b.inputs[1] for b in batches]), feats)
    assert source.describe()["inputs"][0] == {
        "name": "tokens",
        "shape": [10, 5],
        "dtype": str(dtype)[6:],
        "tensor": "tokens",
    }
    save_file({"anything": tokens}, tmp_path / "one.safetensors")
    assert torch.equal(_collect(as_source(tmp_path / "one.safetensors", ["x"], 64))[0].inputs[0], tokens)
    with pytest.raises(InputError, match=r"holds tensors \['feats', 'labels', 'tokens'\].*missing \['ids'\]"):
        as_source(tmp_path / "d.safetensors", ["ids"], 4)


def test_safetensors_mismatched_lengths(tmp_path):
    save_file({"a": torch.zeros(5, 2), "b": torch.zeros(6, 2)}, tmp_path / "d.safetensors")
    with pytest.raises(InputError, match=r"same number of samples.*'a': 5, 'b': 6"):
        as_source(tmp_path / "d.safetensors", ["a", "b"], 4)


def test_paths_that_are_not_regular_files(tmp_path):
    (tmp_path / "dir.npy").mkdir()
    with pytest.raises(InputError, match=r"dir\.npy is a directory\. Expected a regular"):
        as_source(tmp_path / "dir.npy", ["x"], 4)
    os.mkfifo(tmp_path / "pipe.npz")
    with pytest.raises(InputError, match=r"pipe\.npz is a FIFO"):
        as_source(str(tmp_path / "pipe.npz"), ["x"], 4)
    with pytest.raises(InputError, match=r"missing\.npy does not exist"):
        as_source(tmp_path / "missing.npy", ["x"], 4)
    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(InputError, match=r"data\.csv has suffix '\.csv'\. Expected one of \.npy, \.npz, \.safetensors"):
        as_source(tmp_path / "data.csv", ["x"], 4)


# ---------------------------------------------------------------------------------------------------------------
# skipping batches


class _SpyArray(np.ndarray):
    """An array that records the slices taken of it."""

    taken: list

    def __getitem__(self, key):
        type(self).taken.append(key)
        return np.asarray(self).__getitem__(key)


def _want_two(j: int) -> bool:
    return j == 2


def test_skipped_array_batches_read_nothing():
    _SpyArray.taken = []
    x = _tokens(10).view(_SpyArray)
    batches = _collect(as_source(x, ["tokens"], 3), _want_two)
    _check_layout(batches, 10, 3)
    assert [b.inputs is None for b in batches] == [True, True, False, True]
    assert _SpyArray.taken == [slice(6, 9)]
    np.testing.assert_array_equal(batches[2].inputs[0].numpy(), _tokens(10)[6:9])


@pytest.mark.parametrize("kind", ["npy", "stored", "safetensors"])
def test_skipped_file_batches_read_nothing(tmp_path, monkeypatch, kind):
    x = _features(10)
    if kind == "npy":
        np.save(tmp_path / "x.npy", x)
        path = tmp_path / "x.npy"
    elif kind == "stored":
        np.savez(tmp_path / "x.npz", x=x)
        path = tmp_path / "x.npz"
    else:
        save_file({"x": torch.from_numpy(x)}, tmp_path / "x.safetensors")
        path = tmp_path / "x.safetensors"
    reader = sources._SliceReader if kind == "safetensors" else sources._ArrayColumn
    read, calls = reader.rows, []

    def spy(self, start, stop):
        calls.append((start, stop))
        return read(self, start, stop)

    monkeypatch.setattr(reader, "rows", spy)
    batches = _collect(as_source(path, ["x"], 3), _want_two)
    assert calls == [(6, 9)]
    assert [b.size for b in batches] == [3, 3, 3, 1]
    np.testing.assert_array_equal(batches[2].inputs[0].numpy(), x[6:9])


def test_skipped_deflated_batches_are_decompressed_and_dropped(tmp_path):
    x = _features(10)
    np.savez_compressed(tmp_path / "x.npz", x=x)
    batches = _collect(as_source(tmp_path / "x.npz", ["x"], 3), lambda j: j in (1, 3))
    assert [b.inputs is None for b in batches] == [True, False, True, False]
    np.testing.assert_array_equal(batches[1].inputs[0].numpy(), x[3:6])
    np.testing.assert_array_equal(batches[3].inputs[0].numpy(), x[9:])


@pytest.mark.parametrize("kind", ["stored", "deflated", "npy"])
def test_large_file_is_read_a_batch_at_a_time(tmp_path, kind):
    rows, width, batch_size = 4096, 512, 64
    x = (np.arange(rows * width, dtype=np.int64).reshape(rows, width) % 251).astype(np.float32)  # 8 MiB
    if kind == "npy":
        path = tmp_path / "big.npy"
        np.save(path, x)
    else:
        path = tmp_path / "big.npz"
        _save_npz(path, kind == "deflated", x=x)
    source = as_source(path, ["x"], batch_size)
    total = 0
    tracemalloc.start()
    try:
        for batch in source.batches():
            total += float(batch.inputs[0][:, 7].sum())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == float(x[:, 7].sum())
    assert peak < x.nbytes / 8, (
        f"peak {peak} bytes for a {x.nbytes}-byte array"
    )  # a batch is 128 KiB; peaks seen: 0.25-0.5 MiB


# ---------------------------------------------------------------------------------------------------------------
# torch datasets and loaders


class _Pairs(Dataset):
    """Map-style items (tokens, feats, label), recording which indices were read."""

    def __init__(self, n: int = 10, form: str = "tuple") -> None:
        self.tokens, self.feats, self.form, self.read = _tokens(n), _features(n), form, []

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i):
        self.read.append(i)
        if self.form == "tuple":
            return self.tokens[i], torch.from_numpy(self.feats[i]), i % 2  # trailing label ignored
        if self.form == "dict":
            return {"feats": self.feats[i], "tokens": torch.from_numpy(self.tokens[i]), "label": "text"}
        return self.tokens[i]


@pytest.mark.parametrize("form", ["tuple", "dict"])
def test_map_dataset_with_labels(form):
    data = _Pairs(form=form)
    source = as_source(data, ["tokens", "feats"], 4)
    assert (source.kind, source.num_samples, source.batch_size) == ("dataset", 10, 4)
    batches = _collect(source)
    _check_layout(batches, 10, 4)
    np.testing.assert_array_equal(_stacked(batches, 0), data.tokens)
    np.testing.assert_array_equal(_stacked(batches, 1), data.feats)
    assert batches[0].inputs[0].dtype == torch.int64
    assert source.describe() == {"kind": "dataset", "dataset": f"{__name__}._Pairs", "num_samples": 10}


def test_map_dataset_single_input_and_skipping():
    data = _Pairs(form="plain")
    batches = _collect(as_source(data, ["tokens"], 3), _want_two)
    assert data.read == [6, 7, 8]
    assert [b.size for b in batches] == [3, 3, 3, 1]
    np.testing.assert_array_equal(batches[2].inputs[0].numpy(), data.tokens[6:9])


def test_tensor_dataset_labels_are_dropped():
    x, y = torch.from_numpy(_tokens()), torch.arange(10)
    batches = _collect(as_source(TensorDataset(x, y), ["tokens"], 4))
    assert all(len(b.inputs) == 1 for b in batches)
    assert torch.equal(torch.cat([b.inputs[0] for b in batches]), x)


@pytest.mark.parametrize(
    "item, names, match",
    [
        (np.zeros(3), ["a", "b"], r"Item 0 of .*_Items is a single ndarray, but the model takes 2 inputs"),
        ((np.zeros(3),), ["a", "b"], r"Item 0 of .*is a tuple of 1 element\(s\), but the model takes 2 inputs"),
        ({"a": np.zeros(3)}, ["a", "b"], r"Item 0 of .*is a dict with keys \['a'\].*missing \['b'\]"),
        ([[1, 2, 3], 0], ["a"], r"Item 0 of .*, input 'a', is a list\. Expected a torch tensor or numpy array"),
        ("text", ["a"], r"Item 0 of .*is a str\. Expected a tensor/array"),
    ],
)
def test_dataset_item_errors(item, names, match):
    class _Items(Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return item

    with pytest.raises(InputError, match=match):
        _collect(as_source(_Items(), names, 2))


def test_dataset_items_of_different_shapes():
    class _Ragged(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return np.zeros(i + 1)

    with pytest.raises(InputError, match=r"Input 'x' of items 0 to 1 of .*_Ragged cannot be stacked.*pad"):
        _collect(as_source(_Ragged(), ["x"], 2))


def test_empty_and_unsized_datasets():
    with pytest.raises(InputError, match=r"holds no samples \(len 0\)"):
        as_source(TensorDataset(torch.zeros(0, 3)), ["x"], 4)

    class _NoLen(Dataset):
        def __getitem__(self, i):
            return torch.zeros(3)

    with pytest.raises(InputError, match=r"_NoLen has no __len__"):
        as_source(_NoLen(), ["x"], 4)


class _Stream(IterableDataset):
    def __init__(self, n: int) -> None:
        self.n, self.pulled = n, 0

    def __iter__(self):
        for i in range(self.n):
            self.pulled += 1
            yield {"tokens": torch.full((5,), i, dtype=torch.int32), "label": i}


@pytest.mark.parametrize("n, batch_size", [(10, 4), (8, 4), (1, 4)])
def test_iterable_dataset(n, batch_size):
    data = _Stream(n)
    source = as_source(data, ["tokens"], batch_size)
    assert (source.kind, source.num_samples, source.describe()["num_samples"]) == ("iterable", None, None)
    batches = _collect(source)
    _check_layout(batches, n, batch_size)
    assert torch.equal(torch.cat([b.inputs[0] for b in batches])[:, 0], torch.arange(n, dtype=torch.int32))
    skipped = _collect(source, lambda j: False)
    assert [b.size for b in skipped] == [b.size for b in batches] and all(b.inputs is None for b in skipped)
    assert data.pulled == 2 * n  # skipped items are still pulled, to learn the sizes


def test_empty_iterable_dataset():
    with pytest.raises(InputError, match=r"_Stream yielded no items"):
        _collect(as_source(_Stream(0), ["tokens"], 4))


def test_dataloader_over_map_dataset():
    data = _Pairs()
    loader = DataLoader(data, batch_size=4, shuffle=False)
    source = as_source(loader, ["tokens", "feats"], 999)
    assert (source.kind, source.num_samples, source.batch_size) == ("dataloader", 10, 4)
    batches = _collect(source)
    _check_layout(batches, 10, 4)
    assert all(len(b.inputs) == 2 for b in batches)  # the label column is dropped
    np.testing.assert_array_equal(_stacked(batches, 0), data.tokens)
    np.testing.assert_array_equal(_stacked(batches, 1), data.feats)
    skipped = _collect(source, _want_two)
    assert [b.inputs is None for b in skipped] == [True, True, False]
    assert source.describe() == {
        "kind": "dataloader",
        "dataset": f"{__name__}._Pairs",
        "batch_size": 4,
        "num_samples": 10,
    }


def test_dataloader_dict_batches_drop_last_and_iterable():
    loader = DataLoader(_Pairs(form="dict"), batch_size=4, drop_last=True)
    source = as_source(loader, ["tokens", "feats"], 1)
    assert source.num_samples == 8
    assert [b.size for b in _collect(source)] == [4, 4]
    source = as_source(DataLoader(_Stream(6), batch_size=4), ["tokens"], 1)
    assert (source.num_samples, source.batch_size) == (None, 4)
    assert [(b.start, b.size) for b in _collect(source)] == [(0, 4), (4, 2)]


def test_dataloader_without_batch_size_uses_its_first_batch():
    class _Blocks(IterableDataset):  # yields ready-made batches of 3, then 2 (one pass only)
        def __init__(self):
            self.blocks = iter([torch.zeros(3, 5), torch.ones(2, 5)])

        def __iter__(self):
            return self.blocks

    source = as_source(DataLoader(_Blocks(), batch_size=None), ["x"], 64)
    assert source.batch_size == 3
    batches = _collect(source)
    assert [(b.start, b.size) for b in batches] == [(0, 3), (3, 2)]
    assert torch.equal(batches[1].inputs[0], torch.ones(2, 5))


@pytest.mark.parametrize(
    "make",
    [
        lambda d: DataLoader(d, batch_size=4, shuffle=True),
        lambda d: DataLoader(d, batch_size=4, sampler=torch.utils.data.SubsetRandomSampler(range(5))),
    ],
)
def test_shuffled_dataloader_is_refused(make):
    with pytest.raises(InputError, match=r"shuffles its data.*shuffle=False"):
        as_source(make(_Pairs()), ["tokens", "feats"], 4)


def test_dataloader_batch_errors():
    loader = DataLoader(_Pairs(form="plain"), batch_size=4)
    with pytest.raises(InputError, match=r"Batch 0 of the DataLoader is a single Tensor, but the model takes 2"):
        _collect(as_source(loader, ["a", "b"], 4))
    uneven = DataLoader([(torch.zeros(3), torch.zeros(2))] * 2, batch_size=None)
    with pytest.raises(InputError, match=r"inputs with samples \(axis 0\) \{'a': 3, 'b': 2\}"):
        as_source(uneven, ["a", "b"], 4)


# ---------------------------------------------------------------------------------------------------------------
# fingerprints


def test_hash_inputs_covers_dtype_shape_and_bytes():
    x = torch.arange(12, dtype=torch.int32).reshape(3, 4)
    base = hash_inputs([x])
    assert base == hash_inputs([x.clone()]) == hash_inputs([x.t().contiguous().t()])  # layout does not matter
    assert len(base) == 64 and int(base, 16) >= 0
    others = [
        hash_inputs([x.to(torch.int64)]),
        hash_inputs([x.reshape(4, 3)]),
        hash_inputs([x + (torch.arange(12).reshape(3, 4) == 5)]),
        hash_inputs([x, x]),
        hash_inputs([x.to(torch.bfloat16)]),
    ]
    assert len({base, *others}) == 6
