"""Alignment templates: where a detector's landmarks fall on the training chips, measured and stored in a model.

A face is aligned by a similarity transform that maps the detector's landmarks onto the template the *same*
detector gives on the training chips (:func:`faceattr.vision.align.calibrate_template`), so each detector needs its own
template in the model's metadata. :func:`calibrate_checkpoint` measures them on a seeded sample of the model's own
training data (or of a dataset given) and writes them into the checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from faceattr.data.readers import DataError, SampleTable
from faceattr.runtime.meta import ModelMeta


def calibration_table(meta: ModelMeta, data: str | None, n: int) -> tuple[SampleTable, str]:
    """A seeded sample of ``n`` training samples: of ``data`` (DATASET:DIR), or of the checkpoint's own training
    set (every dataset of a joint run)."""
    from faceattr.config import config_from_dict
    from faceattr.data.sources import load_split, load_train_val, sample
    from faceattr.data.spec import parse_data_spec

    if data:
        cfg = parse_data_spec(data)
        return load_split(cfg, "train", n, seed=0), f"{cfg.dataset} train chips"
    if not meta.extra.get("config"):
        raise DataError("the checkpoint records no training config: give the data to measure on (--data DATASET:DIR)")
    dcfg = config_from_dict(meta.extra["config"]).data
    train = sample(load_train_val(dcfg, seed=0)[0], n)
    names = [dcfg.dataset] + [e.dataset for e in dcfg.extra or ()]
    return train, " + ".join(names) + " train chips"


def calibrate_checkpoint(
    checkpoint: str | Path,
    detectors: Sequence[str] = ("dlib",),
    yunet_model: str | None = None,
    data: str | None = None,
    n: int = 400,
) -> dict[str, Any]:
    """Measure each detector's template on ``n`` training chips and store them in ``checkpoint``; returns them."""
    from faceattr.errors import check
    from faceattr.models.checkpoint import read_meta, write_meta
    from faceattr.vision.align import calibrate_template
    from faceattr.vision.detect import create_detector
    from faceattr.vision.image import load_image

    check(n >= 1, f"-n must be at least 1, got {n}")
    meta = read_meta(checkpoint)
    dets = [create_detector(name, yunet_model) for name in detectors]  # a missing detector fails before any work
    table, source = calibration_table(meta, data, n)
    chips = [load_image(p) for p in table.frame["path"]]
    al = {k: dict(v) for k, v in meta.alignment.items()}
    for det in dets:
        tpl = calibrate_template(det, chips)
        pts = tpl["points"]
        for a_, b_ in ((0, 1), (3, 4))[: len(pts) // 2]:  # the training chips are upright: level eyes and mouth
            y = round((pts[a_][1] + pts[b_][1]) / 2, 5)
            pts[a_][1] = pts[b_][1] = y
        al[det.name] = {**tpl, "source": source, "detector": det.origin}
    write_meta(checkpoint, meta.replace(alignment=al))
    return al
