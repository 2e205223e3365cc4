"""The TensorRT backend: runs the engine ``faceattr export --format tensorrt`` writes (``.engine``, with its metadata
in the ``.json`` beside it) on an NVIDIA GPU, with torch's CUDA tensors as the input and output buffers.

Registered with the runtime's backends by name (``tensorrt``) and suffix (``.engine``, ``.plan``), lazily: opening a
file loads TensorRT, and a machine without it or without a GPU gets a one-line error. One execution context per
backend, so calls are serialised under a lock (TensorRT contexts are not re-entrant).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from faceattr.runtime.backends import ModelFormatError
from faceattr.runtime.meta import MetaError, ModelMeta


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"TensorRT engine not found: {path}")
        side = path.with_suffix(".json")
        try:
            self.meta = ModelMeta.from_dict(json.loads(side.read_text(encoding="utf-8")), str(side))
        except FileNotFoundError:
            raise ModelFormatError(
                f"{path}: its metadata {side.name} is missing (faceattr export writes both)"
            ) from None
        except (json.JSONDecodeError, MetaError) as e:
            raise ModelFormatError(f"{side}: broken faceattr metadata ({e})") from e
        try:
            import tensorrt as trt
            import torch
        except ImportError as e:
            raise ModelFormatError(
                f"{path}: running a TensorRT engine needs the tensorrt package and torch with CUDA ({e.name} missing)"
            ) from e
        if not torch.cuda.is_available():
            raise ModelFormatError(f"{path}: a TensorRT engine runs on an NVIDIA GPU, and none is visible here")
        self._torch, self._trt = torch, trt
        engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise ModelFormatError(f"{path}: TensorRT cannot load this engine (built by another TensorRT or GPU?)")
        self.engine = engine
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise ModelFormatError(f"{path}: expected one input tensor, found {inputs}")
        self.input_name = inputs[0]
        self.output_names = [n for n in names if n not in inputs]
        self.path = path
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: str | Path, threads: int | None = None) -> TensorRTBackend:
        return cls(path, threads)

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        torch, trt = self._torch, self._trt
        with self._lock:
            xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).cuda()
            self.context.set_input_shape(self.input_name, tuple(xt.shape))
            self.context.set_tensor_address(self.input_name, xt.data_ptr())
            outs: dict[str, Any] = {}
            for n in self.output_names:
                dtype = torch.float16 if self.engine.get_tensor_dtype(n) == trt.DataType.HALF else torch.float32
                t = torch.empty(tuple(self.context.get_tensor_shape(n)), dtype=dtype, device="cuda")
                self.context.set_tensor_address(n, t.data_ptr())
                outs[n] = t
            stream = torch.cuda.current_stream()
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError(f"{self.path}: TensorRT failed to run the engine")
            stream.synchronize()
            return {n: t.float().cpu().numpy() for n, t in outs.items()}
