"""The ``torch-lstm-probe`` command: a thin argparse front-end over the library.

A user error prints one line and exits with status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import TorchLstmProbeError

__all__ = ["main"]

EXAMPLES = Path(__file__).parent / "examples"


def _cmd_inspect(args: argparse.Namespace) -> int:
    from torch_lstm_probe.converters.inspect import format_report, inspect_model

    report = inspect_model(args.file, weights=args.weights)
    print(format_report(report))
    return 0 if report.convertible else 1


def _load_inputs(path: str) -> list[np.ndarray] | dict[str, np.ndarray]:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"Input file not found: {p}")
    if p.suffix == ".npy":
        return [np.load(p, allow_pickle=False)]
    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        if all(k.startswith("arr_") for k in arrays):
            return [arrays[f"arr_{i}"] for i in range(len(arrays))]
        return arrays
    raise ValueError(f"--input must be a .npy or .npz file. Received {p.name!r}.")


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


KEY_MEANINGS = {
    "<layer>": "output of a layer with one output",
    "<layer>:<k>": "k-th output of a layer with several outputs (return_state: 0 output, 1 h, 2 c)",
    "<layer>@<n>": "n-th call of a shared layer",
    "<layer>/gates/<g>": "LSTM gate or state g in i f g o c h, (batch, time, units), processing order",
    "<layer>/mask": "bool (batch, time) mask the recurrent layer applied",
}


def _cmd_probe(args: argparse.Namespace) -> int:
    import torch
    from safetensors.torch import save_file

    from .api import load_keras
    from .probe import probe

    model = load_keras(args.file, weights=args.weights)
    inputs = _load_inputs(args.input)
    layers = [s for s in args.layers.split(",") if s] if args.layers else None
    x: Any = inputs if isinstance(inputs, dict) else (inputs[0] if len(inputs) == 1 else list(inputs))
    acts = probe(model, x, layers=layers, gates=args.gates)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in acts.items() if isinstance(v, torch.Tensor)}
    info = getattr(model, "source_info", {})
    metadata = {
        "source_file": str(args.file),
        "source_sha256": _sha256(args.file),
        "keras_version": str(info.get("keras_version", "")),
        "layer_names": json.dumps(model.layer_names),
        "key_meanings": json.dumps(KEY_MEANINGS),
    }
    save_file(tensors, args.out, metadata=metadata)
    width = max((len(k) for k in tensors), default=0)
    for key, value in tensors.items():
        print(f"{key.ljust(width)}  {tuple(value.shape)}  {value.dtype}")
    print(f"wrote {len(tensors)} tensors to {args.out}")
    return 0


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
    print(f"\nLSTM layer output per sentence: {lstm.shape[1]} values each" + ("" if args.full else f" (first {shown}; --full for all)"))
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torch-lstm-probe",
        description="Load Keras LSTM models as PyTorch modules; inspect them and probe layers and gates.",
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="print the layer table of a Keras model file and whether it converts")
    p.add_argument("file", help="a .keras, .h5, or architecture .json file")
    p.add_argument("--weights", help="weights-only .h5 for an architecture .json")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("probe", help="write layer outputs (and gates) for given inputs to a safetensors file")
    p.add_argument("file", help="a .keras, .h5, or architecture .json file")
    p.add_argument("--weights", help="weights-only .h5 for an architecture .json")
    p.add_argument("--input", required=True, help="inputs: .npy (one input) or .npz (several, by input name or in order)")
    p.add_argument("--layers", help="comma-separated layer names or probe keys (default: every layer)")
    p.add_argument("--gates", action="store_true", help="also write every LSTM's gates i f g o c h")
    p.add_argument("--out", required=True, help="output .safetensors path")
    p.set_defaults(func=_cmd_probe)

    p = sub.add_parser("demo", help="convert the bundled example sentence classifier and check parity with Keras")
    p.add_argument("--full", action="store_true", help="print every value of each LSTM output vector")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (TorchLstmProbeError, FileNotFoundError, ValueError, KeyError) as err:
        if args.debug:
            raise
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"torch-lstm-probe: error: {type(err).__name__}: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
