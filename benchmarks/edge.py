"""Edge deployment benchmark for the shipped model: ONNX export, fp32 parity, INT8 accuracy cost, speed.

    python benchmarks/edge.py [--limit N]

- parity: max |ONNX fp32 - torch| over the UTKFace test chips' raw outputs;
- INT8 (static QDQ, percentile ranges from 256 UTKFace training chips) vs fp32: test MAE, gender and race accuracy;
- speed: per-face latency at batch 1 (median of 100 runs) and throughput at batch 32, for torch eager,
  onnxruntime fp32 and INT8, with 1 and 2 threads;
- photo -> attributes: detection + alignment + INT8 inference, per photo, on the group photos (1920 px) and on
  the same photos scaled to 640 px, with dlib HOG and with YuNet.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import SHARED, md_table, median_ms, write


def _throughput(fn, n: int, reps: int = 10) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return n * reps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(SHARED / "data" / "utkface"))
    ap.add_argument("--limit", type=int)
    ap.add_argument("--out", default=None, help="keep the exported models here")
    a = ap.parse_args()
    import dataclasses

    import torch

    from faceattr.data.dataset import make_tensor_dataset
    from faceattr.data.sources import load_split
    from faceattr.data.spec import parse_data_spec
    from faceattr.runtime.policy import SHIPPED_MODEL, SHIPPED_ONNX
    from faceattr.runtime.predictor import Predictor
    from faceattr.tasks.decode import decode_outputs
    from faceattr.tasks.metrics import compute_metrics, headline
    from faceattr.training.export import calibration_chips_from, export_onnx, quantize_int8
    from faceattr.vision.image import load_image

    out = Path(a.out or tempfile.mkdtemp())
    fp32 = export_onnx(SHIPPED_MODEL, out / "faceattr.onnx")
    calib = calibration_chips_from(f"utkface:{a.data}", 128, 256, "train")
    int8 = quantize_int8(fp32, out / "faceattr.int8.onnx", calib)
    cfg = dataclasses.replace(parse_data_spec(f"utkface:{a.data}"), image_size=128)
    test = load_split(cfg, "test", a.limit)
    ds = make_tensor_dataset(test, 128, progress=False)
    chips = np.asarray(ds.images)
    labels = {t: ds.labels[:, j] for j, t in enumerate(ds.task_names)}

    preds = {
        "torch": Predictor.from_pretrained(runtime="torch", threads=2),
        "onnx-fp32": Predictor.from_onnx(fp32, threads=2),
        "onnx-fp32 shipped (float16-stored weights)": Predictor.from_onnx(SHIPPED_ONNX, threads=2),
        "onnx-int8": Predictor.from_onnx(int8, threads=2),
    }
    raw = {}
    for name, p in preds.items():
        outs = [p.backend.run(p.preprocess(chips[s : s + 256])) for s in range(0, len(chips), 256)]
        raw[name] = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
    parity = {k: float(np.abs(raw["onnx-fp32"][k] - raw["torch"][k]).max()) for k in raw["torch"]}
    parity_shipped = {
        k: float(np.abs(raw["onnx-fp32 shipped (float16-stored weights)"][k] - raw["torch"][k]).max())
        for k in raw["torch"]
    }
    acc_rows = []
    tasks = preds["torch"].tasks
    for name in raw:
        dec = decode_outputs(raw[name], tasks, preds["torch"].formulation)
        m = headline(compute_metrics(tasks, dec, labels, ()))
        acc_rows.append(
            {
                "model": name,
                "age MAE": m["age_mae"],
                "age CS@5 %": 100 * m["age_cs5"],
                "gender acc %": 100 * m["gender_accuracy"],
                "race acc %": 100 * m["race_accuracy"],
            }
        )

    speed_rows = []
    x1 = preds["torch"].preprocess(chips[:1])
    x32 = preds["torch"].preprocess(chips[:32])
    for threads in (1, 2):
        torch.set_num_threads(threads)
        backends = {
            "torch eager": Predictor.from_pretrained(runtime="torch", threads=threads).backend,
            "onnxruntime fp32": Predictor.from_onnx(fp32, threads=threads).backend,
            "onnxruntime int8": Predictor.from_onnx(int8, threads=threads).backend,
        }
        for name, be in backends.items():
            speed_rows.append(
                {
                    "runtime": name,
                    "threads": threads,
                    "batch-1 ms/face": median_ms(lambda be=be: be.run(x1)),
                    "batch-32 faces/s": _throughput(lambda be=be: be.run(x32), 32),
                }
            )
    torch.set_num_threads(2)

    import cv2

    photos = sorted((SHARED / "data" / "group-photos").glob("*.jpg"))
    photo_rows = []
    yunet = SHARED / "models" / "face_detection_yunet.onnx"
    for det in ["dlib"] + (["yunet", "yunet-dlib"] if yunet.is_file() else []):
        p = Predictor.from_onnx(int8, threads=2, detector=det, yunet_model=str(yunet) if det != "dlib" else None)
        for side in (None, 640):
            imgs = []
            for ph in photos:
                im = load_image(ph)
                if side:
                    f = side / max(im.shape[:2])
                    im = cv2.resize(im, (round(im.shape[1] * f), round(im.shape[0] * f)), interpolation=cv2.INTER_AREA)
                imgs.append(im)
            ms, faces = [], 0
            for im in imgs:
                ms.append(median_ms(lambda p=p, im=im: p.predict(im), reps=5))
                faces += len(p.predict(im).faces)
            photo_rows.append(
                {
                    "detector": det,
                    "photo size": f"{side} px" if side else "1920 px (as given)",
                    "photos": len(imgs),
                    "faces found": faces,
                    "ms/photo (median)": statistics.median(ms),
                    "ms/photo (max)": max(ms),
                }
            )

    sizes = [
        {"file": "shipped safetensors (fp16)", "MB": SHIPPED_MODEL.stat().st_size / 1e6},
        {"file": "ONNX fp32 (batch norm folded)", "MB": fp32.stat().st_size / 1e6},
        {"file": "ONNX fp32 shipped (float16-stored weights)", "MB": SHIPPED_ONNX.stat().st_size / 1e6},
        {"file": "ONNX INT8", "MB": int8.stat().st_size / 1e6},
    ]
    md = "\n\n".join(
        [
            f"## Parity: ONNX fp32 vs torch (max abs difference of raw outputs, {len(chips)} test chips)\n\n"
            + md_table(
                [
                    {"task": k, "max abs diff": parity[k], "shipped ONNX (float16-stored)": parity_shipped[k]}
                    for k in parity
                ],
                ["task", "max abs diff", "shipped ONNX (float16-stored)"],
            ),
            f"## Accuracy on UTKFace protocol v1 test ({len(chips)} chips)\n\n"
            + md_table(acc_rows, ["model", "age MAE", "age CS@5 %", "gender acc %", "race acc %"]),
            "## Speed per face (128 px chips)\n\n"
            + md_table(speed_rows, ["runtime", "threads", "batch-1 ms/face", "batch-32 faces/s"]),
            "## Photo -> attributes (detection + alignment + INT8, 2 threads)\n\n"
            + md_table(
                photo_rows, ["detector", "photo size", "photos", "faces found", "ms/photo (median)", "ms/photo (max)"]
            ),
            "## Model size\n\n" + md_table(sizes, ["file", "MB"]),
        ]
    )
    write(
        "edge",
        {
            "parity_max_abs": parity,
            "parity_max_abs_shipped_onnx": parity_shipped,
            "accuracy": acc_rows,
            "speed": speed_rows,
            "photo": photo_rows,
            "sizes": sizes,
            "n_test": len(chips),
        },
        md,
        "python benchmarks/edge.py" + (f" --limit {a.limit}" if a.limit else ""),
    )


if __name__ == "__main__":
    main()
