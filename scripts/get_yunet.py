"""Where ``src/faceattr/weights/yunet-s.onnx`` (the default detector's network) comes from, as a repeatable step.

    python scripts/get_yunet.py GIT_DIR   # a clone (or bare mirror) of github.com/ShiqiYu/libfacedetection.train

Reads ``onnx/yunet_s_dynamic.onnx`` at the pinned commit from that repository (Apache-2.0; its LICENSE is
``weights/LICENSE-yunet.txt``), checks its SHA-256 against the one faceattr records and writes it into the package.
Nothing is downloaded: the repository is given.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

COMMIT = "0047ac24afb1a50a0c6105001c89d1b5b805dbf1"
PATH = "onnx/yunet_s_dynamic.onnx"


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from faceattr.vision.detectors.yunet_ort import YUNET_FILE, YUNET_SHA256

    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    data = subprocess.run(
        ["git", f"--git-dir={sys.argv[1]}", "show", f"{COMMIT}:{PATH}"], capture_output=True, check=True
    ).stdout
    digest = hashlib.sha256(data).hexdigest()
    if digest != YUNET_SHA256:
        print(f"{PATH} at {COMMIT} has SHA-256 {digest}, not the recorded {YUNET_SHA256}", file=sys.stderr)
        return 1
    YUNET_FILE.write_bytes(data)
    print(f"{YUNET_FILE}: {len(data):,} bytes, SHA-256 {digest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
