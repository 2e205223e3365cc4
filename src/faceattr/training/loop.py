"""Training, shaped like torchvision's reference scripts: ``train_one_epoch()``, ``validate()``, ``main(cfg)``.

Each epoch is seeded from (seed, epoch), so a run stopped after epoch e and resumed continues exactly as if
it had not stopped. Every epoch writes ``last.safetensors``/``.json`` + ``last_state.pt``; the best epoch on
validation is kept as ``best.*``; ``log.csv`` has losses, task weights, log-variances and validation metrics.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import resource
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from faceattr.config import ExperimentConfig, config_to_dict, save_config
from faceattr.data.combine import hi_column
from faceattr.data.dataset import TensorDataset, make_tensor_dataset
from faceattr.data.sources import load_train_val
from faceattr.data.transforms import IMAGENET_MEAN, IMAGENET_STD, augment, normalize
from faceattr.models import count_parameters, create_model
from faceattr.models.checkpoint import (
    CheckpointError,
    load_state,
    load_training_state,
    model_meta,
    save_model,
    save_training_state,
)
from faceattr.runtime.meta import Architecture, ModelMeta
from faceattr.safeio import atomic_output
from faceattr.tasks.formulations import get_formulation
from faceattr.tasks.metrics import headline, selection_score
from faceattr.tasks.task import Task
from faceattr.training.distributed import (
    DistContext,
    average_gradients,
    convert_sync_batchnorm,
)
from faceattr.training.losses import create_weighting, task_loss
from faceattr.training.resume import TrainingError, check_resume_config
from faceattr.training.setup import build_optimizer, build_scheduler, init_from_checkpoint
from faceattr.training.validate import validate
from faceattr.training.weighting import LossWeighting

log = logging.getLogger(__name__)


def peak_memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def select_tasks(tasks: Sequence[Task], names: Sequence[str] | None) -> tuple[Task, ...]:
    if not names:
        return tuple(tasks)
    by = {t.name: t for t in tasks}
    unknown = [n for n in names if n not in by]
    if unknown:
        raise TrainingError(f"train.tasks names unknown tasks {unknown}; the dataset has {list(by)}")
    return tuple(by[n] for n in names)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: the first GPU when torch sees one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"train.device={name}: torch sees no GPU here (use auto or cpu)")
    return dev


def _autocast(device: torch.device, enabled: bool) -> Any:
    import contextlib

    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# settings that do not change what a run computes: a resumed run may differ in these
def _seed_epoch(seed: int, epoch: int) -> torch.Generator:
    s = seed * 100_003 + epoch
    torch.manual_seed(s)
    return torch.Generator().manual_seed(s)


def train_one_epoch(
    model: nn.Module,
    weighting: LossWeighting,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    data: TensorDataset,
    tasks: Sequence[Task],
    cfg: ExperimentConfig,
    epoch: int,
    progress: bool = True,
    ctx: DistContext | None = None,
) -> dict[str, float]:
    """One epoch. Under several processes (``ctx``), ``model`` is the DistributedDataParallel wrapper, each
    process trains on its slice of every batch and the task losses are global means (see
    :mod:`faceattr.training.distributed`); the returned figures are those of the whole batch."""
    from tqdm.auto import tqdm

    ctx = ctx or DistContext(device=next(model.parameters()).device)
    part = (ctx.rank, ctx.world) if ctx.active else None
    local_b = cfg.train.batch_size // ctx.world
    model.train()
    weighting.train()
    gen = _seed_epoch(cfg.train.seed, epoch)
    aug = cfg.augment
    form = cfg.model.ordinal_formulation
    sums: dict[str, float] = {t.name: 0.0 for t in tasks}
    counts: dict[str, int] = {t.name: 0 for t in tasks}
    total_sum, steps, seen = 0.0, 0, 0
    n_batches = data.num_batches(cfg.train.batch_size, drop_last=True)
    if cfg.train.max_steps_per_epoch:
        n_batches = min(n_batches, cfg.train.max_steps_per_epoch)
    device = next(model.parameters()).device
    t0 = time.perf_counter()
    bar = tqdm(
        total=n_batches,
        desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
        disable=not progress,
        mininterval=5.0,
        leave=False,
    )
    weights: dict[str, float] = {}
    for x, y in data.batches(cfg.train.batch_size, shuffle=True, generator=gen, drop_last=True, part=part):
        if steps >= n_batches:
            break
        x = x.to(device, non_blocking=True)
        y = {k: v.to(device, non_blocking=True) for k, v in y.items()}
        rows = (ctx.rank * local_b, cfg.train.batch_size) if ctx.active else None
        xb = normalize(augment(x, aug, gen, rows))
        with _autocast(device, cfg.train.amp):
            out = model(xb)
        losses, ns = {}, {}
        for t in tasks:  # losses in float32 (the loss functions cast the outputs)
            losses[t.name], ns[t.name] = task_loss(
                out[t.name], y[t.name], t, form, cfg.train.label_smoothing, y.get(hi_column(t.name))
            )
        if ctx.active:  # each task's loss as the mean over the labelled rows of the whole batch
            n_all = ctx.sum_(torch.tensor([float(ns[t.name]) for t in tasks]))
            for j, t in enumerate(tasks):
                scale = ns[t.name] * ctx.world / max(1.0, float(n_all[j]))
                losses[t.name] = losses[t.name] * scale
                ns[t.name] = int(n_all[j])
        total, weights = weighting(losses)
        if not torch.isfinite(total):
            raise TrainingError(f"loss became {total.item()} at epoch {epoch + 1}, step {steps}; lower train.lr")
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        average_gradients(weighting.parameters(), ctx)
        optimizer.step()
        scheduler.step()
        for t in tasks:  # ns is the global count here; the processes' shares add up to the global sum
            sums[t.name] += losses[t.name].item() * ns[t.name] / ctx.world
            counts[t.name] += ns[t.name]
        total_sum += total.item() / ctx.world
        steps += 1
        seen += x.shape[0] * ctx.world
        bar.update(1)
        if steps % 20 == 0:
            bar.set_postfix(loss=f"{total_sum / steps:.3f}")
    bar.close()
    if steps == 0:
        raise TrainingError(f"no training step: {len(data)} training images for batch size {cfg.train.batch_size}")
    dt = time.perf_counter() - t0
    if ctx.active:  # the same figures (and so the same DWA weights) on every process
        red = ctx.sum_(torch.tensor([total_sum] + [sums[t] for t in sums], dtype=torch.float64))
        total_sum = float(red[0])
        sums = {t: float(v) for t, v in zip(sums, red[1:])}
    epoch_losses = {t: sums[t] / max(1, counts[t]) for t in sums}
    weighting.end_epoch(epoch_losses)
    row: dict[str, float] = {"train_loss": total_sum / steps, "epoch_seconds": dt, "images_per_s": seen / dt}
    for name in sums:
        row[f"loss_{name}"] = epoch_losses[name]
        row[f"weight_{name}"] = weights.get(name, float("nan"))
    lv = getattr(weighting, "log_vars", None)
    if lv is not None:
        for name, v in zip(weighting.task_names, lv.detach().tolist()):
            row[f"logvar_{name}"] = v
    return row


def _meta(cfg: ExperimentConfig, tasks: tuple[Task, ...], model: nn.Module, **extra: Any) -> ModelMeta:
    arch = Architecture(cfg.model.name, cfg.model.shared_stages, cfg.model.ordinal_formulation, cfg.model.dropout)
    return model_meta(
        tasks,
        arch,
        cfg.data.image_size,
        IMAGENET_MEAN,
        IMAGENET_STD,
        weights_origin=getattr(model, "weights_origin", "unknown"),
        config=config_to_dict(cfg),
        data_protocol={
            "dataset": cfg.data.dataset,
            "root": cfg.data.root,
            "split_file": cfg.data.split_file,
            "train_split": "train",
            "val_split": "val",
            "extra": [dataclasses.asdict(e) for e in cfg.data.extra or ()],
        },
        parameters=count_parameters(model),
        **extra,
    )


LOG_FIELDS_FIRST = ("epoch", "train_loss", "val_score")


def _mean_speed(log_csv: Path) -> float:
    """Training images per second over all epochs of a run (also those before a resume)."""
    if not log_csv.is_file():
        return float("nan")
    with open(log_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    secs = sum(float(r["epoch_seconds"]) for r in rows)
    imgs = sum(float(r["images_per_s"]) * float(r["epoch_seconds"]) for r in rows)
    return imgs / secs if secs else float("nan")


def _append_log(path: Path, row: dict[str, Any]) -> None:
    rows: list[dict[str, Any]] = []
    if path.is_file():
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    rows = [r for r in rows if int(r["epoch"]) < int(row["epoch"])] + [row]
    fields: list[str] = list(LOG_FIELDS_FIRST)
    for r in rows:
        fields += [k for k in r if k not in fields]
    with atomic_output(path) as f:  # an interrupted write leaves the epochs logged so far, not half a file
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def main(
    cfg: ExperimentConfig, resume: bool = False, progress: bool = True, stop_after_epoch: int | None = None
) -> dict[str, Any]:
    """Train ``cfg``; returns a summary (best epoch, its validation metrics, cost figures).

    Started by ``torchrun`` (``WORLD_SIZE`` > 1), the processes train one model with DistributedDataParallel
    (:mod:`faceattr.training.distributed`): ``train.batch_size`` is the batch of all of them together; only rank 0
    writes. ``stop_after_epoch``: stop once that epoch is saved (``--resume`` continues the run)."""
    from faceattr.training.distributed import env_world_size, setup

    world = env_world_size()
    if world > 1:
        if cfg.train.batch_size % world:
            raise TrainingError(f"train.batch_size={cfg.train.batch_size} is not divisible by {world} processes")
        if cfg.train.weighting == "gradnorm":
            raise TrainingError("train.weighting=gradnorm needs whole-batch gradient norms: train it in one process")
    ctx = setup(resolve_device(cfg.train.device))
    try:
        return _main(cfg, ctx, resume, progress and ctx.is_main, stop_after_epoch)
    finally:
        ctx.close()


def _main(
    cfg: ExperimentConfig, ctx: DistContext, resume: bool, progress: bool, stop_after_epoch: int | None
) -> dict[str, Any]:
    run_dir = cfg.run_dir
    for folder in (Path(cfg.out_dir), run_dir):
        if folder.exists() and not folder.is_dir():
            raise TrainingError(f"{folder}: is a file; the runs' folder (--out-dir) must be a folder")
    state_path = run_dir / "last_state.pt"
    if state_path.is_file() and not resume:
        raise TrainingError(f"{run_dir} already holds a run: add --resume to continue it, or choose another name")
    if resume and not state_path.is_file():
        log.info("--resume: no earlier state in %s, starting from scratch", run_dir)
    if resume and state_path.is_file():
        check_resume_config(cfg, run_dir)
    ctx.barrier()  # every process has checked the folder before rank 0 writes into it
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)

    cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else None
    for turn in (True, False):  # rank 0 decodes (and caches) first, the others then read its cache
        if ctx.is_main == turn:
            train_t, val_t = load_train_val(cfg.data, cfg.train.seed)
            train_d = make_tensor_dataset(train_t, cfg.data.image_size, cache, progress)
            val_d = make_tensor_dataset(val_t, cfg.data.image_size, cache, progress)
        ctx.barrier()
    tasks = select_tasks(train_t.tasks, cfg.train.tasks)
    log.info("%s; %s", train_t.report.summary(), f"train {len(train_d)} / val {len(val_d)} images")

    model = create_model(
        cfg.model.name,
        tasks,
        shared_stages=cfg.model.shared_stages,
        ordinal_formulation=cfg.model.ordinal_formulation,
        dropout=cfg.model.dropout,
        pretrained=cfg.model.pretrained,
        allow_download=cfg.model.allow_download,
    )
    if cfg.model.init_from:
        model.weights_origin = init_from_checkpoint(model, cfg.model.init_from)
    device = ctx.device
    if ctx.active:
        convert_sync_batchnorm(model, device)  # in place: the children are replaced
    model = model.to(device)
    model = model.to(memory_format=torch.channels_last)
    train_d, val_d = train_d.to(device), val_d.to(device)
    reg = [
        t.name for t in tasks if t.kind == "ordinal" and get_formulation(cfg.model.ordinal_formulation).regression_loss
    ]
    weighting = create_weighting(cfg.train.weighting, [t.name for t in tasks], reg, cfg.train.fixed_weights)
    weighting = weighting.to(device)
    weighting.attach(model)
    optimizer = build_optimizer(model, weighting, cfg)
    steps = train_d.num_batches(cfg.train.batch_size, drop_last=True)
    if cfg.train.max_steps_per_epoch:
        steps = min(steps, cfg.train.max_steps_per_epoch)
    scheduler = build_scheduler(optimizer, steps, cfg)

    start_epoch, best_score, best_epoch, train_seconds = 0, math.inf, -1, 0.0
    if resume and state_path.is_file():
        st = load_training_state(state_path)
        if "model" in st:  # the weights travel with the optimizer state: one file, one epoch
            weights = st["model"]
        else:  # older runs: the weights file must be from the same epoch as the state
            from faceattr.models.checkpoint import read_meta

            w_epoch = read_meta(run_dir / "last.safetensors").extra.get("epoch")
            if w_epoch != int(st["epoch"]) + 1:
                raise CheckpointError(
                    f"{run_dir}: last.safetensors is from epoch {w_epoch} but last_state.pt from "
                    f"epoch {int(st['epoch']) + 1}; the run folder is inconsistent, cannot resume"
                )
            weights = load_state(run_dir / "last.safetensors")
        try:
            model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in weights.items()})
            optimizer.load_state_dict(st["optimizer"])
            scheduler.load_state_dict(st["scheduler"])
            weighting.load_state_dict(st["weighting"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{run_dir}: cannot resume, the saved state does not match this config ({e})") from e
        start_epoch, best_score, best_epoch = int(st["epoch"]) + 1, float(st["best_score"]), int(st["best_epoch"])
        train_seconds = float(st.get("train_seconds", 0.0))
        log.info("resuming %s after epoch %d", run_dir, start_epoch)

    trained: nn.Module = model
    if ctx.active:  # wraps the same parameters: the optimizer and the saved state keep referring to `model`
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    last_epoch = cfg.train.epochs if stop_after_epoch is None else min(cfg.train.epochs, stop_after_epoch)
    for epoch in range(start_epoch, last_epoch):
        row = train_one_epoch(trained, weighting, optimizer, scheduler, train_d, tasks, cfg, epoch, progress, ctx)
        train_seconds += row["epoch_seconds"]
        metrics = validate(model, val_d, tasks, cfg.model.ordinal_formulation, cfg.train.eval_batch_size, (), ctx)
        score = selection_score(metrics)
        is_best = score < best_score
        if is_best:
            best_score, best_epoch = score, epoch + 1
        if ctx.is_main:
            row = {
                "epoch": epoch + 1,
                **row,
                "val_score": score,
                "peak_memory_mb": peak_memory_mb(),
                **{f"val_{k}": v for k, v in headline(metrics).items()},
            }
            _append_log(run_dir / "log.csv", row)
            log.info(
                "epoch %d: %s", epoch + 1, ", ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float))
            )
            meta = _meta(cfg, tasks, model, epoch=epoch + 1, val_metrics=metrics["overall"], val_score=score)
            save_model(run_dir / "last", model, meta)
            if is_best:
                shutil.copyfile(run_dir / "last.safetensors", run_dir / "best.safetensors")
                shutil.copyfile(run_dir / "last.json", run_dir / "best.json")
            save_training_state(
                state_path,
                {
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "weighting": weighting.state_dict(),
                    "best_score": best_score,
                    "best_epoch": best_epoch,
                    "train_seconds": train_seconds,
                },
            )
        ctx.barrier()  # nobody goes on (or resumes) before the epoch is on disk
    return {
        "run_dir": str(run_dir),
        "best_epoch": best_epoch,
        "best_val_score": best_score,
        "train_seconds": train_seconds,
        "parameters": count_parameters(model),
        "images_per_s": _mean_speed(run_dir / "log.csv"),
        "peak_memory_mb": peak_memory_mb(),
        "train_images": len(train_d),
        "processes": ctx.world,
    }
