"""Resuming a run: which settings may change between the interrupted run and its continuation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from faceattr.config import ExperimentConfig, config_to_dict
from faceattr.errors import FaceattrError


class TrainingError(FaceattrError, RuntimeError):
    pass


RESUME_MAY_CHANGE = ("train.threads", "train.device", "train.eval_batch_size", "data.cache_dir", "out_dir")


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k in ("data", "model", "augment", "train"):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_resume_config(cfg: ExperimentConfig, run_dir: Path) -> None:
    """Refuse to resume ``run_dir`` with a configuration that differs from the one it was started with (the
    optimizer and schedule state would silently keep the old one while the new one was recorded); only the
    settings in ``RESUME_MAY_CHANGE`` may differ."""
    from faceattr.config import load_config

    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        raise TrainingError(f"{run_dir}: cannot resume, its config.yaml is missing")
    saved = _flat(config_to_dict(load_config(saved_path)))
    new = _flat(config_to_dict(cfg))
    diff = [
        f"{k}: {saved.get(k)!r} -> {new.get(k)!r}"
        for k in sorted(set(saved) | set(new))
        if k not in RESUME_MAY_CHANGE and saved.get(k) != new.get(k)
    ]
    if diff:
        raise TrainingError(
            f"{run_dir} was started with another configuration ({'; '.join(diff)}); resume it "
            "unchanged, or start a new run (train.init_from can start from its weights)"
        )
