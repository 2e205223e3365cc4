"""``faceattr evaluate``: a checkpoint or ONNX model on a dataset split -> metrics as JSON and a markdown report."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from faceattr.config import DataConfig
from faceattr.data.combine import level_map
from faceattr.data.dataset import TensorDataset, make_tensor_dataset
from faceattr.data.readers import DataError, SampleTable
from faceattr.data.sources import load_split
from faceattr.data.spec import parse_data_spec
from faceattr.evidence import report
from faceattr.models.checkpoint import CheckpointError, load_model
from faceattr.runtime.meta import ModelMeta
from faceattr.runtime.tta import FlipMode, flip_words
from faceattr.tasks.decode import decode_outputs
from faceattr.tasks.metrics import compute_metrics
from faceattr.tasks.task import MISSING, Task

log = logging.getLogger(__name__)


def align_labels(
    table: SampleTable, model_tasks: Sequence[Task], label_map: dict[str, dict[str, Any]] | None = None
) -> dict[str, np.ndarray]:
    """Labels of the table re-indexed into the model's tasks (by label name, or as ``label_map[task]`` says,
    e.g. FairFace's seven races folded into UTKFace's five); labels that match nothing become missing."""
    label_map = label_map or {}
    out: dict[str, np.ndarray] = {}
    by = {t.name: t for t in table.tasks}
    model_by = {t.name: t for t in model_tasks}
    for name, mapping in label_map.items():  # a typo in a label map is an error, never a silent drop
        if name not in model_by or name not in by:
            raise DataError(
                f"label map names task {name!r}, which the model ({list(model_by)}) or the data "
                f"({list(by)}) does not have"
            )
        level_map(by[name], model_by[name], mapping, strict=False)
    for mt in model_tasks:
        if mt.name not in by:
            continue
        dt = by[mt.name]
        if dt.labels == mt.labels:
            out[mt.name] = table.frame[mt.name].to_numpy(np.int64)
            continue
        if mt.kind == "ordinal" and dt.kind == "ordinal":
            # e.g. exact ages evaluated by a model of other levels: map by value to the nearest level
            mv = np.asarray(mt.values)
            vals = np.asarray(dt.values)
            lab = table.frame[mt.name].to_numpy(np.int64)
            out[mt.name] = np.where(lab == MISSING, MISSING, np.abs(mv[None, :] - vals[lab][:, None]).argmin(1))
            continue
        m = level_map(dt, mt, label_map.get(mt.name), strict=False)
        lut = np.array([m[i][0] if i in m else MISSING for i in range(dt.num_classes)] + [MISSING], np.int64)
        lab = table.frame[mt.name].to_numpy(np.int64)
        out[mt.name] = lut[lab]  # MISSING (-1) indexes the trailing MISSING
        unmatched = sorted({str(dt.labels[v]) for v in np.unique(lab) if v != MISSING and v not in m})
        if unmatched:
            log.warning(
                "%s: labels %s match no class of the model; those samples are left out (map them with --label-map)",
                mt.name,
                unmatched,
            )
    return out


def split_data(
    data: str | DataConfig,
    split: str,
    meta: ModelMeta,
    limit: int | None = None,
    label_map: dict[str, dict[str, Any]] | None = None,
    progress: bool = False,
) -> tuple[DataConfig, SampleTable, dict[str, np.ndarray], TensorDataset]:
    """A dataset split at the model's input size: (data config, samples, labels in the model's tasks, images)."""
    cfg = data if isinstance(data, DataConfig) else parse_data_spec(data)
    cfg = dataclasses.replace(cfg, image_size=meta.input_size)
    table = load_split(cfg, split, limit)
    labels = align_labels(table, meta.tasks, label_map)
    if not labels:
        raise CheckpointError(f"the checkpoint's tasks {list(meta.task_names)} do not occur in {cfg.dataset}")
    ds = make_tensor_dataset(table, cfg.image_size, Path(cfg.cache_dir) if cfg.cache_dir else None, progress)
    if len(ds) != len(table):  # unreadable images dropped
        raise CheckpointError("some evaluation images are unreadable; see the log")
    return cfg, table, labels, ds


def open_model(
    checkpoint: str | Path, device: str = "cpu"
) -> tuple[ModelMeta, Callable[[TensorDataset, int, FlipMode], dict[str, np.ndarray]]]:
    """A torch checkpoint or an ONNX file (``.onnx``: float32 or INT8, run by onnxruntime as the Predictor runs
    it), ready to run on a dataset: (its metadata, ``outputs(images, batch_size, tta_flip)`` -> raw outputs)."""
    from faceattr.runtime.backends import backend_for, open_backend
    from faceattr.training.inference import onnx_outputs, predict_outputs

    if backend_for(checkpoint) != "torch":
        backend = open_backend(checkpoint, torch.get_num_threads())
        return backend.meta, lambda ds, bs, flip: onnx_outputs(backend, ds, bs, flip)
    model, meta = load_model(checkpoint)
    model = model.to(device)
    return meta, lambda ds, bs, flip: predict_outputs(
        model, ds, bs, meta.mean, meta.std, flip, meta.tasks, meta.calibration
    )


def checkpoint_predictions(
    checkpoint: str | Path,
    data: str | DataConfig,
    split: str = "test",
    *,
    limit: int | None = None,
    batch_size: int = 256,
    tta_flip: FlipMode = False,
    progress: bool = False,
    label_map: dict[str, dict[str, Any]] | None = None,
    device: str = "cpu",
) -> tuple[tuple[Task, ...], DataConfig, SampleTable, dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """Load a checkpoint, run it on a dataset split (on ``device``): (tasks, data config, samples, labels,
    decoded predictions)."""
    meta, outputs = open_model(checkpoint, device)
    tasks = meta.tasks
    cfg, table, labels, ds = split_data(data, split, meta, limit, label_map, progress)
    raw = outputs(ds, batch_size, tta_flip)
    preds = decode_outputs(raw, tasks, meta.formulation, calibration=meta.calibration)
    return tasks, cfg, table, labels, preds


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str | DataConfig,
    split: str = "test",
    *,
    limit: int | None = None,
    batch_size: int = 256,
    tta_flip: FlipMode = False,
    progress: bool = False,
    label_map: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    tasks, cfg, table, labels, preds = checkpoint_predictions(
        checkpoint,
        data,
        split,
        limit=limit,
        batch_size=batch_size,
        tta_flip=tta_flip,
        progress=progress,
        label_map=label_map,
    )
    metrics = compute_metrics(tasks, {k: v for k, v in preds.items() if k in labels}, labels)
    return {
        "checkpoint": str(checkpoint),
        "data": f"{cfg.dataset}:{cfg.root}",
        "split": split,
        "n": len(table),
        "tta_flip": tta_flip,
        "label_map": label_map or {},
        "read_report": table.report.summary(),
        "metrics": metrics,
    }


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _row_metrics(m: dict[str, Any]) -> dict[str, str]:
    cells: dict[str, str] = {}
    for name, tm in m.items():
        if "mae" in tm:
            cells[f"{name} MAE"] = f"{tm['mae']:.2f}"
            cells[f"{name} CS@5 %"] = _pct(tm["cs"]["5"])
        if "group_exact" in tm:
            cells[f"{name} group %"] = _pct(tm["group_exact"])
            cells[f"{name} group 1-off %"] = _pct(tm["group_1off"])
        if "accuracy" in tm:
            cells[f"{name} acc %"] = _pct(tm["accuracy"])
            cells[f"{name} macro-F1 %"] = _pct(tm["macro_f1"])
        cells.setdefault("n", str(tm.get("n", "")))
    return cells


def markdown_table(rows: list[tuple[str, dict[str, str]]], first: str = "") -> str:
    cols: list[str] = []
    for _, r in rows:
        cols += [c for c in r if c not in cols]
    return "\n".join(report.table([first, *cols], ([name, *(r.get(c, "") for c in cols)] for name, r in rows)))


def _confusion_md(labels: Sequence[str], cm: list[list[int]]) -> str:
    return "\n".join(report.confusion(labels, cm))


def report_markdown(res: dict[str, Any]) -> str:
    m = res["metrics"]
    out = [
        f"# Evaluation of `{res['checkpoint']}`",
        "",
        f"Data: `{res['data']}`, split **{res['split']}**, {res['n']} faces{flip_words(res.get('tta_flip', False))}.",
        "",
        "## Overall",
        "",
        markdown_table([("all", _row_metrics(m["overall"]))]),
        "",
    ]
    for tname, tm in m["overall"].items():
        if "cs" in tm:
            out += [
                f"### {tname}: cumulative score CS@k (share within k years)",
                "",
                *report.table(["k", *tm["cs"]], [["CS@k %", *(_pct(v) for v in tm["cs"].values())]]),
                "",
            ]
        if "interval_coverage" in tm:
            width = tm.get("interval_width_median")
            out += [
                f"{tname}: the 80 % interval contains the true value for {_pct(tm['interval_coverage'])} % of faces"
                + (f" (median width {width:.1f})." if width is not None else "."),
                "",
            ]
    cal = [(t, tm) for t, tm in m["overall"].items() if "ece" in tm]
    if cal:
        out += [
            "## Are the printed probabilities worth what they say?",
            "",
            *report.table(
                ["task", "n", "accuracy %", "mean confidence %", "ECE % (15 bins, top label)", "Brier"],
                (
                    [
                        t,
                        tm["n"],
                        _pct(tm["accuracy"]),
                        _pct(tm["mean_confidence"]) if "mean_confidence" in tm else "",
                        f"{100 * tm['ece']:.2f}",
                        f"{tm['brier']:.4f}",
                    ]
                    for t, tm in cal
                ),
            ),
            "",
        ]
    for key in [k for k in m if k.startswith("by_")]:
        rows = [(g, _row_metrics(gm)) for g, gm in m[key].items()]
        out += [f"## By {key[3:]}", "", markdown_table(rows, key[3:]), ""]
    out += ["## Confusion matrices", ""]
    for tname, tm in m["overall"].items():
        if "confusion" in tm:
            out += [f"### {tname}", "", _confusion_md(tm["classes"], tm["confusion"]), ""]
        if "group_confusion" in tm:
            out += [f"### {tname} (groups)", "", _confusion_md(tm["group_labels"], tm["group_confusion"]), ""]
    return "\n".join(out)


def config_label_map(config: dict[str, Any], dataset: str | None = None) -> dict[str, dict[str, Any]] | None:
    """The label map of the first ``data.extra`` entry (for ``dataset``) of an experiment config dict, or None."""
    maps = [
        e.get("label_map") or {}
        for e in ((config.get("data") or {}).get("extra") or [])
        if dataset is None or str(e.get("data", "")).split(":", 1)[0] == dataset
    ]
    return maps[0] if maps else None


def model_label_map(meta: ModelMeta, dataset: str) -> dict[str, dict[str, Any]] | None:
    """The label map the model was trained with for ``dataset``: from its training config, or from the data
    protocol an exported (ONNX) model carries instead of the config."""
    data = (meta.extra.get("config") or {}).get("data") or meta.extra.get("data_protocol") or {}
    return config_label_map({"data": data}, dataset)


def parse_label_map(value: str | None, dataset: str | None = None) -> dict[str, dict[str, Any]]:
    """``--label-map``: a YAML/JSON mapping ``{task: {label: model label}}``, or an experiment config whose
    ``data.extra`` entry for ``dataset`` holds one (e.g. configs/utkface-fairface.yaml)."""
    import yaml

    from faceattr.config import ConfigError

    if not value:
        return {}
    p = Path(value)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        found = config_label_map(yaml.safe_load(p.read_text(encoding="utf-8")) or {}, dataset)
        if found is None:
            raise ConfigError(f"{value}: no data.extra entry with a label_map" + (f" for {dataset}" if dataset else ""))
        return found
    try:
        d = yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise ConfigError(f"--label-map: not a YAML mapping or config file: {e}") from e
    if not isinstance(d, dict) or not all(isinstance(v, dict) for v in d.values()):
        raise ConfigError("--label-map must map task -> {label: model label}, e.g. '{race: {East Asian: Asian}}'")
    return d


def fit_calibration(
    checkpoint: str | Path,
    data: str | None = None,
    split: str = "val",
    label_map: dict[str, Any] | None = None,
    write: bool = True,
) -> dict[str, Any]:
    """Fit the model's post-hoc calibration (:mod:`faceattr.tasks.calibration`: a temperature per nominal task, split-
    conformal age intervals) on data it never trained on -- by default its own validation split (every dataset of
    a joint run) -- and store it in the checkpoint. Returns the calibration and the ECE/coverage on that split
    before and after."""
    from faceattr.config import config_from_dict
    from faceattr.data.sources import load_train_val
    from faceattr.models.checkpoint import write_meta
    from faceattr.tasks import calibration as calib
    from faceattr.training.inference import predict_outputs

    model, meta = load_model(checkpoint)
    tasks = meta.tasks
    groups = None  # the source dataset of each validation row, weighted equally
    if data:
        cfg, _, labels, ds = split_data(data, split, meta, label_map=label_map)
        source = f"{cfg.dataset}:{cfg.root} ({split})"
    else:
        if not meta.extra.get("config"):
            raise CheckpointError("the checkpoint records no training config: give --data DATASET:DIR")
        if split != "val":
            raise CheckpointError("without --data, calibration uses the checkpoint's own validation split only")
        dcfg = config_from_dict(meta.extra["config"]).data
        _, val = load_train_val(dcfg, seed=0)
        ds = make_tensor_dataset(val, dcfg.image_size, Path(dcfg.cache_dir) if dcfg.cache_dir else None, False)
        labels = ds.exact_labels()
        if "source" in val.frame.columns:
            groups = val.frame["source"].to_numpy()
        names = [dcfg.dataset] + [e.dataset for e in dcfg.extra or ()]
        source = " + ".join(names) + " validation split (the checkpoint's own)"
    raw = predict_outputs(model, ds, 256, meta.mean, meta.std)
    before = decode_outputs(raw, tasks, meta.formulation)
    cal = calib.fit(raw, before, labels, tasks, source, groups)
    after = decode_outputs(raw, tasks, meta.formulation, calibration=cal)
    summary: dict[str, Any] = {"calibration": cal, "before": {}, "after": {}}
    for key, dec in (("before", before), ("after", after)):
        m = compute_metrics(tasks, {k: v for k, v in dec.items() if k in labels}, labels, ())["overall"]
        summary[key] = {
            t: {k: v for k, v in mt.items() if k in ("ece", "brier", "interval_coverage", "interval_width_median")}
            for t, mt in m.items()
        }
    if write:
        write_meta(checkpoint, meta.replace(calibration=cal))
    return summary
