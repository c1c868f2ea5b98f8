#!/usr/bin/env bash
# Creates .venv and installs the package. Usage: bash scripts/setup_env.sh [extra]
#   extra "test" also installs pytest, TensorFlow, tf_keras, Keras 3, Ray Data, matplotlib, Captum and ONNX (Runtime).
# torch is pinned first: on machines that carry a local CPU wheel this avoids a multi-GB CUDA
# download; the package itself accepts any torch 2.x.
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
pip_install() {
  local log
  log=$(mktemp)
  if ! .venv/bin/python -m pip install -q --disable-pip-version-check "$@" >"$log" 2>&1; then
    grep -v "is ignored" "$log" >&2
    rm -f "$log"
    echo "pip install $* failed" >&2
    exit 1
  fi
  rm -f "$log"
}
pip_install "torch==2.13.0"
if [ -n "$extra" ]; then
  pip_install -e ".[$extra]"
else
  pip_install -e .
fi
.venv/bin/python -c "import torch_lstm_probe, torch_lstm_probe.converters"
