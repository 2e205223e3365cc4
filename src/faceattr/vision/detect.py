"""Face detection with landmarks.

Detectors (all offline):
- ``dlib``: dlib's HOG frontal-face detector + its 5-point landmark model (from the PyPI packages ``dlib-bin``
  and ``face-recognition-models``; works out of the box);
- ``dlib-cnn``: dlib's MMOD CNN detector (more poses, slower on a CPU) + the same landmarks;
- ``yunet-ort`` (the default): YuNet-s (Shiqi Yu et al., libfacedetection.train, Apache-2.0), the network file
  shipped in ``weights/``, run by onnxruntime on one thread: OpenCV YuNet's boxes and five landmarks (the same
  weights), re-entrant, and 1.8x faster per photo than ``yuface`` end to end (``benchmarks/results/photo-path.md``);
  it finds the profile and tilted faces that dlib's HOG misses;
- ``yuface``: YuNet as compiled into libfacedetection (BSD-3-Clause), from the PyPI package ``yuface`` (an OpenMP
  build; a close but not identical network);
- ``yunet``: OpenCV's YuNet (``cv2.FaceDetectorYN``) with a model file the user gives (it is in no package).

Every detector returns :class:`Face` objects with a box, a detection score and canonical landmarks
(left-eye centre, right-eye centre, nose, and for YuNet the two mouth corners; "left" as seen in the image);
each detector's landmarks are aligned to a template measured with that same detector.
Detection runs on a copy downscaled to ``max_side`` for speed; coordinates are mapped back to the photo. A photo
more than twice ``max_side`` on its long side is also searched in overlapping tiles at finer scales
(:func:`detect_pyramid`), so that a small face in a large photo (a 260 px face in an 8000 px photo, a group
photo in a collage) is not shrunk below what the detector can see; photos up to 2 x ``max_side`` cost the same
as before.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from faceattr.errors import FaceattrError
from faceattr.registry import Registry

log = logging.getLogger(__name__)

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")


class DetectorUnavailable(FaceattrError, RuntimeError):
    """A detector whose package or model file is missing; the message says how to get it."""


@dataclass
class Face:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in photo pixels
    score: float
    landmarks: np.ndarray  # K x 2 (photo pixels): left eye, right eye, nose [, left and right mouth corner]
    extra_landmarks: dict[str, tuple[float, float]] = field(default_factory=dict)

    def rescaled(self, k: float) -> Face:
        """This face in a photo ``k`` times the size of the one it was found in."""
        return self if k == 1.0 else _scaled(self, 1.0 / k)

    @property
    def center(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "box": [round(float(v), 1) for v in self.box],
            "score": round(float(self.score), 4),
            "landmarks": {
                n: [round(float(x), 1), round(float(y), 1)] for n, (x, y) in zip(LANDMARK_NAMES, self.landmarks)
            },
        }
        d["landmarks"].update(
            {k: [round(float(x), 1), round(float(y), 1)] for k, (x, y) in self.extra_landmarks.items()}
        )
        return d


class Detector(Protocol):
    name: str
    origin: str

    def detect(self, rgb: np.ndarray) -> list[Face]: ...


def _order_eyes(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (a, b) if a[0] <= b[0] else (b, a)


def _downscale(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    h, w = rgb.shape[:2]
    s = max(h, w)
    if s <= max_side:
        return rgb, 1.0
    import cv2

    f = max_side / s
    return cv2.resize(rgb, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA), f


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _scaled(face: Face, f: float, dx: float = 0.0, dy: float = 0.0) -> Face:
    b = face.box
    return Face(
        (b[0] / f + dx, b[1] / f + dy, b[2] / f + dx, b[3] / f + dy),
        face.score,
        face.landmarks / f + np.array([dx, dy]),
        {k: (x / f + dx, y / f + dy) for k, (x, y) in face.extra_landmarks.items()},
    )


def tile_origins(length: int, tile: int, overlap: float) -> list[int]:
    """Start offsets of tiles of ``tile`` px covering ``length`` px with at least ``overlap`` of a tile shared."""
    if length <= tile:
        return [0]
    n = int(np.ceil((length - tile) / (tile * (1 - overlap)))) + 1
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def detect_pyramid(
    detect_small: "Callable[[np.ndarray], list[Face]]",
    rgb: np.ndarray,
    max_side: int,
    overlap: float = 0.25,
    max_levels: int = 2,
    iou: float = 0.4,
) -> list[Face]:
    """Faces in photo coordinates. Level 0: the whole photo downscaled to ``max_side``. When the photo is more
    than 2 x ``max_side`` on its long side, levels 1..``max_levels`` cut it into overlapping square tiles of half
    the previous level's side (each downscaled to ``max_side``, never upscaled), so each level sees faces at twice
    the resolution of the one before; detections are merged by non-maximum suppression (IoU > ``iou``: the
    higher score stays). A face cut by a tile border is whole in a neighbouring tile (the overlap) or seen at the
    coarser level."""
    h, w = rgb.shape[:2]
    small, f = _downscale(rgb, max_side)
    faces = [_scaled(x, f) for x in detect_small(np.ascontiguousarray(small))]
    side = max(h, w)
    if side > 2 * max_side:
        tile = side
        for _ in range(max_levels):
            tile = max(max_side, tile // 2)
            for y0 in tile_origins(h, tile, overlap):
                for x0 in tile_origins(w, tile, overlap):
                    crop = rgb[y0 : y0 + tile, x0 : x0 + tile]
                    cs, cf = _downscale(crop, max_side)
                    faces += [_scaled(x, cf, x0, y0) for x in detect_small(np.ascontiguousarray(cs))]
            if tile <= max_side:
                break
    faces.sort(key=lambda x: -x.score)
    kept: list[Face] = []
    for fc in faces:
        if all(_iou(fc.box, k.box) <= iou for k in kept):
            kept.append(fc)
    return kept


def dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


@dataclass(frozen=True)
class DetectorSpec:
    """Which detector, with its model file (for those that need one) and the lowest detection score kept."""

    name: str = "auto"
    model: str | Path | None = None
    min_score: float | None = None


# name -> factory(spec, **options) -> Detector. Adding a detector: one module under detectors/ and one line here.
DETECTORS: Registry[Callable[..., Detector]] = Registry("detector")
DETECTORS.register("yunet-ort", "faceattr.vision.detectors.yunet_ort:create")
DETECTORS.register("yuface", "faceattr.vision.detectors.yuface:create")
DETECTORS.register("dlib", "faceattr.vision.detectors.dlib:create_hog")
DETECTORS.register("dlib-cnn", "faceattr.vision.detectors.dlib:create_cnn")
DETECTORS.register("yunet", "faceattr.vision.detectors.yunet:create")
DETECTORS.register("yunet-dlib", "faceattr.vision.detectors.yunet:create_with_dlib_landmarks")


def list_detectors() -> list[str]:
    """The detector names a user may choose (``auto`` picks one of them)."""
    return ["auto", *DETECTORS.names()]


def create_detector(
    name: str | DetectorSpec = "auto",
    yunet_model: str | Path | None = None,
    templates: Collection[str] | None = None,
    **kwargs: object,
) -> Detector:
    """``auto`` = OpenCV's YuNet when a YuNet file is given (argument or FACEATTR_YUNET_MODEL), else ``yunet-ort``
    (YuNet-s, shipped with faceattr, on onnxruntime: one thread, re-entrant), else ``yuface`` (YuNet compiled into
    libfacedetection) where that package is installed, else dlib HOG. ``templates``: the detectors the model has
    alignment templates for (without a YuNet file, ``auto`` skips the others: a model calibrated for dlib alone gets
    dlib). ``yunet-dlib`` takes YuNet's boxes and dlib's landmarks.

    Why YuNet: it finds the profile and tilted faces dlib's HOG misses, and through the shipped model's photo path
    it is as accurate as libfacedetection's build at about half the time per photo
    (``benchmarks/results/photo-path.md``; wide photos: ``benchmarks/results/wide-*.md``)."""
    spec = name if isinstance(name, DetectorSpec) else DetectorSpec(name, yunet_model, None)
    if spec.min_score is not None:
        kwargs.setdefault("min_score", spec.min_score)
    model = spec.model or os.environ.get("FACEATTR_YUNET_MODEL")
    name = spec.name
    if name == "auto":
        has = set(templates) if templates is not None else {"yunet", "yuface", "dlib"}
        yunet_ok = bool(has & {"yunet", "yuface"})
        if model:  # asked for by the user: used (a model without its template then says so)
            name = "yunet"
        elif yunet_ok and importlib.util.find_spec("onnxruntime"):
            name = "yunet-ort"
        elif yunet_ok and importlib.util.find_spec("yuface"):
            name = "yuface"
        else:
            name = "dlib"
            if yunet_ok:
                log.info("neither onnxruntime nor yuface is installed here: using dlib HOG")
    if name not in DETECTORS:
        raise DetectorUnavailable(f"unknown detector {name!r}; choose from {', '.join(list_detectors())}")
    return DETECTORS.get(name)(DetectorSpec(name, model, spec.min_score), **kwargs)
