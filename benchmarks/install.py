"""Install size and time of the runtime install (`pip install faceattr`: photo -> attributes on the shipped INT8
ONNX model, no torch) against the training install (`pip install "faceattr[train]"`), each into a fresh virtual
environment, and that the runtime install's `faceattr predict --example` works.

    python benchmarks/install.py      # writes benchmarks/results/install.{json,md}

Times include downloading from the package index as this machine sees it (torch comes from a local wheel
cache here, so the training install's time is a lower bound elsewhere); sizes are the environment's
site-packages folder.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results"


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _one(name: str, spec: str, pre: list[str], tmp: Path) -> dict:
    env = tmp / name
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    py = env / "bin" / "python"
    t0 = time.perf_counter()
    for p in pre:
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *p.split()], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", spec], check=True)
    secs = time.perf_counter() - t0
    site = next(env.glob("lib/python*/site-packages"))
    ok = subprocess.run(
        [str(env / "bin" / "faceattr"), "-q", "predict", "--example"], capture_output=True, text=True, cwd=tmp
    )
    face = json.loads(ok.stdout.splitlines()[0])["num_faces"] if ok.returncode == 0 else None
    has_torch = (site / "torch").is_dir()
    return {
        "install": name,
        "command": f"pip install {spec}",
        "seconds": round(secs, 1),
        "site_packages_mb": round(_du(site) / 1e6, 1),
        "torch_installed": has_torch,
        "predict_example_exit": ok.returncode,
        "faces_found": face,
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rows.append(_one("runtime", str(REPO), [], tmp))
        rows.append(_one("train", f"{REPO}[train]", ["torch==2.14.1 torchvision==0.29.1"], tmp))
    res = {"machine": f"{platform.machine()}, {platform.python_version()}", "rows": rows}
    (OUT / "install.json").write_text(json.dumps(res, indent=1), encoding="utf-8")
    lines = [
        "# Install size and time",
        "",
        f"`python benchmarks/install.py` on {res['machine']}; fresh virtual environments.",
        "",
        "| install | command | seconds | site-packages (MB) | torch | `faceattr predict --example` |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['install']} | `{r['command'].replace(str(REPO), '.')}` | {r['seconds']:.0f} | "
            f"{r['site_packages_mb']:.0f} | {'yes' if r['torch_installed'] else 'no'} | "
            f"exit {r['predict_example_exit']}, {r['faces_found']} face |"
        )
    (OUT / "install.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
