"""faceattr batch: stable order, shards, resume, error rows, workers, refusal of a changed job."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from faceattr.batch.engine import list_inputs, run_batch
from faceattr.cli.main import main as cli
from faceattr.errors import UsageError

pytest.importorskip("pyarrow")


@pytest.fixture
def photos(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(d / f"p{i}.jpg")
    (d / "broken.jpg").write_bytes(b"not an image")
    return d


def _read(out):
    return pd.concat([pd.read_parquet(p) for p in sorted(out.glob("part-*.parquet"))], ignore_index=True)


@pytest.mark.slow
def test_shards_rows_and_resume(photos, tmp_path, synth_checkpoint):
    out = tmp_path / "out"
    listing = tmp_path / "list.txt"
    listing.write_text(str(tmp_path / "missing.jpg") + "\n")
    res = run_batch([str(photos), str(listing)], out, synth_checkpoint, shard_size=3, detect=False, workers=1)
    assert res["shards"] == 4 and len(res["written"]) == 4 and res["errors"] == 2
    df = _read(out)
    assert len(df) == 10 and df["source"].is_monotonic_increasing  # one stable order
    assert df["error"].notna().sum() == 2 and (df["num_faces"] == 1).sum() == 8
    assert {"age", "age_value", "age_low", "age_high", "gender_p_male", "race"} <= set(df.columns)
    # a rerun skips finished shards; a removed shard is redone, and only it
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    (out / "part-00002-of-00004.parquet").unlink()
    res2 = run_batch([str(photos), str(listing)], out, synth_checkpoint, shard_size=3, detect=False, workers=2)
    assert res2["skipped_done"] == 3 and [p.split("/")[-1] for p in res2["written"]] == ["part-00002-of-00004.parquet"]
    for p, t in stamps.items():
        if "00002" not in p.name:
            assert p.stat().st_mtime_ns == t
    pd.testing.assert_frame_equal(_read(out), df)  # 1 or 2 workers: the same rows
    with pytest.raises(UsageError, match="other inputs"):
        run_batch([str(photos)], out, synth_checkpoint, shard_size=4, detect=False)


def test_machine_i_of_m(photos, tmp_path, synth_checkpoint):
    out = tmp_path / "out"
    run_batch([str(photos)], out, synth_checkpoint, shard_size=2, shards=(1, 2), detect=False, workers=1)
    assert sorted(p.name for p in out.glob("part-*")) == ["part-00001-of-00005.parquet", "part-00003-of-00005.parquet"]
    run_batch([str(photos)], out, synth_checkpoint, shard_size=2, shards=(0, 2), detect=False, workers=1)
    assert len(_read(out)) == 9


def test_inputs_from_a_table(photos, tmp_path):
    t = tmp_path / "t.csv"
    pd.DataFrame({"image": ["in/p1.jpg", "in/p0.jpg", "in/p1.jpg"]}).to_csv(t, index=False)
    assert [f.split("/")[-1] for f in list_inputs([str(t)], "image")] == ["p0.jpg", "p1.jpg"]
    with pytest.raises(UsageError, match="no 'path' column"):
        list_inputs([str(t)])


@pytest.mark.slow
def test_cli_with_detection_and_bad_options(tmp_path, capsys, synth_checkpoint):
    from faceattr.cli.predict import example_photo

    out = tmp_path / "o"
    assert (
        cli(
            ["-q", "batch", str(example_photo()), "--out", str(out), "--model", str(synth_checkpoint), "--workers", "1"]
        )
        == 0
    )
    df = _read(out)
    assert len(df) == 1 and df["num_faces"].iloc[0] == 1 and len(df["box"].iloc[0]) == 4
    assert json.loads(df["landmarks"].iloc[0])["left_eye"]
    capsys.readouterr()
    assert cli(["-q", "batch", str(example_photo()), "--out", str(tmp_path / "p"), "--shard", "3/2"]) == 2
    assert "shards must be" in capsys.readouterr().err
    assert cli(["-q", "batch", str(example_photo()), "--out", str(tmp_path / "p"), "--shard", "x"]) == 2


@pytest.mark.slow
def test_ray_engine_gives_the_local_rows(photos, tmp_path, synth_checkpoint):
    """Ray Data on a local Ray started here (2 CPUs, 2 actors: every CPU slot held by an actor, so reading and
    writing must not wait for one): the same rows as the local engine."""
    ray = pytest.importorskip("ray")
    from faceattr.batch.ray_engine import run_batch_ray

    listing = tmp_path / "list.txt"
    listing.write_text(str(tmp_path / "missing.jpg") + "\n")
    (photos / "empty.jpg").write_bytes(b"")
    inputs = [str(photos), str(listing)]
    run_batch(inputs, tmp_path / "local", synth_checkpoint, shard_size=4, detect=False, workers=1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        res = run_batch_ray(inputs, tmp_path / "ray", str(synth_checkpoint), actors=2, batch_photos=3, detect=False)
    finally:
        ray.shutdown()
    assert res["photos"] == 11 and res["missing"] == 1
    local = _read(tmp_path / "local").sort_values(["source", "face"]).reset_index(drop=True)
    got = pd.read_parquet(tmp_path / "ray")  # the whole folder at once: one schema, no pickled objects
    assert all(b is None or hasattr(b, "__len__") and not isinstance(b, bytes) for b in got["box"])
    got = got.sort_values(["source", "face"]).reset_index(drop=True)[list(local.columns)]
    assert len(got) == len(local) == 11
    for c in local.columns:
        a, b = local[c], got[c]
        if a.dtype.kind == "f":
            np.testing.assert_allclose(a.to_numpy(float), b.to_numpy(float), atol=1e-6, equal_nan=True)
        else:
            assert [None if pd.isna(x) else x for x in a] == [None if pd.isna(x) else x for x in b], c


def test_the_output_folder_opens_in_pandas_pyarrow_and_duckdb(photos, tmp_path, synth_checkpoint):
    """The job file is out of the way and every part has one schema, including a part of unreadable photos only."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("x.jpg", "y.jpg"):
        (bad / name).write_bytes(b"not an image")
    out = tmp_path / "out"
    run_batch([str(photos), str(bad)], out, synth_checkpoint, shard_size=3, detect=False, workers=1)
    assert (out / "_batch.json").is_file() and not (out / "batch.json").exists()
    first = sorted(out.glob("part-*.parquet"))[0]  # bad/x.jpg, bad/y.jpg, in/broken.jpg
    assert pd.read_parquet(first)["error"].notna().all()  # a shard of errors only
    schemas = {str(pq.read_schema(p).remove_metadata()) for p in out.glob("part-*.parquet")}
    assert len(schemas) == 1
    df = pd.read_parquet(out)
    assert len(df) == 11 and df["error"].notna().sum() == 3
    assert ds.dataset(out, format="parquet").to_table().num_rows == 11
    duckdb = pytest.importorskip("duckdb")
    n, errors = duckdb.sql(f"SELECT count(*), count(error) FROM '{out}/*.parquet'").fetchall()[0]
    assert (n, errors) == (11, 3)


def test_a_damaged_part_is_redone_with_a_warning(photos, tmp_path, synth_checkpoint, caplog):
    out = tmp_path / "out"
    run_batch([str(photos)], out, synth_checkpoint, shard_size=4, detect=False, workers=1)
    want = _read(out)
    part = out / "part-00001-of-00003.parquet"
    part.write_bytes(part.read_bytes()[:300])  # a truncated copy
    res = run_batch([str(photos)], out, synth_checkpoint, shard_size=4, detect=False, workers=1)
    assert res["skipped_done"] == 2 and [p.split("/")[-1] for p in res["written"]] == [part.name]
    assert "does not read back" in caplog.text
    pd.testing.assert_frame_equal(_read(out), want)


def test_non_utf8_names_and_several_spellings_of_one_file(photos, tmp_path, synth_checkpoint):
    import os

    odd = os.fsdecode(bytes(photos) + b"/caf\xe9.jpg")
    Image.new("RGB", (40, 40), (90, 120, 150)).save(odd, format="JPEG")
    spelled = [str(photos), str(photos / "p0.jpg"), str(photos) + "/./p0.jpg"]
    out = tmp_path / "out"
    res = run_batch(spelled, out, synth_checkpoint, shard_size=20, detect=False, workers=1)
    assert res["photos"] == 10  # p0.jpg once, whatever its spelling
    df = _read(out)
    assert (df["source"].str.endswith("caf\\xe9.jpg")).sum() == 1 and df["source"].is_unique


@pytest.mark.slow
def test_kill_9_of_the_parent_leaves_no_worker_and_a_rerun_completes(photos, tmp_path, synth_checkpoint):
    """The workers end with their parent, and the rerun of a killed job gives the rows of an uninterrupted one."""
    import shutil
    import subprocess
    import sys
    import time

    psutil = pytest.importorskip("psutil")
    many = tmp_path / "many"
    many.mkdir()
    for i in range(600):
        shutil.copyfile(photos / f"p{i % 8}.jpg", many / f"x{i:04d}.jpg")
    args = ["--model", str(synth_checkpoint), "--shard-size", "50"]
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "faceattr", "-q", "batch", str(many), "--out", str(out), "--workers", "2", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    kids: list = []
    while time.time() < deadline:
        kids = [k for k in psutil.Process(proc.pid).children(recursive=True) if k.is_running()]
        if len(kids) >= 2 and list(out.glob("part-*.parquet")):
            break
        time.sleep(0.1)
    done = len(list(out.glob("part-*.parquet")))
    proc.kill()
    proc.wait()
    if done >= 12:
        pytest.skip("the job finished before it could be killed")
    assert kids, "no worker process was seen"
    gone, alive = psutil.wait_procs(kids, timeout=5)
    assert not alive, f"workers left running after kill -9 of their parent: {[k.pid for k in alive]}"
    res = run_batch([str(many)], out, synth_checkpoint, shard_size=50, workers=1)
    assert res["skipped_done"] >= 1 and res["skipped_done"] + len(res["written"]) == 12
    ref = tmp_path / "ref"
    run_batch([str(many)], ref, synth_checkpoint, shard_size=50, workers=1)
    pd.testing.assert_frame_equal(_read(out), _read(ref))


@pytest.mark.slow
def test_kill_9_of_a_ray_job_leaves_no_ray_process_and_no_partial_output(tmp_path, synth_checkpoint):
    """A local Ray's agents outlive a killed driver unless the reaper ends them; the killed job leaves only its
    marked work folder, which the next run removes before it writes a whole --out."""
    import subprocess
    import sys
    import time

    pytest.importorskip("ray")
    psutil = pytest.importorskip("psutil")
    many = tmp_path / "many"
    many.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2500):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(many / f"x{i:04d}.jpg")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "faceattr", "-q", "batch", str(many), "--out", str(out), "--engine", "ray"]
    proc = subprocess.Popen(
        [*cmd, "--actors", "1", "--model", str(synth_checkpoint), "--no-detect"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    ray_procs: list = []
    while time.time() < deadline:
        ray_procs = [p for p in psutil.Process(proc.pid).children(recursive=True) if "ray::" in " ".join(p.cmdline())]
        if any("MapWorker" in " ".join(p.cmdline()) for p in ray_procs):
            break
        time.sleep(0.2)
    assert ray_procs, "Ray did not start"
    ray_procs = [p for p in psutil.Process(proc.pid).children(recursive=True)]
    proc.kill()
    proc.wait()
    gone, alive = psutil.wait_procs(ray_procs, timeout=15)
    alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"left running after kill -9 of the job: {[(p.pid, p.name()) for p in alive]}"
    assert not out.exists()  # no partial --out: the work folder is a sibling, marked as the job's
    from faceattr.batch.ray_engine import run_batch_ray

    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        res = run_batch_ray([str(many)], out, str(synth_checkpoint), actors=1, detect=False)
    finally:
        ray.shutdown()
    assert res["photos"] == 2500 and len(pd.read_parquet(out)) == 2500
    assert not (tmp_path / "out.partial").exists()
