"""The batch job on Ray Data: the local engine's :class:`~faceattr.batch.engine.Pipeline` in an actor pool, the
same rows and schema.

Only file names travel through Ray (``from_items``, blocks of ``batch_photos``): each actor reads its photos itself,
so no image passes through the object store, and no read task competes with the actors for the cores or starts
processes of its own. The photos must therefore be readable at the same paths on every node (a shared file system),
as they are for the local engine's workers."""

from __future__ import annotations

import inspect
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from faceattr.batch.engine import Job, Pipeline, _model_name, detector_spec, list_inputs, single_threaded
from faceattr.batch.schema import table
from faceattr.errors import UsageError, check
from faceattr.vision.detect import DetectorSpec

log = logging.getLogger(__name__)

WORK_MARK = "_faceattr_job_in_progress"
BLOCK_PHOTOS = 500


class RayPredictor:
    """The callable class of :func:`run_batch_ray`'s ``map_batches``: one Pipeline (model and detector) per actor,
    loaded once; a batch of photo paths in, the rows of all their faces out (the local engine's rows)."""

    def __init__(self, job: Job, model: str | None, runtime: str, batch_size: int) -> None:
        single_threaded()
        # the model name is this actor's: "auto" resolves on the actor's own CPU
        self.pipeline = Pipeline(job, model, runtime, batch_size, None)

    def __call__(self, batch: dict[str, Any]) -> Any:
        rows = self.pipeline.rows([str(p) for p in batch["source"]])
        return table(rows, self.pipeline.pred.meta)


def run_batch_ray(
    inputs: Sequence[str],
    out: str | Path,
    model: str | None = None,
    *,
    actors: int = 2,
    batch_photos: int = 16,
    detect: bool = True,
    detector: str | DetectorSpec = "auto",
    yunet_model: str | None = None,
    max_pixels: int = 64_000_000,
    min_score: float | None = None,
    runtime: str = "auto",
    path_column: str = "path",
    address: str | None = None,
    cpus_per_actor: float = 1.0,
) -> dict[str, Any]:
    """The same job on Ray Data: ``read_binary_files`` -> ``map_batches(RayPredictor)`` on an actor pool of
    ``actors`` (the model loaded once per actor) -> ``write_parquet``. ``address``: a running Ray cluster
    (``auto``, or ``ray://host:10001``); None starts a local Ray. Each actor reserves ``cpus_per_actor`` CPUs:
    leave at least one CPU of the cluster to the read tasks (e.g. ``actors`` = CPUs - 1 on one node). Missing
    files become error rows at the driver; every other row is what the local engine writes."""
    try:
        import ray
    except ImportError as e:
        raise UsageError(
            "the ray engine needs Ray Data: pip install 'ray[data]' (the local engine needs nothing)"
        ) from e
    from faceattr.runtime.predictor import Predictor
    from faceattr.safeio import OutputPlan

    check(actors >= 1, f"actors must be at least 1, got {actors}")
    check(batch_photos >= 1, f"batch size must be at least 1, got {batch_photos}")
    files = list_inputs(inputs, path_column)
    if not files:
        raise UsageError(f"no photos in {list(inputs)}")
    out_dir = OutputPlan(files).claim_dir(out, "--out")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UsageError(f"{out_dir} is not empty: the ray engine writes a whole job at once; choose a new --out")
    # the job is written into a sibling folder, renamed onto --out when complete: a killed job leaves no partial
    # --out, and its leftover (marked as ours) is removed by the next run
    work = out_dir.with_name(out_dir.name + ".partial")
    if work.exists():
        if not (work / WORK_MARK).is_file():
            raise UsageError(f"{work} exists and is not a faceattr job's; move it away or choose another --out")
        log.warning("removing %s, left by an interrupted Ray job", work)
        shutil.rmtree(work)
    pred = Predictor.load(model, 1, runtime=runtime)
    model_name = _model_name(model, pred)
    job = Job(detect, detector_spec(detector, yunet_model, min_score), max_pixels, pred.meta)
    present = [f for f in files if Path(f).is_file()]
    missing = [{"source": f, "model": model_name, "error": f"{f}: no such file"} for f in files if f not in present]
    started = False
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        started = True
        if address is None and sys.platform.startswith("linux"):
            # a local Ray's agents outlive a killed driver: a reaper in its own session ends them
            subprocess.Popen(
                [sys.executable, "-m", "faceattr.batch.reaper", str(os.getpid())],
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
    try:
        # writing Parquet is I/O: it takes no CPU slot, else actors holding every CPU of a small machine would
        # starve it and the job would wait forever (seen with 2 actors on 2 cores)
        io_args = {"num_cpus": 0}
        # no progress bars: on a small machine redrawing them takes CPU from the actors
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        # blocks of about BLOCK_PHOTOS names (at least two per actor): each becomes one Parquet file
        blocks = max(1, min(len(present), max(2 * actors, -(-len(present) // BLOCK_PHOTOS))))
        # Ray >= 2.10 names the block count override_num_blocks; older Ray (>= 2.9 is supported) parallelism
        named = "override_num_blocks" in inspect.signature(ray.data.from_items).parameters
        ds: Any = ray.data.from_items(
            [{"source": f} for f in present], **({"override_num_blocks": blocks} if named else {"parallelism": blocks})
        )
        ds = ds.map_batches(
            RayPredictor,
            fn_constructor_kwargs={
                "job": job,
                "model": str(model) if model else None,
                "runtime": runtime,
                "batch_size": 64,
            },
            batch_size=batch_photos,
            concurrency=actors,
            num_cpus=cpus_per_actor,
            batch_format="numpy",
        )
        # every block as the job's Arrow table: a block of error rows keeps the list type of `box` (else Ray
        # stores its nulls as pickled Python objects, which pandas and pyarrow cannot read)
        work.mkdir(parents=True)
        (work / WORK_MARK).write_text("a faceattr batch job in progress (Ray engine)\n", encoding="utf-8")
        ds.write_parquet(str(work), ray_remote_args=io_args)
        if missing:
            import pyarrow.parquet as pq

            pq.write_table(table(missing, pred.meta), work / "missing-files.parquet")
        (work / WORK_MARK).unlink()
        if out_dir.exists():
            out_dir.rmdir()  # empty: checked above
        os.replace(work, out_dir)
    finally:
        if started:
            ray.shutdown()
    return {"photos": len(files), "missing": len(missing), "out": str(out_dir)}
