"""What the numbers were measured on, and how much else the machine was doing meanwhile."""

from __future__ import annotations

import os
import platform
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import psutil  # type: ignore[import-untyped]  # no stubs in the lock file

__all__ = ["BusyMonitor", "Busyness", "machine_facts"]

_PACKAGES = ("polars", "prefect", "dlt", "httpx", "pyreqwest", "uvloop", "pyarrow", "psutil")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_facts() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


@dataclass
class Busyness:
    """CPU used by processes outside the benchmark's own tree during one phase."""

    seconds: float
    foreign_cpu_seconds: float
    load_average_end: float

    @property
    def foreign_cores(self) -> float:
        """Average number of cores other work kept busy (0 = the machine was ours)."""
        return self.foreign_cpu_seconds / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, float]:
        return {
            "seconds": round(self.seconds, 2),
            "foreign_cpu_seconds": round(self.foreign_cpu_seconds, 2),
            "foreign_cores": round(self.foreign_cores, 2),
            "load_average_end": round(self.load_average_end, 2),
        }


class BusyMonitor:
    """Samples every process's CPU time once a second; the benchmark's own tree is left out.

    Processes that start and end between two samples are missed, so this is a lower bound.
    """

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._me = os.getpid()
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._ours: set[int] = set()
        self._started = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="busy-monitor", daemon=True)

    def _sample(self, initial: bool) -> None:
        try:
            ours = {self._me} | {c.pid for c in psutil.Process(self._me).children(recursive=True)}
        except psutil.Error:
            ours = {self._me}
        self._ours |= ours
        for process in psutil.process_iter(["cpu_times"]):
            times = process.info.get("cpu_times")
            if times is None:
                continue
            used = float(times.user + times.system)
            if process.pid not in self._first:
                # Seen for the first time: before the phase it counts from now, during it from zero.
                self._first[process.pid] = used if initial else 0.0
            self._last[process.pid] = used

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample(initial=False)

    def __enter__(self) -> BusyMonitor:
        self._started = time.perf_counter()
        self._sample(initial=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample(initial=False)
        self.result = Busyness(
            seconds=time.perf_counter() - self._started,
            foreign_cpu_seconds=sum(
                max(0.0, self._last[pid] - first) for pid, first in self._first.items() if pid not in self._ours
            ),
            load_average_end=os.getloadavg()[0],
        )
