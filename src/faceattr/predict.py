"""Photo -> attributes: detection, alignment, batched inference and decoding, on torch or onnxruntime.

The :class:`Predictor` loads the shipped model, a checkpoint or an ONNX file. The ONNX path imports no torch:
preprocessing and decoding are numpy, the metadata comes from the ONNX file itself.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import platform
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceattr.align import align_face
from faceattr.decode import decode_outputs
from faceattr.detect import Detector, Face, create_detector
from faceattr.exceptions import FaceattrError, check
from faceattr.image import DEFAULT_MAX_PIXELS, ImageError, ImageSource, load_image, square_resize
from faceattr.meta import MetaError, ModelMeta
from faceattr.tasks import Task
from faceattr.tta import FlipMode, check_flip, run_numpy

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).parent / "weights"
SHIPPED_MODEL = WEIGHTS_DIR / "faceattr-utkface-fairface-mobilenetv2.safetensors"
SHIPPED_INT8 = WEIGHTS_DIR / "faceattr-utkface-fairface-mobilenetv2.int8.onnx"  # the same weights, INT8 for onnxruntime
SHIPPED_ONNX = WEIGHTS_DIR / "faceattr-utkface-fairface-mobilenetv2.onnx"  # the same weights, float32 ONNX
RUNTIMES = ("auto", "onnx", "torch", "onnx-int8")
DEFAULT_RUNTIME = "onnx-int8"  # what "auto" means for the shipped model, on a CPU where INT8 is exact (below)
DEFAULT_TTA_FLIP = True  # the shipped model's default path also averages each face with its mirror image
# ... except where "auto" falls back to the float32 model (no VNNI: below), where the mirror image of every face made
# the default path slower than the peer (README): there only the faces whose calibrated gender probability is below
# this get their mirror image (about one face in ten on UTKFace). Chosen on UTKFace val by ``python
# benchmarks/selective_flip.py`` (just above every val face whose gender decision the mirror image changed).
FALLBACK_FLIP_BELOW = 0.8
INT8_EXACT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})  # x86 int8 dot products without saturation
X86 = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})


@functools.cache
def cpu_flags() -> frozenset[str] | None:
    """This CPU's feature flags as Linux lists them in /proc/cpuinfo (read once); None where they cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return frozenset(
        w for line in text.splitlines() if line.startswith("flags") for w in line.split(":", 1)[-1].split()
    )


def int8_is_exact(machine: str, flags: frozenset[str] | None) -> bool:
    """Whether onnxruntime runs the shipped INT8 model as it was measured. On x86 CPUs without VNNI (AVX2-only,
    or AVX-512 without VNNI) its u8 x s8 kernels add pairs of products in saturating 16-bit registers (the
    "saturation issue" onnxruntime's quantization guide documents), and the shipped INT8 model loses accuracy there:
    measured on an AVX2 AMD EPYC, UTKFace test MAE 4.87 vs 4.51 y, gender 94.3 vs 95.1 %, race 81.5 vs 85.5 %, race
    ECE 4.1 vs 1.7 % (README, "The default path on CPUs without VNNI"). Unknown flags on x86 count as not exact;
    other architectures (ARM's int8 dot products do not saturate) as exact."""
    if machine.lower() not in X86:
        return True
    return flags is not None and bool(flags & INT8_EXACT_FLAGS)


def default_runtime() -> str:
    """What ``runtime="auto"`` means for the shipped model on this machine: the INT8 model where onnxruntime's INT8
    kernels are exact (:func:`int8_is_exact`), else the float32 ONNX model (slower, the same answers everywhere)."""
    if int8_is_exact(platform.machine(), cpu_flags()):
        return DEFAULT_RUNTIME
    log.debug(  # not a warning: a bad input's error stays one line; the backend's name says which model ran
        "this CPU has no VNNI instructions, where onnxruntime's INT8 kernels saturate and the shipped INT8 model "
        "loses accuracy: the default path uses the float32 ONNX model (runtime='onnx-int8' forces INT8)"
    )
    return "onnx"


def shipped_path(runtime: str) -> Path:
    return {"torch": SHIPPED_MODEL, "onnx": SHIPPED_ONNX, "onnx-int8": SHIPPED_INT8}[runtime]


def shown_path(path: Path) -> str:
    """``path`` relative to the working directory where it lies below it (reports written in a checkout name the
    shipped model ``src/faceattr/weights/...``, not one machine's absolute path), else as it is."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def default_tta_flip(runtime: str) -> FlipMode:
    """The shipped model's flip on the default path, where ``runtime="auto"`` resolved to ``runtime``: every face on
    INT8, the gender-uncertain faces only on the float32 fallback (:data:`FALLBACK_FLIP_BELOW`)."""
    return {"gender": FALLBACK_FLIP_BELOW} if runtime == "onnx" else DEFAULT_TTA_FLIP


def shipped_or(model: str | None, tta_flip: bool | None) -> tuple[str, FlipMode]:
    """A command's ``--checkpoint``/``--model`` and ``--tta-flip/--no-tta-flip`` (None: not given) -> (model file,
    flip): none given means the shipped model on ``faceattr predict``'s default path (INT8 ONNX + flip, float32
    with flip for the gender-uncertain faces where INT8 is not exact: :func:`default_tta_flip`); a user's
    own model gets flip only when asked (its calibration was fitted and measured without it)."""
    if model is None:
        runtime = default_runtime()
        return shown_path(shipped_path(runtime)), default_tta_flip(runtime) if tta_flip is None else tta_flip
    return model, bool(tta_flip)


class ModelFormatError(FaceattrError, ValueError):
    """A model file that faceattr cannot use (wrong format, missing metadata)."""


# ---- typed results ----------------------------------------------------------------------------------------------
@dataclass
class Attribute:
    name: str
    kind: str
    label: str  # predicted class / level (ordinal: its median level)
    probabilities: dict[str, float] = field(default_factory=dict)
    value: float | None = None  # ordinal: expected value (e.g. age in years)
    interval: tuple[float, float] | None = None  # ordinal: central interval of the predicted distribution

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"label": self.label}
        if self.value is not None:
            d["value"] = round(self.value, 2)
        if self.interval is not None:
            d["interval"] = [round(self.interval[0], 2), round(self.interval[1], 2)]
        if self.probabilities:
            d["probabilities"] = {k: round(v, 4) for k, v in self.probabilities.items()}
        return d


@dataclass
class FaceResult:
    attributes: dict[str, Attribute]
    box: tuple[float, float, float, float] | None = None
    score: float | None = None
    landmarks: dict[str, list[float]] | None = None

    def __getitem__(self, task: str) -> Attribute:
        return self.attributes[task]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.box is not None:
            d["box"] = [round(float(v), 1) for v in self.box]
            d["score"] = round(float(self.score or 0.0), 4)
            d["landmarks"] = self.landmarks
        d.update({k: a.to_dict() for k, a in self.attributes.items()})
        return d


@dataclass
class PhotoResult:
    source: str
    width: int
    height: int
    faces: list[FaceResult]
    message: str = ""
    error: str = ""  # set (and no faces) when the image could not be used; see Predictor.predict_many

    def to_dict(self) -> dict[str, Any]:
        if self.error:
            return {"file": self.source, "error": self.error}
        d: dict[str, Any] = {
            "file": self.source,
            "width": self.width,
            "height": self.height,
            "num_faces": len(self.faces),
            "faces": [f.to_dict() for f in self.faces],
        }
        if self.message:
            d["message"] = self.message
        return d


# ---- backends ---------------------------------------------------------------------------------------------------
class TorchBackend:
    def __init__(self, model: Any, meta: ModelMeta, threads: int | None = None) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.model = model.eval()
        self.meta = meta
        self._torch = torch
        self.name = "torch"

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        with self._torch.inference_mode():
            t = self._torch.from_numpy(x).contiguous(memory_format=self._torch.channels_last)
            return {k: v.float().numpy() for k, v in self.model(t).items()}


class OnnxBackend:
    def __init__(self, path: str | Path, threads: int | None = None, providers: Sequence[str] | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ModelFormatError("running an ONNX model needs onnxruntime: pip install onnxruntime") from e
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {path}")
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        so.log_severity_level = 3
        # no busy-waiting between runs: the network shares the cores with decoding and detection (yuface's OpenMP,
        # dlib), and with other requests' work in the service; spinning threads would take the cores from them
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), so, providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ModelFormatError(f"{path}: not a loadable ONNX model ({e})") from e
        props = self.session.get_modelmeta().custom_metadata_map
        if "faceattr" not in props:
            raise ModelFormatError(f"{path}: an ONNX model without faceattr metadata (export it with faceattr export)")
        try:
            self.meta = ModelMeta.from_dict(json.loads(props["faceattr"]), str(path))
        except (json.JSONDecodeError, MetaError) as e:
            raise ModelFormatError(f"{path}: its faceattr metadata is broken ({type(e).__name__}: {e})") from e
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.name = "onnxruntime-int8" if self.meta.extra.get("quantization") else "onnxruntime"

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, {self.input_name: x.astype(np.float32, copy=False)})
        return dict(zip(self.output_names, outs))


# ---- predictor --------------------------------------------------------------------------------------------------
class Predictor:
    """Estimate every face's attributes in photos (or in face crops with ``detect=False``).

    Thread-safe: one Predictor may serve many threads (a web server's pool). The network runs concurrently (torch
    and onnxruntime inference are re-entrant); the detector, which is not (dlib and OpenCV keep per-call state),
    runs under a lock, one photo at a time.
    """

    def __init__(
        self,
        backend: TorchBackend | OnnxBackend,
        detector: Detector | str = "auto",
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
        # threshold}) for the uncertain ones (faceattr.tta); None: off, except for the shipped model
        # (from_pretrained), whose default path it is
        self.tta_flip: FlipMode = check_flip(False if tta_flip is None else tta_flip, self.tasks)
        self._detector_spec = (detector, yunet_model)
        self.min_score = min_score
        self._detector: Detector | None = detector if not isinstance(detector, str) else None
        self._detector_lock = threading.Lock()
        self.checkpoint: Path | None = None  # the torch checkpoint behind this model, where known (Grad-CAM)

    # construction
    @classmethod
    def from_checkpoint(cls, path: str | Path, threads: int | None = None, **kw: Any) -> "Predictor":
        from faceattr.checkpoint import load_model

        model, meta = load_model(path)
        pred = cls(TorchBackend(model, meta, threads), **kw)
        pred.checkpoint = Path(path)
        return pred

    @classmethod
    def from_onnx(cls, path: str | Path, threads: int | None = None, **kw: Any) -> "Predictor":
        return cls(OnnxBackend(path, threads), **kw)

    @classmethod
    def from_pretrained(cls, threads: int | None = None, runtime: str = "auto", **kw: Any) -> Predictor:
        """The model shipped with faceattr (MobileNetV2, 128 px, UTKFace tasks; trained on UTKFace + FairFace).

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
        path = shipped_path(runtime)
        if not path.is_file():
            raise FileNotFoundError(f"the shipped model is missing from this installation: {path}")
        if runtime == "torch":
            return cls.from_checkpoint(path, threads, **kw)
        pred = cls.from_onnx(path, threads, **kw)
        pred.checkpoint = SHIPPED_MODEL if SHIPPED_MODEL.is_file() else None
        return pred

    @classmethod
    def load(
        cls, path: str | Path | None = None, threads: int | None = None, runtime: str = "auto", **kw: Any
    ) -> "Predictor":
        """The shipped model (``None``, on ``runtime``: see :meth:`from_pretrained`), an ``.onnx`` file, or a
        checkpoint (``runtime`` applies to the shipped model only)."""
        if path is None:
            return cls.from_pretrained(threads, runtime, **kw)
        if str(path).endswith(".onnx"):
            return cls.from_onnx(path, threads, **kw)
        return cls.from_checkpoint(path, threads, **kw)

    @property
    def detector(self) -> Detector:
        with self._detector_lock:
            if self._detector is None:
                name, yunet = self._detector_spec
                kw = {} if self.min_score is None else {"min_score": self.min_score}
                self._detector = create_detector(str(name), yunet, templates=self.meta.alignment.keys(), **kw)
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
        if task.kind == "nominal":
            probs = {str(c): float(p) for c, p in zip(task.classes, d["probs"][i])}
            return Attribute(task.name, "nominal", str(task.classes[int(d["index"][i])]), probs)
        numeric = task.is_numeric
        probs = {} if numeric else {str(c): float(p) for c, p in zip(task.levels, d["probs"][i])}
        label = str(round(float(d["value"][i]))) if numeric else str(task.levels[int(d["index"][i])])
        return Attribute(
            task.name, "ordinal", label, probs, float(d["value"][i]), (float(d["low"][i]), float(d["high"][i]))
        )

    def faces_and_chips(self, rgb: np.ndarray) -> tuple[list[Face], np.ndarray]:
        det = self.detector
        with self._detector_lock:  # dlib and OpenCV detectors are not safe to call from several threads
            faces = det.detect(rgb)
        tpl = self.template(det.name)
        chips = (
            np.stack([align_face(rgb, f.landmarks, tpl, self.input_size) for f in faces])
            if faces
            else np.zeros((0, self.input_size, self.input_size, 3), np.uint8)
        )
        return faces, chips

    def predict(self, image: ImageSource, detect: bool = True, source: str | None = None) -> PhotoResult:
        """One photo (path, bytes, PIL image or RGB array) -> every face's attributes; an image that cannot be used
        raises :class:`~faceattr.image.ImageError`."""
        res = next(iter(self.predict_many([image], detect, [source] if source else None)))
        if res.error:
            raise ImageError(res.error)
        return res

    def predict_many(
        self, images: Iterable[ImageSource], detect: bool = True, sources: Sequence[str] | None = None
    ) -> Iterator[PhotoResult]:
        """Yields one :class:`PhotoResult` per image, in order. An image that cannot be used yields a result with
        ``error`` set and no faces, and the stream goes on (:meth:`predict` raises instead)."""
        for i, img in enumerate(images):
            src = sources[i] if sources else (str(img) if isinstance(img, (str, Path)) else f"image {i}")
            try:
                rgb = load_image(img, self.max_pixels)
            except ImageError as e:
                yield PhotoResult(src, 0, 0, [], error=str(e))
                continue
            h, w = rgb.shape[:2]
            if detect:
                faces, chips = self.faces_and_chips(rgb)
                attrs = self.predict_chips(chips) if len(chips) else []
                res = [FaceResult(a, f.box, f.score, f.to_dict()["landmarks"]) for f, a in zip(faces, attrs)]
                yield PhotoResult(src, w, h, res, "" if res else "no face found")
            else:
                chip = square_resize(rgb, self.input_size)[None]
                yield PhotoResult(src, w, h, [FaceResult(self.predict_chips(chip)[0])])


IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


@dataclass
class FoundPaths:
    files: list[Path]
    skipped: list[Path]  # files inside the given folders without an image extension


def find_image_paths(inputs: Sequence[str]) -> FoundPaths:
    """Files (as given, whatever their extension), folders (recursively, image extensions only; the others are
    listed in ``skipped``) and glob patterns, in a stable order, each file once; a name that matches nothing is
    kept (it is reported as missing when read)."""
    import glob

    files: list[Path] = []
    skipped: list[Path] = []
    seen: set[str] = set()

    def add(p: Path) -> None:
        k = str(p.absolute())
        if k not in seen:
            seen.add(k)
            files.append(p)

    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for q in sorted(p.rglob("*")):
                if q.is_file():
                    (add(q) if q.suffix.lower() in IMAGE_EXTENSIONS else skipped.append(q))
        elif p.exists():
            add(p)
        else:
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                add(p)
            for m in matches:
                if Path(m).is_file():
                    add(Path(m))
    return FoundPaths(files, skipped)


def iter_image_paths(inputs: Sequence[str]) -> Iterator[Path]:
    """The files of :func:`find_image_paths`."""
    yield from find_image_paths(inputs).files


def draw_result(rgb: np.ndarray, result: PhotoResult, out_path: str | Path | None = None) -> bytes:
    """``rgb`` with each face's box and a short label, as PNG bytes (also written to ``out_path``, atomically,
    when given)."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(rgb)
    d = ImageDraw.Draw(im)
    lw = max(2, round(max(im.size) / 400))
    for f in result.faces:
        if f.box is None:
            continue
        d.rectangle(f.box, outline=(255, 64, 64), width=lw)
        parts = []
        for a in f.attributes.values():
            parts.append(
                f"{a.value:.0f}" if a.value is not None and a.kind == "ordinal" and not a.probabilities else a.label
            )
        d.text((f.box[0], max(0, f.box[1] - 12 * lw)), " ".join(parts), fill=(255, 255, 0), font_size=max(12, 10 * lw))
    import io

    buf = io.BytesIO()
    im.save(buf, "PNG")
    data = buf.getvalue()
    if out_path is not None:
        from faceattr.safeio import atomic_write_bytes

        atomic_write_bytes(out_path, data)
    return data
