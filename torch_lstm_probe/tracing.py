"""Whether the current call is being traced (``torch.export``, ``torch.compile``, ``torch.jit``).

Under tracing, the runtime takes no branch that reads a tensor's values: eager-only checks
(token ranges) and shortcuts (right-padded masks) are skipped, and the same tensor code runs.
"""

from __future__ import annotations

import torch

__all__ = ["is_tracing"]


def is_tracing() -> bool:
    """True inside ``torch.export``/``torch.compile`` (Dynamo) or ``torch.jit`` tracing."""
    return bool(torch.compiler.is_compiling() or torch.jit.is_tracing())
