"""``faceattr predict``: photos to JSON lines or CSV, and annotated images; the options shared with other commands."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
from pathlib import Path
from typing import IO, Any

from faceattr.runtime.policy import RUNTIMES

log = logging.getLogger("faceattr")


def example_photo() -> Path:
    """The example photo shipped in the package: scikit-image's 'astronaut' (Eileen Collins, NASA, public domain)
    (``faceattr/examples/README.md``)."""
    p = Path(__file__).parent.parent / "examples" / "astronaut.png"
    if not p.is_file():
        raise FileNotFoundError(f"the example photo is missing from this installation: {p}")
    return p


def detector_option(a: argparse.Namespace) -> Any:
    """The command's detector options (``--detector``, ``--yunet-model``, ``--min-score``) as one DetectorSpec."""
    from faceattr.vision.detect import DetectorSpec

    return DetectorSpec(a.detector, getattr(a, "yunet_model", None), getattr(a, "min_score", None))


def add_tta_flip_arg(p: argparse.ArgumentParser, model_option: str) -> None:
    """``--tta-flip/--no-tta-flip``, unset by default (:func:`faceattr.runtime.policy.shipped_or` resolves it)."""
    p.add_argument(
        "--tta-flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average every face with its mirror image, both in one batch (default: on for the shipped model, its "
        "measured default path, where on a CPU without VNNI only the faces whose gender is uncertain get it; off "
        f"for {model_option})",
    )


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        help="a shipped model's name (faceattr models), a checkpoint (.safetensors + .json, or run folder) or an "
        ".onnx file; default: the default shipped model",
    )
    p.add_argument("--threads", type=int, help="CPU threads for inference")
    p.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="auto",
        help="for the shipped model: auto (default: onnx-int8 where the CPU has int8 dot products, VNNI on x86, "
        "else onnx; measured with flip TTA), onnx-int8 (INT8 onnxruntime), onnx (float32 onnxruntime: the torch "
        "model's outputs) or torch",
    )


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="estimate age, gender and race of every face in photos",
        description="Estimate age, gender and race of every face in photos. The default model "
        "(faceattr-utkface-fairface-mobilenetv2) is licensed for non-commercial research only: it was trained on "
        "UTKFace, whose terms bind its use. `faceattr models` lists the shipped models and their licences.",
    )
    p.add_argument("paths", nargs="*", help="image files, folders or glob patterns")
    p.add_argument("--example", action="store_true", help="run on the bundled example photo")
    _add_model_args(p)
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    p.add_argument("--out", "-o", "--output", "-O", dest="output", help="write results here instead of standard output")
    p.add_argument("--draw", metavar="DIR", help="write annotated images into DIR")
    p.add_argument("--no-detect", action="store_true", help="inputs are already face crops: no detection/alignment")
    p.add_argument(
        "--detector",
        default="auto",
        help="auto | yunet-ort | yuface | dlib | dlib-cnn | yunet | yunet-dlib (auto: yunet if a YuNet file is given, "
        "else yunet-ort, the YuNet network shipped with faceattr, on onnxruntime)",
    )
    p.add_argument("--yunet-model", help="OpenCV YuNet ONNX file (enables --detector yunet)")
    p.add_argument("--max-pixels", type=int, default=64_000_000, help="refuse images larger than this")
    p.add_argument("--batch-size", type=int, default=32)
    add_tta_flip_arg(p, "--model")
    p.add_argument(
        "--min-score",
        type=float,
        help="drop detections scored below this: dlib's SVM margin "
        "(default 0; 0.5 drops most false positives) or YuNet's confidence 0..1 (default 0.6)",
    )


CSV_FIELDS = ("file", "face", "x0", "y0", "x1", "y1", "score")


def _csv_rows(res: Any) -> list[dict[str, Any]]:
    """One CSV row per face (the flat columns of :func:`attribute_columns`), rounded as the JSON lines are."""
    from faceattr.runtime.results import attribute_columns

    rows = []
    base = {"file": res.source}
    if not res.faces:
        rows.append({**base, "face": "", "error": res.message})
    for i, f in enumerate(res.faces):
        row: dict[str, Any] = {**base, "face": i}
        if f.box is not None:
            row.update(zip(("x0", "y0", "x1", "y1"), [round(v, 1) for v in f.box]))
            row["score"] = round(f.score or 0.0, 4)
        for k, val in attribute_columns(f.attributes).items():
            row[k] = round(val, 4 if "_p_" in k else 2) if isinstance(val, float) else val
        rows.append(row)
    return rows


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(v: Any) -> Any:
    """A text cell a spreadsheet would run as a formula (``=HYPERLINK(...)`` in a file name, say) gets a leading
    apostrophe, as the OWASP guidance on CSV injection says; numbers are left as they are."""
    return "'" + v if isinstance(v, str) and v.startswith(FORMULA_START) else v


class _Writer:
    def __init__(self, fmt: str, stream: IO[str], task_cols: list[str]) -> None:
        self.fmt, self.stream = fmt, stream
        self._csv: csv.DictWriter | None = None
        self.task_cols = task_cols

    def write(self, res: Any = None, error: tuple[str, str] | None = None) -> None:
        if self.fmt == "jsonl":
            d = {"file": error[0], "error": error[1]} if error else res.to_dict()
            self.stream.write(json.dumps(d) + "\n")
        else:
            rows = [{"file": error[0], "error": error[1]}] if error else _csv_rows(res)
            if self._csv is None:
                self._csv = csv.DictWriter(
                    self.stream, fieldnames=list(CSV_FIELDS) + self.task_cols + ["error"], extrasaction="ignore"
                )
                self._csv.writeheader()
            self._csv.writerows([{k: csv_safe(v) for k, v in r.items()} for r in rows])
        self.stream.flush()


def _task_columns(pred: Any) -> list[str]:
    from faceattr.tasks.kinds import kind_of

    cols = []
    for t in pred.tasks:
        cols += [t.name, *kind_of(t).columns(t)]
    return cols


def _check_predict_args(a: argparse.Namespace) -> None:
    from faceattr.errors import check

    check(a.batch_size >= 1, f"--batch-size must be at least 1, got {a.batch_size}")
    check(a.threads is None or a.threads >= 1, f"--threads must be at least 1, got {a.threads}")
    check(a.max_pixels >= 1, f"--max-pixels must be at least 1, got {a.max_pixels}")
    check(a.min_score is None or math.isfinite(a.min_score), f"--min-score must be a number, got {a.min_score}")


def _run_predict(a: argparse.Namespace) -> int:
    """Validate everything, claim every output, then predict; outputs appear only when complete."""
    from contextlib import nullcontext

    from faceattr.errors import UsageError
    from faceattr.runtime.draw import draw_result, drawing_format
    from faceattr.runtime.files import find_image_paths
    from faceattr.runtime.predictor import Predictor
    from faceattr.safeio import OutputPlan, atomic_output, atomic_write_bytes
    from faceattr.vision.image import ImageError, load_image

    _check_predict_args(a)
    paths = list(a.paths)
    if not paths and not a.example:
        raise UsageError("give photos, folders or glob patterns to predict (or --example for the bundled photo)")
    if a.example:
        paths = [*paths, str(example_photo())]
    found = find_image_paths(paths)
    files = found.files
    if found.skipped:
        log.warning(
            "%d files skipped: not an image extension (%s)",
            len(found.skipped),
            ", ".join(map(str, found.skipped[:3])) + (" ..." if len(found.skipped) > 3 else ""),
        )
    if not files:
        raise UsageError(
            f"no image files in {', '.join(paths)}" + (" (only files of other types)" if found.skipped else "")
        )
    plan = OutputPlan(files)
    plan.add_input_dirs(p for p in paths if Path(p).is_dir())
    out_path = plan.claim_file(a.output, "--output") if a.output else None
    draw = plan.claim_dir(a.draw, "--draw") if a.draw else None
    draw_names = drawing_names(files) if draw else {}
    pred = Predictor.load(
        a.model,
        a.threads,
        runtime=a.runtime,
        detector=detector_option(a),
        batch_size=a.batch_size,
        max_pixels=a.max_pixels,
        tta_flip=a.tta_flip,
    )
    if not a.no_detect:
        pred.detector  # noqa: B018 - build it now: a missing detector is an error before any output exists
    from tqdm.auto import tqdm

    n_ok = n_bad = n_faces = 0
    if out_path is None and a.format == "csv":
        sys.stdout.reconfigure(errors="surrogateescape")  # type: ignore[union-attr]
    ctx = atomic_output(out_path, errors="surrogateescape") if out_path else nullcontext(sys.stdout)
    with ctx as out:
        writer = _Writer(a.format, out, _task_columns(pred))
        for f in tqdm(
            files, desc="photos", unit="img", disable=a.quiet or len(files) < 2, file=sys.stderr, mininterval=1.0
        ):
            try:
                rgb = load_image(f, a.max_pixels)
                res = pred.predict(rgb, detect=not a.no_detect, source=str(f))
            except ImageError as e:
                n_bad += 1
                log.warning("skipped %s", e)
                writer.write(error=(str(f), str(e)))
                continue
            n_ok += 1
            n_faces += len(res.faces)
            writer.write(res)
            if draw is not None:
                target = draw / draw_names[f]
                target.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(target, draw_result(rgb, res, fmt=drawing_format(target)))
    log.info("%d photos, %d faces, %d unreadable", n_ok, n_faces, n_bad)
    return 0 if n_ok else 1


def drawing_names(files: list[Path]) -> dict[Path, Path]:
    """Where ``--draw`` writes each photo, relative to its folder: the input's own name and relative folder for a
    JPEG or PNG (``a/x.jpg`` -> ``a/x.jpg``, drawn as JPEG), ``.png`` appended for other formats (``x.gif`` ->
    ``x.gif.png``); should two inputs meet on one name, every name gets its format's suffix appended."""
    from faceattr.safeio import unique_names

    names = unique_names(files, "")
    out = {
        f: n if n.suffix.lower() in (".jpg", ".jpeg", ".png") else n.with_name(n.name + ".png")
        for f, n in names.items()
    }
    if len(set(out.values())) < len(out):
        out = {
            f: n.with_name(n.name + (".jpg" if n.suffix.lower() in (".jpg", ".jpeg") else ".png"))
            for f, n in names.items()
        }
    return out
