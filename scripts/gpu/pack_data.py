"""Pack a dataset for a GPU machine that cannot see ../shared: every image of the protocol's split file, resized
to the recipe's input size exactly as training resizes it (``faceattr.vision.image.square_resize``) and re-encoded as
WebP (quality 75, about 1.6 kB a face) under the same relative path, plus the split and label files, so the
``utkface:``/``fairface:`` readers work unchanged on the copy. The device tool carries at most 64 MiB a call.

    python scripts/gpu/pack_data.py ../shared/data/utkface .gpu/data/utkface [--size 128 --quality 75]
"""

from __future__ import annotations

import argparse
import io
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
from PIL import Image

from faceattr.vision.image import load_image, square_resize


def _one(args: tuple[str, str, int, int]) -> int:
    src, dst, size, quality = args
    arr = square_resize(load_image(src), size)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "WEBP", quality=quality, method=6)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    Path(dst).write_bytes(buf.getvalue())
    return len(buf.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("out")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--quality", type=int, default=75)
    a = ap.parse_args()
    root, out = Path(a.root), Path(a.out)
    split = pd.read_csv(root / "split.csv")
    sub = "UTKFace/" if (root / "UTKFace").is_dir() else ""
    out.mkdir(parents=True, exist_ok=True)
    for f in ("split.csv", "labels.csv"):
        if (root / f).is_file():
            shutil.copyfile(root / f, out / f)
    jobs = [(str(root / f"{sub}{f}"), str(out / f"{sub}{f}"), a.size, a.quality) for f in split["file"]]
    with ProcessPoolExecutor() as ex:
        total = sum(ex.map(_one, jobs, chunksize=64))
    print(f"{len(jobs)} images, {total / 2**20:.1f} MiB -> {out}")


if __name__ == "__main__":
    main()
