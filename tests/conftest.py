"""Shared fixtures: the real data in ../shared (or FACEATTR_SHARED), synthetic images, a tiny trained checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEATTR_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data"
UTK = DATA / "utkface"
FAIRFACE = DATA / "fairface"
YUNET = SHARED / "models" / "face_detection_yunet.onnx"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"test data not found: {path} (set FACEATTR_SHARED)")
    return path


@pytest.fixture(scope="session")
def utk_dir() -> Path:
    return need(UTK)


@pytest.fixture(scope="session")
def fairface_dir() -> Path:
    return need(FAIRFACE)


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ.setdefault("FACEATTR_CACHE", str(tmp_path_factory.mktemp("cache")))


def tiny_config(tmp: Path, name: str = "tiny", **over: object) -> "object":
    from faceattr.config import load_config
    o = [f"name={name}", f"out_dir={tmp}", f"data.root={UTK}", "data.image_size=64", "data.max_train=64",
         "data.max_val=32", "train.epochs=1", "train.batch_size=16", "train.eval_batch_size=32", "train.threads=1",
         "model.dropout=0.1"]
    o += [f"{k}={v}" for k, v in over.items()]
    return load_config(REPO / "configs" / "utkface.yaml", o)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, utk_dir: Path) -> Path:
    """A model trained for 4 steps on 64 real UTKFace faces, with a dlib alignment template."""
    import json
    from faceattr.train import main
    tmp = tmp_path_factory.mktemp("runs")
    cfg = tiny_config(tmp)
    main(cfg, progress=False)
    ck = tmp / "tiny" / "best.safetensors"
    meta_p = ck.with_suffix(".json")
    meta = json.loads(meta_p.read_text())
    # a template measured like `faceattr calibrate` does (kept fixed here so the fixture stays fast)
    meta["alignment"] = {"dlib": {"points": [[0.2975, 0.3025], [0.685, 0.3025], [0.49, 0.59]], "n": 198},
                         "yunet": {"points": [[0.2953, 0.2795], [0.6958, 0.2795], [0.4906, 0.5174]], "n": 199}}
    meta_p.write_text(json.dumps(meta))
    return ck


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def a_face_path() -> Path:
    return need(UTK / "UTKFace" / "26_0_0_20170116200900839.jpg.chip.jpg")


# ---- synthetic data: lets training, prediction, export and the bad-input corpus run without ../shared ----------
def make_synthetic_utkface(root: Path, n: int = 120, size: int = 80, seed: int = 0) -> Path:
    """A folder laid out like UTKFace (labels in the file names) of drawn 'faces': an ellipse whose colour and
    size follow the labels, so a network can learn something from it in a few steps."""
    from PIL import Image, ImageDraw
    rng = np.random.default_rng(seed)
    img_dir = root / "UTKFace"
    img_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        age, gender, race = int(rng.integers(1, 90)), int(rng.integers(0, 2)), int(rng.integers(0, 5))
        im = Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(0, 255, 3)))
        d = ImageDraw.Draw(im)
        r = 18 + age // 8
        tone = (60 + 40 * race, 50 + 30 * race, 40 + 20 * race)
        d.ellipse((size / 2 - r, size / 2 - r * 1.2, size / 2 + r, size / 2 + r * 1.2), fill=tone)
        for ex in (-r / 2.5, r / 2.5):
            d.ellipse((size / 2 + ex - 3, size / 2 - r / 3 - 3, size / 2 + ex + 3, size / 2 - r / 3 + 3),
                      fill=(0, 0, 255 * gender))
        im.save(img_dir / f"{age}_{gender}_{race}_20170101{i:09d}.jpg.chip.jpg", quality=90)
    return root


@pytest.fixture(scope="session")
def synth_utk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_utkface(tmp_path_factory.mktemp("synth") / "utkface")


def synth_config(tmp: Path, data: Path, name: str = "synth", **over: object) -> "object":
    from faceattr.config import load_config
    o = [f"name={name}", f"out_dir={tmp}", f"data.root={data}", "data.image_size=64", "train.epochs=1",
         "train.batch_size=16", "train.eval_batch_size=32", "train.threads=1", "model.pretrained=false"]
    o += [f"{k}={v}" for k, v in over.items()]
    return load_config(REPO / "configs" / "utkface.yaml", o)


@pytest.fixture(scope="session")
def synth_checkpoint(tmp_path_factory: pytest.TempPathFactory, synth_utk: Path) -> Path:
    """A model trained for one epoch on the synthetic faces (no ../shared, no ImageNet weights needed)."""
    import json
    from faceattr.train import main
    tmp = tmp_path_factory.mktemp("synth-runs")
    main(synth_config(tmp, synth_utk), progress=False)
    ck = tmp / "synth" / "best.safetensors"
    meta = json.loads(ck.with_suffix(".json").read_text())
    meta["alignment"] = {"dlib": {"points": [[0.2975, 0.3025], [0.685, 0.3025], [0.49, 0.59]], "n": 1}}
    ck.with_suffix(".json").write_text(json.dumps(meta))
    return ck
