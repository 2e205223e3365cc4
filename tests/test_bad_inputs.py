"""The bad-input corpus: every command and the Python API against bad options, files, models, data, faults and
concurrency. Each case asserts the documented behaviour (README, "Failure behaviour"): the exit status, the one
line that says what is wrong, what was written -- and that every input is byte-identical afterwards.

All inputs are made here (synthetic faces, a model trained on them for one epoch), so the corpus runs without
../shared.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import REPO, synth_config
from faceattr.cli.main import main as cli
from faceattr.errors import FaceattrError, UsageError
from faceattr.vision.image import ImageError


# ---- helpers --------------------------------------------------------------------------------------------------
def run(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli(["-q", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def fails(capsys, *args: str, match: str, code: int = 2) -> str:
    """The command ends with ``code``, one 'error:' line that matches, and no traceback."""
    rc, out, err = run(capsys, *args)
    assert rc == code, (rc, out, err)
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    assert match.lower() in lines[0].lower(), lines[0]
    return lines[0]


def digest(*paths: Path) -> dict[str, str]:
    out = {}
    for p in paths:
        for f in [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file()):
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def face_jpg(path: Path, seed: int = 0, size: int = 96) -> Path:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=90)
    return path


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    d = tmp_path / "photos"
    for i in range(3):
        face_jpg(d / f"p{i}.jpg", i)
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(d / "q.png")
    return d


@pytest.fixture
def model(synth_checkpoint: Path) -> Path:
    return synth_checkpoint


def predict(model: Path, *args: object) -> list[str]:
    return ["predict", "--model", str(model), "--no-detect", *map(str, args)]


# ---- predict: outputs never destroy inputs ---------------------------------------------------------------------
def test_output_that_is_an_input_is_refused(capsys, model, photos):
    before = digest(photos)
    fails(capsys, *predict(model, photos / "p0.jpg", "-O", photos / "p0.jpg"), match="also an input")
    assert digest(photos) == before


def test_draw_into_the_input_folder_is_refused(capsys, model, photos):
    before = digest(photos)
    fails(capsys, *predict(model, photos, "--draw", photos), match="inside the input folder")
    fails(capsys, *predict(model, photos, "--draw", photos / "sub"), match="inside the input folder")
    assert digest(photos) == before


@pytest.mark.parametrize("bad", [["--detector", "dlbi"], ["--model", "nope.safetensors"], ["--batch-size", "0"]])
def test_existing_output_survives_a_late_error(capsys, model, photos, tmp_path, bad):
    res = tmp_path / "results.jsonl"
    res.write_text("precious\n")
    args = ["predict", photos, "-O", res, "--model", model, *bad]
    rc, _, err = run(capsys, *args)
    assert rc == 2 and "Traceback" not in err
    assert res.read_text() == "precious\n"
    assert not list(tmp_path.glob("*.partial"))


def test_output_is_a_folder(capsys, model, photos, tmp_path):
    fails(capsys, *predict(model, photos, "-O", tmp_path), match="is a folder")


def test_output_under_a_file(capsys, model, photos, tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    fails(capsys, *predict(model, photos, "-O", f / "out.jsonl"), match="not a folder")
    assert f.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_output_in_a_read_only_folder(capsys, model, photos, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    fails(capsys, *predict(model, photos, "-O", ro / "out.jsonl"), match="not writable")


def test_draw_at_an_existing_file(capsys, model, photos, tmp_path):
    f = tmp_path / "file.png"
    f.write_bytes(b"keep")
    fails(capsys, *predict(model, photos, "--draw", f), match="is a file")
    assert f.read_bytes() == b"keep"


def test_same_names_in_two_folders_never_overwrite(capsys, model, tmp_path):
    a, b = face_jpg(tmp_path / "a" / "x.jpg", 1), face_jpg(tmp_path / "b" / "x.jpg", 2)
    rc, _, _ = run(capsys, *predict(model, a, b, "--draw", tmp_path / "draw"))
    assert rc == 0
    assert (tmp_path / "draw" / "a" / "x.jpg").is_file() and (tmp_path / "draw" / "b" / "x.jpg").is_file()


def test_output_is_complete_and_renamed(capsys, model, photos, tmp_path):
    out = tmp_path / "r.jsonl"
    rc, _, _ = run(capsys, *predict(model, photos, "-O", out))
    assert rc == 0 and len(out.read_text().splitlines()) == 4
    assert not (tmp_path / "r.jsonl.partial").exists()


# ---- predict: options --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "opt,val,match",
    [
        ("--batch-size", "0", "--batch-size"),
        ("--batch-size", "-1", "--batch-size"),
        ("--threads", "0", "--threads"),
        ("--threads", "-1", "--threads"),
        ("--max-pixels", "0", "--max-pixels"),
        ("--min-score", "nan", "--min-score"),
    ],
)
def test_bad_numbers(capsys, model, photos, opt, val, match):
    fails(capsys, *predict(model, photos, opt, val), match=match)


def test_unknown_detector(capsys, model, photos):
    fails(capsys, "predict", photos, "--model", model, "--detector", "dlbi", match="unknown detector")


def test_yunet_without_its_file(capsys, model, photos):
    fails(capsys, "predict", photos, "--model", model, "--detector", "yunet", match="model file")


def test_wrong_yunet_file(capsys, model, photos, tmp_path):
    bad = tmp_path / "yunet.onnx"
    bad.write_bytes(b"not an onnx model")
    fails(capsys, "predict", photos, "--model", model, "--yunet-model", bad, match="not a yunet model")


# ---- predict: inputs ----------------------------------------------------------------------------------------------
def test_empty_folder(capsys, model, tmp_path):
    (tmp_path / "empty").mkdir()
    fails(capsys, *predict(model, tmp_path / "empty"), match="no image files")


def test_folder_of_other_files(capsys, model, tmp_path, caplog):
    d = tmp_path / "docs"
    d.mkdir()
    (d / "notes.txt").write_text("hello")
    fails(capsys, *predict(model, d), match="only files of other types")


def test_unsupported_files_are_counted_not_silent(capsys, model, photos, caplog):
    (photos / "notes.txt").write_text("hello")
    rc, out, _ = run(capsys, *predict(model, photos))
    assert rc == 0 and len(out.splitlines()) == 4
    assert any("1 files skipped" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "content,match",
    [(b"", "empty file"), (b"just text", "not an image"), (b"TRUNCATED", "truncated")],
    ids=["empty", "text", "truncated"],
)
def test_bad_file_among_good_ones(capsys, model, photos, content, match):
    if content == b"TRUNCATED":
        content = (photos / "p0.jpg").read_bytes()[:600]
    (photos / "bad.jpg").write_bytes(content)
    rc, out, _ = run(capsys, *predict(model, photos))
    rows = [json.loads(x) for x in out.splitlines()]
    assert rc == 0 and len(rows) == 5
    bad = next(r for r in rows if r["file"].endswith("bad.jpg"))
    assert match in bad["error"]
    assert sum("faces" in r for r in rows) == 4


def test_missing_file_only(capsys, model, tmp_path):
    rc, out, _ = run(capsys, *predict(model, tmp_path / "nope.jpg"))
    assert rc == 1 and "no such file" in json.loads(out)["error"]


def test_decompression_bomb_refused(capsys, model, tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)  # 400 MP, a few kB on disk
    rc, out, _ = run(capsys, *predict(model, bomb))
    assert rc == 1 and "exceeds the limit" in json.loads(out)["error"]


def test_animated_gif_uses_first_frame_and_says_so(capsys, model, tmp_path, caplog):
    frames = [Image.fromarray(np.full((64, 64, 3), v, np.uint8)) for v in (10, 200)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    rc, out, _ = run(capsys, *predict(model, tmp_path / "a.gif"))
    assert rc == 0 and json.loads(out)["num_faces"] == 1
    assert any("2 frames" in r.getMessage() for r in caplog.records)


def test_non_utf8_file_name_in_csv(capsys, model, tmp_path):
    d = tmp_path / "odd"
    d.mkdir()
    name = os.fsdecode(b"caf\xe9.jpg")  # latin-1 bytes: not UTF-8
    try:
        face_jpg(d / name)
    except (UnicodeEncodeError, OSError):
        pytest.skip("this file system refuses non-UTF-8 names")
    face_jpg(d / "plain.jpg", 3)
    out = tmp_path / "r.csv"
    rc, _, err = run(capsys, *predict(model, d, "--format", "csv", "-O", out))
    assert rc == 0 and "Traceback" not in err
    data = out.read_bytes()
    assert b"caf\xe9.jpg" in data and b"plain.jpg" in data  # the name's bytes, as on disk


def test_full_disk_leaves_target_untouched(capsys, model, photos, tmp_path, monkeypatch):
    import faceattr.safeio as safeio

    out = tmp_path / "r.jsonl"
    out.write_text("old results\n")
    real_open = open

    class Full(io.TextIOWrapper):
        pass

    def full_open(path, mode="r", **kw):
        f = real_open(path, mode, **kw)
        if str(path).endswith(".partial"):

            def write(s, _w=f.write):
                raise OSError(errno.ENOSPC, "No space left on device")

            f.write = write  # type: ignore[method-assign]
        return f

    monkeypatch.setattr(safeio, "open", full_open, raising=False)
    fails(capsys, *predict(model, photos, "-O", out), match="no space left")
    assert out.read_text() == "old results\n"
    assert not (tmp_path / "r.jsonl.partial").exists()


def test_interrupt_keeps_complete_records_in_partial(capsys, model, photos, tmp_path, monkeypatch):
    import faceattr.runtime.predictor as fp

    out = tmp_path / "r.jsonl"
    out.write_text("old\n")
    calls = {"n": 0}
    real = fp.Predictor.predict

    def stop_on_third(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(fp.Predictor, "predict", stop_on_third)
    rc, _, err = run(capsys, *predict(model, photos, "-O", out))
    assert rc == 130 and "interrupted" in err
    assert out.read_text() == "old\n"
    part = (tmp_path / "r.jsonl.partial").read_text().splitlines()
    assert len(part) == 2 and all(json.loads(x)["num_faces"] == 1 for x in part)


# ---- models ------------------------------------------------------------------------------------------------------
def test_model_that_is_not_a_model(capsys, photos, tmp_path):
    m = tmp_path / "m.safetensors"
    m.write_bytes(os.urandom(256))
    (tmp_path / "m.json").write_text("{}")
    fails(capsys, "predict", photos, "--model", m, match="not a faceattr checkpoint")


def test_metadata_swapped_after_training(capsys, model, photos, tmp_path):
    import shutil

    shutil.copy(model, tmp_path / "m.safetensors")
    meta = json.loads(model.with_suffix(".json").read_text())
    meta["tasks"][2]["classes"] = list(reversed(meta["tasks"][2]["classes"]))  # race classes reordered
    (tmp_path / "m.json").write_text(json.dumps(meta))
    fails(capsys, *predict(tmp_path / "m.safetensors", photos), match="does not belong")
    meta = json.loads(model.with_suffix(".json").read_text())
    meta["input_size"] = 96
    (tmp_path / "m.json").write_text(json.dumps(meta))
    fails(capsys, *predict(tmp_path / "m.safetensors", photos), match="does not belong")


@pytest.mark.slow
def test_onnx_without_or_with_broken_metadata(capsys, model, photos, tmp_path):
    import onnx

    rc, _, _ = run(capsys, "export", "--model", model, "--out", tmp_path / "m.onnx")
    assert rc == 0
    m = onnx.load(str(tmp_path / "m.onnx"))
    m.metadata_props[0].value = "{broken json"
    onnx.save(m, str(tmp_path / "broken.onnx"))
    fails(capsys, *predict(tmp_path / "broken.onnx", photos), match="metadata is broken")
    del m.metadata_props[:]
    onnx.save(m, str(tmp_path / "bare.onnx"))
    fails(capsys, *predict(tmp_path / "bare.onnx", photos), match="without faceattr metadata")
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    fails(capsys, *predict(tmp_path / "junk.onnx", photos), match="not a loadable onnx model")


# ---- the Python API ---------------------------------------------------------------------------------------------
@pytest.fixture
def api(model):
    from faceattr.runtime.predictor import Predictor

    return Predictor.load(model)


@pytest.mark.parametrize(
    "arr,match",
    [
        (np.zeros((0, 0, 3), np.uint8), "too small"),
        (np.zeros((1, 1, 3), np.uint8), "too small"),
        (np.full((32, 32, 3), np.nan, np.float32), "nan"),
        (np.full((32, 32, 3), 128.0, np.float32), "0..1"),
        (np.full((32, 32, 3), 300, np.int32), "0..255"),
        (np.zeros((32, 32, 3), bool), "boolean"),
        (np.zeros((32, 32, 2), np.uint8), "not an hxw"),
        (np.empty((32, 32, 3), object), "not an image array"),
    ],
)
def test_arrays_that_are_not_images(api, arr, match):
    with pytest.raises(ImageError, match=f"(?i){match}"):
        api.predict(arr, detect=False)


def test_arrays_that_are_images(api):
    f = np.clip(np.random.default_rng(0).random((32, 32, 3)) * 1.008, 0, 1.008).astype(np.float32)  # within margin
    assert len(api.predict(f, detect=False).faces) == 1
    u16 = (np.random.default_rng(1).random((32, 32, 3)) * 65535).astype(np.uint16)
    from faceattr.vision.image import load_image

    assert load_image(u16).mean() > 60  # scaled from 16 bits, not a black image


def test_predict_many_goes_on_past_a_bad_item(api, tmp_path):
    good = face_jpg(tmp_path / "g.jpg")
    res = list(api.predict_many([tmp_path / "missing.jpg", b"junk", good], detect=False))
    assert [bool(r.error) for r in res] == [True, True, False]
    assert "no such file" in res[0].error and res[2].faces
    assert res[0].to_dict() == {"file": str(tmp_path / "missing.jpg"), "error": res[0].error}


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"coverage": 1.5}, "coverage"),
        ({"max_pixels": 0}, "max_pixels"),
        ({"min_score": float("nan")}, "min_score"),
    ],
)
def test_predictor_options(model, kw, match):
    from faceattr.runtime.predictor import Predictor

    with pytest.raises(UsageError, match=match):
        Predictor.load(model, **kw)


def test_every_user_error_shares_one_base():
    from faceattr.config import ConfigError
    from faceattr.data.readers import DataError
    from faceattr.models.checkpoint import CheckpointError
    from faceattr.runtime.backends import ModelFormatError
    from faceattr.safeio import OutputError
    from faceattr.training.export import ExportError
    from faceattr.training.loop import TrainingError
    from faceattr.vision.detect import DetectorUnavailable

    for cls in (
        CheckpointError,
        ConfigError,
        DataError,
        DetectorUnavailable,
        ExportError,
        ModelFormatError,
        OutputError,
        TrainingError,
        ImageError,
        UsageError,
    ):
        assert issubclass(cls, FaceattrError), cls


@pytest.mark.slow
def test_one_predictor_many_threads(model):
    """Eight threads share one Predictor (detector included) and get the sequential answers."""
    from faceattr.cli.predict import example_photo
    from faceattr.runtime.predictor import Predictor
    from faceattr.vision.image import load_image

    try:
        photo = load_image(example_photo())
    except FileNotFoundError:
        pytest.skip("scikit-image's example photo is not installed")
    p = Predictor.load(model)
    try:
        p.detector  # noqa: B018
    except FaceattrError as e:
        pytest.skip(f"no detector here: {e}")
    crops = [np.ascontiguousarray(np.roll(photo, 7 * i, axis=1)) for i in range(4)]
    want = [json.dumps(p.predict(c).to_dict(), sort_keys=True) for c in crops]
    got: list[list[str]] = [[] for _ in range(8)]
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for _ in range(3):
                for c in crops:
                    got[k].append(json.dumps(p.predict(c).to_dict(), sort_keys=True))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    for g in got:
        assert g == want * 3


# ---- train and configs ---------------------------------------------------------------------------------------------
def _cfg(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "exp.yaml"
    p.write_text(text)
    return p


def test_lr_written_as_text_is_a_number(tmp_path):
    from faceattr.config import load_config

    cfg = load_config(_cfg(tmp_path, "train:\n  lr: 1e-3\n"))
    assert cfg.train.lr == 0.001 and isinstance(cfg.train.lr, float)


@pytest.mark.parametrize(
    "setting,match",
    [
        ("train.lr=-1", "train.lr"),
        ("train.lr=.nan", "train.lr"),
        ("data.image_size=0", "data.image_size"),
        ("train.epochs=0", "train.epochs"),
        ("train.batch_size=0", "train.batch_size"),
        ("model.ordinal_formulation=corall", "did you mean 'coral'"),
        ("train.weighting=uncertanity", "did you mean"),
        ("train.lrr=0.1", "unknown settings"),
        ("model.shared_stages=9", "shared_stages"),
        ("train.amp=maybe", "true or false"),
        ("train.epochs=2.5", "whole number"),
        ("train.device=tpu", "train.device"),
        ("train.weighting=fixed", "fixed_weights"),
        ("data.dataset=imagenet", "data.dataset"),
    ],
)
def test_bad_settings_fail_before_any_data_is_read(capsys, tmp_path, setting, match):
    fails(
        capsys,
        "train",
        "-c",
        REPO / "configs" / "utkface.yaml",
        "-o",
        setting,
        "-o",
        f"out_dir={tmp_path}",
        "-o",
        "data.root=/nonexistent",
        match=match,
    )
    assert not any(tmp_path.iterdir())  # nothing written


def test_config_file_problems(capsys, tmp_path):
    fails(capsys, "train", "-c", tmp_path / "missing.yaml", match="not found")
    fails(capsys, "train", "-c", _cfg(tmp_path, "train: [unclosed"), match="not valid yaml")
    fails(capsys, "train", "-c", _cfg(tmp_path, "train: 3\n"), match="expected a mapping")
    fails(capsys, "train", "--data", "utkface", match="DATASET:DIR")


@pytest.mark.slow
def test_resume_refuses_a_changed_config(capsys, tmp_path, synth_utk):
    from faceattr.config import save_config
    from faceattr.training.loop import main

    cfg = synth_config(tmp_path, synth_utk, name="r")
    main(cfg, progress=False)
    p = tmp_path / "r.yaml"
    save_config(cfg, p)
    saved = (tmp_path / "r" / "config.yaml").read_text()
    fails(capsys, "train", "-c", p, "--resume", "-o", "train.lr=0.01", match="train.lr: 0.001 -> 0.01")
    fails(capsys, "train", "-c", p, "--resume", "-o", "data.max_train=10", match="data.max_train")
    fails(capsys, "train", "-c", p, "--resume", "-o", "augment.rotate=30", match="augment.rotate")
    assert (tmp_path / "r" / "config.yaml").read_text() == saved  # nothing recorded that was not used
    rc, _, _ = run(capsys, "train", "-c", p, "--resume", "-o", "train.threads=2", "-o", "train.epochs=1")
    assert rc == 0  # threads do not change what is computed


@pytest.mark.slow
def test_resume_with_a_corrupt_state(capsys, tmp_path, synth_utk):
    from faceattr.config import save_config
    from faceattr.training.loop import main

    cfg = synth_config(tmp_path, synth_utk, name="c")
    main(cfg, progress=False)
    (tmp_path / "c" / "last_state.pt").write_bytes(b"garbage")
    p = tmp_path / "c.yaml"
    save_config(cfg, p)
    fails(capsys, "train", "-c", p, "--resume", match="corrupt or foreign training state")
    fails(capsys, "train", "-c", p, match="already holds a run")


def test_manifest_with_no_usable_row(capsys, tmp_path):
    (tmp_path / "m.csv").write_text("file,g\na.jpg,x\nb.jpg,y\n")
    cfg = {
        "data": {
            "dataset": "manifest",
            "root": str(tmp_path),
            "labels": str(tmp_path / "m.csv"),
            "tasks": [{"name": "g", "kind": "nominal", "classes": ["m", "f"]}],
        },
        "out_dir": str(tmp_path / "runs"),
        "model": {"pretrained": False},
    }
    fails(capsys, "train", "-c", _cfg(tmp_path, yaml.safe_dump(cfg)), match="none of its 2 rows is usable")


def test_manifest_task_with_one_level(capsys, tmp_path):
    (tmp_path / "m.csv").write_text("file,g\na.jpg,x\n")
    cfg = {
        "data": {
            "dataset": "manifest",
            "root": str(tmp_path),
            "labels": str(tmp_path / "m.csv"),
            "tasks": [{"name": "g", "kind": "ordinal", "levels": ["x"]}],
        },
        "out_dir": str(tmp_path / "runs"),
    }
    fails(capsys, "train", "-c", _cfg(tmp_path, yaml.safe_dump(cfg)), match="at least 2 levels")


# ---- evaluate, export, explain, audit, split, calibrate, ablate, claims -------------------------------------------
def test_evaluate_bad_limit_and_out(capsys, model, synth_utk, tmp_path):
    fails(capsys, "evaluate", "--checkpoint", model, "--data", f"utkface:{synth_utk}", "--limit", "-3", match="--limit")
    f = tmp_path / "f"
    f.write_text("x")
    fails(capsys, "evaluate", "--checkpoint", model, "--data", f"utkface:{synth_utk}", "--out", f, match="is a file")
    assert f.read_text() == "x"


def test_evaluate_label_map_typo(capsys, model, synth_utk):
    fails(
        capsys,
        "evaluate",
        "--checkpoint",
        model,
        "--data",
        f"utkface:{synth_utk}",
        "--label-map",
        "{race: {Whyte: White}}",
        match="not labels of the data",
    )


def test_evaluate_writes_its_report(capsys, model, synth_utk, tmp_path):
    rc, _, _ = run(
        capsys, "evaluate", "--checkpoint", model, "--data", f"utkface:{synth_utk}", "--out", tmp_path / "ev"
    )
    assert rc == 0 and json.loads((tmp_path / "ev" / "metrics.json").read_text())["n"] > 0


def test_export_bad_options_write_nothing(capsys, model, tmp_path):
    fails(
        capsys,
        "export",
        "--model",
        model,
        "--int8",
        "--calibration-size",
        "0",
        "--out",
        tmp_path / "m.onnx",
        match="--calibration-size",
    )
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"xx")
    bad.with_suffix(".json").write_text(model.with_suffix(".json").read_text())
    fails(capsys, "export", "--model", bad, "--out", tmp_path / "m.onnx", match="bad.safetensors")
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob("*.partial*"))


def test_export_out_under_a_file(capsys, model, tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    fails(capsys, "export", "--model", model, "--out", f / "m.onnx", match="not a folder")
    assert f.read_text() == "x"


def test_explain_options(capsys, model, tmp_path):
    img = face_jpg(tmp_path / "a" / "x.jpg")
    fails(
        capsys,
        "explain",
        img,
        "--checkpoint",
        model,
        "--no-detect",
        "--age-threshold",
        "999",
        "--out",
        tmp_path / "cams",
        match="--age-threshold",
    )
    fails(capsys, "explain", "--checkpoint", model, "--out", tmp_path / "cams", match="give photos")
    fails(
        capsys,
        "explain",
        img,
        "--checkpoint",
        model,
        "--task",
        "hair",
        "--no-detect",
        "--out",
        tmp_path / "c2",
        match="unknown task",
    )


def test_explain_same_stem_twice(capsys, model, tmp_path):
    a, b = face_jpg(tmp_path / "a" / "x.jpg", 1), face_jpg(tmp_path / "b" / "x.jpg", 2)
    rc, out, _ = run(
        capsys, "explain", a, b, "--checkpoint", model, "--no-detect", "--task", "gender", "--out", tmp_path / "cams"
    )
    assert rc == 0
    written = json.loads(out)["written"]
    assert len(written) == 2 and len(set(written)) == 2 and all(Path(w).is_file() for w in written)


def test_audit_options(capsys, model, synth_utk, tmp_path):
    fails(
        capsys,
        "audit",
        "--checkpoint",
        model,
        "--data",
        f"utkface:{synth_utk}",
        "--n-boot",
        "0",
        "--out",
        tmp_path / "a",
        match="--n-boot",
    )
    fails(
        capsys,
        "audit",
        "--checkpoint",
        model,
        "--data",
        f"utkface:{synth_utk}",
        "--limit",
        "0",
        "--out",
        tmp_path / "a",
        match="--limit",
    )


@pytest.mark.parametrize(
    "spec,match",
    [("/some/dir", "DATASET:DIR"), ("imagenet:/x", "utkface or fairface"), ("utkface:/nonexistent", "not a folder")],
)
def test_split_specs(capsys, tmp_path, spec, match):
    fails(capsys, "split", spec, "--out", tmp_path / "s.csv", match=match)


def test_split_writes_atomically(capsys, synth_utk, tmp_path):
    out = tmp_path / "s.csv"
    rc, _, _ = run(capsys, "split", f"utkface:{synth_utk}", "--out", out)
    assert rc == 0 and out.read_text().startswith("file,") and not (tmp_path / "s.csv.partial").exists()


def test_calibrate_n(capsys, model):
    fails(capsys, "calibrate", "--checkpoint", model, "-n", "0", match="-n must be")


def test_calibrate_unknown_detector_before_reading_data(capsys, model):
    before = digest(model.with_suffix(".json"))
    fails(capsys, "calibrate", "--checkpoint", model, "--detector", "nope", match="unknown detector")
    assert digest(model.with_suffix(".json")) == before


def test_ablate_and_claims_options(capsys):
    fails(capsys, "ablate", "-c", REPO / "configs" / "claims-utkface.yaml", "--jobs", "0", match="--jobs")
    fails(capsys, "claims", "-c", REPO / "configs" / "claims-utkface.yaml", "--n-boot", "5", match="--n-boot")
    fails(capsys, "ablate", "-c", "/nonexistent.yaml", match="not found")


def test_cache_command(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("FACEATTR_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "images-abc.npy").write_bytes(b"0" * 1000)
    (tmp_path / "cache" / "unrelated.txt").write_text("keep")
    rc, out, _ = run(capsys, "cache")
    assert rc == 0 and "1 file" in out
    rc, out, _ = run(capsys, "cache", "--clear")
    assert rc == 0 and not (tmp_path / "cache" / "images-abc.npy").exists()
    assert (tmp_path / "cache" / "unrelated.txt").read_text() == "keep"


# ---- the surfaces added since: train, detectors, models, configs, export, CSV, limits, privacy, batch, service --
def test_train_out_dir_that_is_a_file(capsys, synth_utk, tmp_path):
    f = tmp_path / "runs"
    f.write_text("a file")
    fails(
        capsys,
        "train",
        "-c",
        REPO / "configs/utkface.yaml",
        "--data",
        f"utkface:{synth_utk}",
        "--out-dir",
        f,
        match="is a file",
    )
    assert f.read_text() == "a file"


def test_a_config_whose_top_level_is_a_list(capsys, tmp_path):
    cfg = tmp_path / "list.yaml"
    cfg.write_text("- name: x\n- train: {}\n")
    fails(capsys, "train", "-c", cfg, match="mapping")


def test_a_faceattr_onnx_given_as_the_yunet_model(capsys, photos, tmp_path):
    from faceattr.runtime.policy import SHIPPED_ONNX

    fails(
        capsys,
        "predict",
        photos / "p0.jpg",
        "--detector",
        "yunet",
        "--yunet-model",
        SHIPPED_ONNX,
        match="not a YuNet model",
    )


def test_an_onnx_model_whose_metadata_names_another_input_size(tmp_path):
    onnx = pytest.importorskip("onnx")
    from faceattr.runtime.backends import ModelFormatError
    from faceattr.runtime.policy import SHIPPED_ONNX
    from faceattr.runtime.predictor import Predictor

    m = onnx.load(str(SHIPPED_ONNX))
    for p in m.metadata_props:
        if p.key == "faceattr":
            meta = json.loads(p.value)
            meta["input_size"] = 96
            p.value = json.dumps(meta)
    bad = tmp_path / "m.onnx"
    onnx.save(m, str(bad))
    with pytest.raises(ModelFormatError, match="96 px"):
        Predictor.load(bad)


def test_export_names_its_output_as_given(capsys, model, tmp_path):
    fails(capsys, "export", "--model", model, "--out", tmp_path / "m.bin", match="must end in .onnx")
    assert not list(tmp_path.iterdir())


def test_csv_cells_that_a_spreadsheet_would_run_are_defused(capsys, model, tmp_path, monkeypatch):
    face_jpg(tmp_path / "=HYPERLINK(1).jpg")
    monkeypatch.chdir(tmp_path)
    rc, out, _ = run(capsys, *predict(model, "=HYPERLINK(1).jpg", "--format", "csv"))
    assert rc == 0
    assert out.splitlines()[1].startswith("'=HYPERLINK(1).jpg,")  # the file cell starts with an apostrophe
    from faceattr.cli.predict import csv_safe

    assert csv_safe("-1 + 2") == "'-1 + 2" and csv_safe(-1.5) == -1.5 and csv_safe("White") == "White"


def test_max_pixels_above_pillows_own_limit_is_honoured():
    im = Image.new("L", (9600, 9600))  # 92 MP: over Pillow's fixed 89 MP warning
    buf = io.BytesIO()
    im.save(buf, "PNG")
    from faceattr.vision.image import load_image

    assert load_image(buf.getvalue(), max_pixels=100_000_000).shape == (9600, 9600, 3)
    with pytest.raises(ImageError, match="exceeds the limit"):
        load_image(buf.getvalue(), max_pixels=90_000_000)


def test_nothing_is_written_outside_the_outputs(tmp_path, model):
    """onnxruntime, loaded by faceattr, writes no device id or database under the home folder."""
    import subprocess
    import sys

    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"), "TMPDIR": str(tmp_path)}
    env.pop("ORT_DISABLE_TELEMETRY", None)
    r = subprocess.run(
        [sys.executable, "-m", "faceattr", "-q", "predict", "--example"], env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert not list(home.rglob("*")), list(home.rglob("*"))
    assert not list(tmp_path.glob("mat-debug-*"))


@pytest.mark.parametrize(
    "argv,match",
    [
        (["video", "x.mp4"], "--out"),
        (["video", "x.mp4", "--tracks", "t.jsonl", "--detect-every", "0"], "detect_every"),
        (["video", "x.mp4", "--tracks", "t.jsonl", "--rho", "2"], "rho"),
        (["video", "x.mp4", "--tracks", "t.jsonl", "--max-frames", "0"], "max_frames"),
        (["video", "x.mp4", "--out", "x.txt"], ".mp4"),
        (["video", "missing.mp4", "--tracks", "t.jsonl"], "no such file"),
        (["batch", "p.jpg", "--out", "o", "--shard", "1/1"], "shards must be"),
        (["batch", "p.jpg", "--out", "o", "--shard-size", "0"], "shard size"),
        (["batch", "p.jpg", "--out", "o", "--workers", "0"], "workers"),
        (["batch", "p.jpg", "--out", "o", "--batch-size", "0"], "batch size"),
        (["batch", "p.jpg", "--out", "o", "--engine", "ray", "--workers", "2"], "local engine"),
        (["batch", "p.jpg", "--out", "o", "--engine", "ray", "--shard", "0/2"], "local engine"),
        (["batch", "--out", "o"], "required"),
        (["evaluate", "--data", "nodataset"], "DATASET:PATH"),
        (["evaluate", "--data", "imagenet:x"], "unknown dataset"),
        (["evaluate", "--data", "utkface:x", "--limit", "0"], "--limit"),
        (["audit", "--data", "utkface:x", "-o", "a", "--n-boot", "2"], "--n-boot"),
        (["audit", "--data", "utkface:x", "-o", "a", "--limit", "0"], "--limit"),
        (["explain", "--average-n", "0", "p.jpg", "-o", "c"], "--average-n"),
        (["explain", "-o", "c"], "give photos"),
        (["split", "nodataset", "-o", "s.csv"], "DATASET:DIR"),
        (["split", "imagenet:x", "-o", "s.csv"], "utkface or fairface"),
        (["split", "utkface:missing-folder", "-o", "s.csv"], "not a folder"),
        (["train", "-c", "missing.yaml"], "not found"),
        (["train", "-c", "configs/utkface.yaml", "--data", "nocolon"], "DATASET:DIR"),
        (["train", "-c", "configs/utkface.yaml", "-o", "train.lr=-1"], "train.lr"),
        (["train", "-c", "configs/utkface.yaml", "-o", "model.ordinal_formulation=corall"], "did you mean"),
        (["train", "-c", "configs/utkface.yaml", "-o", "train.weighting=uncertain"], "train.weighting"),
        (["train", "-c", "configs/utkface.yaml", "-o", "model.shared_stages=9"], "shared_stages"),
        (["train", "-c", "configs/utkface.yaml", "-o", "data.image_size=8"], "image_size"),
        (["train", "-c", "configs/utkface.yaml", "--stop-after-epoch", "0"], "--stop-after-epoch"),
        (["predict", "p.jpg", "--model", "no-such-model"], "no-such-model"),
        (["predict", "p.jpg", "--detector", "yunnet"], "yunnet"),
        (["predict", "p.jpg", "--detector", "yunet"], "model file"),
        (["models", "--json", "extra"], "unrecognized"),
        (["fit-calibration", "--data", "utkface:x"], "--model"),
        (["export", "--model", "missing.safetensors", "-o", "m.onnx"], "not found"),
        (["serve", "--port", "0"], "1 to 65535"),
        (["serve", "--port", "65536"], "1 to 65535"),
        (["nosuchcommand"], "invalid choice"),
    ],
)
def test_every_command_refuses_bad_options_in_one_line(capsys, tmp_path, argv, match, monkeypatch):
    """A usage error is one line and exit status 2, whatever the command; nothing is written."""
    monkeypatch.chdir(REPO if argv[0] == "train" else tmp_path)
    (tmp_path / "p.jpg").write_bytes(b"")
    before = sorted(p.name for p in tmp_path.iterdir())
    capsys.readouterr()
    try:
        rc = cli(["-q", *argv])
    except SystemExit as e:  # argparse's own errors
        rc = int(e.code or 0)
    err = capsys.readouterr().err
    assert rc == 2, (argv, err)
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if "error" in ln.lower()]
    assert lines and match.lower() in err.lower(), (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# ---- the service: every documented bad request, each followed by a good one ----------------------------------
def _png(w: int = 64, h: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def service(synth_checkpoint):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from faceattr.runtime.predictor import Predictor
    from faceattr.serve import ServeSettings, create_app

    pred = Predictor.load(synth_checkpoint)
    settings = ServeSettings(max_images=2, max_upload_mb=1.0, max_pixels=1_000_000, disabled_tasks=("race",))
    with TestClient(create_app(pred, settings)) as c:
        yield c


J = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    "kind,request_kw,status,code",
    [
        ("not an image", {"files": {"image": ("a.jpg", b"text")}}, 415, "not_an_image"),
        ("empty file", {"files": {"image": ("a.jpg", b"")}}, 422, "empty_image"),
        ("tiny image", {"files": {"image": ("a.png", "TINY")}}, 422, "image_too_small"),
        ("too many images", {"files": [("image", ("a.png", "PNG"))] * 3}, 413, "too_many_images"),
        ("image over max_pixels", {"files": {"image": ("a.png", "HUGE")}}, 413, "image_too_large"),
        ("body over max_upload_mb", {"content": b"x" * 2_000_000, "headers": J}, 413, "body_too_large"),
        ("no image", {"json": {"images": []}}, 422, "no_image"),
        ("JSON without images", {"json": {"tasks": "age"}}, 422, "no_image"),
        ("JSON not an object", {"content": b"[1, 2]", "headers": J}, 422, "bad_json"),
        ("broken JSON", {"content": b"{images", "headers": J}, 422, "bad_json"),
        ("bad base64", {"json": {"images": [{"data": "%%%"}]}}, 422, "bad_base64"),
        ("unknown option", {"params": {"colour": "red"}, "files": {"image": ("a.png", "PNG")}}, 422, "unknown_option"),
        ("unknown task", {"params": {"tasks": "height"}, "files": {"image": ("a.png", "PNG")}}, 422, "bad_option"),
        ("disabled task", {"params": {"tasks": "race"}, "files": {"image": ("a.png", "PNG")}}, 403, "task_disabled"),
        ("max_faces 0", {"params": {"max_faces": "0"}, "files": {"image": ("a.png", "PNG")}}, 422, "bad_option"),
        ("max_faces true", {"json": {"images": ["PNG64"], "max_faces": True}}, 422, "bad_option"),
        (
            "detect not a boolean",
            {"params": {"detect": "maybe"}, "files": {"image": ("a.png", "PNG")}},
            422,
            "bad_option",
        ),
        ("no Content-Type", {"content": b"abc"}, 415, "unsupported_media_type"),
        (
            "text/plain body",
            {"content": b"abc", "headers": {"Content-Type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
        ("GET on the analyze route", {"method": "GET"}, 405, "method_not_allowed"),
    ],
)
def test_every_bad_request_has_its_status_and_the_server_goes_on(service, kind, request_kw, status, code):
    kw = dict(request_kw)
    method = kw.pop("method", "POST")

    def fill(v):  # placeholders for images made here
        return {"PNG": _png(), "TINY": _png(4, 4), "HUGE": _png(1200, 1000)}.get(v, v) if isinstance(v, str) else v

    if "files" in kw:
        files = kw["files"]
        items = files.items() if isinstance(files, dict) else files
        kw["files"] = [(k, (name, fill(data))) for k, (name, data) in items]
    if "json" in kw and isinstance(kw["json"].get("images"), list):
        import base64

        kw["json"] = {
            **kw["json"],
            "images": [base64.b64encode(_png()).decode() if x == "PNG64" else x for x in kw["json"]["images"]],
        }
    r = service.request(method, "/v1/analyze", **kw)
    assert r.status_code == status, (kind, r.status_code, r.text[:300])
    assert r.json()["error"]["code"] == code, (kind, r.json())
    ok = service.post("/v1/analyze", params={"detect": "false"}, files={"image": ("a.png", _png())})
    assert ok.status_code == 200 and ok.json()["results"][0]["num_faces"] == 1


@pytest.mark.parametrize("command", ["evaluate", "audit"])
def test_a_report_folder_inside_the_dataset_is_refused(capsys, synth_utk, model, command):
    """A report written among the photos would become a photo of the next run, or replace a dataset's file."""
    before = digest(synth_utk)
    fails(
        capsys,
        command,
        "--model",
        model,
        "--data",
        f"utkface:{synth_utk}",
        "-o",
        synth_utk / "report",
        match="inside the input folder",
    )
    assert digest(synth_utk) == before and not (synth_utk / "report").exists()
