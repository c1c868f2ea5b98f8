"""The activations reader: per-sample values, slices, packed columns, masks, dtypes, memory maps and errors,
on small folders written by hand in the documented format."""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from torch_lstm_probe.errors import InputError, ProbeKeyError
from torch_lstm_probe.extract import reader
from torch_lstm_probe.extract.reader import Activations, MaskColumn, open_activations

Blocks = list[tuple[torch.Tensor, int, int]]


def _write(
    folder: Path,
    keys: dict[str, dict],
    shards: list[dict],
    masks: dict[str, int] | None = None,
    key_order: list[str] | None = None,
) -> Path:
    """Writes an activations folder: ``shards`` are ``{"n": n, "tensors": {key: blocks}, "masks": {layer:
    blocks}, "offsets": {layer: tensor}}`` with blocks ``[(tensor, a, b)]``; tensor names are made up."""
    folder.mkdir(parents=True, exist_ok=True)
    entries, start, counter = [], 0, 0
    for number, spec in enumerate(shards):
        n = spec["n"]
        tensors: dict[str, torch.Tensor] = {}

        def name(prefix: str, tensor: torch.Tensor, tensors: dict[str, torch.Tensor] = tensors) -> str:
            nonlocal counter
            counter += 1
            tensors[f"{prefix}{counter}"] = tensor.contiguous()
            return f"{prefix}{counter}"

        index_tensors = {k: [[name("t", t), a, b] for t, a, b in blocks] for k, blocks in spec["tensors"].items()}
        index_masks = {k: [[name("m", t), a, b] for t, a, b in blocks] for k, blocks in spec.get("masks", {}).items()}
        index_offsets = {k: name("o", t) for k, t in spec.get("offsets", {}).items()}
        file = f"shard-{number:05d}.safetensors"
        meta = {"format": reader.SHARD_FORMAT, "version": "1", "start": str(start), "stop": str(start + n)}
        save_file(tensors, str(folder / file), metadata=meta)
        entry = {"file": file, "start": start, "stop": start + n, "bytes": (folder / file).stat().st_size}
        entry.update(tensors=index_tensors, masks=index_masks, offsets=index_offsets)
        entries.append(entry)
        start += n
    full_keys = {
        k: {"batch_axis": 0, "flip": False, "meaning": f"test key {k}", "mask": None, "packed": False, **v}
        for k, v in keys.items()
    }
    index = {
        "format": reader.FORMAT,
        "version": reader.VERSION,
        "num_samples": start,
        "keys": full_keys,
        "key_order": key_order or list(keys),
        "masks": {layer: {"time_steps": t} for layer, t in (masks or {}).items()},
        "shards": entries,
        "run": {"model": {"name": "m"}, "request": {"batch_size": 2}, "data": {"kind": "array"}},
    }
    (folder / "manifest.json").write_text(json.dumps(index["run"], indent=1, sort_keys=True) + "\n")
    (folder / "index.json").write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    return folder


def _split(data: torch.Tensor, layout: list[list[int]]) -> list[dict]:
    """Cuts ``data`` (samples first) into shards of blocks of the given sizes: ``[[3, 2], [4]]``."""
    shards, pos = [], 0
    for sizes in layout:
        blocks, a = [], 0
        for size in sizes:
            blocks.append((data[pos + a : pos + a + size], a, a + size))
            a += size
        shards.append({"n": a, "tensors": {"x": blocks}})
        pos += a
    return shards


def _fixed(folder: Path, layout: list[list[int]], dtype: torch.dtype = torch.float32, shape=(4, 3)):
    total = sum(sum(sizes) for sizes in layout)
    gen = torch.Generator().manual_seed(0)
    data = (torch.randn(total, *shape, generator=gen) * 3).to(dtype)  # (N, *shape)
    if dtype == torch.bool:
        data = torch.rand(total, *shape, generator=gen) > 0.5
    name = str(dtype).removeprefix("torch.")
    keys = {"x": {"dtype": name, "sample_shape": list(shape)}}
    return _write(folder, keys, _split(data, layout)), data


LAYOUTS = [[[9]], [[3, 2], [4]], [[1], [1, 1, 1], [5]], [[2, 2, 2, 2, 1]]]


@pytest.mark.parametrize("layout", LAYOUTS, ids=["one-block", "two-shards", "three-shards", "many-blocks"])
def test_samples_slices_and_iteration_equal_the_data(tmp_path, layout):
    folder, data = _fixed(tmp_path, layout)
    acts = open_activations(folder)
    col = acts["x"]
    assert len(acts) == len(col) == 9 and col.dtype == torch.float32 and col.sample_shape == (4, 3)
    for i in range(-9, 9):
        assert torch.equal(col[i], data[i])
    for a, b in [(0, 9), (2, 7), (3, 5), (4, 5), (5, 5), (-4, None), (0, 100)]:
        assert torch.equal(col[a:b], data[a:b])
    assert torch.equal(col[::3], data[::3]) and torch.equal(col[::-2], data.flip(0)[::2])
    assert torch.equal(torch.stack(list(col)), data)
    assert np.array_equal(col.numpy(), data.numpy()) and torch.equal(col.torch(), data)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64, torch.bool, torch.int64])
def test_stored_dtype_round_trips(tmp_path, dtype):
    folder, data = _fixed(tmp_path, [[3, 2], [4]], dtype=dtype)
    col = open_activations(folder)["x"]
    assert col.dtype == dtype and col[4].dtype == dtype and col[1:6].dtype == dtype
    assert torch.equal(col[-1], data[-1]) and torch.equal(col[1:6], data[1:6]) and torch.equal(col.torch(), data)
    if dtype == torch.bfloat16:
        with pytest.raises(InputError, match="bfloat16.*col.torch"):
            col.numpy()
    else:
        assert np.array_equal(col.numpy(), data.numpy())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_one_block_column_is_memory_mapped_and_never_written(tmp_path, dtype):
    folder, data = _fixed(tmp_path, [[9]], dtype=dtype)
    acts = open_activations(folder)
    col = acts["x"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns about read-only NumPy arrays; the reader avoids it
        whole = col.torch()
        sample = col[3]
        sample += 1  # a sample is a copy
        if dtype == torch.float32:
            view = col.numpy()
            assert not view.flags.writeable and not view.flags.owndata
            assert np.shares_memory(view, col.numpy())  # the same map every time, not a copy
            with pytest.raises(ValueError, match="read-only"):
                view[0, 0, 0] = 1.0
    shard = folder / "shard-00000.safetensors"
    before = shard.read_bytes()
    whole[0] = 7  # copy-on-write: this process's copy only
    assert shard.read_bytes() == before and torch.equal(col[0], data[0]) and torch.equal(col[3], data[3])

    # Both views map the file: bytes changed on disk after opening show through them.
    fresh = col.torch()
    header = int.from_bytes(before[:8], "little")
    with open(shard, "r+b") as f:
        f.seek(8 + header)
        f.write(bytes(data.element_size()))  # first element of sample 0 becomes 0
    assert float(fresh[0, 0, 0]) == 0.0
    if dtype == torch.float32:
        assert float(view[0, 0, 0]) == 0.0


def test_variable_time_blocks_give_lists(tmp_path):
    gen = torch.Generator().manual_seed(1)
    first, second = torch.randn(3, 5, 2, generator=gen), torch.randn(2, 7, 2, generator=gen)
    shards = [{"n": 5, "tensors": {"x": [(first, 0, 3), (second, 3, 5)]}}]
    col = open_activations(_write(tmp_path, {"x": {"dtype": "float32", "sample_shape": [None, 2]}}, shards))["x"]
    assert col.sample_shape == (None, 2)
    assert torch.equal(col[2], first[2]) and torch.equal(col[-1], second[1]) and col[3].shape == (7, 2)
    pieces = col[1:4]
    assert isinstance(pieces, list) and [p.shape[0] for p in pieces] == [5, 5, 7]
    assert torch.equal(pieces[2], second[0]) and col[::2][2].shape == (7, 2)
    with pytest.raises(InputError, match=r"'x' cannot be one array.*\(5, 2\).*\(7, 2\)"):
        col.numpy()


def _packed_case(folder: Path, layout: list[list[int]], time_steps: int = 6):
    """A packed key 'lstm' (valid steps only) with its mask and offsets, plus an unpacked 'dense' (2,)."""
    gen = torch.Generator().manual_seed(2)
    total = sum(sum(sizes) for sizes in layout)
    lengths = torch.randint(0, time_steps + 1, (total,), generator=gen)  # (N,)
    lengths[0] = time_steps
    full = torch.randn(total, time_steps, 3, generator=gen)  # (N, T, 3)
    mask = torch.arange(time_steps)[None, :] < lengths[:, None]  # (N, T)
    dense = torch.randn(total, 2, generator=gen)
    shards, pos = [], 0
    for sizes in layout:
        n = sum(sizes)
        local = lengths[pos : pos + n]
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64), local.cumsum(0)])  # (n + 1,)
        blocks, mask_blocks, a = [], [], 0
        for size in sizes:
            rows = torch.cat([full[pos + i, : lengths[pos + i]] for i in range(a, a + size)])  # (steps, 3)
            blocks.append((rows, a, a + size))
            mask_blocks.append((mask[pos + a : pos + a + size], a, a + size))
            a += size
        shards.append(
            {
                "n": n,
                "tensors": {"lstm": blocks, "dense": [(dense[pos : pos + n], 0, n)]},
                "masks": {"lstm": mask_blocks},
                "offsets": {"lstm": offsets},
            }
        )
        pos += n
    keys = {
        "lstm": {"dtype": "float32", "sample_shape": [None, 3], "packed": True, "mask": "lstm"},
        "dense": {"dtype": "float32", "sample_shape": [2]},
    }
    _write(folder, keys, shards, masks={"lstm": time_steps}, key_order=["lstm", "dense"])
    return full, lengths, mask, dense


@pytest.mark.parametrize("layout", [[[7]], [[3, 2], [2]], [[1, 1], [1, 4]]], ids=["one-block", "two", "four"])
def test_packed_columns_masks_and_lengths(tmp_path, layout):
    full, lengths, mask, dense = _packed_case(tmp_path, layout)
    acts = open_activations(tmp_path)
    assert acts.keys() == ["lstm", "dense"] and list(acts) == ["lstm", "dense"]
    col = acts["lstm"]
    assert col.packed and col.sample_shape == (None, 3) and col.mask == "lstm"
    for i in range(-7, 7):
        assert torch.equal(col[i], full[i, : lengths[i]])
        assert torch.equal(acts.masks["lstm"][i], mask[i]) and acts.masks["lstm"][i].dtype == torch.bool
    assert [t.shape[0] for t in col[2:6]] == lengths[2:6].tolist()
    assert np.array_equal(acts.lengths, lengths.numpy()) and acts.lengths.dtype == np.int64
    offsets = col.offsets()
    packed = col.numpy()
    for i in range(7):
        assert np.array_equal(packed[offsets[i] : offsets[i + 1]], full[i, : lengths[i]].numpy())
    masks = acts.masks
    assert isinstance(masks["lstm"], MaskColumn) and torch.equal(masks["lstm"][1:5], mask[1:5])
    assert torch.equal(masks["lstm"].torch(), mask) and torch.equal(acts["dense"][:], dense)
    with pytest.raises(InputError, match="'dense' is not packed"):
        acts["dense"].offsets()


def test_folder_metadata_keys_and_pickling(tmp_path):
    folder, data = _fixed(tmp_path, [[3, 2], [4]])
    acts = open_activations(folder / "index.json")  # the index file itself is accepted too
    assert "x" in acts and "y" not in acts and acts.masks == {} and acts.lengths is None
    assert acts.run == {"model": {"name": "m"}, "request": {"batch_size": 2}, "data": {"kind": "array"}}
    assert acts.index["num_samples"] == 9 and acts["x"].info["meaning"] == "test key x"
    assert repr(acts) == f"Activations(9 samples, 1 keys, folder={str(folder)!r})"
    assert "(4, 3) float32" in repr(acts["x"])
    acts["x"][0]  # maps a shard; pickling must not copy it
    again = pickle.loads(pickle.dumps(acts))
    assert isinstance(again, Activations) and torch.equal(again["x"][5:8], data[5:8])
    with pytest.raises(ProbeKeyError, match=r"no key 'lstm/gates/q'.*Expected one of: 'x'") as info:
        acts["lstm/gates/q"]
    assert isinstance(info.value, KeyError)
    with pytest.raises(KeyError, match=r"acts\[key\]\[i\]"):
        acts[0]


def test_empty_folder_reads_as_zero_samples(tmp_path):
    keys = {"x": {"dtype": "float16", "sample_shape": [4, 3]}}
    col = open_activations(_write(tmp_path, keys, []))["x"]
    assert len(col) == 0 and col[0:0].shape == (0, 4, 3) and col.numpy().shape == (0, 4, 3)
    assert col[0:0].dtype == torch.float16 and list(col) == []


@pytest.mark.parametrize("index", [9, -10, 100])
def test_out_of_range_sample(tmp_path, index):
    col = open_activations(_fixed(tmp_path, [[3, 2], [4]])[0])["x"]
    with pytest.raises(IndexError, match=rf"sample {index} of key 'x' is out of range: there are 9 samples"):
        col[index]


def test_sample_index_of_the_wrong_type(tmp_path):
    col = open_activations(_fixed(tmp_path, [[9]])[0])["x"]
    assert torch.equal(col[np.int64(2)], col[2])
    with pytest.raises(InputError, match="indexed by a sample number or a slice. Received: str"):
        col["2"]


# ---- errors ----------------------------------------------------------------------------------------------------------


def _index(folder: Path) -> dict:
    return json.loads((folder / "index.json").read_text())


def _set_index(folder: Path, index: dict) -> None:
    (folder / "index.json").write_text(json.dumps(index))


def test_unfinished_and_missing_folders(tmp_path):
    folder, _ = _fixed(tmp_path / "acts", [[3, 2], [4]])
    (folder / "index.json").unlink()
    with pytest.raises(InputError, match=r"acts: extraction not finished.*re-run tlp.extract\(...\).*resume"):
        open_activations(folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(InputError, match="acts: not an activations folder: it has no index.json"):
        open_activations(folder)
    with pytest.raises(InputError, match="nowhere: no such folder"):
        open_activations(tmp_path / "nowhere")


def test_missing_shard_names_it_and_says_resume(tmp_path):
    folder, _ = _fixed(tmp_path, [[3, 2], [4]])
    (folder / "shard-00001.safetensors").unlink()
    with pytest.raises(
        InputError, match=r"shard-00001.safetensors: shard file is missing.*\[5, 9\).*incomplete.*resume"
    ):
        open_activations(folder)


def _patch_header(path: Path, change) -> None:
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = change(json.loads(raw[8 : 8 + n]))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (n - len(text))  # keep the data where it is
    assert len(text) == n
    path.write_bytes(raw[:8] + text + raw[8 + n :])


def _rename_tensor(header: dict) -> dict:
    header["zz"] = header.pop("t1")
    return header


def _retype_tensor(header: dict) -> dict:
    header["t1"]["dtype"] = "I32"
    return header


def _reshape_tensor(header: dict) -> dict:
    header["t1"]["shape"] = [3, 12]
    return header


@pytest.mark.parametrize(
    "change, match",
    [
        (_rename_tensor, r"shard-00000.safetensors: has no tensor 't1' \(key 'x', samples \[0, 3\)\)"),
        (
            _retype_tensor,
            r"tensor 't1' \(key 'x', samples \[0, 3\)\) does not match the index. Received: I32 \(3, 4, 3\). Expected: F32 \(3, 4, 3\)",
        ),
        (_reshape_tensor, r"Received: F32 \(3, 12\). Expected: F32 \(3, 4, 3\)"),
    ],
    ids=["missing", "dtype", "shape"],
)
def test_tensor_the_index_names_must_exist_with_its_dtype_and_shape(tmp_path, change, match):
    folder, _ = _fixed(tmp_path, [[3, 2], [4]])
    _patch_header(folder / "shard-00000.safetensors", change)
    with pytest.raises(InputError, match=match):
        open_activations(folder)


_SPAN = b'{"t1": {"dtype": "F32", "shape": [2], "data_offsets": [0, 9]}}'


@pytest.mark.parametrize(
    "payload, match",
    [
        ((2**40).to_bytes(8, "little") + b"{}", "declares a header of 1099511627776 bytes, more than the limit"),
        ((500).to_bytes(8, "little") + b"{}", "declares a header of 500 bytes but the file holds only 2"),
        ((4).to_bytes(8, "little") + b"{,}x", "header is not valid JSON"),
        ((2).to_bytes(8, "little") + b"[]", "header is not a JSON object"),
        (b"\x01\x02", "too short for a safetensors file"),
        ((len(_SPAN)).to_bytes(8, "little") + _SPAN, r"tensor 't1': data_offsets \[0, 9\] do not lie within"),
    ],
    ids=["oversized", "truncated", "json", "not-object", "short", "offsets"],
)
def test_corrupt_shard_header(tmp_path, payload, match):
    folder, _ = _fixed(tmp_path, [[3, 2], [4]])
    shard = folder / "shard-00001.safetensors"
    shard.write_bytes(payload)
    index = _index(folder)
    index["shards"][1]["bytes"] = len(payload)
    _set_index(folder, index)
    with pytest.raises(InputError, match=f"shard-00001.safetensors.*{match}"):
        open_activations(folder)


def test_changed_shard_size_is_refused(tmp_path):
    folder, _ = _fixed(tmp_path, [[9]])
    with open(folder / "shard-00000.safetensors", "ab") as f:
        f.write(b"\0" * 8)
    with pytest.raises(InputError, match=r"is \d+ bytes but the index says \d+: the file was truncated or replaced"):
        open_activations(folder)


def _edit(path: list, value):
    def change(index: dict) -> dict:
        target = index
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
        return index

    return change


@pytest.mark.parametrize(
    "change, match",
    [
        (_edit(["format"], "other"), "field 'format' is 'other'"),
        (_edit(["version"], 2), "field 'version' is 2.*cannot read it"),
        (_edit(["num_samples"], 10), r"cover samples \[0, 9\) but 'num_samples' is 10"),
        (_edit(["num_samples"], "9"), "field 'num_samples' is not an integer"),
        (_edit(["keys", "x", "dtype"], "complex64"), "field 'keys.x.dtype' names no supported dtype"),
        (_edit(["keys", "x", "sample_shape"], [4, -3]), "field 'keys.x.sample_shape' holds something other"),
        (_edit(["keys", "x", "packed"], True), "key 'x' is packed, so its sample_shape starts with null"),
        (_edit(["key_order"], ["x", "x"]), "field 'key_order' is not the keys of 'keys'"),
        (
            _edit(["shards", 1, "file"], "../shard-00001.safetensors"),
            r"field 'shards\[1\].file' is not a shard file name",
        ),
        (_edit(["shards", 1, "start"], 4), "starts at sample 4. Expected: 5"),
        (
            _edit(["shards", 0, "tensors", "x", 1], ["t2", 2, 5]),
            r"block \['t2', 2, 5\] starts at sample 2. Expected: 3",
        ),
        (_edit(["shards", 0, "tensors", "y"], []), r"lists tensors of keys the index does not have: \['y'\]"),
        (_edit(["shards"], {}), "field 'shards' is not a list"),
        (_edit(["masks"], {"lstm": {"time_steps": 4}}), "has no mask for layer 'lstm'"),
    ],
)
def test_malformed_index_names_the_field(tmp_path, change, match):
    folder, _ = _fixed(tmp_path, [[3, 2], [4]])
    _set_index(folder, change(_index(folder)))
    with pytest.raises(InputError, match=f"index.json.*{match}"):
        open_activations(folder)


@pytest.mark.parametrize(
    "text, match", [(b"{", "not valid JSON"), (b"\xff", "not valid JSON"), (b"[]", "not a JSON object")]
)
def test_index_that_is_not_json(tmp_path, text, match):
    folder, _ = _fixed(tmp_path, [[9]])
    (folder / "index.json").write_bytes(text)
    with pytest.raises(InputError, match=f"index.json: {match}"):
        open_activations(folder)


def test_oversized_index_is_refused_before_reading(tmp_path, monkeypatch):
    folder, _ = _fixed(tmp_path, [[9]])
    monkeypatch.setattr(reader, "MAX_INDEX_BYTES", 100)
    with pytest.raises(InputError, match=r"index.json: is \d+ bytes, more than the limit of 100 bytes"):
        open_activations(folder)


def test_packed_offsets_that_disagree_with_the_values(tmp_path):
    _packed_case(tmp_path, [[3, 2], [2]])
    path = tmp_path / "shard-00001.safetensors"
    raw = bytearray(path.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    name = _index(tmp_path)["shards"][1]["offsets"]["lstm"]
    begin = 8 + n + header[name]["data_offsets"][0]
    raw[begin + 8 : begin + 16] = (99).to_bytes(8, "little")  # first sample "has" 99 valid steps of 6
    path.write_bytes(bytes(raw))
    acts = open_activations(tmp_path)
    assert torch.equal(acts["dense"][6], acts["dense"][:][6])  # other keys still read
    with pytest.raises(
        InputError,
        match=r"shard-00001.safetensors: offsets 'o\d+' of layer 'lstm' are not 0 followed by valid step counts \(0..6\)",
    ):
        acts["lstm"][5]
