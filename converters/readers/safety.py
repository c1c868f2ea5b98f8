"""The guards the readers put between untrusted bytes and everything else.

Every byte of a model file passes through one of these functions before anything is built from
it: regular-file checks, bounded zip members, bounded JSON, a structural check of every HDF5 file
(links, storage, filters, declared sizes) *before* any data is read, a byte budget for the arrays
read, and the boundary that turns whatever a malformed file still provokes into a
:class:`~torch_lstm_probe.errors.KerasFileError` naming the file. The numbers live in
:mod:`.limits`.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import stat
import zipfile
from pathlib import Path
from typing import IO, Any, Iterator

import h5py
import numpy as np

from torch_lstm_probe.errors import FileLimitError, KerasFileError, TorchLstmProbeError, UnsafeFileError

from .limits import (
    ALLOWED_H5_FILTERS,
    EXPANSION_FLOOR_BYTES,
    MAX_ATTRIBUTE_BYTES,
    MAX_ATTRIBUTE_ELEMENTS,
    MAX_EXPANSION_RATIO,
    MAX_H5_DEPTH,
    MAX_H5_OBJECTS,
    MAX_JSON_BYTES,
    MAX_JSON_DEPTH,
    MAX_ZIP_MEMBERS,
    expansion_budget,
    max_weights_bytes,
    short_repr,
    short_text,
)

__all__ = [
    "require_regular_file",
    "read_head",
    "load_json",
    "check_json_depth",
    "open_zip",
    "read_member",
    "check_h5_file",
    "open_h5_bytes",
    "read_dataset",
    "read_attr",
    "read_budget",
    "charge_bytes",
    "file_boundary",
]

_CHUNK = 1024 * 1024  # bytes read at a time from a zip member


# ---------------------------------------------------------------- regular files
def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def require_regular_file(path: Path | str, role: str = "model file") -> int:
    """Checks that ``path`` is a regular file (never opening it) and returns its size in bytes.

    A FIFO, socket or device would block the reader or never end, so only regular files are read.

    Raises:
        FileNotFoundError: nothing exists at ``path``.
        KerasFileError: ``path`` exists but is not a regular file, or cannot be inspected.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"Keras {role} not found: {path}") from None
    except OSError as err:
        raise KerasFileError(f"{path}: cannot inspect the {role} ({err}).") from err
    if not stat.S_ISREG(info.st_mode):
        raise KerasFileError(
            f"{path}: is {_kind(info.st_mode)}, not a regular file. Only regular files are read (a pipe or "
            f"device could block forever). Fix: save or copy the {role} to a file and load that."
        )
    return info.st_size


def read_head(path: Path | str, size: int = 16) -> bytes:
    """The first ``size`` bytes of a regular file, opened without blocking on FIFOs."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        raise KerasFileError(f"{path}: cannot open the file ({err}).") from err
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise KerasFileError(f"{path}: is not a regular file. Only regular files are read.")
        return os.read(fd, size)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- JSON
def check_json_depth(value: Any, what: str, source: str, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuses JSON nested deeper than ``limit`` (walked iteratively, never recursively)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            raise FileLimitError(
                f"{source}: {what} nests lists/objects deeper than {limit} levels. Keras configs nest far "
                "less; the file is corrupt or crafted."
            )
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


def load_json(raw: bytes | bytearray | str, what: str, source: str) -> Any:
    """Parses one JSON document of at most ``MAX_JSON_BYTES`` and ``MAX_JSON_DEPTH`` levels.

    Raises:
        FileLimitError: the document is too large or too deeply nested.
        KerasFileError: it is not valid JSON.
    """
    if len(raw) > MAX_JSON_BYTES:
        raise FileLimitError(
            f"{source}: {what} is {len(raw)} bytes; the limit for one JSON document is {MAX_JSON_BYTES} bytes."
        )
    try:
        value = json.loads(raw)
    except RecursionError as err:
        raise FileLimitError(f"{source}: {what} nests lists/objects deeper than Python can parse.") from err
    except (ValueError, UnicodeDecodeError, TypeError) as err:  # JSONDecodeError is a ValueError
        raise KerasFileError(f"{source}: {what} is not valid JSON ({short_text(str(err))}).") from err
    check_json_depth(value, what, source)
    return value


# ---------------------------------------------------------------- zip archives
def _declared_entries(fp: IO[bytes]) -> int | None:
    """The member count the end-of-central-directory record declares, read before zipfile parses
    the whole directory (a tiny file can declare millions of members)."""
    end_record = getattr(zipfile, "_EndRecData", None)
    if end_record is None:
        return None
    try:
        record = end_record(fp)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    fp.seek(0)
    return None if record is None else int(record[zipfile._ECD_ENTRIES_TOTAL])  # type: ignore[attr-defined]


def open_zip(file: Path | str | IO[bytes], source: str, what: str = "the .keras file") -> zipfile.ZipFile:
    """Opens a zip archive whose member count is within ``MAX_ZIP_MEMBERS``.

    Raises:
        FileLimitError: too many members.
        KerasFileError: not a readable zip archive.
    """
    try:
        if isinstance(file, (str, os.PathLike)):
            with open(file, "rb") as fp:
                entries = _declared_entries(fp)
        else:
            entries = _declared_entries(file)
        if entries is not None and entries > MAX_ZIP_MEMBERS:
            raise FileLimitError(f"{source}: {what} declares {entries} zip members; the limit is {MAX_ZIP_MEMBERS}.")
        archive = zipfile.ZipFile(file)
    except TorchLstmProbeError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError) as err:
        raise KerasFileError(
            f"{source}: {what} is not a readable zip archive ({short_text(str(err))}); it is damaged or truncated."
        ) from err
    if len(archive.infolist()) > MAX_ZIP_MEMBERS:
        archive.close()
        raise FileLimitError(f"{source}: {what} holds more than {MAX_ZIP_MEMBERS} zip members.")
    return archive


_COMPRESSIONS = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}


def read_member(archive: zipfile.ZipFile, name: str, limit: int, source: str) -> bytes:
    """The bytes of one zip member, bounded before and while decompressing.

    The member's declared size must be within ``limit`` and within ``MAX_EXPANSION_RATIO`` times
    its compressed size (beyond ``EXPANSION_FLOOR_BYTES``); decompression then stops as soon as
    the output passes the declared size or the limit, so a header that lies cannot make it
    allocate more.

    Raises:
        KeyError: the archive has no such member (callers phrase that error).
        FileLimitError: a bound is exceeded.
        KerasFileError: the member is encrypted, uses an unknown compression or is damaged.
    """
    info = archive.getinfo(name)
    if info.flag_bits & 0x1:
        raise KerasFileError(f"{source}: member {name!r} of the archive is encrypted; Keras never encrypts members.")
    if info.compress_type not in _COMPRESSIONS:
        raise KerasFileError(
            f"{source}: member {name!r} uses zip compression method {info.compress_type}. Expected one of "
            f"{sorted(_COMPRESSIONS.values())}."
        )
    declared = info.file_size
    allowed = min(limit, max(EXPANSION_FLOOR_BYTES, MAX_EXPANSION_RATIO * info.compress_size))
    if declared > allowed:
        raise FileLimitError(
            f"{source}: member {name!r} declares {declared} bytes uncompressed ({info.compress_size} compressed); "
            f"the limit for it is {allowed} bytes (at most {limit} bytes, and at most {MAX_EXPANSION_RATIO}x its "
            f"compressed size beyond {EXPANSION_FLOOR_BYTES}). A genuine Keras file expands far less."
            + (
                " Fix for a genuine large model: raise TORCH_LSTM_PROBE_MAX_WEIGHTS_BYTES."
                if limit >= max_weights_bytes()
                else ""
            )
        )
    chunks: list[bytes] = []
    total = 0
    try:
        with archive.open(info) as member:
            while True:
                chunk = member.read(_CHUNK)
                if not chunk:
                    break
                total += len(chunk)
                if total > declared or total > allowed:
                    raise FileLimitError(
                        f"{source}: member {name!r} decompresses to more than the {declared} bytes its header "
                        "declares; the archive is corrupt or crafted."
                    )
                chunks.append(chunk)
    except TorchLstmProbeError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError, NotImplementedError) as err:
        raise KerasFileError(
            f"{source}: cannot read {name!r} from the archive ({short_text(str(err))}); the file is damaged."
        ) from err
    except Exception as err:  # zlib.error, lzma.LZMAError, OSError from bz2: corrupt compressed data
        raise KerasFileError(
            f"{source}: cannot decompress {name!r} ({type(err).__name__}: {short_text(str(err))}); the file is damaged."
        ) from err
    if total != declared:
        raise KerasFileError(f"{source}: member {name!r} holds {total} bytes, not the {declared} its header declares.")
    return b"".join(chunks)


# ---------------------------------------------------------------- array byte budget
class _Budget:
    """Bytes of arrays still allowed from the file being read."""

    def __init__(self, source: str, limit: int) -> None:
        self.source = source
        self.limit = limit
        self.used = 0

    def charge(self, nbytes: int, where: str) -> None:
        self.used += nbytes
        if self.used > self.limit:
            raise FileLimitError(
                f"{self.source}: reading {where} brings the arrays read from this file to {self.used} bytes, above "
                f"the limit of {self.limit} bytes for a file of this size (see the Security section of the README). "
                "Fix for a genuine large model: raise TORCH_LSTM_PROBE_MAX_WEIGHTS_BYTES."
            )


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("torch_lstm_probe_read_budget", default=None)


@contextlib.contextmanager
def read_budget(source: str, stored_bytes: int) -> Iterator[None]:
    """Bounds the array bytes read while the block runs to ``expansion_budget(stored_bytes)``."""
    token = _BUDGET.set(_Budget(source, expansion_budget(stored_bytes)))
    try:
        yield
    finally:
        _BUDGET.reset(token)


def charge_bytes(nbytes: int, where: str, source: str) -> None:
    """Counts ``nbytes`` of array data against the budget of the file being read (see ``read_budget``)."""
    budget = _BUDGET.get()
    if budget is not None:
        budget.charge(nbytes, where)
    elif nbytes > max_weights_bytes():
        raise FileLimitError(f"{source}: {where} holds {nbytes} bytes, above the limit of {max_weights_bytes()} bytes.")


# ---------------------------------------------------------------- HDF5
def _elements(shape: tuple[int, ...] | None) -> int:
    count = 1
    for dim in shape or ():
        count *= int(dim)
    return count


def _check_attributes(oid: Any, path: str, source: str) -> int:
    """Checks the declared size of every attribute of an object (a low-level h5py id) without reading
    any; returns their count."""
    count = h5py.h5a.get_num_attrs(oid)
    for index in range(count):
        attr = h5py.h5a.open(oid, index=index)
        name = attr.name.decode("utf-8", "replace") if isinstance(attr.name, bytes) else str(attr.name)
        elements = _elements(attr.shape)
        nbytes = elements * attr.get_type().get_size()  # HDF5's own size: also for types NumPy lacks
        if elements > MAX_ATTRIBUTE_ELEMENTS or nbytes > MAX_ATTRIBUTE_BYTES:
            raise FileLimitError(
                f"{source}: attribute {name[:100]!r} of {path!r} declares {elements} element(s), {nbytes} "
                f"bytes; the limits are {MAX_ATTRIBUTE_ELEMENTS} elements and {MAX_ATTRIBUTE_BYTES} bytes."
            )
    return count


def _check_dataset(dataset: Any, path: str, source: str, container_bytes: int) -> int:
    """Refuses data stored outside the file, unknown filters and impossible sizes; returns the
    dataset's size in bytes once read. ``dataset`` is a low-level ``h5py.h5d.DatasetID``."""
    plist = dataset.get_create_plist()
    external = plist.get_external_count()
    if external:
        names = [os.fsdecode(plist.get_external(i)[0]) for i in range(min(external, 3))]
        raise UnsafeFileError(
            f"{source}: dataset {path!r} keeps its data in {external} external file(s) {short_repr(names)} (HDF5 "
            "external storage). Loading never reads anything outside the model file, so the file is refused."
        )
    layout = plist.get_layout()
    if layout == h5py.h5d.VIRTUAL:
        raise UnsafeFileError(
            f"{source}: dataset {path!r} is an HDF5 virtual dataset, which maps data from other datasets or files. "
            "Loading never reads anything outside the model file, so the file is refused."
        )
    for index in range(plist.get_nfilters()):
        code = plist.get_filter(index)[0]
        if code not in ALLOWED_H5_FILTERS:
            raise UnsafeFileError(
                f"{source}: dataset {path!r} uses HDF5 filter {code}, which HDF5 would load from a plugin library. "
                f"Only the built-in filters {sorted(ALLOWED_H5_FILTERS.values())} are read."
            )
    shape = dataset.shape
    nbytes = _elements(shape) * dataset.get_type().get_size()
    if nbytes > max_weights_bytes():
        raise FileLimitError(
            f"{source}: dataset {path!r} declares shape {shape} ({nbytes} bytes), above the limit of "
            f"{max_weights_bytes()} bytes. Fix for a genuine large model: raise TORCH_LSTM_PROBE_MAX_WEIGHTS_BYTES."
        )
    if layout == h5py.h5d.CONTIGUOUS:
        offset = dataset.get_offset()
        if offset is not None and offset + nbytes > container_bytes:
            raise KerasFileError(
                f"{source}: dataset {path!r} declares shape {shape} ({nbytes} bytes at offset {offset}), but the file "
                f"has only {container_bytes} bytes. The file is truncated or its shape is corrupt."
            )
    stored = dataset.get_storage_size()
    if nbytes > max(EXPANSION_FLOOR_BYTES, MAX_EXPANSION_RATIO * stored):
        raise FileLimitError(
            f"{source}: dataset {path!r} declares shape {shape} ({nbytes} bytes) but stores only {stored} bytes; "
            f"data may expand at most {MAX_EXPANSION_RATIO}x beyond {EXPANSION_FLOOR_BYTES} bytes."
        )
    return nbytes


_MAX_SOFT_LINK_HOPS = 16  # HDF5's own bound on soft links followed in one path (H5L_NUM_LINKS)


def _resolve_soft_link(f: h5py.File, group: h5py.Group, link_path: str, source: str) -> Any:
    """The object a soft link names, resolved one path component at a time, so that no external link
    is ever traversed on the way; dangling targets and cycles are refused."""
    hops = 0
    parts = [link_path.rsplit("/", 1)[1]]
    current: Any = group
    while parts:
        part = parts.pop(0)
        if part in ("", "."):
            continue
        if not isinstance(current, h5py.Group):
            raise UnsafeFileError(
                f"{source}: soft link {link_path!r} leads through {current.name!r}, which is not a group."
            )
        link = current.get(part, getlink=True)
        if link is None:
            raise UnsafeFileError(f"{source}: soft link {link_path!r} is dangling (no {part!r} in {current.name!r}).")
        if isinstance(link, h5py.ExternalLink):
            raise UnsafeFileError(
                f"{source}: soft link {link_path!r} leads through an external link to {link.filename!r}. Loading never "
                "reads anything outside the model file, so the file is refused."
            )
        if isinstance(link, h5py.SoftLink):
            hops += 1
            if hops > _MAX_SOFT_LINK_HOPS:
                raise UnsafeFileError(
                    f"{source}: soft link {link_path!r} does not resolve within {_MAX_SOFT_LINK_HOPS} links (a cycle of "
                    "soft links)."
                )
            target = str(link.path)
            if target.startswith("/"):
                current = f["/"]
            parts = target.split("/") + parts
            continue
        if not isinstance(link, h5py.HardLink):
            raise UnsafeFileError(
                f"{source}: {link_path!r} uses an HDF5 link of an unknown kind ({type(link).__name__})."
            )
        try:
            current = current[part]
        except (KeyError, OSError, RuntimeError, ValueError, TypeError) as err:
            raise KerasFileError(
                f"{source}: HDF5 cannot open {part!r} on the way of soft link {link_path!r} ({short_text(str(err))}); "
                "the file is damaged."
            ) from err
    return current


def _object_key(oid: Any) -> tuple[int, int]:
    info = h5py.h5o.get_info(oid)
    return int(info.fileno), int(info.addr)


def check_h5_file(f: h5py.File, source: str, container_bytes: int, stored_bytes: int | None = None) -> None:
    """Walks every link, object and attribute of an HDF5 file before any data or attribute is read.

    Refuses (``UnsafeFileError``) external links, datasets with external storage, virtual
    datasets, filters that are not built in, dangling or cyclic soft links and link cycles; and
    (``FileLimitError``) more than ``MAX_H5_OBJECTS`` links and attributes, groups nested deeper
    than ``MAX_H5_DEPTH``, attributes over ``MAX_ATTRIBUTE_BYTES``, and datasets whose declared
    size exceeds what the file can hold (see :func:`.limits.expansion_budget`). The walk is
    iterative and visits each object once, however many links lead to it.

    Args:
        f: the open file.
        source: the name used in messages.
        container_bytes: the size of the HDF5 image (the file, or the archive member).
        stored_bytes: the bytes the image is stored in (its compressed size inside an archive);
            defaults to ``container_bytes``.
    """
    where = ["/"]  # the object being checked, for the message when HDF5 itself fails
    try:
        _walk_h5(f, source, container_bytes, container_bytes if stored_bytes is None else stored_bytes, where)
    except TorchLstmProbeError:
        raise
    except (KeyError, OSError, RuntimeError, ValueError, TypeError) as err:
        raise KerasFileError(
            f"{source}: HDF5 cannot read the structure at {where[0][:200]!r} ({short_text(str(err))}); the file is "
            "damaged."
        ) from err


def _walk_h5(f: h5py.File, source: str, container_bytes: int, stored_bytes: int, where: list[str]) -> None:
    total_allowed = expansion_budget(stored_bytes)
    total = 0
    # Low-level h5py ids throughout: the high-level wrappers cost twice the time.
    root = h5py.h5o.open(f.id, b"/")
    visited = {_object_key(root)}
    stack: list[tuple[Any, str, int, frozenset[tuple[int, int]]]] = [(root, "/", 0, frozenset(visited))]
    seen = 0
    while stack:
        oid, path, depth, ancestors = stack.pop()
        where[0] = path
        seen += _check_attributes(oid, path, source)
        if isinstance(oid, h5py.h5d.DatasetID):
            total += _check_dataset(oid, path, source, container_bytes)
            if total > total_allowed:
                raise FileLimitError(
                    f"{source}: the datasets declare more than {total_allowed} bytes in all (the file is stored in "
                    f"{stored_bytes} bytes); the file is corrupt or crafted. Fix for a genuine large model: raise "
                    "TORCH_LSTM_PROBE_MAX_WEIGHTS_BYTES."
                )
            continue
        if not isinstance(oid, h5py.h5g.GroupID):
            continue  # a committed datatype
        if depth >= MAX_H5_DEPTH:
            raise FileLimitError(f"{source}: HDF5 groups nest deeper than {MAX_H5_DEPTH} levels at {path[:200]!r}.")
        for raw_name in oid:
            seen += 1
            if seen > MAX_H5_OBJECTS:
                raise FileLimitError(f"{source}: the HDF5 file holds more than {MAX_H5_OBJECTS} links and attributes.")
            name = raw_name.decode("utf-8", "replace")
            child_path = where[0] = f"{path.rstrip('/')}/{name}"
            kind = oid.links.get_info(raw_name).type
            if kind == h5py.h5l.TYPE_EXTERNAL:
                target_file, target = oid.links.get_val(raw_name)
                raise UnsafeFileError(
                    f"{source}: {child_path!r} is an HDF5 external link to {os.fsdecode(target_file)!r}:"
                    f"{os.fsdecode(target)!r}. Loading never reads anything outside the model file, so the file is "
                    "refused."
                )
            if kind == h5py.h5l.TYPE_SOFT:
                child = _resolve_soft_link(f, h5py.Group(oid), child_path, source).id
            elif kind == h5py.h5l.TYPE_HARD:
                try:
                    child = h5py.h5o.open(oid, raw_name)
                except (KeyError, OSError, RuntimeError, ValueError, TypeError) as err:
                    raise KerasFileError(
                        f"{source}: HDF5 cannot open {child_path!r} ({short_text(str(err))}); the file is damaged."
                    ) from err
            else:
                raise UnsafeFileError(f"{source}: {child_path!r} is an HDF5 link of a user-defined kind ({kind}).")
            key = _object_key(child)
            if key in ancestors:
                raise UnsafeFileError(
                    f"{source}: link {child_path!r} leads back to a group containing it (a link cycle)."
                )
            if key in visited:
                continue
            visited.add(key)
            stack.append((child, child_path, depth + 1, ancestors | {key}))


def open_h5_bytes(blob: bytes, member: str, source: str, stored_bytes: int | None = None) -> h5py.File:
    """Opens an HDF5 image held in memory (an archive member) and checks it with :func:`check_h5_file`.

    Raises:
        KerasFileError: the bytes are not a readable HDF5 file (or a subclass: see check_h5_file).
    """
    import io

    try:
        f = h5py.File(io.BytesIO(blob), "r")
    except (OSError, ValueError, RuntimeError) as err:
        raise KerasFileError(f"{source}: {member} in the archive is not valid HDF5 ({short_text(str(err))}).") from err
    try:
        check_h5_file(f, f"{source} ({member})", len(blob), stored_bytes)
    except BaseException:
        f.close()
        raise
    return f


def read_attr(obj: Any, key: str, source: str, default: Any = None) -> Any:
    """An HDF5 attribute of ``obj`` (``default`` if absent); HDF5's errors on a damaged file become a
    KerasFileError. Sizes were bounded by :func:`check_h5_file` before."""
    try:
        if key not in obj.attrs:
            return default
        return obj.attrs[key]
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as err:
        raise KerasFileError(
            f"{source}: cannot read attribute {key!r} of {obj.name!r} ({short_text(str(err))}); the file is damaged."
        ) from err


def read_dataset(dataset: Any, source: str, where: str) -> np.ndarray:
    """Reads one HDF5 dataset whole, charging its declared size to the file's byte budget first.

    Raises:
        FileLimitError: the budget is exhausted.
        KerasFileError: HDF5 cannot read the data (a damaged file).
    """
    try:
        nbytes = _elements(dataset.id.shape) * dataset.id.get_type().get_size()
    except (OSError, ValueError, TypeError, RuntimeError, AttributeError) as err:
        raise KerasFileError(f"{source}: cannot read weights {where}: {short_text(str(err))}.") from err
    charge_bytes(nbytes, f"weights {where}", source)
    try:
        array = np.asarray(dataset[()])
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as err:
        raise KerasFileError(
            f"{source}: cannot read weights {where}: {short_text(str(err))}. The file may be truncated."
        ) from err
    if array.dtype.kind not in "biuf":  # text, objects, compounds: no Keras weight is stored so
        raise KerasFileError(
            f"{source}: weights {where} hold {array.dtype} values. Expected numbers (Keras stores weights as "
            "float or integer arrays); the file is damaged or was not written by Keras."
        )
    return array


# ---------------------------------------------------------------- the boundary
@contextlib.contextmanager
def file_boundary(source: str, *also: str) -> Iterator[None]:
    """Turns any exception that parsing a file still raises into a typed error naming the file.

    Typed errors pass, prefixed with ``source`` where their message names neither it nor one of
    the ``also`` files (a weights file read with an architecture). ``RecursionError`` becomes :class:`FileLimitError`; every other
    ``Exception`` (a ``KeyError``, ``TypeError``, ``OSError`` ... from a structure the readers did
    not expect) becomes :class:`KerasFileError`, with the original kept as ``__cause__``.
    ``MemoryError`` is never converted: the limits exist so that it cannot happen, and if it does
    it must be seen.
    """
    try:
        yield
    except TorchLstmProbeError as err:
        if err.args and isinstance(err.args[0], str) and not any(name in err.args[0] for name in (source, *also)):
            err.args = (f"{source}: {err.args[0]}", *err.args[1:])  # every error names its file
        raise
    except MemoryError:
        raise
    except RecursionError as err:
        raise FileLimitError(f"{source}: the file nests structures too deeply to read.") from err
    except Exception as err:
        raise KerasFileError(
            f"{source}: the file is malformed and cannot be read ({type(err).__name__}: {short_text(str(err))})."
        ) from err
