"""Data sources for extraction: every kind of data ``tlp.extract`` accepts, turned into batches of model inputs.

:func:`as_source` wraps the data; :meth:`Source.batches` then yields :class:`Batch` objects in data order, each
holding CPU tensors in the model's (Keras) input order, batch-first. Nothing is ever loaded whole: a batch's
tensors are fresh copies of just its rows, so host memory stays bounded by a few batches.

| data                                        | kind          | how it is read                                      |
| ------------------------------------------- | ------------- | --------------------------------------------------- |
| an array/tensor, a list/tuple, a dict       | ``arrays``    | rows sliced and copied per batch                    |
| ``.npy`` path                               | ``npy``       | memory-mapped (``np.load(mmap_mode="r")``)          |
| ``.npz`` path, stored members               | ``npz``       | memory-mapped at the member's offset inside the zip |
| ``.npz`` path, compressed members           | ``npz``       | decompressed as a stream, one batch of rows at once |
| ``.safetensors`` path                       | ``safetensors`` | ``safe_open(...).get_slice(name)[a:b]`` per batch |
| map-style ``torch.utils.data.Dataset``      | ``dataset``   | ``batch_size`` consecutive items, ``default_collate`` |
| ``torch.utils.data.IterableDataset``        | ``iterable``  | items in groups of ``batch_size``, ``default_collate`` |
| ``torch.utils.data.DataLoader``             | ``dataloader`` | its own batches, as they come                      |
| a list/array of str (text-input model)      | ``arrays``    | rows sliced and copied per batch                    |
| an iterator of str or of batches of str     | ``text_stream`` | texts regrouped into ``batch_size`` per batch     |

Rules shared by every kind:

- Inputs are matched to the model's inputs by position (a list/tuple, in Keras input order) or by name (a dict,
  the members of an ``.npz``, the tensors of a ``.safetensors``). A file holding a single entry feeds a one-input
  model whatever its name; an ``.npz`` written as ``np.savez(path, x0, x1)`` (members ``arr_0``, ``arr_1``, ...)
  feeds the inputs in that order.
- Dataset items and DataLoader batches may carry labels: a tuple/list with MORE elements than the model has
  inputs holds the inputs first and labels after them, and the trailing labels are ignored; a dict may hold keys
  other than the input names, which are ignored too.
- Dtypes pass through unchanged (the model casts): padded integer token ids (``int32``, ``int64``, ``uint16`` ...)
  stay integers and are never converted to float. Non-numeric data (objects, strings, complex) is refused,
  except for the inputs named in ``text_inputs`` (a model's ``Input(dtype="string")``): those take strings and
  their batches are numpy object arrays of ``str``, which the model's own text layer turns into ids.
- Every input has a leading samples axis, and all inputs agree on its size.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import stat
import struct
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
    default_collate,
)

from torch_lstm_probe.errors import InputError

__all__ = [
    "Batch",
    "Source",
    "ArraySource",
    "NpySource",
    "NpzSource",
    "SafetensorsSource",
    "DatasetSource",
    "IterableSource",
    "DataLoaderSource",
    "as_source",
    "hash_inputs",
    "text_input_names",
    "to_device",
    "FILE_SUFFIXES",
    "ACCEPTED_KINDS",
]

FILE_SUFFIXES = (".npy", ".npz", ".safetensors")
ACCEPTED_KINDS = (
    "a numpy array or torch tensor (one input), a list/tuple of them (Keras input order), a dict by input name, "
    "a path to a .npy/.npz/.safetensors file, or a torch Dataset / IterableDataset / DataLoader"
)

_NUMERIC_KINDS = "biuf"  # numpy dtype kinds passed through: bool, signed and unsigned integers, floats
_SKIP_CHUNK = 1 << 20  # bytes decompressed and dropped at a time when a compressed member skips a batch
_ZIP_LOCAL_HEADER = 30  # fixed part of a zip local file header, before the file name and extra field
_COMPRESSION_NAMES = {zipfile.ZIP_DEFLATED: "deflated", zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}
_RANDOM_SAMPLERS = (RandomSampler, SubsetRandomSampler, WeightedRandomSampler)
_SAFETENSORS_DTYPES = {  # safetensors dtype code -> torch dtype name; other codes are refused
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "U16": "uint16",
    "I16": "int16",
    "U32": "uint32",
    "I32": "int32",
    "U64": "uint64",
    "I64": "int64",
    "F16": "float16",
    "BF16": "bfloat16",
    "F32": "float32",
    "F64": "float64",
}


@dataclass(frozen=True)
class Batch:
    """One batch of model inputs, in data order."""

    index: int  # batch number j (0-based) in data order
    start: int  # global index of its first sample
    size: int  # number of samples
    inputs: list[Any] | None  # Keras input order, batch-first: CPU tensors, object arrays of str for text
    # inputs; None when skipped


class Source:
    """Data that yields batches of model inputs in data order; made by :func:`as_source`.

    Attributes:
        kind: ``"arrays"``, ``"npy"``, ``"npz"``, ``"safetensors"``, ``"dataset"``, ``"iterable"`` or
            ``"dataloader"``.
        num_samples: the number of samples, or ``None`` when it is unknown ahead (an ``IterableDataset``, or a
            ``DataLoader`` whose order or size only its sampler knows).
        batch_size: the batch size used (a ``DataLoader``'s own).
    """

    kind: str
    num_samples: int | None
    batch_size: int

    def describe(self) -> dict[str, Any]:
        """A JSON-able, byte-stable description for the run manifest (kind, shapes, dtypes, file names and sizes).

        It is not a hash of the content: the caller fingerprints the batches themselves.
        """
        raise NotImplementedError

    def batches(self, want: Callable[[int], bool] | None = None) -> Iterator[Batch]:
        """Every batch, in data order.

        Args:
            want: called with each batch number; when it returns False the batch is still yielded (with its index,
                start and size) but with ``inputs=None``. Random-access sources (arrays, ``.npy``, stored ``.npz``
                members, ``.safetensors``, map-style datasets) then read nothing of it; streams (compressed
                ``.npz`` members, iterable datasets, DataLoaders) still pull its items to learn its size and to
                reach the next batch, and drop them.

        Yields:
            :class:`Batch` objects with ``index`` 0, 1, 2, ...

        Raises:
            InputError: an item, a batch or a file does not hold what the model takes.
        """
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------------------------
# helpers


def _torch_dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _numpy_dtype_name(dtype: np.dtype[Any], where: str) -> str:
    """The torch dtype name a numpy dtype becomes; refuses non-numeric dtypes and those torch lacks."""
    if dtype.kind not in _NUMERIC_KINDS:
        raise InputError(
            f"{where} has dtype {dtype}, which is not numeric. Expected numbers (bool, integers or floats), e.g. "
            "padded integer token ids; convert the data with .astype(...) first."
        )
    try:
        return _torch_dtype_name(torch.from_numpy(np.empty(0, dtype=dtype.newbyteorder("="))).dtype)
    except TypeError as err:
        raise InputError(
            f"{where} has dtype {dtype}, which torch cannot hold. Convert it to float64 or smaller."
        ) from err


def _rows_to_tensor(rows: np.ndarray) -> torch.Tensor:
    """A fresh C-ordered, native-byte-order copy of ``rows`` as a tensor (never a view of the source)."""
    native = rows.dtype.newbyteorder("=")
    return torch.from_numpy(np.array(rows, dtype=native, order="C", copy=True))  # (n, *sample_shape)


def _as_batch_tensor(value: Any, where: str) -> torch.Tensor:
    """A numpy array or tensor of one batch (or one item) as a CPU tensor, dtype unchanged."""
    if isinstance(value, (np.ndarray, np.generic)):
        array = np.asarray(value)
        _numpy_dtype_name(array.dtype, where)
        if not array.flags.writeable or not array.dtype.isnative or not array.flags.c_contiguous:
            return _rows_to_tensor(array)
        return torch.from_numpy(array)
    if isinstance(value, torch.Tensor):
        _check_tensor(value, where)
        return value.detach().cpu()
    raise InputError(
        f"{where} is a {type(value).__name__}. Expected a torch tensor or numpy array (a tuple/list is read as "
        "(inputs..., labels...) and a dict by input name)."
    )


def _check_tensor(tensor: torch.Tensor, where: str) -> None:
    if tensor.layout != torch.strided:
        raise InputError(f"{where} is a {tensor.layout} tensor. Expected a dense tensor; call .to_dense() first.")
    if tensor.is_complex() or tensor.is_quantized:
        raise InputError(f"{where} has dtype {tensor.dtype}, which is not real numbers. Expected bool, ints or floats.")


def _entries_for_inputs(available: Sequence[str], names: Sequence[str], where: str, what: str) -> list[str]:
    """Which entries of a file (npz members, safetensors tensors) feed which input, in input order."""
    if all(name in available for name in names):
        return list(names)
    if len(names) == 1 and len(available) == 1:
        return list(available)
    positional = [f"arr_{k}" for k in range(len(names))]
    if what == "member" and all(key in available for key in positional):
        return positional  # np.savez(path, x0, x1, ...): members in input order
    missing = [name for name in names if name not in available]
    raise InputError(
        f"{where} holds {what}s {sorted(available)}, but the model takes inputs {list(names)}; missing {missing}. "
        f"Expected one {what} named like each input (others are ignored), or a single {what} for a one-input model."
    )


def _check_names(input_names: Sequence[str]) -> list[str]:
    names = list(input_names)
    if not names or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise InputError(f"Input names must be distinct strings, at least one. Received {names!r}.")
    return names


def positive_int(name: str, value: Any) -> int:
    """``value`` as an int when it is a positive integer (not a bool); else an InputError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be a positive int. Received {value!r}.")
    return int(value)


def _check_batch_size(batch_size: Any) -> int:
    return positive_int("batch_size", batch_size)


TEXT_DTYPE = "str"  # the dtype describe() gives a text input


def text_input_names(model: Any) -> list[str]:
    """The names of the model's inputs that take strings (Keras ``Input(dtype="string")``), in input order."""
    return [spec["name"] for spec in model.input_specs if spec.get("dtype") == "string"]


def to_device(value: Any, device: torch.device | str, non_blocking: bool = False) -> Any:
    """One batch input on ``device``: a tensor is moved; texts (object arrays of str) stay on the host."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=non_blocking)
    return value


def _text_rows(value: Any, where: str) -> np.ndarray:
    """The samples of a text input as an object array of str, samples first."""
    from ..layers.text import as_string_array

    if isinstance(value, (str, bytes)):
        raise InputError(
            f"{where} is one {type(value).__name__}. Expected a batch of texts: a list, tuple or numpy array of "
            "strings, one per sample."
        )
    array = as_string_array(value, where)
    if array.ndim == 0:
        raise InputError(f"{where} is a single text. Expected a list, tuple or numpy array of strings, samples first.")
    return array


def _is_texts(value: Any) -> bool:
    """Whether ``value`` reads as the samples of one text input (not a list of inputs)."""
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "USO"
    if isinstance(value, (list, tuple)):
        return not (len(value) == 1 and isinstance(value[0], (np.ndarray, torch.Tensor)))
    return False


def _class_name(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


# ----------------------------------------------------------------------------------------------------------------
# columns: one input of a random-access or streamed source


class _Reader(Protocol):
    def rows(self, start: int, stop: int) -> Any: ...  # a tensor, or an object array of str (text)

    def skip(self, start: int, stop: int) -> None: ...


class _Column:
    """One input of a source with a known number of samples: its shape, dtype and a reader of its rows."""

    name: str  # the model input it feeds
    shape: tuple[int, ...]  # (num_samples, *sample_shape)
    dtype: str  # torch dtype name of the tensors it yields
    extra: dict[str, Any]  # what describe() adds (member, tensor, compression)

    def reader(self, stack: ExitStack) -> _Reader:
        """A reader for one pass over the rows; files it opens are closed by ``stack``."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, **self.extra}


class _ArrayColumn(_Column):
    """A numpy array or memory map: rows copied on demand."""

    def __init__(self, name: str, array: np.ndarray, where: str, extra: dict[str, Any] | None = None) -> None:
        if array.ndim == 0:
            raise InputError(f"{where} is a scalar. Expected an array whose first axis is the samples.")
        self.name, self.array, self.extra = name, array, dict(extra or {})
        self.shape = tuple(int(s) for s in array.shape)
        self.dtype = _numpy_dtype_name(array.dtype, where)

    def reader(self, stack: ExitStack) -> _Reader:
        return self

    def rows(self, start: int, stop: int) -> torch.Tensor:
        return _rows_to_tensor(self.array[start:stop])  # (stop - start, *sample_shape)

    def skip(self, start: int, stop: int) -> None:
        pass


class _TextColumn(_Column):
    """A text input: an object array of str, rows copied on demand."""

    def __init__(self, name: str, value: Any, where: str) -> None:
        self.name, self.extra = name, {}
        self.array = _text_rows(value, where)
        self.shape = tuple(int(s) for s in self.array.shape)
        self.dtype = TEXT_DTYPE

    def reader(self, stack: ExitStack) -> _Reader:
        return self

    def rows(self, start: int, stop: int) -> np.ndarray:
        return self.array[start:stop].copy()  # (stop - start, *sample_shape) object array of str

    def skip(self, start: int, stop: int) -> None:
        pass


class _TensorColumn(_Column):
    """A torch tensor (on any device): rows copied to fresh CPU memory on demand."""

    def __init__(self, name: str, tensor: torch.Tensor, where: str) -> None:
        _check_tensor(tensor, where)
        if tensor.dim() == 0:
            raise InputError(f"{where} is a scalar tensor. Expected a tensor whose first axis is the samples.")
        self.name, self.tensor, self.extra = name, tensor.detach(), {}
        self.shape = tuple(int(s) for s in tensor.shape)
        self.dtype = _torch_dtype_name(tensor.dtype)

    def reader(self, stack: ExitStack) -> _Reader:
        return self

    def rows(self, start: int, stop: int) -> torch.Tensor:
        rows = self.tensor[start:stop]  # (stop - start, *sample_shape), a view
        return torch.empty(rows.shape, dtype=rows.dtype).copy_(rows)  # one copy, to the CPU, contiguous

    def skip(self, start: int, stop: int) -> None:
        pass


class _SafetensorsColumn(_Column):
    """A tensor of a ``.safetensors`` file, read with ``get_slice`` one batch of rows at a time."""

    def __init__(self, name: str, path: Path, key: str, shape: Sequence[int], code: str) -> None:
        self.name, self.path, self.key = name, path, key
        where = f"Tensor {key!r} of {path}"
        if code not in _SAFETENSORS_DTYPES:
            raise InputError(
                f"{where} has dtype {code}. Expected one of {sorted(_SAFETENSORS_DTYPES)} (bool, ints or floats)."
            )
        if len(shape) == 0:
            raise InputError(f"{where} is a scalar. Expected a tensor whose first axis is the samples.")
        self.shape = tuple(int(s) for s in shape)
        self.dtype = _SAFETENSORS_DTYPES[code]
        self.extra = {"tensor": key}

    def reader(self, stack: ExitStack) -> _Reader:
        from safetensors import safe_open

        handle = stack.enter_context(safe_open(str(self.path), framework="pt"))
        return _SliceReader(handle.get_slice(self.key))


class _SliceReader:
    def __init__(self, tensor_slice: Any) -> None:
        self.slice = tensor_slice

    def rows(self, start: int, stop: int) -> torch.Tensor:
        return self.slice[start:stop].contiguous()  # (stop - start, *sample_shape), read from the file

    def skip(self, start: int, stop: int) -> None:
        pass


class _StreamColumn(_Column):
    """A compressed ``.npz`` member: decompressed front to back, one batch of rows at a time."""

    def __init__(
        self, name: str, path: Path, member: str, dtype: np.dtype[Any], shape: tuple[int, ...], extra: dict[str, Any]
    ) -> None:
        self.name, self.path, self.member, self.extra = name, path, member, extra
        self.np_dtype, self.shape = dtype, shape
        self.dtype = _numpy_dtype_name(dtype, f"Member {extra['member']!r} of {path}")
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize

    def reader(self, stack: ExitStack) -> _Reader:
        where = f"Member {self.extra['member']!r} of {self.path}"
        archive = stack.enter_context(zipfile.ZipFile(self.path))
        stream = stack.enter_context(archive.open(self.member))
        _read_npy_header(stream, where)
        return _StreamReader(self, stream, where)


class _StreamReader:
    def __init__(self, column: _StreamColumn, stream: IO[bytes], where: str) -> None:
        self.column, self.stream, self.where, self.position = column, stream, where, 0

    def _read(self, nbytes: int) -> bytes:
        try:
            data = self.stream.read(nbytes)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
            raise InputError(f"{self.where} is damaged: {type(err).__name__}: {err}") from err
        if len(data) != nbytes:
            raise InputError(f"{self.where} ends early: expected {nbytes} more bytes, read {len(data)}.")
        return data

    def rows(self, start: int, stop: int) -> torch.Tensor:
        self._seek(start)
        column = self.column
        data = bytearray(self._read((stop - start) * column.row_bytes))  # writable, owned by the tensor below
        self.position = stop
        rows = np.frombuffer(data, dtype=column.np_dtype).reshape((stop - start, *column.shape[1:]))
        if not rows.dtype.isnative:
            rows = rows.astype(rows.dtype.newbyteorder("="))
        return torch.from_numpy(rows)  # (stop - start, *sample_shape)

    def skip(self, start: int, stop: int) -> None:
        self._seek(start)
        left = (stop - start) * self.column.row_bytes
        while left > 0:
            left -= len(self._read(min(left, _SKIP_CHUNK)))
        self.position = stop

    def _seek(self, start: int) -> None:
        if start != self.position:  # batches() reads in order; anything else is a bug here
            raise RuntimeError(f"{self.where}: streamed rows read out of order ({start} after {self.position}).")


def _read_npy_header(stream: IO[bytes], where: str) -> tuple[np.dtype[Any], tuple[int, ...], bool]:
    """Parse an ``.npy`` header at the stream's position: (dtype, shape, fortran_order)."""
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise InputError(f"{where} is an .npy array of format version {version}. Expected version 1.0 or 2.0.")
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise InputError(f"{where} is not a readable .npy array: {type(err).__name__}: {err}") from err
    if dtype.hasobject:
        raise InputError(f"{where} holds Python objects (dtype {dtype}), which are never read. Save numeric arrays.")
    return dtype, tuple(int(s) for s in shape), bool(fortran)


# ----------------------------------------------------------------------------------------------------------------
# random-access and file sources


class _ColumnSource(Source):
    """A source whose inputs are columns with a known number of samples, batched as [j*B, min((j+1)*B, N))."""

    def __init__(self, columns: list[_Column], batch_size: int, where: str) -> None:
        counts = {c.name: c.shape[0] for c in columns}
        if len(set(counts.values())) != 1:
            raise InputError(f"{where}: all inputs must have the same number of samples (axis 0). Received {counts}.")
        num_samples = columns[0].shape[0]
        if num_samples == 0:
            raise InputError(f"{where} holds no samples (axis 0 has size 0). Expected at least one.")
        self._columns = columns
        self.num_samples: int = num_samples
        self.batch_size = batch_size

    def _describe_inputs(self) -> list[dict[str, Any]]:
        return [c.describe() for c in self._columns]

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "num_samples": self.num_samples, "inputs": self._describe_inputs()}

    def batches(self, want: Callable[[int], bool] | None = None) -> Iterator[Batch]:
        n, size = self.num_samples, self.batch_size
        with ExitStack() as stack:
            readers = [c.reader(stack) for c in self._columns]
            for j in range(-(-n // size)):
                start, stop = j * size, min(n, (j + 1) * size)
                if want is None or want(j):
                    yield Batch(j, start, stop - start, [r.rows(start, stop) for r in readers])
                else:
                    for r in readers:
                        r.skip(start, stop)
                    yield Batch(j, start, stop - start, None)


class ArraySource(_ColumnSource):
    """In-memory numpy arrays or torch tensors (one per input)."""

    kind = "arrays"

    def __init__(
        self, values: Sequence[Any], names: Sequence[str], batch_size: int, text_inputs: Sequence[str] = ()
    ) -> None:
        columns: list[_Column] = []
        for name, value in zip(names, values):
            where = f"Input {name!r}"
            if name in text_inputs:
                columns.append(_TextColumn(name, value, where))
            elif isinstance(value, torch.Tensor):
                columns.append(_TensorColumn(name, value, where))
            elif isinstance(value, np.ndarray):
                columns.append(_ArrayColumn(name, value, where))
            else:
                raise InputError(
                    f"{where} is a {type(value).__name__}. Expected a numpy array or torch tensor "
                    "(convert nested lists with np.asarray first)."
                )
        super().__init__(columns, batch_size, "Data")


class _FileSource(_ColumnSource):
    def __init__(self, path: Path, size: int, columns: list[_Column], batch_size: int) -> None:
        self.path, self.file_bytes = path, size
        super().__init__(columns, batch_size, str(path))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "file": self.path.name, "bytes": self.file_bytes}


class NpySource(_FileSource):
    """A ``.npy`` file, memory-mapped (one input)."""

    kind = "npy"

    def __init__(self, path: Path, size: int, names: Sequence[str], batch_size: int) -> None:
        if len(names) != 1:
            raise InputError(
                f"{path} is an .npy file, which holds one array, but the model takes {len(names)} inputs "
                f"{list(names)}. Pass an .npz or .safetensors file with one entry per input name instead."
            )
        with open(path, "rb") as f:
            if f.read(6) != b"\x93NUMPY":
                raise InputError(f"{path} is not an .npy file (it lacks the NumPy magic bytes).")
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise InputError(
                f"{path} cannot be memory-mapped as an .npy array: {err}. Object arrays are refused; save numeric "
                "arrays (e.g. padded integer token ids)."
            ) from err
        super().__init__(path, size, [_ArrayColumn(names[0], array, str(path))], batch_size)


class NpzSource(_FileSource):
    """An ``.npz`` file: stored members memory-mapped in place, compressed members streamed."""

    kind = "npz"

    def __init__(self, path: Path, size: int, names: Sequence[str], batch_size: int) -> None:
        try:
            with zipfile.ZipFile(path) as archive:
                infos = [info for info in archive.infolist() if not info.is_dir()]
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
            raise InputError(f"{path} is not a readable .npz (zip) file: {type(err).__name__}: {err}") from err
        members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            key = info.filename.removesuffix(".npy")
            if key in members:
                raise InputError(f"{path} holds member {key!r} twice. Expected distinct member names.")
            members[key] = info
        keys = _entries_for_inputs(list(members), names, str(path), "member")
        columns = [self._column(path, name, members[key], key) for name, key in zip(names, keys)]
        super().__init__(path, size, columns, batch_size)

    @staticmethod
    def _column(path: Path, name: str, info: zipfile.ZipInfo, key: str) -> _Column:
        where = f"Member {key!r} of {path}"
        if info.flag_bits & 0x1:
            raise InputError(f"{where} is encrypted. Expected an unencrypted .npz (np.savez / np.savez_compressed).")
        if info.compress_type == zipfile.ZIP_STORED:
            extra = {"member": key, "compression": "stored"}
            return _ArrayColumn(name, _map_stored_member(path, info, where), where, extra)
        try:
            with zipfile.ZipFile(path) as archive, archive.open(info) as stream:
                dtype, shape, fortran = _read_npy_header(stream, where)
                header_bytes = stream.tell()
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, EOFError) as err:
            raise InputError(f"{where} cannot be decompressed: {type(err).__name__}: {err}") from err
        _check_member_size(where, dtype, shape, header_bytes, info.file_size)
        if not shape:
            raise InputError(f"{where} is a scalar. Expected an array whose first axis is the samples.")
        if fortran and len(shape) > 1:
            raise InputError(
                f"{where} is compressed and stored in Fortran order, so its rows cannot be streamed. Save it "
                "C-ordered (np.ascontiguousarray) or uncompressed (np.savez)."
            )
        compression = _COMPRESSION_NAMES.get(info.compress_type, str(info.compress_type))
        return _StreamColumn(name, path, info.filename, dtype, shape, {"member": key, "compression": compression})


def _check_member_size(where: str, dtype: np.dtype[Any], shape: tuple[int, ...], header: int, size: int) -> None:
    need = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if need != size:
        raise InputError(
            f"{where} declares shape {shape} of {dtype}, which needs {need} bytes with its header, but the member "
            f"holds {size}. The file is damaged."
        )


def _map_stored_member(path: Path, info: zipfile.ZipInfo, where: str) -> np.ndarray:
    """Memory-map an uncompressed ``.npz`` member where it lies inside the zip."""
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(_ZIP_LOCAL_HEADER)
        if len(local) != _ZIP_LOCAL_HEADER or local[:4] != b"PK\x03\x04":
            raise InputError(f"{where}: the zip local header is damaged (no signature at offset {info.header_offset}).")
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        data_start = info.header_offset + _ZIP_LOCAL_HEADER + name_length + extra_length
        f.seek(data_start)
        dtype, shape, fortran = _read_npy_header(f, where)  # type: ignore[arg-type]
        header_bytes = f.tell() - data_start
        file_size = os.fstat(f.fileno()).st_size
    _check_member_size(where, dtype, shape, header_bytes, info.file_size)
    if data_start + info.file_size > file_size:
        raise InputError(f"{where} extends past the end of the file ({file_size} bytes). The file is damaged.")
    if dtype.itemsize * int(np.prod(shape, dtype=np.int64)) == 0:
        return np.empty(shape, dtype=dtype)  # nothing to map
    return np.memmap(
        path, dtype=dtype, mode="r", offset=data_start + header_bytes, shape=shape, order="F" if fortran else "C"
    )


class SafetensorsSource(_FileSource):
    """A ``.safetensors`` file, read one batch of rows at a time with ``get_slice``."""

    kind = "safetensors"

    def __init__(self, path: Path, size: int, names: Sequence[str], batch_size: int) -> None:
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                available = list(handle.keys())
                keys = _entries_for_inputs(available, names, str(path), "tensor")
                infos = {key: (handle.get_slice(key).get_shape(), handle.get_slice(key).get_dtype()) for key in keys}
        except (SafetensorError, OSError, ValueError) as err:
            raise InputError(f"{path} is not a readable .safetensors file: {type(err).__name__}: {err}") from err
        columns: list[_Column] = [_SafetensorsColumn(name, path, key, *infos[key]) for name, key in zip(names, keys)]
        super().__init__(path, size, columns, batch_size)


_NON_REGULAR = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _file_source(path: Path, names: Sequence[str], batch_size: int) -> Source:
    try:
        info = os.stat(path)
    except FileNotFoundError as err:
        raise InputError(f"Data file {path} does not exist.") from err
    except OSError as err:
        raise InputError(f"Data file {path} cannot be read: {err}") from err
    if not stat.S_ISREG(info.st_mode):
        what = next((text for test, text in _NON_REGULAR if test(info.st_mode)), "not a regular file")
        raise InputError(f"Data path {path} is {what}. Expected a regular {'/'.join(FILE_SUFFIXES)} file.")
    suffix = path.suffix.lower()
    kinds: dict[str, Callable[[Path, int, Sequence[str], int], Source]] = {
        ".npy": NpySource,
        ".npz": NpzSource,
        ".safetensors": SafetensorsSource,
    }
    if suffix not in kinds:
        raise InputError(
            f"Data file {path} has suffix {path.suffix!r}. Expected one of {', '.join(FILE_SUFFIXES)} "
            "(or pass arrays, tensors or a torch Dataset/DataLoader)."
        )
    return kinds[suffix](path, info.st_size, names, batch_size)


# ----------------------------------------------------------------------------------------------------------------
# torch datasets and loaders


def _pick_inputs(value: Any, names: Sequence[str], where: str) -> list[Any]:
    """The inputs of one dataset item or loader batch, in input order (trailing labels and extra keys dropped)."""
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
        if len(names) != 1:
            raise InputError(
                f"{where} is a single {type(value).__name__}, but the model takes {len(names)} inputs "
                f"{list(names)}. Expected a tuple/list (inputs in that order, labels after) or a dict by input name."
            )
        return [value]
    if isinstance(value, Mapping):
        missing = [name for name in names if name not in value]
        if missing:
            raise InputError(
                f"{where} is a dict with keys {sorted(map(str, value))}, but the model takes inputs {list(names)}; "
                f"missing {missing}. Expected a key per input name (other keys are ignored)."
            )
        return [value[name] for name in names]
    if isinstance(value, (list, tuple)):
        if len(value) < len(names):
            raise InputError(
                f"{where} is a {type(value).__name__} of {len(value)} element(s), but the model takes {len(names)} "
                f"inputs {list(names)}. Expected the inputs first, in that order (trailing labels are ignored)."
            )
        return list(value[: len(names)])
    raise InputError(
        f"{where} is a {type(value).__name__}. Expected a tensor/array (one input), a tuple/list "
        "(inputs in Keras order, then optional labels) or a dict by input name."
    )


def _collate(items: list[Any], names: Sequence[str], first: int, owner: str) -> list[torch.Tensor]:
    """Stack dataset items ``first, first + 1, ...`` into one batch per input with ``default_collate``."""
    picked = [_pick_inputs(item, names, f"Item {first + k} of {owner}") for k, item in enumerate(items)]
    batch: list[torch.Tensor] = []
    for i, name in enumerate(names):
        values = [_as_batch_tensor(p[i], f"Item {first + k} of {owner}, input {name!r},") for k, p in enumerate(picked)]
        try:
            batch.append(default_collate(values))  # (n, *sample_shape)
        except RuntimeError as err:
            shapes = sorted({tuple(v.shape) for v in values})
            raise InputError(
                f"Input {name!r} of items {first} to {first + len(items) - 1} of {owner} cannot be stacked into one "
                f"batch: shapes {shapes[:4]}{' ...' if len(shapes) > 4 else ''}. Items of one batch must have the "
                "same shape: pad variable-length sequences, or pass a DataLoader whose collate_fn pads."
            ) from err
    return batch


class DatasetSource(Source):
    """A map-style ``torch.utils.data.Dataset``: ``batch_size`` consecutive items per batch."""

    kind = "dataset"

    def __init__(self, dataset: Dataset[Any], names: Sequence[str], batch_size: int) -> None:
        try:
            num_samples = len(dataset)  # type: ignore[arg-type]
        except TypeError as err:
            raise InputError(
                f"Dataset {_class_name(dataset)} has no __len__. Expected a map-style Dataset (with __len__ and "
                "__getitem__) or an IterableDataset."
            ) from err
        if num_samples == 0:
            raise InputError(f"Dataset {_class_name(dataset)} holds no samples (len 0). Expected at least one.")
        self.dataset, self.names = dataset, list(names)
        self.num_samples: int = int(num_samples)
        self.batch_size = batch_size

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "dataset": _class_name(self.dataset), "num_samples": self.num_samples}

    def batches(self, want: Callable[[int], bool] | None = None) -> Iterator[Batch]:
        n, size, cls = self.num_samples, self.batch_size, _class_name(self.dataset)
        for j in range(-(-n // size)):
            start, stop = j * size, min(n, (j + 1) * size)
            if want is not None and not want(j):
                yield Batch(j, start, stop - start, None)
                continue
            items = [self.dataset[i] for i in range(start, stop)]
            yield Batch(j, start, stop - start, _collate(items, self.names, start, cls))


class IterableSource(Source):
    """A ``torch.utils.data.IterableDataset``: its items in groups of ``batch_size``; the size is unknown ahead."""

    kind = "iterable"

    def __init__(self, dataset: IterableDataset[Any], names: Sequence[str], batch_size: int) -> None:
        self.dataset, self.names = dataset, list(names)
        self.num_samples = None
        self.batch_size = batch_size

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "dataset": _class_name(self.dataset), "num_samples": None}

    def batches(self, want: Callable[[int], bool] | None = None) -> Iterator[Batch]:
        items_iter, cls, start = iter(self.dataset), _class_name(self.dataset), 0
        for j in itertools.count():
            items = list(itertools.islice(items_iter, self.batch_size))
            if not items:
                break
            inputs = _collate(items, self.names, start, cls) if want is None or want(j) else None
            yield Batch(j, start, len(items), inputs)
            start += len(items)
        if start == 0:
            raise InputError(f"IterableDataset {cls} yielded no items. Expected at least one sample.")


class DataLoaderSource(Source):
    """A ``torch.utils.data.DataLoader``: its own batches, in the order it yields them.

    The loader must keep data order (no shuffling). ``num_samples`` is known when it reads a map-style dataset
    with its default sequential sampler; with another sampler or an iterable dataset it is ``None``.
    """

    kind = "dataloader"

    def __init__(self, loader: DataLoader[Any], names: Sequence[str]) -> None:
        self.loader, self.names = loader, list(names)
        samplers = [loader.sampler, getattr(loader.batch_sampler, "sampler", None)]
        for sampler in samplers:
            if isinstance(sampler, _RANDOM_SAMPLERS) or (
                isinstance(sampler, DistributedSampler) and getattr(sampler, "shuffle", False)
            ):
                raise InputError(
                    f"The DataLoader shuffles its data ({type(sampler).__name__}). Extraction stores samples in data "
                    "order and must read them in the same order on every run: build the DataLoader with "
                    "shuffle=False (and no random sampler)."
                )
        self.num_samples: int | None = None
        sequential = isinstance(loader.batch_sampler, BatchSampler) and isinstance(
            loader.batch_sampler.sampler, SequentialSampler
        )
        if sequential and not isinstance(loader.dataset, IterableDataset) and hasattr(loader.dataset, "__len__"):
            total = len(loader.dataset)
            step = loader.batch_sampler.batch_size  # type: ignore[union-attr]
            self.num_samples = total // step * step if loader.drop_last else total
            if self.num_samples == 0:
                raise InputError(f"The DataLoader yields no samples (dataset length {total}). Expected at least one.")
        self._pending: tuple[Iterator[Any], Any] | None = None
        if loader.batch_size is not None:
            self.batch_size = int(loader.batch_size)
        else:  # the loader's batches define the size: pull the first one now, and hand it out first later
            stream = iter(loader)
            first = next(stream, _END)
            if first is _END:
                raise InputError("The DataLoader yields no batches. Expected at least one sample.")
            self.batch_size = int(self._inputs(first, 0)[0].shape[0])
            self._pending = (stream, first)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "dataset": _class_name(self.loader.dataset),
            "batch_size": self.batch_size,
            "num_samples": self.num_samples,
        }

    def _inputs(self, raw: Any, j: int) -> list[torch.Tensor]:
        where = f"Batch {j} of the DataLoader"
        inputs = [
            _as_batch_tensor(v, f"{where}, input {n!r},")
            for n, v in zip(self.names, _pick_inputs(raw, self.names, where))
        ]
        sizes = {n: (int(t.shape[0]) if t.dim() else None) for n, t in zip(self.names, inputs)}
        if None in sizes.values() or len(set(sizes.values())) != 1 or 0 in sizes.values():
            raise InputError(
                f"{where} has inputs with samples (axis 0) {sizes}. Expected the same non-zero number for every input."
            )
        return inputs

    def batches(self, want: Callable[[int], bool] | None = None) -> Iterator[Batch]:
        if self._pending is not None:
            stream, first = self._pending
            self._pending = None
            raw_batches: Iterator[Any] = itertools.chain([first], stream)
        else:
            raw_batches = iter(self.loader)
        start = 0
        for j, raw in enumerate(raw_batches):
            inputs = self._inputs(raw, j)
            size = int(inputs[0].shape[0])
            yield Batch(j, start, size, inputs if want is None or want(j) else None)
            start += size
        if start == 0:
            raise InputError("The DataLoader yields no batches. Expected at least one sample.")


_END = object()  # marks an exhausted iterator


class TextStreamSource(Source):
    """An iterator of texts for a one-input text model: each item is one str or a batch of them (a list, tuple or
    numpy array of str, samples first); the texts are regrouped into batches of ``batch_size``. The size is unknown
    ahead and the iterator is read once."""

    kind = "text_stream"

    def __init__(self, stream: Iterable[Any], name: str, batch_size: int) -> None:
        self.stream, self.name = stream, name
        self.num_samples = None
        self.batch_size = batch_size

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "stream": _class_name(self.stream), "num_samples": None}

    def _samples(self) -> Iterator[Any]:
        for k, item in enumerate(self.stream):
            where = f"Item {k} of the text stream {_class_name(self.stream)} (input {self.name!r})"
            if isinstance(item, (str, bytes, np.str_, np.bytes_)):
                yield _text_rows([item], where)[0]
            else:
                yield from _text_rows(item, where)

    def batches(self, want: Callable[[int], bool] | None = None) -> Iterator[Batch]:
        samples, start = self._samples(), 0
        for j in itertools.count():
            group = list(itertools.islice(samples, self.batch_size))
            if not group:
                break
            inputs = None
            if want is None or want(j):
                if all(isinstance(g, str) for g in group):
                    rows = np.empty(len(group), dtype=object)  # (n,)
                    rows[:] = group
                else:  # samples of shape (k, ...): stacked, so they must agree
                    where = f"Texts {start} to {start + len(group) - 1} of the text stream"
                    rows = _text_rows([g.tolist() for g in group], where)  # (n, *sample_shape)
                inputs = [rows]
            yield Batch(j, start, len(group), inputs)
            start += len(group)
        if start == 0:
            raise InputError(f"The text stream {_class_name(self.stream)} yielded no texts. Expected at least one.")


# ----------------------------------------------------------------------------------------------------------------
# entry points


def _check_dict_keys(data: Mapping[Any, Any], names: Sequence[str]) -> None:
    """Raises InputError unless the dict's keys are exactly the model's input names."""
    unknown = sorted(str(k) for k in data if k not in names)
    missing = [n for n in names if n not in data]
    if unknown or missing:
        raise InputError(
            f"The model takes inputs {names}. Received a dict with keys {sorted(map(str, data))}"
            + (f"; unknown {unknown}" if unknown else "")
            + (f"; missing {missing}" if missing else "")
            + "."
        )


def as_source(data: Any, input_names: Sequence[str], batch_size: int, text_inputs: Sequence[str] = ()) -> Source:
    """Wrap any data ``tlp.extract`` accepts as a :class:`Source`.

    Args:
        data: a numpy array or torch tensor (one-input model); a list/tuple of them in Keras input order; a dict
            by input name; a path (``str`` or ``os.PathLike``) to a regular ``.npy``, ``.npz`` or ``.safetensors``
            file; or a torch ``Dataset`` (map-style), ``IterableDataset`` or ``DataLoader``. See the module
            docstring for how items, labels and file entries are matched to inputs.
        input_names: the model's input names, in Keras input order.
        batch_size: samples per batch (a DataLoader keeps its own).
        text_inputs: the inputs that take strings (:func:`text_input_names`). Each takes a list, tuple or numpy
            array of str (in a list or dict as above; alone for a one-input model), and a one-input text model
            also takes an iterator of str or of batches of str; their batches are object arrays of str.

    Returns:
        The source; nothing but file headers has been read yet (a DataLoader without a ``batch_size`` has pulled
        its first batch, which it hands out first).

    Raises:
        InputError: the data is of no accepted kind, does not match the inputs, is empty, is not numeric, or
            names a file that is missing, not regular, of another suffix, or damaged.

    Example:
        >>> src = as_source(np.zeros((10, 5), dtype=np.int32), ["tokens"], batch_size=4)
        >>> [(b.start, b.size) for b in src.batches()]
        [(0, 4), (4, 4), (8, 2)]
    """
    names = _check_names(input_names)
    size = _check_batch_size(batch_size)
    texts = [name for name in names if name in set(text_inputs)]
    if texts:
        return _text_source(data, names, size, texts)
    if isinstance(data, (str, os.PathLike)):
        return _file_source(Path(os.fsdecode(data)), names, size)
    if isinstance(data, DataLoader):
        return DataLoaderSource(data, names)
    if isinstance(data, IterableDataset):
        return IterableSource(data, names, size)
    if isinstance(data, Dataset):
        return DatasetSource(data, names, size)
    if isinstance(data, (np.ndarray, torch.Tensor)):
        if len(names) != 1:
            raise InputError(
                f"The model takes {len(names)} inputs {names}. Received one {type(data).__name__}. Pass a list in "
                "that order or a dict by input name."
            )
        return ArraySource([data], names, size)
    if isinstance(data, Mapping):
        _check_dict_keys(data, names)
        return ArraySource([data[n] for n in names], names, size)
    if isinstance(data, (list, tuple)):
        if len(data) != len(names):
            raise InputError(
                f"The model takes {len(names)} input(s) {names}, in this order. Received a {type(data).__name__} "
                f"of {len(data)}."
            )
        return ArraySource(list(data), names, size)
    raise InputError(
        f"Cannot extract from a {type(data).__module__}.{type(data).__qualname__}. Expected {ACCEPTED_KINDS}."
    )


def _text_source(data: Any, names: list[str], size: int, texts: list[str]) -> Source:
    """The source of a model with text inputs: lists/arrays of str (alone, in a list or a dict), or a stream."""
    accepted = (
        f"Expected for text input(s) {texts}: a list, tuple or numpy array of strings"
        + (" (or an iterator of strings or of batches of strings)" if len(names) == 1 else "")
        + f", {'alone' if len(names) == 1 else 'in a list in Keras input order or a dict by input name'}."
    )
    if len(names) == 1 and _is_texts(data):
        return ArraySource([data], names, size, texts)
    if isinstance(data, (str, bytes, os.PathLike)):
        raise InputError(
            f"The model takes text in input(s) {texts}. Received the {type(data).__name__} {_short_repr(data)}. "
            f"{accepted} Fix: to read a file of texts, pass its lines, e.g. Path(file).read_text().splitlines()."
        )
    if isinstance(data, (torch.Tensor, np.ndarray)):
        raise InputError(
            f"The model takes text in input(s) {texts}. Received a {type(data).__name__} of dtype {data.dtype} and "
            f"shape {tuple(data.shape)}. {accepted}"
        )
    if isinstance(data, (Dataset, DataLoader)):
        raise InputError(f"The model takes text in input(s) {texts}. Received a {_class_name(data)}. {accepted}")
    if isinstance(data, Mapping):
        _check_dict_keys(data, names)
        return ArraySource([data[n] for n in names], names, size, texts)
    if isinstance(data, (list, tuple)):
        if len(data) != len(names):
            raise InputError(
                f"The model takes {len(names)} input(s) {names}, in this order. Received a {type(data).__name__} "
                f"of {len(data)}. {accepted}"
            )
        return ArraySource(list(data), names, size, texts)
    if len(names) == 1 and isinstance(data, Iterable):
        return TextStreamSource(data, names[0], size)
    raise InputError(f"Cannot extract from a {_class_name(data)}. {accepted}")


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def hash_inputs(inputs: Sequence[Any]) -> str:
    """SHA-256 (hex) over each tensor's dtype, shape and bytes, in order: the fingerprint of one batch of inputs.

    A text input (an object array of str) adds ``str``, its shape and each text's UTF-8 length and bytes.
    """
    digest = hashlib.sha256(f"{len(inputs)}\n".encode())
    for tensor in inputs:
        if isinstance(tensor, np.ndarray):
            digest.update(f"{TEXT_DTYPE} {list(tensor.shape)}\n".encode())
            for text in tensor.reshape(-1):
                encoded = str(text).encode("utf-8")
                digest.update(f"{len(encoded)}\n".encode())
                digest.update(encoded)
            continue
        flat = tensor.detach().cpu().contiguous().reshape(-1)  # (numel,)
        digest.update(f"{_torch_dtype_name(tensor.dtype)} {list(tensor.shape)}\n".encode())
        digest.update(flat.view(torch.uint8).numpy().data)
    return digest.hexdigest()
