"""``faceattr export`` (ONNX, INT8, TensorRT) and ``faceattr fit-alignment`` (alignment templates)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("faceattr")


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX (optionally INT8) or a TensorRT engine")
    p.add_argument("--model", help="checkpoint (default: the shipped model)")
    p.add_argument("--format", choices=["onnx", "tensorrt"], default="onnx")
    p.add_argument("--int8", action="store_true", help="also write an INT8 model (static quantization)")
    p.add_argument(
        "--calibration",
        help="DATASET:DIR whose training chips calibrate INT8 (needed with --int8), e.g. utkface:/data/UTKFace",
    )
    p.add_argument("--calibration-size", type=int, default=256)
    p.add_argument("--out", required=True, help="output .onnx (INT8 goes beside it as *.int8.onnx) or .engine")


def _run_export(a: argparse.Namespace) -> int:
    from faceattr.errors import check
    from faceattr.models.checkpoint import load_model, read_meta
    from faceattr.runtime.policy import SHIPPED_MODEL
    from faceattr.safeio import OutputPlan
    from faceattr.training.export import build_tensorrt_engine, calibration_chips_from, export_onnx, quantize_int8

    check(a.calibration_size >= 1, f"--calibration-size must be at least 1, got {a.calibration_size}")
    check(
        not a.int8 or bool(a.calibration), "--int8 needs --calibration DATASET:DIR (training chips to set the ranges)"
    )
    ckpt = a.model or SHIPPED_MODEL
    out = Path(a.out)
    check(
        a.format != "onnx" or out.suffix == ".onnx",
        f"--out {out}: the ONNX model's name must end in .onnx (e.g. {out.with_suffix('.onnx')})",
    )
    onnx_out = out if out.suffix == ".onnx" else out.with_suffix(".onnx")  # tensorrt: the ONNX beside the engine
    plan = OutputPlan([ckpt, Path(str(ckpt)).with_suffix(".json")])
    plan.claim_file(onnx_out, "--out")
    if a.int8:
        plan.claim_file(onnx_out.with_suffix(".int8.onnx"), "the INT8 model")
    if a.format == "tensorrt":
        plan.claim_file(out.with_suffix(".engine"), "the TensorRT engine")
    load_model(ckpt)  # a broken checkpoint is an error before anything is written
    report: dict[str, Any] = {}
    onnx_path = onnx_out
    export_onnx(ckpt, onnx_path)
    report["onnx"] = str(onnx_path)
    if a.int8:
        size = read_meta(ckpt).input_size
        chips = calibration_chips_from(a.calibration, size, a.calibration_size)
        q = quantize_int8(onnx_path, onnx_path.with_suffix(".int8.onnx"), chips)
        report["int8"] = str(q)
    if a.format == "tensorrt":
        report["tensorrt"] = str(build_tensorrt_engine(onnx_path, out.with_suffix(".engine")))
    print(json.dumps(report))
    return 0


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit-alignment",
        aliases=["calibrate"],
        help="measure a detector's landmark template on the training chips "
        "and store it in the checkpoint (needed for alignment; old name: calibrate)",
    )
    p.add_argument("--checkpoint", required=True)
    p.add_argument(
        "--data",
        help="DATASET:DIR whose training chips to measure (default: the training data "
        "recorded in the checkpoint's config, every dataset of a joint run included)",
    )
    p.add_argument("--detector", action="append", default=None, help="dlib | yunet (repeatable; default dlib)")
    p.add_argument("--yunet-model")
    p.add_argument("-n", type=int, default=400, help="training chips to measure")


def _run_calibrate(a: argparse.Namespace) -> int:
    from faceattr.training.templates import calibrate_checkpoint

    al = calibrate_checkpoint(a.checkpoint, a.detector or ["dlib"], a.yunet_model, a.data, a.n)
    print(json.dumps(al, indent=1))
    return 0
