"""``extract``: a whole dataset's layer outputs and gates, streamed to sharded safetensors, resumable.

One pass over the data in batches. Each batch runs the capture plan (the same one ``probe``
uses) on the model's device; its values are cast to the storage dtype there, copied to the
host (into pinned memory on CUDA, without waiting) and handed to a writer thread, which appends
them to the shard being built while the next batch computes. At most a few batches are in
flight, so host memory stays bounded whatever the dataset size.

Shards cover fixed runs of batches, chosen from the first batch's size, so the layout is a
function of the arguments and the data alone: a re-run skips the shards already on disk (after
checking that their input data hash still matches) and writes byte-identical files. Under
``torchrun`` each rank takes every ``world``-th shard and rank 0 writes the index once all have
finished.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import queue
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..capture.keys import key_meaning, split_key
from ..capture.plan import CapturePlan, plan_capture, run_plan
from ..errors import InputError
from ..model import KerasModel
from . import distributed as dist
from .shards import ShardBuilder, fsync_dir, shard_name, write_json_atomic
from .sources import Batch, Source, as_source, hash_inputs, positive_int, text_input_names, to_device

__all__ = ["extract", "DEFAULT_SHARD_BYTES", "Layout", "layout_of", "ExtractionMismatchError"]

FORMAT = "torch_lstm_probe.activations"
VERSION = 1
DEFAULT_SHARD_BYTES = 64 * 2**20  # small enough that the last shard's fsync (which nothing overlaps) is short
_QUEUE_BATCHES = 1  # batches waiting for the writer (plus one being written, one computing)
_OWN_FILE = re.compile(
    r"^(index\.json|manifest\.json|stats\.json|(shard|stats)-[0-9]{5,}\.(safetensors|json)|\..*\.(tmp|spool))$"
)
_STORAGE_DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}


class ExtractionMismatchError(InputError):
    """An output folder holds (part of) another extraction: other model, data or arguments."""


# ---------------------------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class KeyLayout:
    key: str
    batch_axis: int  # of the probe tensor
    sample_shape: tuple[int, ...]  # one sample, as stored (packed: first axis counts valid steps)
    dtype: torch.dtype  # stored
    mask: str | None  # mask name (layer path[@n]) that goes with a gate key
    flip: bool  # processing order reversed against the mask
    packed: bool
    cell: str | None  # LSTM / GRU / SimpleRNN for gate keys
    activation: str | None  # the layer's activation (gate keys)


@dataclass(frozen=True)
class Layout:
    """What one batch produces: every key's layout, and the masks stored beside them."""

    keys: tuple[KeyLayout, ...]
    masks: tuple[str, ...]  # mask names (stored as bool (n, T))
    mask_keys: dict[str, str]  # mask name -> probe key of the mask hook ("lstm/mask", "lstm@1/mask")
    sample_bytes: int  # stored bytes per sample (first batch; packed keys counted padded)
    time_steps: dict[str, int]  # mask name -> its time axis in the first batch


def _cell_of(module: Any, sub: str) -> tuple[str | None, bool, str | None]:
    """(cell kind, go_backwards, activation) of the recurrent layer (or Bidirectional half) of a gate key."""
    if sub.startswith("/forward/"):
        module = getattr(module, "forward_layer", module)
    elif sub.startswith("/backward/"):
        module = getattr(module, "backward_layer", module)
    config = getattr(module, "config", None)
    kinds = {"LSTM": "LSTM", "GRU": "GRU", "SimpleRNN": "SimpleRNN"}
    kind = next((v for k, v in kinds.items() if k in type(module).__name__), None)
    activation = getattr(config, "activation", None)
    return kind, bool(getattr(config, "go_backwards", False)), activation if isinstance(activation, str) else None


def layout_of(
    model: KerasModel,
    plan: CapturePlan,
    inputs: Sequence[Any],
    dtype: torch.dtype | None,
    packed: bool,
    gates: bool,
) -> Layout:
    """Finds each key's batch axis and sample shape by running one sample, then that sample twice.

    Mask hooks are always on (masks are stored beside the values); their keys are probe keys
    only with ``gates=True``, as in ``probe``.
    """
    try:
        one = run_plan(model, plan, [x[:1] for x in inputs])
        two = run_plan(model, plan, [_first_twice(x) for x in inputs])
    except InputError:
        # A model that fixes its batch size: the batch is the first axis, as Keras sees it.
        full = run_plan(model, plan, list(inputs))
        n = inputs[0].shape[0]
        one = {k: v[:1] if v.dim() and v.shape[0] == n else v for k, v in full.items()}
        two = {k: v[:2] if v.dim() and v.shape[0] == n and n >= 2 else v for k, v in full.items()}
    layers = {t.path: t.module for t in plan.targets if not t.sub}
    mask_keys = {k[: -len("/mask")]: k for k in one if k.endswith("/mask")}
    keys: list[KeyLayout] = []
    sample_bytes = 0
    for key, value in one.items():
        if key.endswith("/mask") and not gates:
            continue
        other = two.get(key)
        if other is None or other.dim() != value.dim():
            raise InputError(f"Probe key {key!r} changes shape with the batch size; it cannot be stored per sample.")
        axes = [a for a in range(value.dim()) if value.shape[a] == 1 and other.shape[a] == 2]
        if not axes:
            raise InputError(
                f"Probe key {key!r} (shape {tuple(value.shape)}) has no batch axis: it mixes samples, so no "
                "per-sample value exists. Fix: leave it out with layers=[...]."
            )
        axis = axes[0]
        sample_shape = tuple(d for a, d in enumerate(value.shape) if a != axis)
        stored = dtype if (dtype is not None and value.is_floating_point()) else value.dtype
        path, sub = split_key(key)
        mask = None
        flip = False
        cell = activation = None
        if "/gates/" in sub:
            base = path  # "lstm" or "lstm@1"
            mask = base if base in mask_keys else None
            owner = layers.get(base) or layers.get(base.rsplit("@", 1)[0])  # "lstm@1" is a call of "lstm"
            cell, flip, activation = _cell_of(owner, sub)
        is_packed = packed and mask is not None and len(sample_shape) >= 1
        keys.append(KeyLayout(key, axis, sample_shape, stored, mask, flip, is_packed, cell, activation))
        sample_bytes += _numel(sample_shape) * torch.empty((), dtype=stored).element_size()
    masks = tuple(sorted(mask_keys))
    steps = {name: int(one[mask_keys[name]].shape[1]) for name in masks}
    return Layout(tuple(keys), masks, mask_keys, max(1, sample_bytes), steps)


def _first_twice(x: Any) -> Any:
    """The first sample of a batch input, twice: a tensor, or texts (an object array of str)."""
    if isinstance(x, torch.Tensor):
        return torch.cat([x[:1], x[:1]])
    return np.concatenate([x[:1], x[:1]])


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


# ---------------------------------------------------------------------------------------------- manifest
def weights_sha256(model: KerasModel) -> str:
    """A hash of the model: its config JSON and every parameter and buffer (name, dtype, shape, bytes)."""
    digest = hashlib.sha256()
    config = model.get_config() if hasattr(model, "get_config") else {}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy())  # no copy; hashlib releases the GIL
    return digest.hexdigest()


def _manifest(
    model: KerasModel, source: Source, request: dict[str, Any], layout: Layout, batches_per_shard: int
) -> dict[str, Any]:
    info = getattr(model, "source_info", {}) or {}
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": {
            "name": model.name,
            "source": str(info.get("path", info.get("source", ""))),
            "keras_version": str(info.get("keras_version", "")),
            "weights_sha256": weights_sha256(model),
        },
        "request": request,
        "data": source.describe(),
        "shards": {"batches_per_shard": batches_per_shard, "batch_size": source.batch_size},
    }


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new)):
            out += _differences(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [f"{prefix[:-1]}: was {json.dumps(old)[:80]}, now {json.dumps(new)[:80]}"]


def _prepare_folder(out: Path, manifest: dict[str, Any], resume: bool, overwrite: bool, rank: int) -> None:
    """Creates ``out`` or checks that it holds this same extraction; ``overwrite`` clears our files."""
    if out.exists() and not out.is_dir():
        raise InputError(f"Output {str(out)!r} exists and is not a folder. Fix: pass a folder path as out=.")
    existing = [p for p in out.iterdir()] if out.exists() else []
    ours = [p for p in existing if _OWN_FILE.match(p.name)]
    foreign = [p.name for p in existing if not _OWN_FILE.match(p.name)]
    old_path = out / "manifest.json"
    if ours and not overwrite:
        if not old_path.is_file():
            raise ExtractionMismatchError(
                f"Output folder {str(out)!r} holds shard files but no manifest.json. Fix: pass overwrite=True "
                "to replace them, or another folder."
            )
        try:
            old = json.loads(old_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ExtractionMismatchError(f"{old_path}: unreadable manifest ({err}). Fix: overwrite=True.") from err
        # Where the model file lives is information, not identity: its weights hash is compared.
        diffs = [d for d in _differences(old, manifest) if not d.startswith("model.source:")]
        if diffs:
            raise ExtractionMismatchError(
                f"Output folder {str(out)!r} holds an extraction of another model, data or arguments: "
                + "; ".join(diffs[:6])
                + ". Fix: pass overwrite=True to replace it, or choose another folder."
            )
        if not resume:
            raise ExtractionMismatchError(
                f"Output folder {str(out)!r} already holds (part of) this extraction and resume=False. "
                "Fix: resume=True to finish it, or overwrite=True to start again."
            )
    if foreign and not ours:
        raise InputError(
            f"Output folder {str(out)!r} is not empty ({', '.join(sorted(foreign)[:5])}) and holds no extraction. "
            "Fix: choose an empty or new folder."
        )
    if rank != 0:
        return
    out.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for p in ours:
            p.unlink(missing_ok=True)
    for p in out.iterdir():  # leftovers of a killed run: temporary files are never complete
        if p.name.startswith(".") and _OWN_FILE.match(p.name):
            p.unlink(missing_ok=True)
    write_json_atomic(out / "manifest.json", manifest)


# ---------------------------------------------------------------------------------------------- the loop
@dataclass
class _Work:
    batch: Batch
    values: dict[str, torch.Tensor]  # host tensors, sample-first, stored dtype (packed: valid steps)
    masks: dict[str, torch.Tensor]  # host bool (n, T)
    steps: dict[str, torch.Tensor]  # host int64 (n,)
    digest: str
    event: Any  # a CUDA event to wait for before reading the host tensors (None on CPU)
    raw: bool = False  # values are the probe's CPU tensors, still to be cast and packed (by the writer thread)
    stats: Any = None  # the shard's statistics sink (stats=True); raw values are folded in by the writer thread


def _to_host(t: torch.Tensor, pinned: bool) -> torch.Tensor:
    if t.device.type == "cpu":
        return t.contiguous()
    if pinned:
        host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        host.copy_(t, non_blocking=True)
        return host
    return t.to("cpu")


def _cast(value: torch.Tensor, dtype: torch.dtype, pool: dict[str, torch.Tensor] | None, key: str) -> torch.Tensor:
    """``value`` as a contiguous tensor of ``dtype`` in one pass; on the host, into a buffer reused across batches
    (the writer copies each batch out before the next arrives), since first writes to fresh memory are slow."""
    if pool is None:
        return value.to(dtype).contiguous()
    buffer = pool.get(key)
    if buffer is None or buffer.shape != value.shape or buffer.dtype != dtype:
        buffer = pool[key] = torch.empty(value.shape, dtype=dtype)
    return buffer.copy_(value)


def _prepare_batch(
    values: dict[str, torch.Tensor],
    layout: Layout,
    batch: Batch,
    digest: str,
    pinned: bool,
    pool: dict[str, torch.Tensor] | None = None,
) -> _Work:
    """Casts (and packs) one batch's values for storage, sample-first; on CUDA starts the copy to pinned memory."""
    masks: dict[str, torch.Tensor] = {}
    steps: dict[str, torch.Tensor] = {}
    for name in layout.masks:
        mask = values[layout.mask_keys[name]]
        masks[name] = mask
        steps[name] = mask.sum(dim=1, dtype=torch.int64)
    stored: dict[str, torch.Tensor] = {}
    for spec in layout.keys:
        value = values[spec.key]
        if spec.batch_axis:
            value = value.movedim(spec.batch_axis, 0)
        if spec.packed and spec.mask is not None:
            mask = masks[spec.mask]
            value = value[mask.flip(1) if spec.flip else mask]  # (valid steps, ...) in sample order
        stored[spec.key] = _cast(value, spec.dtype, pool, spec.key)
    event = None
    host = {k: _to_host(v, pinned) for k, v in stored.items()}
    host_masks = {k: _to_host(v, pinned) for k, v in masks.items()}
    host_steps = {k: _to_host(v, pinned) for k, v in steps.items()}
    if pinned:
        event = torch.cuda.Event()
        event.record()
    return _Work(batch, host, host_masks, host_steps, digest, event)


class _Writer:
    """The writer thread: appends batches to their shards and finishes each shard when the next begins."""

    def __init__(
        self,
        folder: Path,
        batches_per_shard: int,
        layout: Layout,
        shard_size: Callable[[int], int | None] | None = None,
    ) -> None:
        self.layout = layout
        self.shard_size = shard_size  # samples of shard n, where known before it is written
        self.folder = folder
        self.per_shard = batches_per_shard
        self.queue: queue.Queue[_Work | None] = queue.Queue(maxsize=_QUEUE_BATCHES)
        self.error: BaseException | None = None
        self._builder: ShardBuilder | None = None
        self._hashes: list[str] = []
        self._stats: Any = None  # the current shard's statistics sink
        self._pool: dict[str, torch.Tensor] = {}
        self._finisher: threading.Thread | None = None  # lays out, fsyncs and renames the previous shard
        self.thread = threading.Thread(target=self._run, name="tlp-shard-writer", daemon=True)
        self.thread.start()

    def _new_shard(self, number: int, start: int) -> ShardBuilder:
        """A shard builder; where the shard's size is known ahead (array-like data), its fixed-shape keys are
        laid out in the file at once and written in place."""
        builder = ShardBuilder(self.folder, number, start)
        size = self.shard_size(number) if self.shard_size is not None else None
        if not size:
            return builder
        fixed = {
            spec.key: (spec.sample_shape, spec.dtype)
            for spec in self.layout.keys
            if not spec.packed and spec.dtype != torch.bool and _width(spec.dtype) >= 2
        }
        spooled = [_width(spec.dtype) for spec in self.layout.keys if spec.packed]
        if not fixed or (spooled and max(spooled) > min(_width(d) for _, d in fixed.values())):
            return builder  # in-place regions would leave a spooled tensor unaligned
        reserve = 8192 + 512 * (len(self.layout.keys) + 2 * len(self.layout.masks))
        builder.preallocate(size, fixed, self.layout.masks, reserve)
        return builder

    def put(self, work: _Work | None) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.queue.put(work, timeout=0.1)
                return
            except queue.Full:
                if not self.thread.is_alive():
                    raise RuntimeError("the shard writer stopped") from self.error

    def _run(self) -> None:
        try:
            while True:
                work = self.queue.get()
                if work is None:
                    self._finish()
                    return
                if work.event is not None:
                    work.event.synchronize()
                number = work.batch.index // self.per_shard
                if self._builder is not None and self._builder.number != number:
                    self._finish()
                if self._builder is None:
                    self._builder = self._new_shard(number, work.batch.start)
                self._stats = work.stats
                if work.raw:  # on CPU the statistics, cast and packing run here, beside the next batch's forward
                    if work.stats is not None:
                        _fold(work.stats, work.values, self.layout)
                    work = _prepare_batch(work.values, self.layout, work.batch, work.digest, False, self._pool)
                self._builder.add(work.batch.size, work.values, work.masks, work.steps)
                self._hashes.append(work.digest)
        except BaseException as err:  # handed to the main thread
            self.error = err
            if self._builder is not None:
                self._builder.abort()
            while True:  # unblock the producer
                try:
                    self.queue.get_nowait()
                except queue.Empty:
                    break

    def _finish(self) -> None:
        """Hands the shard to a finisher thread (one at a time), so its fsync overlaps the next shard's batches."""
        self._wait_finisher()
        if self._builder is not None:
            args = (self._builder, _combine(self._hashes), self._stats)
            self._finisher = threading.Thread(target=self._finish_shard, args=args, name="tlp-shard-finisher")
            self._finisher.start()
        self._builder = None
        self._hashes = []
        self._stats = None

    def _finish_shard(self, builder: ShardBuilder, digest: str, stats: Any) -> None:
        try:
            if stats is not None:  # before the shard: a shard on disk always has its statistics beside it
                write_json_atomic(self.folder / _stats_name(builder.number), stats.state())
            builder.finish(digest)
        except BaseException as err:
            self.error = self.error or err
            builder.abort()

    def _wait_finisher(self) -> None:
        if self._finisher is not None:
            self._finisher.join()
            self._finisher = None
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self.put(None)
        self.thread.join()
        if self._finisher is not None:
            self._finisher.join()
        if self.error is not None:
            raise self.error


def _width(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _stats_name(number: int) -> str:
    return f"stats-{number:05d}.json"


def _fold(accumulator: Any, values: Any, layout: Layout) -> None:
    from ..analysis.gate_stats import fold

    fold(accumulator, values, layout)


def _combine(hashes: Sequence[str]) -> str:
    return hashlib.sha256("".join(hashes).encode()).hexdigest()


def _progress(total: int | None, enabled: bool) -> Any:
    if not enabled or not sys.stderr.isatty():
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _Progress(total)
    return tqdm(total=total, unit="samples", unit_scale=True, desc="extract", dynamic_ncols=True)


class _Progress:
    """A one-line progress meter on stderr where tqdm is not installed."""

    def __init__(self, total: int | None) -> None:
        self.total, self.done, self.t0, self.last = total, 0, time.perf_counter(), 0.0

    def update(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last > 0.5:
            self.last = now
            rate = self.done / max(now - self.t0, 1e-9)
            of = f"/{self.total}" if self.total else ""
            sys.stderr.write(f"\rextract: {self.done}{of} samples, {rate:,.0f} samples/s")
            sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")


def _shard_header(path: Path) -> dict[str, Any]:
    """A shard's safetensors header (this run wrote it: the reader checks foreign files)."""
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        return dict(json.loads(fh.read(n)))


def _shard_meta(path: Path) -> dict[str, str]:
    return dict(_shard_header(path).get("__metadata__", {}))


def extract(
    model: KerasModel,
    data: Any,
    out: str | os.PathLike[str] = "acts/",
    layers: Sequence[str] | str | None = None,
    gates: bool = False,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    packed: bool = False,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    stats: bool = False,
) -> Any:
    """Runs ``model`` over a whole dataset and streams the probe keys to sharded safetensors under ``out``.

    Args:
        model: a converted model (stateful layers are refused: extraction treats samples as
            independent, in any batch and on any rank).
        data: an array/tensor (one input), a list/tuple of them (Keras input order), a dict by
            input name, a path to ``.npy``/``.npz``/``.safetensors`` (memory-mapped or streamed,
            never loaded whole), or a torch ``Dataset``/``IterableDataset``/``DataLoader``. A text
            input (``Input(dtype="string")``) takes a list/tuple/array of str; a one-input text model
            also an iterator of str or of batches of str. The strings reach the model as they are.
        out: the output folder (created).
        layers: layer names or probe keys, as for :func:`torch_lstm_probe.probe`; ``None``: every layer.
        gates: also store every gate of the recurrent layers asked for.
        batch_size: samples per forward pass (a DataLoader brings its own).
        device: where to run (default: the model's device); the model is moved there.
        dtype: storage dtype of floating tensors: ``float16``, ``bfloat16``, ``float32`` or
            ``float64`` (default: the model's); masks stay bool.
        resume: finish a previous, interrupted run of the same extraction in ``out``.
        overwrite: replace whatever extraction ``out`` holds.
        progress: a progress bar (tqdm when installed) on stderr when it is a terminal.
        packed: store only the valid (unmasked) steps of gate keys of masked layers, concatenated,
            with per-sample offsets; ``acts[key][i]`` is then ``(valid steps, units)``.
        shard_bytes: the size a shard aims at (whole batches; at least one batch a shard).
        stats: also compute :func:`torch_lstm_probe.gate_stats` of the gates asked for in the same
            pass (from the full-precision values, before any storage cast), kept per shard so that
            resumed and ``torchrun`` runs merge them; ``acts.stats`` reads the result.

    Returns:
        :func:`torch_lstm_probe.open_activations` of ``out``.

    Raises:
        InputError: bad data or arguments.
        ExtractionMismatchError: ``out`` holds another extraction (without ``overwrite``).
        ProbeKeyError: a requested name matches no layer.
    """
    from .reader import open_activations

    storage = _storage_dtype(dtype)
    positive_int("batch_size", batch_size)
    positive_int("shard_bytes", shard_bytes)
    _refuse_stateful(model)
    world, rank = dist.world()  # before placing the model: under torchrun it picks this rank's GPU
    if device is not None:
        model.to(dist.local_device(device))
    model.eval()
    run_device = model._device_dtype()[0]
    source = as_source(data, model.input_names, batch_size, text_inputs=text_input_names(model))
    plan = plan_capture(model, layers, gates, masks=True)

    per_shard = 0  # known once the first batch has shown how large a sample's values are

    def mine(j: int) -> bool:
        return j == 0 or (j // per_shard) % world == rank

    batches = source.batches(want=mine)
    first = next(batches, None)
    if first is None or first.inputs is None:
        raise InputError("The data holds no samples. Expected at least one.")
    layout, per_shard, manifest = plan_run(
        model, plan, source, first, layers, gates, storage, packed, shard_bytes, stats, run_device
    )
    folder = Path(out)
    if rank == 0:
        _prepare_folder(folder, manifest, resume, overwrite, rank)
    dist.barrier()
    if (folder / "index.json").is_file():
        return open_activations(folder)
    done = {int(p.name[6:-12]) for p in folder.glob("shard-*.safetensors")}  # finished shards

    meter = _progress(source.num_samples, progress)
    writer = _Writer(folder, per_shard, layout, _shard_sizes(source, per_shard))
    pinned = run_device.type == "cuda"
    sinks: dict[int, Any] = {}  # shard -> its statistics sink (stats=True)
    sizes: dict[int, int] = {}
    check: dict[int, list[str]] = {}
    try:
        for batch in itertools.chain([first], batches):
            sizes[batch.index] = batch.size
            shard = batch.index // per_shard
            if batch.inputs is None or shard % world != rank:
                continue
            digest = hash_inputs(batch.inputs)
            if shard in done:
                check.setdefault(shard, []).append(digest)
            else:
                inputs = [to_device(x, run_device, non_blocking=True) for x in batch.inputs]
                values = run_plan(model, plan, inputs)
                if stats and shard not in sinks:
                    sinks[shard] = _stats_sink(layout)
                sink = sinks.get(shard)
                if pinned:  # cast (and pack) on the device, then copy to pinned host memory without waiting
                    if sink is not None:
                        _fold(sink, values, layout)
                    work = _prepare_batch(values, layout, batch, digest, pinned)
                    work.stats = sink
                    writer.put(work)
                else:
                    writer.put(_Work(batch, values, {}, {}, digest, None, raw=True, stats=sink))
            if meter is not None:
                meter.update(batch.size)
        writer.close()
    except BaseException:
        writer.error = writer.error or RuntimeError("stopped")
        raise
    finally:
        if meter is not None:
            meter.close()
    for shard, hashes in check.items():
        stored = _shard_meta(folder / shard_name(shard)).get("data_sha256")
        if stored != _combine(hashes):
            raise ExtractionMismatchError(
                f"{folder / shard_name(shard)} was written from other input data than this run's samples "
                f"(shard {shard}). Fix: pass overwrite=True to start again, or the data of the first run."
            )
    dist.barrier()
    if rank == 0:
        total_batches = max(sizes) + 1 if sizes else 0
        _write_index(folder, manifest, layout, total_batches, per_shard, sum(sizes.values()), stats)
    dist.barrier()
    return open_activations(folder)


def _shard_sizes(source: Source, per_shard: int) -> Callable[[int], int | None] | None:
    """Samples in shard n, for data whose batches all have the same shape and whose length is known."""
    total = source.num_samples
    if total is None or source.kind not in ("arrays", "npy", "npz", "safetensors"):
        return None
    span = per_shard * source.batch_size
    return lambda n: max(0, min(span, total - n * span))


def plan_run(
    model: KerasModel,
    plan: CapturePlan,
    source: Source,
    first: Batch,
    layers: Sequence[str] | str | None,
    gates: bool,
    storage: torch.dtype | None,
    packed: bool,
    shard_bytes: int,
    stats: bool,
    device: torch.device,
) -> tuple[Layout, int, dict[str, Any]]:
    """The layout (from the first batch), batches per shard and manifest of a run: every engine that writes a
    folder (``extract``, ``extract_ray``) plans through here, so the same arguments give the same files."""
    if first.inputs is None:
        raise InputError("The first batch holds no inputs.")
    layout = layout_of(model, plan, [to_device(x, device) for x in first.inputs], storage, packed, gates)
    if stats and not any(spec.cell for spec in layout.keys):
        raise InputError(
            "stats=True summarises gates, and this request stores none. Fix: pass gates=True too (layers= then "
            "picks the recurrent layers to summarise)."
        )
    per_shard = max(1, shard_bytes // (layout.sample_bytes * max(1, first.size)))
    request = {
        "layers": [layers] if isinstance(layers, str) else (list(layers) if layers is not None else None),
        "gates": bool(gates),
        "batch_size": source.batch_size,
        "dtype": str(storage).replace("torch.", "") if storage is not None else None,
        "packed": bool(packed),
        "shard_bytes": shard_bytes,
        "stats": bool(stats),
    }
    return layout, per_shard, _manifest(model, source, request, layout, per_shard)


def _storage_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None:
        return None
    if isinstance(dtype, str):
        if dtype.replace("torch.", "") not in _STORAGE_DTYPES:
            raise InputError(f"dtype {dtype!r} is not a storage dtype. Expected one of {', '.join(_STORAGE_DTYPES)}.")
        return _STORAGE_DTYPES[dtype.replace("torch.", "")]
    if dtype not in _STORAGE_DTYPES.values():
        raise InputError(f"dtype {dtype} is not a storage dtype. Expected one of {', '.join(_STORAGE_DTYPES)}.")
    return dtype


def _refuse_stateful(model: KerasModel) -> None:
    for path, module in model.iter_layers():
        for sub in (module, getattr(module, "forward_layer", None), getattr(module, "backward_layer", None)):
            if getattr(getattr(sub, "config", None), "stateful", False):
                raise InputError(
                    f"Layer {path!r} ({type(module).__name__}) is stateful: its output depends on the batches before "
                    "it, so samples cannot be extracted independently, resumed or split across processes. Fix: loop "
                    "over batches with tlp.probe yourself, or rebuild the model with stateful=False."
                )


def _stats_sink(layout: Layout) -> Any:
    from ..analysis.gate_stats import accumulator_for

    return accumulator_for(layout)


def _merge_stats(folder: Path, shards: int) -> None:
    """Merges every shard's statistics, in shard order, into ``stats.json``."""
    from ..analysis.stats import StatsAccumulator

    merged = None
    for number in range(shards):
        path = folder / _stats_name(number)
        if not path.is_file():
            raise InputError(f"{path} is missing: shard {number} was written without its statistics.")
        part = StatsAccumulator.from_state(json.loads(path.read_text(encoding="utf-8")))
        if merged is None:
            merged = part
        else:
            merged.merge(part)
    if merged is not None:
        write_json_atomic(folder / "stats.json", merged.result().to_dict())


def _write_index(
    folder: Path,
    manifest: dict[str, Any],
    layout: Layout,
    total_batches: int,
    per_shard: int,
    total: int,
    stats: bool = False,
) -> None:
    shards = []
    shapes: dict[str, list[int | None]] = {spec.key: list(spec.sample_shape) for spec in layout.keys}
    steps: dict[str, int | None] = dict(layout.time_steps)
    for number in range(-(-total_batches // per_shard)):
        path = folder / shard_name(number)
        if not path.is_file():
            raise InputError(f"{path} is missing after every process finished; the extraction is incomplete.")
        header = _shard_header(path)
        meta = header["__metadata__"]
        entry = json.loads(meta["entry"])
        entry["bytes"] = path.stat().st_size
        entry["data_sha256"] = meta["data_sha256"]
        shards.append(entry)
        for mask, blocks in entry["masks"].items():
            for name, _, _ in blocks:
                if header[name]["shape"][1] != steps.get(mask):
                    steps[mask] = None  # the time axis varies between blocks
        packed = {spec.key for spec in layout.keys if spec.packed}
        for key, blocks in entry["tensors"].items():  # an axis whose size differs between blocks is None
            for name, _, _ in blocks:
                rest = header[name]["shape"][1:]
                skip = 1 if key in packed else 0  # a packed block's first axis counts valid steps
                shapes[key][skip:] = [a if a == b else None for a, b in zip(shapes[key][skip:], rest)]
    keys = {}
    for spec in layout.keys:
        shape = shapes[spec.key]
        if spec.packed:
            shape[0] = None
        keys[spec.key] = {
            "dtype": str(spec.dtype).replace("torch.", ""),
            "sample_shape": shape,
            "batch_axis": spec.batch_axis,
            "packed": spec.packed,
            "mask": spec.mask,
            "flip": spec.flip,
            "meaning": key_meaning(spec.key, spec.cell),
        }
    index = {
        "format": FORMAT,
        "version": VERSION,
        "num_samples": total,
        "keys": keys,
        "key_order": [spec.key for spec in layout.keys],
        "masks": {name: {"time_steps": steps[name]} for name in layout.masks},
        "shards": shards,
        "run": manifest,
        "stats": "stats.json" if stats else None,
    }
    if stats:
        _merge_stats(folder, len(shards))
    write_json_atomic(folder / "index.json", index)
    fsync_dir(folder)
