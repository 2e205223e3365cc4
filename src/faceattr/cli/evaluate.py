"""``faceattr evaluate``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from faceattr.cli.predict import add_tta_flip_arg


def output_plan(checkpoint: str, data: str) -> Any:
    """The outputs of a command that reads a model and a dataset: never the model, never inside the data's folder
    (a report among the photos would become a photo of the next run, or replace a file of the dataset)."""
    from faceattr.data.spec import parse_data_spec
    from faceattr.safeio import OutputPlan

    plan = OutputPlan([checkpoint])
    plan.add_input_dirs([parse_data_spec(data).root])
    return plan


def _add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a checkpoint or ONNX model on a dataset split")
    p.add_argument(
        "--checkpoint",
        help="checkpoint (.safetensors with its .json, or a run folder) or .onnx file (float32 or INT8, run by "
        "onnxruntime as faceattr predict runs it); default: the shipped model on faceattr predict's default path "
        "(INT8 ONNX with flip TTA)",
    )
    p.add_argument("--data", required=True, help="utkface:DIR | fairface:DIR | manifest:CSV")
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    p.add_argument(
        "--split-file",
        help="the protocol's split file (faceattr split writes one, e.g. --protocol paplham:K) instead of the "
        "dataset's own protocol",
    )
    p.add_argument("--limit", type=int, help="evaluate a seeded subset of this many faces")
    add_tta_flip_arg(p, "--model")
    p.add_argument(
        "--label-map",
        help="map the data's labels onto the model's: YAML '{race: {East Asian: Asian}}' "
        "or an experiment config with data.extra label maps",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    p.add_argument("--out", help="folder to write report.md and metrics.json")


def _run(a: argparse.Namespace) -> int:
    from faceattr.errors import check
    from faceattr.evidence.evaluate import evaluate_checkpoint, parse_label_map, report_markdown
    from faceattr.runtime.policy import shipped_or
    from faceattr.safeio import atomic_output

    check(a.limit is None or a.limit >= 1, f"--limit must be at least 1, got {a.limit}")
    checkpoint, flip = shipped_or(a.checkpoint, a.tta_flip)
    out = output_plan(checkpoint, a.data).claim_dir(a.out, "--out") if a.out else None
    lm = parse_label_map(a.label_map, a.data.split(":", 1)[0])
    data: Any = a.data
    if a.split_file:
        import dataclasses

        from faceattr.data.spec import parse_data_spec

        data = dataclasses.replace(parse_data_spec(a.data), split_file=a.split_file)
    res = evaluate_checkpoint(
        checkpoint, data, a.split, limit=a.limit, tta_flip=flip, progress=not a.quiet, label_map=lm
    )
    if a.split_file:
        res["split_file"] = a.split_file
    md = report_markdown(res)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in (("metrics.json", json.dumps(res, indent=1)), ("report.md", md)):
            with atomic_output(out / name) as f:
                f.write(text)
    print(json.dumps(res, indent=1) if a.json else md)
    return 0


def _add_fit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit-calibration",
        help="fit the printed probabilities (temperature) and age intervals (split conformal) on held-out data",
    )
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", help="DATASET:DIR to fit on (default: the checkpoint's own validation split)")
    p.add_argument("--split", default="val", choices=["val", "test", "train"])
    p.add_argument("--label-map", help="as for faceattr evaluate")


def _run_fit(a: argparse.Namespace) -> int:
    from faceattr.evidence.evaluate import fit_calibration, parse_label_map

    lm = parse_label_map(a.label_map, a.data.split(":", 1)[0]) if a.data else None
    print(json.dumps(fit_calibration(a.checkpoint, a.data, a.split, lm), indent=1))
    return 0
