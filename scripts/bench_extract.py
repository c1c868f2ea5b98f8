"""Benchmark: ``tlp.extract`` against a plain forward over the same dataset, side by side in one run.

Usage:
    python scripts/bench_extract.py [--threads 1] [--samples 2048] [--steps 50] [--units 128] [--batch 256]
                                    [--repeats 3] [--device cpu|cuda] [--variants plain,outputs,...]
    python scripts/bench_extract.py --memory [--memory-gb 2]

Each variant runs in a fresh process of this script (``--variant NAME``), so that its peak
resident memory is its own; the parent prints one table. Inside a process every timed pass of
a variant is paired with a plain-forward pass, and its ratio to the plain forward is the median
of the per-pair ratios, which keeps the ratios steady on a shared machine. Variants, all over the
same data in batches of ``--batch`` with torch pinned to ``--threads`` threads:

- ``plain``: ``model(x)`` per batch under ``inference_mode`` (the reference, ratio 1.00).
- ``outputs``: ``tlp.extract`` of every layer's outputs, stored as float16.
- ``gates``: ``tlp.extract(..., gates=True)``, float16.
- ``probe_save``: what users write by hand: ``tlp.probe(..., gates=True)`` per batch, cast to
  float16, ``torch.save`` of each batch's dict.
- ``probe_outputs`` / ``probe_gates``: ``tlp.probe`` per batch with nothing stored: the compute
  ceiling of ``outputs`` / ``gates`` (what the storage path costs is the difference).
- ``torchlens``: ``torchlens.extract_dataset(model, loader, folder)`` where ``import torchlens``
  works; a version without it, or with another signature, is reported as skipped.
- ``lstm_alone`` (with ``--device cuda``): the embedding and two ``nn.LSTM`` layers alone
  (cuDNN), the fastest anything can run these recurrences; every row then shows its fraction.

``--memory`` extracts float16 gates of datasets sized to an eighth, a half and all of
``--memory-gb`` (read from a memory-mapped ``.npy``) and prints peak resident memory (total,
anonymous, file-backed, and with glibc what malloc holds live and keeps free at the peak) against
the bytes written and the bytes of one batch: the claim under test is that peak host memory is
bounded by a few batches whatever the dataset size (the half and full runs are both past the
first shards, where the pipeline fills up). Outputs go to a temporary folder that is deleted afterwards.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from scripts._bench_common import SEED_VOCAB as VOCAB  # noqa: E402
from scripts._bench_common import pin_threads, scaled_seed_model  # noqa: E402

__all__ = ["main", "VARIANTS", "TARGETS"]

VARIANTS = ("plain", "outputs", "gates", "probe_save", "probe_outputs", "probe_gates", "torchlens", "lstm_alone")
LABELS = {
    "plain": "(a) plain forward, model(x)",
    "outputs": "(b) tlp.extract outputs, float16",
    "gates": "(c) tlp.extract gates=True, float16",
    "probe_save": "(d) probe(gates) + torch.save/batch",
    "probe_outputs": "    ceiling: probe outputs, no storage",
    "probe_gates": "    ceiling: probe gates, no storage",
    "torchlens": "(e) torchlens.extract_dataset",
    "lstm_alone": "    nn.LSTM x2 alone (cuDNN on CUDA)",
}
TARGETS = {"outputs": 0.85, "gates": 0.55}  # throughput ratio to the plain forward, from the design
MEMORY_FRACTIONS = (1 / 8, 1 / 2, 1)  # of --memory-gb: one under a shard or two, then two past the start-up
RESULT = "RESULT "
MIB = 2**20
DIM = 100


# ---------------------------------------------------------------------------------------------- memory
def _status() -> dict[str, int]:
    """Resident memory figures of this process in bytes, from /proc/self/status (empty elsewhere)."""
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                name, _, rest = line.partition(":")
                if name in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    out[name] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return out


def _peak_rss() -> int:
    """Peak resident set size of this process in bytes (VmHWM; ru_maxrss where /proc is missing)."""
    hwm = _status().get("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _reset_peak() -> bool:
    """Resets VmHWM to the current RSS (Linux: ``5`` to /proc/self/clear_refs); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _malloc_heap() -> Callable[[], dict[str, int]] | None:
    """glibc's ``mallinfo2`` over every arena (bytes in live blocks, free bytes it keeps); None elsewhere."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks")
            + ("uordblks", "fordblks", "keepcost")
        ]

    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = MallInfo2

    def heap() -> dict[str, int]:
        info = mallinfo2()
        return {"live": info.uordblks + info.hblkhd, "kept_free": info.fordblks}

    return heap


class _Sampler:
    """Samples anonymous and file-backed resident memory every few milliseconds and keeps the peaks;
    with glibc, also the malloc heap (live blocks, free bytes kept) at the moment of peak anonymous memory."""

    def __init__(self, every: float = 0.005) -> None:
        self.every = every
        self.peak: dict[str, int] = {}
        self.heap_at_peak: dict[str, int] = {}
        self._heap = _malloc_heap()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            status = _status()
            if self._heap is not None and status.get("RssAnon", 0) > self.peak.get("RssAnon", -1):
                self.heap_at_peak = self._heap()
            for name, value in status.items():
                self.peak[name] = max(self.peak.get(name, 0), value)
            self._stop.wait(self.every)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------- model
def make_tokens(samples: int, steps: int) -> Any:
    import torch

    generator = torch.Generator().manual_seed(1)
    return torch.randint(1, VOCAB, (samples, steps), generator=generator, dtype=torch.int32)  # (N, T)


# ---------------------------------------------------------------------------------------------- variants
class Skip(Exception):
    """A variant that cannot run here (a missing package, a device it needs)."""


def _variant_run(name: str, args: argparse.Namespace, model: Any, x: Any, work: Path) -> Callable[[Path], int]:
    """One pass of variant ``name`` over ``x``: a function of an empty output folder returning bytes written."""
    import torch

    import torch_lstm_probe as tlp

    device = args.device
    batch = args.batch
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def batches():
        for a in range(0, len(x), batch):
            yield x[a : a + batch]  # (B, T)

    if name == "plain":

        def run(out: Path) -> int:
            with torch.inference_mode():
                for xb in batches():
                    model(xb.to(device))  # (B, 1)
            sync()
            return 0

    elif name in ("outputs", "gates"):
        gates = name == "gates"

        def run(out: Path) -> int:
            tlp.extract(
                model, x, out=out, gates=gates, batch_size=batch, dtype="float16", progress=False, overwrite=True
            )
            sync()
            return _folder_bytes(out)

    elif name in ("probe_outputs", "probe_gates"):
        gates = name == "probe_gates"

        def run(out: Path) -> int:
            for xb in batches():
                tlp.probe(model, xb.to(device), gates=gates)
            sync()
            return 0

    elif name == "probe_save":

        def run(out: Path) -> int:
            out.mkdir(parents=True, exist_ok=True)
            for i, xb in enumerate(batches()):
                acts = tlp.probe(model, xb.to(device), gates=True)
                torch.save({k: v.to("cpu", torch.float16) for k, v in acts.items()}, out / f"batch-{i:05d}.pt")
            return _folder_bytes(out)

    elif name == "torchlens":
        try:
            import torchlens
        except ImportError as err:
            raise Skip("not installed") from err
        extract_dataset = getattr(torchlens, "extract_dataset", None)
        if extract_dataset is None:
            raise Skip(f"torchlens {getattr(torchlens, '__version__', '?')} has no extract_dataset")
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=batch)

        def run(out: Path) -> int:
            try:
                extract_dataset(model, loader, str(out))
            except TypeError as err:
                raise Skip(f"extract_dataset(model, loader, folder) not accepted: {err}") from err
            return _folder_bytes(out) if out.exists() else 0

    elif name == "lstm_alone":
        from torch import nn

        embedding = model.layer("embedding")
        layer_1 = nn.LSTM(DIM, args.units, batch_first=True).to(device).eval()
        layer_2 = nn.LSTM(args.units, args.units, batch_first=True).to(device).eval()

        def run(out: Path) -> int:
            with torch.inference_mode():
                for xb in batches():
                    layer_2(layer_1(embedding(xb.to(device)))[0])  # (B, T, U)
            sync()
            return 0

    else:
        raise Skip(f"unknown variant {name!r}")
    return run


def run_variant(args: argparse.Namespace) -> dict[str, Any]:
    """Times one variant in this process: ``--warmup`` untimed passes, then the median of ``--repeats``.

    Each pass of a variant other than ``plain`` is paired with a plain-forward pass in the same
    process (their order alternating), so its ratio to the plain forward is the median of per-pair
    ratios: drift on a shared machine (other processes, frequency) hits both sides of a pair alike.
    """
    import torch

    model = scaled_seed_model(args.steps, args.units, args.device)
    x = make_tokens(args.samples, args.steps)
    work = Path(args.out_dir)
    result: dict[str, Any] = {"variant": args.variant, "samples": args.samples}
    try:
        run = _variant_run(args.variant, args, model, x, work)
        plain = _variant_run("plain", args, model, x, work) if args.variant != "plain" else None
        base = _status().get("VmRSS", 0)
        reset = _reset_peak()
        times: list[float] = []
        ratios: list[float] = []
        written = 0
        for k in range(args.warmup + args.repeats):
            out = work / f"{args.variant}-{k}"
            plain_time = _timed(plain, out) if plain is not None and k % 2 else None
            start = time.perf_counter()
            written = run(out)
            elapsed = time.perf_counter() - start
            shutil.rmtree(out, ignore_errors=True)
            if plain is not None and plain_time is None:
                plain_time = _timed(plain, out)
            if k >= args.warmup:
                times.append(elapsed)
                if plain_time is not None:
                    ratios.append(plain_time / elapsed)
    except Skip as skip:
        return {**result, "skipped": str(skip)}
    result.update(
        times=times,
        median=statistics.median(times),
        ratio=statistics.median(ratios) if ratios else 1.0,
        bytes=written,
        peak_rss=_peak_rss(),
        base_rss=base if reset else 0,
        torch=torch.__version__,
    )
    return result


def _timed(run: Callable[[Path], int], out: Path) -> float:
    start = time.perf_counter()
    run(out)
    return time.perf_counter() - start


def run_memory(args: argparse.Namespace) -> dict[str, Any]:
    """One extraction of float16 gates of ``--memory-gb`` from a memory-mapped .npy, with memory figures."""
    import numpy as np
    import torch

    import torch_lstm_probe as tlp

    model = scaled_seed_model(args.steps, args.units, args.device)
    one = tlp.probe(model, make_tokens(1, args.steps).to(args.device), gates=True)
    sample_bytes = sum(v.numel() * 2 for v in one.values())  # float16, one sample, every key
    samples = max(args.batch, math.ceil(args.memory_gb * 2**30 / sample_bytes / args.batch) * args.batch)
    work = Path(args.out_dir)
    work.mkdir(parents=True, exist_ok=True)
    data = work / "tokens.npy"
    np.save(data, make_tokens(samples, args.steps).numpy())  # (N, T) int32, read back memory-mapped
    out = work / "acts"
    base = _status()
    heap = _malloc_heap()
    base_heap = heap() if heap is not None else {}
    _reset_peak()
    with _Sampler() as sampler:
        start = time.perf_counter()
        tlp.extract(model, str(data), out=out, gates=True, batch_size=args.batch, dtype="float16", progress=False)
        elapsed = time.perf_counter() - start
    written = _folder_bytes(out)
    shards = len(list(out.glob("shard-*.safetensors")))
    shutil.rmtree(out, ignore_errors=True)
    data.unlink()
    return {
        "variant": "memory",
        "samples": samples,
        "seconds": elapsed,
        "bytes": written,
        "shards": shards,
        "sample_bytes": sample_bytes,
        "batch_bytes": sample_bytes * args.batch,
        "base": base,
        "peak_rss": _peak_rss(),
        "peak": sampler.peak,
        "heap_before": base_heap,
        "heap_at_peak": sampler.heap_at_peak,
        "torch": torch.__version__,
    }


# ---------------------------------------------------------------------------------------------- parent
def _child_argv(args: argparse.Namespace, variant: str, work: Path, **override: Any) -> list[str]:
    """The command line that measures ``variant`` in a fresh process of this script."""
    values = {
        "threads": args.threads,
        "samples": args.samples,
        "steps": args.steps,
        "units": args.units,
        "batch": args.batch,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "device": args.device,
        "memory_gb": args.memory_gb,
        **override,
    }
    argv = [sys.executable, str(Path(__file__).resolve()), "--variant", variant, "--out-dir", str(work)]
    for key, value in values.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


def _measure(args: argparse.Namespace, variant: str, work: Path, **override: Any) -> dict[str, Any]:
    """Runs one measurement in a fresh process (or here with ``--in-process``) and returns its result."""
    argv = _child_argv(args, variant, work, **override)
    if args.in_process:
        child = build_parser().parse_args(argv[2:])
        return run_memory(child) if variant == "memory" else run_variant(child)
    done = subprocess.run(argv, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        return {"variant": variant, "skipped": "failed: " + " | ".join(tail)}
    return dict(json.loads(lines[-1][len(RESULT) :]))


def _size(n: float) -> str:
    """Bytes in the largest binary unit that keeps at least one digit before the point."""
    for unit, scale in (("GiB", 2**30), ("MiB", MIB), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:,.1f} {unit}" if scale == 2**30 else f"{n / scale:,.0f} {unit}"
    return f"{n:,.0f} B"


CEILINGS = {"outputs": "probe_outputs", "gates": "probe_gates", "probe_save": "probe_gates"}


def print_table(args: argparse.Namespace, results: dict[str, dict[str, Any]]) -> None:
    """One row per variant: samples/s, ratio to the plain forward (and target), peak RSS, bytes written."""
    ok = {k: r for k, r in results.items() if "skipped" not in r}
    torch_version = next((r["torch"] for r in ok.values()), "?")
    print(
        f"workload: Embedding({VOCAB},{DIM}) -> LSTM({args.units}, seq) -> LSTM({args.units}) -> Dense(1); "
        f"{args.samples} samples x {args.steps} steps, batch {args.batch}; device {args.device}; "
        f"{args.threads} thread(s); median of {args.repeats} after {args.warmup} warm-up; torch {torch_version}; "
        + ("all in this process (--in-process: peaks mix)" if args.in_process else "each variant in a fresh process")
    )
    alone = ok.get("lstm_alone")
    header = (
        f"{'variant':38s} {'samples/s':>9s} {'vs (a)':>6s} {'target':>7s} {'vs ceil':>7s} {'peak RSS':>10s} "
        f"{'+run':>9s} {'written':>10s} {'MiB/s':>6s}" + (f" {'of nn.LSTM':>10s}" if alone else "")
    )
    print(header + "\n" + "-" * len(header))
    for name, r in results.items():
        label = LABELS.get(name, name)
        if "skipped" in r:
            print(f"{label:38s} {r['skipped']}")
            continue
        ratio = f"{r['ratio']:.2f}x"
        target = f">={TARGETS[name]:.2f}" if name in TARGETS else ""
        ceiling = ok.get(CEILINGS.get(name, ""))
        of_ceiling = f"{r['ratio'] / ceiling['ratio']:.2f}x" if ceiling else ""
        extra = _size(r["peak_rss"] - r["base_rss"]) if r["base_rss"] else "?"
        written = _size(r["bytes"]) if r["bytes"] else "-"
        speed = f"{r['bytes'] / r['median'] / MIB:,.0f}" if r["bytes"] else "-"
        row = (
            f"{label:38s} {r['samples'] / r['median']:9,.0f} {ratio:>6s} {target:>7s} {of_ceiling:>7s} "
            f"{_size(r['peak_rss']):>10s} {extra:>9s} {written:>10s} {speed:>6s}"
        )
        if alone:
            row += f" {r['ratio'] / alone['ratio']:10.2f}"
        print(row)
    print(
        "vs (a): throughput over the plain forward's, median of passes paired with a plain pass in the same "
        "process; vs ceil: the same over the probe loop storing nothing's; +run: peak "
        "RSS above the RSS before the first pass (model and data built); written: one pass, every file"
        + ("; of nn.LSTM: throughput over the nn.LSTM layers alone" if alone else "")
        + "."
    )


def print_memory(runs: list[dict[str, Any]]) -> None:
    """Peak memory of extractions of growing size against bytes written and one batch's bytes."""
    last = runs[-1]
    batch = last["batch_bytes"] // last["sample_bytes"]
    print(
        f"memory: float16 gates and outputs of every layer, {last['sample_bytes']:,} bytes a sample, batch {batch} = "
        f"{_size(last['batch_bytes'])} float16 ({_size(2 * last['batch_bytes'])} as computed in float32); data "
        f"read from a memory-mapped .npy; torch {last['torch']}"
    )
    header = (
        f"{'samples':>8s} {'written':>10s} {'shards':>6s} {'seconds':>7s} {'MiB/s':>6s} {'RSS before':>10s} "
        f"{'peak RSS':>10s} {'+run':>9s} {'batches':>7s} {'peak anon':>10s} {'peak file':>10s} "
        f"{'+live':>9s} {'kept free':>10s}"
    )
    print(header + "\n" + "-" * len(header))
    extras = []
    for r in runs:
        base = r["base"].get("VmRSS", 0)
        extra = r["peak_rss"] - base
        extras.append(extra)
        heap, heap_before = r.get("heap_at_peak") or {}, r.get("heap_before") or {}
        live = _size(heap["live"] - heap_before.get("live", 0)) if heap else "?"
        kept = _size(heap["kept_free"]) if heap else "?"
        print(
            f"{r['samples']:8d} {_size(r['bytes']):>10s} {r['shards']:6d} {r['seconds']:7.1f} "
            f"{r['bytes'] / r['seconds'] / MIB:6.0f} {_size(base):>10s} {_size(r['peak_rss']):>10s} "
            f"{_size(extra):>9s} {extra / r['batch_bytes']:7.1f} {_size(r['peak'].get('RssAnon', 0)):>10s} "
            f"{_size(r['peak'].get('RssFile', 0)):>10s} {live:>9s} {kept:>10s}"
        )
    half, full = runs[-2], runs[-1]
    grow = extras[-1] - extras[-2]
    print(
        "+run: peak RSS above the RSS before the extraction; batches: +run over one float16 batch; peak anon/file: "
        "sampled every 5 ms; +live / kept free: malloc's live blocks above those before the run, and the free "
        "bytes it keeps, at the peak of anonymous memory (glibc)."
    )
    print(
        f"Writing {full['bytes'] / max(1, half['bytes']):.1f}x the bytes ({_size(half['bytes'])} -> "
        f"{_size(full['bytes'])}) changed +run by {'-' if grow < 0 else '+'}{_size(abs(grow))} "
        f"({grow / max(1, full['bytes'] - half['bytes']):+.2%} of the extra bytes written)."
    )


# ---------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    parser.add_argument("--samples", type=int, default=2048, help="samples in the dataset")
    parser.add_argument("--steps", type=int, default=50, help="tokens per sequence")
    parser.add_argument("--units", type=int, default=128, help="LSTM units")
    parser.add_argument("--batch", type=int, default=256, help="batch size")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per variant (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes first")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--variants", default=None, help=f"comma-separated subset of {','.join(VARIANTS)}")
    parser.add_argument("--out-dir", default=None, help="where temporary outputs go (a folder made and deleted)")
    parser.add_argument("--memory", action="store_true", help="the peak-memory check instead of the speed table")
    parser.add_argument("--memory-gb", type=float, default=2.0, help="float16 gates the --memory run writes")
    parser.add_argument("--in-process", action="store_true", help="measure here, not in fresh processes (tests)")
    parser.add_argument("--variant", default=None, help=argparse.SUPPRESS)  # a child process: one measurement
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.variant is not None:  # a child: pin threads before torch starts its pools, measure, report
        pin_threads(args.threads)
        result = run_memory(args) if args.variant == "memory" else run_variant(args)
        print(RESULT + json.dumps(result), flush=True)
        return
    if args.in_process:
        pin_threads(args.threads)
    if args.variants:
        names = [v.strip() for v in args.variants.split(",") if v.strip()]
        unknown = sorted(set(names) - set(VARIANTS))
        if unknown:
            raise SystemExit(f"unknown variants {unknown}; expected some of {', '.join(VARIANTS)}")
    else:
        names = [v for v in VARIANTS if v != "lstm_alone" or args.device.startswith("cuda")]
    parent = Path(args.out_dir) if args.out_dir else None
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench_extract_", dir=parent))
    try:
        if args.memory:
            runs = [
                _measure(args, "memory", work / f"size{k}", memory_gb=args.memory_gb * fraction)
                for k, fraction in enumerate(MEMORY_FRACTIONS)
            ]
            for r in runs:
                if "skipped" in r:
                    raise SystemExit(f"memory run {r['skipped']}")
            print_memory(runs)
            return
        results: dict[str, dict[str, Any]] = {}
        for name in names:
            if name == "torchlens" and importlib.util.find_spec("torchlens") is None:
                results[name] = {"variant": name, "skipped": "not installed"}
                continue
            results[name] = _measure(args, name, work / name)
        print_table(args, results)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
