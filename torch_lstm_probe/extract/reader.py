"""Reads an activations folder written by ``tlp.extract``: lazy, memory-mapped columns in data order.

Opening a folder reads ``index.json`` and the header of every shard, and checks that each tensor the
index names exists with the dtype and a shape the index implies. Values are read only when asked for:
each shard file is memory-mapped once, on first use, and a sample touches only its own bytes. Nothing
here ever writes to the folder.

Example:
    >>> acts = open_activations("acts/")
    >>> acts["lstm"][0]          # sample 0: (time, units), stored dtype
    >>> acts["lstm"][10:20]      # (10, time, units)
    >>> acts["lstm"].numpy()     # (num_samples, time, units), memory-mapped when one block holds it
    >>> acts.lengths             # (num_samples,) int64 valid steps, or None without masks
"""

from __future__ import annotations

import json
import operator
import os
import re
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError, ProbeKeyError

__all__ = [
    "open_activations",
    "Activations",
    "Column",
    "MaskColumn",
    "FORMAT",
    "SHARD_FORMAT",
    "VERSION",
    "MAX_INDEX_BYTES",
    "MAX_HEADER_BYTES",
]

FORMAT = "torch_lstm_probe.activations"  # index.json "format"
SHARD_FORMAT = "torch_lstm_probe.activations.shard"  # a shard's __metadata__ "format"
VERSION = 1  # index.json "version" this reader understands
MAX_INDEX_BYTES = 64 * 2**20  # largest index.json read
MAX_HEADER_BYTES = 100 * 2**20  # largest safetensors header read

_SHARD_NAME = re.compile(r"shard-[0-9]{5,}\.safetensors")
_LENGTH_ROWS = 1 << 16  # mask rows summed at a time when computing lengths
_SHOWN_KEYS = 8  # keys listed in an unknown-key error

# torch dtype name -> (torch dtype, safetensors dtype code, NumPy dtype the stored bytes are mapped as)
_DTYPES: dict[str, tuple[torch.dtype, str, np.dtype]] = {
    "float64": (torch.float64, "F64", np.dtype("<f8")),
    "float32": (torch.float32, "F32", np.dtype("<f4")),
    "float16": (torch.float16, "F16", np.dtype("<f2")),
    "bfloat16": (torch.bfloat16, "BF16", np.dtype("<i2")),  # NumPy has no bfloat16: its bits, viewed in torch
    "int64": (torch.int64, "I64", np.dtype("<i8")),
    "int32": (torch.int32, "I32", np.dtype("<i4")),
    "int16": (torch.int16, "I16", np.dtype("<i2")),
    "int8": (torch.int8, "I8", np.dtype("i1")),
    "uint8": (torch.uint8, "U8", np.dtype("u1")),
    "bool": (torch.bool, "BOOL", np.dtype(np.bool_)),
}
# bytes per element of every safetensors dtype code, for checking a header's byte ranges
_CODE_SIZES = {
    "F64": 8,
    "I64": 8,
    "U64": 8,
    "F32": 4,
    "I32": 4,
    "U32": 4,
    "F16": 2,
    "BF16": 2,
    "I16": 2,
    "U16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}

_INCOMPLETE = "The extraction is incomplete: re-run tlp.extract(...) with the same arguments to resume it."
_REWRITE = "Re-run tlp.extract(..., overwrite=True) to write the folder again."

Block = tuple[str, int, int]  # (tensor name, first sample, end sample), samples relative to the shard


@dataclass(frozen=True)
class _Entry:
    """One tensor of a shard file, as its safetensors header describes it."""

    code: str  # safetensors dtype code, e.g. "F16"
    shape: tuple[int, ...]
    begin: int  # byte offset of its data in the file
    end: int


@dataclass(frozen=True)
class _Key:
    """What index.json says about one probe key."""

    dtype: str  # torch dtype name, a key of _DTYPES
    sample_shape: tuple[int | None, ...]  # one sample; None for an axis that varies between blocks
    packed: bool  # only valid steps stored; the first axis is the packed time axis
    mask: str | None  # layer whose applied mask goes with the key


@dataclass
class _Shard:
    """One shard file: where its samples go, and its tensors."""

    file: str
    path: Path
    start: int  # global index of its first sample
    stop: int
    size: int  # file size in bytes when the folder was opened
    entries: dict[str, _Entry]  # every tensor of its header
    tensors: dict[str, list[Block]]  # probe key -> blocks
    masks: dict[str, list[Block]]  # layer -> blocks of its bool (n, time) mask
    offsets: dict[str, str]  # layer -> name of its int64 (n + 1,) packed offsets


def open_activations(path: str | os.PathLike[str]) -> Activations:
    """Opens a folder written by ``tlp.extract`` for lazy, memory-mapped reading.

    Only ``index.json`` and the shard headers are read; values are read when a sample is asked for.

    Args:
        path: the folder (or its ``index.json``).

    Returns:
        The :class:`Activations` of the folder.

    Raises:
        InputError: the folder is missing, unfinished (``manifest.json`` without ``index.json``),
            its index or a shard is damaged or missing, or a tensor the index names is absent or has
            another dtype or shape.

    Example:
        >>> acts = open_activations("acts/")
        >>> acts["lstm/gates/f"][3]   # (time, units) of sample 3
    """
    return Activations(path)


def _fail(where: object, problem: str, fix: str = "") -> InputError:
    return InputError(f"{where}: {problem}" + (f" {fix}" if fix else ""))


def _is_int(value: object) -> bool:
    return type(value) is int


def _int_field(value: object, where: object, field: str, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _fail(where, f"field {field!r} is not an integer >= {minimum}. Received: {value!r}.", _REWRITE)
    return value


def _field(obj: dict[str, Any], name: str, kind: type, where: object, label: str = "") -> Any:
    """``obj[name]``, checked to be a ``kind`` (a bool is not an int)."""
    label = label or name
    if name not in obj:
        raise _fail(where, f"field {label!r} is missing.", _REWRITE)
    value = obj[name]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise _fail(where, f"field {label!r} is not a {kind.__name__}. Received: {value!r}.", _REWRITE)
    return value


def _read_index(folder: Path) -> dict[str, Any]:
    index_path = folder / "index.json"
    if not index_path.exists():
        if (folder / "manifest.json").exists():
            raise _fail(
                folder,
                "extraction not finished (manifest.json is there, index.json is not); "
                "re-run tlp.extract(...) with the same arguments to resume.",
            )
        raise _fail(
            folder, "not an activations folder: it has no index.json. Expected a folder written by tlp.extract."
        )
    if not index_path.is_file():
        raise _fail(index_path, "not a regular file. Expected the JSON index written by tlp.extract.")
    size = index_path.stat().st_size
    if size > MAX_INDEX_BYTES:
        raise _fail(index_path, f"is {size} bytes, more than the limit of {MAX_INDEX_BYTES} bytes for an index.")
    try:
        index = json.loads(index_path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise _fail(index_path, f"not valid JSON ({err}).", _REWRITE) from err
    if not isinstance(index, dict):
        raise _fail(index_path, f"not a JSON object. Received: {type(index).__name__}.", _REWRITE)
    return index


def _parse_blocks(value: object, n: int, where: object, field: str) -> list[Block]:
    """Checks a list of [name, a, b] blocks that cover samples [0, n) in order."""
    if not isinstance(value, list):
        raise _fail(where, f"field {field!r} is not a list of [tensor, start, stop] blocks. Received: {value!r}.")
    blocks: list[Block] = []
    expected_start = 0
    for block in value:
        ok = isinstance(block, list) and len(block) == 3 and isinstance(block[0], str)
        if not ok or not _is_int(block[1]) or not _is_int(block[2]) or not 0 <= block[1] < block[2] <= n:
            raise _fail(
                where,
                f"field {field!r} holds a malformed block. Received: {block!r}. Expected: [name, a, b] with 0 <= a < b <= {n}.",
                _REWRITE,
            )
        if block[1] != expected_start:
            raise _fail(
                where,
                f"field {field!r}: block {block!r} starts at sample {block[1]}. Expected: {expected_start} (blocks cover the shard's samples in order).",
                _REWRITE,
            )
        blocks.append((block[0], block[1], block[2]))
        expected_start = block[2]
    if expected_start != n:
        raise _fail(
            where, f"field {field!r}: blocks cover samples [0, {expected_start}). Expected: [0, {n}).", _REWRITE
        )
    return blocks


def _parse_key(key: str, spec: object, where: object) -> _Key:
    label = f"keys.{key}"
    if not isinstance(spec, dict):
        raise _fail(where, f"field {label!r} is not an object. Received: {spec!r}.", _REWRITE)
    dtype = _field(spec, "dtype", str, where, f"{label}.dtype")
    if dtype not in _DTYPES:
        raise _fail(
            where,
            f"field {label + '.dtype'!r} names no supported dtype. Received: {dtype!r}. Expected one of: {', '.join(_DTYPES)}.",
        )
    shape = _field(spec, "sample_shape", list, where, f"{label}.sample_shape")
    if not all(d is None or _is_int(d) and d >= 0 for d in shape):
        raise _fail(
            where,
            f"field {label + '.sample_shape'!r} holds something other than sizes >= 0 and null. Received: {shape!r}.",
            _REWRITE,
        )
    packed = _field(spec, "packed", bool, where, f"{label}.packed")
    mask = spec.get("mask")
    if mask is not None and not isinstance(mask, str):
        raise _fail(where, f"field {label + '.mask'!r} is not a layer path or null. Received: {mask!r}.", _REWRITE)
    if packed and (not shape or shape[0] is not None or mask is None):
        raise _fail(
            where,
            f"key {key!r} is packed, so its sample_shape starts with null and it names its mask layer. Received: sample_shape {shape!r}, mask {mask!r}.",
            _REWRITE,
        )
    return _Key(dtype, tuple(shape), packed, mask)


def _read_header(shard_path: Path) -> tuple[dict[str, _Entry], dict[str, Any], int]:
    """Reads the header of a safetensors file: its tensors, its metadata and the file size."""
    size = shard_path.stat().st_size
    with open(shard_path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _fail(
                shard_path, f"is {size} bytes, too short for a safetensors file (8-byte header length first).", _REWRITE
            )
        n = int.from_bytes(head, "little")
        if n > MAX_HEADER_BYTES:
            raise _fail(
                shard_path,
                f"declares a header of {n} bytes, more than the limit of {MAX_HEADER_BYTES} bytes; the file is damaged.",
                _REWRITE,
            )
        if n > size - 8:
            raise _fail(
                shard_path,
                f"declares a header of {n} bytes but the file holds only {size - 8} after the length; it is truncated or damaged.",
                _REWRITE,
            )
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise _fail(shard_path, f"its safetensors header is not valid JSON ({err}).", _REWRITE) from err
    if not isinstance(header, dict):
        raise _fail(
            shard_path, f"its safetensors header is not a JSON object. Received: {type(header).__name__}.", _REWRITE
        )
    data_start = 8 + n
    data_size = size - data_start
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise _fail(shard_path, f"its __metadata__ is not an object. Received: {metadata!r}.", _REWRITE)
    entries: dict[str, _Entry] = {}
    for name, spec in header.items():
        where = f"{shard_path}: tensor {name!r}"
        if not isinstance(spec, dict):
            raise _fail(where, f"its header entry is not an object. Received: {spec!r}.", _REWRITE)
        code = spec.get("dtype")
        shape = spec.get("shape")
        span = spec.get("data_offsets")
        if not isinstance(code, str) or not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise _fail(where, f"malformed dtype or shape. Received: dtype {code!r}, shape {shape!r}.", _REWRITE)
        if (
            not isinstance(span, list)
            or len(span) != 2
            or not all(_is_int(o) for o in span)
            or not 0 <= span[0] <= span[1] <= data_size
        ):
            raise _fail(
                where, f"data_offsets {span!r} do not lie within the {data_size} data bytes of the file.", _REWRITE
            )
        itemsize = _CODE_SIZES.get(code)
        if itemsize is not None:
            if int(np.prod(shape, dtype=object)) * itemsize != span[1] - span[0]:
                raise _fail(
                    where,
                    f"shape {shape} of {code} needs {int(np.prod(shape, dtype=object)) * itemsize} bytes but data_offsets span {span[1] - span[0]}.",
                    _REWRITE,
                )
            if (data_start + span[0]) % itemsize:
                raise _fail(
                    where,
                    f"data at byte {data_start + span[0]} is not aligned to its {itemsize}-byte elements.",
                    _REWRITE,
                )
        entries[name] = _Entry(code, tuple(shape), data_start + span[0], data_start + span[1])
    return entries, metadata, size


def _fits(shape: tuple[int, ...], expected: tuple[int | None, ...]) -> bool:
    return len(shape) == len(expected) and all(e is None or s == e for s, e in zip(shape, expected))


def _show(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("*" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


class Activations:
    """A folder written by ``tlp.extract``, read lazily: one :class:`Column` per probe key.

    ``len(acts)`` is the number of samples; ``acts.keys()`` are the probe keys in probe order;
    ``acts[key]`` is the key's :class:`Column`; iterating yields the keys, like a dict. Shard files are
    memory-mapped read-only, each on first use; nothing is ever written to the folder.

    Attributes:
        path: the folder.
        index: the parsed ``index.json``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        folder = Path(path)
        if folder.name == "index.json" and folder.is_file():
            folder = folder.parent
        if not folder.is_dir():
            raise _fail(folder, "no such folder. Expected a folder written by tlp.extract.")
        self.path = folder
        self.index = _read_index(folder)
        self._num_samples = 0
        self._keys: dict[str, _Key] = {}
        self._key_order: list[str] = []
        self._time_steps: dict[str, int | None] = {}  # None: the time axis varies between blocks
        self._shards: list[_Shard] = []
        self._parse()
        self._starts = [s.start for s in self._shards]
        self._maps: dict[int, np.memmap] = {}  # shard -> read-only map of the whole file
        self._views: dict[tuple[int, str], np.ndarray] = {}  # (shard, tensor name) -> view into its map
        self._offsets: dict[tuple[int, str], np.ndarray] = {}  # (shard, layer) -> checked offsets
        self._lengths: np.ndarray | None = None
        self._columns = {key: Column(self, key) for key in self._key_order}
        self._masks = {layer: MaskColumn(self, layer) for layer in self._time_steps}

    # ---- opening -------------------------------------------------------------------------------------------------

    def _parse(self) -> None:
        where = self.path / "index.json"
        index = self.index
        fmt = index.get("format")
        if fmt != FORMAT:
            raise _fail(where, f"field 'format' is {fmt!r}. Expected: {FORMAT!r} (an index written by tlp.extract).")
        version = index.get("version")
        if version != VERSION or not _is_int(version):
            raise _fail(
                where,
                f"field 'version' is {version!r}. Expected: {VERSION}; this version of torch_lstm_probe cannot read it.",
                "Upgrade torch_lstm_probe, or re-run tlp.extract with this version.",
            )
        self._num_samples = _int_field(index.get("num_samples"), where, "num_samples")
        keys = _field(index, "keys", dict, where)
        self._keys = {key: _parse_key(key, spec, where) for key, spec in keys.items()}
        order = _field(index, "key_order", list, where)
        if not all(isinstance(k, str) for k in order) or len(set(order)) != len(order) or set(order) != set(keys):
            raise _fail(
                where,
                f"field 'key_order' is not the keys of 'keys', each once. Received: {order!r}. Expected an order of: {sorted(keys)!r}.",
                _REWRITE,
            )
        self._key_order = list(order)
        masks = _field(index, "masks", dict, where)
        for layer, spec in masks.items():
            if not isinstance(spec, dict):
                raise _fail(where, f"field 'masks.{layer}' is not an object. Received: {spec!r}.", _REWRITE)
            steps = spec.get("time_steps")
            self._time_steps[layer] = None if steps is None else _int_field(steps, where, f"masks.{layer}.time_steps")
        shards = _field(index, "shards", list, where)
        expected_start = 0
        files: set[str] = set()
        for number, spec in enumerate(shards):
            shard = self._parse_shard(number, spec, where, expected_start)
            if shard.file in files:
                raise _fail(where, f"shard file {shard.file!r} is listed twice.", _REWRITE)
            files.add(shard.file)
            expected_start = shard.stop
            self._shards.append(shard)
        if expected_start != self._num_samples:
            raise _fail(
                where,
                f"the shards cover samples [0, {expected_start}) but 'num_samples' is {self._num_samples}.",
                _REWRITE,
            )

    def _parse_shard(self, number: int, spec: object, where: Path, expected_start: int) -> _Shard:
        label = f"shards[{number}]"
        if not isinstance(spec, dict):
            raise _fail(where, f"field {label!r} is not an object. Received: {spec!r}.", _REWRITE)
        file = _field(spec, "file", str, where, f"{label}.file")
        if not _SHARD_NAME.fullmatch(file):
            raise _fail(
                where,
                f"field {label + '.file'!r} is not a shard file name. Received: {file!r}. Expected: shard-NNNNN.safetensors.",
                _REWRITE,
            )
        start = _int_field(spec.get("start"), where, f"{label}.start")
        if start != expected_start:
            raise _fail(
                where,
                f"shard {file!r} starts at sample {start}. Expected: {expected_start} (shards cover the samples in order).",
                _REWRITE,
            )
        stop = _int_field(spec.get("stop"), where, f"{label}.stop", minimum=start)
        n = stop - start
        shard_where = f"{where}: shard {file!r}"
        tensors_spec = _field(spec, "tensors", dict, where, f"{label}.tensors")
        unknown = sorted(set(tensors_spec) - set(self._keys))
        if unknown:
            raise _fail(shard_where, f"lists tensors of keys the index does not have: {unknown!r}.", _REWRITE)
        tensors: dict[str, list[Block]] = {}
        for key in self._key_order:
            if key not in tensors_spec:
                raise _fail(shard_where, f"has no tensors for key {key!r}.", _REWRITE)
            tensors[key] = _parse_blocks(tensors_spec[key], n, shard_where, f"tensors.{key}")
        masks_spec = _field(spec, "masks", dict, where, f"{label}.masks") if "masks" in spec or self._time_steps else {}
        masks: dict[str, list[Block]] = {}
        for layer in self._time_steps:
            if layer not in masks_spec:
                raise _fail(shard_where, f"has no mask for layer {layer!r}.", _REWRITE)
            masks[layer] = _parse_blocks(masks_spec[layer], n, shard_where, f"masks.{layer}")
        offsets = spec.get("offsets") or {}
        if not isinstance(offsets, dict) or not all(isinstance(v, str) for v in offsets.values()):
            raise _fail(
                shard_where,
                f"field 'offsets' is not an object of layer -> tensor name. Received: {offsets!r}.",
                _REWRITE,
            )
        for key, info in self._keys.items():
            if info.packed and info.mask not in offsets:
                raise _fail(
                    shard_where,
                    f"key {key!r} is packed but the shard has no offsets for its layer {info.mask!r}.",
                    _REWRITE,
                )

        path = self.path / file
        if not path.exists():
            raise _fail(path, f"shard file is missing (the index lists it for samples [{start}, {stop})).", _INCOMPLETE)
        if not path.is_file():
            raise _fail(path, "not a regular file. Expected a shard written by tlp.extract.", _REWRITE)
        entries, metadata, size = _read_header(path)
        expected_bytes = spec.get("bytes")
        if _is_int(expected_bytes) and expected_bytes != size:
            raise _fail(
                path,
                f"is {size} bytes but the index says {expected_bytes}: the file was truncated or replaced.",
                _REWRITE,
            )
        meta_format = metadata.get("format")
        if meta_format is not None and meta_format != SHARD_FORMAT:
            raise _fail(path, f"its metadata 'format' is {meta_format!r}. Expected: {SHARD_FORMAT!r}.", _REWRITE)
        for field, value in (("start", start), ("stop", stop)):
            if field in metadata and metadata[field] != str(value):
                raise _fail(
                    path,
                    f"its metadata says {field} {metadata[field]!r} but the index says {value}: the shard belongs to another run.",
                    _REWRITE,
                )
        shard = _Shard(file, path, start, stop, size, entries, tensors, masks, dict(offsets))

        for key, blocks in tensors.items():
            info = self._keys[key]
            code = _DTYPES[info.dtype][1]
            for name, a, b in blocks:
                expected = (None, *info.sample_shape[1:]) if info.packed else (b - a, *info.sample_shape)
                self._check_tensor(shard, name, code, expected, f"key {key!r}, samples [{a}, {b})")
        for layer, blocks in masks.items():
            for name, a, b in blocks:
                self._check_tensor(shard, name, "BOOL", (b - a, self._time_steps[layer]), f"mask of layer {layer!r}")
        for layer, name in shard.offsets.items():
            self._check_tensor(shard, name, "I64", (n + 1,), f"offsets of layer {layer!r}")
        return shard

    @staticmethod
    def _check_tensor(shard: _Shard, name: str, code: str, expected: tuple[int | None, ...], what: str) -> None:
        entry = shard.entries.get(name)
        if entry is None:
            raise _fail(shard.path, f"has no tensor {name!r} ({what}), which the index names.", _REWRITE)
        if entry.code != code or not _fits(entry.shape, expected):
            raise _fail(
                shard.path,
                f"tensor {name!r} ({what}) does not match the index. Received: {entry.code} {_show(entry.shape)}. Expected: {code} {_show(expected)}.",
                _REWRITE,
            )

    # ---- reading -------------------------------------------------------------------------------------------------

    def _map(self, shard: int, copy_on_write: bool = False) -> np.ndarray:
        """The whole shard file as bytes: cached read-only, or a fresh private copy-on-write map."""
        if not copy_on_write and shard in self._maps:
            return self._maps[shard]
        info = self._shards[shard]
        size = info.path.stat().st_size if info.path.exists() else -1
        if size != info.size:
            raise _fail(
                info.path,
                f"changed since the folder was opened ({info.size} bytes then, {size} now).",
                "Open the folder again.",
            )
        mapped = np.memmap(info.path, dtype=np.uint8, mode="c" if copy_on_write else "r")
        if not copy_on_write:
            self._maps[shard] = mapped
        return mapped

    def _array(self, shard: int, name: str, copy_on_write: bool = False) -> np.ndarray:
        """A tensor of a shard as a NumPy view into its map (bfloat16 as int16 bits)."""
        if not copy_on_write and (shard, name) in self._views:
            return self._views[(shard, name)]
        entry = self._shards[shard].entries[name]
        dtype = next(np_dtype for _, code, np_dtype in _DTYPES.values() if code == entry.code)
        view = self._map(shard, copy_on_write)[entry.begin : entry.end].view(dtype).reshape(entry.shape)
        if not copy_on_write:
            self._views[(shard, name)] = view
        return view

    def _packed_offsets(self, shard: int, layer: str) -> np.ndarray:
        """The checked (n + 1,) int64 offsets of ``layer``'s packed keys in ``shard``."""
        cached = self._offsets.get((shard, layer))
        if cached is not None:
            return cached
        info = self._shards[shard]
        name = info.offsets[layer]
        offsets = np.array(self._array(shard, name))  # (n + 1,) int64
        steps = np.diff(offsets)
        limit = self._time_steps.get(layer)
        if offsets[0] != 0 or (steps < 0).any() or limit is not None and (steps > limit).any():
            raise _fail(
                info.path,
                f"offsets {name!r} of layer {layer!r} are not 0 followed by valid step counts (0..{limit}) summed up.",
                _REWRITE,
            )
        for key in self._key_order:
            key_info = self._keys[key]
            if not key_info.packed or key_info.mask != layer:
                continue
            for block, a, b in info.tensors[key]:
                rows = self._shards[shard].entries[block].shape[0]
                if rows != offsets[b] - offsets[a]:
                    raise _fail(
                        info.path,
                        f"tensor {block!r} of packed key {key!r} has {rows} steps but offsets {name!r} give {offsets[b] - offsets[a]} for samples [{a}, {b}).",
                        _REWRITE,
                    )
        self._offsets[(shard, layer)] = offsets
        return offsets

    def _locate(self, i: int) -> tuple[int, int]:
        """Shard number and index within that shard of global sample ``i`` (in range)."""
        shard = bisect_right(self._starts, i) - 1
        return shard, i - self._starts[shard]

    # ---- public --------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._num_samples

    def keys(self) -> list[str]:
        """The probe keys, in probe (graph) order."""
        return list(self._key_order)

    def __iter__(self) -> Iterator[str]:
        return iter(self._key_order)

    def __contains__(self, key: object) -> bool:
        return key in self._columns

    def __getitem__(self, key: str) -> Column:
        column = self._columns.get(key) if isinstance(key, str) else None
        if column is None:
            shown = ", ".join(repr(k) for k in self._key_order[:_SHOWN_KEYS])
            more = f", ... ({len(self._key_order)} keys)" if len(self._key_order) > _SHOWN_KEYS else ""
            hint = " Index a column, not the folder: acts[key][i]." if not isinstance(key, str) else ""
            raise ProbeKeyError(
                f"{self.path}: no key {key!r} in these activations. Expected one of: {shown}{more}.{hint}"
            )
        return column

    @property
    def run(self) -> dict[str, Any]:
        """What the run was asked: the model, the request and the data (``index["run"]``)."""
        return self.index.get("run") or {}

    @property
    def masks(self) -> dict[str, MaskColumn]:
        """The applied mask of each masked recurrent layer, by layer path (empty without masks)."""
        return dict(self._masks)

    @property
    def lengths(self) -> np.ndarray | None:
        """(num_samples,) int64 valid steps of each sample under the first masked layer; None without masks.

        The first masked layer is the first one a key names as its mask, in key order. Computed once, on
        first use, from the stored masks, a bounded number of rows at a time.
        """
        if not self._masks:
            return None
        if self._lengths is None:
            named = [self._keys[k].mask for k in self._key_order]
            layer = next((m for m in named if m in self._masks), next(iter(self._masks)))
            lengths = np.zeros(self._num_samples, dtype=np.int64)  # (num_samples,)
            for number, shard in enumerate(self._shards):
                for name, a, b in shard.masks[layer]:
                    mask = self._array(number, name)  # (b - a, time) bool
                    for row in range(0, b - a, _LENGTH_ROWS):
                        chunk = np.asarray(mask[row : row + _LENGTH_ROWS])  # (rows, time)
                        first = shard.start + a + row
                        lengths[first : first + len(chunk)] = chunk.sum(axis=1, dtype=np.int64)
            self._lengths = lengths
        return self._lengths

    @property
    def stats(self) -> Any:
        """The gate statistics computed with ``tlp.extract(..., stats=True)`` (a ``GateStats``), else None."""
        name = self.index.get("stats")
        if not name:
            return None
        from ..analysis.stats import GateStats  # lazy: the analysis package builds on this one

        return GateStats.load(self.path / "stats.json")

    def __repr__(self) -> str:
        return f"Activations({self._num_samples} samples, {len(self._key_order)} keys, folder={str(self.path)!r})"

    def __getstate__(self) -> dict[str, Any]:  # maps are reopened where unpickled, never copied
        state = dict(self.__dict__)
        state.update(_maps={}, _views={}, _offsets={})
        return state


class Column:
    """The values of one probe key over every sample, read lazily from the shards.

    ``len(col)`` is the number of samples. ``col[i]`` is sample ``i`` (negative ``i`` counts from the
    end) as a Tensor of the stored dtype, copied out of the file (a sample is small). ``col[a:b]`` stacks
    samples into one Tensor when every sample has the same shape, and gives a list of Tensors when an axis
    varies between blocks (``sample_shape`` holds None) or the column is packed. A packed column's sample is
    its valid steps only: ``(valid_steps, *rest)``.

    Attributes:
        key: the probe key.
        dtype: the stored torch dtype.
        sample_shape: the shape of one sample; None for an axis that varies between blocks.
        packed: whether only valid (unmasked) steps are stored.
        mask: the layer whose applied mask goes with this key, or None.
        info: the key's entry in ``index.json`` (meaning, batch_axis, flip, ...).
    """

    def __init__(self, acts: Activations, key: str) -> None:
        self._acts = acts
        self.key = key
        spec = acts._keys[key]
        self.dtype: torch.dtype = _DTYPES[spec.dtype][0]
        self.sample_shape: tuple[int | None, ...] = spec.sample_shape
        self.packed: bool = spec.packed
        self.mask: str | None = spec.mask
        self.info: dict[str, Any] = dict(acts.index["keys"][key])
        self._np_dtype = _DTYPES[spec.dtype][2]
        self._blocks = [shard.tensors[key] for shard in acts._shards]
        self._block_starts = [[a for _, a, _ in blocks] for blocks in self._blocks]

    # ---- reading -------------------------------------------------------------------------------------------------

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        """A torch tensor over ``array``, which must be writable (a copy or a copy-on-write map)."""
        tensor = torch.from_numpy(array)
        return tensor.view(torch.bfloat16) if self.dtype == torch.bfloat16 else tensor

    def _rows(self, shard: int, block: Block, lo: int, hi: int, copy_on_write: bool = False) -> np.ndarray:
        """View of samples [lo, hi) (shard-relative) of one block; for a packed key, their valid steps."""
        name, a, _ = block
        array = self._acts._array(shard, name, copy_on_write)
        if self.packed:
            offsets = self._acts._packed_offsets(shard, str(self.mask))  # (n + 1,)
            base = offsets[a]
            return array[offsets[lo] - base : offsets[hi] - base]
        return array[lo - a : hi - a]

    def _pieces(self, start: int, stop: int) -> Iterator[tuple[int, Block, int, int]]:
        """(shard, block, lo, hi) for every block holding samples of [start, stop), in order."""
        if start >= stop:
            return
        first, _ = self._acts._locate(start)
        for shard in range(first, len(self._blocks)):
            offset = self._acts._starts[shard]
            if offset >= stop:
                break
            lo, hi = max(start - offset, 0), stop - offset
            starts = self._block_starts[shard]
            for k in range(max(bisect_right(starts, lo) - 1, 0), len(starts)):
                block = self._blocks[shard][k]
                if block[1] >= hi:
                    break
                yield shard, block, max(lo, block[1]), min(hi, block[2])

    def _sample(self, i: int) -> torch.Tensor:
        shard, j = self._acts._locate(i)
        k = bisect_right(self._block_starts[shard], j) - 1
        rows = self._rows(shard, self._blocks[shard][k], j, j + 1)  # (1, *sample) or (steps, *rest) packed
        return self._tensor(np.array(rows if self.packed else rows[0]))

    @property
    def _fixed(self) -> bool:
        return not self.packed and None not in self.sample_shape

    def _empty(self) -> np.ndarray:
        return np.empty((0, *(d or 0 for d in self.sample_shape[self.packed :])), dtype=self._np_dtype)

    def _whole(self, copy_on_write: bool) -> np.ndarray:
        pieces = list(self._pieces(0, len(self)))
        if not pieces:
            return self._empty()
        if len(pieces) == 1:
            shard, block, _, _ = pieces[0]
            return self._acts._array(shard, block[0], copy_on_write)
        arrays = [self._rows(shard, block, lo, hi) for shard, block, lo, hi in pieces]
        shapes = {a.shape[1:] for a in arrays}
        if len(shapes) > 1:
            raise InputError(
                f"{self._acts.path}: key {self.key!r} cannot be one array: its samples differ in shape "
                f"({', '.join(_show(s) for s in sorted(shapes))} after the first axis). "
                f"Read samples with col[i], or col[a:b] for a list."
            )
        return np.concatenate(arrays)

    # ---- public --------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._acts)

    def _normalize(self, index: object) -> int:
        if isinstance(index, bool):
            raise InputError(f"{self._acts.path}: key {self.key!r} is indexed by sample number. Received: {index!r}.")
        try:
            i = operator.index(index)  # type: ignore[arg-type]
        except TypeError:
            raise InputError(
                f"{self._acts.path}: key {self.key!r} is indexed by a sample number or a slice. "
                f"Received: {type(index).__name__} {index!r}."
            ) from None
        n = len(self)
        if not -n <= i < n:
            raise IndexError(
                f"{self._acts.path}: sample {i} of key {self.key!r} is out of range: there are {n} samples (0..{n - 1}, or -{n}..-1)."
            )
        return i + n if i < 0 else i

    def __getitem__(self, index: int | slice) -> torch.Tensor | list[torch.Tensor]:
        """Sample ``index`` as a Tensor, or the samples of a slice (a Tensor, or a list when shapes vary)."""
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                samples = [self._sample(i) for i in range(start, stop, step)]
                if not self._fixed:
                    return samples
                return torch.stack(samples) if samples else self._tensor(self._empty())
            if not self._fixed:
                return [self._sample(i) for i in range(start, stop)]
            arrays = [self._rows(shard, block, lo, hi) for shard, block, lo, hi in self._pieces(start, stop)]
            if not arrays:
                return self._tensor(self._empty())
            return self._tensor(np.concatenate(arrays) if len(arrays) > 1 else np.array(arrays[0]))
        return self._sample(self._normalize(index))

    def __iter__(self) -> Iterator[torch.Tensor]:
        for i in range(len(self)):
            yield self._sample(i)

    def numpy(self) -> np.ndarray:
        """The whole column as one array: ``(num_samples, *sample_shape)``; packed: ``(total_valid_steps, *rest)``.

        When one block of one shard holds the whole column, this is a read-only memory-mapped view of the
        file: nothing is read until used. Otherwise the blocks are read and concatenated into a new array
        (in memory). A packed column's samples are concatenated along the first axis; :meth:`offsets`
        gives where each starts.

        Raises:
            InputError: the column is bfloat16 (NumPy has no such dtype; use :meth:`torch`), or its samples
                differ in shape between blocks.
        """
        if self.dtype == torch.bfloat16:
            raise InputError(
                f"{self._acts.path}: key {self.key!r} is stored as bfloat16, which NumPy has no dtype for. "
                "Use col.torch(), or col.torch().float().numpy()."
            )
        return self._whole(copy_on_write=False)

    def torch(self) -> torch.Tensor:
        """The whole column as one Tensor, shaped as :meth:`numpy` says.

        When one block of one shard holds the whole column, the tensor maps the file privately
        (copy-on-write): nothing is read until used, and writing to the tensor changes only this process's
        copy, never the file. Otherwise the blocks are read and concatenated into a new tensor (in memory).

        Raises:
            InputError: the samples differ in shape between blocks.
        """
        return self._tensor(self._whole(copy_on_write=True))

    def offsets(self) -> np.ndarray:
        """Packed columns: (num_samples + 1,) int64 start of each sample in :meth:`numpy`'s first axis."""
        if not self.packed:
            raise InputError(f"{self._acts.path}: key {self.key!r} is not packed, so it has no offsets.")
        out = np.zeros(len(self) + 1, dtype=np.int64)  # (num_samples + 1,)
        for number, shard in enumerate(self._acts._shards):
            local = self._acts._packed_offsets(number, str(self.mask))  # (n + 1,)
            out[shard.start + 1 : shard.stop + 1] = out[shard.start] + local[1:]
        return out

    def __repr__(self) -> str:
        kind = ", packed" if self.packed else ""
        return f"{type(self).__name__}({self.key!r}, {len(self)} samples, {_show(self.sample_shape)} {str(self.dtype)[6:]}{kind})"


class MaskColumn(Column):
    """The applied mask of one recurrent layer over every sample: ``mask[i]`` is a bool Tensor ``(time,)``,
    True at valid steps, in input time order. Reads like a :class:`Column`."""

    def __init__(self, acts: Activations, layer: str) -> None:
        self._acts = acts
        self.key = layer
        self.dtype = torch.bool
        self.sample_shape = (acts._time_steps[layer],)
        self.packed = False
        self.mask = layer
        self.info = dict(acts.index["masks"][layer])
        self._np_dtype = np.dtype(np.bool_)
        self._blocks = [shard.masks[layer] for shard in acts._shards]
        self._block_starts = [[a for _, a, _ in blocks] for blocks in self._blocks]
