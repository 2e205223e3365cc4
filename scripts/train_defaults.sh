#!/usr/bin/env bash
# Trains the two default recipes (UTKFace, then FairFace) into runs/, resuming whatever was interrupted.
# Usage: bash scripts/train_defaults.sh [extra faceattr train options]
set -euo pipefail
cd "$(dirname "$0")/.."
faceattr -q train -c configs/utkface.yaml --resume "$@"
faceattr -q train -c configs/fairface.yaml --resume "$@"
