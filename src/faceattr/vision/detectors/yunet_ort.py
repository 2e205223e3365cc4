"""YuNet run by onnxruntime (``yunet-ort``, the default detector): the network file ships with faceattr.

The network is YuNet-s from libfacedetection.train (Shiqi Yu et al., Apache-2.0; ``weights/yunet-s.onnx``, origin
and SHA-256 in ``weights/models.json``), the same weights as OpenCV's ``face_detection_yunet_2023mar.onnx``, so
its boxes and five landmarks are OpenCV YuNet's and it aligns with the model's ``yunet`` template. Decoding
follows OpenCV's ``FaceDetectorYN``: one prediction per cell of the stride-8, 16 and 32 maps, score
sqrt(class x objectness), box centre offsets and log sizes in cells, landmarks as offsets in cells, then
non-maximum suppression.

Unlike libfacedetection's OpenMP build (``yuface``) it runs on one thread without busy-waiting and is re-entrant,
so a service or batch job runs many detections at once (``thread_safe``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from faceattr.vision.detect import DetectorSpec, DetectorUnavailable, Face, _order_eyes, detect_pyramid, dist_version

YUNET_FILE = Path(__file__).parent.parent.parent / "weights" / "yunet-s.onnx"
YUNET_SHA256 = "daede24002cc8590f457998cc5e6c9e8b82f45f6bd969506a8913cd4ed10a2d3"
STRIDES = (8, 16, 32)


def decode_yunet(
    outputs: dict[str, np.ndarray], width: int, height: int, min_score: float, nms_iou: float = 0.3
) -> np.ndarray:
    """YuNet's raw outputs for one padded ``width`` x ``height`` input -> K x 15 rows (x0, y0, x1, y1, 10 landmark
    coordinates, score), best first, after non-maximum suppression at ``nms_iou``."""
    rows = []
    for s in STRIDES:
        cols = -(-width // s)
        score = np.sqrt(np.clip(outputs[f"cls_{s}"][0, :, 0], 0, 1) * np.clip(outputs[f"obj_{s}"][0, :, 0], 0, 1))
        idx = np.flatnonzero(score >= min_score)
        if not len(idx):
            continue
        c, r = (idx % cols).astype(np.float32), (idx // cols).astype(np.float32)
        b, k = outputs[f"bbox_{s}"][0, idx], outputs[f"kps_{s}"][0, idx]
        cx, cy = (c + b[:, 0]) * s, (r + b[:, 1]) * s
        w, h = np.exp(b[:, 2]) * s, np.exp(b[:, 3]) * s
        kps = np.empty((len(idx), 10), np.float32)
        kps[:, 0::2] = (k[:, 0::2] + c[:, None]) * s
        kps[:, 1::2] = (k[:, 1::2] + r[:, None]) * s
        box = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
        rows.append(np.concatenate([box, kps, score[idx, None]], 1))
    if not rows:
        return np.zeros((0, 15), np.float32)
    det = np.concatenate(rows)
    det = det[np.argsort(-det[:, 14], kind="stable")]
    return det[nms(det[:, :4], nms_iou)]


def nms(boxes: np.ndarray, iou: float) -> list[int]:
    """Indices kept by greedy non-maximum suppression over ``boxes`` (x0, y0, x1, y1) sorted best first."""
    area = np.maximum(0, boxes[:, 2] - boxes[:, 0]) * np.maximum(0, boxes[:, 3] - boxes[:, 1])
    order, keep = np.arange(len(boxes)), []
    while len(order):
        i, rest = order[0], order[1:]
        keep.append(int(i))
        x0 = np.maximum(boxes[i, 0], boxes[rest, 0])
        y0 = np.maximum(boxes[i, 1], boxes[rest, 1])
        x1 = np.minimum(boxes[i, 2], boxes[rest, 2])
        y1 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.maximum(0, x1 - x0) * np.maximum(0, y1 - y0)
        union = area[i] + area[rest] - inter
        order = rest[inter <= iou * np.maximum(union, 1e-9)]
    return keep


class YuNetOrtDetector:
    """YuNet-s on onnxruntime, one thread; safe to call from many threads at once."""

    name = "yunet-ort"
    thread_safe = True

    def __init__(self, model: str | Path | None = None, min_score: float = 0.6, max_side: int = 960) -> None:
        path = Path(model) if model else YUNET_FILE
        if not path.is_file():
            raise DetectorUnavailable(f"the YuNet network file is missing from this installation: {path}")
        if model is None and hashlib.sha256(path.read_bytes()).hexdigest() != YUNET_SHA256:
            raise DetectorUnavailable(f"{path} is not the YuNet file faceattr ships (SHA-256 differs); reinstall")
        try:
            from faceattr.onnxrt import open_session

            self._session: Any = open_session(path, threads=1)
        except ImportError as e:
            raise DetectorUnavailable("the yunet-ort detector needs onnxruntime: pip install onnxruntime") from e
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise DetectorUnavailable(f"{path}: not a YuNet network onnxruntime can load ({e})") from e
        self._outputs = [o.name for o in self._session.get_outputs()]
        if not {f"{k}_{s}" for k in ("cls", "obj", "bbox", "kps") for s in STRIDES} <= set(self._outputs):
            raise DetectorUnavailable(f"{path}: not a YuNet network (outputs {self._outputs})")
        self._input = self._session.get_inputs()[0].name
        self.min_score, self.max_side = min_score, max_side
        version = dist_version("onnxruntime")
        self.origin = f"YuNet-s ({path.name}, libfacedetection.train, Apache-2.0) on onnxruntime {version}"

    def detect(self, rgb: np.ndarray) -> list[Face]:
        return detect_pyramid(self._detect_small, rgb, self.max_side)

    def _detect_small(self, small: np.ndarray) -> list[Face]:
        h, w = small.shape[:2]
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
        x = np.zeros((1, 3, ph, pw), np.float32)
        x[0, :, :h, :w] = small[:, :, ::-1].transpose(2, 0, 1)  # BGR, 0-255, zero padding right and below
        outs = dict(zip(self._outputs, self._session.run(self._outputs, {self._input: x})))
        faces = []
        for row in decode_yunet(outs, pw, ph, self.min_score):
            lm = row[4:14].reshape(5, 2).astype(np.float64)  # right eye, left eye, nose, right/left mouth corner
            e1, e2 = _order_eyes(lm[0], lm[1])
            m1, m2 = _order_eyes(lm[3], lm[4])
            box = (float(row[0]), float(row[1]), float(row[2]), float(row[3]))
            faces.append(Face(box, float(row[14]), np.stack([e1, e2, lm[2], m1, m2])))
        return faces


def create(spec: DetectorSpec, **kwargs: Any) -> YuNetOrtDetector:
    return YuNetOrtDetector(spec.model, **kwargs)
