"""Alignment of detected faces to the crop geometry the model was trained on.

A *template* gives, for one detector, where its three canonical landmarks (left eye, right eye, nose) fall in
the training chips, as fractions of the chip side. It is measured (:func:`calibrate_template`) by running
the detector on training chips and averaging, and is stored in the checkpoint's metadata. A face in a photo
is then mapped onto the template by a least-squares similarity transform (rotation, scale, translation).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence

import numpy as np

from faceattr.vision.detect import Detector, Face

log = logging.getLogger(__name__)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 matrix M of the similarity (uniform scale, rotation, translation) minimising |M src - dst|^2.

    Solved as linear least squares in (a, b, tx, ty) with M = [[a, -b, tx], [b, a, ty]].
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError("need matching N x 2 point sets with N >= 2")
    n = len(src)
    A = np.zeros((2 * n, 4))
    A[0::2] = np.stack([src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)], 1)
    A[1::2] = np.stack([src[:, 1], src[:, 0], np.zeros(n), np.ones(n)], 1)
    a, b, tx, ty = np.linalg.lstsq(A, dst.reshape(-1), rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty]])


def align_face(rgb: np.ndarray, landmarks: np.ndarray, template: np.ndarray, size: int) -> np.ndarray:
    """Warp the face whose landmarks are given onto ``template`` (fractions) in a ``size`` x ``size`` chip."""
    import cv2

    dst = np.asarray(template, np.float64) * size
    src = np.asarray(landmarks, np.float64)[: len(dst)]  # a template may use only the first landmarks
    M = similarity_transform(src, dst)
    scale = math.hypot(M[0, 0], M[1, 0])
    img = rgb
    if scale < 0.5:  # shrink the photo first, so the warp does not alias
        f = min(1.0, 2.0 * scale)
        img = cv2.resize(
            rgb, (max(1, round(rgb.shape[1] * f)), max(1, round(rgb.shape[0] * f))), interpolation=cv2.INTER_AREA
        )
        src = src * np.array([img.shape[1] / rgb.shape[1], img.shape[0] / rgb.shape[0]])
        M = similarity_transform(src, dst)
    return cv2.warpAffine(
        np.ascontiguousarray(img), M, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101
    )


def calibrate_template(detector: Detector, images: Iterable[np.ndarray], pad: float = 0.5) -> dict:
    """Mean landmark positions (fractions of the chip side) of ``detector`` on training chips.

    Chips are padded by ``pad`` of their side (reflection) so detectors that need context around a face find it.
    """
    import cv2

    pts, n_seen = [], 0
    for chip in images:
        n_seen += 1
        h, w = chip.shape[:2]
        p = int(round(pad * max(h, w)))
        padded = cv2.copyMakeBorder(np.ascontiguousarray(chip), p, p, p, p, cv2.BORDER_REFLECT101)
        faces = [f for f in detector.detect(padded)]
        if not faces:
            continue
        c = np.array([p + w / 2, p + h / 2])
        best = min(faces, key=lambda f: float(np.hypot(*(np.array(f.center) - c))))
        pts.append((best.landmarks - p) / np.array([w, h]))
    if not pts:
        raise RuntimeError("the detector found no face in any calibration chip")
    arr = np.stack(pts)
    return {
        "points": np.median(arr, 0).round(5).tolist(),
        "n": len(pts),
        "of": n_seen,
        "spread": arr.std(0).mean().round(5).item(),
    }


def nearest_to_center(faces: Sequence[Face], width: int, height: int) -> Face | None:
    if not faces:
        return None
    c = np.array([width / 2, height / 2])
    return min(faces, key=lambda f: float(np.hypot(*(np.array(f.center) - c))))
