"""Shard files: one safetensors file per run of batches, built on disk with bounded memory, written atomically.

Batches arrive one at a time. Each tensor's bytes go straight to a spool file beside the shard,
so memory holds no more than the batch in hand; ``finish`` lays the pieces out as a safetensors
file (header, then every block contiguous, widest dtypes first so every tensor is aligned),
copies them in the kernel (``os.copy_file_range``) and renames the result into place after an
fsync. A file named ``shard-NNNNN.safetensors`` is therefore always complete.

Tensor names inside a shard are opaque (``t0``, ``m0``, ``o0``); the shard's index entry (kept
in its ``__metadata__`` as well as in ``index.json``) maps probe keys to them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

__all__ = ["SAFETENSORS_DTYPES", "ShardBuilder", "shard_name", "write_json_atomic", "fsync_dir"]

SHARD_FORMAT = "torch_lstm_probe.activations.shard"

SAFETENSORS_DTYPES: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def shard_name(number: int) -> str:
    return f"shard-{number:05d}.safetensors"


def fsync_dir(folder: Path) -> None:
    """Makes a rename inside ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Writes byte-stable JSON (sorted keys, no timestamps) through a temporary file, fsync and rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(obj, indent=1, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


@dataclass
class _Piece:
    offset: int  # in the spool
    nbytes: int


@dataclass
class _Block:
    name: str
    dtype: torch.dtype
    rest: tuple[int, ...]  # shape after the first axis
    start: int  # sample range, relative to the shard
    stop: int
    rows: int = 0  # first-axis length (samples, or packed steps)
    pieces: list[_Piece] = field(default_factory=list)
    region: int | None = None  # position in the data section when written in place (preallocated)
    filled: int = 0  # samples written into the region so far


class ShardBuilder:
    """Builds shard number ``number`` covering samples from ``start`` (global index) on.

    Call :meth:`add` once per batch, in order, then :meth:`finish`.
    """

    def __init__(self, folder: Path, number: int, start: int) -> None:
        self.folder = folder
        self.number = number
        self.start = start
        self.size = 0  # samples so far
        self._spool_path = folder / f".{shard_name(number)}.spool"
        self._spool = open(self._spool_path, "w+b")  # noqa: SIM115 (closed in finish/abort)
        self._written = 0
        self._blocks: dict[str, list[_Block]] = {}  # tensor group -> blocks, group = "t:<key>" / "m:<mask>"
        self._names = 0
        self._offsets: dict[str, list[int]] = {}  # mask -> cumulative valid steps (packed)
        self._regions: dict[str, _Block] = {}  # group -> its block, written in place in the shard file
        self._region_offsets: dict[str, int] = {}  # mask -> position of its offsets tensor in the data section
        self._data = 0  # where the data section starts in the shard file (regions only)
        self._out: Any = None  # the shard's temporary file, open from the start (regions only)

    def preallocate(
        self,
        size: int,
        keys: Mapping[str, tuple[tuple[int, ...], torch.dtype]],
        offset_masks: Sequence[str],
        reserve: int,
    ) -> None:
        """Lays out the shard before its first batch: each key in ``keys`` (per-sample shape, dtype) gets a
        region of ``size`` samples in the shard file, written in place as batches come (no second copy), with
        its writeback started at once so the final fsync finds little left to do. Other groups (packed keys,
        masks) still go through the spool. ``reserve`` bytes are kept for the header.

        The caller makes sure every region's element is at least as wide as any spooled tensor's (other
        than bool), so every tensor stays aligned.
        """
        self._data = 8 + reserve + (-(8 + reserve) % 8)
        position = 0
        items: list[tuple[str, tuple[int, ...], torch.dtype]] = [
            (f"o:{name}", (), torch.int64) for name in sorted(offset_masks)
        ]
        items += [(f"t:{key}", rest, dtype) for key, (rest, dtype) in keys.items()]
        items.sort(key=lambda item: -_itemsize(item[2]))  # stable: offsets first among the 8-byte ones
        for group, rest, dtype in items:
            rows = size + 1 if group.startswith("o:") else size
            if group.startswith("o:"):
                self._region_offsets[group[2:]] = position
            else:
                block = _Block(f"t{self._names}", dtype, rest, 0, size)
                self._names += 1
                block.region = position
                block.rows = size
                self._regions[group] = block
                self._blocks[group] = [block]
            position += rows * _numel(list(rest)) * _itemsize(dtype)
        self._region_bytes = position
        tmp = self.folder / f".{shard_name(self.number)}.tmp"
        self._out = open(tmp, "w+b", buffering=0)  # noqa: SIM115 (closed in finish/abort)
        self._out.truncate(self._data + position)

    # ------------------------------------------------------------------ adding
    def add(
        self,
        size: int,
        values: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor],
        steps: Mapping[str, torch.Tensor],
    ) -> None:
        """Appends one batch of ``size`` samples.

        Args:
            size: samples in the batch.
            values: probe key -> CPU tensor, sample-first (packed keys: valid steps of the batch's
                samples, concatenated along the first axis).
            masks: mask name -> CPU bool ``(size, T)``.
            steps: mask name -> CPU int64 ``(size,)`` valid steps per sample (for packed keys).
        """
        for key, value in values.items():
            self._append(f"t:{key}", value, size)
        for name, mask in masks.items():
            self._append(f"m:{name}", mask, size)
        for name, count in steps.items():
            cumulative = self._offsets.setdefault(name, [0])
            total = cumulative[-1]
            for n in count.tolist():
                total += int(n)
                cumulative.append(total)
        self.size += size

    def _append(self, group: str, value: torch.Tensor, size: int) -> None:
        value = value.contiguous()
        rest = tuple(value.shape[1:])
        region = self._regions.get(group)
        if region is not None:
            if rest != region.rest or value.dtype != region.dtype or region.filled + value.shape[0] > region.rows:
                raise ValueError(
                    f"shard {self.number}: {group[2:]!r} got {tuple(value.shape)} {value.dtype} after "
                    f"{region.filled} of {region.rows} samples of {region.rest} {region.dtype}"
                )
            row = _numel(list(rest)) * value.element_size()
            where = self._data + region.region + region.filled * row  # type: ignore[operator]
            _pwrite_all(self._out, value.reshape(-1).view(torch.uint8).numpy(), where)
            _start_writeback(self._out, where, value.shape[0] * row)
            region.filled += value.shape[0]
            return
        blocks = self._blocks.setdefault(group, [])
        last = blocks[-1] if blocks else None
        if last is None or last.rest != rest or last.dtype != value.dtype:
            prefix = "m" if group.startswith("m:") else "t"
            last = _Block(f"{prefix}{self._names}", value.dtype, rest, self.size, self.size)
            self._names += 1
            blocks.append(last)
        data = value.reshape(-1).view(torch.uint8).numpy() if value.numel() else b""
        nbytes = value.numel() * value.element_size()
        if nbytes:
            self._spool.write(memoryview(data))  # type: ignore[arg-type]
        last.pieces.append(_Piece(self._written, nbytes))
        self._written += nbytes
        last.rows += value.shape[0]
        last.stop = self.size + size

    # ------------------------------------------------------------------ finishing
    def entry(self) -> dict[str, Any]:
        """This shard's index entry (file, sample range, tensors per key, masks, offsets)."""
        tensors = {
            group[2:]: [[b.name, b.start, b.stop] for b in blocks]
            for group, blocks in self._blocks.items()
            if group.startswith("t:")
        }
        masks = {
            group[2:]: [[b.name, b.start, b.stop] for b in blocks]
            for group, blocks in self._blocks.items()
            if group.startswith("m:")
        }
        offsets = {name: f"o{k}" for k, name in enumerate(sorted(self._offsets))}
        return {
            "file": shard_name(self.number),
            "start": self.start,
            "stop": self.start + self.size,
            "tensors": tensors,
            "masks": masks,
            "offsets": offsets,
        }

    def finish(self, data_sha256: str) -> dict[str, Any]:
        """Writes the shard file atomically and returns its index entry (with its size in bytes)."""
        entry = self.entry()
        offset_tensors = {
            entry["offsets"][name]: torch.tensor(values, dtype=torch.int64) for name, values in self._offsets.items()
        }
        if self._out is not None:
            return self._finish_in_place(entry, offset_tensors, data_sha256)
        # Lay out: widest element first, so every tensor starts aligned to its element size.
        layout: list[tuple[str, torch.dtype, list[int], Any]] = []
        for blocks in self._blocks.values():
            for b in blocks:
                layout.append((b.name, b.dtype, [b.rows, *b.rest], b))
        for name, tensor in offset_tensors.items():
            layout.append((name, torch.int64, list(tensor.shape), tensor))
        layout.sort(key=lambda item: (-_itemsize(item[1]), _name_order(item[0])))
        header = self._header(layout, 0, entry, data_sha256)
        text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
        text += b" " * (-(8 + len(text)) % 8)  # data starts 8-byte aligned
        final = self.folder / shard_name(self.number)
        tmp = self.folder / f".{final.name}.tmp"
        self._spool.flush()
        with open(tmp, "wb", buffering=0) as out:  # unbuffered: kernel copies go to the same position
            _write_all(out, len(text).to_bytes(8, "little") + text)
            for _, _, _, source in layout:
                if isinstance(source, torch.Tensor):
                    _write_all(out, source.view(torch.uint8).numpy().tobytes())
                    continue
                for piece in source.pieces:
                    _copy(self._spool, out, piece.offset, piece.nbytes)
            out.flush()
            os.fsync(out.fileno())
        return self._publish(tmp, entry, data_sha256)

    def _header(
        self, layout: list[tuple[str, torch.dtype, list[int], Any]], position: int, entry: dict, data_sha256: str
    ) -> dict[str, Any]:
        """The safetensors header of ``layout`` laid out from ``position`` on (regions already placed)."""
        header: dict[str, Any] = {}
        for block in self._regions.values():
            nbytes = block.rows * _numel(list(block.rest)) * _itemsize(block.dtype)
            header[block.name] = {
                "dtype": SAFETENSORS_DTYPES[block.dtype],
                "shape": [block.rows, *block.rest],
                "data_offsets": [block.region, block.region + nbytes],  # type: ignore[operator]
            }
        for name, at in self._region_offsets.items():
            nbytes = (self.size + 1) * 8
            header[entry["offsets"][name]] = {
                "dtype": "I64",
                "shape": [self.size + 1],
                "data_offsets": [at, at + nbytes],
            }
        for name, dtype, shape, _ in layout:
            nbytes = _numel(shape) * _itemsize(dtype)
            header[name] = {
                "dtype": SAFETENSORS_DTYPES[dtype],
                "shape": shape,
                "data_offsets": [position, position + nbytes],
            }
            position += nbytes
        header["__metadata__"] = {
            "format": SHARD_FORMAT,
            "version": "1",
            "start": str(entry["start"]),
            "stop": str(entry["stop"]),
            "data_sha256": data_sha256,
            "entry": json.dumps(entry, sort_keys=True),
        }
        return header

    def _finish_in_place(self, entry: dict, offset_tensors: dict[str, torch.Tensor], data_sha256: str) -> dict:
        """Regions are in the file already: append the spooled groups, write the offsets and the header."""
        for group, block in self._regions.items():
            if block.filled != block.rows:
                raise ValueError(f"shard {self.number}: {group[2:]!r} has {block.filled} of {block.rows} samples")
        for name, at in self._region_offsets.items():
            values = offset_tensors[entry["offsets"][name]]
            _pwrite_all(self._out, values.view(torch.uint8).numpy(), self._data + at)
        layout = [
            (b.name, b.dtype, [b.rows, *b.rest], b)
            for group, blocks in self._blocks.items()
            for b in blocks
            if group not in self._regions
        ]
        layout.sort(key=lambda item: (-_itemsize(item[1]), _name_order(item[0])))
        header = self._header(layout, self._region_bytes, entry, data_sha256)
        text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
        self._spool.flush()
        self._out.seek(self._data + self._region_bytes)
        for _, _, _, block in layout:
            for piece in block.pieces:
                _copy(self._spool, self._out, piece.offset, piece.nbytes)
        tmp = Path(self._out.name)
        if 8 + len(text) <= self._data:
            text += b" " * (self._data - 8 - len(text))  # the reserved header space, padded as the format allows
            _pwrite_all(self._out, len(text).to_bytes(8, "little") + text, 0)
            self._out.flush()
            os.fsync(self._out.fileno())
            self._out.close()
        else:  # more blocks than reserved for: write the file again with a header that fits
            text += b" " * (-(8 + len(text)) % 8)
            data_bytes = os.fstat(self._out.fileno()).st_size - self._data
            again = tmp.with_name(tmp.name + "2")
            with open(again, "wb", buffering=0) as out:
                _write_all(out, len(text).to_bytes(8, "little") + text)
                _copy(self._out, out, self._data, data_bytes)
                os.fsync(out.fileno())
            self._out.close()
            os.replace(again, tmp)
        return self._publish(tmp, entry, data_sha256)

    def _publish(self, tmp: Path, entry: dict, data_sha256: str) -> dict[str, Any]:
        final = self.folder / shard_name(self.number)
        os.replace(tmp, final)
        fsync_dir(self.folder)
        self.abort()
        entry["bytes"] = final.stat().st_size
        entry["data_sha256"] = data_sha256
        return entry

    def abort(self) -> None:
        """Drops the spool (on finish, or when the run stops early)."""
        if not self._spool.closed:
            self._spool.close()
        self._spool_path.unlink(missing_ok=True)
        if self._out is not None and not self._out.closed:
            self._out.close()
            Path(self._out.name).unlink(missing_ok=True)


def _pwrite_all(fh: Any, data: Any, position: int) -> None:
    view = memoryview(data).cast("B")
    while view:
        n = os.pwrite(fh.fileno(), view, position)
        view, position = view[n:], position + n


def _start_writeback(fh: Any, position: int, nbytes: int) -> None:
    """Asks the kernel to start writing a range back now (Linux starts writeback of dirty pages on
    ``POSIX_FADV_DONTNEED``), so the shard's final fsync has little left to wait for."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None and nbytes:
        try:
            advise(fh.fileno(), position, nbytes, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass


def _write_all(fh: Any, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[fh.write(view) :]


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _name_order(name: str) -> tuple[str, int]:
    return name[0], int(name[1:])


def _copy(src: Any, dst: Any, offset: int, nbytes: int) -> None:
    """Copies ``nbytes`` of ``src`` from ``offset`` to the current end of ``dst``, in the kernel when it can."""
    done = 0
    copy_range = getattr(os, "copy_file_range", None)
    while done < nbytes:
        if copy_range is not None:
            try:
                n = copy_range(src.fileno(), dst.fileno(), nbytes - done, offset + done)
            except OSError:
                copy_range = None
                continue
            if n == 0:
                copy_range = None
                continue
        else:
            src.seek(offset + done)
            chunk = src.read(min(nbytes - done, 1 << 24))
            if not chunk:
                raise OSError(f"spool file ended early at byte {offset + done}")
            _write_all(dst, chunk)
            n = len(chunk)
        done += n
