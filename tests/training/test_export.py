"""ONNX export (faceattr.training.export): the compact form (float16-stored weights, batch norm kept) computes what the
float32 model computes, in half the file; the folded form has no batch norm left for INT8 to trip on."""

from collections import Counter

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _ops(path):
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def _run(path, x):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {"image": x})


@pytest.mark.slow
@pytest.mark.parametrize("half", [True, False])
def test_compact_export_is_lossless(tmp_path, tiny_checkpoint, half):
    import torch

    from faceattr.models.checkpoint import load_model, save_model
    from faceattr.training.export import export_onnx

    model, meta = load_model(tiny_checkpoint)
    ck = tmp_path / "m.safetensors"
    save_model(ck, model, meta, half=half)
    model, meta = load_model(ck)  # what the torch runtime computes: stored weights, in float32
    x = np.random.default_rng(0).standard_normal((3, 3, meta.input_size, meta.input_size)).astype(np.float32)
    with torch.inference_mode():
        ref = model.eval()(torch.from_numpy(x))
    plain, compact = export_onnx(ck, tmp_path / "p.onnx"), export_onnx(ck, tmp_path / "c.onnx", compact=True)
    assert _ops(plain)["BatchNormalization"] == 0 < _ops(compact)["BatchNormalization"]
    casts = _ops(compact)["Cast"]
    for path in (plain, compact):
        for name, out in zip(meta.task_names, _run(path, x)):
            assert np.abs(out - ref[name].numpy()).max() < 1e-4
    if half:  # every weight tensor of a float16 checkpoint is stored as float16: about half the bytes
        assert casts > 20 and compact.stat().st_size < 0.6 * plain.stat().st_size
    assert not list(tmp_path.glob("*.partial.onnx"))
