"""Build the model shipped in src/faceattr/weights/ from a trained run (default:
runs/utkface-fairface-official-mtl/best, the recipe configs/utkface-fairface-official.yaml).

    python scripts/build_shipped_model.py [--run runs/utkface-fairface-official-mtl]
        [--data utkface:../shared/data/utkface] [--also fairface:data/fairface-official] [--out-dir DIR]
        [--name NAME]

``--out-dir`` builds a candidate elsewhere (same file names), to be measured before it replaces the shipped one.
``--name`` builds another shipped model (``NAME.safetensors``, ``.json``, ``.onnx``, ``.int8.onnx``), e.g. the
licence-clean one: ``--run runs/fairface-licence-clean --data fairface:data/fairface-official --also ''
--name faceattr-fairface-mobilenetv2``.

Stores the weights as float16 safetensors (the file must stay under 15 MB), measures the dlib (and, when its
file is given, YuNet) alignment templates on the run's own training chips, fits the calibration of the printed
probabilities and intervals on the run's own validation split (faceattr fit-calibration), evaluates the stored
weights on the test split of ``--data`` (and of ``--also``, its labels mapped as in the run's config) and writes the
test metrics into the metadata, and writes the float32 ONNX model (weights stored as float16, exact) and the INT8
one beside it. Every step is a faceattr function; nothing is typed in.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from faceattr.evidence.evaluate import config_label_map, evaluate_checkpoint, fit_calibration
from faceattr.models.checkpoint import load_model, read_meta, save_model, write_meta
from faceattr.runtime.policy import SHIPPED_INT8, SHIPPED_MODEL, SHIPPED_ONNX
from faceattr.tasks.metrics import headline
from faceattr.training.export import calibration_chips_from, export_onnx, quantize_int8
from faceattr.training.templates import calibrate_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="runs/utkface-fairface-official-mtl")
    ap.add_argument("--data", default="utkface:../shared/data/utkface")
    ap.add_argument(
        "--also",
        default="fairface:data/fairface-official",
        help="a second test set ('' for none; FairFace: official val)",
    )
    ap.add_argument("--yunet-model", default="../shared/models/face_detection_yunet.onnx")
    ap.add_argument("--out-dir", type=Path, help="build a candidate here instead of src/faceattr/weights/")
    ap.add_argument("--name", help="file names of another shipped model (default: the default model's)")
    a = ap.parse_args()
    ckpt, onnx_f32, onnx_int8 = SHIPPED_MODEL, SHIPPED_ONNX, SHIPPED_INT8
    if a.name:
        ckpt, onnx_f32, onnx_int8 = (
            SHIPPED_MODEL.with_name(f"{a.name}{suffix}") for suffix in (".safetensors", ".onnx", ".int8.onnx")
        )
    if a.out_dir:
        a.out_dir.mkdir(parents=True, exist_ok=True)
        ckpt, onnx_f32, onnx_int8 = (a.out_dir / p.name for p in (ckpt, onnx_f32, onnx_int8))
    src = Path(a.run) / "best.safetensors"
    model, meta = load_model(src)
    extra = {k: v for k, v in meta.extra.items() if k not in ("dtype", "val_metrics")}
    extra["source_run"] = {"run": a.run, "epoch": meta.extra.get("epoch"), "val_metrics": meta.extra.get("val_metrics")}
    save_model(ckpt, model, meta.replace(extra=extra), half=True)
    dets = ["dlib"] + (["yunet", "yunet-dlib"] if Path(a.yunet_model).is_file() else [])
    calibrate_checkpoint(ckpt, dets, a.yunet_model if len(dets) > 1 else None, n=400)
    fit_calibration(ckpt)  # temperatures + conformal age intervals, on the run's own validation split
    res = evaluate_checkpoint(ckpt, a.data, "test")
    meta = read_meta(ckpt)
    add = {"test_metrics": {"data": res["data"], "split": "test", "n": res["n"], **headline(res["metrics"])}}
    if a.also:
        res2 = evaluate_checkpoint(
            ckpt, a.also, "test", label_map=config_label_map(meta.extra["config"], a.also.split(":", 1)[0])
        )
        add["test_metrics_also"] = {
            "data": res2["data"],
            "split": "test",
            "n": res2["n"],
            "label_map": res2["label_map"],
            **headline(res2["metrics"]),
        }
    write_meta(ckpt, meta.with_extra(**add))
    # the default runtime's model: the same weights as float32 ONNX (onnxruntime; no torch needed), and INT8
    # (calibrated as benchmarks/edge.py does) for the fastest runtime and batch jobs
    # float32 arithmetic from float16-stored weights (lossless: the checkpoint is float16), 11 MB instead of 22
    export_onnx(ckpt, onnx_f32, compact=True)
    chips = calibration_chips_from(a.data, meta.input_size, 256)
    with tempfile.TemporaryDirectory() as tmp:  # INT8 quantizes the batch-norm-folded graph
        quantize_int8(export_onnx(ckpt, Path(tmp) / "fp32.onnx"), onnx_int8, chips)
    print(json.dumps(add, indent=1))
    print(f"{ckpt}: {ckpt.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
