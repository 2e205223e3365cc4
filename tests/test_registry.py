"""One registry helper for every choice made by name, and one test over every registered thing: each model,
formulation, loss weighting, detector and backend resolves and works; the layers hold their contract."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from faceattr.errors import UsageError
from faceattr.registry import Registry


def test_a_registry_resolves_lazy_entries_and_names_the_choices():
    reg: Registry[object] = Registry("thing")
    reg.register("path", "os.path:join")

    @reg.register("local")
    def local() -> str:
        return "x"

    assert reg.names() == ["path", "local"] and "path" in reg
    import os.path

    assert reg.get("path") is os.path.join and reg.get("local") is local
    with pytest.raises(UsageError, match="did you mean 'local'"):
        reg.get("locl")
    with pytest.raises(ValueError, match="twice"):
        reg.register("local", lambda: None)


@pytest.mark.slow
def test_every_model_builds_for_every_sharing_depth_and_formulation():
    torch = pytest.importorskip("torch")
    from faceattr.models import create_model, list_models
    from faceattr.tasks.formulations import list_formulations
    from faceattr.tasks.task import utkface_tasks

    assert list_models()
    for name in list_models():
        for formulation in list_formulations():
            for k in range(1, 8):
                model = create_model(
                    name, utkface_tasks(), shared_stages=k, ordinal_formulation=formulation, pretrained=False
                ).eval()
                with torch.no_grad():
                    out = model(torch.zeros(2, 3, 64, 64))
                assert set(out) == {"age", "gender", "race"}
                assert out["gender"].shape == (2, 2) and out["race"].shape == (2, 5)


def test_every_formulation_has_a_layer_a_loss_and_decoding():
    torch = pytest.importorskip("torch")
    from faceattr.tasks.formulations import get_formulation, list_formulations

    assert set(list_formulations()) >= {"coral", "binary", "corn", "softmax", "regression"}
    for name in list_formulations():
        f = get_formulation(name)
        layer = f.make_layer(8, 5)
        out = layer(torch.zeros(3, 8))
        assert out.shape == (3, f.num_outputs(5))
        loss, n = f.loss(out, torch.tensor([0, 2, 4]), None)
        assert torch.isfinite(loss) and n == 3
        probs = f.level_probs(out.detach().numpy(), 5)
        assert probs.shape == (3, 5) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_every_weighting_combines_losses():
    torch = pytest.importorskip("torch")
    from faceattr.config import WEIGHTING_NAMES
    from faceattr.training.weighting import WEIGHTINGS, create_weighting

    assert tuple(WEIGHTINGS.names()) == WEIGHTING_NAMES  # the config (a lower layer) accepts exactly these
    for name in WEIGHTINGS:
        w = create_weighting(name, ["a", "b"], fixed_weights={"a": 1.0, "b": 2.0})
        total, weights = w({"a": torch.tensor(1.0), "b": torch.tensor(2.0)})
        assert torch.isfinite(total) and set(weights) == {"a", "b"}


@pytest.mark.slow
def test_every_detector_is_registered_and_the_ones_installed_find_the_example_face():
    from faceattr.cli.predict import example_photo
    from faceattr.vision.detect import DETECTORS, DetectorSpec, DetectorUnavailable, create_detector, list_detectors
    from faceattr.vision.image import load_image

    assert set(list_detectors()) == {"auto", "yunet-ort", "yuface", "dlib", "dlib-cnn", "yunet", "yunet-dlib"}
    rgb = load_image(example_photo())
    for name in DETECTORS:
        try:
            det = create_detector(DetectorSpec(name))
        except DetectorUnavailable as e:
            assert "model file" in str(e) or "install" in str(e)  # yunet needs a file the user gives
            continue
        faces = det.detect(rgb)
        assert faces and faces[0].landmarks.shape[1] == 2, name
    with pytest.raises(DetectorUnavailable, match="choose from"):
        create_detector("yunnet")


def test_every_backend_resolves_by_name_and_suffix():
    from faceattr.runtime.backends import BACKENDS, Backend, backend_for, open_backend
    from faceattr.runtime.policy import SHIPPED_ONNX

    assert set(BACKENDS.names()) >= {"onnx", "torch"}
    assert backend_for("m.onnx") == "onnx" and backend_for("run/best.safetensors") == "torch"
    b = open_backend(SHIPPED_ONNX, threads=1)
    assert isinstance(b, Backend) and b.name == "onnxruntime"
    x = np.zeros((1, 3, b.meta.input_size, b.meta.input_size), np.float32)
    assert set(b.run(x)) == set(b.meta.task_names)


def test_the_runtime_imports_without_torch_pandas_or_scikit_learn():
    code = (
        "import sys\n"
        "for m in ('torch', 'pandas', 'sklearn', 'scipy'): sys.modules[m] = None\n"
        "import faceattr.runtime.predictor, faceattr.runtime.backends, faceattr.runtime.draw, faceattr.vision.detect\n"
        "from faceattr import Predictor\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_the_layer_contract_holds():
    """``lint-imports`` (import-linter, configured in pyproject.toml): no upward import, no cycle."""
    pytest.importorskip("importlinter")
    import shutil

    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.skip("lint-imports is not on PATH")
    out = subprocess.run([exe], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout[-3000:]


def test_a_tensorrt_engine_opens_through_the_tensorrt_backend(tmp_path):
    """The engine that `faceattr export --format tensorrt` writes is one file for the tensorrt backend: without
    TensorRT or a GPU it is a one-line error; with them (a GPU machine) its answers match the ONNX model's."""
    import json

    from faceattr.runtime.backends import ModelFormatError, backend_for, open_backend
    from faceattr.runtime.policy import SHIPPED_ONNX

    assert backend_for("m.engine") == "tensorrt" and backend_for("m.plan") == "tensorrt"
    fake = tmp_path / "m.engine"
    fake.write_bytes(b"not an engine")
    with pytest.raises(ModelFormatError, match="metadata"):
        open_backend(fake)
    meta = json.loads(
        __import__("onnx").load(str(SHIPPED_ONNX)).metadata_props[0].value if pytest.importorskip("onnx") else "{}"
    )
    (tmp_path / "m.json").write_text(json.dumps(meta))
    try:
        import tensorrt  # noqa: F401
        import torch

        gpu = torch.cuda.is_available()
    except ImportError:
        gpu = False
    if not gpu:
        with pytest.raises(ModelFormatError, match="tensorrt|GPU"):
            open_backend(fake)
        pytest.skip("no TensorRT and GPU here: the engine itself is run on a GPU machine")
    with pytest.raises(ModelFormatError, match="cannot load"):
        open_backend(fake)


def test_the_model_list_and_the_default_path_name_the_same_files():
    """Every shipped model file is listed with its SHA-256, licence and origin, and the default path's files are the
    default model's."""
    import hashlib

    from faceattr.runtime.catalog import default_name, list_shipped, shipped
    from faceattr.runtime.policy import shipped_path

    models = list_shipped()
    assert models[0].name == default_name()
    for m in models:
        assert m.licence and m.origin and m.trained_on, m.name
        for runtime, f in m.files.items():
            path = m.path(runtime)
            assert hashlib.sha256(path.read_bytes()).hexdigest() == f["sha256"], path
    for runtime in ("torch", "onnx", "onnx-int8"):
        assert shipped_path(runtime) == shipped().path(runtime)


def test_every_shipped_detector_file_has_its_origin_licence_and_hash():
    import hashlib
    import json

    from faceattr.runtime.catalog import CATALOG
    from faceattr.vision.detect import DETECTORS

    dets = json.loads(CATALOG.read_text(encoding="utf-8"))["detectors"]
    assert "yunet-ort" in [d["name"] for d in dets]
    for d in dets:
        assert d["name"] in DETECTORS and d["licence"] and d["origin"]
        assert hashlib.sha256((CATALOG.parent / d["file"]).read_bytes()).hexdigest() == d["sha256"]
        assert (CATALOG.parent / d["licence_file"]).is_file()
