#!/usr/bin/env bash
# Runs (or resumes) both ablation grids and writes their tables under results/.
set -euo pipefail
cd "$(dirname "$0")/.."
faceattr -q ablate --config configs/ablation-utkface.yaml "$@"
faceattr -q ablate --config configs/ablation-fairface.yaml "$@"
