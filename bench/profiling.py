"""Optional: py-spy attached to the Volley process, and a summary of where it spent time."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HotSpot", "attach_py_spy", "find_py_spy", "hot_spots"]


def find_py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def attach_py_spy(pid: int, output: Path, rate: int = 100) -> subprocess.Popen[bytes] | None:
    """Record `pid` until it exits, as collapsed stacks (`--format raw`), without pausing it."""
    exe = find_py_spy()
    if exe is None:
        return None
    output.parent.mkdir(parents=True, exist_ok=True)
    argv = [exe, "record", "--pid", str(pid), "--rate", str(rate), "--nonblocking", "--format", "raw"]
    argv += ["--output", str(output)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@dataclass
class HotSpot:
    function: str
    self_share: float
    total_share: float


def _function(frame: str) -> str:
    """'name (path/to/module.py:123)' -> 'name (path/to/module.py)'; paths shortened to the package."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})" if path else name


PROJECT_PACKAGES = ("volley/", "connectors/", "flows/", "schemas/")


def hot_spots(collapsed: Path, top: int = 15) -> tuple[int, list[HotSpot], list[HotSpot]]:
    """Samples, the functions with the most self time, and the project functions with the most inclusive time."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    samples = 0
    for line in collapsed.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(f) for f in stack.split(";") if f]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for function in set(frames):
            if " (" in function and function.split(" (", 1)[1].startswith(PROJECT_PACKAGES):
                inclusive[function] += count
    if samples == 0:
        return 0, [], []

    def rank(counter: Counter[str]) -> list[HotSpot]:
        return [HotSpot(f, own[f] / samples, inclusive[f] / samples) for f, _ in counter.most_common(top)]

    return samples, rank(own), rank(inclusive)
