#!/usr/bin/env bash
# Runs the claims grid of one dataset on a GPU machine that cannot see ../shared, in one go.
#   bash scripts/gpu/claims.sh utkface|fairface JOBS STOP_AFTER_S
# Needs (carried next to the checkout, git-ignored): .gpu/<dataset>.tar (made by scripts/gpu/pack_data.py, then
# `tar czf .gpu/<dataset>.tar -C .gpu/data <dataset>`) and .gpu/torch/hub/checkpoints/mobilenet_v2-b0353104.pth
# (torchvision's ImageNet file, hash-checked as on any machine). Finished runs land in results/claims-<dataset>/runs
# (copied to $OUT as a tarball when $OUT is set); runs still in flight when the machine goes are lost, and a
# rerun skips every finished one.
set -euo pipefail
cd "$(dirname "$0")/../.."
D=$1; JOBS=${2:-8}; STOP=${3:-240}
export PYTHONPATH=$PWD/src TORCH_HOME=$PWD/.gpu/torch FACEATTR_CACHE=/tmp/faceattr-cache PYTHONUNBUFFERED=1
export OMP_NUM_THREADS=2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
mkdir -p .gpu/data
[ -d .gpu/data/$D ] || tar xzf .gpu/$D.tar -C .gpu/data
# decode every split once (the parallel runs then share the cache instead of racing to build it)
python3 - "$D" <<'PY'
import sys, time
from faceattr.config import load_config
from faceattr.data.sources import load_split
from faceattr.data.dataset import make_tensor_dataset
t = time.time()
from faceattr.evidence.ablate import load_ablation
ab = load_ablation(f"configs/claims-{sys.argv[1]}.yaml")
base = load_config(ab.base, [f"data.root=.gpu/data/{sys.argv[1]}"])
for split in ("train", "val", "test"):
    table = load_split(base.data, split)
    make_tensor_dataset(table, base.data.image_size, None, progress=False)
print(f"caches built in {time.time() - t:.0f} s")
PY
(nvidia-smi dmon -s u -d 15 > /tmp/dmon.txt 2>&1 &) || true
set +e
python3 -m faceattr -q ablate -c configs/claims-$D.yaml --jobs "$JOBS" --stop-after "$STOP" --set data.root=.gpu/data/$D \
  2>&1 | grep -v "samples kept of" | tee /tmp/claims-$D.log | grep -E "ablation|error|Error|Traceback" | tail -60
rc=${PIPESTATUS[0]}
set -e
cat /tmp/dmon.txt | head -40 || true
if [ -n "${OUT:-}" ]; then
  tar czf "$OUT/claims-$D.tgz" results/claims-$D
  cp /tmp/claims-$D.log "$OUT/" || true
fi
exit $rc
