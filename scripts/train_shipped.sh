#!/usr/bin/env bash
# Trains the shipped model's recipe (configs/utkface-fairface-official.yaml) into runs/, resuming what was
# interrupted, then builds src/faceattr/weights/ from it. Needs the 40,000-photo FairFace set in
# data/fairface-official (scripts/get_fairface.py) and ../shared. The recipe starts from the first shipped model,
# taken from git history (commit 78569e6) into runs/init/.
# Usage: bash scripts/train_shipped.sh [extra faceattr train options]
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs/init
if [ ! -s runs/init/shipped-v1.safetensors ]; then
  for f in safetensors json; do
    git show "78569e6:src/faceattr/weights/faceattr-utkface-fairface-mobilenetv2.$f" > "runs/init/shipped-v1.$f.tmp"
    mv "runs/init/shipped-v1.$f.tmp" "runs/init/shipped-v1.$f"
  done
fi
faceattr train -c configs/utkface-fairface-official.yaml --resume "$@"
python scripts/build_shipped_model.py
