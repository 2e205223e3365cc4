"""``faceattr batch``: attributes of every face in a large set of photos, as sharded, resumable Parquet files.

- **Inputs**: folders (recursively), glob patterns, ``.txt`` lists (one path per line), or ``.csv``/``.parquet``
  tables with a path column; put in one stable order (sorted, each file once).
- **Shards**: the ordered list is cut into shards of ``shard_size`` photos; shard ``k`` of ``n`` is written to
  ``<out>/part-<k>-of-<n>.parquet`` -- first as ``.partial``, renamed when complete. A rerun skips every complete
  shard, so a killed job loses at most the shard in flight; ``shards=(i, m)`` runs only the shards with
  ``k % m == i`` (machine i of m, each with the same inputs and options). Changing the inputs, the shard size or the
  model between runs is refused (``<out>/_batch.json`` records them; a name that starts with ``_`` is skipped by
  pandas, pyarrow and DuckDB, so ``pd.read_parquet(out)`` reads the parts alone). A part is trusted on a rerun only
  when it reads back with the job's schema, fingerprint and row count (kept in its Parquet metadata); anything
  else (a truncated copy, a disk fault) is redone, with a warning.
- **Schema**: one fixed Arrow schema for every shard of every engine (:func:`arrow_schema`): a shard of unreadable
  or faceless photos has the same column types as any other. File names that are not valid UTF-8 are stored with
  their undecodable bytes as ``\\xNN`` escapes.
- **Rows**: one per face (source, face index, box, score, landmarks, every task's label, value, interval and
  probabilities, model) plus one per photo with no face (``num_faces`` 0, ``message``) or an error (``error``): a run
  never stops on a bad file.
- **Throughput**: ``workers`` processes (one per core by default), each running the whole pipeline on one thread
  (:class:`Pipeline`: decode, detect, align, the network on the faces of a chunk of photos, the rows): only file
  names go to a worker and only rows come back, no image crosses processes. The shipped model runs on the INT8
  ONNX runtime by default (:meth:`Predictor.from_pretrained`, ``runtime="auto"``: float32 on a CPU without VNNI,
  where INT8 drifts). The Ray engine runs the same :class:`Pipeline` in its actors.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceattr.batch.schema import BATCH_FORMAT, arrow_schema, part_is_complete, rows_of, table, write_part
from faceattr.errors import UsageError, check
from faceattr.runtime.meta import ModelMeta
from faceattr.vision.detect import DetectorSpec

log = logging.getLogger(__name__)


def list_inputs(inputs: Sequence[str], path_column: str = "path") -> list[str]:
    """Every photo named by ``inputs`` in one stable order (sorted, each file once)."""
    from faceattr.runtime.files import find_image_paths

    found: set[str] = set()
    plain: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_file() and p.suffix.lower() in (".txt", ".csv", ".parquet"):
            if p.suffix.lower() == ".txt":
                lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
                found.update(ln for ln in lines if ln and not ln.startswith("#"))
            else:
                import pandas as pd

                df = pd.read_parquet(p) if p.suffix.lower() == ".parquet" else pd.read_csv(p)
                if path_column not in df.columns:
                    raise UsageError(f"{p}: no {path_column!r} column (columns: {list(df.columns)}); see --path-column")
                base = p.parent
                found.update(str(v if Path(str(v)).is_absolute() else base / str(v)) for v in df[path_column])
        else:
            plain.append(item)
    if plain:
        found.update(str(f) for f in find_image_paths(plain).files)
    # one file under several spellings (a/./x.jpg, a//x.jpg, an absolute path) is one photo: the first spelling
    # in sorted order names it
    seen: dict[str, str] = {}
    for f in sorted(found):
        seen.setdefault(os.path.realpath(f), f)
    return sorted(seen.values())


@dataclass(frozen=True)
class Job:
    detect: bool
    detector: DetectorSpec
    max_pixels: int
    meta: ModelMeta


class Pipeline:
    """One worker's whole pipeline on one thread: its own detector and model (the model loaded once), photo paths
    in, the job's rows out. Not shared between threads (dlib and OpenCV detectors are not thread-safe):
    one per worker process or Ray actor."""

    def __init__(
        self, job: Job, model: str | None, runtime: str, batch_size: int, model_name: str | None, threads: int = 1
    ) -> None:
        from faceattr.runtime.predictor import Predictor

        self.job = job
        self.pred = Predictor.load(model, threads, runtime=runtime, batch_size=batch_size, max_pixels=job.max_pixels)
        self.model_name = model_name or _model_name(model, self.pred)
        self.detector: Any = None
        if job.detect:
            from faceattr.vision.detect import create_detector

            self.detector = create_detector(job.detector, templates=job.meta.alignment.keys())
            self.template = job.meta.template(self.detector.name)

    def rows(self, paths: Sequence[str]) -> list[dict[str, Any]]:
        """The rows of the photos at ``paths``, the network run once over all their faces."""
        preps = [self.prepare(p) for p in paths]
        chips = [p["chips"] for p in preps if p.get("chips") is not None]
        attrs = self.pred.predict_chips(np.concatenate(chips)) if chips else []
        rows: list[dict[str, Any]] = []
        j = 0
        for p in preps:
            nf = 0 if p.get("chips") is None else len(p["chips"])
            rows += rows_of(p, attrs[j : j + nf], self.model_name)
            j += nf
        return rows

    def prepare(self, path: str) -> dict[str, Any]:
        """Decode, detect and align the photo at ``path``: the face chips and their boxes, or an error."""
        from faceattr.vision.align import align_face
        from faceattr.vision.image import REDUCE_ABOVE, ImageError, decode_image, square_resize

        job = self.job
        name = str(path)
        size = job.meta.input_size
        try:
            rgb, scale = decode_image(path, job.max_pixels, REDUCE_ABOVE if job.detect else None)
        except ImageError as e:
            return {"source": name, "error": str(e)}
        h, w = round(rgb.shape[0] * scale), round(rgb.shape[1] * scale)
        if not job.detect:
            return {"source": name, "width": w, "height": h, "faces": [{}], "chips": square_resize(rgb, size)[None]}
        faces = self.detector.detect(rgb)
        chips = np.stack([align_face(rgb, f.landmarks, self.template, size) for f in faces]) if faces else None
        boxes = [f.rescaled(scale).to_dict() for f in faces]
        return {"source": name, "width": w, "height": h, "faces": boxes, "chips": chips}


_WORKER: dict[str, Pipeline] = {}  # per worker process: its pipeline
CHUNK_PHOTOS = 8  # photos per task sent to a worker: its network runs on their faces (and mirror images) together


def _exit_with_parent() -> None:
    """End this worker within a second of its parent's death (``kill -9`` of ``faceattr batch`` included), so no
    orphaned worker holds a core: a thread watches the parent's pid."""
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="faceattr-parent-watch", daemon=True).start()


def single_threaded() -> None:
    """One core per worker: every pool this process starts (OpenMP of yuface and dlib, OpenCV's) gets one thread,
    so the workers do not fight for the cores. yuface's OpenMP reads ``OMP_NUM_THREADS`` when it loads (later, in
    this fresh process)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import cv2

    cv2.setNumThreads(1)


def _init_worker(job: Job, model: str | None, runtime: str, batch_size: int, model_name: str, threads: int) -> None:
    single_threaded()
    _exit_with_parent()
    _WORKER.clear()
    _WORKER["pipeline"] = Pipeline(job, model, runtime, batch_size, model_name, threads)


def _rows(paths: list[str]) -> list[dict[str, Any]]:
    return _WORKER["pipeline"].rows(paths)


def detector_spec(detector: str | DetectorSpec, model: str | None, min_score: float | None) -> DetectorSpec:
    """A job's detector as one spec (a spec given wins over the loose options)."""
    return detector if isinstance(detector, DetectorSpec) else DetectorSpec(detector, model, min_score)


def _fingerprint(files: list[str], shard_size: int, model: str, job: Job) -> str:
    d = job.detector
    h = hashlib.sha256(
        f"{BATCH_FORMAT}|{shard_size}|{model}|{job.detect}|{d.name}|{d.min_score}|{job.max_pixels}".encode()
    )
    for f in files:
        h.update(f.encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


def run_batch(
    inputs: Sequence[str],
    out: str | Path,
    model: str | Path | None = None,
    *,
    shard_size: int = 1000,
    shards: tuple[int, int] = (0, 1),
    workers: int | None = None,
    detect: bool = True,
    detector: str | DetectorSpec = "auto",
    yunet_model: str | None = None,
    max_pixels: int = 64_000_000,
    min_score: float | None = None,
    batch_size: int = 64,
    runtime: str = "auto",
    threads: int | None = None,
    path_column: str = "path",
    progress: bool = False,
) -> dict[str, Any]:
    """Run (or resume) a batch job; returns a summary. See the module docstring."""
    from faceattr.runtime.predictor import Predictor
    from faceattr.safeio import OutputPlan, atomic_output

    i, m = shards
    check(m >= 1 and 0 <= i < m, f"shards must be i/m with 0 <= i < m, got {i}/{m}")
    check(shard_size >= 1, f"shard size must be at least 1, got {shard_size}")
    check(workers is None or workers >= 1, f"workers must be at least 1, got {workers}")
    check(batch_size >= 1, f"batch size must be at least 1, got {batch_size}")
    files = list_inputs(inputs, path_column)
    if not files:
        raise UsageError(f"no photos in {list(inputs)}")
    out_dir = OutputPlan(files).claim_dir(out, "--out")
    pred = Predictor.load(model, threads, runtime=runtime, batch_size=batch_size, max_pixels=max_pixels)
    model_name = _model_name(model, pred)
    job = Job(detect, detector_spec(detector, yunet_model, min_score), max_pixels, pred.meta)
    if detect:  # the detector and its template exist, before anything is written
        from faceattr.vision.detect import create_detector

        job.meta.template(create_detector(job.detector, templates=job.meta.alignment.keys()).name)
    n = (len(files) + shard_size - 1) // shard_size
    fp = _fingerprint(files, shard_size, model_name, job)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "_batch.json"
    if not manifest.is_file() and (out_dir / "batch.json").is_file():  # the job file's earlier name
        os.replace(out_dir / "batch.json", manifest)
    if manifest.is_file():
        old = json.loads(manifest.read_text(encoding="utf-8"))
        if old.get("fingerprint") != fp:
            raise UsageError(
                f"{out_dir} holds a batch job with other inputs, shard size, model or detector; use another --out"
            )
    else:
        with atomic_output(manifest) as f:
            f.write(
                json.dumps(
                    {
                        "format": BATCH_FORMAT,
                        "fingerprint": fp,
                        "photos": len(files),
                        "shards": n,
                        "shard_size": shard_size,
                        "model": model_name,
                    },
                    indent=1,
                )
            )
    schema = arrow_schema(pred.meta)
    mine = [k for k in range(n) if k % m == i]
    todo = []
    for k in mine:
        part_path = out_dir / f"part-{k:05d}-of-{n:05d}.parquet"
        if part_path.exists() and not part_is_complete(part_path, schema, fp):
            log.warning("%s does not read back as a complete part of this job: redoing it", part_path)
        if not (part_path.is_file() and part_is_complete(part_path, schema, fp)):
            todo.append(k)
    summary: dict[str, Any] = {
        "photos": len(files),
        "shards": n,
        "skipped_done": len(mine) - len(todo),
        "written": [],
        "faces": 0,
        "errors": 0,
    }
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(len(files[k * shard_size : (k + 1) * shard_size]) for k in todo), unit="photo")
    workers = workers or max(1, (os.cpu_count() or 1))
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # fresh workers: no forked onnxruntime/torch thread state
    model_arg = str(model) if model else None
    init = (job, model_arg, runtime, batch_size, model_name, threads or 1)
    # every shard's chunks in one stream, a bounded number in flight: the workers go on with the next shard while
    # this process writes the last one
    plan = [
        (k, files[s : min(s + CHUNK_PHOTOS, (k + 1) * shard_size)])
        for k in todo
        for s in range(k * shard_size, min((k + 1) * shard_size, len(files)), CHUNK_PHOTOS)
    ]
    last_chunk = {k: i for i, (k, _) in enumerate(plan)}
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=init) as ex:
        rows: list[dict[str, Any]] = []
        for i, chunk_rows in enumerate(_in_order(ex, [c for _, c in plan], 4 * workers)):
            k, chunk = plan[i]
            rows += chunk_rows
            if bar is not None:
                bar.update(len(chunk))
            if i != last_chunk[k]:
                continue
            target = out_dir / f"part-{k:05d}-of-{n:05d}.parquet"
            write_part(table(rows, pred.meta), target, fp)
            summary["written"].append(str(target))
            summary["faces"] += sum(1 for r in rows if r.get("face") is not None)
            summary["errors"] += sum(1 for r in rows if r.get("error"))
            rows = []
    if bar is not None:
        bar.close()
    return summary


def _in_order(ex: ProcessPoolExecutor, chunks: list[list[str]], window: int) -> Iterator[list[dict[str, Any]]]:
    """The rows of each chunk, in order, with at most ``window`` chunks submitted and not yet taken."""
    from collections import deque

    pending: deque[Any] = deque()
    it = iter(chunks)
    for c in it:
        pending.append(ex.submit(_rows, c))
        if len(pending) >= window:
            break
    while pending:
        yield pending.popleft().result()
        nxt = next(it, None)
        if nxt is not None:
            pending.append(ex.submit(_rows, nxt))


def _model_name(model: str | Path | None, pred: Any) -> str:
    """The ``model`` column: a user's model file's name, or the shipped model with the backend that ran it."""
    return Path(str(model)).name if model else f"shipped ({pred.backend.name})"
