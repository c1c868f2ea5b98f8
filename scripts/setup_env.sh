#!/usr/bin/env bash
# Creates .venv and installs the package. Usage: bash scripts/setup_env.sh [extra]
#   extra "test" also installs pytest, TensorFlow, tf_keras and Keras 3.
# torch is pinned first: on machines that carry a local CPU wheel this avoids a multi-GB CUDA
# download; the package itself accepts any torch 2.x.
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0" 2>&1 | grep -v "is ignored" || true
if [ -n "$extra" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extra]" 2>&1 | grep -v "is ignored" || true
else
  .venv/bin/python -m pip install -q --disable-pip-version-check -e . 2>&1 | grep -v "is ignored" || true
fi
.venv/bin/python -c "import torch_lstm_probe, converters" 
