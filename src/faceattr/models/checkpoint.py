"""Checkpoints: safetensors weights + a JSON of metadata; training state for resuming.

A model checkpoint is ``NAME.safetensors`` (tensors only, no code can run on load) beside ``NAME.json``:
format tag, tasks with their levels/classes, architecture, input size, normalisation, the resolved config,
the data protocol, metrics and the origin of the initial weights. Everything needed to use the weights
travels with them. The optimizer/scheduler state for ``--resume`` is a separate ``.pt`` loaded with
``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from faceattr.errors import FaceattrError
from faceattr.runtime.meta import META_FORMAT, META_VERSION, Architecture, MetaError, ModelMeta, three_channels
from faceattr.tasks.task import Task

log = logging.getLogger(__name__)

FORMAT = META_FORMAT
FORMAT_VERSION = META_VERSION


class CheckpointError(FaceattrError, ValueError):
    """A checkpoint that is missing, corrupt, or not a faceattr checkpoint."""


# The metadata that decides what the weights mean: its fingerprint is stored inside the weights file, so a JSON
# edited or swapped after training (another input size, classes reordered) is refused instead of used.
BOUND_KEYS = ("tasks", "model", "input_size", "mean", "std")


def meta_fingerprint(meta: dict[str, Any]) -> str:
    bound = {k: meta.get(k) for k in BOUND_KEYS}
    return hashlib.sha256(json.dumps(bound, sort_keys=True, default=str).encode()).hexdigest()


def check_fingerprint(path: str | Path, meta: dict[str, Any]) -> None:
    """Refuse metadata that does not belong to the weights beside it (checkpoints written before fingerprints
    are accepted with a warning)."""
    from safetensors import safe_open

    st, js = _paths(path)
    try:
        with safe_open(str(st), framework="pt") as f:
            stored = (f.metadata() or {}).get("meta_sha256")
    except Exception as e:  # noqa: BLE001 - any failure to read the header means a broken file
        raise CheckpointError(f"{st}: unreadable weights file ({e})") from e
    if stored is None:
        log.warning("%s: written before weights and metadata were tied together; its metadata is trusted as is", st)
    elif stored != meta_fingerprint(meta):
        raise CheckpointError(
            f"{js}: this metadata does not belong to {st.name} (tasks, classes, architecture, input "
            "size or normalisation changed after training); restore the JSON written with the weights"
        )


def _paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    if p.is_dir():
        for name in ("best", "model", "last"):
            if (p / f"{name}.safetensors").is_file():
                p = p / f"{name}.safetensors"
                break
        else:
            raise CheckpointError(f"{path}: no best/model/last.safetensors in this folder")
    if p.suffix == ".json":
        p = p.with_suffix(".safetensors")
    return p.with_suffix(".safetensors"), p.with_suffix(".json")


def save_model(path: str | Path, model: nn.Module, meta: ModelMeta, half: bool = False) -> Path:
    """Write ``path``.safetensors + .json atomically. ``half`` stores floating tensors as float16. The weights file
    holds the fingerprint of the metadata that decides what the weights mean (:func:`meta_fingerprint`)."""
    from safetensors.torch import save_file

    st, js = _paths(Path(path).with_suffix(".safetensors"))
    st.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    d = meta.with_extra(dtype="float16" if half else "float32").to_dict()
    tmp_st, tmp_js = st.with_suffix(".safetensors.tmp"), js.with_suffix(".json.tmp")
    save_file(state, str(tmp_st), metadata={"format": FORMAT, "meta_sha256": meta_fingerprint(d)})
    tmp_js.write_text(json.dumps(d, indent=1, default=_json_default), encoding="utf-8")
    os.replace(tmp_st, st)
    os.replace(tmp_js, js)
    return st


def write_meta(path: str | Path, meta: ModelMeta) -> Path:
    """Replace a checkpoint's metadata (e.g. an alignment template added by calibration), atomically; the
    fingerprinted part must not change."""
    from faceattr.safeio import atomic_output

    st, js = _paths(path)
    d = meta.to_dict()
    check_fingerprint(st, d)
    with atomic_output(js) as f:
        f.write(json.dumps(d, indent=1, default=_json_default))
    return js


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _read_meta_dict(path: str | Path) -> dict[str, Any]:
    st, js = _paths(path)
    if not js.is_file():
        raise CheckpointError(
            f"{js}: checkpoint metadata not found (a faceattr checkpoint is a .safetensors + .json pair)"
        )
    try:
        meta = json.loads(js.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{js}: corrupt checkpoint metadata ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{js}: not a faceattr checkpoint (format tag missing)")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{js}: checkpoint format {meta.get('format_version')} is newer than this faceattr")
    return meta


def read_meta(path: str | Path) -> ModelMeta:
    """A checkpoint's metadata, typed and validated."""
    _, js = _paths(path)
    try:
        return ModelMeta.from_dict(_read_meta_dict(path), str(js))
    except MetaError as e:
        raise CheckpointError(str(e)) from e


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    st, _ = _paths(path)
    if not st.is_file():
        raise CheckpointError(f"{st}: checkpoint weights not found")
    try:
        return load_file(str(st), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{st}: corrupt or not a safetensors file ({e})") from e


def build_model_from_meta(meta: ModelMeta) -> nn.Module:
    from faceattr.models import create_model

    arch = meta.architecture
    return create_model(
        arch.name,
        meta.tasks,
        shared_stages=arch.shared_stages,
        ordinal_formulation=arch.ordinal_formulation,
        dropout=arch.dropout,
        pretrained=False,
    )


def load_model(path: str | Path) -> tuple[nn.Module, ModelMeta]:
    """Rebuild the model a checkpoint describes and load its weights (float32, eval mode)."""
    meta = read_meta(path)
    state = load_state(path)
    check_fingerprint(path, _read_meta_dict(path))
    try:
        model = build_model_from_meta(meta)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: checkpoint architecture metadata is invalid ({e})") from e
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad_shape = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or bad_shape:
        raise CheckpointError(
            f"{path}: weights do not match the architecture in its metadata "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {bad_shape[:3]})"
        )
    model.load_state_dict(state)
    model.eval()
    return model, meta


def save_training_state(path: str | Path, state: dict[str, Any]) -> None:
    p = Path(path)
    tmp = p.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, p)


def load_training_state(path: str | Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means: not a state we wrote
        raise CheckpointError(f"{path}: corrupt or foreign training state ({type(e).__name__}: {e})") from e


def model_meta(
    tasks: tuple[Task, ...],
    arch: Architecture,
    input_size: int,
    mean: Any,
    std: Any,
    weights_origin: str = "unknown",
    **extra: Any,
) -> ModelMeta:
    return ModelMeta(
        tasks=tuple(tasks),
        architecture=arch,
        input_size=int(input_size),
        mean=three_channels(mean),
        std=three_channels(std),
        weights_origin=weights_origin,
        extra=extra,
    )
