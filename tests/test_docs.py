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


def every_documented_command() -> list[tuple[str, str]]:
    """Every ``faceattr ...`` line in the README and the docs' code blocks, with the file it is in."""
    out = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]:
        fence = ""
        for line in page.read_text(encoding="utf-8").splitlines():
            if line.startswith("```"):
                fence = "" if fence else (line[3:].strip() or "text")
                continue
            if fence not in ("bash", "sh"):
                continue
            for part in re.split(r"&&|\|", line.split(" #")[0]):
                part = part.strip()
                if part.startswith("faceattr "):
                    out.append((page.name, part))
    assert len(out) > 30, "the docs hold fewer commands than expected"
    return [(name, cmd) for name, cmd in out]


def test_every_documented_command_parses_as_written():
    """Each command of the README and the docs names a command and options that exist (the block above is also
    run; the others name files of the reader's own)."""
    import shlex

    from faceattr.cli.main import build_parser

    ap = build_parser()
    bad = []
    for page, cmd in every_documented_command():
        argv = shlex.split(cmd)[1:]
        if any(a.startswith("[") or a.endswith("]") for a in argv):  # [optional] parts are not literal
            bad.append(f"{page}: {cmd} (write the optional parts as a second command)")
            continue
        if argv and argv[-1] == "...":
            argv = argv[:-1]
        try:
            ap.parse_args(argv)
        except SystemExit as e:
            if e.code not in (0, None):
                bad.append(f"{page}: {cmd}")
    assert not bad, "documented commands that do not parse:\n" + "\n".join(bad)
