"""Which files a command reads: files as given, folders recursively (image extensions only), glob patterns."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


@dataclass
class FoundPaths:
    files: list[Path]
    skipped: list[Path]  # files inside the given folders without an image extension


def find_image_paths(inputs: Sequence[str]) -> FoundPaths:
    """Files (as given, whatever their extension), folders (recursively, image extensions only; the others are
    listed in ``skipped``) and glob patterns, in a stable order, each file once; a name that matches nothing is
    kept (it is reported as missing when read)."""
    import glob

    files: list[Path] = []
    skipped: list[Path] = []
    seen: set[str] = set()

    def add(p: Path) -> None:
        k = str(p.absolute())
        if k not in seen:
            seen.add(k)
            files.append(p)

    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for q in sorted(p.rglob("*")):
                if q.is_file():
                    (add(q) if q.suffix.lower() in IMAGE_EXTENSIONS else skipped.append(q))
        elif p.exists():
            add(p)
        else:
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                add(p)
            for m in matches:
                if Path(m).is_file():
                    add(Path(m))
    return FoundPaths(files, skipped)


def iter_image_paths(inputs: Sequence[str]) -> Iterator[Path]:
    """The files of :func:`find_image_paths`."""
    yield from find_image_paths(inputs).files
