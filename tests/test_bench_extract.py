"""The extraction benchmark still runs: every variant at tiny sizes, the fresh-process protocol, and the memory mode.

The real run is ``python scripts/bench_extract.py`` (about two minutes); these checks take a few seconds.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from scripts import bench_extract as bench

TINY = ["--samples", "40", "--steps", "4", "--units", "6", "--batch", "16", "--repeats", "1", "--warmup", "0"]


@pytest.fixture(autouse=True)
def _keep_threads(monkeypatch):
    """The benchmark pins torch's threads and the math libraries' variables; put both back afterwards."""
    threads = torch.get_num_threads()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_CPP_MIN_LOG_LEVEL"):
        if var in os.environ:
            monkeypatch.setenv(var, os.environ[var])  # recorded, so restored after the test
        else:
            monkeypatch.delenv(var, raising=False)
    yield
    torch.set_num_threads(threads)


def _run(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        bench.main(argv)
    return out.getvalue()


def _row(text: str, name: str) -> list[str]:
    label = bench.LABELS[name]
    line = next(line for line in text.splitlines() if line.startswith(label))
    return line[len(label) :].split()


def _in_child(argv, capture_output, text):
    """subprocess.run stand-in: the child command line runs here, so the protocol is checked without a new process."""
    return subprocess.CompletedProcess(argv, 0, stdout=_run(argv[2:]), stderr="")


def test_every_variant_measured_in_child_processes_and_the_outputs_deleted(tmp_path, monkeypatch):
    monkeypatch.setattr(bench.subprocess, "run", _in_child)
    text = _run([*TINY, "--out-dir", str(tmp_path), "--variants", "plain,outputs,gates,probe_save,probe_gates"])
    assert _row(text, "plain")[1] == "1.00x"
    for name, target in bench.TARGETS.items():
        row = _row(text, name)
        assert float(row[0].replace(",", "")) > 0 and row[1].endswith("x") and row[2] == f">={target:.2f}"
    written = {name: _row(text, name)[-3:-1] for name in ("outputs", "gates", "probe_save")}
    assert all(unit in ("KiB", "MiB") and float(n) > 0 for n, unit in written.values()), written
    assert float(written["gates"][0]) > float(written["outputs"][0])  # gates add 12 (time, units) keys
    assert _row(text, "probe_gates")[-2:] == ["-", "-"]  # nothing stored
    assert list(tmp_path.iterdir()) == []


def test_child_result_line_holds_timings_peak_rss_and_bytes(tmp_path):
    argv = bench._child_argv(bench.build_parser().parse_args(TINY), "gates", tmp_path / "w", repeats=2)
    text = _run(argv[2:])
    result = json.loads(text.splitlines()[-1][len(bench.RESULT) :])
    assert result["variant"] == "gates" and result["samples"] == 40 and len(result["times"]) == 2
    assert result["peak_rss"] >= result["base_rss"] > 0 and result["bytes"] > 40 * 4 * 6 * 2 * 12
    assert not any((tmp_path / "w").iterdir())


def test_torchlens_reported_absent_or_measured_and_the_lstm_alone_fraction(tmp_path):
    variants = "plain,torchlens,lstm_alone"
    text = _run([*TINY, "--in-process", "--out-dir", str(tmp_path), "--variants", variants])
    row = " ".join(_row(text, "torchlens"))
    try:
        import torchlens  # noqa: F401
    except ImportError:
        assert row == "not installed"
    else:
        assert row
    assert "of nn.LSTM" in text and _row(text, "lstm_alone")[-1] == "1.00"
    assert 0 < float(_row(text, "plain")[-1]) < 10  # plain forward's throughput over the nn.LSTM layers'


def test_memory_mode_compares_peak_rss_of_growing_dataset_sizes(tmp_path):
    text = _run([*TINY, "--in-process", "--memory", "--memory-gb", "0.001", "--out-dir", str(tmp_path)])
    lines = text.splitlines()
    rows = [line.split() for line in lines[3 : 3 + len(bench.MEMORY_FRACTIONS)]]
    samples = [int(r[0]) for r in rows]
    assert samples == sorted(set(samples)) and samples[0] >= 16 and all(s % 16 == 0 for s in samples)
    assert all(r[2] in ("KiB", "MiB") and float(r[1]) > 0 for r in rows)  # bytes written
    assert "batch 16 =" in lines[0] and "changed +run by" in lines[-1]
    assert list(tmp_path.iterdir()) == []


def test_unknown_variant_refused(tmp_path):
    with pytest.raises(SystemExit, match="unknown variants"):
        bench.main([*TINY, "--out-dir", str(tmp_path), "--variants", "plain,nope"])


def test_sizes_print_in_binary_units():
    assert [bench._size(n) for n in (12, 2048, 3 * 2**20, 2.5 * 2**30)] == ["12 B", "2 KiB", "3 MiB", "2.5 GiB"]
    assert Path(bench.__file__).name == "bench_extract.py"
