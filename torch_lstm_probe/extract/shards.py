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
from typing import Any, Mapping

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
        # Lay out: widest element first, so every tensor starts aligned to its element size.
        layout: list[tuple[str, torch.dtype, list[int], Any]] = []
        for blocks in self._blocks.values():
            for b in blocks:
                layout.append((b.name, b.dtype, [b.rows, *b.rest], b))
        for name, tensor in offset_tensors.items():
            layout.append((name, torch.int64, list(tensor.shape), tensor))
        layout.sort(key=lambda item: (-_itemsize(item[1]), _name_order(item[0])))
        header: dict[str, Any] = {}
        position = 0
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
