"""Capture of layer outputs and gates: the probe-key grammar, capture plans and sinks."""

from __future__ import annotations

from .keys import KEY_GRAMMAR, key_meaning, key_table, matches
from .plan import CapturePlan, Target, plan_capture, run_plan
from .sinks import DictSink

__all__ = [
    "KEY_GRAMMAR",
    "key_meaning",
    "key_table",
    "matches",
    "CapturePlan",
    "Target",
    "plan_capture",
    "run_plan",
    "DictSink",
]
