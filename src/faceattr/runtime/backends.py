"""Model backends: what runs the network. A backend has a ``name``, the model's :class:`ModelMeta` and ``run``
(normalised N x 3 x S x S float32 -> raw head outputs). onnxruntime is built in; the torch backend registers
itself lazily from :mod:`faceattr.models.backend`, so this layer never imports torch. A new backend is one file
with a class that satisfies :class:`Backend` and a line registering it with its file suffixes.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from faceattr.errors import FaceattrError
from faceattr.onnxrt import open_session
from faceattr.registry import Registry
from faceattr.runtime.meta import MetaError, ModelMeta


class ModelFormatError(FaceattrError, ValueError):
    """A model file that faceattr cannot use (wrong format, missing metadata)."""


@runtime_checkable
class Backend(Protocol):
    """What runs a model: ``name`` (shown to users), ``meta`` (the weights' metadata) and ``run``."""

    name: str
    meta: ModelMeta

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]: ...


class BackendFactory(Protocol):
    @classmethod
    def from_file(cls, path: str | Path, threads: int | None = None) -> Backend: ...


# Threads of the network unless a caller says: one for a photo's few faces (one pipeline per core; faster than two
# threads that wake and sleep for each small run, and steady when other processes share the cores), every core for
# a run of at least WIDE_BATCH inputs (a group photo, a micro-batch), where two threads win even on a busy machine
# (benchmarks/results/contention.md, docs/decisions/one-thread-per-pipeline.md)
PIPELINE_THREADS = 1
WIDE_BATCH = 4

# name -> a class with ``from_file(path, threads)``; "suffixes" says which model files each one opens
BACKENDS: Registry[Any] = Registry("backend")
SUFFIXES: dict[str, str] = {}


def register_backend(name: str, obj: Any, suffixes: Sequence[str] = ()) -> None:
    BACKENDS.register(name, obj)
    for s in suffixes:
        SUFFIXES[s] = name


def backend_for(path: str | Path) -> str:
    """The registered backend that opens ``path``, by its suffix (``.onnx``, ``.safetensors``, ...)."""
    name = str(path)
    for suffix, backend in sorted(SUFFIXES.items(), key=lambda kv: -len(kv[0])):
        if name.endswith(suffix):
            return backend
    return SUFFIXES[".safetensors"]


def open_backend(path: str | Path, threads: int | None = None, backend: str | None = None) -> Backend:
    """The backend that runs the model file ``path`` (chosen by its suffix unless ``backend`` names one)."""
    return BACKENDS.get(backend or backend_for(path)).from_file(path, threads)


class OnnxBackend:
    """A model run by onnxruntime. ``threads`` None: one thread for runs of fewer than :data:`WIDE_BATCH` inputs,
    a second session with one thread per core (opened on first use) for larger ones; a number: that many always.
    Safe to call from many threads at once."""

    def __init__(self, path: str | Path, threads: int | None = None, providers: Sequence[str] | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {path}")
        self._providers = list(providers or ["CPUExecutionProvider"])
        self._wide: Any = None
        self._wide_lock = threading.Lock()
        cores = os.cpu_count() or 1
        self._adaptive = threads is None and cores > 1 and self._providers == ["CPUExecutionProvider"]
        self._cores = cores
        try:
            self.session = open_session(path, threads or PIPELINE_THREADS, self._providers)
        except ImportError as e:
            raise ModelFormatError("running an ONNX model needs onnxruntime: pip install onnxruntime") from e
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ModelFormatError(f"{path}: not a loadable ONNX model ({e})") from e
        props = self.session.get_modelmeta().custom_metadata_map
        if "faceattr" not in props:
            raise ModelFormatError(f"{path}: an ONNX model without faceattr metadata (export it with faceattr export)")
        try:
            self.meta = ModelMeta.from_dict(json.loads(props["faceattr"]), str(path))
        except (json.JSONDecodeError, MetaError) as e:
            raise ModelFormatError(f"{path}: its faceattr metadata is broken ({type(e).__name__}: {e})") from e
        self.path = path
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        side = [d for d in list(inp.shape)[2:4] if isinstance(d, int)]
        if side and any(d != self.meta.input_size for d in side):
            raise ModelFormatError(
                f"{path}: its metadata says {self.meta.input_size} px input, but the network takes {inp.shape}"
            )
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.name = "onnxruntime-int8" if self.meta.extra.get("quantization") else "onnxruntime"

    @classmethod
    def from_file(cls, path: str | Path, threads: int | None = None) -> OnnxBackend:
        return cls(path, threads)

    def _session_for(self, n: int) -> Any:
        if not self._adaptive or n < WIDE_BATCH:
            return self.session
        with self._wide_lock:
            if self._wide is None:
                self._wide = open_session(self.path, self._cores, self._providers)
            return self._wide

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        session = self._session_for(len(x))
        outs = session.run(self.output_names, {self.input_name: x.astype(np.float32, copy=False)})
        return dict(zip(self.output_names, outs))


register_backend("onnx", OnnxBackend, (".onnx",))
register_backend("torch", "faceattr.models.backend:TorchBackend", (".safetensors", ".pt", ".json"))
register_backend("tensorrt", "faceattr.models.tensorrt:TensorRTBackend", (".engine", ".plan"))
