"""Whole-or-nothing writes: a figure or text that fails half-way leaves the file that was there untouched."""

from __future__ import annotations

import matplotlib
import pytest

from faceattr.safeio import atomic_write_text, save_figure

matplotlib.use("Agg")


def test_atomic_write_text_replaces_whole(tmp_path):
    p = tmp_path / "report.md"
    atomic_write_text(p, "first")
    atomic_write_text(p, "second ✓")
    assert p.read_text(encoding="utf-8") == "second ✓"
    assert [q.name for q in tmp_path.iterdir()] == ["report.md"]


def test_save_figure_failure_keeps_the_old_file(tmp_path):
    import matplotlib.pyplot as plt

    p = tmp_path / "plot.png"
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    save_figure(fig, p)
    good = p.read_bytes()
    assert good[:8] == b"\x89PNG\r\n\x1a\n"

    class Broken:
        def savefig(self, buf, **kw):
            buf.write(b"half a picture")
            raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError):
        save_figure(Broken(), p)
    assert p.read_bytes() == good and [q.name for q in tmp_path.iterdir()] == ["plot.png"]
    save_figure(fig, tmp_path / "plot.svg")  # the format follows the suffix
    assert b"<svg" in (tmp_path / "plot.svg").read_bytes()[:500]
    plt.close(fig)
