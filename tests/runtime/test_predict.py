import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import DATA, REPO, a_face_path, need
from faceattr.cli.main import main as cli
from faceattr.runtime.predictor import Predictor
from faceattr.vision.image import ImageError


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint):
    return Predictor.from_checkpoint(tiny_checkpoint, detector="dlib")


def test_predict_crop_typed_result(predictor):
    r = predictor.predict(a_face_path(), detect=False)
    assert r.width == 200 and len(r.faces) == 1
    f = r.faces[0]
    age = f["age"]
    assert age.kind == "ordinal" and 1 <= age.value <= 116 and 1 <= age.interval[0] <= age.interval[1] <= 116
    assert set(f["gender"].probabilities) == {"male", "female"}
    assert abs(sum(f["race"].probabilities.values()) - 1) < 1e-4
    assert f["race"].label == max(f["race"].probabilities, key=f["race"].probabilities.get)


def test_predict_photo_detects_and_batches(predictor):
    photos = sorted(need(DATA / "group-photos").glob("*.jpg"))[:2]
    res = list(predictor.predict_many(photos))
    assert len(res) == 2 and all(r.faces for r in res)
    f = res[0].faces[0]
    assert len(f.box) == 4 and set(f.landmarks) >= {"left_eye", "right_eye", "nose"}
    blank = predictor.predict(np.full((200, 300, 3), 120, np.uint8))
    assert blank.faces == [] and blank.message == "no face found"


def test_bad_input_raises_image_error(predictor, tmp_path):
    p = tmp_path / "bad.jpg"
    p.write_bytes(b"nope")
    with pytest.raises(ImageError):
        predictor.predict(p)


def _write_inputs(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.jpg").write_bytes(a_face_path().read_bytes())
    (d / "b_broken.jpg").write_bytes(a_face_path().read_bytes()[:500])
    (d / "c.txt.jpg").write_bytes(b"not an image at all")
    return d


def test_cli_jsonl_streams_and_skips_bad_files(tiny_checkpoint, tmp_path, capsys):
    d = _write_inputs(tmp_path)
    rc = cli(
        ["-q", "predict", str(d), "--model", str(tiny_checkpoint), "--no-detect", "--draw", str(tmp_path / "draw")]
    )
    assert rc == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [Path_name(x["file"]) for x in lines] == ["a.jpg", "b_broken.jpg", "c.txt.jpg"]
    good, broken, junk = lines
    assert good["num_faces"] == 1 and 1 <= good["faces"][0]["age"]["value"] <= 116
    assert good["faces"][0]["gender"]["label"] in ("male", "female")
    assert "truncated" in broken["error"] or "unreadable" in broken["error"]
    assert "not an image" in junk["error"]
    drawn = tmp_path / "draw" / "a.jpg"  # drawings keep the input's name and folder; a JPEG stays a JPEG
    assert drawn.is_file() and drawn.read_bytes()[:3] == b"\xff\xd8\xff"


def Path_name(p):  # noqa: N802 - tiny helper
    from pathlib import Path

    return Path(p).name


def test_cli_csv_with_detection(tiny_checkpoint, tmp_path, capsys):
    photo = sorted(need(DATA / "group-photos").glob("*.jpg"))[0]
    out = tmp_path / "r.csv"
    rc = cli(
        [
            "-q",
            "predict",
            str(photo),
            "--model",
            str(tiny_checkpoint),
            "--format",
            "csv",
            "-O",
            str(out),
            "--detector",
            "dlib",
        ]
    )
    assert rc == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) >= 2
    for r in rows:
        x0, y0, x1, y1 = (float(r[k]) for k in ("x0", "y0", "x1", "y1"))
        assert 0 <= x0 < x1 and 0 <= y0 < y1
        assert 1 <= float(r["age_low"]) <= float(r["age_high"]) <= 116 and 1 <= float(r["age_value"]) <= 116
        assert r["race"] in ("White", "Black", "Asian", "Indian", "Others")
        assert abs(float(r["gender_p_male"]) + float(r["gender_p_female"]) - 1) < 1e-3


def test_onnx_parity_and_runtime_without_torch(tiny_checkpoint, tmp_path):
    from faceattr.training.export import export_onnx, read_onnx_meta
    from faceattr.vision.image import load_image, square_resize

    onnx_path = export_onnx(tiny_checkpoint, tmp_path / "m.onnx")
    meta = read_onnx_meta(onnx_path)
    assert [t["name"] for t in meta["tasks"]] == ["age", "gender", "race"] and meta["input_size"] == 64
    pt = Predictor.from_checkpoint(tiny_checkpoint)
    po = Predictor.from_onnx(onnx_path)
    chips = np.stack([square_resize(load_image(a_face_path()), 64)] * 3)
    x = pt.preprocess(chips)
    a, b = pt.backend.run(x), po.backend.run(x)  # batch of 3: the batch axis is dynamic
    for k in a:
        assert a[k].shape == b[k].shape and np.abs(a[k] - b[k]).max() < 1e-4, k
    # the ONNX predictor runs with torch unimportable
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from faceattr.runtime.predictor import Predictor\n"
        f"p = Predictor.from_onnx({str(onnx_path)!r})\n"
        f"r = p.predict({str(a_face_path())!r}, detect=False)\n"
        "print(r.faces[0]['gender'].label, 'torch' in sys.modules and sys.modules['torch'] is not None)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "False"


@pytest.mark.slow
def test_int8_export_runs(tiny_checkpoint, tmp_path):
    from faceattr.training.export import export_onnx, quantize_int8
    from faceattr.vision.image import load_image, square_resize

    onnx_path = export_onnx(tiny_checkpoint, tmp_path / "m.onnx")
    chips = np.stack([square_resize(load_image(a_face_path()), 64)] * 8)
    q = quantize_int8(onnx_path, tmp_path / "m.int8.onnx", chips)
    assert q.stat().st_size < onnx_path.stat().st_size / 2.5
    p = Predictor.from_onnx(q)
    assert p.meta.extra["quantization"]["type"] == "int8-static-qdq"
    assert p.meta.extra["quantization"]["calibration_method"] == "percentile"
    assert p.predict_chips(chips[:2])[0]["gender"].label in ("male", "female")
    q2 = quantize_int8(onnx_path, tmp_path / "m2.int8.onnx", chips, method="minmax")
    assert Predictor.from_onnx(q2).meta.extra["quantization"]["calibration_method"] == "minmax"
    with pytest.raises(ValueError, match="calibration method"):
        quantize_int8(onnx_path, tmp_path / "m3.int8.onnx", chips, method="kl")


def test_onnx_model_cannot_be_explained(tiny_checkpoint, tmp_path, capsys):
    rc = cli(["explain", str(a_face_path()), "--checkpoint", str(tmp_path / "m.onnx"), "--out", str(tmp_path / "x")])
    assert rc == 2 and "ONNX" in capsys.readouterr().err


def test_tensorrt_without_gpu_is_a_clear_message(tiny_checkpoint, tmp_path, capsys):
    rc = cli(["export", "--model", str(tiny_checkpoint), "--format", "tensorrt", "--out", str(tmp_path / "m.engine")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "TensorRT" in err and "Traceback" not in err


def test_flip_tta_is_the_mean_of_both_views(tiny_checkpoint):
    from faceattr.vision.image import load_image, square_resize

    chip = square_resize(load_image(a_face_path()), 64)
    plain = Predictor.from_checkpoint(tiny_checkpoint)
    tta = Predictor.from_checkpoint(tiny_checkpoint, tta_flip=True)
    both = np.stack([chip, chip[:, ::-1]])
    raw = plain.backend.run(plain.preprocess(both))
    expected = (raw["gender"][0] + raw["gender"][1]) / 2
    e = np.exp(expected - expected.max())
    p = tta.predict_chips(chip[None])[0]["gender"].probabilities
    assert abs(p["male"] - e[0] / e.sum()) < 1e-5


@pytest.mark.slow
def test_calibrate_on_the_checkpoints_own_training_data(tiny_checkpoint, tmp_path, capsys):
    import json
    import shutil

    ck = tmp_path / "m.safetensors"
    shutil.copyfile(tiny_checkpoint, ck)
    meta = json.loads(tiny_checkpoint.with_suffix(".json").read_text())
    meta.pop("alignment")
    ck.with_suffix(".json").write_text(json.dumps(meta))
    assert cli(["-q", "calibrate", "--checkpoint", str(ck), "-n", "12", "--detector", "dlib"]) == 0
    al = json.loads(ck.with_suffix(".json").read_text())["alignment"]["dlib"]
    assert al["source"] == "utkface train chips" and 0 < al["n"] <= al["of"] == 12
    (lx, ly), (rx, ry), (nx, ny) = al["points"][:3]
    assert lx < nx < rx and ly == ry < ny  # left eye, right eye level, nose below: an upright face
    meta.pop("config")
    ck.with_suffix(".json").write_text(json.dumps(meta))
    assert cli(["-q", "calibrate", "--checkpoint", str(ck), "-n", "12"]) == 2
    assert "--data" in capsys.readouterr().err


@pytest.mark.slow
def test_end_to_end_train_calibrate_predict(tmp_path, train_dir, capsys):
    """The whole path a user takes, with nothing injected: train, measure the alignment template on the training
    chips, then predict on a photo with detection and alignment."""
    from conftest import tiny_config
    from faceattr.cli.predict import example_photo
    from faceattr.training.loop import main

    main(tiny_config(tmp_path, "e2e", **{"train.max_steps_per_epoch": 2}), progress=False)
    ck = tmp_path / "e2e" / "best.safetensors"
    assert cli(["-q", "calibrate", "--checkpoint", str(ck), "-n", "30", "--detector", "dlib"]) == 0
    capsys.readouterr()
    assert cli(["-q", "predict", str(example_photo()), "--model", str(ck)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["num_faces"] == 1
    face = res["faces"][0]
    assert 150 < face["box"][0] < 250 and {"age", "gender", "race"} <= set(face)
    assert face["age"]["interval"][0] <= face["age"]["value"] <= face["age"]["interval"][1]


def test_runtime_install_predicts_without_torch(tmp_path):
    """What `pip install faceattr` (no torch) gives: the README's main job on the shipped ONNX model."""
    from faceattr.runtime.policy import SHIPPED_INT8

    assert SHIPPED_INT8.is_file() and SHIPPED_INT8.stat().st_size < 8e6
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from faceattr.cli.main import main\n"
        "rc = main(['-q', 'predict', '--example'])\n"
        "print('RC', rc, 'torch' in sys.modules and sys.modules['torch'] is not None)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.splitlines()[0])
    assert res["num_faces"] == 1 and {"age", "gender", "race"} <= set(res["faces"][0])
    assert out.stdout.split()[-2:] == ["0", "False"]
    p = Predictor.from_pretrained(runtime="onnx-int8")
    assert p.backend.name == "onnxruntime-int8" and p.meta.extra["quantization"]["calibration_method"] == "percentile"


def test_float32_onnx_agrees_with_torch():
    """The float32 ONNX export gives the torch checkpoint's answers, without torch (both with flip TTA, the
    shipped model's default)."""
    from faceattr.cli.predict import example_photo

    onnx, torch_ = Predictor.from_pretrained(runtime="onnx"), Predictor.from_pretrained(runtime="torch")
    assert onnx.backend.name == "onnxruntime" and onnx.checkpoint is not None
    assert onnx.tta_flip and torch_.tta_flip
    a, b = onnx.predict(example_photo()).faces[0], torch_.predict(example_photo()).faces[0]
    assert a.box == b.box
    assert a["age"].value == pytest.approx(b["age"].value, abs=0.01)
    assert a["age"].interval == pytest.approx(b["age"].interval, abs=0.01)
    for t in ("gender", "race"):
        assert a[t].probabilities == pytest.approx(b[t].probabilities, abs=1e-4)


def test_int8_is_exact_only_where_its_kernels_do_not_saturate():
    from faceattr.runtime.policy import int8_is_exact

    assert int8_is_exact("x86_64", frozenset({"avx2", "avx512f", "avx512_vnni"}))
    assert int8_is_exact("AMD64", frozenset({"avx2", "avx_vnni"}))
    assert not int8_is_exact("x86_64", frozenset({"avx", "avx2", "fma"}))  # AVX2 only: u8 x s8 pairs saturate
    assert not int8_is_exact("x86_64", frozenset({"avx2", "avx512f", "avx512bw"}))  # AVX-512 without VNNI
    assert not int8_is_exact("x86_64", None)  # flags unknown: take the exact path
    assert int8_is_exact("aarch64", None) and int8_is_exact("arm64", frozenset())


def test_cli_runtime_choices_are_the_librarys():
    from faceattr.cli import predict as cli_predict
    from faceattr.runtime import policy as predict

    assert cli_predict.RUNTIMES is predict.RUNTIMES


def test_default_path_is_int8_with_flip_and_close_to_float32(monkeypatch, caplog):
    """No flag: the INT8 ONNX model with flip TTA (the fastest and, measured, the most accurate path) where
    onnxruntime's INT8 kernels are exact; its answers stay close to the float32 model's on the example photo. On a
    CPU without VNNI the default is the float32 model, said in the log. A user's own model gets no flip unless asked."""
    import faceattr.runtime.policy as fp
    from faceattr.cli.predict import example_photo

    monkeypatch.setattr(fp, "cpu_flags", lambda: frozenset({"avx2"}))
    monkeypatch.setattr(fp.platform, "machine", lambda: "x86_64")
    with caplog.at_level("DEBUG", logger="faceattr.runtime.policy"):
        fallback = Predictor.from_pretrained()
    assert fallback.backend.name == "onnxruntime" and "VNNI" in caplog.text
    gated = {"gender": fp.FALLBACK_FLIP_BELOW}  # there only the gender-uncertain faces get their mirror image
    assert fallback.tta_flip == gated and fp.shipped_or(None, None) == (fp.shown_path(fp.SHIPPED_ONNX), gated)
    assert fp.shipped_or(None, True) == (fp.shown_path(fp.SHIPPED_ONNX), True)  # --tta-flip: every face
    assert Predictor.from_pretrained(runtime="onnx").tta_flip is True  # the float32 model by name: full flip
    monkeypatch.setattr(fp, "cpu_flags", lambda: frozenset({"avx2", "avx512_vnni"}))
    default = Predictor.from_pretrained()
    assert default.backend.name == "onnxruntime-int8" and default.tta_flip
    assert fp.shipped_or(None, None) == (fp.shown_path(fp.SHIPPED_INT8), True)
    assert not Predictor.from_pretrained(tta_flip=False).tta_flip
    monkeypatch.undo()
    if not fp.int8_is_exact(fp.platform.machine(), fp.cpu_flags()):
        pytest.skip("this CPU has no VNNI: the INT8 model's answers are not the measured ones here (the README)")
    fp32 = Predictor.from_pretrained(runtime="onnx")
    a, b = default.predict(example_photo()).faces[0], fp32.predict(example_photo()).faces[0]
    assert a.box == b.box
    assert abs(a["age"].value - b["age"].value) < 1.5
    for t in ("gender", "race"):
        assert a[t].label == b[t].label
        assert max(abs(a[t].probabilities[c] - b[t].probabilities[c]) for c in a[t].probabilities) < 0.1


def test_flip_tta_off_by_default_for_a_users_model(tiny_checkpoint):
    assert not Predictor.from_checkpoint(tiny_checkpoint).tta_flip
    assert Predictor.load(tiny_checkpoint, tta_flip=True).tta_flip


def test_cli_tta_flip_flag_is_three_valued():
    from faceattr.cli.main import build_parser

    a = build_parser().parse_args(["predict", "--no-tta-flip", "x.jpg"])
    assert a.tta_flip is False
    assert build_parser().parse_args(["predict", "x.jpg"]).tta_flip is None


def test_mirrored_mean_runs_both_views_in_one_batch():
    from faceattr.runtime.tta import mirrored_mean

    calls = []

    def run(x):
        calls.append(len(x))
        return {"a": x[:, 0, 0, :2] * 1.0, "b": x.sum(axis=(1, 2, 3))}

    x = np.arange(2 * 1 * 2 * 3, dtype=np.float32).reshape(2, 1, 2, 3)
    flip = lambda a: np.ascontiguousarray(a[..., ::-1])  # noqa: E731
    got = mirrored_mean(run, x, flip, np.concatenate)
    assert calls == [4]  # one batch of 2N
    # by hand: row 0 is [0, 1, 2 | 3, 4, 5], its mirror [2, 1, 0 | 5, 4, 3]: first two of the first row 0,1 and 2,1
    assert got["a"][0].tolist() == [1.0, 1.0]
    assert got["b"].tolist() == [15.0, 51.0]  # a flip does not change a sum


def test_a_huge_photo_is_answered_in_its_own_pixels(tmp_path):
    """A group photo scaled to 7,680 px: decoded at reduced size, its faces' boxes and landmarks still in the
    photo's pixels, matching the answer on the full-size array within a few pixels."""
    import io

    import cv2
    from PIL import Image

    from conftest import DATA, need
    from faceattr.runtime.predictor import Predictor
    from faceattr.vision.image import load_image

    g = load_image(need(DATA / "group-photos") / "sample3.jpg")
    big = cv2.resize(g, (7680, round(7680 * g.shape[0] / g.shape[1])), interpolation=cv2.INTER_CUBIC)
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, "JPEG", quality=95)
    p = Predictor.from_pretrained()
    reduced, full = p.predict(buf.getvalue()), p.predict(big)
    assert (reduced.width, reduced.height) == (full.width, full.height) == (big.shape[1], big.shape[0])
    assert len(reduced.faces) == len(full.faces) >= 3
    for a in reduced.faces:
        b = min(full.faces, key=lambda f: abs(f.box[0] - a.box[0]) + abs(f.box[1] - a.box[1]))
        assert np.abs(np.array(a.box) - np.array(b.box)).max() < 0.02 * (b.box[2] - b.box[0])


def test_onnx_backend_small_and_large_runs_agree():
    """Runs of fewer than WIDE_BATCH inputs use the one-thread session, larger ones the session with a thread per
    core: the same network, the same outputs."""
    from faceattr.runtime.backends import WIDE_BATCH, OnnxBackend
    from faceattr.runtime.policy import SHIPPED_INT8

    b = OnnxBackend(SHIPPED_INT8)
    x = np.random.default_rng(0).standard_normal((WIDE_BATCH, 3, 128, 128)).astype(np.float32)
    wide = b.run(x)
    one = {k: np.concatenate([b.run(x[i : i + 1])[k] for i in range(len(x))]) for k in wide}
    for k in wide:
        np.testing.assert_allclose(one[k], wide[k], atol=1e-5)
