"""Multi-process training (faceattr.training.distributed): two gloo processes on this machine's CPUs.

- The arithmetic: one epoch of ``train_one_epoch`` in 2 processes with batch B/2 each equals one process with batch
  B (same shards, augmentation, global loss means with missing labels, synchronised batch norm, averaged
  log-variances). Compared under SGD, whose update is linear in the gradient: AdamW's first steps are
  ``lr * sign(g)``, so a rounding-level difference of a near-zero gradient moves a weight by a whole ``lr`` and
  the same run on 1 and 2 threads already differs by ~60 % of its update (measured; see the README).
- The command: ``torchrun --nproc_per_node=2 -m faceattr train`` trains, only rank 0 writes, the log has one row
  per epoch, and a run stopped after epoch 1 and resumed under DDP gives the same weights as one left alone.
"""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, tiny_config

# Relative L2 distance between the two runs' updates, per part of the network. float32 sums in another order differ
# at ~1e-6, but batch norm over 8-16 noise images amplifies them (its backward subtracts nearly equal means), step on
# step: after 3 steps the trainable weights of 1 x 16 and 2 x 8 differ by up to 1.8 % of their update on an AVX2 CPU
# (0.006 % after one step), the batch-norm statistics by 0.01 %. The bugs this guards against are far larger: without
# synchronised batch norm the trunk's gap is 190 %, a gradient summed instead of averaged 100 %, a per-shard mean
# over missing labels ~10-30 % of that task's branch.
TOL_WEIGHTS = 5e-2
TOL_STATS = 1e-3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _data(n: int = 48):
    from faceattr.data.dataset import TensorDataset
    from faceattr.tasks.task import MISSING

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = np.stack([rng.integers(0, 117, n), rng.integers(0, 2, n), rng.integers(0, 5, n)], 1).astype(np.int64)
    labels[rng.random(n) < 0.3, 2] = MISSING  # uneven missing labels across the shards
    labels[:5, 1] = MISSING
    return TensorDataset(images, labels, ("age", "gender", "race"))


def _epoch(rank: int, world: int, port: int, cfg, out: str) -> None:
    """Train one epoch (3 steps of batch 16) with SGD in process ``rank`` of ``world``; rank 0 saves the result."""
    from faceattr.models import create_model
    from faceattr.tasks.task import utkface_tasks
    from faceattr.training.distributed import DistContext, convert_sync_batchnorm, setup
    from faceattr.training.loop import train_one_epoch
    from faceattr.training.losses import create_weighting

    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    ctx = setup(torch.device("cpu")) if world > 1 else DistContext()
    try:
        torch.manual_seed(0)
        tasks = utkface_tasks()
        model = create_model("mobilenet_v2", tasks, shared_stages=5, dropout=0.0, pretrained=True)
        if ctx.active:
            convert_sync_batchnorm(model, ctx.device)
        weighting = create_weighting("uncertainty", [t.name for t in tasks])
        opt = torch.optim.SGD(list(model.parameters()) + list(weighting.parameters()), lr=1e-5)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        trained = model
        if ctx.active:
            trained = torch.nn.parallel.DistributedDataParallel(model)
        row = train_one_epoch(trained, weighting, opt, sched, _data(), tasks, cfg, 0, False, ctx)
        if ctx.is_main:
            torch.save({"model": model.state_dict(), "weighting": weighting.state_dict(), "row": row}, out)
    finally:
        ctx.close()


@pytest.mark.slow
def test_two_processes_compute_one_batch(tmp_path):
    import torch.multiprocessing as mp

    cfg = tiny_config(tmp_path, **{"train.batch_size": 16, "data.image_size": 32})
    single, multi = str(tmp_path / "single.pt"), str(tmp_path / "multi.pt")
    _epoch(0, 1, 0, cfg, single)
    mp.start_processes(_epoch, args=(2, _free_port(), cfg, multi), nprocs=2, start_method="spawn")
    a, b = torch.load(single, weights_only=True), torch.load(multi, weights_only=True)
    torch.manual_seed(0)
    from faceattr.models import create_model
    from faceattr.tasks.task import utkface_tasks

    m0 = create_model("mobilenet_v2", utkface_tasks(), shared_stages=5, dropout=0.0, pretrained=True)
    w0 = m0.state_dict()
    trainable = {k for k, _ in m0.named_parameters()}
    parts = {"shared.": TOL_WEIGHTS, "branches.age": TOL_WEIGHTS, "branches.gender": TOL_WEIGHTS}
    parts |= {"branches.race": TOL_WEIGHTS, "heads.": TOL_WEIGHTS, "statistics": TOL_STATS}
    for part, tol in parts.items():
        if part == "statistics":  # batch norm's running means and variances
            keys = [k for k, v in a["model"].items() if v.is_floating_point() and k not in trainable]
        else:
            keys = [k for k in trainable if k.startswith(part)]
        diff = sum(float(((a["model"][k] - b["model"][k]) ** 2).sum()) for k in keys) ** 0.5
        step = sum(float(((a["model"][k] - w0[k]) ** 2).sum()) for k in keys) ** 0.5
        assert keys and step > 1e-5, part  # it trained
        assert diff / step < tol, f"{part}: the two runs differ by {diff / step:.2e} of the update"
    lv_a, lv_b = a["weighting"]["log_vars"], b["weighting"]["log_vars"]
    assert torch.allclose(lv_a, lv_b, rtol=5e-4, atol=1e-7)  # measured: 5e-5
    for k in ("train_loss", "loss_age", "loss_gender", "loss_race"):
        assert a["row"][k] == pytest.approx(b["row"][k], rel=2e-4), k  # measured: 2e-5


def _torchrun_cmd(tmp_path: Path, *args: str) -> list[str]:
    root = tiny_config(tmp_path).data.root  # type: ignore[attr-defined]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={_free_port()}",
        "-m",
        "faceattr",
        "train",
        "-c",
        str(REPO / "configs" / "utkface.yaml"),
        "--out-dir",
        str(tmp_path),
        f"-odata.root={root}",
        *args,
    ]


def _torchrun(tmp_path: Path, name: str, *extra: str) -> subprocess.CompletedProcess:
    settings = (
        "data.image_size=32",
        "data.max_train=64",
        "data.max_val=20",
        "train.epochs=2",
        "train.batch_size=16",
        "train.max_steps_per_epoch=2",
        "train.threads=1",
        "train.eval_batch_size=8",
    )
    cmd = _torchrun_cmd(tmp_path, "--name", name, *(f"-o{kv}" for kv in settings), *extra)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.mark.slow
def test_torchrun_trains_writes_once_and_resumes_exactly(tmp_path):
    from faceattr.models.checkpoint import load_state

    whole = _torchrun(tmp_path, "whole")
    assert whole.stdout.count('"processes": 2') == 1  # one summary, from rank 0
    with open(tmp_path / "whole" / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert sorted(p.name for p in (tmp_path / "whole").iterdir()) == [
        "best.json",
        "best.safetensors",
        "config.yaml",
        "last.json",
        "last.safetensors",
        "last_state.pt",
        "log.csv",
    ]
    _torchrun(tmp_path, "cut", "--stop-after-epoch", "1")
    with open(tmp_path / "cut" / "log.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 1
    _torchrun(tmp_path, "cut", "--resume")
    a, b = load_state(tmp_path / "whole" / "last.safetensors"), load_state(tmp_path / "cut" / "last.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_torchrun_refuses_an_indivisible_batch(tmp_path):
    r = subprocess.run(_torchrun_cmd(tmp_path, "-otrain.batch_size=15"), capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "not divisible by 2 processes" in r.stderr
    assert not (tmp_path / "utkface-mtl").exists()
