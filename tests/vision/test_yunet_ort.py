"""The default detector: YuNet-s on onnxruntime (decoding, suppression, parity with OpenCV, threads, bad files)."""

from __future__ import annotations

import hashlib
import threading

import numpy as np
import pytest

from conftest import DATA, YUNET, need
from faceattr.vision.detect import DetectorUnavailable, create_detector
from faceattr.vision.detectors.yunet_ort import YUNET_FILE, YUNET_SHA256, YuNetOrtDetector, decode_yunet, nms
from faceattr.vision.image import load_image


def _outputs(width: int, height: int) -> dict[str, np.ndarray]:
    """All-zero YuNet outputs for a ``width`` x ``height`` input (scores 0 everywhere)."""
    out = {}
    for s in (8, 16, 32):
        n = -(-width // s) * -(-height // s)
        out.update({f"cls_{s}": np.zeros((1, n, 1), np.float32), f"obj_{s}": np.zeros((1, n, 1), np.float32)})
        out.update({f"bbox_{s}": np.zeros((1, n, 4), np.float32), f"kps_{s}": np.zeros((1, n, 10), np.float32)})
    return out


def test_decode_by_hand():
    """One cell on the stride-16 map of a 64 x 32 input: column 2, row 1 (index 1 * 4 + 2 = 6). cls 0.81, obj 1
    -> score 0.9; centre offsets (0.5, 0.25) cells -> centre ((2 + 0.5) * 16, (1 + 0.25) * 16) = (40, 20); log sizes
    (ln 2, 0) -> 32 x 16 px; the first landmark offset (1, -1) cells -> (48, 0)."""
    out = _outputs(64, 32)
    out["cls_16"][0, 6, 0], out["obj_16"][0, 6, 0] = 0.81, 1.0
    out["bbox_16"][0, 6] = [0.5, 0.25, np.log(2.0), 0.0]
    out["kps_16"][0, 6, :2] = [1.0, -1.0]
    out["cls_8"][0, 0, 0], out["obj_8"][0, 0, 0] = 0.25, 1.0  # score 0.5: below the threshold
    rows = decode_yunet(out, 64, 32, min_score=0.6)
    assert rows.shape == (1, 15)
    np.testing.assert_allclose(rows[0, :4], [24, 12, 56, 28], atol=1e-4)
    np.testing.assert_allclose(rows[0, 4:6], [48, 0], atol=1e-4)
    np.testing.assert_allclose(rows[0, 14], 0.9, atol=1e-6)
    assert decode_yunet(_outputs(64, 32), 64, 32, 0.6).shape == (0, 15)


def test_nms_by_hand():
    """Boxes best first: the second overlaps the first with IoU 81/100 = 0.81 (dropped below that), the third not
    at all."""
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], np.float32)
    assert nms(boxes, 0.3) == [0, 2]
    assert nms(boxes, 0.85) == [0, 1, 2]


def test_same_faces_as_opencv_yunet():
    """The shipped file holds the weights of OpenCV's face_detection_yunet_2023mar.onnx: the same faces, boxes and
    landmarks as cv2.FaceDetectorYN within 0.01 px, which is why it aligns with the model's yunet template."""
    from faceattr.vision.detectors.yunet import YuNetDetector

    ours, cv = create_detector("yunet-ort"), YuNetDetector(need(YUNET), max_side=960)  # the same downscaling
    photos = (
        sorted(need(DATA / "group-photos").glob("*.jpg"))[:3] + sorted((DATA / "utkface" / "UTKFace").glob("1_*"))[:5]
    )
    for p in photos:
        im = load_image(p)
        a, b = ours.detect(im), cv.detect(im)
        assert len(a) == len(b) >= 1
        for fa, fb in zip(a, b):
            assert np.abs(fa.landmarks - fb.landmarks).max() < 0.01
            assert np.abs(np.array(fa.box) - np.array(fb.box)).max() < 0.01


def test_shipped_file_is_the_recorded_one():
    assert hashlib.sha256(YUNET_FILE.read_bytes()).hexdigest() == YUNET_SHA256
    assert (YUNET_FILE.parent / "LICENSE-yunet.txt").read_text(encoding="utf-8").count("Apache License") >= 1


def test_many_threads_at_once_give_the_sequential_answers():
    """No lock: eight threads detecting on one detector give exactly what one thread gives."""
    det = YuNetOrtDetector()
    ims = [load_image(p) for p in sorted(need(DATA / "group-photos").glob("*.jpg"))]
    want = [[f.box for f in det.detect(im)] for im in ims]
    got: dict[int, list] = {}

    def work(k: int) -> None:
        got[k] = [[f.box for f in det.detect(im)] for im in ims[k % 2 :] + ims[: k % 2]]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, boxes in got.items():
        assert boxes == (want[k % 2 :] + want[: k % 2])


def test_a_file_that_is_not_yunet(tmp_path):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"not a network")
    with pytest.raises(DetectorUnavailable, match="not a YuNet network"):
        YuNetOrtDetector(bad)
    with pytest.raises(DetectorUnavailable, match="missing"):
        YuNetOrtDetector(tmp_path / "absent.onnx")
