"""Peak resident memory of a process, sampled from another thread with psutil."""

from __future__ import annotations

import contextlib
import threading
import time

import psutil  # type: ignore[import-untyped]  # no stubs in the lock file

__all__ = ["RssSampler"]

MIB = 1024 * 1024


class RssSampler:
    """Every `interval` seconds: the RSS of the process itself, and of all its descendants.

    The process alone is what Volley costs; its descendants are the embedded Prefect
    server (reported apart, not counted against Volley).
    """

    def __init__(self, pid: int, interval: float = 0.05, timeline_every: float = 1.0) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak_rss = 0
        self.peak_children_rss = 0
        self.samples = 0
        self.timeline_every = timeline_every
        self.timeline: list[tuple[float, float]] = []
        """(seconds since start, RSS MiB of the process) about once every `timeline_every` seconds."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        next_point = started
        while not self._stop.is_set():
            try:
                rss = self.process.memory_info().rss
                children = 0
                for child in self.process.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        children += child.memory_info().rss
            except psutil.Error:
                return
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_children_rss = max(self.peak_children_rss, children)
            self.samples += 1
            now = time.monotonic()
            if now >= next_point:
                self.timeline.append((round(now - started, 2), round(rss / MIB, 1)))
                next_point = now + self.timeline_every
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mib(self) -> float:
        return self.peak_rss / MIB

    @property
    def peak_children_mib(self) -> float:
        return self.peak_children_rss / MIB
