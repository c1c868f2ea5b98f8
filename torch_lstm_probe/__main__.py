"""``python -m torch_lstm_probe``: the same command line as the ``torch-lstm-probe`` script."""

from __future__ import annotations

import sys

from .cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
