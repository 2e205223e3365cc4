"""The network against the machine's INT8 limit: the shipped INT8 model's multiply-accumulates per face, its
latency and throughput on onnxruntime, and the rate the same CPU reaches on a large INT8 matrix product (the
practical roof: onnxruntime's own u8 x s8 GEMM kernel on the same threads).

    python benchmarks/roofline.py

MACs: every convolution and linear layer of the network at its input size (batch 1), counted from the torch
checkpoint with forward hooks. Roof: ``MatMulInteger`` of 1024 x 2048 by 2048 x 1024 (uint8 x int8), median of
20 runs. Network: the INT8 ONNX file as the default path runs it (sessions without busy-waiting), batch 1
(median of 200 runs) and batches of 8 and 32 faces; achieved GMAC/s and its share of the roof.
Writes benchmarks/results/roofline.{json,md}.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from _common import md_table, median_ms, write


def count_macs() -> tuple[int, int]:
    """(MACs per face, input size) of the shipped network, from its torch checkpoint."""
    import torch

    from faceattr.models.checkpoint import load_model
    from faceattr.runtime.policy import SHIPPED_MODEL

    model, meta = load_model(SHIPPED_MODEL)
    model.eval()
    total = 0

    def hook(mod: Any, inp: Any, out: Any) -> None:
        nonlocal total
        if isinstance(mod, torch.nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
            total += int(out[0].numel()) * k
        elif isinstance(mod, torch.nn.Linear):
            total += mod.in_features * mod.out_features

    hooks = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    ]
    with torch.no_grad():
        model(torch.zeros(1, 3, meta.input_size, meta.input_size))
    for h in hooks:
        h.remove()
    return total, meta.input_size


def gemm_roof(threads: int) -> float:
    """GMAC/s of onnxruntime's uint8 x int8 MatMulInteger on a 1024 x 2048 x 1024 product."""
    import onnx
    from onnx import TensorProto, helper

    from faceattr.onnxrt import import_onnxruntime, open_session

    import_onnxruntime()
    m, k, n = 1024, 2048, 1024
    rng = np.random.default_rng(0)
    w = helper.make_tensor(
        "W", TensorProto.INT8, [k, n], rng.integers(-127, 127, (k, n), dtype=np.int8).tobytes(), raw=True
    )
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "W"], ["Y"])],
        "gemm",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [m, k])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [m, n])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "gemm.onnx"
        onnx.save(model, str(path))
        s = open_session(path, threads)
    a = rng.integers(0, 255, (m, k), dtype=np.uint8)
    ms = median_ms(lambda: s.run(None, {"A": a}), 20)
    return m * k * n / (ms / 1000) / 1e9


def main() -> None:
    from faceattr.onnxrt import open_session
    from faceattr.runtime.policy import SHIPPED_INT8

    macs, size = count_macs()
    rows = []
    for threads in (1, 2):
        roof = gemm_roof(threads)
        s = open_session(SHIPPED_INT8, threads)
        name = s.get_inputs()[0].name
        for batch in (1, 8, 32):
            x = np.random.default_rng(1).random((batch, 3, size, size), dtype=np.float32)
            ms = median_ms(lambda x=x, s=s, name=name: s.run(None, {name: x}), 200 if batch == 1 else 30)
            per_face = ms / batch
            gmacs = macs / (per_face / 1000) / 1e9
            rows.append(
                {
                    "threads": threads,
                    "batch": batch,
                    "ms per face": round(per_face, 3),
                    "faces/s": round(1000 / per_face),
                    "GMAC/s": round(gmacs, 1),
                    "INT8 GEMM roof GMAC/s": round(roof, 1),
                    "share of roof": f"{gmacs / roof:.0%}",
                }
            )
            print(rows[-1], flush=True)
    md = (
        f"The shipped network: **{macs / 1e6:.0f} M multiply-accumulates per face** at {size} px (convolutions and "
        "linear layers: the shared trunk and the three task branches).\n\n"
        + md_table(
            rows, ["threads", "batch", "ms per face", "faces/s", "GMAC/s", "INT8 GEMM roof GMAC/s", "share of roof"]
        )
    )
    write("roofline", {"macs_per_face": macs, "input_size": size, "rows": rows}, md, "python benchmarks/roofline.py")


if __name__ == "__main__":
    main()
