"""Run the simulator as a subprocess for tests and benchmarks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import httpx
import polars as pl

from sim.log import read_log
from sim.server import READY_PREFIX

_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


class SimulatorError(RuntimeError):
    """The simulator did not start (message includes its stderr)."""


class SimulatorProcess:
    """``with SimulatorProcess(rate_limit=50) as sim: ... sim.base_url ...``

    Spawns ``python -m sim --port 0 ...``, waits for the ``listening on`` line,
    and on exit sends SIGTERM (then SIGKILL after ``stop_timeout``) so the log
    is flushed. Without ``log_path`` the log goes to a fresh temporary
    directory (left in place so it can be read after exit).
    """

    def __init__(
        self,
        *,
        latency_ms: float = 0.0,
        rate_limit: float | None = None,
        burst: int | None = None,
        fault_rate: float | None = None,
        faults: Mapping[str, float] | Iterable[str] = (),
        seed: int = 0,
        log_path: Path | str | None = None,
        hold_seconds: float | None = None,
        token_ttl: float | None = None,
        login_per_minute: int | None = None,
        throttle_status: int | None = None,
        events: Iterable[str] = (),
        users: Iterable[str] = (),
        unknown_recipient_pattern: str | None = None,
        extra_args: Iterable[str] = (),
        host: str = "127.0.0.1",
        startup_timeout: float = 20.0,
        stop_timeout: float = 10.0,
        python: str = sys.executable,
    ) -> None:
        if log_path is None:
            log_path = Path(tempfile.mkdtemp(prefix="volley-sim-")) / "sim.ndjson"
        self.log_path = Path(log_path)
        self.host = host
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.python = python
        args = ["--host", host, "--port", "0", "--latency-ms", str(latency_ms)]
        args += ["--seed", str(seed), "--log", str(self.log_path)]
        optional: list[tuple[str, object]] = [
            ("--rate-limit", rate_limit),
            ("--burst", burst),
            ("--fault-rate", fault_rate),
            ("--hold-seconds", hold_seconds),
            ("--token-ttl", token_ttl),
            ("--login-per-minute", login_per_minute),
            ("--throttle-status", throttle_status),
            ("--unknown-recipient-pattern", unknown_recipient_pattern),
        ]
        for flag, value in optional:
            if value is not None:
                args += [flag, str(value)]
        fault_specs = (
            [f"{kind}={rate}" for kind, rate in faults.items()] if isinstance(faults, Mapping) else list(faults)
        )
        for spec in fault_specs:
            args += ["--fault", spec]
        for event in events:
            args += ["--event", event]
        for user in users:
            args += ["--user", user]
        args += list(extra_args)
        self.args = args
        self.base_url = ""
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._stdout: IO[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._stderr_final = ""

    @property
    def argv(self) -> list[str]:
        return [self.python, "-m", "sim", *self.args]

    @property
    def responsys_url(self) -> str:
        """Login host / endPoint of the simulated Responsys account."""
        return f"{self.base_url}/responsys"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def stderr_text(self) -> str:
        """What the simulator wrote to stderr so far (kept after stop)."""
        if self._stderr is None:
            return self._stderr_final
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def start(self) -> Self:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        self._stdout = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop)
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop)
        self._process = subprocess.Popen(  # noqa: S603 (own argv, no shell)
            self.argv,
            stdout=self._stdout,
            stderr=self._stderr,
            env=env,
            cwd=_PACKAGE_ROOT,
        )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            self._stdout.seek(0)
            for raw in self._stdout.read().decode(errors="replace").splitlines():
                if raw.startswith(READY_PREFIX):
                    self.base_url = raw[len(READY_PREFIX) :].strip()
                    self.port = int(self.base_url.rsplit(":", 1)[1])
                    return self
            code = self._process.poll()
            if code is not None:
                raise SimulatorError(f"simulator exited with {code} before listening:\n{self.stderr_text()}")
            if time.monotonic() > deadline:
                self.stop()
                raise SimulatorError(f"simulator not listening after {self.startup_timeout} s:\n{self.stderr_text()}")
            time.sleep(0.02)

    def read_log(self) -> pl.DataFrame:
        """The request log so far: a running simulator first writes what it holds
        (it otherwise writes every 0.2 s, so a read right after a run could miss
        the last answers)."""
        if self._process is not None and self._process.poll() is None:
            httpx.post(f"{self.base_url}/_sim/flush", timeout=10).raise_for_status()
        return read_log(self.log_path)

    def stop(self) -> int | None:
        """SIGTERM, wait up to stop_timeout, then SIGKILL. Returns the exit code."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._stderr_final = self.stderr_text()
        for handle in (self._stdout, self._stderr):
            if handle is not None:
                handle.close()
        self._stdout = self._stderr = None
        self._process = None
        return process.returncode

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
