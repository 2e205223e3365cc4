"""``faceattr serve``: the HTTP service and its web page."""

from __future__ import annotations

import argparse
import os

from faceattr.cli.predict import _add_model_args, detector_option


def _port(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        n = -1
    if not 1 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a whole number from 1 to 65535, got {v!r}")
    return n


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="HTTP service (POST /v1/analyze) and web page at /")
    _add_model_args(p)
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=_port, default=8000)
    p.add_argument("--detector", default="auto", help="as for faceattr predict")
    p.add_argument("--yunet-model", help="OpenCV YuNet ONNX file")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest request body (413 above)")
    p.add_argument("--max-pixels", type=int, default=40_000_000, help="largest decoded image (413 above)")
    p.add_argument("--max-images", type=int, default=16, help="images per request (413 above)")
    p.add_argument("--max-faces", type=int, default=100, help="faces kept per image (the highest scores)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request before 504")
    p.add_argument("--max-inflight", type=int, default=32, help="requests in flight before 503")
    p.add_argument(
        "--disable-task",
        action="append",
        default=[],
        metavar="TASK",
        help="refuse and never return this task, e.g. race (repeatable; also $FACEATTR_DISABLED_TASKS=a,b)",
    )
    p.add_argument(
        "--api-key-env",
        default="FACEATTR_API_KEY",
        metavar="VAR",
        help="environment variable holding the API key clients send as X-API-Key (unset: no key needed)",
    )
    p.add_argument("--cors-origin", action="append", default=[], help="allow browser calls from this origin")
    p.add_argument("--no-microbatch", action="store_true", help="run each request's faces on their own")
    p.add_argument("--batch-wait-ms", type=float, default=4.0, help="how long to gather requests into a batch")
    p.add_argument("--no-explain", action="store_true", help="refuse heat-map requests")


def _run_serve(a: argparse.Namespace) -> int:
    from faceattr.runtime.predictor import Predictor
    from faceattr.serve.server import serve
    from faceattr.serve.settings import ServeSettings

    disabled = list(a.disable_task) + [t for t in os.environ.get("FACEATTR_DISABLED_TASKS", "").split(",") if t]
    settings = ServeSettings(
        max_upload_mb=a.max_upload_mb,
        max_pixels=a.max_pixels,
        max_images=a.max_images,
        max_faces=a.max_faces,
        timeout_s=a.timeout,
        max_inflight=a.max_inflight,
        disabled_tasks=tuple(dict.fromkeys(t.strip() for t in disabled)),
        api_key=os.environ.get(a.api_key_env) or None,
        cors_origins=tuple(a.cors_origin),
        microbatch=not a.no_microbatch,
        batch_wait_ms=a.batch_wait_ms,
        explain=not a.no_explain,
    )
    pred = Predictor.load(a.model, a.threads, a.runtime, detector=detector_option(a), max_pixels=a.max_pixels)
    pred.detector  # noqa: B018 - load the detector now: a missing model file fails before the server listens
    serve(pred, settings, a.host, a.port)
    return 0


def _add_video(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("video", help="track faces through a video: one stable estimate per person")
    p.add_argument("source", help="a video file (any format OpenCV reads) or a webcam index such as 0")
    p.add_argument("--out", "-o", help="annotated video (.mp4, .avi, .mkv, .mov)")
    p.add_argument("--tracks", help="JSON-lines output: one line per track (give --out, --tracks or both)")
    p.add_argument(
        "--strict", action="store_true", help="a video that ends before its declared frame count is an error"
    )
    _add_model_args(p)
    p.add_argument("--detector", default="auto", help="as for faceattr predict")
    p.add_argument("--yunet-model", help="OpenCV YuNet ONNX file")
    p.add_argument("--detect-every", type=int, default=1, help="detect every N-th frame, track in between (speed)")
    p.add_argument(
        "--rho",
        type=float,
        default=1.0,
        help="error correlation between a person's frames: 1 (measured default) keeps the interval's width, "
        "smaller values narrow it with more detections",
    )
    p.add_argument("--max-frames", type=int, help="stop after this many frames (a webcam runs until then)")


def _run_video(a: argparse.Namespace) -> int:
    import json

    from faceattr.runtime.predictor import Predictor
    from faceattr.video.pipeline import process_video

    pred = Predictor.load(a.model, a.threads, a.runtime, detector=detector_option(a))
    res = process_video(
        a.source,
        pred,
        a.out,
        a.tracks,
        detect_every=a.detect_every,
        rho=a.rho,
        max_frames=a.max_frames,
        progress=not a.quiet,
        strict=a.strict,
    )
    print(json.dumps(res))
    return 0
