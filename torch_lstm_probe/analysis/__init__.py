"""Analysis of gates and activations: one-pass statistics, plots, the HTML report, LSTMVis export."""

from __future__ import annotations

from .gate_stats import gate_stats
from .stats import GateStats, StatsAccumulator

__all__ = ["gate_stats", "GateStats", "StatsAccumulator"]
