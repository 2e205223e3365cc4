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


# ---- made data: one family of UTKFace-like folders, so every test runs without ../shared --------------------------
def make_utkface(root: Path, n: int = 120, seed: int = 0, faces: str = "photo", size: int = 200) -> Path:
    """A folder laid out like UTKFace (labels in the file names, ``age_gender_race_date.jpg.chip.jpg``), of
    ``faces``:

    - ``photo``: jittered, scaled, mirrored and re-lit crops of the bundled astronaut photo (public domain), 200 x
      200 like UTKFace's: detectors find the face, so calibration, alignment and detection are exercised;
    - ``drawn``: an ellipse whose colour and size follow the labels, so a network learns something in a few steps.
    """
    from PIL import Image, ImageDraw, ImageEnhance

    rng = np.random.default_rng(seed)
    img_dir = root / "UTKFace"
    img_dir.mkdir(parents=True, exist_ok=True)
    photo = None
    if faces == "photo":
        from faceattr.cli.predict import example_photo
        from faceattr.vision.image import load_image

        try:
            photo = load_image(example_photo())
        except FileNotFoundError as e:
            pytest.skip(str(e))
    for i in range(n):
        if photo is not None:
            side = int(rng.integers(135, 165))
            cx, cy = 222 + int(rng.integers(-8, 9)), 128 + int(rng.integers(-8, 9))
            im = Image.fromarray(photo[cy - side // 2 : cy + side // 2, cx - side // 2 : cx + side // 2]).resize(
                (size, size)
            )
            if rng.random() < 0.5:
                im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            im = ImageEnhance.Brightness(im).enhance(float(rng.uniform(0.7, 1.3)))
            age, gender, race = int(rng.integers(1, 90)), int(rng.integers(0, 2)), int(rng.integers(0, 5))
            im.save(img_dir / f"{age}_{gender}_{race}_20170202{i:09d}.jpg.chip.jpg", quality=90)
            continue
        age, gender, race = int(rng.integers(1, 90)), int(rng.integers(0, 2)), int(rng.integers(0, 5))
        im = Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(0, 255, 3)))
        d = ImageDraw.Draw(im)
        r = 18 + age // 8
        tone = (60 + 40 * race, 50 + 30 * race, 40 + 20 * race)
        d.ellipse((size / 2 - r, size / 2 - r * 1.2, size / 2 + r, size / 2 + r * 1.2), fill=tone)
        for ex in (-r / 2.5, r / 2.5):
            d.ellipse(
                (size / 2 + ex - 3, size / 2 - r / 3 - 3, size / 2 + ex + 3, size / 2 - r / 3 + 3),
                fill=(0, 0, 255 * gender),
            )
        im.save(img_dir / f"{age}_{gender}_{race}_20170101{i:09d}.jpg.chip.jpg", quality=90)
    return root


def make_face_utkface(root: Path, n: int = 120, seed: int = 0) -> Path:
    return make_utkface(root, n, seed, faces="photo")


def make_synthetic_utkface(root: Path, n: int = 120, size: int = 80, seed: int = 0) -> Path:
    return make_utkface(root, n, seed, faces="drawn", size=size)


def run_config(tmp: Path, data: Path, name: str, **over: object) -> "object":
    """The one small training config of the tests: ``configs/utkface.yaml`` on ``data``, 64 px, one epoch."""
    from faceattr.config import load_config

    o = [
        f"name={name}",
        f"out_dir={tmp}",
        f"data.root={data}",
        "data.image_size=64",
        "train.epochs=1",
        "train.batch_size=16",
        "train.eval_batch_size=32",
        "train.threads=1",
    ]
    o += [f"{k}={v}" for k, v in over.items()]
    return load_config(REPO / "configs" / "utkface.yaml", o)


@pytest.fixture(scope="session")
def train_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """UTKFace from ../shared when it is there, else real-face chips made here: training, prediction, export and
    calibration tests run either way."""
    if (UTK / "UTKFace").is_dir():
        return UTK
    return make_face_utkface(tmp_path_factory.mktemp("faces") / "utkface")


_TRAIN_ROOT: list[Path] = []


def tiny_config(tmp: Path, name: str = "tiny", **over: object) -> "object":
    root = _TRAIN_ROOT[0] if _TRAIN_ROOT else UTK
    small = {"data.max_train": 64, "data.max_val": 32, "model.dropout": 0.1}
    return run_config(tmp, root, name, **{**small, **over})


@pytest.fixture(scope="session", autouse=True)
def _train_root(train_dir: Path) -> None:
    _TRAIN_ROOT[:] = [train_dir]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, train_dir: Path) -> Path:
    """A model trained for 4 steps on 64 faces (UTKFace, or the real-face chips of :func:`train_dir`), with a
    dlib alignment template."""
    import json

    from faceattr.training.loop import main

    tmp = tmp_path_factory.mktemp("runs")
    cfg = tiny_config(tmp)
    main(cfg, progress=False)
    ck = tmp / "tiny" / "best.safetensors"
    meta_p = ck.with_suffix(".json")
    meta = json.loads(meta_p.read_text())
    # a template measured like `faceattr calibrate` does (kept fixed here so the fixture stays fast)
    meta["alignment"] = {
        "dlib": {"points": [[0.2975, 0.3025], [0.685, 0.3025], [0.49, 0.59]], "n": 198},
        "yunet": {"points": [[0.2953, 0.2795], [0.6958, 0.2795], [0.4906, 0.5174]], "n": 199},
    }
    meta_p.write_text(json.dumps(meta))
    return ck


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def a_face_path() -> Path:
    """A real face chip: one of UTKFace's, else one of the chips :func:`train_dir` made."""
    p = UTK / "UTKFace" / "26_0_0_20170116200900839.jpg.chip.jpg"
    if p.is_file() or not _TRAIN_ROOT:
        return need(p)
    return sorted((_TRAIN_ROOT[0] / "UTKFace").glob("*.jpg"))[0]


@pytest.fixture(scope="session")
def synth_utk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_utkface(tmp_path_factory.mktemp("synth") / "utkface")


def synth_config(tmp: Path, data: Path, name: str = "synth", **over: object) -> "object":
    return run_config(tmp, data, name, **{"model.pretrained": "false", **over})


@pytest.fixture(scope="session")
def synth_checkpoint(tmp_path_factory: pytest.TempPathFactory, synth_utk: Path) -> Path:
    """A model trained for one epoch on the synthetic faces (no ../shared, no ImageNet weights needed)."""
    import json

    from faceattr.training.loop import main

    tmp = tmp_path_factory.mktemp("synth-runs")
    main(synth_config(tmp, synth_utk), progress=False)
    ck = tmp / "synth" / "best.safetensors"
    meta = json.loads(ck.with_suffix(".json").read_text())
    meta["alignment"] = {"dlib": {"points": [[0.2975, 0.3025], [0.685, 0.3025], [0.49, 0.59]], "n": 1}}
    ck.with_suffix(".json").write_text(json.dumps(meta))
    return ck
