"""Analysis of gates and activations: one-pass statistics, plots, the HTML report, LSTMVis export.

Plots need matplotlib (``pip install 'torch-lstm-probe[plots]'``); it is imported only when a plot is drawn.
"""

from __future__ import annotations

from . import plots
from .gate_stats import gate_stats
from .lstmvis import LSTMVisExport, export_lstmvis
from .stats import GateStats, StatsAccumulator
from .vocab import Vocabulary, load_vocabulary, read_text_lines, text_tokens

__all__ = [
    "gate_stats",
    "GateStats",
    "StatsAccumulator",
    "plots",
    "export_lstmvis",
    "LSTMVisExport",
    "Vocabulary",
    "load_vocabulary",
    "read_text_lines",
    "text_tokens",
]
