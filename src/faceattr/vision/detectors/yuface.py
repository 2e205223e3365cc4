"""YuNet compiled into libfacedetection (the PyPI package ``yuface``): the default detector, no model file."""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from faceattr.vision.detect import DetectorSpec, DetectorUnavailable, Face, _order_eyes, detect_pyramid, dist_version

log = logging.getLogger(__name__)


OPENMP_WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
# how long yuface's idle OpenMP threads busy-wait before they sleep: libgomp's GOMP_SPINCOUNT, ~100,000 per ms (its
# default is 300,000, ~3 ms); benchmarks/probes/openmp_wait.py chose the value
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
    ~0.1 ms bridges the gaps between layers and is over before the network starts. ``benchmarks/probes/openmp_wait.py``
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
        version = dist_version("yuface")
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


def create(spec: DetectorSpec, **kwargs: Any) -> YuFaceDetector:
    return YuFaceDetector(**kwargs)
