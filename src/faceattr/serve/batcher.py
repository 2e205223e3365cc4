"""Micro-batching: the faces of concurrent requests go through the network as one batch."""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from faceattr.runtime.predictor import Predictor


@dataclass
class _Job:
    chips: np.ndarray
    tta: bool
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


class MicroBatcher:
    """One thread that runs the network on the faces of every request waiting, as one batch.

    A request's chips are queued; the thread takes the first waiting job, then gathers more for up to ``wait_ms``
    or until ``max_faces`` faces, runs them together (one call per TTA setting) and hands each job its rows.
    Thread-safe: ``submit`` may be called from any thread."""

    def __init__(self, predictor: Predictor, wait_ms: float = 4.0, max_faces: int = 64) -> None:
        self.predictor, self.wait_s, self.max_faces = predictor, wait_ms / 1000.0, max_faces
        self._q: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.batches = 0
        self.faces = 0

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="faceattr-microbatch", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        with self._lock:
            if self._thread is not None:
                self._q.put(None)
                self._thread.join(timeout=10)
                self._thread = None

    def submit(self, chips: np.ndarray, tta: bool) -> concurrent.futures.Future:
        self.start()
        job = _Job(chips, tta)
        self._q.put(job)
        return job.future

    def _loop(self) -> None:
        while True:
            first = self._q.get()
            if first is None:
                return
            jobs, n = [first], len(first.chips)
            deadline = time.monotonic() + self.wait_s
            stop = False
            while n < self.max_faces:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    nxt = self._q.get(timeout=left)
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                jobs.append(nxt)
                n += len(nxt.chips)
            for tta in (False, True):
                group = [j for j in jobs if j.tta == tta and j.future.set_running_or_notify_cancel()]
                if group:
                    self._run(group, tta)
            if stop:
                return

    def _run(self, jobs: list[_Job], tta: bool) -> None:
        try:
            attrs = self.predictor.predict_chips(np.concatenate([j.chips for j in jobs]), tta)
        except Exception as e:  # handed to every waiting request
            for j in jobs:
                j.future.set_exception(e)
            return
        self.batches += 1
        self.faces += len(attrs)
        i = 0
        for j in jobs:
            j.future.set_result(attrs[i : i + len(j.chips)])
            i += len(j.chips)
