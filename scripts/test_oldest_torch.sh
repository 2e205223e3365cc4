#!/usr/bin/env bash
# The oldest torch faceattr supports (pyproject: torch >= 2.4, torchvision >= 0.19), tested: a venv at VENV
# (default /tmp/faceattr-torch24) that sees this machine's packages (faceattr, onnxruntime, ...) but has its own
# torch 2.4.1 + torchvision 0.19.1 in front of them, then the whole test suite with that torch.
# Downloads ~5 GB from PyPI (the CUDA build with its nvidia packages; it runs on the CPU) and takes ~15 min on
# 2 cores. Run scripts/install.sh first. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-/tmp/faceattr-torch24}
if [ ! -x "$VENV/bin/python" ]; then
  python -m venv --system-site-packages "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "torch==2.4.1" "torchvision==0.19.1"
"$VENV/bin/python" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
