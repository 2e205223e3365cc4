"""The default-path policy for the shipped model: which model file runs (INT8 where onnxruntime's INT8 kernels are
exact on this CPU, else float32), and which faces get their mirror image averaged in. Light: the command line
imports it to parse options, without numpy.
"""

from __future__ import annotations

import functools
import logging
import platform
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from faceattr.runtime.tta import FlipMode

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).parent.parent / "weights"
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


def shipped_path(runtime: str, name: str | None = None) -> Path:
    """The file of the shipped model ``name`` (None: the default) for ``runtime`` (``torch``, ``onnx``,
    ``onnx-int8``)."""
    if name is None:
        return {"torch": SHIPPED_MODEL, "onnx": SHIPPED_ONNX, "onnx-int8": SHIPPED_INT8}[runtime]
    from faceattr.runtime.catalog import shipped

    return shipped(name).path(runtime)


def is_shipped_name(model: str | None) -> bool:
    """Whether ``--model`` names a shipped model (``faceattr models``) rather than a file."""
    if not model or Path(model).suffix in (".onnx", ".safetensors", ".json", ".pt") or Path(model).exists():
        return False
    from faceattr.runtime.catalog import list_shipped

    return model in [m.name for m in list_shipped()]


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
    if model is None or is_shipped_name(model):
        runtime = default_runtime()
        path = shown_path(shipped_path(runtime, model))
        return path, default_tta_flip(runtime) if tta_flip is None else tta_flip
    return model, bool(tta_flip)
