"""The request logic apart from HTTP routing: decode, detect, estimate, explain; the model card."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextvars
import copy
import io
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from faceattr.errors import UsageError
from faceattr.runtime.draw import UNSURE_SCORE
from faceattr.runtime.predictor import Predictor
from faceattr.runtime.results import Attribute, FaceResult, PhotoResult
from faceattr.serve.batcher import MicroBatcher
from faceattr.serve.errors import ApiError
from faceattr.serve.options import Options, image_error
from faceattr.serve.settings import ServeSettings
from faceattr.vision.image import MIN_SIDE, REDUCE_ABOVE, ImageError, decode_image, square_resize


@dataclass
class RequestWork:
    """One request's deadline and the worker-thread stages it has running."""

    deadline: float
    pending: set[Any] = field(default_factory=set)
    ended: bool = False
    released: bool = False


_WORK: contextvars.ContextVar[RequestWork | None] = contextvars.ContextVar("faceattr_request_work", default=None)


class Service:
    """The request logic, apart from FastAPI's routing (also usable in-process)."""

    def __init__(self, predictor: Predictor, settings: ServeSettings) -> None:
        unknown = [t for t in settings.disabled_tasks if t not in [t.name for t in predictor.tasks]]
        if unknown:
            raise UsageError(f"disabled task(s) {unknown} not in this model's {[t.name for t in predictor.tasks]}")
        self.predictor, self.settings = predictor, settings
        self.batcher = (
            MicroBatcher(predictor, settings.batch_wait_ms, settings.max_batch_faces) if settings.microbatch else None
        )
        self._explain_model: Any = None
        self._explain_lock = threading.Lock()
        self.inflight = 0
        self.served = 0
        self._count_lock = threading.Lock()
        # the requests' stages (decode, detect, estimate, explain); as many threads as asyncio's default pool
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=min(32, (os.cpu_count() or 1) + 4), thread_name_prefix="faceattr-request"
        )

    @property
    def can_explain(self) -> bool:
        """Grad-CAM needs the torch network: the backend's own, or the checkpoint behind an ONNX export."""
        if not self.settings.explain:
            return False
        if getattr(self.predictor.backend, "name", "") == "torch":
            return True
        import importlib.util

        return self.predictor.checkpoint is not None and importlib.util.find_spec("torch") is not None

    # ---- work in threads, bounded by the request's deadline --------------------------------------------------
    async def _stage(self, fn: Any, *args: Any) -> Any:
        """Run one stage of a request (decode, detect, estimate, explain) in a worker thread. No stage starts past
        the request's deadline, and the request stays counted in flight until its last stage has ended, so work
        left running by a 504 still counts against ``max_inflight``."""
        work = _WORK.get()
        if work is not None and time.monotonic() > work.deadline:
            raise ApiError(504, "timeout", f"processing took over {self.settings.timeout_s:g} s")
        # the thread's own future: a cancelled request cannot mark it done while the stage still runs
        fut = self._pool.submit(fn, *args)
        if work is not None:
            with self._count_lock:
                work.pending.add(fut)
            fut.add_done_callback(lambda f: self._stage_done(work, f))
        return await asyncio.wrap_future(fut)

    def close(self) -> None:
        """Stop the micro-batcher and the stage threads (the app's shutdown)."""
        if self.batcher is not None:
            self.batcher.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _stage_done(self, work: RequestWork, fut: Any) -> None:
        with self._count_lock:
            work.pending.discard(fut)
            if work.ended and not work.pending and not work.released:
                work.released = True
                self.inflight -= 1

    def begin(self) -> RequestWork:
        """Count a request in flight (until :meth:`end` and every stage it started have finished)."""
        with self._count_lock:
            self.inflight += 1
        work = RequestWork(time.monotonic() + self.settings.timeout_s)
        _WORK.set(work)
        return work

    def end(self, work: RequestWork) -> None:
        """The request has answered; it leaves the in-flight count when its last running stage ends."""
        with self._count_lock:
            work.ended = True
            if not work.pending and not work.released:
                work.released = True
                self.inflight -= 1

    async def _attributes(self, chips: np.ndarray, tta: bool) -> list[dict[str, Attribute]]:
        if not len(chips):
            return []
        if self.batcher is not None:
            return await asyncio.wrap_future(self.batcher.submit(chips, tta))
        return await self._stage(self.predictor.predict_chips, chips, tta)

    def _chips(self, rgb: np.ndarray, opt: Options) -> tuple[list[Any], np.ndarray, str]:
        if not opt.detect:
            return [None], square_resize(rgb, self.predictor.input_size)[None], ""
        faces, chips = self.predictor.faces_and_chips(rgb)
        msg = "" if faces else "no face found"
        if len(faces) > opt.max_faces:
            keep = sorted(sorted(range(len(faces)), key=lambda i: -faces[i].score)[: opt.max_faces])
            msg = f"{len(faces)} faces found; the {opt.max_faces} with the highest detection score are kept"
            faces, chips = [faces[i] for i in keep], chips[keep]
        return faces, chips, msg

    def _explain(self, chips: np.ndarray, tasks: tuple[str, ...]) -> list[dict[str, str]]:
        """Grad-CAM over each chip, as PNG data URLs; on a private copy of the network (its hooks must not see
        the other requests' batches)."""
        from PIL import Image

        from faceattr.evidence.explain import explain_chips, overlay

        with self._explain_lock:
            if self._explain_model is None:
                backend = self.predictor.backend
                model = getattr(backend, "model", None)  # the torch backend's network
                if model is not None:
                    self._explain_model = copy.deepcopy(model)
                else:
                    from faceattr.models.checkpoint import load_model

                    self._explain_model, _ = load_model(self.predictor.checkpoint)  # type: ignore[arg-type]
            maps = explain_chips(self._explain_model, self.predictor.meta, chips, list(tasks))
        out: list[dict[str, str]] = []
        for i, chip in enumerate(chips):
            d = {}
            for t in tasks:
                buf = io.BytesIO()
                Image.fromarray(overlay(chip, maps[t][i])).save(buf, format="PNG")
                d[t] = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
            out.append(d)
        return out

    async def analyze_one(self, data: bytes, name: str, opt: Options) -> dict[str, Any]:
        try:
            reduce = REDUCE_ABOVE if opt.detect else None
            rgb, scale = await self._stage(decode_image, data, self.settings.max_pixels, reduce)
        except ImageError as e:
            raise image_error(e, name) from None
        h, w = round(rgb.shape[0] * scale), round(rgb.shape[1] * scale)
        if min(h, w) < MIN_SIDE:
            raise ApiError(422, "image_too_small", f"{name}: {w}x{h} is too small to hold a face")
        faces, chips, msg = await self._stage(self._chips, rgb, opt)
        faces = [f if f is None else f.rescaled(scale) for f in faces]
        attrs = await self._attributes(chips, opt.tta_flip)
        results = []
        for f, a in zip(faces, attrs):
            a = {t: a[t] for t in opt.tasks}
            results.append(FaceResult(a) if f is None else FaceResult(a, f.box, f.score, f.to_dict()["landmarks"]))
        out = PhotoResult(name, w, h, results, msg).to_dict()
        if opt.explain and len(chips):
            maps = await self._stage(self._explain, chips, opt.explain)
            for face, m in zip(out["faces"], maps):
                face["explain"] = m
        return out

    async def analyze(self, images: list[tuple[str, bytes]], opt: Options) -> dict[str, Any]:
        if not images:
            raise ApiError(422, "no_image", "no image in the request (multipart file fields, or JSON images[])")
        if len(images) > self.settings.max_images:
            raise ApiError(
                413, "too_many_images", f"{len(images)} images in one request; the limit is {self.settings.max_images}"
            )
        for name, data in images:
            if not data:
                raise ApiError(422, "empty_image", f"{name}: empty file")
        results = await asyncio.gather(*(self.analyze_one(d, n, opt) for n, d in images))
        self.served += len(images)
        return {"model": self.model_name, "results": list(results)}

    @property
    def model_name(self) -> str:
        meta = self.predictor.meta
        return f"{meta.architecture.name} {meta.input_size} px ({getattr(self.predictor.backend, 'name', '')})"

    def model_card(self) -> dict[str, Any]:
        """What ``GET /v1/model`` answers: the model in plain words, its licence, tasks and classes, and the figures
        measured on the path this service runs (no server paths)."""
        from faceattr import __version__
        from faceattr.runtime.catalog import shipped_for_file

        meta = self.predictor.meta
        path = getattr(self.predictor.backend, "path", None) or self.predictor.checkpoint
        info = shipped_for_file(path)
        tasks = []
        for t in meta.tasks:
            d: dict[str, Any] = {"name": t.name, "kind": t.kind, "enabled": t.name not in self.settings.disabled_tasks}
            if t.kind == "nominal":
                d["classes"] = [str(c) for c in t.classes]
            elif t.is_numeric:
                d["range"] = [float(t.values[0]), float(t.values[-1])]
            else:
                d["levels"] = [str(x) for x in t.levels]
            tasks.append(d)
        calib = meta.calibration or {}
        default_path = bool(info) and self.predictor.tta_flip is not False
        return {
            "faceattr_version": __version__,
            "model": info.name if info else "a user's model",
            "summary": info.summary if info else "",
            "licence": info.licence if info else "the licence its owner gave it",
            "licence_detail": info.licence_detail if info else "",
            "commercial_use": info.commercial_use if info else None,
            "trained_on": list(info.trained_on) if info else [],
            "runtime": getattr(self.predictor.backend, "name", ""),
            # the default of /v1/analyze's tta_flip (the measured default path): true, false, or {task: threshold} where
            # only the faces uncertain for those tasks get their mirror image (faceattr.runtime.tta)
            "tta_flip": self.predictor.tta_flip,
            "architecture": meta.architecture.name,
            "input_size": meta.input_size,
            "tasks": tasks,
            # detections scored below this are shown as uncertain, without attributes (faceattr.runtime.draw)
            "uncertain_below": UNSURE_SCORE,
            # measured on the default path (INT8 or float32 as this CPU runs it, with flip), the one served unless a
            # request or the deployment turns flip off
            "measured": (info.figures if info else {}) if default_path else {},
            "calibration": {
                "temperature": calib.get("temperature"),
                "bias": calib.get("bias") or {},
                "interval_coverage": self.predictor.coverage,
            },
            "limits": {
                "max_upload_mb": self.settings.max_upload_mb,
                "max_pixels": self.settings.max_pixels,
                "max_images": self.settings.max_images,
                "max_faces": self.settings.max_faces,
                "timeout_s": self.settings.timeout_s,
            },
            "explain": self.can_explain,
            "microbatch": self.batcher is not None,
        }
