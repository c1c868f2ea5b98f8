"""Gate statistics in one streaming pass: per-unit moments, extremes, saturation, histograms and forget timescales.

Every statistic is taken over valid (unmasked) steps only. Batches are folded in as they come
(:class:`StatsAccumulator`), partial results merge exactly in any grouping (counts and sums,
and Chan et al.'s pairwise update for the variance), in float64, so a pass split over batches,
shards or ``torchrun`` ranks gives the one-pass figures up to float64 rounding.

Fields of ``stats[key]`` (each tensor float64 ``(units,)`` unless said otherwise):

* ``count`` (int), ``mean``, ``std`` (population), ``min``, ``max``;
* ``sat_low`` / ``sat_high``: fraction of steps below 0.1 / above 0.9, for sigmoid-valued gates
  (LSTM ``i f o``, GRU ``z r``);
* ``hist`` (int64 ``(bins,)``) over ``hist_edges``: every unit and step, values outside the range
  counted in the end bins;
* ``mean_by_step`` / ``count_by_step`` ``(T,)``: mean over units and valid samples at each step
  (processing order);
* LSTM forget gates: ``timescale``, the mean of ``-1 / ln f`` (the memory length in steps, f
  clamped to ``[1e-6, 1 - 1e-6]``), and ``timescale_hist`` over ``timescale_edges`` (log10 steps).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["GateStats", "StatsAccumulator", "SIGMOID_GATES", "gate_range"]

SIGMOID_GATES = {"LSTM": ("i", "f", "o"), "GRU": ("z", "r")}
HIST_BINS = 50
TIMESCALE_BINS = 40
TIMESCALE_RANGE = (0.0, 4.0)  # log10 steps: 1 to 10^4
_F_EPS = 1e-6
_SAT_LOW, _SAT_HIGH = 0.1, 0.9
_FLOAT_FIELDS = ("mean", "m2", "min", "max", "tau_sum", "step_sum")


def gate_range(cell: str | None, gate: str, activation: str | None = None) -> tuple[float, float]:
    """The fixed histogram range of a gate: [0, 1] for sigmoid gates, [-1, 1] for tanh values, else [-5, 5]."""
    if gate in SIGMOID_GATES.get(cell or "", ()):
        return 0.0, 1.0
    if activation == "tanh" and gate in ("g", "n", "h"):
        return -1.0, 1.0
    return -5.0, 5.0


class _Moments:
    """Per-unit count, mean, M2 (sum of squared deviations), min, max, and the other running sums of one key."""

    def __init__(self, units: int, lo: float, hi: float, sigmoid: bool, forget: bool) -> None:
        f64 = torch.float64
        self.count = 0
        self.mean = torch.zeros(units, dtype=f64)
        self.m2 = torch.zeros(units, dtype=f64)
        self.min = torch.full((units,), math.inf, dtype=f64)
        self.max = torch.full((units,), -math.inf, dtype=f64)
        self.lo, self.hi = lo, hi
        self.hist = torch.zeros(HIST_BINS, dtype=torch.int64)
        self.sigmoid, self.forget = sigmoid, forget
        self.low = torch.zeros(units, dtype=torch.int64)
        self.high = torch.zeros(units, dtype=torch.int64)
        self.tau_sum = torch.zeros(units, dtype=f64)
        self.tau_hist = torch.zeros(TIMESCALE_BINS, dtype=torch.int64)
        self.step_sum = torch.zeros(0, dtype=f64)
        self.step_count = torch.zeros(0, dtype=torch.int64)

    def add(self, value: torch.Tensor, valid: torch.Tensor | None) -> None:
        """Folds in one batch: ``value`` (N, T, H) in processing order, ``valid`` bool (N, T) or None."""
        v = value.detach().to(torch.float64)  # (N, T, H)
        if valid is None:
            valid = torch.ones(v.shape[:2], dtype=torch.bool, device=v.device)
        rows = v[valid]  # (K, H): every valid step
        k = rows.shape[0]
        per_step = (v * valid[..., None]).sum(dim=(0, 2))  # (T,)
        steps = valid.sum(dim=0).to(torch.int64) * v.shape[2]  # (T,) valid values per step
        self._add_steps(per_step.cpu(), steps.cpu())
        if k == 0:
            return
        mean = rows.mean(dim=0)  # (H,)
        m2 = ((rows - mean) ** 2).sum(dim=0)  # (H,)
        self._merge_moments(k, mean.cpu(), m2.cpu())
        self.min = torch.minimum(self.min, rows.amin(dim=0).cpu())
        self.max = torch.maximum(self.max, rows.amax(dim=0).cpu())
        self.hist += _histogram(rows, self.lo, self.hi, HIST_BINS).cpu()
        if self.sigmoid:
            self.low += (rows < _SAT_LOW).sum(dim=0).cpu()
            self.high += (rows > _SAT_HIGH).sum(dim=0).cpu()
        if self.forget:
            tau = -1.0 / torch.log(rows.clamp(_F_EPS, 1 - _F_EPS))  # (K, H) steps
            self.tau_sum += tau.sum(dim=0).cpu()
            self.tau_hist += _histogram(torch.log10(tau), *TIMESCALE_RANGE, TIMESCALE_BINS).cpu()

    def _add_steps(self, per_step: torch.Tensor, steps: torch.Tensor) -> None:
        t = max(self.step_sum.shape[0], per_step.shape[0])
        self.step_sum = _pad(self.step_sum, t) + _pad(per_step, t)
        self.step_count = _pad(self.step_count, t) + _pad(steps, t)

    def _merge_moments(self, k: int, mean: torch.Tensor, m2: torch.Tensor) -> None:
        """Chan, Golub and LeVeque's pairwise update of (count, mean, M2)."""
        n = self.count + k
        delta = mean - self.mean
        self.m2 = self.m2 + m2 + delta**2 * (self.count * k / n)
        self.mean = self.mean + delta * (k / n)
        self.count = n

    def merge(self, other: _Moments) -> None:
        if other.count:
            self._merge_moments(other.count, other.mean, other.m2)
        self.min = torch.minimum(self.min, other.min)
        self.max = torch.maximum(self.max, other.max)
        self.hist += other.hist
        self.low += other.low
        self.high += other.high
        self.tau_sum += other.tau_sum
        self.tau_hist += other.tau_hist
        self._add_steps(other.step_sum, other.step_count)

    def result(self) -> dict[str, Any]:
        n = self.count
        nan = torch.full_like(self.mean, math.nan)
        out: dict[str, Any] = {
            "count": n,
            "mean": self.mean.clone() if n else nan,
            "std": (self.m2 / n).sqrt() if n else nan,
            "min": self.min.clone() if n else nan,
            "max": self.max.clone() if n else nan,
            "hist": self.hist.clone(),
            "hist_edges": torch.linspace(self.lo, self.hi, HIST_BINS + 1, dtype=torch.float64),
            "mean_by_step": self.step_sum / self.step_count.clamp(min=1),
            "count_by_step": self.step_count.clone(),
        }
        if self.sigmoid:
            out["sat_low"] = self.low.to(torch.float64) / n if n else nan
            out["sat_high"] = self.high.to(torch.float64) / n if n else nan
        if self.forget:
            out["timescale"] = self.tau_sum / n if n else nan
            out["timescale_hist"] = self.tau_hist.clone()
            out["timescale_edges"] = torch.linspace(*TIMESCALE_RANGE, TIMESCALE_BINS + 1, dtype=torch.float64)
        return out


def _pad(t: torch.Tensor, length: int) -> torch.Tensor:
    return torch.cat([t, t.new_zeros(length - t.shape[0])]) if t.shape[0] < length else t


def _histogram(x: torch.Tensor, lo: float, hi: float, bins: int) -> torch.Tensor:
    """Counts of ``x`` in ``bins`` equal bins over [lo, hi], values outside clamped into the end bins."""
    index = ((x - lo) * (bins / (hi - lo))).floor().clamp(0, bins - 1).to(torch.int64)
    return torch.bincount(index.reshape(-1), minlength=bins)


class StatsAccumulator:
    """The statistics sink: folds in batches of gate values and merges with other partial results.

    Args:
        keys: gate key -> (cell kind, mask name or None, flip, activation name or None). ``flip``
            says the gate is in reversed time against its mask (``go_backwards``, backward halves).
    """

    def __init__(self, keys: Mapping[str, tuple[str | None, str | None, bool, str | None]]) -> None:
        self.keys = dict(keys)
        self._moments: dict[str, _Moments] = {}

    def add(self, values: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]) -> None:
        """One batch: ``values`` gate key -> (N, T, H); ``masks`` mask name -> bool (N, T), input order."""
        for key, (cell, mask_name, flip, activation) in self.keys.items():
            value = values[key]
            valid = masks.get(mask_name) if mask_name is not None else None
            if valid is not None and flip:
                valid = valid.flip(1)
            moments = self._moments.get(key)
            if moments is None:
                gate = key.rsplit("/", 1)[1]
                lo, hi = gate_range(cell, gate, activation)
                sigmoid = gate in SIGMOID_GATES.get(cell or "", ())
                moments = _Moments(value.shape[-1], lo, hi, sigmoid, cell == "LSTM" and gate == "f")
                self._moments[key] = moments
            moments.add(value, valid)

    def merge(self, other: StatsAccumulator) -> None:
        for key, moments in other._moments.items():
            if key in self._moments:
                self._moments[key].merge(moments)
            else:
                self._moments[key] = moments

    def state(self) -> dict[str, Any]:
        """The partial result as plain JSON (exact: floats round-trip), e.g. one shard's or one rank's."""
        moments = {}
        for key, m in self._moments.items():
            moments[key] = {
                name: (value.tolist() if isinstance(value, torch.Tensor) else value) for name, value in vars(m).items()
            }
        return {"keys": [[k, list(v)] for k, v in self.keys.items()], "moments": moments}  # keys in order

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> StatsAccumulator:
        acc = cls({k: tuple(v) for k, v in state["keys"]})  # type: ignore[misc]
        for key, fields in state["moments"].items():
            m = _Moments.__new__(_Moments)
            for name, value in fields.items():
                if isinstance(value, list):
                    kind = torch.float64 if name in _FLOAT_FIELDS else torch.int64
                    value = torch.tensor(value, dtype=kind)
                setattr(m, name, value)
            acc._moments[key] = m
        return acc

    def result(self) -> GateStats:
        cells = {key: spec[0] or "" for key, spec in self.keys.items()}
        return GateStats({key: self._moments[key].result() for key in self.keys if key in self._moments}, cells)


class GateStats(Mapping[str, dict]):
    """Gate statistics by gate key (see the module docstring for the fields)."""

    def __init__(self, entries: Mapping[str, dict], cells: Mapping[str, str] | None = None) -> None:
        self._entries = dict(entries)
        self.cells = {k: (cells or {}).get(k, "") for k in self._entries}

    def __getitem__(self, key: str) -> dict:
        return self._entries[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def layers(self) -> dict[str, str]:
        """Gate key -> the layer (or Bidirectional half) it belongs to, e.g. ``"bi/backward"``."""
        return {k: k.rsplit("/gates/", 1)[0] for k in self._entries}

    def __repr__(self) -> str:
        return f"GateStats({len(self)} gate keys: {', '.join(list(self)[:6])}{', ...' if len(self) > 6 else ''})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: tensors as lists, NaN as None."""

        def plain(v: Any) -> Any:
            if isinstance(v, torch.Tensor):
                return [None if isinstance(x, float) and math.isnan(x) else x for x in v.tolist()]
            return v

        return {
            "cells": dict(self.cells),
            "order": list(self._entries),
            "stats": {k: {f: plain(v) for f, v in e.items()} for k, e in self._entries.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateStats:
        entries = {}
        order = data.get("order") or list(data["stats"])
        for key in order:
            fields = data["stats"][key]
            entry: dict[str, Any] = {}
            for name, value in fields.items():
                if name == "count":
                    entry[name] = int(value)
                else:
                    kind = torch.int64 if name in ("hist", "timescale_hist", "count_by_step") else torch.float64
                    entry[name] = torch.tensor([math.nan if x is None else x for x in value], dtype=kind)
            entries[key] = entry
        return cls(entries, data.get("cells", {}))

    def save(self, path: str | Path) -> None:
        """Writes the statistics as JSON (byte-stable)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> GateStats:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
