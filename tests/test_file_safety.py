"""Hostile files: nothing is read outside the file, sizes and depths are bounded, nothing hangs,
and every failure is a typed error naming the file (DESIGN section 7)."""

from __future__ import annotations

import faulthandler
import io
import json
import os
import pickle
import re
import shutil
import signal
import struct
import threading
import time
import tracemalloc
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import h5py
import numpy as np
import pytest
import torch
import torch_lstm_probe.converters.readers as readers
from torch_lstm_probe.converters.readers import limits

import torch_lstm_probe as tlp
from torch_lstm_probe.errors import FileLimitError, KerasFileError, UnsafeFileError

GOLDENS = Path(__file__).parent / "goldens"
H5 = GOLDENS / "tf_keras_embedding_classifier.h5"
KERAS = GOLDENS / "keras_embedding_classifier.keras"  # Sequential
FUNCTIONAL = GOLDENS / "keras_seq2seq.keras"
EXAMPLE = Path(tlp.__file__).parent / "examples" / "sentiment_lstm.keras"
KERNEL = "model_weights/lstm/lstm/lstm_cell/kernel:0"  # (8, 64) in H5
KERAS_KERNEL = "layers/lstm/cell/vars/0"  # (8, 64) in KERAS' model.weights.h5
SECRET = np.arange(8 * 64, dtype="<f4").reshape(8, 64) + 4242.0  # bytes a hostile file points at


# ---------------------------------------------------------------- helpers
@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read in the test's own process, so allocations and calls can be observed."""
    monkeypatch.setenv("TORCH_LSTM_PROBE_READ_ISOLATION", "off")


@contextmanager
def no_hang(seconds: float = 60.0) -> Iterator[None]:
    """Ends the whole test run with a traceback dump instead of hanging if the guard ever fails."""
    faulthandler.dump_traceback_later(seconds, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


@contextmanager
def peak_bytes() -> Iterator[list[int]]:
    """Traced peak of Python and NumPy allocations inside the block (in-process reads only)."""
    result: list[int] = []
    tracemalloc.start()
    try:
        yield result
    finally:
        result.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


def edited_h5(tmp_path: Path, edit: Callable[[h5py.File, Path], Any], src: Path = H5, name: str = "m.h5") -> Path:
    path = tmp_path / name
    shutil.copy(src, path)
    with h5py.File(path, "r+") as f:
        edit(f, tmp_path)
    return path


def rezip(src: Path, dst: Path, replace: dict[str, bytes] | None = None, compression: int = zipfile.ZIP_STORED) -> Path:
    replace = dict(replace or {})
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression=compression) as zout:
        for item in zin.namelist():
            zout.writestr(item, replace.pop(item, None) or zin.read(item))
        for item, data in replace.items():
            zout.writestr(item, data)
    return dst


def edited_keras(tmp_path: Path, edit: Callable[[h5py.File, Path], Any], src: Path = KERAS) -> Path:
    """A .keras archive whose model.weights.h5 went through ``edit``."""
    with zipfile.ZipFile(src) as z:
        blob = z.read("model.weights.h5")
    inner = tmp_path / "inner.h5"
    inner.write_bytes(blob)
    with h5py.File(inner, "r+") as f:
        edit(f, tmp_path)
    return rezip(src, tmp_path / "m.keras", {"model.weights.h5": inner.read_bytes()})


def keras_config(src: Path = KERAS) -> dict[str, Any]:
    with zipfile.ZipFile(src) as z:
        return json.loads(z.read("config.json"))


def with_config(tmp_path: Path, config: Any, member: str = "config.json") -> Path:
    """FUNCTIONAL with ``member`` replaced by ``config`` as JSON."""
    return rezip(FUNCTIONAL, tmp_path / "m.keras", {member: json.dumps(config).encode()})


def patch_central_directory(data: bytes, name: str, **fields: int) -> bytes:
    """Rewrites fields of one member's central directory record (what zipfile trusts)."""
    offsets = {"method": (10, "<H"), "compress_size": (20, "<I"), "file_size": (24, "<I")}
    out = bytearray(data)
    pos = out.find(b"PK\x01\x02")
    while pos >= 0:
        name_length = struct.unpack_from("<H", out, pos + 28)[0]
        if bytes(out[pos + 46 : pos + 46 + name_length]) == name.encode():
            for field, value in fields.items():
                offset, fmt = offsets[field]
                struct.pack_into(fmt, out, pos + offset, value)
            return bytes(out)
        pos = out.find(b"PK\x01\x02", pos + 4)
    raise AssertionError(f"no member {name}")


def replace_kernel(f: h5py.File, make: Callable[[h5py.Group, str], Any], path: str = KERNEL) -> None:
    parent, name = path.rsplit("/", 1)
    del f[path]
    make(f[parent], name)


def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret.bin"
    path.write_bytes(SECRET.tobytes())
    return path


def secret_h5(tmp_path: Path) -> Path:
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as g:
        g["data"] = SECRET
    return path


# ---------------------------------------------------------------- nothing outside the file
def _external_storage(f: h5py.File, tmp: Path, path: str = KERNEL) -> None:
    secret = secret_file(tmp)
    replace_kernel(
        f,
        lambda g, n: g.create_dataset(n, shape=(8, 64), dtype="<f4", external=[(str(secret), 0, SECRET.nbytes)]),
        path,
    )


def _external_link(f: h5py.File, tmp: Path, path: str = KERNEL) -> None:
    other = secret_h5(tmp)
    replace_kernel(f, lambda g, n: g.__setitem__(n, h5py.ExternalLink(str(other), "/data")), path)


def _virtual(f: h5py.File, tmp: Path, path: str = KERNEL) -> None:
    other = secret_h5(tmp)
    layout = h5py.VirtualLayout(shape=(8, 64), dtype="<f4")
    layout[...] = h5py.VirtualSource(str(other), "data", shape=(8, 64))
    replace_kernel(f, lambda g, n: g.create_virtual_dataset(n, layout), path)


OUTSIDE = [
    (_external_storage, r"keeps its data in 1 external file\(s\).*secret\.bin.*never reads anything outside"),
    (_external_link, r"is an HDF5 external link to '.*other\.h5':'/data'.*never reads anything outside"),
    (_virtual, r"is an HDF5 virtual dataset.*never reads anything outside"),
]


@pytest.mark.parametrize("make,match", OUTSIDE, ids=["external-storage", "external-link", "virtual"])
def test_h5_pointing_outside_the_file_is_refused(tmp_path, make, match):
    path = edited_h5(tmp_path, make)
    with h5py.File(path, "r") as f:  # the file really does point at the secret bytes
        np.testing.assert_array_equal(f[KERNEL][()], SECRET)
    with pytest.raises(UnsafeFileError, match=r"m\.h5: .*" + match):
        tlp.load_keras(path)


@pytest.mark.parametrize("make,match", OUTSIDE, ids=["external-storage", "external-link", "virtual"])
def test_keras_weights_pointing_outside_the_archive_are_refused(tmp_path, make, match):
    path = edited_keras(tmp_path, lambda f, tmp: make(f, tmp, KERAS_KERNEL))
    with pytest.raises(UnsafeFileError, match=r"m\.keras \(model\.weights\.h5\): .*" + match):
        tlp.load_keras(path)


@pytest.mark.parametrize("make", [m for m, _ in OUTSIDE], ids=["external-storage", "external-link", "virtual"])
def test_refused_before_any_data_or_attribute_is_read(tmp_path, monkeypatch, in_process, make):
    path = edited_h5(tmp_path, make)
    reads: list[str] = []
    monkeypatch.setattr(h5py.Dataset, "__getitem__", lambda self, key: reads.append(self.name))
    monkeypatch.setattr(h5py.AttributeManager, "__getitem__", lambda self, key: reads.append(key))
    with pytest.raises(UnsafeFileError) as info:
        tlp.load_keras(path)
    assert reads == []
    assert "4242" not in str(info.value)


def test_weights_file_given_with_an_architecture_is_checked_too(tmp_path):
    arch = GOLDENS / "legacy" / "cudnn_arch_lstm_weights.json"
    weights = tmp_path / "w.h5"
    shutil.copy(GOLDENS / "legacy" / "cudnn_arch_lstm_weights.h5", weights)
    with h5py.File(weights, "r+") as f:
        f["extra"] = h5py.ExternalLink(str(secret_h5(tmp_path)), "/data")
    with pytest.raises(UnsafeFileError, match=r"w\.h5: '/extra' is an HDF5 external link"):
        tlp.load_keras(arch, weights=weights)


def test_an_unplugged_filter_is_refused(tmp_path):
    def plug(f, tmp):
        f.create_dataset(
            "model_weights/extra", shape=(4,), dtype="f4", chunks=(4,), compression=32001, allow_unknown_filter=True
        )

    with pytest.raises(UnsafeFileError, match=r"m\.h5: dataset '/model_weights/extra' uses HDF5 filter 32001.*plugin"):
        tlp.load_keras(edited_h5(tmp_path, plug))


@pytest.mark.parametrize(
    "make,match",
    [
        (
            lambda f: (
                f.__setitem__("model_weights/a", h5py.SoftLink("/model_weights/b")),
                f.__setitem__("model_weights/b", h5py.SoftLink("/model_weights/a")),
            ),
            r"does not resolve within 16 links \(a cycle of soft links\)",
        ),
        (
            lambda f: f.__setitem__("model_weights/lstm/up", h5py.SoftLink("/model_weights")),
            r"leads back to a group containing it",
        ),
        (
            lambda f: f.__setitem__("model_weights/lstm/loop", f["model_weights"]),
            r"leads back to a group containing it",
        ),
        (lambda f: f.__setitem__("model_weights/gone", h5py.SoftLink("/nowhere/x")), r"is dangling"),
    ],
    ids=["soft-cycle", "soft-to-ancestor", "hard-to-ancestor", "dangling"],
)
def test_link_cycles_and_dangling_links_are_refused(tmp_path, make, match):
    path = edited_h5(tmp_path, lambda f, tmp: make(f))
    with no_hang(), pytest.raises(UnsafeFileError, match=r"m\.h5: .*" + match):
        tlp.load_keras(path)


def test_harmless_soft_and_hard_links_still_load(tmp_path):
    def links(f, tmp):
        f["model_weights/alias"] = h5py.SoftLink("/model_weights/lstm")
        f["model_weights/same"] = f["model_weights/dense_1"]

    x = np.arange(12).reshape(2, 6) % 20
    with torch.inference_mode():
        assert torch.equal(tlp.load_keras(edited_h5(tmp_path, links))(x), tlp.load_keras(H5)(x))


# ---------------------------------------------------------------- only regular files
def _unblock_later(fifo: Path) -> threading.Timer:
    """If a reader ever blocks on the FIFO, a writer opening it after 5 s releases it (and the test fails)."""

    def release() -> None:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass

    timer = threading.Timer(5.0, release)
    timer.daemon = True
    timer.start()
    return timer


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "model.h5"
    os.mkfifo(fifo)
    timer = _unblock_later(fifo)
    start = time.monotonic()
    with pytest.raises(KerasFileError, match=r"model\.h5: is a FIFO \(named pipe\), not a regular file.*copy"):
        tlp.load_keras(fifo)
    timer.cancel()
    assert time.monotonic() - start < 3


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_a_fifo_as_weights_is_refused_without_blocking(tmp_path):
    arch = tmp_path / "arch.json"
    with h5py.File(H5) as f:
        arch.write_text(f.attrs["model_config"])
    fifo = tmp_path / "weights.h5"
    os.mkfifo(fifo)
    timer = _unblock_later(fifo)
    start = time.monotonic()
    with pytest.raises(KerasFileError, match=r"weights\.h5: is a FIFO.*not a regular file"):
        tlp.load_keras(arch, weights=fifo)
    timer.cancel()
    assert time.monotonic() - start < 3


def test_a_directory_as_weights_is_refused(tmp_path):
    arch = tmp_path / "arch.json"
    with h5py.File(H5) as f:
        arch.write_text(f.attrs["model_config"])
    with pytest.raises(KerasFileError, match=r"is a directory, not a regular file"):
        tlp.load_keras(arch, weights=tmp_path)


# ---------------------------------------------------------------- bounded zip members
def _zeros_member(zout: zipfile.ZipFile, name: str, size: int, fill: bytes = b"\0") -> None:
    chunk = fill * (1 << 20)
    with zout.open(name, "w") as fh:
        for _ in range(size >> 20):
            fh.write(chunk)


def zip_bomb(tmp_path: Path, member: str, size: int, fill: bytes = b"\0") -> Path:
    """KERAS with ``member`` replaced by ``size`` bytes of ``fill``, deflated (about 1000:1)."""
    path = tmp_path / "bomb.keras"
    with zipfile.ZipFile(KERAS) as zin, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zout:
        for item in zin.namelist():
            if item != member:
                zout.writestr(item, zin.read(item))
        _zeros_member(zout, member, size, fill)
    return path


def test_zip_bomb_in_the_weights_is_refused_before_decompressing(tmp_path, in_process):
    path = zip_bomb(tmp_path, "model.weights.h5", 80 << 20)
    assert path.stat().st_size < 200_000  # a small file that would expand to 80 MiB
    with (
        peak_bytes() as peak,
        pytest.raises(
            FileLimitError,
            match=r"bomb\.keras: member 'model\.weights\.h5' declares 83886080 bytes uncompressed .* at most 100x its compressed size",
        ),
    ):
        tlp.load_keras(path)
    assert peak[0] < 8 << 20


def test_zip_bomb_in_the_config_is_refused_before_decompressing(tmp_path, in_process):
    path = zip_bomb(tmp_path, "config.json", 20 << 20, fill=b" ")
    assert path.stat().st_size < 100_000
    with (
        peak_bytes() as peak,
        pytest.raises(FileLimitError, match=r"member 'config\.json' declares 20971520 bytes.*limit for it is 16777216"),
    ):
        tlp.load_keras(path)
    assert peak[0] < 8 << 20


def test_a_header_that_understates_the_size_stops_decompression(tmp_path, in_process):
    bomb = zip_bomb(tmp_path, "model.weights.h5", 80 << 20)
    lying = tmp_path / "lying.keras"
    lying.write_bytes(patch_central_directory(bomb.read_bytes(), "model.weights.h5", file_size=1 << 20))
    with (
        peak_bytes() as peak,
        pytest.raises(KerasFileError, match=r"lying\.keras: cannot read 'model\.weights\.h5'.*damaged"),
    ):
        tlp.load_keras(lying)
    assert peak[0] < 16 << 20  # stopped at the declared 1 MiB, not the 80 MiB the data holds


def test_a_header_that_overstates_the_size_is_refused(tmp_path):
    data = rezip(KERAS, tmp_path / "a.keras").read_bytes()
    lying = tmp_path / "lying.keras"
    lying.write_bytes(patch_central_directory(data, "config.json", file_size=50_000))
    with pytest.raises(
        KerasFileError, match=r"member 'config\.json' holds \d+ bytes, not the 50000 its header declares"
    ):
        tlp.load_keras(lying)


def test_unknown_zip_compression_is_a_typed_error(tmp_path):
    data = rezip(KERAS, tmp_path / "a.keras").read_bytes()
    path = tmp_path / "m.keras"
    path.write_bytes(patch_central_directory(data, "config.json", method=99))
    with pytest.raises(KerasFileError, match=r"m\.keras: member 'config\.json' uses zip compression method 99"):
        tlp.load_keras(path)


def test_too_many_declared_zip_members_are_refused(tmp_path):
    data = bytearray(rezip(KERAS, tmp_path / "a.keras").read_bytes())
    end = data.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", data, end + 8, 60_000, 60_000)
    path = tmp_path / "m.keras"
    path.write_bytes(bytes(data))
    with pytest.raises(
        FileLimitError, match=r"m\.keras: the \.keras file declares 60000 zip members; the limit is 50000"
    ):
        tlp.load_keras(path)


# ---------------------------------------------------------------- declared sizes checked before reading
def test_huge_declared_dataset_in_a_small_file_is_refused_before_allocation(tmp_path, in_process):
    path = edited_h5(
        tmp_path,
        lambda f, tmp: replace_kernel(
            f, lambda g, n: g.create_dataset(n, shape=(16384, 16384), dtype="f4", chunks=(64, 64))
        ),
    )
    assert path.stat().st_size < 100_000
    with (
        peak_bytes() as peak,
        pytest.raises(
            FileLimitError,
            match=r"m\.h5: dataset '/model_weights/lstm/lstm/lstm_cell/kernel:0' declares shape \(16384, 16384\) \(1073741824 bytes\) but stores only 0 bytes",
        ),
    ):
        tlp.load_keras(path)
    assert peak[0] < 8 << 20


def test_huge_declared_dataset_inside_a_keras_archive_is_refused(tmp_path):
    path = edited_keras(
        tmp_path,
        lambda f, tmp: replace_kernel(
            f, lambda g, n: g.create_dataset(n, shape=(16384, 16384), dtype="f4", chunks=(64, 64)), KERAS_KERNEL
        ),
    )
    with pytest.raises(
        FileLimitError,
        match=r"m\.keras \(model\.weights\.h5\): dataset '/layers/lstm/cell/vars/0' declares shape \(16384, 16384\)",
    ):
        tlp.load_keras(path)


def test_datasets_that_together_exceed_the_file_are_refused(tmp_path):
    def many(f, tmp):
        for i in range(3):  # each 40 MiB: under the 64 MiB floor alone, 120 MiB together from a ~40 KB file
            f.create_dataset(f"model_weights/extra_{i}", shape=(10 << 20,), dtype="f4", chunks=(1 << 16,))

    with pytest.raises(FileLimitError, match=r"m\.h5: the datasets declare more than 67108864 bytes in all"):
        tlp.load_keras(edited_h5(tmp_path, many))


def test_contiguous_dataset_whose_shape_outgrows_the_file_is_a_typed_error(tmp_path, in_process):
    path = edited_h5(
        tmp_path, lambda f, tmp: replace_kernel(f, lambda g, n: g.create_dataset(n, data=np.zeros((7, 13), "f4")))
    )
    data = path.read_bytes()
    assert data.count(struct.pack("<QQ", 7, 13)) >= 1
    path.write_bytes(data.replace(struct.pack("<QQ", 7, 13), struct.pack("<QQ", 16384, 16384)))
    with peak_bytes() as peak, pytest.raises(KerasFileError, match=r"m\.h5: .*kernel:0.*(damaged|truncated)"):
        tlp.load_keras(path)
    assert peak[0] < 8 << 20


def test_attribute_with_too_many_elements_is_refused_before_reading(tmp_path):
    path = tmp_path / "m.h5"
    with h5py.File(path, "w", libver="latest") as f:  # dense attribute storage allows large attributes
        f.attrs["model_config"] = np.zeros(limits.MAX_ATTRIBUTE_ELEMENTS + 1, "i1")
    with pytest.raises(FileLimitError, match=r"m\.h5: attribute 'model_config' of '/' declares 1000001 element\(s\)"):
        tlp.load_keras(path)


def test_attribute_with_too_many_bytes_is_refused_before_reading(tmp_path):
    path = tmp_path / "m.h5"
    with h5py.File(path, "w", libver="latest") as f:
        f.attrs.create("model_config", np.zeros((), f"S{limits.MAX_ATTRIBUTE_BYTES + 1}"))
    with pytest.raises(
        FileLimitError, match=r"m\.h5: attribute 'model_config' of '/' declares 1 element\(s\), 16777217 bytes"
    ):
        tlp.load_keras(path)


def test_groups_nested_too_deep_are_refused(tmp_path):
    def deep(f, tmp):
        f.create_group("model_weights/" + "/".join(["g"] * (limits.MAX_H5_DEPTH + 2)))

    with pytest.raises(FileLimitError, match=r"m\.h5: HDF5 groups nest deeper than 128 levels"):
        tlp.load_keras(edited_h5(tmp_path, deep))


def _npz_keras(tmp_path: Path, member_bytes: bytes) -> Path:
    """KERAS with npz weights whose one member is ``member_bytes``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("layers/embedding.npy", member_bytes)
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(KERAS) as zin, zipfile.ZipFile(path, "w") as zout:
        for item in zin.namelist():
            if item != "model.weights.h5":
                zout.writestr(item, zin.read(item))
        zout.writestr("model.weights.npz", buf.getvalue())
    return path


def _npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False, "shape": shape})
    return header.getvalue()


def test_npz_member_declaring_more_than_it_holds_is_refused(tmp_path, in_process):
    path = _npz_keras(tmp_path, _npy_header("<f4", (10**9,)) + bytes(16))
    with (
        peak_bytes() as peak,
        pytest.raises(
            KerasFileError, match=r"m\.keras: weights member 'layers/embedding\.npy' declares shape \(1000000000,\)"
        ),
    ):
        tlp.load_keras(path)
    assert peak[0] < 8 << 20


class _Shell:
    """Pickles as NumPy's array shell with a shape, which would allocate memory no byte backs."""

    def __reduce__(self) -> Any:
        return (np.ndarray.__reduce__(np.zeros(0))[0], (np.ndarray, (10**10,), b"b"))


def test_npz_pickle_cannot_allocate_a_huge_array_shell(tmp_path, in_process):
    member = _npy_header("|O", ()) + pickle.dumps(_Shell(), protocol=3)
    with pytest.raises(KerasFileError, match=r"cannot be read safely.*refusing an array shell.*\(10000000000,\)"):
        tlp.load_keras(_npz_keras(tmp_path, member))


# ---------------------------------------------------------------- nesting and short messages
def _nested_sequential(depth: int) -> bytes:
    """config.json text of ``depth`` Sequential models, each the only layer of the next (written as
    text: json.dumps itself cannot nest that deep)."""
    inner = {
        "class_name": "Sequential",
        "config": {
            "name": "s0",
            "layers": [
                {"class_name": "InputLayer", "config": {"name": "in0", "batch_shape": [None, 4]}},
                {"class_name": "Dense", "config": {"name": "d0", "units": 2}},
            ],
        },
    }
    opening = "".join(
        f'{{"class_name": "Sequential", "config": {{"name": "s{i}", "layers": [' for i in range(depth - 1, 0, -1)
    )
    return (opening + json.dumps(inner) + "]}}" * (depth - 1)).encode()


def test_models_nested_too_deep_are_refused_with_a_short_message(tmp_path):
    path = rezip(KERAS, tmp_path / "m.keras", {"config.json": _nested_sequential(40)})
    with pytest.raises(FileLimitError, match=r"m\.keras: models nest more than 32 levels deep") as info:
        tlp.load_keras(path)
    assert len(str(info.value)) < 400


@pytest.mark.parametrize("depth", [240, 5000])
def test_self_nested_models_give_a_short_error(tmp_path, depth):
    path = rezip(KERAS, tmp_path / "m.keras", {"config.json": _nested_sequential(depth)})
    with pytest.raises(
        FileLimitError, match=r"m\.keras: 'config\.json' in the archive nests lists/objects deeper than"
    ) as info:
        tlp.load_keras(path)
    assert len(str(info.value)) < 400


def test_json_nested_beyond_the_parser_is_a_typed_error(tmp_path):
    raw = b"[" * 200_000 + b"]" * 200_000
    path = rezip(KERAS, tmp_path / "m.keras", {"config.json": raw})
    with pytest.raises(
        FileLimitError,
        match=r"m\.keras: 'config\.json' in the archive nests lists/objects deeper than Python can parse",
    ):
        tlp.load_keras(path)


def test_model_config_attribute_nested_too_deep_is_refused(tmp_path):
    def deep(f, tmp):
        f.attrs["model_config"] = "[" * 300 + "]" * 300

    with pytest.raises(
        FileLimitError, match=r"m\.h5: the 'model_config' attribute nests lists/objects deeper than 256"
    ):
        tlp.load_keras(edited_h5(tmp_path, deep))


def _functional(edit: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    config = keras_config(FUNCTIONAL)
    edit(config)
    return config


def _layer_of(config: dict[str, Any], class_name: str) -> dict[str, Any]:
    return next(entry for entry in config["config"]["layers"] if entry["class_name"] == class_name)


def _set_history(config: dict[str, Any], value: Any) -> None:
    _layer_of(config, "LSTM")["inbound_nodes"][0]["args"][0]["config"]["keras_history"] = value


MALFORMED = [
    ("config-list", [1, 2], r"'config\.json' in the archive holds a JSON list, not an object"),
    (
        "model-config-list",
        _functional(lambda c: c.__setitem__("config", [])),
        r"the config of Functional model '\(top\)' is \[\]",
    ),
    (
        "layers-string",
        _functional(lambda c: c["config"].__setitem__("layers", "abc")),
        r"lists its layers as 'abc'. Expected a JSON list",
    ),
    (
        "layer-entry-huge-string",
        _functional(lambda c: c["config"]["layers"].append("x" * 1_000_000)),
        r"has a layer entry 'x+\.\.\.x+'\. Expected an object",
    ),
    (
        "history-not-int",
        _functional(lambda c: _set_history(c, ["encoder_input", "zero", 0])),
        r"keras_history is \['encoder_input', 'zero', 0\]",
    ),
    (
        "history-short",
        _functional(lambda c: _set_history(c, ["encoder_input"])),
        r"keras_history is \['encoder_input'\]",
    ),
    (
        "outputs-garbage",
        _functional(lambda c: c["config"].__setitem__("output_layers", [7])),
        r"output_layers: malformed model input/output reference 7",
    ),
    (
        "name-huge",
        _functional(lambda c: _layer_of(c, "LSTM").__setitem__("name", "n" * 5000)),
        r"a layer name or class name is longer than 1024 characters",
    ),
    (
        "inbound-nodes-float",
        _functional(lambda c: _layer_of(c, "LSTM").__setitem__("inbound_nodes", 1.5)),
        r"layer 'encoder' \(LSTM\): inbound_nodes is 1\.5; expected a list of calls",
    ),
    (
        "call-kwargs-list",
        _functional(lambda c: _layer_of(c, "LSTM")["inbound_nodes"][0].__setitem__("kwargs", [1])),
        r"layer 'encoder' \(LSTM\): the kwargs of a call is \[1\]; expected a JSON object",
    ),
    (
        "input-shape-text",
        _functional(lambda c: _layer_of(c, "InputLayer")["config"].__setitem__("batch_shape", [None, "a", 5])),
        r"malformed shape \[None, 'a', 5\]",
    ),
]


@pytest.mark.parametrize("config,match", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_configs_give_precise_short_errors(tmp_path, config, match):
    with pytest.raises(KerasFileError, match=r"m\.keras: .*" + match) as info:
        tlp.load_keras(with_config(tmp_path, config))
    assert len(str(info.value)) < 700


def test_sequential_layer_entries_must_be_objects(tmp_path):
    config = keras_config(KERAS)
    config["config"]["layers"].append(5)
    path = rezip(KERAS, tmp_path / "m.keras", {"config.json": json.dumps(config).encode()})
    with pytest.raises(
        KerasFileError, match=r"m\.keras: Sequential model 'embedding_classifier' has a layer entry 5\."
    ):
        tlp.load_keras(path)


def test_keras3_variables_must_be_numbered(tmp_path):
    path = edited_keras(tmp_path, lambda f, tmp: f.__setitem__("layers/dense/vars/extra", np.zeros(2)))
    with pytest.raises(KerasFileError, match=r"the variables in '/layers/dense/vars' are named \['0', '1', 'extra'\]"):
        tlp.load_keras(path)


@pytest.mark.parametrize(
    "value,match",
    [
        (np.array([1, 2]), r"holds \[1, 2\]; expected UTF-8 names"),
        (np.array([b"\xff\xfe"]), r"expected UTF-8 names|not a list"),
    ],
    ids=["numbers", "invalid-utf8"],
)
def test_weight_names_must_be_names(tmp_path, value, match):
    def edit(f, tmp):
        f["model_weights/dense_1"].attrs["weight_names"] = value

    with pytest.raises(
        KerasFileError, match=r"m\.h5: .*attribute 'weight_names' of '/model_weights/dense_1'.*" + match
    ):
        tlp.load_keras(edited_h5(tmp_path, edit))


def test_metadata_that_is_not_an_object_is_refused(tmp_path):
    with pytest.raises(KerasFileError, match=r"m\.keras: 'metadata\.json' in the archive holds a JSON list"):
        tlp.load_keras(with_config(tmp_path, ["3.0"], member="metadata.json"))


def test_any_leftover_exception_becomes_a_keras_file_error_keeping_its_cause(tmp_path, monkeypatch):
    def unexpected(path, weights):
        return {}["a key the reader did not expect"]

    monkeypatch.setattr(readers, "_dispatch", unexpected)
    path = shutil.copy(KERAS, tmp_path / "m.keras")
    with pytest.raises(
        KerasFileError, match=r"m\.keras: the file is malformed and cannot be read \(KeyError: "
    ) as info:
        tlp.load_keras(path)
    assert "KeyError" in str(info.value.__cause__)  # the reader's traceback, as text, from the child
    monkeypatch.setenv("TORCH_LSTM_PROBE_READ_ISOLATION", "off")
    with pytest.raises(KerasFileError, match=r"m\.keras: the file is malformed") as info:
        tlp.load_keras(path)
    assert isinstance(info.value.__cause__, KeyError)


# ---------------------------------------------------------------- the hang guard
# Single bytes that make HDF5 1.14 loop forever inside an attribute read (found by flipping bytes
# of the goldens with a seeded generator); another HDF5 may fail differently, never hang.
HANGING_BYTES = [("tf_keras_bidirectional.h5", 7691, 157), ("keras_gru_reset_after.h5", 4897, 2)]


@pytest.mark.parametrize("name,offset,value", HANGING_BYTES, ids=[h[0] for h in HANGING_BYTES])
def test_a_file_that_makes_hdf5_loop_does_not_hang_the_caller(tmp_path, monkeypatch, name, offset, value):
    data = bytearray((GOLDENS / name).read_bytes())
    data[offset] = value
    path = tmp_path / name
    path.write_bytes(bytes(data))
    monkeypatch.setenv("TORCH_LSTM_PROBE_READ_TIMEOUT", "2")
    start = time.monotonic()
    with no_hang(), pytest.raises(KerasFileError, match=re.escape(str(path))):
        tlp.load_keras(path)
    assert time.monotonic() - start < 10


def test_timeout_is_a_typed_error_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "_dispatch", lambda path, weights: time.sleep(120))
    monkeypatch.setenv("TORCH_LSTM_PROBE_READ_TIMEOUT", "1")
    path = shutil.copy(H5, tmp_path / "m.h5")
    start = time.monotonic()
    with (
        no_hang(),
        pytest.raises(
            FileLimitError,
            match=r"m\.h5: reading the file took longer than 1 s and was stopped.*TORCH_LSTM_PROBE_READ_TIMEOUT",
        ),
    ):
        tlp.load_keras(path)
    assert time.monotonic() - start < 10


def test_a_reader_that_dies_is_a_typed_error(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "_dispatch", lambda path, weights: os.kill(os.getpid(), signal.SIGKILL))
    path = shutil.copy(H5, tmp_path / "m.h5")
    with (
        no_hang(),
        pytest.raises(KerasFileError, match=r"m\.h5: the process reading the file was killed by signal SIGKILL"),
    ):
        tlp.load_keras(path)


def test_errors_and_warnings_cross_from_the_reader(tmp_path, monkeypatch):
    def warn_then_fail(path, weights):
        warnings.warn("a note from the reader", UserWarning, stacklevel=2)
        raise UnsafeFileError("refused for the test")

    monkeypatch.setattr(readers, "_dispatch", warn_then_fail)
    path = shutil.copy(H5, tmp_path / "m.h5")
    with (
        pytest.warns(UserWarning, match="a note from the reader"),
        pytest.raises(UnsafeFileError, match=r"m\.h5: refused for the test"),
    ):
        tlp.load_keras(path)


@pytest.mark.parametrize("src", [EXAMPLE, H5, GOLDENS / "tf_keras_seq2seq.keras"], ids=lambda p: p.name)
def test_isolated_and_in_process_reads_give_the_same_model(src, monkeypatch):
    isolated = tlp.load_keras(src).state_dict()
    monkeypatch.setenv("TORCH_LSTM_PROBE_READ_ISOLATION", "off")
    direct = tlp.load_keras(src).state_dict()
    assert isolated.keys() == direct.keys()
    assert all(torch.equal(isolated[k], direct[k]) for k in isolated)


def test_limits_can_be_raised_and_misconfiguration_is_named(monkeypatch):
    monkeypatch.setenv("TORCH_LSTM_PROBE_MAX_WEIGHTS_BYTES", str(8 * limits.GIB))
    assert limits.max_weights_bytes() == 8 * limits.GIB
    assert limits.expansion_budget(10) == limits.EXPANSION_FLOOR_BYTES
    assert limits.expansion_budget(1 << 30) == 8 * limits.GIB  # 100x 1 GiB, capped by the raised bound
    monkeypatch.setenv("TORCH_LSTM_PROBE_READ_TIMEOUT", "soon")
    with pytest.raises(FileLimitError, match=r"TORCH_LSTM_PROBE_READ_TIMEOUT='soon' is not a number"):
        limits.read_timeout_s(0)


@pytest.mark.parametrize(
    "value", [np.bytes_(b"not weights"), np.array([b"a", b"b"]), np.zeros(3, dtype=[("a", "<f4"), ("b", "<i4")])]
)
def test_weights_that_are_not_numbers_name_the_dataset(tmp_path, value):
    path = tmp_path / "text_weights.h5"
    shutil.copy(H5, path)
    with h5py.File(path, "r+") as f:
        del f[KERNEL]
        f[KERNEL] = value
    with pytest.raises(KerasFileError, match=r"weights .*kernel:0 hold .* values\. Expected numbers"):
        tlp.load_keras(path)


# ---------------------------------------------------------------- assets (a lookup layer's vocabulary)
TEXT_KERAS = Path(__file__).parent / "goldens" / "zoo" / "keras_text_lstm.keras"
VOCABULARY = "assets/layers/text_vectorization/_lookup_layer/vocabulary.txt"  # the one Keras 3 reads back


def _with_vocabulary(tmp_path: Path, write: Any) -> Path:
    """The zoo text model with its TextVectorization vocabulary asset written by ``write(zout, name)``."""
    path = tmp_path / "text.keras"
    with zipfile.ZipFile(TEXT_KERAS) as zin, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.namelist():
            if item != VOCABULARY:
                zout.writestr(item, zin.read(item))
        write(zout, VOCABULARY)
    return path


def test_an_asset_bomb_is_refused_before_decompressing(tmp_path, in_process):
    path = _with_vocabulary(tmp_path, lambda zout, name: _zeros_member(zout, name, 20 << 20, fill=b"a\n"))
    with peak_bytes() as peak, pytest.raises(FileLimitError, match=r"member 'assets/.*vocabulary\.txt' declares"):
        tlp.load_keras(path)
    assert peak[0] < 8 << 20


@pytest.mark.parametrize(
    "content, match",
    [
        (b"\xff\xfe\x00bad", r"'text_vectorization' \(TextVectorization\): its vocabulary file .* is not UTF-8"),
        (b"", r"'text_vectorization' \(TextVectorization\): the vocabulary is empty"),
        (b"a\na\nb\n", r"'text_vectorization' \(TextVectorization\): the vocabulary repeats the token\(s\) \['a'\]"),
    ],
)
def test_a_damaged_vocabulary_asset_is_a_typed_error(tmp_path, content, match):
    path = _with_vocabulary(tmp_path, lambda zout, name: zout.writestr(name, content))
    with pytest.raises(KerasFileError, match=match):
        tlp.load_keras(path)
