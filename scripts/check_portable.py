"""Sweep: every golden model (Keras 3 and tf_keras, ``.keras`` and ``.h5``, and the legacy Keras 1/2
files) through ``torch.export``, ONNX in ONNX Runtime and ``torch.compile``, each compared with the
outputs Keras computed. The suite checks one golden per layer family; this checks them all.

Usage: python scripts/check_portable.py [--jobs 2] [--only export,onnx,compile] [--cases PATTERN]

Prints one row per model file with the largest absolute error of each route against Keras (and,
for export and ONNX, against the eager model at another batch size, since the batch is dynamic).
Exits 1 when any error exceeds ``--atol`` (default 1e-5) or a route fails.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from scripts._bench_common import pin_threads  # noqa: E402

GOLDENS = ROOT / "tests" / "goldens"
ROUTES = ("export", "onnx", "compile")


Case = tuple[str, Path, "Path | None", Path]  # label, model file, weights file, Keras' outputs


def model_files() -> list[Case]:
    """Every golden model file with its weights file (architecture JSON only) and Keras' outputs."""
    out: list[Case] = []
    for ref in sorted(GOLDENS.glob("*.safetensors")):
        out += [(f"{ref.stem}{ext}", ref.with_suffix(ext), None, ref) for ext in (".keras", ".h5")]
    for ref in sorted((GOLDENS / "legacy").glob("*.safetensors")):
        arch = ref.with_suffix(".json")
        if arch.exists():
            out.append((f"legacy/{ref.stem}.json+h5", arch, ref.with_suffix(".h5"), ref))
        else:
            out.append((f"legacy/{ref.stem}.h5", ref.with_suffix(".h5"), None, ref))
    return out


def _flat(out: Any) -> list[Any]:
    import torch

    return [out] if isinstance(out, torch.Tensor) else [t for o in out for t in _flat(o)]


def _max_err(got: list[Any], want: list[Any]) -> float:
    import numpy as np

    if len(got) != len(want):
        raise AssertionError(f"{len(got)} outputs, expected {len(want)}")
    return max(
        float(np.abs(np.asarray(g, dtype=np.float64) - np.asarray(w, dtype=np.float64)).max())
        for g, w in zip(got, want)
    )


def check_file(case: Case, routes: tuple[str, ...]) -> dict[str, Any]:
    """Errors of each route against Keras' outputs (``keras``) and the eager model (``batch``)."""
    pin_threads(1)
    warnings.simplefilter("ignore")
    import logging

    logging.disable(logging.WARNING)
    import torch
    from safetensors.numpy import load_file

    import torch_lstm_probe as tlp

    label, path, weights, reference = case
    arrays = load_file(str(reference))
    inputs = tuple(torch.as_tensor(arrays[f"input:{i}"]) for i in range(sum(k.startswith("input:") for k in arrays)))
    expected = [arrays[f"output:{i}"] for i in range(sum(k.startswith("output:") for k in arrays))]
    model = tlp.load_keras(path, weights=weights) if weights else tlp.load_keras(path)
    # another batch size, to check the batch axis stays dynamic
    other = tuple(torch.cat([x, x[:1]]) if s["shape"][0] is None else x for s, x in zip(model.input_specs, inputs))
    with torch.inference_mode():
        eager_other = [t.numpy() for t in _flat(model(*other))]
    row: dict[str, Any] = {"label": label}
    for route in routes:
        start = time.perf_counter()
        try:
            if route == "export":
                exported = torch.export.export(model, inputs, dynamic_shapes=model.dynamic_shapes()).module()
                with torch.no_grad():
                    keras_err = _max_err([t.numpy() for t in _flat(exported(*inputs))], expected)
                    batch_err = _max_err([t.numpy() for t in _flat(exported(*other))], eager_other)
            elif route == "onnx":
                import onnxruntime as ort

                with tempfile.TemporaryDirectory() as tmp:
                    onnx_path = str(Path(tmp) / "model.onnx")
                    torch.onnx.export(
                        model, inputs, onnx_path, dynamic_shapes=model.dynamic_shapes(), dynamo=True, verbose=False
                    )
                    options = ort.SessionOptions()
                    options.intra_op_num_threads = 1
                    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
                names = [i.name for i in session.get_inputs()]
                keras_err = _max_err(session.run(None, dict(zip(names, (x.numpy() for x in inputs)))), expected)
                batch_err = _max_err(session.run(None, dict(zip(names, (x.numpy() for x in other)))), eager_other)
            else:
                torch._dynamo.reset()
                compiled = torch.compile(model)
                with torch.inference_mode():
                    keras_err = _max_err([t.numpy() for t in _flat(compiled(*inputs))], expected)
                batch_err = float("nan")
            row[route] = (keras_err, batch_err, time.perf_counter() - start)
        except Exception as err:  # noqa: BLE001 - a failing route is a row, not the end of the sweep
            row[route] = f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="model files checked in parallel (one thread each)")
    parser.add_argument("--only", default=",".join(ROUTES), help=f"comma-separated subset of {','.join(ROUTES)}")
    parser.add_argument("--cases", default="*", help="glob over the labels, e.g. 'tf_keras_*.h5'")
    parser.add_argument("--atol", type=float, default=1e-5, help="largest error accepted")
    args = parser.parse_args()
    routes = tuple(r for r in args.only.split(",") if r)
    unknown = sorted(set(routes) - set(ROUTES))
    if unknown:
        parser.error(f"unknown routes {unknown}; choose from {list(ROUTES)}")
    files = [f for f in model_files() if fnmatch.fnmatch(f[0], args.cases)]
    if not files:
        parser.error(f"no golden model matches {args.cases!r}")

    failed = 0
    worst = dict.fromkeys(routes, 0.0)
    print(f"{'model file':52s} " + " ".join(f"{r + ' keras/batch':>24s}" for r in routes))
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(check_file, case, routes) for case in files]
        for future in futures:
            row = future.result()
            cells = []
            for route in routes:
                value = row[route]
                if isinstance(value, str):
                    failed += 1
                    cells.append(f"{'FAILED':>24s}")
                    print(f"  {row['label']} {route}: {value}")
                    continue
                keras_err, batch_err, _ = value
                worst[route] = max(worst[route], keras_err, 0.0 if batch_err != batch_err else batch_err)
                if keras_err > args.atol or batch_err > args.atol:
                    failed += 1
                cells.append(f"{keras_err:11.1e} /{batch_err:9.1e}  ")
            print(f"{row['label']:52s} " + " ".join(cells), flush=True)
    print(
        f"{len(files)} model files; largest error per route: "
        + ", ".join(f"{r} {worst[r]:.1e}" for r in routes)
        + f"; {failed} beyond {args.atol:g} or failed"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
