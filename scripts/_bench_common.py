"""Shared helpers for the benchmarks: thread pinning, timing, and the scaled-up seed model."""

from __future__ import annotations

import os
import statistics
import time
from typing import Any, Callable


def pin_threads(threads: int) -> None:
    """Pins every math library to ``threads`` threads (call before importing TF)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import torch

    torch.set_num_threads(threads)


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``fn`` in seconds over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median wall time of each function, timed round-robin so that drift on a shared machine
    (frequency, other processes, allocator state) hits every contender alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def build_seed_model(keras, vocab: int = 20000, dim: int = 100, units: int = 256, steps: int = 100):
    """The README's sentence classifier scaled up: Embedding → LSTM(seq) → LSTM → Dense(1)."""
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((steps,), dtype="int32"),
            layers.Embedding(vocab, dim, name="embedding"),
            layers.LSTM(units, return_sequences=True, name="lstm_1"),
            layers.LSTM(units, name="lstm_2"),
            layers.Dense(1, activation="sigmoid", name="head"),
        ]
    )
    return model


SEED_VOCAB = 20000


def seed_config(steps: int, units: int, dim: int = 100, mask_zero: bool = False, recurrent: str = "LSTM") -> dict:
    """The scaled-up seed model's spec: Embedding → LSTM(seq) → LSTM → Dense(1), the recurrent layers
    named ``lstm_1`` and ``lstm_2`` (``gru_1``/``gru_2`` with ``recurrent="GRU"``)."""
    one, two = f"{recurrent.lower()}_1", f"{recurrent.lower()}_2"
    first = {"input_size": dim, "hidden_size": units, "return_sequences": True}
    second = {"input_size": units, "hidden_size": units}
    if recurrent == "GRU":  # Keras 2.3+ / Keras 3 default, the layout nn.GRU computes
        first["reset_after"] = second["reset_after"] = True
    embedding = {"num_embeddings": SEED_VOCAB, "embedding_dim": dim, "mask_zero": mask_zero}
    return {
        "name": "seed_scaled",
        "inputs": [{"name": "tokens", "shape": [None, steps], "dtype": "int32"}],
        "layers": [
            {"name": "embedding", "type": "Embedding", "config": embedding},
            {"name": one, "type": recurrent, "config": first},
            {"name": two, "type": recurrent, "config": second},
            {
                "name": "head",
                "type": "Dense",
                "config": {"in_features": units, "out_features": 1, "activation": "sigmoid"},
            },
        ],
        "nodes": [
            {"layer": "embedding", "inputs": [["tokens", 0, 0]]},
            {"layer": one, "inputs": [["embedding", 0, 0]]},
            {"layer": two, "inputs": [[one, 0, 0]]},
            {"layer": "head", "inputs": [[two, 0, 0]]},
        ],
        "outputs": [["head", 0, 0]],
    }


def scaled_seed_model(steps: int, units: int, device: str, dim: int = 100) -> Any:
    """The scaled-up seed model (Embedding → LSTM(seq) → LSTM → Dense(1)) built directly, Keras-like init."""
    import torch
    from torch import nn

    from torch_lstm_probe.model import KerasModel

    torch.manual_seed(0)
    model = KerasModel(seed_config(steps, units, dim))
    for lstm in (model.layer("lstm_1"), model.layer("lstm_2")):
        for name, p in lstm.named_parameters():
            nn.init.uniform_(p, -0.08, 0.08) if "weight" in name else nn.init.uniform_(p, -0.1, 0.1)
    return model.to(device).eval()
