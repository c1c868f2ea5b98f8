"""A seeded mutation fuzzer for the Keras file loaders: every mutated file must load cleanly or fail
with a typed error (a ``TorchLstmProbeError``), within a time and a memory bound.

The corpus is the bundled example and the golden files (``.keras``, ``.h5``, architecture JSON +
weights ``.h5``), and ``tlp.save`` files of some of them (read by ``tlp.load``). Each case is derived from ``(seed, index)`` alone, so any case can be replayed:

* raw byte mutations (flips, inserted and deleted bytes, interesting integers, truncation);
* structure-aware mutations of the model config JSON (``config.json`` in a ``.keras`` zip, the
  ``model_config`` attribute of an ``.h5``, or the architecture JSON): values of the wrong type,
  deleted keys, lists and dicts swapped, huge and negative integers, deep nesting, long strings,
  broken tensor references, duplicated, dropped and self-nested layers, swapped class names;
* HDF5 weight mutations with h5py on a copy: datasets deleted, added, renamed, reshaped, retyped,
  declared huge, attributes rewritten; external storage, external links and virtual datasets
  (which must be refused: a clean load of those is a failure);
* zip mutations of ``.keras`` archives: members corrupted with valid CRCs, deleted, duplicated,
  an unsupported compression method, and decompression bombs;
* non-regular paths: a FIFO, a directory, ``/dev/zero`` behind a link, an empty file.

Each case runs in a worker process under ``RLIMIT_AS`` (the memory bound) and a per-case wall-clock
timeout enforced by the parent, which kills and restarts a worker that hangs. A case that loads is
also run forward on a small input of the declared shape, probed with gates, and run with batch 0
and with 0 steps. Outcomes: ``clean``, ``typed`` (by error class), ``unbuilt`` (the mutation could not
be written: no test), and failures: ``untyped`` (by
exception type and code site), ``memory``, ``hang``, ``crash`` and ``unsafe`` (a file that reads
outside itself loaded).

Usage::

    python scripts/fuzz.py --cases 10000 --seed 0 --timeout 20 --mem-gb 3 --jobs 1
    python scripts/fuzz.py --replay 1234 --seed 0          # one case in-process, with its traceback
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import math
import multiprocessing
import os
import random
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

__all__ = [
    "Seed",
    "Case",
    "Outcome",
    "discover_seeds",
    "build_case",
    "plan_case",
    "FAMILIES",
    "mutate_bytes",
    "mutate_json",
    "exercise",
    "run_one",
    "run_cases",
    "summarize",
    "main",
]

ROOT = Path(__file__).resolve().parent.parent
FAILURE_KINDS = ("untyped", "memory", "hang", "crash", "unsafe")
_FORWARD_MAX_ELEMENTS = 1 << 20  # inputs larger than this (at batch 2) are not run forward
_BOMB_BYTES = 3 << 30  # decompressed size of a zip bomb member: above every memory bound used here


# ---------------------------------------------------------------------------------------- corpus
@dataclass(frozen=True)
class Seed:
    """One unmutated model: ``kind`` is ``"keras"`` (zip), ``"h5"``, ``"json"`` (+ ``weights``) or ``"saved"``
    (a ``tlp.save`` file of the model at ``path``, read by ``tlp.load``)."""

    name: str  # path relative to the repository root, for reports
    kind: str
    path: Path
    weights: Path | None = None


def discover_seeds(root: Path = ROOT) -> list[Seed]:
    """The bundled example and every golden model file, in a stable order."""
    seeds = [
        Seed(
            "torch_lstm_probe/examples/sentiment_lstm.keras",
            "keras",
            root / "torch_lstm_probe/examples/sentiment_lstm.keras",
        )
    ]
    goldens = root / "tests" / "goldens"
    for path in sorted(goldens.rglob("*")):
        rel = str(path.relative_to(root))
        if path.suffix == ".keras":
            seeds.append(Seed(rel, "keras", path))
        elif path.suffix == ".h5" and path.with_suffix(".json").exists():
            seeds.append(
                Seed(str(path.with_suffix(".json").relative_to(root)), "json", path.with_suffix(".json"), path)
            )
        elif path.suffix == ".h5":
            seeds.append(Seed(rel, "h5", path))
    for rel in _SAVED_SOURCES:  # tlp.save files, written on first use (see _materialize)
        seeds.append(Seed(f"{rel} (tlp.save)", "saved", root / rel))
    return seeds


# ---------------------------------------------------------------------------------------- cases
@dataclass
class Case:
    """A mutated model on disk: pass ``main`` (and ``weights``) to ``tlp.load_keras``."""

    index: int
    seed: str  # Seed.name
    mutation: str  # what was done, e.g. "json:retype config.layers[2].config.units = 'abc'"
    main: Path
    weights: Path | None = None
    expect_refused: bool = False  # the file reads outside itself: only a typed error is right


@dataclass
class Outcome:
    """What one case did."""

    index: int
    seed: str
    mutation: str
    kind: str  # "clean", "typed", "unbuilt" or one of FAILURE_KINDS
    stage: str = ""  # "build", "load", "forward", "probe", "batch0", "len0"
    error: str = ""  # exception class name
    site: str = ""  # file:line of the innermost frame in this project (else the innermost frame)
    raise_site: str = ""  # file:line of the innermost frame
    message: str = ""
    cause: str = ""  # a typed error made from another exception: that exception's class
    cause_site: str = ""  # and its code site (a place that relies on a catch-all to be typed)
    seconds: float = 0.0
    peak_rss_mb: float = 0.0  # of the worker during this case
    peak_child_rss_mb: float = 0.0  # of any child process (readers may fork) so far in this worker
    notes: list[str] = field(default_factory=list)


# Models also fuzzed as tlp.save files (read by tlp.load): one of each graph kind.
_SAVED_SOURCES = (
    "torch_lstm_probe/examples/sentiment_lstm.keras",
    "tests/goldens/keras_seq2seq.keras",
    "tests/goldens/keras_bidirectional.keras",
    "tests/goldens/tf_keras_merges_norms.keras",
    "tests/goldens/keras_td_cnn_lstm.keras",
)
_SAVED: dict[Path, Path] = {}


def _materialize(base: Seed) -> Path:
    """The file a seed reads: for a ``saved`` seed, its model written by ``tlp.save`` (once per process)."""
    if base.kind != "saved":
        return Path(base.path)
    if base.path not in _SAVED:
        import torch_lstm_probe as tlp

        target = Path(tempfile.mkdtemp(prefix="tlp-fuzz-saved-")) / (Path(base.path).stem + ".safetensors")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tlp.save(tlp.load_keras(base.path), target)
        _SAVED[base.path] = target
    return _SAVED[base.path]


def _case_rng(seed: int, index: int) -> random.Random:
    return random.Random(f"torch-lstm-probe-fuzz:{seed}:{index}")


FAMILIES = ("raw", "json", "weights", "attrs", "zip", "unsafe", "special")
_FAMILY_WEIGHTS = (18, 40, 22, 6, 8, 4, 2)


def _plan(seeds: Sequence[Seed], seed: int, index: int) -> tuple[random.Random, Seed, str]:
    rng = _case_rng(seed, index)
    base = seeds[rng.randrange(len(seeds))]
    family = rng.choices(FAMILIES, weights=_FAMILY_WEIGHTS)[0]
    if family == "zip" and base.kind != "keras":
        family = "json"
    if family == "attrs" and base.kind == "keras":
        family = "weights"
    if base.kind == "saved" and family in ("zip", "attrs", "unsafe"):
        family = "json"
    return rng, base, family


def plan_case(seeds: Sequence[Seed], seed: int, index: int) -> tuple[str, str]:
    """``(seed file, mutation family)`` of case ``index``, without building it."""
    _, base, family = _plan(seeds, seed, index)
    return base.name, family


def build_case(seeds: Sequence[Seed], seed: int, index: int, workdir: Path) -> Case:
    """Writes case ``index`` of run ``seed`` under ``workdir`` (deterministic)."""
    rng, base, family = _plan(seeds, seed, index)
    workdir.mkdir(parents=True, exist_ok=True)
    source = _materialize(base)
    case = Case(index, base.name, family, workdir / source.name)
    if base.weights is not None:
        case.weights = workdir / base.weights.name
        shutil.copyfile(base.weights, case.weights)
    shutil.copyfile(source, case.main)
    _FAMILIES[family](case, base, rng, workdir)
    return case


# ---- raw bytes
_INTERESTING_INTS = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 40, (1 << 64) - 1)


def mutate_bytes(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One raw byte-level mutation of ``data``."""
    buf = bytearray(data)
    if not buf:
        return bytes(rng.randrange(256) for _ in range(8)), "fill-empty"
    op = rng.choice(["flip", "flip", "int", "insert", "delete", "truncate", "duplicate", "zero-run"])
    if op == "flip":
        n = rng.choice([1, 1, 2, 4, 16])
        for _ in range(n):
            buf[rng.randrange(len(buf))] ^= rng.randrange(1, 256)
        return bytes(buf), f"flip {n} byte(s)"
    if op == "int":
        width = rng.choice([1, 2, 4, 8])
        value = rng.choice(_INTERESTING_INTS) & ((1 << (8 * width)) - 1)
        pos = rng.randrange(max(1, len(buf) - width))
        buf[pos : pos + width] = value.to_bytes(width, "little")
        return bytes(buf), f"int{8 * width}={value:#x} at {pos}"
    if op == "insert":
        pos = rng.randrange(len(buf) + 1)
        blob = bytes(rng.randrange(256) for _ in range(rng.choice([1, 4, 64])))
        return bytes(buf[:pos] + blob + buf[pos:]), f"insert {len(blob)} byte(s) at {pos}"
    if op == "delete":
        pos = rng.randrange(len(buf))
        n = rng.choice([1, 8, 512])
        return bytes(buf[:pos] + buf[pos + n :]), f"delete {n} byte(s) at {pos}"
    if op == "truncate":
        pos = rng.randrange(len(buf))
        return bytes(buf[:pos]), f"truncate at {pos} of {len(buf)}"
    if op == "duplicate":
        pos = rng.randrange(len(buf))
        n = rng.choice([16, 256, 4096])
        return bytes(buf[: pos + n] + buf[pos : pos + n] + buf[pos + n :]), f"duplicate {n} byte(s) at {pos}"
    pos = rng.randrange(len(buf))
    n = rng.choice([8, 64, 1024])
    buf[pos : pos + n] = bytes(len(buf[pos : pos + n]))
    return bytes(buf), f"zero {n} byte(s) at {pos}"


def _raw(case: Case, base: Seed, rng: random.Random, workdir: Path) -> None:
    target = case.weights if case.weights is not None and rng.random() < 0.5 else case.main
    data, what = mutate_bytes(target.read_bytes(), rng)
    for _ in range(rng.choice([0, 0, 1, 2])):
        data, more = mutate_bytes(data, rng)
        what += "; " + more
    target.write_bytes(data)
    case.mutation = f"raw {target.name}: {what}"


# ---- JSON configs
_LONG = "A" * 100_000
_VALUES: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    -1,
    1,
    3,
    -(2**31),
    2**31,
    2**63,
    10**30,
    1.5,
    -0.5,
    float("nan"),
    float("inf"),
    "",
    "abc",
    "relu",
    "None",
    "-1",
    [],
    {},
    [None],
    [1, 2, 3],
    [-1, -1],
    ["a", 0, 0],
    {"class_name": "X", "config": {}},
    {"a": 1},
    [[["input_1", 0, 0, {}]]],
    _LONG,
)
_CLASS_NAMES = (
    "LSTM",
    "GRU",
    "SimpleRNN",
    "Dense",
    "Conv1D",
    "Embedding",
    "Bidirectional",
    "TimeDistributed",
    "Reshape",
    "Flatten",
    "InputLayer",
    "Functional",
    "Sequential",
    "Model",
    "Lambda",
    "TFOpLambda",
    "Masking",
    "Concatenate",
    "Add",
    "BatchNormalization",
    "LayerNormalization",
    "Permute",
    "RepeatVector",
    "Dropout",
    "NoSuchLayer",
    "",
    "MaxPooling1D",
    "GlobalAveragePooling1D",
    "CuDNNLSTM",
    "Activation",
    "UpSampling1D",
    "ZeroPadding1D",
)


def _nodes(obj: Any, path: str = "") -> Iterable[tuple[Any, Any, str]]:
    """Every ``(container, key, path)`` below ``obj`` (iterative, depth-first)."""
    stack = [(obj, path)]
    while stack:
        node, where = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            sub = f"{where}.{key}" if isinstance(key, str) else f"{where}[{key}]"
            yield node, key, sub
            if isinstance(value, (dict, list)):
                stack.append((value, sub))


def _layer_lists(obj: Any) -> list[tuple[list, str]]:
    """Every ``layers`` list of a (possibly nested) model config."""
    found = []
    if isinstance(obj, dict) and isinstance(obj.get("layers"), list):
        found.append((obj["layers"], "layers"))
    for container, key, path in _nodes(obj):
        value = container[key]
        if isinstance(value, dict) and isinstance(value.get("layers"), list):
            found.append((value["layers"], path + ".layers"))
    return found


def _is_ref(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) >= 3
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and isinstance(value[2], int)
    )


def _layer_names(obj: Any) -> list[str]:
    names = []
    for layers, _ in _layer_lists(obj):
        for entry in layers:
            if isinstance(entry, dict):
                name = entry.get("name") or (entry.get("config") or {}).get("name")
                if isinstance(name, str):
                    names.append(name)
    return names or ["x"]


@dataclass
class _Deep:
    """``value`` wrapped in ``depth`` lists or ``{"config": ...}`` objects; written by :func:`_dumps`
    as text, because Python's own JSON encoder recurses and would stop at its recursion limit."""

    value: Any
    opens: list[str]


def _nested(value: Any, depth: int, rng: random.Random) -> _Deep:
    return _Deep(value, ["[" if rng.random() < 0.5 else '{"config": ' for _ in range(depth)])


def _dumps(obj: Any) -> str:
    """``json.dumps`` that writes :class:`_Deep` values at any depth."""
    deep: list[_Deep] = []

    def mark(value: Any) -> Any:
        if isinstance(value, _Deep):
            deep.append(value)
            return f"@@deep{len(deep) - 1}@@"
        if isinstance(value, dict):
            return {k: mark(v) for k, v in value.items()}
        if isinstance(value, list):
            return [mark(v) for v in value]
        return value

    text = json.dumps(mark(obj))
    for k, item in enumerate(deep):
        closes = "".join("]" if o == "[" else "}" for o in reversed(item.opens))
        text = text.replace(f'"@@deep{k}@@"', "".join(item.opens) + _dumps(item.value) + closes, 1)
    return text


def mutate_json(obj: Any, rng: random.Random) -> str:
    """Applies one structure-aware mutation to ``obj`` in place; returns its description."""
    op = rng.choice(
        [
            "retype",
            "retype",
            "layer-key",
            "layer-key",
            "layer-key",
            "delete",
            "swap",
            "int",
            "nest",
            "ref",
            "ref",
            "self-nest",
            "duplicate-layer",
            "drop-layer",
            "class",
            "shuffle-layers",
            "long-string",
        ]
    )
    nodes = list(_nodes(obj))
    if not nodes:
        return "no-op (empty)"
    if op in ("layer-key", "class", "self-nest", "duplicate-layer", "drop-layer", "shuffle-layers"):
        lists = [(layers, p) for layers, p in _layer_lists(obj) if layers]
        if not lists:
            op = "retype"
        else:
            layers, lpath = rng.choice(lists)
            k = rng.randrange(len(layers))
            entry = layers[k]
            if op == "layer-key":
                cfg = entry.get("config") if isinstance(entry, dict) else None
                if isinstance(cfg, dict) and cfg:
                    key = rng.choice(sorted(cfg))
                    old = cfg[key]
                    if isinstance(old, bool) or not isinstance(old, (int, float)) or rng.random() < 0.5:
                        cfg[key] = copy.deepcopy(rng.choice(_VALUES))
                    else:
                        cfg[key] = rng.choice([0, -1, -7, old + 1, old - 1, old * 1000, 2**40, -(2**40)])
                    return f"layer-key {lpath}[{k}].config.{key}: {_short(old)} -> {_short(cfg[key])}"
                op = "class"
            if op == "class" and isinstance(entry, dict):
                old = entry.get("class_name")
                entry["class_name"] = rng.choice(_CLASS_NAMES)
                return f"class {lpath}[{k}]: {old} -> {entry['class_name']}"
            if op == "self-nest":
                # Bounded: a case applies up to three mutations, and self-nesting twice multiplies sizes.
                depth = rng.choice([1, 2, 3, 8, 40]) if len(_dumps(obj)) < (1 << 16) else 1
                top = copy.deepcopy(obj)
                inner = top.get("config", top) if isinstance(top, dict) else top
                model_class = top.get("class_name", "Functional") if isinstance(top, dict) else "Functional"
                nested: Any = entry
                for _ in range(depth):
                    shell = copy.deepcopy(inner) if isinstance(inner, dict) else {}
                    if isinstance(shell.get("layers"), list) and shell["layers"]:
                        shell["layers"][min(k, len(shell["layers"]) - 1)] = nested
                    nested = {"class_name": model_class, "config": shell, "name": f"nest{depth}"}
                    if isinstance(entry, dict) and "inbound_nodes" in entry:
                        nested["inbound_nodes"] = entry["inbound_nodes"]
                layers[k] = nested
                return f"self-nest {lpath}[{k}] depth {depth}"
            if op == "duplicate-layer":
                layers.insert(k, copy.deepcopy(entry))
                return f"duplicate-layer {lpath}[{k}]"
            if op == "drop-layer":
                del layers[k]
                return f"drop-layer {lpath}[{k}]"
            if op == "shuffle-layers":
                rng.shuffle(layers)
                return f"shuffle-layers {lpath}"
            op = "retype"
    if op == "ref":
        refs = [(c, k, p) for c, k, p in nodes if _is_ref(c[k])]
        if refs:
            container, key, path = rng.choice(refs)
            ref = container[key]
            slot = rng.randrange(3)
            old = ref[slot]
            if slot == 0:
                ref[0] = rng.choice(_layer_names(obj) + ["no_such_layer", ""])
            else:
                ref[slot] = rng.choice([1, 2, 5, -1, 10**9])
            return f"ref {path}[{slot}]: {_short(old)} -> {_short(ref[slot])}"
        op = "retype"
    container, key, path = rng.choice(nodes)
    old = container[key]
    if op == "delete":
        del container[key]
        return f"delete {path}"
    if op == "swap" and isinstance(old, (list, dict)):
        container[key] = list(old.values()) if isinstance(old, dict) else {str(i): v for i, v in enumerate(old)}
        return f"swap {path} ({type(old).__name__})"
    if op == "int":
        ints = [(c, k, p) for c, k, p in nodes if isinstance(c[k], int) and not isinstance(c[k], bool)]
        if ints:
            container, key, path = rng.choice(ints)
            old = container[key]
            container[key] = rng.choice([0, -1, -(2**31), 2**31, 2**62, 10**30, old + 1, old - 1, old * 1000])
            return f"int {path}: {old} -> {_short(container[key])}"
    if op == "nest":
        depth = rng.choice([10, 100, 1000, 5000])
        container[key] = _nested(old, depth, rng)
        return f"nest {path} depth {depth}"
    if op == "long-string":
        strings = [(c, k, p) for c, k, p in nodes if isinstance(c[k], str)]
        if strings:
            container, key, path = rng.choice(strings)
            container[key] = container[key] + _LONG
            return f"long-string {path}"
    container[key] = copy.deepcopy(rng.choice(_VALUES))
    return f"retype {path}: {_short(old)} -> {_short(container[key])}"


def _short(value: Any) -> str:
    if isinstance(value, _Deep):
        return f"<{len(value.opens)} levels deep>"
    if isinstance(value, (dict, list)):
        text = f"<{type(value).__name__} of {len(value)}>" if len(_dumps(value)) > 40 else _dumps(value)
    else:
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _mutate_json_text(text: str | bytes, rng: random.Random) -> tuple[str, str]:
    obj = json.loads(text)
    what = [mutate_json(obj, rng) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
    return _dumps(obj), "; ".join(what)


def _json(case: Case, base: Seed, rng: random.Random, workdir: Path) -> None:
    if base.kind == "keras":
        members = _zip_members(case.main)
        name = "config.json" if rng.random() < 0.9 or "metadata.json" not in members else "metadata.json"
        text, what = _mutate_json_text(members[name], rng)
        members[name] = text.encode()
        _write_zip(case.main, members)
        case.mutation = f"json {name}: {what}"
    elif base.kind == "h5":
        import h5py

        with h5py.File(case.main, "r+") as f:
            raw = f.attrs["model_config"]
            text, what = _mutate_json_text(raw, rng)
            f.attrs["model_config"] = text.encode() if isinstance(raw, bytes) else text
        case.mutation = f"json model_config: {what}"
    elif base.kind == "saved":
        from torch_lstm_probe.io import CONFIG_KEY

        meta, tensors = _read_saved(case.main)
        meta[CONFIG_KEY], what = _mutate_json_text(meta[CONFIG_KEY], rng)
        _write_saved(case.main, meta, tensors)
        case.mutation = f"json saved config: {what}"
    else:
        text, what = _mutate_json_text(case.main.read_text(), rng)
        case.main.write_text(text)
        case.mutation = f"json {case.main.name}: {what}"


# ---- tlp.save files
def _read_saved(path: Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        return dict(f.metadata() or {}), {k: f.get_tensor(k) for k in f.keys()}


def _write_saved(path: Path, meta: dict[str, str], tensors: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata=meta)


def _saved_tensors(case: Case, rng: random.Random) -> str:
    """One mutation of the tensors of a tlp.save file."""
    meta, tensors = _read_saved(case.main)
    name = rng.choice(sorted(tensors))
    op = rng.choice(["delete", "reshape", "reshape", "dtype", "values", "add", "rename"])
    if op == "delete":
        del tensors[name]
    elif op == "reshape":
        tensors[name], how = _reshaped(tensors[name], rng)
        op = f"reshape ({how})"
    elif op == "dtype":
        kind = rng.choice(["float16", "float64", "int32", "int8", "bool", "uint8"])
        tensors[name] = tensors[name].astype(kind)
        op = f"dtype {kind}"
    elif op == "values":
        if tensors[name].dtype.kind == "f" and tensors[name].size:
            tensors[name] = tensors[name].copy()
            tensors[name].reshape(-1)[0] = np.nan
    elif op == "add":
        tensors[name + "_extra"] = np.ones((2, 3), np.float32)
    else:
        tensors[name + "_renamed"] = tensors.pop(name)
    _write_saved(case.main, meta, tensors)
    return f"{op} {name}"


# ---- HDF5 weights
def _with_weights_h5(case: Case, base: Seed, edit: Callable[[Path], str]) -> str:
    """Runs ``edit`` on the case's weights HDF5 file (extracted from and put back into a zip)."""
    if base.kind == "json":
        return edit(case.weights)  # type: ignore[arg-type]
    if base.kind == "h5":
        return edit(case.main)
    members = _zip_members(case.main)
    if "model.weights.h5" not in members:
        return "no weights member"
    tmp = case.main.with_name("model.weights.h5")
    tmp.write_bytes(members["model.weights.h5"])
    what = edit(tmp)
    members["model.weights.h5"] = tmp.read_bytes()
    tmp.unlink()
    _write_zip(case.main, members)
    return what


def _datasets(f: Any) -> list[str]:
    import h5py

    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return sorted(names)


def _reshaped(data: np.ndarray, rng: random.Random) -> tuple[np.ndarray, str]:
    op = rng.choice(["drop-axis", "add-axis", "grow", "shrink", "transpose", "empty", "scalar"])
    if op == "drop-axis" and data.ndim >= 1:
        return data.reshape(-1)[: max(1, data.size // max(1, data.shape[-1]))] if data.ndim > 1 else data[:1].reshape(
            ()
        ), op
    if op == "add-axis":
        return data[None], op
    if op in ("grow", "shrink") and data.ndim >= 1:
        axis = rng.randrange(data.ndim)
        if op == "grow":
            pad = [(0, 0)] * data.ndim
            pad[axis] = (0, 1)
            return np.pad(data, pad), f"grow axis {axis}"
        return np.take(data, range(max(0, data.shape[axis] - 1)), axis=axis), f"shrink axis {axis}"
    if op == "transpose" and data.ndim >= 2:
        return np.ascontiguousarray(data.T), op
    if op == "empty":
        return np.zeros((0,) + data.shape[1:], data.dtype), op
    return np.asarray(data.reshape(-1)[0] if data.size else 0, data.dtype), "scalar"


def _weights(case: Case, base: Seed, rng: random.Random, workdir: Path) -> None:
    import h5py

    if base.kind == "saved":
        case.mutation = "weights saved " + _saved_tensors(case, rng)
        return

    def edit(path: Path) -> str:
        with h5py.File(path, "r+") as f:
            names = _datasets(f)
            if not names:
                return "no datasets"
            name = rng.choice(names)
            op = rng.choice(
                ["delete", "reshape", "reshape", "dtype", "values", "add", "rename", "huge", "group-delete"]
            )
            if op == "delete":
                del f[name]
                return f"delete {name}"
            data = f[name][()]
            if op == "reshape":
                new, how = _reshaped(np.asarray(data), rng)
                del f[name]
                f.create_dataset(name, data=new)
                return f"reshape {name} {np.shape(data)} -> {new.shape} ({how})"
            if op == "dtype":
                kind = rng.choice(["float16", "float64", "int32", "int8", "bool", "complex64", "bytes", "vlen-str"])
                arr = np.asarray(data)
                if kind == "bytes":
                    new = np.full(arr.shape, b"xyz", dtype="S3")
                elif kind == "vlen-str":
                    new = np.full(arr.shape, "xyz", dtype=object)
                    del f[name]
                    f.create_dataset(name, data=new, dtype=h5py.string_dtype())
                    return f"dtype {name} -> {kind}"
                else:
                    new = arr.astype(kind)
                del f[name]
                f.create_dataset(name, data=new)
                return f"dtype {name} -> {kind}"
            if op == "values":
                arr = np.array(data, dtype=np.float32, copy=True) if np.asarray(data).dtype.kind == "f" else None
                if arr is None or arr.size == 0:
                    return f"values {name}: not float"
                arr.reshape(-1)[rng.randrange(arr.size)] = rng.choice([np.nan, np.inf, -np.inf, 1e38])
                f[name][...] = arr
                return f"values {name}: non-finite"
            if op == "add":
                parent = name.rsplit("/", 1)[0] if "/" in name else ""
                extra = f"{parent}/extra_{rng.randrange(100)}" if parent else f"extra_{rng.randrange(100)}"
                if extra not in f:
                    f.create_dataset(extra, data=np.ones((2, 3), np.float32))
                return f"add {extra}"
            if op == "rename":
                new_name = name + "_renamed"
                f.move(name, new_name)
                return f"rename {name}"
            if op == "huge":
                side = rng.choice([16384, 65536])
                del f[name]
                f.create_dataset(name, shape=(side, side), dtype="f4", chunks=(64, 64))
                return f"huge {name} declared ({side}, {side})"
            group = name.rsplit("/", 1)[0] if "/" in name else name
            del f[group]
            return f"group-delete {group}"

    case.mutation = "weights " + _with_weights_h5(case, base, edit)


def _attrs(case: Case, base: Seed, rng: random.Random, workdir: Path) -> None:
    import h5py

    def edit(path: Path) -> str:
        with h5py.File(path, "r+") as f:
            owners: list[tuple[str, Any]] = []
            f.visititems(lambda name, obj: owners.append((name, obj)) if obj.attrs.keys() else None)
            owners.append(("/", f))
            holders = [(n, o, k) for n, o in owners for k in o.attrs.keys()]
            if not holders:
                return "no attributes"
            where, obj, key = rng.choice(holders)
            old = obj.attrs[key]
            choice = rng.choice(["drop-entry", "add-entry", "reverse", "ints", "empty", "text", "garbage", "delete"])
            if choice == "delete":
                del obj.attrs[key]
            elif isinstance(old, np.ndarray) and old.ndim == 1 and choice in ("drop-entry", "add-entry", "reverse"):
                items = list(old)
                if choice == "drop-entry" and items:
                    items.pop(rng.randrange(len(items)))
                elif choice == "add-entry":
                    items.insert(rng.randrange(len(items) + 1), b"no_such_name")
                else:
                    items.reverse()
                obj.attrs[key] = (
                    np.array(items, dtype=old.dtype)
                    if items and old.dtype.kind != "O"
                    else np.array([i if isinstance(i, bytes) else str(i).encode() for i in items], dtype="S")
                )
            elif choice == "ints":
                obj.attrs[key] = np.arange(3, dtype=np.int64)
            elif choice == "empty":
                obj.attrs[key] = np.array([], dtype="S1")
            elif choice == "text":
                obj.attrs[key] = rng.choice(["abc", "9.9.9", "", "3", "{", "null", "[]", "2.x.y"])
            else:
                obj.attrs[key] = bytes(rng.randrange(256) for _ in range(16))
            return f"attrs {where}@{key}: {choice}"

    case.mutation = "attrs " + _with_weights_h5(case, base, edit)


# ---- zip archives
def _zip_members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist()}


def _write_zip(path: Path, members: dict[str, bytes], extra: Sequence[tuple[str, bytes]] = ()) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names on purpose
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in list(members.items()) + list(extra):
                # A fixed timestamp: the same seed and index must give the same bytes.
                zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data, zipfile.ZIP_DEFLATED)


def _set_zip_method(data: bytes, member: str, method: int) -> bytes:
    """Rewrites the compression method of ``member`` in its local and central headers."""
    buf = bytearray(data)
    name = member.encode()
    for signature, method_at, name_len_at, name_at in ((b"PK\x03\x04", 8, 26, 30), (b"PK\x01\x02", 10, 28, 46)):
        pos = buf.find(signature)
        while pos >= 0:
            (length,) = struct.unpack_from("<H", buf, pos + name_len_at)
            if bytes(buf[pos + name_at : pos + name_at + length]) == name:
                struct.pack_into("<H", buf, pos + method_at, method)
            pos = buf.find(signature, pos + 4)
    return bytes(buf)


def _crc32_repeat(chunk: bytes, times: int) -> int:
    """CRC-32 of ``chunk * times`` without building it (GF(2) shift operators, squared)."""

    def apply(matrix: list[int], vector: int) -> int:
        out, k = 0, 0
        while vector:
            if vector & 1:
                out ^= matrix[k]
            vector >>= 1
            k += 1
        return out

    def square(matrix: list[int]) -> list[int]:
        return [apply(matrix, column) for column in matrix]

    # Operator for one zero bit on the reflected CRC register (polynomial 0xEDB88320).
    op = [0xEDB88320] + [1 << (k - 1) for k in range(1, 32)]
    for _ in range(3):
        op = square(op)  # one zero byte
    shift_bits = len(chunk)
    power = op
    block = [1 << k for k in range(32)]  # identity
    while shift_bits:
        if shift_bits & 1:
            block = [apply(power, column) for column in block]
        power = square(power)
        shift_bits >>= 1
    one = zlib.crc32(chunk)
    crc = 0
    for _ in range(times):  # crc(A || B) = shift(crc(A), len(B)) ^ crc(B)
        crc = apply(block, crc) ^ one
    return crc


_BOMBS: dict[tuple[str, str], bytes] = {}


def _bomb_zip(members: dict[str, bytes], target: str) -> bytes:
    """A zip whose ``target`` member inflates to ``_BOMB_BYTES`` of spaces (a few MB on disk)."""
    chunk = b" " * (64 << 20)
    times = _BOMB_BYTES // len(chunk)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = comp.compress(chunk) + comp.flush(zlib.Z_FULL_FLUSH)
    payload = block * times + comp.flush()
    crc = _crc32_repeat(chunk, times)
    out = io.BytesIO()
    central = []
    for name, data in members.items():
        raw = name.encode()
        if name == target:
            method, body, size, crc_value = 8, payload, _BOMB_BYTES, crc
        else:
            method, body, size, crc_value = 0, data, len(data), zlib.crc32(data)
        offset = out.tell()
        extra = struct.pack("<HHQQ", 1, 16, size, len(body))
        out.write(
            struct.pack(
                "<IHHHHHIIIHH",
                0x04034B50,
                45,
                0,
                method,
                0,
                0x21,
                crc_value,
                0xFFFFFFFF,
                0xFFFFFFFF,
                len(raw),
                len(extra),
            )
        )
        out.write(raw + extra + body)
        central.append((raw, method, crc_value, size, len(body), offset))
    start = out.tell()
    for raw, method, crc_value, size, comp_size, offset in central:
        extra = struct.pack("<HHQQQ", 1, 24, size, comp_size, offset)
        out.write(
            struct.pack(
                "<IHHHHHHIIIHHHHHII",
                0x02014B50,
                45,
                45,
                0,
                method,
                0,
                0x21,
                crc_value,
                0xFFFFFFFF,
                0xFFFFFFFF,
                len(raw),
                len(extra),
                0,
                0,
                0,
                0,
                0xFFFFFFFF,
            )
        )
        out.write(raw + extra)
    end = out.tell()
    out.write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, len(central), len(central), end - start, start))
    out.write(struct.pack("<IIQI", 0x07064B50, 0, end, 1))
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0))
    return out.getvalue()


def _zip(case: Case, base: Seed, rng: random.Random, workdir: Path) -> None:
    members = _zip_members(case.main)
    names = sorted(members)
    name = rng.choice(names)
    op = rng.choice(["member-raw", "member-raw", "member-raw", "delete", "duplicate", "extra", "method", "bomb"])
    if op == "member-raw":
        members[name], what = mutate_bytes(members[name], rng)
        _write_zip(case.main, members)
        case.mutation = f"zip member {name}: {what}"
    elif op == "delete":
        del members[name]
        _write_zip(case.main, members)
        case.mutation = f"zip delete {name}"
    elif op == "duplicate":
        other, _ = mutate_bytes(members[name], rng)
        _write_zip(case.main, members, extra=[(name, other)])
        case.mutation = f"zip duplicate {name}"
    elif op == "extra":
        extra_name = rng.choice(["../escape.json", "/abs.h5", "model.weights.npz", "config.json/", "variables.h5"])
        _write_zip(case.main, members, extra=[(extra_name, b"\x00" * 64)])
        case.mutation = f"zip extra member {extra_name!r}"
    elif op == "method":
        case.main.write_bytes(_set_zip_method(case.main.read_bytes(), name, rng.choice([99, 12, 14, 93])))
        case.mutation = f"zip method of {name}"
    else:
        key = (base.name, name)
        if key not in _BOMBS:
            _BOMBS[key] = _bomb_zip(members, name)
        case.main.write_bytes(_BOMBS[key])
        case.mutation = f"zip bomb {name} ({_BOMB_BYTES >> 20} MiB inflated)"


# ---- files that read outside themselves
def _unsafe(case: Case, base: Seed, rng: random.Random, workdir: Path) -> None:
    import h5py

    outside = workdir / "outside.bin"
    outside.write_bytes(np.full(1 << 16, 0.25, np.float32).tobytes())
    other = workdir / "other.h5"
    op = rng.choice(["external-storage", "external-link", "virtual", "soft-cycle"])

    def edit(path: Path) -> str:
        with h5py.File(path, "r+") as f:
            names = [n for n in _datasets(f) if f[n].dtype.kind == "f" and f[n].size <= (1 << 14)]
            if not names:
                return f"{op}: no dataset"
            name = rng.choice(names)
            shape, dtype = f[name].shape, f[name].dtype
            del f[name]
            if op == "external-storage":
                f.create_dataset(name, shape=shape, dtype="<f4", external=[(str(outside), 0, h5py.h5f.UNLIMITED)])
            elif op == "external-link":
                with h5py.File(other, "w") as g:
                    g.create_dataset("data", data=np.zeros(shape, dtype))
                f[name] = h5py.ExternalLink(str(other), "/data")
            elif op == "virtual":
                with h5py.File(other, "w") as g:
                    g.create_dataset("data", data=np.zeros(shape, dtype))
                layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
                layout[...] = h5py.VirtualSource(str(other), "data", shape=shape)
                f.create_virtual_dataset(name, layout)
            else:
                parent = name.rsplit("/", 1)[0] if "/" in name else "/"
                f[name] = h5py.SoftLink("/" + parent if parent != "/" else "/")
            return f"{op} at {name}"

    what = _with_weights_h5(case, base, edit)
    case.mutation = f"unsafe {what}"
    case.expect_refused = op != "soft-cycle" and ": no dataset" not in what and "no weights member" not in what


def _special(case: Case, base: Seed, rng: random.Random, workdir: Path) -> None:
    op = rng.choice(["fifo", "directory", "dev-zero", "empty", "dev-null"])
    target = workdir / f"special_{op}{case.main.suffix}"
    if op == "fifo":
        os.mkfifo(target)
    elif op == "directory":
        target.mkdir()
    elif op == "dev-zero":
        target.symlink_to("/dev/zero")
    elif op == "dev-null":
        target.symlink_to("/dev/null")
    else:
        target.write_bytes(b"")
    case.main = target
    case.mutation = f"special {op}"


_FAMILIES: dict[str, Callable[[Case, Seed, random.Random, Path], None]] = {
    "raw": _raw,
    "json": _json,
    "weights": _weights,
    "attrs": _attrs,
    "zip": _zip,
    "unsafe": _unsafe,
    "special": _special,
}


# ---------------------------------------------------------------------------------------- running one case
def _sites(err: BaseException) -> tuple[str, str]:
    """(innermost frame of this project, innermost frame) of an exception, as ``path:line``."""
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return "", ""

    def where(frame: traceback.FrameSummary) -> str:
        path = Path(frame.filename)
        try:
            path = path.resolve().relative_to(ROOT)
        except ValueError:
            pass
        return f"{path}:{frame.lineno}"

    own = [f for f in frames if _in_project(f.filename)]
    return (where(own[-1]) if own else where(frames[-1])), where(frames[-1])


def _untyped_cause(err: BaseException) -> BaseException | None:
    """The innermost exception in ``err``'s cause chain that is not one of ours (None if none)."""
    from torch_lstm_probe.errors import TorchLstmProbeError

    found, seen = None, set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if not isinstance(err, TorchLstmProbeError):
            found = err
        err = err.__cause__  # type: ignore[assignment]
    return found


def _in_project(filename: str) -> bool:
    try:
        rel = Path(filename).resolve().relative_to(ROOT)
    except ValueError:
        return False
    return rel.parts[:1] in (("torch_lstm_probe",), ("converters",))


def _is_memory_error(err: BaseException) -> bool:
    text = str(err)
    return isinstance(err, MemoryError) or (
        isinstance(err, RuntimeError) and ("can't allocate memory" in text or "not enough memory" in text)
    )


def _inputs(model: Any, batch: int, steps: int) -> list[Any] | None:
    """Small inputs of each declared shape (``None`` axes: ``batch`` first, ``steps`` after)."""
    import torch

    xs = []
    generator = torch.Generator().manual_seed(0)
    for spec in model.input_specs:
        shape = spec.get("shape")
        if shape is None:
            return None
        dims = [batch if k == 0 else (steps if d is None else d) for k, d in enumerate(shape)]
        if any(not isinstance(d, int) or d < 0 for d in dims) or math.prod(dims) > _FORWARD_MAX_ELEMENTS:
            return None
        if str(spec.get("dtype", "float32")).startswith(("float", "bfloat")):
            xs.append(torch.randn(dims, generator=generator))
        else:
            xs.append(torch.randint(0, 3, dims, generator=generator))
    return xs


def exercise(case: Case, progress: dict[str, Any] | None = None) -> list[str]:
    """Loads the case and runs the model; returns notes. Raises what it raises.

    ``progress["stage"]`` says how far it got: load, forward, probe, batch0 (batch of 0), len0 (0 steps).
    """
    import torch

    import torch_lstm_probe as tlp

    notes: list[str] = []
    state = progress if progress is not None else {}
    state["stage"] = "load"
    if case.main.suffix == ".safetensors":
        model = tlp.load(case.main)
    else:
        model = tlp.load_keras(case.main, weights=case.weights)
    if case.expect_refused:
        raise _Unsafe("the file reads outside itself, yet it loaded")
    with torch.inference_mode():
        xs = _inputs(model, 2, 3)
        if xs is None:
            notes.append("forward skipped: no usable declared input shape")
            return notes
        state["stage"] = "forward"
        model.reset_states()
        model(*xs)
        state["stage"] = "probe"
        model.reset_states()
    tlp.probe(model, xs if len(xs) > 1 else xs[0], gates=True)
    with torch.inference_mode():
        state["stage"] = "batch0"
        model.reset_states()
        zero_batch = _inputs(model, 0, 3)
        if zero_batch is not None:
            try:
                model(*zero_batch)
            except tlp.errors.InputError:
                notes.append("batch 0: InputError")
        state["stage"] = "len0"
        model.reset_states()
        if any(None in (s.get("shape") or [])[1:] for s in model.input_specs):
            try:
                model(*_inputs(model, 2, 0))  # type: ignore[misc]
                notes.append("0 steps: ran")
            except tlp.errors.InputError:
                pass
    return notes


class _Unsafe(Exception):
    pass


def run_one(case: Case, target: Callable[..., list[str]] | None = None) -> Outcome:
    """Runs one built case in this process (``target(case, progress)``, by default :func:`exercise`)
    and classifies what happened."""
    from torch_lstm_probe.errors import TorchLstmProbeError

    outcome = Outcome(case.index, case.seed, case.mutation, "clean")
    start = time.perf_counter()
    progress: dict[str, Any] = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outcome.notes = (target or exercise)(case, progress)
    except _Unsafe as err:
        outcome.kind, outcome.error, outcome.message = "unsafe", "loaded", str(err)
    except TorchLstmProbeError as err:
        outcome.kind, outcome.error = "typed", type(err).__name__
        outcome.message = str(err)[:300]
        outcome.site, outcome.raise_site = _sites(err)
        cause = _untyped_cause(err)
        if cause is not None:
            outcome.cause = type(cause).__name__
            outcome.cause_site = _sites(cause)[0]
    except RecursionError as err:
        outcome.kind, outcome.error, outcome.message = "untyped", "RecursionError", str(err)[:300]
        outcome.site, outcome.raise_site = _sites(err)
    except BaseException as err:  # noqa: BLE001  (the whole point: anything else is a finding)
        if isinstance(err, KeyboardInterrupt):
            raise
        outcome.kind = "memory" if _is_memory_error(err) else "untyped"
        outcome.error = type(err).__name__
        outcome.message = str(err)[:300]
        outcome.site, outcome.raise_site = _sites(err)
    outcome.stage = progress.get("stage", "load")
    outcome.seconds = time.perf_counter() - start
    return outcome


# ---------------------------------------------------------------------------------------- workers
def _clear_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM, the peak resident set size
    except OSError:
        pass


def _peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _resolve_target(target: str | None) -> Callable[..., list[str]] | None:
    """``"module:function"`` to the function (None: the default target)."""
    if target is None:
        return None
    import importlib

    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _worker(conn: Connection, seed: int, mem_gb: float, dump_path: str, target: str | None = None) -> None:
    """Worker loop: receives case indices, sends back Outcome dicts."""
    import faulthandler
    import resource

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if target is None:  # import before the memory bound: imports are not the subject
        import torch
        import torch_lstm_probe.converters  # noqa: F401

        torch.set_num_threads(1)
    limit = int(mem_gb * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    seeds = discover_seeds()
    run = _resolve_target(target)
    dump = open(dump_path, "w")  # noqa: SIM115  (kept open: faulthandler writes to it on a hang or a crash)
    faulthandler.enable(file=dump)
    while True:
        message = conn.recv()
        if message is None:
            return
        index, timeout = message
        with tempfile.TemporaryDirectory(prefix="tlp-fuzz-") as tmp:
            try:
                case = build_case(seeds, seed, index, Path(tmp))
            except Exception as err:  # a mutation that could not be written is the harness's problem
                conn.send(asdict(Outcome(index, "?", "build failed", "unbuilt", stage="build", notes=[repr(err)])))
                continue
            conn.send(("started", case.seed, case.mutation))
            dump.seek(0)
            dump.truncate()
            faulthandler.dump_traceback_later(max(1.0, timeout * 0.8), file=dump)
            _clear_peak()
            outcome = run_one(case, run)
            faulthandler.cancel_dump_traceback_later()
            outcome.peak_rss_mb = _peak_rss_mb()
            outcome.peak_child_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        conn.send(asdict(outcome))


@dataclass
class _Slot:
    process: Any = None
    conn: Any = None
    index: int | None = None
    started: float = 0.0
    seed_name: str = "?"
    mutation: str = "?"
    dump: str = ""


def _hang_site(dump_path: str) -> str:
    """The innermost project frame in a faulthandler dump (else its innermost frame)."""
    try:
        lines = Path(dump_path).read_text().splitlines()
    except OSError:
        return ""
    frames = []
    for line in lines:
        line = line.strip()
        if line.startswith("File "):
            parts = line.split('"')
            if len(parts) >= 3:
                lineno = line.rsplit("line ", 1)[-1].split()[0]
                frames.append((parts[1], lineno))
        elif line.startswith(("Thread", "Current thread")) and frames:
            break  # the first thread listed is the one that was running
    for filename, lineno in frames:  # faulthandler lists the innermost frame first
        if _in_project(filename):
            return f"{Path(filename).resolve().relative_to(ROOT)}:{lineno}"
    return f"{frames[0][0]}:{frames[0][1]}" if frames else ""


def run_cases(
    indices: Sequence[int],
    seed: int = 0,
    timeout: float = 20.0,
    mem_gb: float = 3.0,
    jobs: int = 1,
    progress: Callable[[Outcome], None] | None = None,
    target: str | None = None,
) -> list[Outcome]:
    """Runs cases in ``jobs`` worker processes, each under the memory bound; hangs are killed.

    Args:
        indices: the case indices to run.
        seed: the run seed.
        timeout: seconds a case may take; then its worker is killed and the case is a hang.
        mem_gb: the address-space bound of each worker, in GiB.
        jobs: the number of worker processes.
        progress: called with each outcome as it arrives.
        target: ``"module:function"`` run on each case instead of :func:`exercise` (for tests).

    Returns:
        One Outcome per index, in index order.
    """
    ctx = multiprocessing.get_context("spawn")
    pending = list(reversed(indices))
    outcomes: list[Outcome] = []
    tmp = tempfile.mkdtemp(prefix="tlp-fuzz-dumps-")
    slots = [_Slot(dump=os.path.join(tmp, f"worker{k}.txt")) for k in range(max(1, jobs))]

    def start(slot: _Slot) -> None:
        parent, child = ctx.Pipe()
        slot.process = ctx.Process(target=_worker, args=(child, seed, mem_gb, slot.dump, target), daemon=True)
        slot.process.start()
        child.close()
        slot.conn, slot.index = parent, None

    def dispatch(slot: _Slot) -> None:
        if pending:
            slot.index = pending.pop()
            slot.conn.send((slot.index, timeout))
            slot.started = time.monotonic()
            slot.seed_name = slot.mutation = "?"

    def restart(slot: _Slot) -> None:
        if pending:
            start(slot)
            dispatch(slot)

    def finish(slot: _Slot, outcome: Outcome) -> None:
        outcomes.append(outcome)
        if progress is not None:
            progress(outcome)
        slot.index = None

    try:
        for slot in slots:
            start(slot)
            dispatch(slot)
        startup = 120.0  # the first message may wait for the worker's imports
        while any(slot.index is not None for slot in slots):
            ready = wait([s.conn for s in slots if s.index is not None], timeout=0.5)
            now = time.monotonic()
            for slot in slots:
                if slot.index is None:
                    continue
                if slot.conn in ready:
                    try:
                        message = slot.conn.recv()
                    except (EOFError, OSError):
                        slot.process.join(5)
                        code = slot.process.exitcode
                        site = _hang_site(slot.dump)  # a fatal signal leaves a faulthandler dump
                        finish(
                            slot,
                            Outcome(
                                slot.index, slot.seed_name, slot.mutation, "crash", error=f"exit {code}", site=site
                            ),
                        )
                        restart(slot)
                        continue
                    if isinstance(message, tuple) and message[0] == "started":
                        slot.seed_name, slot.mutation = message[1], message[2]
                        slot.started = now
                        continue
                    finish(slot, Outcome(**message))
                    dispatch(slot)
                elif slot.mutation == "?" and now - slot.started > startup:
                    raise RuntimeError("a fuzz worker did not start")
                elif slot.mutation != "?" and now - slot.started > timeout:
                    slot.process.kill()
                    slot.process.join()
                    finish(
                        slot,
                        Outcome(
                            slot.index,
                            slot.seed_name,
                            slot.mutation,
                            "hang",
                            error="timeout",
                            site=_hang_site(slot.dump),
                            seconds=now - slot.started,
                        ),
                    )
                    restart(slot)
    finally:
        for slot in slots:
            if slot.process is not None and slot.process.is_alive():
                try:
                    slot.conn.send(None)
                except OSError:
                    pass
                slot.process.join(5)
                if slot.process.is_alive():
                    slot.process.kill()
                    slot.process.join()
        shutil.rmtree(tmp, ignore_errors=True)
    return sorted(outcomes, key=lambda o: o.index)


# ---------------------------------------------------------------------------------------- reports
def summarize(outcomes: Sequence[Outcome], seconds: float | None = None) -> str:
    """A plain-text table: outcomes, typed errors by class, failures by type and code site."""
    kinds = Counter(o.kind for o in outcomes)
    lines = [
        f"cases: {len(outcomes)}"
        + (f" in {seconds:.0f} s ({len(outcomes) / max(seconds, 1e-9):.1f}/s)" if seconds else "")
    ]
    for kind in ("clean", "typed", "unbuilt") + FAILURE_KINDS:
        lines.append(f"  {kind:<8} {kinds.get(kind, 0)}")
    peak = max(outcomes, key=lambda o: o.peak_rss_mb, default=None)
    if peak is not None:
        lines.append(f"peak RSS of one case: {peak.peak_rss_mb:.0f} MiB (case {peak.index}: {peak.mutation[:80]})")
        children = max(o.peak_child_rss_mb for o in outcomes)
        lines.append(f"peak RSS of a child process (a reader's fork): {children:.0f} MiB")
    slowest = max((o for o in outcomes if o.kind != "hang"), key=lambda o: o.seconds, default=None)
    if slowest is not None:
        lines.append(f"slowest finished case: {slowest.seconds:.2f} s (case {slowest.index})")
    typed = Counter((o.error, o.stage) for o in outcomes if o.kind == "typed")
    if typed:
        lines.append("typed errors by class (stage):")
        for (error, stage), n in typed.most_common():
            lines.append(f"  {n:6d}  {error} ({stage})")
    wrapped = Counter((o.cause, o.cause_site) for o in outcomes if o.kind == "typed" and o.cause)
    if wrapped:
        lines.append("typed errors made from another exception, by its class and code site:")
        for (cause, site), n in wrapped.most_common():
            lines.append(f"  {n:6d}  {cause:<22} {site}")
    failures = Counter((o.kind, o.error, o.site) for o in outcomes if o.kind in FAILURE_KINDS)
    if failures:
        lines.append("FAILURES by kind, exception and code site (example case):")
        for (kind, error, site), n in failures.most_common():
            example = next(o for o in outcomes if (o.kind, o.error, o.site) == (kind, error, site))
            lines.append(
                f"  {n:6d}  {kind:<8} {error:<22} {site or '?'}  (case {example.index}: {example.mutation[:70]})"
            )
    else:
        lines.append("failures: none")
    return "\n".join(lines)


def reader_findings(outcomes: Sequence[Outcome], seed: int) -> str:
    """Markdown list of failure sites in the readers (``converters/readers/``) and of hangs."""
    groups: dict[tuple[str, str, str], list[Outcome]] = {}
    for o in outcomes:
        if o.kind in FAILURE_KINDS and (
            o.site.startswith("converters/readers/")
            or o.kind in ("hang", "crash", "unsafe")
            or o.site.startswith(("/", "<"))
            or not o.site
        ):
            groups.setdefault((o.kind, o.error, o.site), []).append(o)
    lines = [f"# Reader-side fuzz findings (seed {seed}, {len(outcomes)} cases)", ""]
    if not groups:
        lines.append("None.")
    for (kind, error, site), cases in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        example = cases[0]
        lines.append(f"- **{kind} {error}** at `{site or '?'}` ({len(cases)} cases); raised at `{example.raise_site}`")
        lines.append(
            f"  - reproduce: `python scripts/fuzz.py --replay {example.index} --seed {seed}` "
            f"({example.seed}: {example.mutation[:150]})"
        )
        if example.message:
            lines.append(f"  - message: {example.message[:200]!r}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=500, help="number of cases to run (indices first..first+cases-1)")
    parser.add_argument("--first", type=int, default=0, help="index of the first case")
    parser.add_argument("--seed", type=int, default=0, help="run seed: the same seed and index give the same case")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds one case may take before it is a hang")
    parser.add_argument("--mem-gb", type=float, default=3.0, help="address-space bound of a worker (GiB)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--replay", type=int, default=None, help="run this one case in-process and show its traceback")
    parser.add_argument("--save", type=Path, default=None, help="with --replay: also copy the case's files here")
    parser.add_argument("--report", type=Path, default=None, help="write every outcome as JSON lines to this file")
    parser.add_argument("--reader-findings", type=Path, default=None, help="write reader-side failures (markdown) here")
    parser.add_argument("--quiet", action="store_true", help="no per-failure lines while running")
    args = parser.parse_args(argv)

    if args.replay is not None:
        with tempfile.TemporaryDirectory(prefix="tlp-fuzz-") as tmp:
            case = build_case(discover_seeds(), args.seed, args.replay, Path(tmp))
            print(f"case {case.index}: {case.seed}: {case.mutation}")
            if args.save is not None:
                shutil.copytree(tmp, args.save, dirs_exist_ok=True, symlinks=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    print("notes:", exercise(case))
                except Exception:
                    traceback.print_exc()
        return 0

    start = time.perf_counter()
    done = [0]

    def progress(outcome: Outcome) -> None:
        done[0] += 1
        if outcome.kind in FAILURE_KINDS and not args.quiet:
            print(
                f"[{done[0]}/{args.cases}] case {outcome.index} {outcome.kind} {outcome.error} at {outcome.site} "
                f"({outcome.seed}: {outcome.mutation[:100]})",
                flush=True,
            )
        elif done[0] % 500 == 0:
            print(f"[{done[0]}/{args.cases}] {time.perf_counter() - start:.0f} s", flush=True)

    indices = range(args.first, args.first + args.cases)
    outcomes = run_cases(indices, args.seed, args.timeout, args.mem_gb, args.jobs, progress)
    seconds = time.perf_counter() - start
    print(summarize(outcomes, seconds))
    if args.report is not None:
        with open(args.report, "w") as fh:
            for o in outcomes:
                fh.write(json.dumps(asdict(o)) + "\n")
    if args.reader_findings is not None:
        args.reader_findings.write_text(reader_findings(outcomes, args.seed))
    return 1 if any(o.kind in FAILURE_KINDS for o in outcomes) else 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
