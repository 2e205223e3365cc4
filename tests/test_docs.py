"""The documentation's commands run as written, and the site builds without a broken link."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import DATA, REPO


def docs_commands() -> list[str]:
    text = (REPO / "docs/cli.md").read_text(encoding="utf-8")
    block = text.split("<!-- tested:start -->", 1)[1].split("<!-- tested:end -->", 1)[0]
    body = re.search(r"```bash\n(.*?)```", block, re.S)
    assert body, "docs/cli.md: no bash block between the tested markers"
    return [ln for ln in body.group(1).splitlines() if ln.strip() and not ln.startswith("#")]


@pytest.mark.slow
def test_the_cli_examples_of_the_docs_run_as_written(tmp_path):
    if not (DATA / "group-photos").is_dir() or not (DATA / "utkface").is_dir():
        pytest.skip(f"test data not found: {DATA}")
    env = {**os.environ, "GROUP": str(DATA / "group-photos"), "SHARED": str(DATA), "PATH": os.environ["PATH"]}
    bindir = os.path.dirname(sys.executable)
    env["PATH"] = bindir + os.pathsep + env["PATH"]
    for line in docs_commands():
        r = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
        assert r.returncode == 0, f"{line}\n{r.stderr[-2000:]}"
    assert (tmp_path / "faces.csv").is_file() and list((tmp_path / "annotated").glob("*.jpg"))
    assert (tmp_path / "faces" / "_batch.json").is_file() and list((tmp_path / "cams").rglob("*.png"))


def test_the_site_builds_strictly(tmp_path):
    mkdocs = shutil.which("mkdocs")
    if mkdocs is None:
        pytest.skip("mkdocs is not installed (pip install 'faceattr[dev]')")
    subprocess.run([sys.executable, str(REPO / "scripts/make_docs.py")], check=True, cwd=REPO)
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    r = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    html = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "non-commercial" in html
