"""The ``torch-lstm-probe`` command: a thin argparse front-end over the library.

Exit status: 0 success; 1 the model is not convertible (``inspect``); 2 a user or file error (bad
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
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, TorchLstmProbeError, UnsupportedLayerError, UnsupportedOptionError

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


def _load_inputs(path: str) -> list[np.ndarray] | dict[str, np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--input file not found: {p}")
    if p.suffix not in (".npy", ".npz"):
        raise InputError(
            f"--input {p}: expected a .npy file (one input) or a .npz file (several). Received {p.name!r}."
        )
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
    from .probe import probe

    out = _output_path(args.out)
    inputs = _load_inputs(args.input)
    model = load_keras(args.file, weights=args.weights, custom_layers=_custom_layers(args.custom_layers))
    layers = [s for s in args.layers.split(",") if s] if args.layers else None
    x: Any = inputs if isinstance(inputs, dict) else (inputs[0] if len(inputs) == 1 else list(inputs))
    acts = probe(model, x, layers=layers, gates=args.gates)
    keys = [k for k, v in acts.items() if isinstance(v, torch.Tensor)]
    tensors, aliases = _store_once(acts)
    info = getattr(model, "source_info", {})
    metadata = {
        "source_file": str(args.file),
        "source_sha256": _sha256(args.file),
        "keras_version": str(info.get("keras_version", "")),
        "layer_names": json.dumps(model.layer_names),
        "key_meanings": json.dumps(_key_meanings()),
        "keys": json.dumps(keys),  # every probe key, in probe order
        "aliases": json.dumps(aliases),  # key -> stored key holding its tensor
    }
    save_file(tensors, str(out), metadata=metadata)
    width = max((len(k) for k in keys), default=0)
    for key in keys:
        value = tensors[aliases.get(key, key)]
        same = f"  (same tensor as {aliases[key]})" if key in aliases else ""
        print(f"{key.ljust(width)}  {tuple(value.shape)}  {value.dtype}{same}")
    print(f"wrote {len(keys)} keys ({len(tensors)} tensors, {len(aliases)} aliases) to {out}")
    return EXIT_OK


DATA_SUFFIXES = (".npy", ".npz", ".safetensors")
DEFAULT_SHARD_MB = 64.0  # extract --shard-mb: tlp.extract's DEFAULT_SHARD_BYTES, in MiB (kept equal by a test)


def _data_path(value: str) -> Path:
    """``DATA`` as an existing ``.npy``/``.npz``/``.safetensors`` file (checked before the model is loaded)."""
    path = Path(value)
    if not path.exists():
        raise FileNotFoundError(f"DATA file not found: {path}. Expected a {'/'.join(DATA_SUFFIXES)} file.")
    if path.suffix.lower() not in DATA_SUFFIXES:
        raise InputError(f"DATA {path}: expected a {'/'.join(DATA_SUFFIXES)} file. Received {path.name!r}.")
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

    data = _data_path(args.data)
    device = _device(args.device)
    if args.shard_mb <= 0:
        raise _CommandLineError(f"--shard-mb {args.shard_mb:g}: expected a positive number of MiB.")
    model = load_keras(args.model, weights=args.weights, custom_layers=_custom_layers(args.custom_layers))
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

    p = verb("probe", "write layer outputs (and gates) for given inputs to a safetensors file", _key_help())
    p.add_argument("file", help="a .keras, .h5, or architecture .json file")
    p.add_argument("--weights", help="weights-only .h5 for an architecture .json")
    p.add_argument(
        "--input", required=True, help="inputs: .npy (one input) or .npz (several, by input name or in order)"
    )
    p.add_argument("--layers", help="comma-separated layer names or probe keys (default: every layer)")
    p.add_argument("--gates", action="store_true", help="also write every recurrent layer's gates (LSTM: i f g o c h)")
    p.add_argument(
        "--out",
        required=True,
        help="output .safetensors path (missing folders are created); a key whose tensor is another key's "
        "is stored once and listed in the metadata 'aliases'",
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
    p.add_argument("data", metavar="DATA", help="the inputs: a .npy, .npz or .safetensors file, samples first")
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

    p = verb("demo", "convert the bundled example sentence classifier and check parity with Keras")
    p.add_argument("--full", action="store_true", help="print every value of each LSTM output vector")
    p.set_defaults(func=_cmd_demo)
    return parser


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else ""
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def _exit_code(err: Exception, command: str | None) -> int:
    if command == "inspect" and isinstance(err, (UnsupportedLayerError, UnsupportedOptionError)):
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
            message = f"not convertible: {kind}"
        else:
            message = f"error: {kind}"
        print(f"torch-lstm-probe: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
