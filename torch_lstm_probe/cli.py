"""The ``torch-lstm-probe`` command: a thin argparse front-end over the library.

Exit status: 0 success; 1 the model is not convertible (``inspect``, ``verify``), not portable
(``port``) or beyond tolerance (``verify``); 2 a user or file error (bad
arguments, a missing or damaged file, a wrong input); 3 an internal error. Every error prints one
line on stderr; ``--debug``, anywhere on the command line, adds the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import importlib.util
import json
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, PortError, TorchLstmProbeError, UnsupportedLayerError, UnsupportedOptionError

__all__ = [
    "main",
    "build_parser",
    "EXAMPLES",
    "EXIT_OK",
    "EXIT_NOT_CONVERTIBLE",
    "EXIT_USER_ERROR",
    "EXIT_INTERNAL_ERROR",
]

EXAMPLES = Path(__file__).parent / "examples"

EXIT_OK = 0  # the command did what was asked
EXIT_NOT_CONVERTIBLE = 1  # inspect: some layer cannot be converted
EXIT_USER_ERROR = 2  # bad arguments, a missing or damaged file, a wrong input
EXIT_INTERNAL_ERROR = 3  # anything else: a bug in this package or in a library below it

MAX_MESSAGE = 2000  # characters of an error message printed on the one error line

# OSError kinds that are about a path the user gave, not about this package.
USER_OS_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


class _CommandLineError(TorchLstmProbeError, ValueError):
    """A command-line argument that names something unusable (an output folder, a --custom-layers target)."""


CustomLayers = Mapping[str, Callable[[dict[str, Any], list[np.ndarray]], Any]]


def _import_target(target: str) -> Any:
    """Imports ``target``: a path to a ``.py`` file, or a dotted module name (also found in the current folder)."""
    if target.endswith(".py") or "/" in target or os.sep in target:
        path = Path(target)
        if not path.is_file():
            raise _CommandLineError(
                f"--custom-layers: file {target!r} not found. Expected FILE.py:NAME or MODULE:NAME."
            )
        name = "torch_lstm_probe_custom_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise _CommandLineError(f"--custom-layers: cannot import {target!r} as a Python file.")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # classes defined in the file can find their module
        try:
            spec.loader.exec_module(module)
        except Exception as err:
            del sys.modules[name]
            raise _CommandLineError(f"--custom-layers: running {target!r} failed: {type(err).__name__}: {err}") from err
        return module
    added = os.getcwd() not in sys.path
    if added:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(target)
    except Exception as err:
        raise _CommandLineError(
            f"--custom-layers: importing module {target!r} failed: {type(err).__name__}: {err}"
        ) from err
    finally:
        if added:
            sys.path.remove(os.getcwd())


def _custom_layers(value: str | None) -> CustomLayers | None:
    """The ``custom_layers`` mapping named by ``--custom-layers MODULE:NAME`` (this imports, so runs, MODULE)."""
    if value is None:
        return None
    target, sep, name = value.rpartition(":")
    if not sep or not target or not name.isidentifier():
        raise _CommandLineError(
            f"--custom-layers {value!r}: expected MODULE:NAME or path/to/file.py:NAME, where NAME is a dict "
            "{Keras class name: converter}."
        )
    module = _import_target(target)
    if not hasattr(module, name):
        raise _CommandLineError(f"--custom-layers: {target!r} has no attribute {name!r}.")
    mapping = getattr(module, name)
    if not isinstance(mapping, Mapping) or not all(isinstance(k, str) and callable(v) for k, v in mapping.items()):
        raise _CommandLineError(
            f"--custom-layers: {target}:{name} is a {type(mapping).__name__}. "
            "Expected a dict {Keras class name: converter(config, weights) -> nn.Module}."
        )
    return dict(mapping)


def _cmd_inspect(args: argparse.Namespace) -> int:
    from torch_lstm_probe.converters.inspect import format_report, inspect_model

    report = inspect_model(args.file, weights=args.weights, custom_layers=_custom_layers(args.custom_layers))
    print(format_report(report))
    return EXIT_OK if report.convertible else EXIT_NOT_CONVERTIBLE


def _load_inputs(path: str, model: Any = None) -> list[Any] | dict[str, np.ndarray]:
    """``--input`` as arrays; a text file (one text per line) for a ``model`` whose one input takes strings."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--input file not found: {p}")
    if p.suffix not in (".npy", ".npz"):
        expected = f"--input {p}: expected a .npy file (one input) or a .npz file (several). Received {p.name!r}."
        if model is None or not _takes_text(model):
            raise InputError(expected + _TEXT_FILE_NOTE)
        return [_text_lines(model, p, "--input")]
    try:
        if p.suffix == ".npy":
            return [np.load(p, allow_pickle=False)]
        with np.load(p, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as err:  # numpy reports damaged files with many exception types
        raise InputError(f"--input {p}: cannot read it as {p.suffix}: {type(err).__name__}: {err}") from err
    if arrays and all(k.startswith("arr_") for k in arrays):
        try:
            return [arrays[f"arr_{i}"] for i in range(len(arrays))]
        except KeyError:
            pass  # not numbered 0..n-1: pass them by name
    return arrays


_TEXT_FILE_NOTE = " A text file (one text per line) is read only for a model whose input takes strings."


def _takes_text(model: Any) -> bool:
    from .extract.sources import text_input_names

    return bool(text_input_names(model))


def _text_lines(model: Any, path: Path, what: str) -> list[str]:
    """The lines of text file ``path`` (one sample each) for a ``model`` whose one input takes strings."""
    from .analysis.vocab import read_text_lines
    from .extract.sources import text_input_names

    texts = text_input_names(model)
    if len(model.input_names) != 1:
        raise InputError(
            f"{what} {path}: text lines feed one string input, but model {model.name!r} takes inputs "
            f"{model.input_names} (strings: {texts}). Fix: call tlp.probe / tlp.extract from Python with a dict "
            "by input name."
        )
    lines = read_text_lines(path)
    if not lines:
        raise InputError(f"{what} {path}: the text file holds no lines. Expected one text per line.")
    return lines


def _is_text_path(value: str) -> bool:
    return Path(value).suffix.lower() not in DATA_SUFFIXES


def _output_path(value: str) -> Path:
    """``--out`` as a path whose parent folder exists (created here if missing)."""
    out = Path(value)
    if out.is_dir():
        raise _CommandLineError(f"--out {value}: is a folder. Expected a file path such as {out / 'acts.safetensors'}.")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _CommandLineError(
            f"--out {value}: cannot create the folder {out.parent}: {err.strerror or err}."
        ) from err
    return out


def _store_once(acts: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Each distinct tensor once, plus ``{alias key: stored key}`` for keys that hold the very same tensor.

    A layer that returns its input unchanged (Dropout and friends at inference) gives the same
    tensor object as the layer before it; safetensors refuses tensors that share memory. Two keys
    are aliases when they view the same memory identically (storage, offset, shape, strides, dtype);
    any other sharing of memory is resolved by copying, so every stored tensor owns its memory.
    """
    import torch

    stored: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    first_key: dict[tuple[Any, ...], str] = {}
    used: set[int] = set()
    for key, value in acts.items():
        if not isinstance(value, torch.Tensor):
            continue
        tensor = value.detach()
        view = (
            tensor.device,
            tensor.untyped_storage().data_ptr(),
            tensor.storage_offset(),
            tuple(tensor.shape),
            tensor.stride(),
            tensor.dtype,
        )
        if tensor.numel() and view in first_key:
            aliases[key] = first_key[view]
            continue
        first_key[view] = key
        cpu = tensor.to("cpu").contiguous()
        pointer = cpu.untyped_storage().data_ptr()
        if cpu.numel() == 0 or pointer in used:
            cpu = cpu.clone()
        used.add(cpu.untyped_storage().data_ptr())
        stored[key] = cpu
    return stored, aliases


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _key_meanings() -> dict[str, str]:
    from .capture.keys import KEY_GRAMMAR

    return dict(KEY_GRAMMAR)


def _key_help() -> str:
    from .capture.keys import KEY_GRAMMAR

    return "probe keys:\n" + "\n".join(f"  {pattern}\n      {meaning}" for pattern, meaning in KEY_GRAMMAR)


def _cmd_probe(args: argparse.Namespace) -> int:
    import torch
    from safetensors.torch import save_file

    from .api import load_keras
    from .intervene import intervene, parse_edit
    from .probe import probe

    out = _output_path(args.out)
    texts = list(getattr(args, "edit", None) or [])
    edits = dict(parse_edit(text) for text in texts)  # checked before the model loads
    text = Path(args.input).suffix not in (".npy", ".npz")  # read once the model shows it takes strings
    inputs = _load_inputs(args.input) if not text else None
    model = load_keras(args.file, weights=args.weights, custom_layers=_custom_layers(args.custom_layers))
    if inputs is None:
        inputs = _load_inputs(args.input, model)
    layers = [s for s in args.layers.split(",") if s] if args.layers else None
    x: Any = inputs if isinstance(inputs, dict) else (inputs[0] if len(inputs) == 1 else list(inputs))
    if edits:
        acts = intervene(model, x, edits, layers=layers, gates=args.gates)
    else:
        acts = probe(model, x, layers=layers, gates=args.gates)
    keys = [k for k, v in acts.items() if isinstance(v, torch.Tensor)]
    tensors, aliases = _store_once(acts)
    info = model.source_info
    metadata = {
        "source_file": str(args.file),
        "source_sha256": _sha256(args.file),
        "keras_version": str(info.get("keras_version", "")),
        "layer_names": json.dumps(model.layer_names),
        "key_meanings": json.dumps(_key_meanings()),
        "keys": json.dumps(keys),  # every probe key, in probe order
        "aliases": json.dumps(aliases),  # key -> stored key holding its tensor
        "edits": json.dumps(texts),  # the --edit texts this run applied (none: a plain probe)
    }
    save_file(tensors, str(out), metadata=metadata)
    width = max((len(k) for k in keys), default=0)
    for key in keys:
        value = tensors[aliases.get(key, key)]
        same = f"  (same tensor as {aliases[key]})" if key in aliases else ""
        print(f"{key.ljust(width)}  {tuple(value.shape)}  {value.dtype}{same}")
    print(f"wrote {len(keys)} keys ({len(tensors)} tensors, {len(aliases)} aliases) to {out}")
    return EXIT_OK


def _edit_help() -> str:
    from .intervene import EDIT_SYNTAX

    return EDIT_SYNTAX


DATA_SUFFIXES = (".npy", ".npz", ".safetensors")
DEFAULT_SHARD_MB = 64.0  # extract --shard-mb: tlp.extract's DEFAULT_SHARD_BYTES, in MiB (kept equal by a test)


def _data_path(value: str, model: Any = None) -> Any:
    """``DATA`` as an existing ``.npy``/``.npz``/``.safetensors`` file (checked before the model is loaded), or,
    given a ``model`` whose input takes strings, any other file's lines (one text per line)."""
    path = Path(value)
    if not path.exists():
        raise FileNotFoundError(f"DATA file not found: {path}. Expected a {'/'.join(DATA_SUFFIXES)} file.")
    if path.suffix.lower() not in DATA_SUFFIXES:
        if model is None or not _takes_text(model):
            raise InputError(
                f"DATA {path}: expected a {'/'.join(DATA_SUFFIXES)} file. Received {path.name!r}.{_TEXT_FILE_NOTE}"
            )
        return _text_lines(model, path, "DATA")
    return path


def _device(value: str | None) -> str | None:
    """``--device`` checked against the devices this machine has (a user error, not a crash, when absent)."""
    if value is None:
        return None
    import torch

    try:
        device = torch.device(value)
    except (RuntimeError, ValueError) as err:
        raise _CommandLineError(f"--device {value!r}: not a device name. Expected cpu, cuda or cuda:N.") from err
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise _CommandLineError(f"--device {value}: no CUDA device is available here. Fix: --device cpu.")
        if device.index is not None and device.index >= count:
            raise _CommandLineError(
                f"--device {value}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}."
            )
    elif device.type != "cpu":
        raise _CommandLineError(f"--device {value!r}: expected cpu, cuda or cuda:N.")
    return value


def _size(nbytes: int) -> str:
    """``nbytes`` exactly, then in binary units: ``1,234,567 bytes (1.2 MiB)``."""
    value, unit = float(nbytes), "bytes"
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    shown = f"{nbytes:,} bytes"
    return shown if unit == "bytes" else f"{shown} ({value:.1f} {unit})"


def _cmd_extract(args: argparse.Namespace) -> int:
    import time

    from .api import extract, load_keras
    from .extract import ExtractionMismatchError, distributed

    text = _is_text_path(args.data)  # read once the model shows it takes strings
    data = _data_path(args.data) if not text else None
    device = _device(args.device)
    if args.shard_mb <= 0:
        raise _CommandLineError(f"--shard-mb {args.shard_mb:g}: expected a positive number of MiB.")
    model = load_keras(args.model, weights=args.weights, custom_layers=_custom_layers(args.custom_layers))
    if data is None:
        data = _data_path(args.data, model)
    layers = [s for s in args.layers.split(",") if s] if args.layers else None
    out = Path(args.out)
    complete = (out / "index.json").is_file() and not args.overwrite
    start = time.perf_counter()
    try:
        acts = extract(
            model,
            data,
            out=out,
            layers=layers,
            gates=args.gates,
            batch_size=args.batch_size,
            device=device,
            dtype=args.dtype,
            resume=not args.no_resume,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            packed=args.packed,
            shard_bytes=max(1, int(args.shard_mb * 2**20)),
        )
    except ExtractionMismatchError as err:  # the library names its keyword arguments; name the flags too
        raise ExtractionMismatchError(
            f"{err} On the command line: --overwrite replaces it, another --out starts afresh, and the same "
            "command without --no-resume finishes it."
        ) from err
    seconds = time.perf_counter() - start
    if distributed.world()[1] != 0:  # under torchrun, rank 0 speaks for every rank
        return EXIT_OK
    shards = acts.index.get("shards", [])
    nbytes = sum(int(s.get("bytes", 0)) for s in shards)
    rate = "already complete, nothing computed" if complete else f"{len(acts) / max(seconds, 1e-9):,.0f} samples/s"
    print(
        f"extracted {len(acts):,} samples, {len(acts.keys())} keys, {len(shards)} shard(s), {_size(nbytes)}; "
        f"{rate} ({seconds:.2f} s)"
    )
    print(f"folder: {acts.path}  (torch-lstm-probe inspect-activations {acts.path})")
    return EXIT_OK


def _shape(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _activations_summary(acts: Any) -> dict[str, Any]:
    """What ``inspect-activations --json`` prints: the index without its per-shard lists, keys in probe order."""
    index = acts.index
    run = acts.run
    return {
        "folder": str(acts.path),
        "num_samples": len(acts),
        "num_shards": len(index.get("shards", [])),
        "bytes": sum(int(s.get("bytes", 0)) for s in index.get("shards", [])),
        "model": run.get("model", {}),
        "request": run.get("request", {}),
        "data": run.get("data", {}),
        "masks": index.get("masks", {}),
        "keys": [{"key": key, **index["keys"][key]} for key in acts.keys()],
    }


def _cmd_inspect_activations(args: argparse.Namespace) -> int:
    from .api import open_activations

    summary = _activations_summary(open_activations(args.folder))
    if args.json:
        print(json.dumps(summary, indent=1))
        return EXIT_OK
    model, request, data = summary["model"], summary["request"], summary["data"]

    def yes(value: Any) -> str:
        return "yes" if value else "no"

    layers = request.get("layers")
    source = data.get("file") or data.get("kind", "?")
    lines = [
        f"folder   {summary['folder']}",
        f"samples  {summary['num_samples']:,} in {summary['num_shards']} shard(s), {_size(summary['bytes'])}",
        f"model    {model.get('name', '?')} from {model.get('source') or '?'} "
        f"(Keras {model.get('keras_version') or '?'}), weights sha256 {str(model.get('weights_sha256', ''))[:12]}",
        f"request  layers {','.join(layers) if layers else 'all'}; gates {yes(request.get('gates'))}; "
        f"dtype {request.get('dtype') or 'as the model'}; packed {yes(request.get('packed'))}; "
        f"batch size {request.get('batch_size')}",
        f"data     {data.get('kind', '?')} {source}",
    ]
    if summary["masks"]:
        masks = ", ".join(f"{name} ({spec.get('time_steps')} steps)" for name, spec in summary["masks"].items())
        lines.append(f"masks    {masks}")
    rows = [("key", "per sample", "dtype", "packed", "meaning")]
    for spec in summary["keys"]:
        rows.append((spec["key"], _shape(spec["sample_shape"]), spec["dtype"], yes(spec["packed"]), spec["meaning"]))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines.append("")
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4] for row in rows]
    print("\n".join(lines))
    return EXIT_OK


# ---------------------------------------------------------------------------------------------- analysis verbs
PADDING_CHOICES = ("pre", "post")


@dataclass(frozen=True)
class _Data:
    """DATA as the analysis verbs read it (made by :func:`_load_data`)."""

    source: Any  # what the library functions take: the data file's Path, text DATA's (samples, time) id array, or
    # its lines for a model whose input takes strings
    num_samples: int  # samples in DATA
    vocab: Any  # the --vocab Vocabulary, or None
    texts: list[str] | None  # text DATA's lines (one sample each), else None


def _check_data(args: argparse.Namespace, model: Any = None) -> Path:
    """``DATA`` as an existing file of a kind the verb reads (checked before the model is loaded, and again, with
    ``model``, after: a model whose input takes strings reads a text file and refuses the text options)."""
    path = Path(args.data)
    text = path.suffix.lower() not in DATA_SUFFIXES
    takes_text = model is not None and _takes_text(model)
    if takes_text:
        _refuse_text_model(args, model, path, text)
    if text and getattr(args, "vocab", None) is None and model is not None and not takes_text:
        raise InputError(
            f"DATA {path}: expected a {'/'.join(DATA_SUFFIXES)} file, or a text file of lines with --vocab. "
            f"Received {path.name!r}."
        )
    if not path.exists():
        raise FileNotFoundError(f"DATA file not found: {path}.")
    if path.is_dir():
        raise IsADirectoryError(f"DATA {path}: is a folder. Expected a file.")
    if not text and (getattr(args, "padding", None) is not None or getattr(args, "truncating", None) is not None):
        raise _CommandLineError(
            f"--padding and --truncating shape text DATA read with --vocab; DATA {path.name} holds arrays already. "
            "Fix: leave them out."
        )
    return path


def _refuse_text_model(args: argparse.Namespace, model: Any, path: Path, text: bool) -> None:
    """The analysis verbs and a model whose input takes strings: the text options and array DATA are refused."""
    from .extract.sources import text_input_names

    given = [flag for flag in ("vocab", "padding", "truncating") if getattr(args, flag, None) is not None]
    if given:
        flags = ", ".join(f"--{flag}" for flag in given)
        raise _CommandLineError(
            f"{flags}: model {model.name!r} tokenises its input {text_input_names(model)} itself (it takes raw "
            "strings), so text DATA needs no vocabulary, padding or truncation. Fix: leave them out."
        )
    if not text:
        raise InputError(
            f"DATA {path}: model {model.name!r} takes raw strings in input(s) {text_input_names(model)}. Expected a "
            f"UTF-8 text file with one text per line. Received {path.name!r}."
        )


@dataclass(frozen=True)
class _Run:
    """What every analysis verb starts from (made by :func:`_open_run`)."""

    model: Any
    data: _Data
    device: Any
    batch_size: int
    custom_layers: Any


def _open_run(args: argparse.Namespace) -> _Run:
    """Checks DATA and the run flags, then loads MODEL and reads DATA for it: the analysis verbs' common start."""
    from .api import load_keras

    _check_data(args)
    device = _device(args.device)
    batch_size = _batch_size(args.batch_size)
    custom_layers = _custom_layers(args.custom_layers)
    model = load_keras(args.model, weights=args.weights, custom_layers=custom_layers)
    return _Run(model, _load_data(args, model), device, batch_size, custom_layers)


def _output_folder(value: str, holds: str) -> Path:
    out = Path(value)
    if out.exists() and not out.is_dir():
        raise _CommandLineError(f"--out {value}: is a file. Expected a folder for {holds}.")
    return out


def _load_data(args: argparse.Namespace, model: Any) -> _Data:
    """Reads ``args.data`` (and ``args.vocab``, ``args.padding``, ``args.truncating``) for ``model``.

    An array file (``.npy``/``.npz``/``.safetensors``) is passed on as its path, so the library streams it.
    Any other file, with ``--vocab``, is text: one sample per line, turned into ids as
    ``Tokenizer.texts_to_sequences`` + ``pad_sequences`` do (:meth:`Vocabulary.texts_to_ids`), padded or cut
    to the model's fixed time axis (to the longest line's ids when that axis is free); ``--padding`` and
    ``--truncating`` default to ``"pre"``, as in Keras.

    Returns:
        :class:`_Data`: ``source`` is what ``gate_stats``, ``extract`` and ``export_lstmvis`` take.

    Raises:
        InputError: a bad file or vocabulary, text DATA for a model without one ``(batch, time)`` input, or
            text without a single known word.
    """
    from .analysis.vocab import load_vocabulary, read_text_lines
    from .extract.sources import as_source

    path = _check_data(args, model)
    if _takes_text(model):  # the model's own text layer turns the lines into ids
        lines = _text_lines(model, path, "DATA")
        return _Data(lines, len(lines), None, lines)
    vocab_file = getattr(args, "vocab", None)
    vocab = load_vocabulary(vocab_file) if vocab_file is not None else None
    if path.suffix.lower() in DATA_SUFFIXES:
        return _Data(path, int(as_source(path, model.input_names, 1).num_samples or 0), vocab, None)
    specs = model.input_specs
    shape = specs[0].get("shape") if len(specs) == 1 else None
    if shape is None or len(shape) != 2:
        shown = ", ".join(f"{s['name']} {_shape(s.get('shape') or ())}" for s in specs)
        raise InputError(
            f"DATA {path}: text lines become one (samples, time) id array, but model {model.name!r} takes "
            f"{shown}. Expected one (batch, time) token input. Fix: pass the inputs as a .npz file."
        )
    lines = read_text_lines(path)
    if not lines:
        raise InputError(f"DATA {path}: the text file holds no lines. Expected one text per line.")
    maxlen = shape[1] if isinstance(shape[1], int) else None
    ids = vocab.texts_to_ids(  # type: ignore[union-attr]
        lines,
        maxlen=maxlen,
        padding=getattr(args, "padding", None) or "pre",
        truncating=getattr(args, "truncating", None) or "pre",
    )  # (lines, time) int32
    if not ids.any():  # Keras gives no word id 0, so all zeros means no line holds a known word
        raise InputError(
            f"DATA {path}: no line holds a word of the vocabulary {vocab_file}, so every sample is empty. "
            "Fix: check that --vocab is the tokenizer the model was trained with."
        )
    return _Data(ids, len(lines), vocab, lines)


def _sample_inputs(data: _Data, model: Any, index: int) -> list[Any]:
    """Sample ``index`` of ``data``: one ``(1, ...)`` CPU tensor per model input, in Keras input order."""
    from .extract.sources import as_source, text_input_names

    if not 0 <= index < data.num_samples:
        raise _CommandLineError(
            f"--sample {index}: DATA holds {data.num_samples} sample(s). Expected 0 to {data.num_samples - 1}."
        )
    source = as_source(data.source, model.input_names, 1, text_inputs=text_input_names(model))
    for batch in source.batches(want=lambda j: j == index):  # the others are skipped unread
        if batch.index == index and batch.inputs is not None:
            return list(batch.inputs)
    raise InputError(f"DATA holds no sample {index}.")  # the file changed while it was read


def _sample_tokens(data: _Data, inputs: Sequence[Any], model: Any) -> list[str] | None:
    """The words of one sample's token ids (its first ``(1, time)`` input) with ``--vocab``, the words a text
    model's own text layer made of its text, else None."""
    if data.vocab is None and _takes_text(model):
        from .analysis.vocab import text_layer_ids

        found = text_layer_ids(model, inputs)
        if found is None or found[1].dim() != 2:
            return None
        return list(found[2].tokens(found[1][0]))
    if data.vocab is None:
        return None
    ids = next((x for x in inputs if x.dim() == 2), None)  # (1, time)
    if ids is None:
        raise InputError(
            f"--vocab labels token ids, but no model input is (batch, time) ids (inputs: "
            f"{', '.join(str(tuple(x.shape)) for x in inputs)}). Fix: leave --vocab out."
        )
    if ids.is_floating_point():
        if not bool((ids == ids.round()).all()):
            raise InputError("--vocab labels token ids, but the (batch, time) input holds non-integer values.")
        ids = ids.long()
    return list(data.vocab.tokens(ids[0]))


def _reversed_layers(model: Any, keys: Sequence[str]) -> set[str]:
    """The layer paths among gate keys whose gates run in reversed time (``go_backwards``, backward halves)."""
    import re

    layers: set[str] = set()
    for key in keys:
        if "/gates/" not in key:
            continue
        layer = key.rsplit("/gates/", 1)[0]  # "lstm", "lstm@1", "bi/backward", "outer/lstm"
        base, half = layer, ""
        if layer.endswith(("/forward", "/backward")):
            base, half = layer.rsplit("/", 1)
        module = model.layer(re.sub(r"@\d+(?=/|$)", "", base))
        if half:
            module = getattr(module, f"{half}_layer", module)
        if getattr(getattr(module, "config", None), "go_backwards", False):
            layers.add(layer)
    return layers


def _layer_list(value: str | None) -> list[str] | None:
    return [s for s in value.split(",") if s] if value else None


def _batch_size(value: int) -> int:
    if value < 1:
        raise _CommandLineError(f"--batch-size {value}: expected a positive number of samples.")
    return value


def _summary_value(entry: Mapping[str, Any], field: str, median: bool = False) -> str:
    """A field of one gate key's statistics, averaged (or its median) over units, or '-' where absent."""
    import warnings

    value = entry.get(field)
    if value is None:
        return "-"
    array = np.asarray(value.tolist() if hasattr(value, "tolist") else value, dtype=np.float64)  # (units,)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN (no valid step): shown as nan
        number = float(np.nanmedian(array) if median else np.nanmean(array))
    return f"{number:.2f}" if median else f"{number:.4f}"


def _stats_table(stats: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per gate key, grouped by layer: what ``stats`` prints."""
    header = ("layer", "gate", "steps", "mean", "std", "sat<0.1", "sat>0.9", "timescale")
    rows = [header]
    for key, entry in stats.items():
        layer, gate = key.rsplit("/gates/", 1)
        rows.append(
            (
                layer,
                gate,
                f"{int(entry['count']):,}",
                _summary_value(entry, "mean"),
                _summary_value(entry, "std"),
                _summary_value(entry, "sat_low"),
                _summary_value(entry, "sat_high"),
                _summary_value(entry, "timescale", median=True),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        if n > 1 and row[0] != rows[n - 1][0]:
            lines.append("")  # a blank line between layers
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])] + [c.rjust(w) for c, w in zip(row[2:], widths[2:])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


STATS_LEGEND = (
    "steps      valid (unmasked) steps over all samples\n"
    "mean, std  each unit's, averaged over units\n"
    "sat<0.1    fraction of steps a unit's gate is below 0.1 (above 0.9: sat>0.9), averaged over units; "
    "sigmoid gates only\n"
    "timescale  median over units of the mean -1/ln(f): the memory length in steps; LSTM forget gates only"
)


def _cmd_stats(args: argparse.Namespace) -> int:
    from .analysis import gate_stats

    out = _output_path(args.out) if args.out else None
    run = _open_run(args)
    data = run.data
    stats = gate_stats(
        run.model,
        data.source,
        layers=_layer_list(args.layers),
        batch_size=run.batch_size,
        device=run.device,
        progress=not args.no_progress,
    )
    print(f"gate statistics of {data.num_samples:,} samples, {len(stats)} gate keys")
    print(_stats_table(stats))
    print(f"\n{STATS_LEGEND}")
    if out is not None:
        stats.save(out)
        print(f"wrote {out}  (tlp.GateStats.load)")
    return EXIT_OK


def _cmd_plot(args: argparse.Namespace) -> int:
    from .analysis import gate_stats
    from .analysis.plots import INSTALL_HINT, save_all
    from .probe import probe

    if importlib.util.find_spec("matplotlib") is None:
        raise _CommandLineError(f"plot needs matplotlib, which is not installed. Fix: {INSTALL_HINT}.")
    out = _output_folder(args.out, "the PNG files")
    run = _open_run(args)
    model, data = run.model, run.data
    layers = _layer_list(args.layers)
    inputs = _sample_inputs(data, model, args.sample)
    stats = gate_stats(
        model, data.source, layers=layers, batch_size=run.batch_size, device=run.device, progress=not args.no_progress
    )
    acts = probe(model, inputs[0] if len(inputs) == 1 else inputs, layers=layers, gates=True)
    sample = {key: value for key, value in acts.items() if key in stats}
    tokens = _sample_tokens(data, inputs, model)
    if tokens is not None:
        steps = {key: int(value.shape[1]) for key, value in sample.items()}
        if any(t != len(tokens) for t in steps.values()):
            print(
                f"torch-lstm-probe: note: the gates run over {sorted(set(steps.values()))} steps and sample "
                f"{args.sample} has {len(tokens)} tokens: heatmaps drawn without tokens",
                file=sys.stderr,
            )
            tokens = None
    paths = save_all(stats, out, sample=sample, tokens=tokens, reversed_keys=_reversed_layers(model, list(sample)))
    for path in paths:
        print(path)
    print(f"wrote {len(paths)} PNG files to {out} (heatmaps of sample {args.sample})")
    return EXIT_OK


def _cmd_export_lstmvis(args: argparse.Namespace) -> int:
    from .analysis import export_lstmvis

    out = _output_folder(args.out, "the LSTMVis project")
    run = _open_run(args)
    data = run.data
    result = export_lstmvis(
        run.model,
        data.source,
        out,
        vocab=data.vocab,
        layers=_layer_list(args.layers),
        states=args.states,
        gates=args.gates,
        batch_size=run.batch_size,
        device=run.device,
        progress=not args.no_progress,
    )
    print(
        f"exported {result.num_samples:,} samples, {result.num_tokens:,} tokens, {len(result.keys)} keys: "
        f"{', '.join(result.keys)}"
    )
    for path in (result.config, result.states_file, result.words_file, result.dict_file):
        print(path)
    print(f"open it in LSTMVis: python lstm_server.py -dir {result.out_dir}  (it finds lstm.yml in that folder)")
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from .analysis.plots import INSTALL_HINT
    from .analysis.report import build_report

    if importlib.util.find_spec("matplotlib") is None:
        raise _CommandLineError(f"report needs matplotlib, which is not installed. Fix: {INSTALL_HINT}.")
    if args.samples < 1:
        raise _CommandLineError(f"--samples {args.samples}: expected a positive number of samples.")
    out = _output_path(args.out)
    run = _open_run(args)
    data = run.data
    path = build_report(
        run.model,
        data.source,
        out,
        vocab=data.vocab,
        layers=_layer_list(args.layers),
        samples=args.samples,
        batch_size=run.batch_size,
        title=args.title,
        source=args.model,
        weights=args.weights,
        custom_layers=run.custom_layers,
        heatmaps=args.heatmaps,
        device=run.device,
        progress=not args.no_progress,
    )
    print(
        f"wrote {path} ({_size(path.stat().st_size)}): statistics of {data.num_samples:,} samples, token view of "
        f"the first {min(args.samples, data.num_samples)}; open it in any browser"
    )
    return EXIT_OK


def _add_data_arguments(p: argparse.ArgumentParser) -> None:
    """``DATA``, ``--vocab``, ``--padding`` and ``--truncating``: what :func:`_load_data` reads."""
    p.add_argument(
        "data",
        metavar="DATA",
        help="the inputs: a .npy, .npz or .safetensors file, samples first; or a UTF-8 text file with one text per "
        "line, read with --vocab, or as raw strings for a model whose input takes them (its own text layer makes "
        "the tokens)",
    )
    p.add_argument(
        "--vocab",
        metavar="V",
        help="a vocabulary: a Keras Tokenizer's JSON (tokenizer.to_json()), a {word: id} JSON file, or a word list "
        "(one word per line, line k is id k). Labels tokens, and turns text DATA into ids as "
        "texts_to_sequences + pad_sequences do, padded or cut to the model's fixed time axis (to the longest line "
        "when that axis is free)",
    )
    p.add_argument(
        "--padding",
        choices=PADDING_CHOICES,
        help="text DATA: where short lines get padding ids 0: 'pre' (before the words, the default, as Keras' "
        "pad_sequences) or 'post' (after them)",
    )
    p.add_argument(
        "--truncating",
        choices=PADDING_CHOICES,
        help="text DATA: which words a line longer than the time axis loses: 'pre' (the first ones, the default, "
        "as Keras' pad_sequences) or 'post' (the last ones)",
    )


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The model file's companions and how the pass over DATA runs."""
    p.add_argument("--weights", help="weights-only .h5 for an architecture .json")
    p.add_argument("--custom-layers", metavar="MODULE:NAME", help=CUSTOM_LAYERS_HELP)
    p.add_argument("--layers", help="comma-separated recurrent layer names (default: every recurrent layer)")
    p.add_argument("--batch-size", type=int, default=256, metavar="N", help="samples per forward pass (default 256)")
    p.add_argument("--device", help="where to run: cpu, cuda or cuda:N (default: cpu, where the model is loaded)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _cmd_verify(args: argparse.Namespace) -> int:
    from .verify import format_report, verify

    inputs = _load_inputs(args.input) if args.input else None
    x: Any = inputs if isinstance(inputs, dict) or inputs is None else list(inputs)
    report = verify(
        args.model,
        x=x,
        reference=args.reference,
        atol=args.atol,
        weights=args.weights,
        custom_layers=_custom_layers(args.custom_layers),
    )
    print(format_report(report))
    return EXIT_OK if report.ok else EXIT_NOT_CONVERTIBLE  # 1: some layer is beyond --atol


def _cmd_port(args: argparse.Namespace) -> int:
    from .port import port

    path = port(args.model, args.outdir)
    print(f"Wrote {path} and {path.with_name('model.safetensors')}")
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    import torch
    from safetensors.numpy import load_file

    from .api import load_keras

    model_path = EXAMPLES / "sentiment_lstm.keras"
    meta = json.loads((EXAMPLES / "sentiment_lstm.json").read_text())
    reference = load_file(str(EXAMPLES / "sentiment_lstm_keras.safetensors"))
    model = load_keras(model_path)
    print(f"Loaded {model_path.name}: layers {', '.join(model.layer_names)}")
    from .probe import probe

    x = np.asarray(meta["padded"], dtype=np.int64)
    acts = probe(model, x, layers=["lstm", model.layer_names[-1]])
    lstm = acts["lstm"].numpy()
    pred = acts[model.layer_names[-1]].numpy()
    torch.set_printoptions(precision=4)
    shown = lstm.shape[1] if args.full else min(8, lstm.shape[1])
    print(
        f"\nLSTM layer output per sentence: {lstm.shape[1]} values each"
        + ("" if args.full else f" (first {shown}; --full for all)")
    )
    for doc, vec, p in zip(meta["docs"], lstm, pred[:, 0]):
        values = np.array2string(vec[:shown], precision=4, suppress_small=True, max_line_width=10_000)
        print(f"  {doc!r:28} p(positive)={p:.3f}  {values}")
    lstm_err = float(np.abs(lstm - reference["lstm"]).max())
    out_err = float(np.abs(pred - reference["output"]).max())
    print(f"\nParity with Keras {reference_version(model_path)} (stored beside the model):")
    print(f"  LSTM output max |torch - keras| = {lstm_err:.2e}")
    print(f"  prediction  max |torch - keras| = {out_err:.2e}")
    ok = lstm_err <= 1e-5 and out_err <= 1e-5
    print("  parity OK (atol 1e-5)" if ok else "  PARITY FAILED (atol 1e-5)")
    return 0 if ok else 1


def reference_version(model_path: Path) -> str:
    import zipfile

    with zipfile.ZipFile(model_path) as z:
        return str(json.loads(z.read("metadata.json")).get("keras_version", "?"))


CUSTOM_LAYERS_HELP = (
    "MODULE:NAME or path/to/file.py:NAME: a dict {Keras class name: converter(config, weights) -> nn.Module} "
    "for layers without a built-in converter. This imports the module, so it runs that code: name only code you trust"
)


def _debug_flag(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "--debug", action="store_true", default=default, help="on an error, also print the full traceback"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: one sub-command per verb; ``--debug`` is accepted before or after the verb."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="torch-lstm-probe",
        description="Load Keras LSTM models as PyTorch modules; inspect them and probe layers and gates.",
        epilog="Exit status: 0 ok, 1 not convertible (inspect), 2 user or file error, 3 internal error.",
    )
    _debug_flag(parser, False)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}", help="print the version")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def verb(name: str, help_text: str, epilog: str | None = None) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _debug_flag(p, argparse.SUPPRESS)  # keeps a --debug given before the verb
        return p

    p = verb("inspect", "print the layer table of a Keras model file and whether it converts")
    p.add_argument("file", help="a .keras, .h5, or architecture .json file")
    p.add_argument("--weights", help="weights-only .h5 for an architecture .json")
    p.add_argument("--custom-layers", metavar="MODULE:NAME", help=CUSTOM_LAYERS_HELP)
    p.set_defaults(func=_cmd_inspect)

    p = verb(
        "probe",
        "write layer outputs (and gates) for given inputs to a safetensors file",
        _key_help() + "\n\nedits (--edit, repeatable; see tlp.intervene):\n" + _edit_help(),
    )
    p.add_argument("file", help="a .keras, .h5, or architecture .json file")
    p.add_argument("--weights", help="weights-only .h5 for an architecture .json")
    p.add_argument(
        "--input",
        required=True,
        help="inputs: .npy (one input) or .npz (several, by input name or in order); for a model whose input takes "
        "strings, a UTF-8 text file with one text per line",
    )
    p.add_argument("--layers", help="comma-separated layer names or probe keys (default: every layer)")
    p.add_argument("--gates", action="store_true", help="also write every recurrent layer's gates (LSTM: i f g o c h)")
    p.add_argument(
        "--out",
        required=True,
        help="output .safetensors path (missing folders are created); a key whose tensor is another key's "
        "is stored once and listed in the metadata 'aliases'",
    )
    p.add_argument(
        "--edit",
        action="append",
        metavar="EDIT",
        help="change a gate or state inside the recurrence and let it flow on, e.g. 'lstm/gates/f[units=0:3]=1.0' "
        "(syntax below); repeat for several",
    )
    p.add_argument("--custom-layers", metavar="MODULE:NAME", help=CUSTOM_LAYERS_HELP)
    p.set_defaults(func=_cmd_probe)

    p = verb(
        "extract",
        "run a model over a whole dataset and stream layer outputs (and gates) to sharded safetensors in a folder",
        f"{_key_help()}\n\nRe-running the same command resumes an interrupted extraction; "
        "read the folder with tlp.open_activations(DIR).",
    )
    p.add_argument("model", metavar="MODEL", help="a .keras, .h5, or architecture .json file")
    p.add_argument(
        "data",
        metavar="DATA",
        help="the inputs: a .npy, .npz or .safetensors file, samples first; for a model whose input takes strings, "
        "a UTF-8 text file with one text per line",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--weights", help="weights-only .h5 for an architecture .json")
    p.add_argument("--custom-layers", metavar="MODULE:NAME", help=CUSTOM_LAYERS_HELP)
    p.add_argument("--layers", help="comma-separated layer names or probe keys (default: every layer)")
    p.add_argument("--gates", action="store_true", help="also store every recurrent layer's gates (LSTM: i f g o c h)")
    p.add_argument("--batch-size", type=int, default=256, metavar="N", help="samples per forward pass (default 256)")
    p.add_argument("--device", help="where to run: cpu, cuda or cuda:N (default: cpu, where the model is loaded)")
    p.add_argument(
        "--dtype",
        choices=("float16", "bfloat16", "float32", "float64"),
        help="storage dtype of floating values (default: the model's dtype); masks stay bool",
    )
    p.add_argument(
        "--packed",
        action="store_true",
        help="store only the valid (unmasked) steps of gate keys of masked layers, with per-sample offsets",
    )
    p.add_argument("--overwrite", action="store_true", help="replace whatever extraction the folder holds")
    p.add_argument(
        "--no-resume",
        action="store_true",
        help="refuse a folder that already holds part of this extraction instead of finishing it",
    )
    p.add_argument(
        "--shard-mb",
        type=float,
        default=DEFAULT_SHARD_MB,
        metavar="N",
        help=f"size a shard aims at, in MiB (default {DEFAULT_SHARD_MB:g}; whole batches, at least one a shard)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=_cmd_extract)

    p = verb("inspect-activations", "print what a folder written by extract holds: samples, model, request, keys")
    p.add_argument("folder", metavar="DIR", help="a folder written by extract (or its index.json)")
    p.add_argument("--json", action="store_true", help="print the index summary (without per-shard lists) as JSON")
    p.set_defaults(func=_cmd_inspect_activations)

    p = verb(
        "stats",
        "gate statistics of the recurrent layers over a whole dataset: a table per layer, and the JSON with --out",
        "Rows: one per gate key (LSTM i f g o c h, GRU z r n h, SimpleRNN h). Read the JSON back with "
        "tlp.GateStats.load(FILE).",
    )
    p.add_argument("model", metavar="MODEL", help="a .keras, .h5, or architecture .json file")
    _add_data_arguments(p)
    p.add_argument("--out", metavar="FILE", help="also write the statistics as JSON (e.g. stats.json)")
    _add_run_arguments(p)
    p.set_defaults(func=_cmd_stats)

    p = verb(
        "plot",
        "plot gate statistics over a dataset and the gates of one sample as PNG files in a folder",
        "Files: saturation.png (fraction of steps each unit's sigmoid gates are < 0.1 against > 0.9), "
        "timescales.png (LSTM forget-gate memory lengths), mean_by_step_<g>.png (mean gate value by step), "
        "heatmap_<key>.png (units x time of sample --sample, its words on the time axis with --vocab or from a text model's own text layer). "
        "Needs matplotlib: pip install 'torch-lstm-probe[plots]'.",
    )
    p.add_argument("model", metavar="MODEL", help="a .keras, .h5, or architecture .json file")
    _add_data_arguments(p)
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the PNG files (created if missing)")
    p.add_argument(
        "--sample", type=int, default=0, metavar="I", help="the sample of DATA the heatmaps show (0-based, default 0)"
    )
    _add_run_arguments(p)
    p.set_defaults(func=_cmd_plot)

    p = verb(
        "export-lstmvis",
        "write an LSTMVis project folder: states (and gates) of the recurrent layers at every token of a dataset",
        "Files: states.h5 (one dataset per probe key, tokens x units), train.h5 (word_ids), words.dict, lstm.yml. "
        "Open it with LSTMVis: python lstm_server.py -dir DIR.",
    )
    p.add_argument("model", metavar="MODEL", help="a .keras, .h5, or architecture .json file")
    _add_data_arguments(p)
    p.add_argument("--out", required=True, metavar="DIR", help="the project folder (created if missing)")
    p.add_argument(
        "--states",
        default="c,h",
        metavar="c,h",
        help="states to export: c (LSTM cell state), h (hidden state); comma-separated (default c,h)",
    )
    p.add_argument(
        "--gates",
        default="",
        metavar="f,i",
        help="gates to export too: i f g o (LSTM), z r n (GRU); comma-separated (default none)",
    )
    _add_run_arguments(p)
    p.set_defaults(func=_cmd_export_lstmvis)

    p = verb(
        "report",
        "write one self-contained HTML report: the model table, gate statistics, plots and a token view",
        "The file needs no server and no network (styles, script, PNG plots and values are inline). Its token "
        "view colours the first --samples samples by one unit's value; choose the layer, the gate or state and "
        "the unit in the page, or in the address: report.html#layer=lstm&gate=f&unit=5. "
        "Needs matplotlib: pip install 'torch-lstm-probe[plots]'.",
    )
    p.add_argument("model", metavar="MODEL", help="a .keras, .h5, or architecture .json file")
    _add_data_arguments(p)
    p.add_argument("--out", required=True, metavar="FILE", help="the .html file to write (missing folders are created)")
    p.add_argument(
        "--samples",
        type=int,
        default=5,
        metavar="N",
        help="samples of DATA (the first ones) shown in the token view and, for the first, as heatmaps (default 5)",
    )
    p.add_argument("--title", help="the page title (default: '<model name>: gate report')")
    p.add_argument(
        "--heatmaps",
        default="f,z,c,h",
        metavar="f,c,h",
        help="gates of the first sample drawn as unit x time heatmaps, comma-separated: i f g o c h (LSTM), "
        "z r n h (GRU); '' for none (default f,z,c,h: forget or update gates and states)",
    )
    _add_run_arguments(p)
    p.set_defaults(func=_cmd_report)

    p = verb(
        "verify",
        "compare every layer of the converted model with Keras (live, or a stored reference): one row per layer",
        "Rows: layer, class, max abs and relative error, the worst position and the conversion's decisions "
        "(hard_sigmoid formula, bias split, CuDNN layout, mask and call rules). A layer is within tolerance when "
        "its max abs error <= atol * max(1, max |reference|). Keras runs live when installed (Keras 3 for files "
        "a Keras 3 wrote, tf_keras otherwise); else give --reference. Exit 0: all within; 1: some layer beyond "
        "(marked FAIL) or not convertible; 2: a user error.",
    )
    p.add_argument("model", metavar="MODEL", help="a .keras, .h5, or architecture .json file")
    p.add_argument(
        "--input",
        metavar="X.npy",
        help="inputs: .npy (one input) or .npz (one array per input, in input order or by name); default: "
        "generated from the input spec (token ids for an Embedding, padded when it masks zeros; else N(0, 1))",
    )
    p.add_argument(
        "--reference",
        metavar="REF.npz",
        help="compare with stored arrays instead of running Keras: .npz or .safetensors holding input:<i> and "
        "layer:<name> (or layer:<name>:<k>) arrays, the golden files' layout",
    )
    p.add_argument(
        "--atol", type=float, default=1e-5, help="tolerance (default 1e-5; relative above magnitude 1, see above)"
    )
    p.add_argument("--weights", help="weights-only .h5 for an architecture .json")
    p.add_argument("--custom-layers", metavar="MODULE:NAME", help=CUSTOM_LAYERS_HELP)
    p.set_defaults(func=_cmd_verify)

    p = verb(
        "port",
        "write the model as plain PyTorch: OUTDIR/model.py (one nn.Module, no import of this package) and "
        "OUTDIR/model.safetensors",
        "Use it anywhere with torch and safetensors: from model import load; net = load(). "
        "Exit status 1 when some layer or option cannot be written as plain PyTorch (the message names it).",
    )
    p.add_argument("model", metavar="MODEL", help="a .keras or .h5 Keras model file")
    p.add_argument("outdir", metavar="OUTDIR", help="output folder (created if missing; its model.py is replaced)")
    p.set_defaults(func=_cmd_port)

    p = verb("demo", "convert the bundled example sentence classifier and check parity with Keras")
    p.add_argument("--full", action="store_true", help="print every value of each LSTM output vector")
    p.set_defaults(func=_cmd_demo)
    return parser


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else ""
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def _exit_code(err: Exception, command: str | None) -> int:
    if command in ("inspect", "verify", "port") and isinstance(err, (UnsupportedLayerError, UnsupportedOptionError)):
        return EXIT_NOT_CONVERTIBLE
    if command == "port" and isinstance(err, PortError):
        return EXIT_NOT_CONVERTIBLE
    if isinstance(err, (TorchLstmProbeError, *USER_OS_ERRORS)):
        return EXIT_USER_ERROR
    return EXIT_INTERNAL_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line and returns its exit status (see the module docstring).

    Args:
        argv: the arguments after the program name; ``None`` means ``sys.argv[1:]``.

    Returns:
        0 ok, 1 not convertible, 2 user or file error, 3 internal error. Usage errors found by
        argparse exit 2 through ``SystemExit``, as do ``--help`` (0) and ``--version`` (0).
    """
    args = build_parser().parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("torch-lstm-probe: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (``| head``): stop quietly, as Unix tools do
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (no flush error at exit)
        return EXIT_OK
    except Exception as err:
        code = _exit_code(err, args.command)
        if debug:
            traceback.print_exc()
        if isinstance(err, _CommandLineError):
            kind = _first_line(err)  # names the flag itself
        else:
            kind = f"{type(err).__name__}: {_first_line(err)}" if str(err).strip() else type(err).__name__
        if code == EXIT_INTERNAL_ERROR:
            message = f"internal error: {kind} (run with --debug for the traceback)"
        elif code == EXIT_NOT_CONVERTIBLE:
            message = f"{'not portable' if isinstance(err, PortError) else 'not convertible'}: {kind}"
        else:
            message = f"error: {kind}"
        print(f"torch-lstm-probe: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
