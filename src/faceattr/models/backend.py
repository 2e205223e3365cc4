"""The torch backend: a faceattr checkpoint (safetensors + metadata) run by torch, on the CPU or a GPU.

Registered with the runtime's backends by name (``torch``) and file suffix, lazily, so the runtime stays torch-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from faceattr.runtime.meta import ModelMeta


class TorchBackend:
    def __init__(self, model: Any, meta: ModelMeta, threads: int | None = None) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.model = model.eval()
        self.meta = meta
        self._torch = torch
        self.name = "torch"
        self.checkpoint: Path | None = None

    @classmethod
    def from_file(cls, path: str | Path, threads: int | None = None) -> TorchBackend:
        from faceattr.models.checkpoint import load_model

        model, meta = load_model(path)
        backend = cls(model, meta, threads)
        backend.checkpoint = Path(path)
        return backend

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        with self._torch.inference_mode():
            t = self._torch.from_numpy(x).contiguous(memory_format=self._torch.channels_last)
            return {k: v.float().numpy() for k, v in self.model(t).items()}
