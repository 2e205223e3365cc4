"""Video tracking: flicker, identity switches, age error and interval coverage per track, and frames per second.

    python benchmarks/video.py [--clips 6] [--frames 300]

Clips with known ground truth are built from real photos: UTKFace *test-split* faces (their ages known, never
trained on) move, grow and shrink, and cross each other's paths over a blurred real photo as background, for
``--frames`` frames at 30 fps. Each clip goes through ``faceattr video`` with its defaults (the shipped model's
default path, the default detector on every frame; ``--detect-every N`` to time another setting), writing the
annotated video, and the tracks file is scored against the truth:

- identity switches: times a person's detections change track;
- flicker: standard deviation of a track's per-detection ages ("per frame") against that of its pooled estimate
  as it evolves ("pooled");
- age error of the pooled estimate against the mean per-detection error; coverage and width of the per-face and
  of the pooled 80 % intervals;
- frames per second at 640x480 and 1280x720 on this machine (all the work: decoding, detection, tracking, the
  network, drawing and encoding the annotated video).

Writes benchmarks/results/video.{json,md}.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import SHARED, md_table, write

RHOS = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)


def test_faces(n: int, rng: np.random.Generator) -> list[tuple[Path, int]]:
    root = SHARED / "data" / "utkface"
    with open(root / "split.csv", newline="") as f:
        test = [r for r in csv.DictReader(f) if r.get("split") == "test"]
    key = "path" if test and "path" in test[0] else next(iter(test[0]))
    picks = rng.choice(len(test), size=n, replace=False)
    out = []
    for i in picks:
        p = root / "UTKFace" / Path(test[i][key]).name
        out.append((p, int(p.name.split("_")[0])))
    return out


def build_clip(path: Path, size: tuple[int, int], frames: int, people: list[tuple[Path, int]], seed: int) -> list:
    """Write an MJPG AVI clip; returns per frame the truth boxes [(person, x1, y1, x2, y2)]."""
    import cv2

    w, h = size
    rng = np.random.default_rng(seed)
    bg_src = sorted((SHARED / "data" / "group-photos").glob("*.jpg"))[seed % 6]
    bg = cv2.GaussianBlur(cv2.resize(cv2.imread(str(bg_src)), (w, h)), (0, 0), 25)
    chips = [cv2.imread(str(p)) for p, _ in people]
    k = len(people)
    base = min(w, h) * 0.42
    start = np.stack([rng.uniform(0.05, 0.6, k) * w, rng.uniform(0.05, 0.45, k) * h], 1)
    vel = rng.uniform(-1, 1, (k, 2)) * min(w, h) / 150
    vel[0], vel[1] = np.abs(vel[0]), -np.abs(vel[1])  # two people cross
    phase = rng.uniform(0, 2 * np.pi, k)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 30.0, (w, h))
    truth = []
    pos = start.copy()
    for f in range(frames):
        img = bg.copy()
        boxes = []
        for j in range(k):
            s = int(base * (0.8 + 0.25 * np.sin(phase[j] + f / 25)))
            pos[j] += vel[j]
            for d, lim in ((0, w - s), (1, h - s)):
                if pos[j, d] < 0 or pos[j, d] > lim:
                    vel[j, d] *= -1
                    pos[j, d] = np.clip(pos[j, d], 0, lim)
            x, y = int(pos[j, 0]), int(pos[j, 1])
            img[y : y + s, x : x + s] = cv2.resize(chips[j], (s, s), interpolation=cv2.INTER_AREA)
            boxes.append((j, x, y, x + s, y + s))
        writer.write(img)
        truth.append(boxes)
    writer.release()
    return truth


def score(tracks_file: Path, truth: list, ages: list[int]) -> dict:
    tracks = [json.loads(line) for line in tracks_file.read_text().splitlines()]
    per_person: dict[int, list[tuple[int, int]]] = {}
    frame_err, frame_cov, frame_width = [], [], []
    by_track: dict[int, list[int]] = {}
    for t in tracks:
        for d in t["detections"]:
            cx, cy = (d["box"][0] + d["box"][2]) / 2, (d["box"][1] + d["box"][3]) / 2
            who = [j for j, x1, y1, x2, y2 in truth[d["frame"]] if x1 <= cx <= x2 and y1 <= cy <= y2]
            if len(who) != 1:  # a detection on the background, or on two overlapping people: not scored
                continue
            j = who[0]
            per_person.setdefault(j, []).append((d["frame"], t["track"]))
            by_track.setdefault(t["track"], []).append(j)
            a = d["age"]
            frame_err.append(abs(a["value"] - ages[j]))
            frame_cov.append(a["interval"][0] <= ages[j] <= a["interval"][1])
            frame_width.append(a["interval"][1] - a["interval"][0])
    switches = 0
    for seq in per_person.values():
        ids = [tid for _, tid in sorted(seq)]
        switches += sum(1 for a, b in zip(ids, ids[1:]) if a != b)
    flick_frame, flick_pool, pool_err, pool_cov, pool_width, track_frame_err = [], [], [], [], [], []
    sweep: dict[float, list[tuple[bool, float]]] = {}
    for t in tracks:
        people = by_track.get(t["track"])
        if not people or len(people) < 5:
            continue
        j = max(set(people), key=people.count)
        vals = np.array([d["age"]["value"] for d in t["detections"]])
        running = np.cumsum(vals) / np.arange(1, len(vals) + 1)
        flick_frame.append(float(vals.std()))
        flick_pool.append(float(running.std()))
        pool_err.append(abs(t["age"]["value"] - ages[j]))
        track_frame_err.append(float(np.mean(np.abs(vals - ages[j]))))
        pool_cov.append(t["age"]["interval"][0] <= ages[j] <= t["age"]["interval"][1])
        pool_width.append(t["age"]["interval"][1] - t["age"]["interval"][0])
        lo = np.mean([d["age"]["value"] - d["age"]["interval"][0] for d in t["detections"]])
        hi = np.mean([d["age"]["interval"][1] - d["age"]["value"] for d in t["detections"]])
        n, v = len(vals), vals.mean()
        for rho in RHOS:  # the pooled interval the tool would print with this rho (faceattr.video.pipeline.Track)
            k = np.sqrt((1 + (n - 1) * rho) / n)
            sweep.setdefault(rho, []).append((v - k * lo <= ages[j] <= v + k * hi, k * (lo + hi)))
    return {
        "tracks": len(tracks),
        "people": len(ages),
        "identity_switches": switches,
        "frame_err": frame_err,
        "frame_cov": frame_cov,
        "frame_width": frame_width,
        "flicker_frame": flick_frame,
        "flicker_pooled": flick_pool,
        "pooled_err": pool_err,
        "track_frame_err": track_frame_err,
        "sweep": [sweep],
        "pooled_cov": pool_cov,
        "pooled_width": pool_width,
    }


def run(clip: Path, out: Path, detect_every: int | None, rho: float) -> dict:
    """``faceattr video`` with its defaults (detector, model, detection on every frame unless ``detect_every``),
    writing the annotated video and the tracks."""
    cmd = [sys.executable, "-m", "faceattr", "-q", "video", str(clip), "--tracks", str(out / "tracks.jsonl")]
    cmd += ["--out", str(out / "annotated.mp4"), "--rho", str(rho)]
    cmd += ["--detect-every", str(detect_every)] if detect_every else []
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(r.stderr[-2000:])
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["wall_s"] = time.perf_counter() - t0
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=6)
    ap.add_argument("--people", type=int, default=4)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--detect-every", type=int, help="faceattr video's --detect-every (default: its own default)")
    ap.add_argument("--rho", type=float, default=1.0)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    agg: dict[str, list] = {}
    speed = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for c in range(a.clips):
            people = test_faces(a.people, rng)
            ages = [age for _, age in people]
            for size in ((640, 480),) + (((1280, 720),) if c == 0 else ()):
                clip = tmp / f"clip{c}-{size[0]}.avi"
                truth = build_clip(clip, size, a.frames, people, seed=c)
                out = tmp / f"out{c}-{size[0]}"
                out.mkdir()
                res = run(clip, out, a.detect_every, a.rho)
                if c == 0:
                    speed.append({"size": f"{size[0]}x{size[1]}", "frames": res["frames"], "fps": res["fps"]})
                if size == (640, 480):
                    s = score(out / "tracks.jsonl", truth, ages)
                    for k, v in s.items():
                        agg.setdefault(k, []).extend(v if isinstance(v, list) else [v])
    ff, fp = np.array(agg["flicker_frame"]), np.array(agg["flicker_pooled"])
    summary = {
        "clips": a.clips,
        "people": int(sum(agg["people"])),
        "tracks": int(sum(agg["tracks"])),
        "identity_switches": int(sum(agg["identity_switches"])),
        "scored_detections": len(agg["frame_err"]),
        "age_mae_per_frame": round(float(np.mean(agg["frame_err"])), 2),
        "age_mae_pooled": round(float(np.mean(agg["pooled_err"])), 2),
        "age_mae_per_frame_by_track": round(float(np.mean(agg["track_frame_err"])), 2),
        "flicker_sd_per_frame": round(float(ff.mean()), 2),
        "flicker_sd_pooled": round(float(fp.mean()), 2),
        "flicker_ratio": round(float(fp.mean() / ff.mean()), 3),
        "interval80_coverage_per_frame": round(float(np.mean(agg["frame_cov"])), 3),
        "interval80_width_per_frame": round(float(np.median(agg["frame_width"])), 1),
        "interval80_coverage_pooled": round(float(np.mean(agg["pooled_cov"])), 3),
        "interval80_width_pooled": round(float(np.median(agg["pooled_width"])), 1),
        "scored_tracks": len(agg["pooled_err"]),
        "rho": a.rho,
        "detect_every": a.detect_every,
    }
    merged: dict[float, list[tuple[bool, float]]] = {}
    for sw in agg["sweep"]:
        for rho, items in sw.items():
            merged.setdefault(rho, []).extend(items)
    sweep_rows = [
        {
            "rho": rho,
            "pooled 80 % coverage": f"{np.mean([c for c, _ in merged[rho]]):.1%}",
            "median width (y)": round(float(np.median([w for _, w in merged[rho]])), 1),
        }
        for rho in RHOS
    ]
    summary["rho_sweep"] = sweep_rows
    cmd = f"python benchmarks/video.py --clips {a.clips} --people {a.people} --frames {a.frames}"
    if a.rho != 1.0:
        cmd += f" --rho {a.rho}"
    if a.detect_every:
        cmd += f" --detect-every {a.detect_every}"
    every = f"detection every {a.detect_every} frames" if a.detect_every else "its defaults (detection on every frame)"
    rows = [
        {"measure": "identity switches", "value": summary["identity_switches"]},
        {"measure": "age MAE, per-frame estimates (all detections)", "value": summary["age_mae_per_frame"]},
        {"measure": "age MAE, per-frame estimates (mean over tracks)", "value": summary["age_mae_per_frame_by_track"]},
        {"measure": "age MAE, pooled per track (mean over tracks)", "value": summary["age_mae_pooled"]},
        {"measure": "age flicker (SD within a track), per frame", "value": summary["flicker_sd_per_frame"]},
        {"measure": "age flicker, pooled estimate", "value": summary["flicker_sd_pooled"]},
        {
            "measure": "80 % interval coverage / median width, per frame",
            "value": f"{summary['interval80_coverage_per_frame']:.1%} / {summary['interval80_width_per_frame']} y",
        },
        {
            "measure": "80 % interval coverage / median width, pooled",
            "value": f"{summary['interval80_coverage_pooled']:.1%} / {summary['interval80_width_pooled']} y",
        },
    ]
    md = (
        f"# Video\n\n`{cmd}`: {a.clips} clips of {a.frames} frames, {a.people} UTKFace test faces each "
        f"({summary['people']} people, {summary['tracks']} tracks, {summary['scored_detections']} scored detections), "
        f"moving, scaling and crossing over a blurred photo; `faceattr video` with {every}, writing the "
        f"annotated video, rho {a.rho}. One run on this machine.\n\n"
        + md_table(rows, ["measure", "value"])
        + "\n\nThe pooled interval for other values of rho (the error correlation between a person's frames; "
        "rho = 1: no narrowing), on the same tracks:\n\n"
        + md_table(sweep_rows, ["rho", "pooled 80 % coverage", "median width (y)"])
        + "\n\nFrames per second (decode, detect, track, estimate, draw and encode; 2 cores):\n\n"
        + md_table(speed, ["size", "frames", "fps"])
        + "\n"
    )
    write("video", {"summary": summary, "speed": speed}, md, cmd)
    print(md)


if __name__ == "__main__":
    main()
