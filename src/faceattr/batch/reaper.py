"""Ends the processes of a local Ray when the job that started it dies without cleaning up (``kill -9``).

Ray's raylet and GCS share the driver's fate, but the per-node agents they start (the dashboard and runtime-env
agents) are left running, re-parented to init. The Ray engine starts this reaper in its own session; it notes the
driver's descendants twice a second and, once the driver is gone, ends every one of them still running.

    python -m faceattr.batch.reaper DRIVER_PID
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path


def _children() -> dict[int, list[int]]:
    """pid -> child pids, from /proc (Linux)."""
    out: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.setdefault(ppid, []).append(int(d.name))
    return out


def descendants(pid: int) -> set[int]:
    tree = _children()
    seen: set[int] = set()
    todo = [pid]
    while todo:
        for c in tree.get(todo.pop(), []):
            if c not in seen:
                seen.add(c)
                todo.append(c)
    return seen


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22): with the pid, its identity."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def reap(driver: int, interval: float = 0.5) -> int:
    """Watch ``driver``; when it is gone, end its last known descendants. Returns how many were ended."""
    known: dict[int, int | None] = {}  # pid -> start time: a pid reused by another process is never touched
    me = os.getpid()
    while _alive(driver):
        for pid in descendants(driver) - {me}:
            known.setdefault(pid, _start_time(pid))
        time.sleep(interval)
    for pid in list(known):
        for child in descendants(pid):
            known.setdefault(child, _start_time(child))
    ended = 0
    for pid, started in known.items():
        if started is not None and _alive(pid) and _start_time(pid) == started:
            try:
                os.kill(pid, signal.SIGKILL)
                ended += 1
            except OSError:
                pass
    return ended


def main() -> int:
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        print("usage: python -m faceattr.batch.reaper DRIVER_PID", file=sys.stderr)
        return 2
    reap(int(sys.argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
