"""The fuzz suite: a short seeded budget of mutated example and golden files must give only clean loads
and typed errors, within a time and a memory bound; and the harness itself must see what it claims to.

The long mode is ``python scripts/fuzz.py --cases 10000``; this file runs a budget that fits CI.
"""

from __future__ import annotations

import json
import os
import random
import time
import zipfile
import zlib
from pathlib import Path

import pytest

from scripts import fuzz
from torch_lstm_probe.errors import InputError

SEED = 8
CASES = 150  # the CI budget: every mutation family is drawn (checked below)
TIMEOUT_S = 20.0
MEM_GB = 2.5


def test_the_ci_budget_draws_every_mutation_family_and_file_kind():
    seeds = fuzz.discover_seeds()
    kind_of = {seed.name: seed.kind for seed in seeds}
    plans = [fuzz.plan_case(seeds, SEED, index) for index in range(CASES)]
    assert {family for _, family in plans} == set(fuzz.FAMILIES)
    assert {kind_of[name] for name, _ in plans} == {"keras", "h5", "json", "saved"}


def test_seeded_budget_gives_only_clean_loads_and_typed_errors():
    start = time.perf_counter()
    outcomes = fuzz.run_cases(range(CASES), seed=SEED, timeout=TIMEOUT_S, mem_gb=MEM_GB, jobs=1)
    seconds = time.perf_counter() - start
    summary = fuzz.summarize(outcomes, seconds)
    assert len(outcomes) == CASES, summary
    failures = [o for o in outcomes if o.kind in fuzz.FAILURE_KINDS]
    assert not failures, summary
    kinds = {o.kind for o in outcomes}
    assert {"clean", "typed"} <= kinds <= {"clean", "typed", "unbuilt"}, summary  # both paths exercised
    assert sum(o.kind == "unbuilt" for o in outcomes) <= CASES // 20, summary


def test_cases_are_reproducible(tmp_path):
    seeds = fuzz.discover_seeds()
    for index in (0, 7, 10, 37, 41):
        a = fuzz.build_case(seeds, SEED, index, tmp_path / f"a{index}")
        time.sleep(0.01 if index else 2.1)  # a zip written a second later must not differ by its timestamps
        b = fuzz.build_case(seeds, SEED, index, tmp_path / f"b{index}")
        assert (a.seed, a.mutation) == (b.seed, b.mutation)
        if a.main.is_file() and not a.main.is_symlink():
            assert _content(a.main) == _content(b.main), a.mutation


def _content(path):
    """A file's bytes; for safetensors its header and tensors (its JSON header's key order varies)."""
    data = path.read_bytes()
    if path.suffix != ".safetensors":
        return data
    size = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(data[8 : 8 + size])
    except ValueError:
        return data  # a raw mutation broke the header: compare bytes
    return header, data[8 + size :]


def test_corpus_holds_every_file_kind():
    kinds = {seed.kind for seed in fuzz.discover_seeds()}
    assert kinds == {"keras", "h5", "json", "saved"}


@pytest.mark.parametrize("index", range(6))
def test_mutate_json_changes_the_config_and_stays_json(index):
    rng = random.Random(index)
    config = {
        "class_name": "Functional",
        "config": {
            "name": "m",
            "layers": [
                {"class_name": "InputLayer", "name": "x", "config": {"batch_shape": [None, 3, 2]}, "inbound_nodes": []},
                {
                    "class_name": "LSTM",
                    "name": "lstm",
                    "config": {"units": 4, "activation": "tanh"},
                    "inbound_nodes": [[["x", 0, 0, {}]]],
                },
            ],
            "input_layers": [["x", 0, 0]],
            "output_layers": [["lstm", 0, 0]],
        },
    }
    mutated = json.loads(json.dumps(config))
    what = fuzz.mutate_json(mutated, rng)
    assert what and mutated != config
    json.loads(fuzz._dumps(mutated))


def test_deep_nesting_is_written_past_the_recursion_limit():
    deep = fuzz._nested([1], 5000, random.Random(0))
    text = fuzz._dumps({"a": deep, "b": 2})
    assert text.count("[") + text.count("{") > 5000 and text.endswith(', "b": 2}')


def test_the_value_pool_is_never_shared_between_cases():
    pool = json.dumps(fuzz._VALUES[:-1])
    for index in range(300):
        config = {"config": {"layers": [{"class_name": "Dense", "config": {"units": 3, "x": [1, 2]}}]}}
        for _ in range(3):
            fuzz.mutate_json(config, random.Random(index))
    assert json.dumps(fuzz._VALUES[:-1]) == pool


def test_mutate_bytes_changes_the_data():
    data = bytes(range(256)) * 4
    for index in range(20):
        out, what = fuzz.mutate_bytes(data, random.Random(index))
        assert out != data, what


def test_crc_of_a_repeated_chunk_matches_zlib():
    chunk = b"ab c" * 1000
    for times in (1, 2, 7):
        assert fuzz._crc32_repeat(chunk, times) == zlib.crc32(chunk * times)


def test_a_bomb_member_inflates_to_its_declared_size(tmp_path, monkeypatch):
    monkeypatch.setattr(fuzz, "_BOMB_BYTES", 2 << 26)  # 128 MiB: small enough to check here
    path = tmp_path / "bomb.keras"
    path.write_bytes(fuzz._bomb_zip({"metadata.json": b"{}", "config.json": b"{}"}, "config.json"))
    assert path.stat().st_size < (1 << 20)
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo("config.json").file_size == 2 << 26
        with zf.open("config.json") as member:
            total = 0
            while chunk := member.read(1 << 24):
                total += len(chunk)
        assert total == 2 << 26  # and the CRC was checked at the end of the read
        assert zf.read("metadata.json") == b"{}"


# ---- the harness classifies what it sees: a target per behaviour, run in a real worker
def behave(case: fuzz.Case, progress: dict) -> list[str]:
    """A stand-in for ``exercise``: case 0 loads, 1 hangs, 2 exhausts memory, 3 raises a KeyError,
    4 a typed error, 5 kills its process."""
    action = case.index
    if action == 1:
        time.sleep(600)
    if action == 2:
        return [str(len(bytearray(16 << 30)))]  # 16 GiB, far above the bound
    if action == 3:
        raise KeyError("missing")
    if action == 4:
        raise InputError("typed")
    if action == 5:
        os._exit(7)
    return []


def test_harness_classifies_hangs_memory_untyped_typed_and_crashes():
    outcomes = fuzz.run_cases(range(6), seed=0, timeout=3.0, mem_gb=MEM_GB, jobs=1, target="tests.test_fuzz:behave")
    kinds = [o.kind for o in outcomes]
    assert kinds == ["clean", "hang", "memory", "untyped", "typed", "crash"], fuzz.summarize(outcomes)
    assert "test_fuzz.py" in outcomes[1].site  # where it hung, from the dump taken before the kill
    assert outcomes[3].error == "KeyError" and "test_fuzz.py" in outcomes[3].site
    assert outcomes[4].error == "InputError"
    summary = fuzz.summarize(outcomes)
    assert "hang" in summary and "KeyError" in summary and "FAILURES" in summary


def test_a_file_that_reads_outside_itself_must_not_load(tmp_path):
    seeds = fuzz.discover_seeds()
    case = fuzz.Case(0, seeds[0].name, "unsafe stand-in", Path(seeds[0].path), expect_refused=True)
    outcome = fuzz.run_one(case)
    assert outcome.kind == "unsafe"


def test_reader_findings_list_reader_sites_only():
    outcomes = [
        fuzz.Outcome(1, "a.h5", "raw", "untyped", "load", "KeyError", "converters/readers/graph.py:10"),
        fuzz.Outcome(2, "a.h5", "json", "untyped", "load", "TypeError", "converters/core.py:5"),
        fuzz.Outcome(3, "a.h5", "raw", "hang", "load", "timeout", ""),
    ]
    text = fuzz.reader_findings(outcomes, seed=3)
    assert "graph.py:10" in text and "hang" in text and "core.py" not in text
    assert "--replay 1 --seed 3" in text
