"""Photo -> attributes: detection, alignment, batched inference and decoding, on torch or onnxruntime.

The :class:`Predictor` loads the shipped model, a checkpoint or an ONNX file. The ONNX path imports no torch:
preprocessing and decoding are numpy, the metadata comes from the ONNX file itself.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faceattr.errors import check
from faceattr.runtime.backends import Backend, open_backend
from faceattr.runtime.meta import ModelMeta
from faceattr.runtime.policy import (
    DEFAULT_TTA_FLIP,
    RUNTIMES,
    default_runtime,
    default_tta_flip,
    is_shipped_name,
    shipped_path,
)
from faceattr.runtime.results import Attribute, FaceResult, PhotoResult
from faceattr.runtime.tta import FlipMode, check_flip, run_numpy
from faceattr.tasks.decode import decode_outputs
from faceattr.tasks.kinds import kind_of
from faceattr.tasks.task import Task
from faceattr.vision.align import align_face
from faceattr.vision.detect import Detector, DetectorSpec, Face, create_detector
from faceattr.vision.image import DEFAULT_MAX_PIXELS, REDUCE_ABOVE, ImageError, ImageSource, decode_image, square_resize

log = logging.getLogger(__name__)


# ---- predictor --------------------------------------------------------------------------------------------------
class Predictor:
    """Estimate every face's attributes in photos (or in face crops with ``detect=False``).

    Thread-safe: one Predictor may serve many threads (a web server's pool). The network runs concurrently (torch
    and onnxruntime inference are re-entrant), and so does the default detector (``yunet-ort``); the others (dlib,
    OpenCV and libfacedetection keep per-call state) run under a lock, one photo at a time.
    """

    def __init__(
        self,
        backend: Backend,
        detector: Detector | DetectorSpec | str = "auto",
        yunet_model: str | Path | None = None,
        coverage: float = 0.8,
        batch_size: int = 32,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        tta_flip: FlipMode | None = None,
        min_score: float | None = None,
    ) -> None:
        check(
            isinstance(batch_size, int) and batch_size >= 1,
            f"batch_size must be a positive integer, got {batch_size!r}",
        )
        check(0.0 < coverage < 1.0, f"coverage must be in (0, 1), got {coverage!r}")
        check(
            isinstance(max_pixels, int) and max_pixels >= 1,
            f"max_pixels must be a positive integer, got {max_pixels!r}",
        )
        check(min_score is None or math.isfinite(min_score), f"min_score must be a number, got {min_score!r}")
        self.backend = backend
        self.meta: ModelMeta = backend.meta
        self.tasks: tuple[Task, ...] = self.meta.tasks
        self.input_size = self.meta.input_size
        self.formulation = self.meta.formulation
        self.coverage, self.batch_size, self.max_pixels = coverage, batch_size, max_pixels
        fitted = {k for v in ((self.meta.calibration or {}).get("interval") or {}).values() for k in v.get("q", {})}
        check(
            not fitted or any(abs(float(k) - coverage) < 1e-9 for k in fitted),
            f"this model's intervals are calibrated for coverage {sorted(fitted)}, not {coverage}",
        )
        # average each face's outputs with its mirror image (both in one batch), for every face or ({task:
        # threshold}) for the uncertain ones (faceattr.runtime.tta); None: off, except for the shipped model
        # (from_pretrained), whose default path it is
        self.tta_flip: FlipMode = check_flip(False if tta_flip is None else tta_flip, self.tasks)
        # which detector, its model file and lowest score kept: one spec (a spec given wins over the loose options)
        self.detector_spec = (
            detector
            if isinstance(detector, DetectorSpec)
            else DetectorSpec(detector if isinstance(detector, str) else detector.name, yunet_model, min_score)
        )
        self.min_score = self.detector_spec.min_score
        self._detector: Detector | None = None if isinstance(detector, (str, DetectorSpec)) else detector
        self._detector_lock = threading.Lock()
        self.checkpoint: Path | None = None  # the torch checkpoint behind this model, where known (Grad-CAM)

    # construction
    @classmethod
    def from_checkpoint(cls, path: str | Path, threads: int | None = None, **kw: Any) -> "Predictor":
        pred = cls(open_backend(path, threads, backend="torch"), **kw)
        pred.checkpoint = Path(path)
        return pred

    @classmethod
    def from_onnx(cls, path: str | Path, threads: int | None = None, **kw: Any) -> "Predictor":
        return cls(open_backend(path, threads, backend="onnx"), **kw)

    @classmethod
    def from_pretrained(
        cls, name: str | None = None, threads: int | None = None, runtime: str = "auto", **kw: Any
    ) -> Predictor:
        """A model shipped with faceattr, by name (``faceattr models``, :func:`faceattr.list_pretrained`); None: the
        default one (MobileNetV2, 128 px, UTKFace tasks; trained on UTKFace + FairFace; non-commercial).

        The default path (``runtime="auto"``, ``tta_flip`` unset) is the INT8 ONNX model run by onnxruntime with
        flip test-time augmentation (each face and its mirror image in one batch): faster than the float32 model
        without flip and more accurate (``benchmarks/results/default-path.md``, the README's results); its
        probabilities and intervals are measured on that path (``benchmarks/results/calibration.md``).

        On an x86 CPU without VNNI instructions ``auto`` means ``onnx`` instead (:func:`default_runtime`: there
        onnxruntime's INT8 kernels saturate and the INT8 model's answers drift), with the mirror image for the faces
        whose gender is uncertain only (:func:`default_tta_flip`); the backend's name says which ran.

        ``runtime``: ``onnx-int8`` (= ``auto`` where INT8 is exact), ``onnx`` (the float32 export: the torch
        model's outputs within 1e-5, no torch needed) or ``torch`` (the float16 checkpoint, run in float32);
        ``tta_flip=False`` halves the network's work. Grad-CAM (``faceattr explain``, the service's heat-maps) uses
        the torch checkpoint."""
        check(runtime in RUNTIMES, f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        auto = runtime == "auto"
        if auto:
            runtime = default_runtime()
        if kw.get("tta_flip") is None:
            kw["tta_flip"] = default_tta_flip(runtime) if auto else DEFAULT_TTA_FLIP
        path = shipped_path(runtime, name)
        if not path.is_file():
            raise FileNotFoundError(f"the shipped model is missing from this installation: {path}")
        if runtime == "torch":
            return cls.from_checkpoint(path, threads, **kw)
        pred = cls.from_onnx(path, threads, **kw)
        torch_file = shipped_path("torch", name)
        pred.checkpoint = torch_file if torch_file.is_file() else None
        return pred

    @classmethod
    def load(
        cls, path: str | Path | None = None, threads: int | None = None, runtime: str = "auto", **kw: Any
    ) -> "Predictor":
        """The shipped model (``None``, on ``runtime``: see :meth:`from_pretrained`), an ``.onnx`` file, or a
        checkpoint (``runtime`` applies to the shipped model only)."""
        if path is None or is_shipped_name(str(path)):
            return cls.from_pretrained(None if path is None else str(path), threads, runtime, **kw)
        backend = open_backend(path, threads)
        pred = cls(backend, **kw)
        pred.checkpoint = getattr(backend, "checkpoint", None)
        return pred

    @property
    def detector(self) -> Detector:
        with self._detector_lock:
            if self._detector is None:
                self._detector = create_detector(self.detector_spec, templates=self.meta.alignment.keys())
            return self._detector

    # core steps
    def template(self, detector_name: str) -> np.ndarray:
        return self.meta.template(detector_name)

    def preprocess(self, chips: np.ndarray) -> np.ndarray:
        return self.meta.normalize(chips)

    def predict_chips(self, chips: np.ndarray, tta_flip: bool | None = None) -> list[dict[str, Attribute]]:
        """Attributes of aligned face chips (N x S x S x 3 uint8, S = the model's input size); ``tta_flip``
        turns this predictor's flip on (with its thresholds, if it has them) or off for this call."""
        flip: FlipMode = self.tta_flip if tta_flip is None or (tta_flip and self.tta_flip) else bool(tta_flip)
        if chips.ndim != 4 or chips.shape[1:] != (self.input_size, self.input_size, 3):
            raise ValueError(f"chips must be N x {self.input_size} x {self.input_size} x 3, got {chips.shape}")
        results: list[dict[str, Attribute]] = []
        for s in range(0, len(chips), self.batch_size):
            x = self.preprocess(chips[s : s + self.batch_size])
            raw = run_numpy(self.backend.run, x, flip, self.tasks, self.meta.calibration)
            dec = decode_outputs(raw, self.tasks, self.formulation, self.coverage, self.meta.calibration)
            for i in range(len(next(iter(raw.values())))):
                results.append({t.name: self._attribute(t, dec[t.name], i) for t in self.tasks})
        return results

    def _attribute(self, task: Task, d: dict[str, np.ndarray], i: int) -> Attribute:
        return Attribute(task.name, task.kind, **kind_of(task).attribute_fields(task, d, i))

    def faces_and_chips(self, rgb: np.ndarray) -> tuple[list[Face], np.ndarray]:
        det = self.detector
        if getattr(det, "thread_safe", False):  # yunet-ort: onnxruntime sessions are re-entrant
            faces = det.detect(rgb)
        else:
            with self._detector_lock:  # dlib and OpenCV detectors are not safe to call from several threads
                faces = det.detect(rgb)
        tpl = self.template(det.name)
        chips = (
            np.stack([align_face(rgb, f.landmarks, tpl, self.input_size) for f in faces])
            if faces
            else np.zeros((0, self.input_size, self.input_size, 3), np.uint8)
        )
        return faces, chips

    def __repr__(self) -> str:
        path = getattr(self.backend, "path", None) or self.checkpoint
        model = Path(path).name if path else self.meta.architecture.name
        flip = self.tta_flip if isinstance(self.tta_flip, bool) else dict(self.tta_flip)
        det = self._detector.name if self._detector is not None else self.detector_spec.name
        return (
            f"Predictor(model={model!r}, runtime={self.backend.name!r}, tta_flip={flip!r}, detector={det!r}, "
            f"input_size={self.input_size})"
        )

    def predict(
        self, image: ImageSource, detect: bool = True, source: str | None = None, channels: str = "rgb"
    ) -> PhotoResult:
        """One photo (path, bytes, PIL image or array) -> every face's attributes; an image that cannot be used
        raises :class:`~faceattr.vision.image.ImageError`. Arrays are RGB unless ``channels="bgr"`` (OpenCV's
        ``cv2.imread``); files are decoded to RGB whatever ``channels`` says."""
        res = next(iter(self.predict_many([image], detect, [source] if source else None, channels)))
        if res.error:
            raise ImageError(res.error)
        return res

    def predict_many(
        self,
        images: Iterable[ImageSource],
        detect: bool = True,
        sources: Sequence[str] | None = None,
        channels: str = "rgb",
    ) -> Iterator[PhotoResult]:
        """Yields one :class:`PhotoResult` per image, in order. An image that cannot be used yields a result with
        ``error`` set and no faces, and the stream goes on (:meth:`predict` raises instead). ``channels``: the
        colour order of arrays (``"rgb"``, or ``"bgr"`` for OpenCV's)."""
        check(channels in ("rgb", "bgr"), f"channels must be 'rgb' or 'bgr', got {channels!r}")
        for i, img in enumerate(images):
            src = sources[i] if sources else (str(img) if isinstance(img, (str, Path)) else f"image {i}")
            try:
                if channels == "bgr" and isinstance(img, np.ndarray) and img.ndim == 3 and img.shape[2] in (3, 4):
                    img = np.ascontiguousarray(img[..., [2, 1, 0, *range(3, img.shape[2])]])
                rgb, scale = decode_image(img, self.max_pixels, REDUCE_ABOVE if detect else None)
            except ImageError as e:
                yield PhotoResult(src, 0, 0, [], error=str(e))
                continue
            h, w = round(rgb.shape[0] * scale), round(rgb.shape[1] * scale)
            if detect:
                faces, chips = self.faces_and_chips(rgb)
                faces = [f.rescaled(scale) for f in faces]
                attrs = self.predict_chips(chips) if len(chips) else []
                res = [FaceResult(a, f.box, f.score, f.to_dict()["landmarks"]) for f, a in zip(faces, attrs)]
                yield PhotoResult(src, w, h, res, "" if res else "no face found")
            else:
                chip = square_resize(rgb, self.input_size)[None]
                yield PhotoResult(src, w, h, [FaceResult(self.predict_chips(chip)[0])])
