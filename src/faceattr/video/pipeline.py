"""Video: faces tracked across frames (ByteTrack, from ``supervision``), one stable estimate per person.

Every ``detect_every``-th frame the detector runs and the network estimates each face; ByteTrack links the
detections into tracks (its Kalman filter carries a face across missed or skipped frames); in the frames between,
the boxes of the last detection are drawn. A track's estimate pools its faces' outputs, not their labels:

- class probabilities (gender, race): the mean of the per-face calibrated probabilities (a linear pool: it stays
  calibrated when the faces agree and softens when they do not);
- age: the mean of the per-face expected ages (the mean of the pooled age distribution), and an interval whose
  half-widths are the faces' mean half-widths times ``sqrt((1 + (n - 1) rho) / n)``: the standard error of a mean
  of n estimates whose errors correlate by ``rho``. The default, ``rho = 1`` (no narrowing), is what was measured
  (``benchmarks/video.py``: on clips whose frames of a person come from one photo, the model's errors are fully
  correlated across frames; rho = 1 keeps the pooled 80 % interval at 79 % coverage, rho = 0.5 drops it to 55 %).
  A smaller ``rho`` narrows the interval with evidence, for footage whose frames are independent looks.

Outputs: the annotated video, and a JSON-lines file with one line per track (its pooled estimate and every
detection's own estimate). Both are written under temporary names and renamed when complete.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceattr.errors import FaceattrError, UsageError, check
from faceattr.runtime.draw import draw_boxes, face_label
from faceattr.runtime.predictor import Predictor
from faceattr.runtime.results import Attribute
from faceattr.safeio import OutputPlan, atomic_output

log = logging.getLogger(__name__)


class VideoError(FaceattrError, ValueError):
    """A video source that cannot be opened or read."""


@dataclass
class Track:
    """One person: their detections and the pooled estimate."""

    id: int
    first_frame: int
    last_frame: int = -1
    detections: list[dict[str, Any]] = field(default_factory=list)
    _values: dict[str, list[float]] = field(default_factory=dict)
    _low: dict[str, list[float]] = field(default_factory=dict)
    _high: dict[str, list[float]] = field(default_factory=dict)
    _probs: dict[str, list[dict[str, float]]] = field(default_factory=dict)

    def add(
        self,
        frame: int,
        box: np.ndarray,
        attrs: dict[str, Attribute],
        fps: float = 25.0,
        size: tuple[int, int] | None = None,
        score: float | None = None,
    ) -> None:
        """One detection: its frame, time in seconds, box (clipped to the frame of ``size`` = (width, height)) and
        attributes in the shape ``faceattr predict`` gives them."""
        self.last_frame = frame
        b = [float(v) for v in box]
        if size is not None:
            w, h = size
            b = [min(max(b[0], 0.0), w), min(max(b[1], 0.0), h), min(max(b[2], 0.0), w), min(max(b[3], 0.0), h)]
        det: dict[str, Any] = {"frame": frame, "time_s": round(frame / fps, 3), "box": [round(v, 1) for v in b]}
        if score is not None:
            det["score"] = round(float(score), 4)
        for name, a in attrs.items():
            if a.value is not None and a.interval is not None and not a.probabilities:
                self._values.setdefault(name, []).append(a.value)
                self._low.setdefault(name, []).append(a.value - a.interval[0])
                self._high.setdefault(name, []).append(a.interval[1] - a.value)
            else:
                self._probs.setdefault(name, []).append(a.probabilities)
            det[name] = a.to_dict()
        self.detections.append(det)

    @property
    def n(self) -> int:
        return len(self.detections)

    def estimate(self, rho: float) -> dict[str, Any]:
        out: dict[str, Any] = {}
        n = self.n
        shrink = math.sqrt((1 + (n - 1) * rho) / n) if n else 1.0
        for name, vals in self._values.items():
            v = float(np.mean(vals))
            lo, hi = float(np.mean(self._low[name])) * shrink, float(np.mean(self._high[name])) * shrink
            out[name] = {"label": str(round(v)), "value": round(v, 2), "interval": [round(v - lo, 2), round(v + hi, 2)]}
        for name, plist in self._probs.items():
            keys = list(plist[0])
            mean = {k: float(np.mean([p[k] for p in plist])) for k in keys}
            out[name] = {
                "label": max(mean, key=lambda k: mean[k]),
                "probabilities": {k: round(p, 4) for k, p in mean.items()},
            }
        return out

    def to_dict(self, rho: float, fps: float = 25.0) -> dict[str, Any]:
        return {
            "track": self.id,
            "fps": round(fps, 3),
            "first_frame": self.first_frame,
            "last_frame": self.last_frame,
            "start_s": round(self.first_frame / fps, 3),
            "end_s": round(self.last_frame / fps, 3),
            "detections_used": self.n,
            **self.estimate(rho),
            "detections": self.detections,
        }


def open_source(source: str) -> Any:
    """An OpenCV capture of a file (any format OpenCV's FFmpeg reads) or a webcam index ("0")."""
    import cv2

    if source.isdigit():
        cap = cv2.VideoCapture(int(source))
        if not cap.isOpened():
            raise VideoError(f"webcam {source}: cannot be opened (no camera, or in use)")
        return cap
    p = Path(source)
    if not p.is_file():
        raise VideoError(f"{source}: no such file")
    cap = cv2.VideoCapture(str(p))
    ok = cap.isOpened()
    if ok:
        ok, _ = cap.read()
        cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
    if not ok:
        cap.release()
        raise VideoError(f"{source}: not a video OpenCV can read")
    return cap


def frames(cap: Any, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """RGB frames of an open capture."""
    import cv2

    i = 0
    while max_frames is None or i < max_frames:
        ok, bgr = cap.read()
        if not ok:
            return
        yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        i += 1


def _label(tr: Track, rho: float) -> str:
    """The drawing's label of a track: its id and pooled estimate, as ``faceattr predict --draw`` labels a face."""
    return face_label(tr.id, tr.estimate(rho))


def verify_video(path: Path, frames_written: int) -> None:
    """Read back a written video before it replaces anything: it must open and hold every frame written (OpenCV's
    ``VideoWriter.write`` reports nothing, so a full disk leaves a file without its index)."""
    import cv2

    size = path.stat().st_size if path.exists() else 0
    cap = cv2.VideoCapture(str(path))
    try:
        n = 0
        if cap.isOpened():
            while cap.read()[0]:
                n += 1
    finally:
        cap.release()
    if n < frames_written:
        raise VideoError(
            f"the annotated video could not be written completely ({n} of {frames_written} frames read back, "
            f"{size} bytes; is the disk full?): nothing was replaced"
        )


def process_video(
    source: str,
    predictor: Predictor,
    out_video: str | Path | None,
    out_tracks: str | Path | None,
    *,
    detect_every: int = 1,
    rho: float = 1.0,
    max_frames: int | None = None,
    progress: bool = False,
    strict: bool = False,
) -> dict[str, Any]:
    """Track and estimate every face of ``source``; returns frames, seconds, frames/s and the tracks. Writes the
    annotated video (``out_video``) and the tracks as JSON lines (``out_tracks``), whichever are given; both are
    claimed before the first frame is decoded and appear only when complete (the video read back first). An input
    that ends before the frame count it declares is reported with a warning, or as an error with ``strict``."""
    import tempfile
    import warnings

    import cv2

    check(out_video is not None or out_tracks is not None, "give --out (annotated video) and/or --tracks (JSON lines)")
    check(detect_every >= 1, f"detect_every must be at least 1, got {detect_every}")
    check(0.0 <= rho <= 1.0, f"rho must be in 0..1, got {rho}")
    check(max_frames is None or max_frames >= 1, f"max_frames must be at least 1, got {max_frames}")
    plan = OutputPlan([] if source.isdigit() else [source])
    tracks_path = plan.claim_file(out_tracks, "--tracks") if out_tracks else None
    video_path = plan.claim_file(out_video, "--out") if out_video else None
    if video_path is not None and video_path.suffix.lower() not in (".mp4", ".avi", ".mkv", ".mov"):
        raise UsageError(f"{video_path}: the annotated video must end in .mp4, .avi, .mkv or .mov")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # ByteTrack's move to the `trackers` package
        import supervision as sv

        tracker = sv.ByteTrack(frame_rate=30.0 / detect_every, lost_track_buffer=30, minimum_matching_threshold=0.8)
    cap = open_source(source)
    fps_in = cap.get(cv2.CAP_PROP_FPS) or 25.0
    declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if not source.isdigit() else 0
    writer = None
    tmp_video: Path | None = None
    if video_path is not None:  # a fresh name of our own: never an existing file, an input included
        fd, name = tempfile.mkstemp(
            prefix=video_path.name + ".",
            suffix=".partial" + video_path.suffix,
            dir=video_path.parent if str(video_path.parent) else ".",
        )
        os.close(fd)
        tmp_video = Path(name)
    total = min(declared, max_frames) if declared and max_frames else (declared or max_frames or None)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="frame", desc="video", dynamic_ncols=True)
    tracks: dict[int, Track] = {}
    shown: list[tuple[np.ndarray, int]] = []
    n = 0
    t0 = time.perf_counter()
    try:
        for i, rgb in enumerate(frames(cap, max_frames)):
            if i % detect_every == 0:
                faces, chips = predictor.faces_and_chips(rgb)
                attrs = predictor.predict_chips(chips) if len(chips) else []
                boxes = np.array([f.box for f in faces], dtype=np.float64).reshape(-1, 4)
                det = sv.Detections(
                    xyxy=boxes,
                    confidence=np.ones(len(boxes)),
                    class_id=np.zeros(len(boxes), dtype=int),
                    data={"idx": np.arange(len(boxes))},
                )
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)
                    tracked = tracker.update_with_detections(det)
                shown = []
                ids = tracked.tracker_id if tracked.tracker_id is not None else np.zeros(0, int)
                for tid, idx in zip(ids, tracked.data["idx"]):
                    tr = tracks.setdefault(int(tid), Track(int(tid), i))
                    tr.add(
                        i, boxes[int(idx)], attrs[int(idx)], fps_in, (rgb.shape[1], rgb.shape[0]), faces[int(idx)].score
                    )
                    shown.append((boxes[int(idx)], int(tid)))
            if video_path is not None:
                drawn = draw_boxes(rgb, [(b, _label(tracks[t], rho), True) for b, t in shown])
                bgr = cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR)
                if writer is None:
                    code = "mp4v" if video_path.suffix.lower() != ".avi" else "MJPG"
                    fourcc = cv2.VideoWriter.fourcc(*code)
                    writer = cv2.VideoWriter(str(tmp_video), fourcc, fps_in, (bgr.shape[1], bgr.shape[0]))
                    if not writer.isOpened():
                        raise VideoError(f"{video_path}: OpenCV cannot write this video format here")
                writer.write(bgr)
            n += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(tracks=len(tracks), refresh=False)
        secs = time.perf_counter() - t0
        if n == 0:
            raise VideoError(f"{source}: no frame could be read")
        expected = min(declared, max_frames) if max_frames else declared
        short = bool(expected) and n < expected
        if short:
            msg = f"{source}: the video ended after {n} of the {expected} frames it declares (truncated?)"
            if strict:
                raise VideoError(msg + "; nothing was written (--strict)")
            log.warning(msg)
        if writer is not None:
            writer.release()
            writer = None
            verify_video(tmp_video, n)  # type: ignore[arg-type]
        if tracks_path is not None:
            with atomic_output(tracks_path) as f:
                for tr in sorted(tracks.values(), key=lambda t: t.id):
                    f.write(json.dumps(tr.to_dict(rho, fps_in)) + "\n")
        if video_path is not None and tmp_video is not None:
            os.replace(tmp_video, video_path)
    finally:
        if bar is not None:
            bar.close()
        cap.release()
        if writer is not None:
            writer.release()
        if tmp_video is not None and tmp_video.exists():
            tmp_video.unlink()
    return {
        "frames": n,
        "seconds": round(secs, 2),
        "fps": round(n / secs, 2),
        "tracks": len(tracks),
        "video": str(video_path) if video_path else None,
        "tracks_file": str(tracks_path) if tracks_path else None,
        "frames_declared": declared or None,
    }
