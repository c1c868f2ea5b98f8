"""``extract_ray``: ``extract`` with the forward passes spread over the actors of a Ray cluster.

The driver plans the run exactly as :func:`torch_lstm_probe.extract` does (the same data source,
layout, manifest, shard size and output folder), then hands batch numbers to a Ray Data pipeline:
``map_batches`` over a pool of actors, each holding the model and the data, computes batch ``j``
through the capture plan and sends back its prepared host values. The driver receives them in
batch order and writes them with the same shard writer, then the same index, so the folder is
byte-identical to what ``extract`` writes with the same arguments (when the actors compute the
same values, i.e. on the same kind of device), and either one can resume the other's run.

Ray is an optional dependency (``pip install 'torch-lstm-probe[ray]'``); this module imports it
only when :func:`extract_ray` is called.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..capture.plan import plan_capture, run_plan
from ..errors import InputError, TorchLstmProbeError
from ..model import KerasModel
from .run import (
    DEFAULT_SHARD_BYTES,
    ExtractionMismatchError,
    Layout,
    _combine,
    _prepare_batch,
    _prepare_folder,
    _refuse_stateful,
    _shard_meta,
    _shard_sizes,
    _storage_dtype,
    _Work,
    _write_index,
    _Writer,
    plan_run,
)
from .shards import shard_name
from .sources import Batch, Source, as_source, hash_inputs, positive_int

__all__ = ["extract_ray"]

_INSTALL_HINT = "pip install 'torch-lstm-probe[ray]' (or 'ray[data]>=2.9')"
_GROUPS = (("t", "values"), ("m", "masks"), ("s", "steps"))  # payload group -> _Work field
_TASK_BYTES = 64 * 2**20  # the stored bytes one actor task aims at (whole batches; at least one)
_TASKS_PER_ACTOR = 4  # at least this many tasks per actor when the data allows, to balance the load


# ---------------------------------------------------------------------------------------------- payload
def _pack(work: _Work) -> bytes:
    """One batch's prepared host tensors as bytes: an 8-byte header length, a JSON header, the raw data.

    The header lists ``[group, key, dtype, shape]`` in the order the shard writer must see them
    (it names a shard's tensors in that order), so :func:`_unpack` rebuilds the same dicts.
    """
    header: list[list[Any]] = []
    chunks: list[Any] = []
    for group, field in _GROUPS:
        for key, tensor in getattr(work, field).items():
            tensor = tensor.contiguous()
            header.append([group, key, str(tensor.dtype).removeprefix("torch."), list(tensor.shape)])
            if tensor.numel():
                chunks.append(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))  # (nbytes,)
    text = json.dumps(header).encode("utf-8")
    return b"".join([len(text).to_bytes(8, "little"), text, *chunks])


def _unpack(payload: bytes) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The ``(values, masks, steps)`` dicts :func:`_pack` wrote, as CPU tensors, in the same order."""
    size = int.from_bytes(payload[:8], "little")
    header = json.loads(payload[8 : 8 + size])
    data = bytearray(memoryview(payload)[8 + size :])  # writable: torch.frombuffer warns on read-only buffers
    groups: dict[str, dict[str, torch.Tensor]] = {group: {} for group, _ in _GROUPS}
    position = 0
    for group, key, dtype_name, shape in header:
        dtype = getattr(torch, dtype_name)
        nbytes = int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()
        if nbytes:
            raw = torch.frombuffer(data, dtype=torch.uint8, count=nbytes, offset=position)  # (nbytes,)
            groups[group][key] = raw.view(dtype).reshape(shape)
        else:
            groups[group][key] = torch.empty(shape, dtype=dtype)
        position += nbytes
    return groups["t"], groups["m"], groups["s"]


# ---------------------------------------------------------------------------------------------- actors
class _BatchReader:
    """Batch ``j`` of a source, read by advancing one pass over it (restarted when ``j`` goes back).

    Random-access sources skip the batches in between without reading them; streams (compressed
    ``.npz`` members, DataLoaders) read through them, so each actor makes about one pass.
    """

    def __init__(self, source: Source) -> None:
        self.source = source
        self._target = -1
        self._next = 0
        self._batches: Iterator[Batch] | None = None

    def batch(self, j: int) -> Batch:
        if self._batches is None or j < self._next:
            if self._batches is not None:
                self._batches.close()  # type: ignore[attr-defined]
            self._batches = self.source.batches(want=lambda k: k == self._target)
            self._next = 0
        self._target = j
        for batch in self._batches:
            self._next = batch.index + 1
            if batch.index == j:
                return batch
        raise InputError(
            f"The data ended before batch {j} on a Ray worker, though it held {self.source.num_samples} samples "
            "when the run was planned. Fix: keep the data unchanged while the extraction runs."
        )


class _BatchExtractor:
    """A Ray Data actor: rebuilds the model and the data source once, then computes batches by number."""

    def __init__(self, bundle: list[Any]) -> None:
        import ray

        shipped = bundle[0]
        if isinstance(shipped, ray.ObjectRef):
            shipped = ray.get(shipped)
        self.error = ""  # an error of ours met while setting up: sent back with the first batch
        try:
            self._setup(shipped)
        except TorchLstmProbeError as err:
            self.error = _describe_error(err)

    def _setup(self, shipped: dict[str, Any]) -> None:
        self.device = torch.device("cuda" if shipped["use_gpu"] else "cpu")
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise InputError(
                "extract_ray was asked for num_gpus > 0, but the Ray worker sees no CUDA device. Fix: num_gpus=0, "
                "or start the Ray nodes with GPUs (ray start --num-gpus=N)."
            )
        model = KerasModel.from_config(shipped["config"])
        floating = [t.dtype for t in shipped["state"].values() if t.is_floating_point()]
        model.to(dtype=floating[0] if floating else torch.float32)
        model.load_state_dict(shipped["state"], strict=True)
        model.source_info = dict(shipped["source_info"])  # type: ignore[assignment]
        self.model = model.to(self.device).eval()
        self.plan = plan_capture(model, shipped["layers"], shipped["gates"], masks=True)
        self.layout: Layout = shipped["layout"]
        self.per_shard: int = shipped["per_shard"]
        self.done: frozenset[int] = shipped["done"]
        self.reader = _BatchReader(as_source(shipped["data"], model.input_names, shipped["batch_size"]))

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        numbers = [int(j) for j in rows["data"].reshape(-1)]
        starts, sizes, digests, payloads, errors = [], [], [], [], []
        for j in numbers:
            start, size, digest, payload, error = -1, 0, "", b"", self.error
            if not error:
                try:
                    start, size, digest, payload = self._batch(j)
                except TorchLstmProbeError as err:  # sent back as data: Ray would keep only its traceback text
                    error = _describe_error(err)
            starts.append(start)
            sizes.append(size)
            digests.append(digest)
            payloads.append(payload)
            errors.append(error)
        column = np.empty(len(payloads), dtype=object)  # (rows,) of bytes
        column[:] = payloads
        return {
            "batch": np.asarray(numbers, dtype=np.int64),
            "start": np.asarray(starts, dtype=np.int64),
            "size": np.asarray(sizes, dtype=np.int64),
            "digest": np.asarray(digests, dtype=object),
            "payload": column,
            "error": np.asarray(errors, dtype=object),
        }

    def _batch(self, j: int) -> tuple[int, int, str, bytes]:
        """Batch ``j``: its first sample, size, input hash and packed values (none for a finished shard)."""
        batch = self.reader.batch(j)
        if batch.inputs is None:  # the reader asked for this batch's inputs: a bug if they are missing
            raise RuntimeError(f"batch {j} was read without its inputs")
        digest = hash_inputs(batch.inputs)
        payload = b""
        if j // self.per_shard not in self.done:  # a finished shard only needs the input hash checked
            inputs = [x.to(self.device) for x in batch.inputs]
            values = run_plan(self.model, self.plan, inputs)
            payload = _pack(_prepare_batch(values, self.layout, batch, digest, pinned=False))
        return batch.start, batch.size, digest, payload


def _describe_error(err: TorchLstmProbeError) -> str:
    """An error of ours as ``module:qualname``, a newline and its message, for the driver to raise again."""
    kind = next(k for k in type(err).__mro__ if issubclass(k, TorchLstmProbeError) and "+" not in k.__qualname__)
    return f"{kind.__module__}:{kind.__qualname__}\n{err}"


def _error_from(text: str) -> TorchLstmProbeError:
    """The error :func:`_describe_error` described (an :class:`InputError` when its class is not ours)."""
    name, _, message = text.partition("\n")
    module, _, qualname = name.partition(":")
    cls: Any = None
    if module == "torch_lstm_probe" or module.startswith("torch_lstm_probe."):
        try:
            cls = getattr(importlib.import_module(module), qualname, None)
        except ImportError:
            cls = None
    if isinstance(cls, type) and issubclass(cls, TorchLstmProbeError):
        try:
            return cls(f"On a Ray worker: {message}")
        except TypeError:
            pass
    return InputError(f"On a Ray worker: {message}")


# ---------------------------------------------------------------------------------------------- driver
def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:
        raise ImportError(f"extract_ray needs Ray Data, which is not installed. Fix: {_INSTALL_HINT}.") from err
    return ray


def _shippable(data: Any) -> Any:
    """``data`` as the actors can rebuild it: paths made absolute (workers run elsewhere), tensors on the CPU."""
    if isinstance(data, (str, os.PathLike)):
        return os.path.abspath(os.fsdecode(data))
    if isinstance(data, torch.Tensor):
        return data.detach().cpu()
    if isinstance(data, dict):
        return {k: _shippable(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_shippable(v) for v in data]  # inputs in Keras order, as a list or a tuple is read
    return data


def _shipment(
    model: KerasModel,
    data: Any,
    layers: Sequence[str] | str | None,
    gates: bool,
    batch_size: int,
    layout: Layout | None,
    per_shard: int,
    done: frozenset[int],
    use_gpu: bool,
) -> dict[str, Any]:
    """What an actor needs: the model as config and weights, the data, the plan's arguments and the layout."""
    return {
        "config": model.get_config(),
        "state": {k: v.detach().to("cpu") for k, v in model.state_dict().items()},
        "source_info": dict(getattr(model, "source_info", {}) or {}),
        "use_gpu": use_gpu,
        "layers": layers,
        "gates": gates,
        "layout": layout,
        "per_shard": per_shard,
        "done": done,
        "data": _shippable(data),
        "batch_size": batch_size,
    }


def _task_blocks(total_batches: int, batch_bytes: int, concurrency: int) -> list[np.ndarray]:
    """Batch numbers in runs, one Ray block (one actor task) each.

    A task's results wait in the object store until the driver has written every batch before
    them, so a run is small (about ``_TASK_BYTES`` of values); runs of several small batches spare
    Ray a task per batch, whose overhead would exceed a small model's forward pass.
    """
    per_task = max(1, min(_TASK_BYTES // max(1, batch_bytes), -(-total_batches // (_TASKS_PER_ACTOR * concurrency))))
    return [np.arange(a, min(a + per_task, total_batches), dtype=np.int64) for a in range(0, total_batches, per_task)]


def extract_ray(
    model: KerasModel,
    data: Any,
    out: str | os.PathLike[str] = "acts/",
    layers: Sequence[str] | str | None = None,
    gates: bool = False,
    batch_size: int = 256,
    dtype: torch.dtype | str | None = None,
    resume: bool = True,
    overwrite: bool = False,
    packed: bool = False,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    num_gpus: float = 0,
    concurrency: int = 2,
    num_cpus: float | None = None,
    progress: bool = True,
) -> Any:
    """:func:`torch_lstm_probe.extract` with the forward passes run by a pool of Ray actors.

    The process calling it (the driver) reads the first batch to plan the run, then writes every
    shard and the index under ``out`` from the values the actors send back in batch order: the
    files are those ``extract`` writes with the same arguments (same layout, same bytes when the
    actors compute on the same kind of device), and a run of either can be resumed by the other.
    Join a cluster first with ``ray.init(address=...)``; otherwise a local Ray instance starts.
    Gate statistics (``extract(stats=True)``) are not computed here.

    Args:
        model: a converted model (stateful layers are refused). Each actor rebuilds it from its
            config and weights.
        data: what ``extract`` accepts, of a known length: arrays/tensors (a list or a dict of
            them; shipped once through Ray's object store), a ``.npy``/``.npz``/``.safetensors``
            path (every worker opens it: it must be readable at the same path on every node), a
            map-style torch ``Dataset``, or a ``DataLoader`` over one with its default sequential
            sampler (which every actor reads through: prefer the others). Each actor reads only
            the batches it is given.
        out: the output folder, written by the driver only.
        layers: layer names or probe keys, as for :func:`torch_lstm_probe.probe`; ``None``: every layer.
        gates: also store every gate of the recurrent layers asked for.
        batch_size: samples per forward pass (a DataLoader brings its own).
        dtype: storage dtype of floating tensors: ``float16``, ``bfloat16``, ``float32`` or
            ``float64`` (default: the model's); masks stay bool.
        resume: finish a previous, interrupted run of the same extraction in ``out``.
        overwrite: replace whatever extraction ``out`` holds.
        packed: store only the valid steps of gate keys of masked layers (see ``extract``).
        shard_bytes: the size a shard aims at (whole batches; at least one batch a shard).
        num_gpus: GPUs per actor; above 0 each actor runs the model on CUDA.
        concurrency: the number of actors.
        num_cpus: CPUs per actor (Ray's default, 1, when ``None``); torch in an actor uses that
            many threads.
        progress: Ray Data's progress bars.

    Returns:
        :func:`torch_lstm_probe.open_activations` of ``out``.

    Raises:
        ImportError: Ray Data is not installed.
        InputError: bad data or arguments; data of unknown length (an ``IterableDataset``).
        ExtractionMismatchError: ``out`` holds another extraction (without ``overwrite``), or a
            finished shard was written from other input data.
        ProbeKeyError: a requested name matches no layer.

    Example:
        >>> import ray
        >>> ray.init(address="auto")  # a running cluster; ray.init() or nothing: a local one
        >>> acts = extract_ray(model, "/shared/tokens.npy", out="acts/", gates=True, num_gpus=1, concurrency=4)
    """
    from .reader import open_activations

    storage = _storage_dtype(dtype)
    positive_int("batch_size", batch_size)
    positive_int("shard_bytes", shard_bytes)
    positive_int("concurrency", concurrency)
    if isinstance(num_gpus, bool) or not isinstance(num_gpus, (int, float)) or num_gpus < 0:
        raise InputError(f"num_gpus must be a number >= 0 (GPUs per actor). Received {num_gpus!r}.")
    _refuse_stateful(model)
    model.eval()
    run_device = model._device_dtype()[0]
    source = as_source(data, model.input_names, batch_size)
    if source.num_samples is None:
        raise InputError(
            f"extract_ray hands batch numbers to its actors, so it needs the number of samples ahead; the "
            f"{source.kind} data does not tell it (an IterableDataset, or a DataLoader with its own sampler). "
            "Fix: use tlp.extract (one process) or torchrun, or pass a map-style Dataset, arrays or a file."
        )
    plan = plan_capture(model, layers, gates, masks=True)
    batches = source.batches(want=lambda j: j == 0)
    first = next(batches)
    batches.close()  # type: ignore[attr-defined]
    if first.inputs is None:
        raise InputError("The data holds no samples. Expected at least one.")
    layout, per_shard, manifest = plan_run(
        model, plan, source, first, layers, gates, storage, packed, shard_bytes, False, run_device
    )
    folder = Path(out)
    _prepare_folder(folder, manifest, resume, overwrite, 0)
    if (folder / "index.json").is_file():
        return open_activations(folder)
    done = frozenset(int(p.name[6:-12]) for p in folder.glob("shard-*.safetensors"))  # finished shards
    total_batches = -(-source.num_samples // source.batch_size)

    ray = _import_ray()
    from ray.data import ActorPoolStrategy, DataContext

    if not ray.is_initialized():
        ray.init()
    shipped = _shipment(model, data, layers, gates, batch_size, layout, per_shard, done, num_gpus > 0)
    bundle = [ray.put(shipped)]  # once in the object store, read by every actor
    context = DataContext.get_current()
    saved = (context.execution_options.preserve_order, context.enable_progress_bars)
    writer = _Writer(folder, per_shard, layout, _shard_sizes(source, per_shard))
    sizes: dict[int, int] = {}
    check: dict[int, list[str]] = {}
    try:
        # The dataset snapshots the context when it is made (older Ray reads it while running).
        context.execution_options.preserve_order = True  # results in batch order: the writer needs them so
        context.enable_progress_bars = bool(progress)
        numbers = ray.data.from_numpy(_task_blocks(total_batches, layout.sample_bytes * first.size, concurrency))
        results = numbers.map_batches(
            _BatchExtractor,
            fn_constructor_kwargs={"bundle": bundle},
            batch_size=1,
            batch_format="numpy",
            compute=ActorPoolStrategy(size=concurrency),
            num_gpus=num_gpus,
            **({"num_cpus": num_cpus} if num_cpus is not None else {}),
        )
        start = 0
        for block in results.iter_batches(batch_size=None, batch_format="numpy"):
            for row in range(len(block["batch"])):
                if block["error"][row]:
                    raise _error_from(str(block["error"][row]))
                j, first_sample, size = (int(block[c][row]) for c in ("batch", "start", "size"))
                if j != len(sizes) or first_sample != start:
                    raise RuntimeError(f"Ray Data returned batch {j} (from sample {first_sample}) out of order.")
                sizes[j] = size
                start += size
                digest = str(block["digest"][row])
                shard = j // per_shard
                if shard in done:
                    check.setdefault(shard, []).append(digest)
                    continue
                values, masks, steps = _unpack(block["payload"][row])
                writer.put(_Work(Batch(j, first_sample, size, None), values, masks, steps, digest, None))
        writer.close()
    except BaseException:
        writer.error = writer.error or RuntimeError("stopped")
        raise
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved
    if len(sizes) != total_batches:
        raise InputError(
            f"The Ray workers returned {len(sizes)} batches; the data held {total_batches} when the run was planned."
        )
    for shard, hashes in check.items():
        stored = _shard_meta(folder / shard_name(shard)).get("data_sha256")
        if stored != _combine(hashes):
            raise ExtractionMismatchError(
                f"{folder / shard_name(shard)} was written from other input data than this run's samples "
                f"(shard {shard}). Fix: pass overwrite=True to start again, or the data of the first run."
            )
    _write_index(folder, manifest, layout, total_batches, per_shard, sum(sizes.values()))
    return open_activations(folder)
