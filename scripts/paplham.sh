#!/usr/bin/env bash
# UTKFace age in Paplham et al.'s protocol, split K (0-4): the split file, the training run (resumable), the test.
# Usage: bash scripts/paplham.sh K [extra faceattr train options]
set -euo pipefail
cd "$(dirname "$0")/.."
K=${1:?split 0-4}
shift
S=${FACEATTR_SHARED:-../shared}
mkdir -p data
[ -s "data/paplham-$K.csv" ] || faceattr split "utkface:$S/data/utkface" --protocol "paplham:$K" -o "data/paplham-$K.csv"
faceattr train -c configs/utkface-paplham.yaml -o "name=utkface-paplham-$K" -o "data.split_file=data/paplham-$K.csv" \
  -o "data.root=$S/data/utkface" --resume "$@"
faceattr evaluate --model "runs/utkface-paplham-$K/best.safetensors" --data "utkface:$S/data/utkface" --split test \
  --split-file "data/paplham-$K.csv" -o "results/eval-utkface-paplham-$K"
