"""Grad-CAM (Selvaraju et al., ICCV 2017) for each task of the multi-task network.

The target of a task is a scalar per face: for a nominal task the logit of the predicted (or a chosen) class;
for an ordinal task the expected value (e.g. the estimated age, differentiable through the K-1 sigmoids) or
one threshold's logit ("age > k"). The default layer is the last block of the task's own branch, so each task's
map shows what *its* features respond to. Written here rather than taken from the ``grad-cam`` package because
the network returns a dict of heads and the age target is a decoded expectation, not a class score.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from faceattr.errors import FaceattrError
from faceattr.runtime.meta import ModelMeta
from faceattr.tasks.formulations import get_formulation
from faceattr.tasks.task import Task


class ExplainError(FaceattrError, ValueError):
    pass


def resolve_layer(model: nn.Module, task: str, layer: str | None) -> nn.Module:
    if layer is None:
        return model.branch_last_layer(task)  # type: ignore[operator]
    mods = dict(model.named_modules())
    name = layer.replace("{task}", task)
    if name not in mods:
        raise ExplainError(
            f"no layer {name!r}; e.g. {[n for n in mods if n.count('.') == 2][:6]} "
            "(use {task} for the task's branch, e.g. 'branches.{task}.1')"
        )
    return mods[name]


def task_target(
    out: torch.Tensor, task: Task, formulation: str, threshold: int | None = None, class_index: int | None = None
) -> torch.Tensor:
    """The scalar per face whose gradient Grad-CAM follows."""
    if task.kind == "nominal":
        idx = out.argmax(1) if class_index is None else torch.full((out.shape[0],), class_index)
        return out.gather(1, idx[:, None])[:, 0]
    form = get_formulation(formulation)
    if threshold is not None:
        if not form.threshold_logits:
            raise ExplainError("a threshold target needs a head of 'y > k' logits (coral or binary)")
        return out[:, threshold]
    return form.expected_value(out, torch.as_tensor(task.values, dtype=out.dtype))


def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    task: str,
    formulation: str = "coral",
    layer: str | None = None,
    threshold: int | None = None,
    class_index: int | None = None,
) -> np.ndarray:
    """Grad-CAM maps (N x H x W, each scaled to [0, 1]) of ``task`` for normalised inputs ``x``."""
    tasks = {t.name: t for t in cast(Sequence[Task], model.tasks)}
    if task not in tasks:
        raise ExplainError(f"the model has no task {task!r} (has {list(tasks)})")
    mod = resolve_layer(model, task, layer)
    store: dict[str, torch.Tensor] = {}

    def fwd_hook(_m: nn.Module, _i: Any, o: torch.Tensor) -> None:
        store["act"] = o
        o.register_hook(lambda g: store.__setitem__("grad", g))

    h = mod.register_forward_hook(fwd_hook)
    model.eval()
    try:
        with torch.enable_grad():
            out = model(x.detach())[task]
            target = task_target(out, tasks[task], formulation, threshold, class_index)
            model.zero_grad(set_to_none=True)
            target.sum().backward()
    finally:
        h.remove()
    act, grad = store["act"].detach(), store["grad"].detach()
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * act).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    flat = cam.flatten(1)
    lo, hi = flat.min(1).values[:, None, None], flat.max(1).values[:, None, None]
    return ((cam - lo) / (hi - lo).clamp_min(1e-12)).numpy()


def overlay(rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    import matplotlib

    cmap = matplotlib.colormaps["jet"]
    heat = (cmap(cam)[..., :3] * 255).astype(np.float32)
    return (rgb.astype(np.float32) * (1 - alpha) + heat * alpha).clip(0, 255).astype(np.uint8)


def average_figure(mean_face: np.ndarray, maps: dict[str, np.ndarray], n: int, out_path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(maps) + 1
    fig, axes = plt.subplots(1, k, figsize=(3 * k, 3.4))
    axes[0].imshow(mean_face)
    axes[0].set_title(f"mean of {n} aligned faces", fontsize=9)
    for ax, (task, m) in zip(axes[1:], maps.items()):
        ax.imshow(overlay(mean_face, m / max(m.max(), 1e-12)))
        ax.set_title(f"{task}: mean Grad-CAM", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    from faceattr.safeio import save_figure

    save_figure(fig, out_path, dpi=120)
    plt.close(fig)


def explain_chips(
    model: nn.Module,
    meta: ModelMeta,
    chips: np.ndarray,
    tasks: Sequence[str],
    layer: str | None = None,
    threshold: int | None = None,
    batch: int = 32,
) -> dict[str, np.ndarray]:
    """Grad-CAM maps per task for uint8 chips (N x S x S x 3) at the model's input size."""
    from faceattr.data.transforms import normalize

    form = meta.formulation
    out: dict[str, list[np.ndarray]] = {t: [] for t in tasks}
    for s in range(0, len(chips), batch):
        x = normalize(torch.from_numpy(np.array(chips[s : s + batch])), meta.mean, meta.std)
        for t in tasks:
            ordinal = next(task.kind == "ordinal" for task in meta.tasks if task.name == t)
            out[t].append(grad_cam(model, x, t, form, layer, threshold if ordinal else None))
    return {t: np.concatenate(v) for t, v in out.items()}


def explain_run(
    images: Sequence[str],
    out: str | Path,
    checkpoint: str | Path | None = None,
    *,
    task: str = "all",
    layer: str | None = None,
    age_threshold: int | None = None,
    no_detect: bool = False,
    detector: str = "auto",
    yunet_model: str | None = None,
    average_data: str | None = None,
    average_n: int = 200,
) -> dict[str, Any]:
    """``faceattr explain``: Grad-CAM per face of each photo (``<out>/<input path>_face<i>_<task>.png``, the face
    beside its heat map) and, with ``average_data``, the mean map per task over that dataset's test faces. Options
    and outputs are checked before any work (:mod:`faceattr.safeio`); every image is written atomically."""
    import io

    from PIL import Image

    from faceattr.errors import check
    from faceattr.models.backend import TorchBackend
    from faceattr.models.checkpoint import load_model
    from faceattr.runtime.policy import SHIPPED_MODEL
    from faceattr.runtime.predictor import Predictor
    from faceattr.safeio import OutputPlan, atomic_write_bytes, unique_names
    from faceattr.vision.image import load_image, square_resize

    check(average_n >= 1, f"--average-n must be at least 1, got {average_n}")
    check(bool(images) or bool(average_data), "give photos to explain, or --average-data DATASET:DIR")
    ckpt = checkpoint or SHIPPED_MODEL
    plan = OutputPlan([*images, ckpt])
    plan.add_input_dirs({str(Path(i).parent) for i in images})
    out_dir = plan.claim_dir(out, "--out")
    names_out = unique_names([Path(i) for i in images], "")
    if str(ckpt).endswith(".onnx"):
        raise ExplainError(
            "Grad-CAM needs gradients: give the torch checkpoint the ONNX file was exported from, not the .onnx file"
        )
    model, meta = load_model(ckpt)
    names = list(meta.task_names) if task == "all" else [task]
    unknown = [n for n in names if n not in meta.task_names]
    if unknown:
        raise ExplainError(f"unknown task {unknown[0]!r}; the model has {list(meta.task_names)}")
    if age_threshold is not None:
        ordinal = next((t for t in meta.tasks if t.kind == "ordinal"), None)
        top = ordinal.num_classes - 2 if ordinal else 0
        check(
            ordinal is not None and 0 <= age_threshold <= top,
            f"--age-threshold must be a threshold index 0..{top}, got {age_threshold}",
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    pred = Predictor(TorchBackend(model, meta), detector=detector, yunet_model=yunet_model)
    size = meta.input_size
    no_face: list[str] = []
    for img in images:
        rgb = load_image(img)
        chips = square_resize(rgb, size)[None] if no_detect else pred.faces_and_chips(rgb)[1]
        if not len(chips):
            no_face.append(str(img))
            continue
        maps = explain_chips(model, meta, chips, names, layer, age_threshold)
        for i, chip in enumerate(chips):
            for t in names:
                p = out_dir / f"{names_out[Path(img)]}_face{i}_{t}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                buf = io.BytesIO()
                Image.fromarray(np.concatenate([chip, overlay(chip, maps[t][i])], 1)).save(buf, "PNG")
                atomic_write_bytes(p, buf.getvalue())
                written.append(str(p))
    summary: dict[str, Any] = {"written": written, "no_face": no_face}
    if average_data:
        from faceattr.training.export import calibration_chips_from

        chips = calibration_chips_from(average_data, size, average_n, split="test")
        maps = explain_chips(model, meta, chips, names, layer, age_threshold)
        means = {t: m.mean(0) for t, m in maps.items()}
        p = out_dir / "average_gradcam.png"
        average_figure(
            chips.mean(0).astype(np.uint8),
            means,
            len(chips),
            str(p),
            f"Grad-CAM per task, {layer or 'last block of each task branch'}: {Path(str(ckpt)).name}",
        )
        np.savez_compressed(out_dir / "average_gradcam.npz", **means)
        cors = {
            f"{x}~{y}": float(np.corrcoef(means[x].ravel(), means[y].ravel())[0, 1])
            for i, x in enumerate(names)
            for y in names[i + 1 :]
        }
        summary.update({"average": str(p), "n": len(chips), "map_correlations": cors})
    return summary
