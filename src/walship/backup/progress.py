"""Progress of a backup or restore: a bar with rate and ETA on a terminal, else nothing until the end.

From cron or systemd (stderr not a terminal) the command logs one summary
line when it finishes instead; the caller does that.
"""

from __future__ import annotations

import sys
import threading
import time

_REDRAW_S = 0.25
_WIDTH = 30


def make(mode: str, label: str, total: int):
    """A Bar when asked for (or auto on a terminal), else a NoProgress."""
    if mode == "bar" or (mode == "auto" and sys.stderr.isatty()):
        return Bar(label, total)
    return NoProgress()


class NoProgress:
    def advance(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class Bar:
    def __init__(self, label: str, total: int, stream=None):
        self.label = label
        self.total = max(total, 1)          # an estimate for backup-push: the bar stops at 100%
        self.done = 0
        self.started = time.monotonic()
        self.stream = stream or sys.stderr
        self._drawn = 0.0
        self._lock = threading.Lock()

    def advance(self, n: int) -> None:
        with self._lock:
            self.done += n
            now = time.monotonic()
            if now - self._drawn >= _REDRAW_S:
                self._drawn = now
                self.stream.write("\r" + self.line(now))
                self.stream.flush()

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-6)
        rate = self.done / elapsed
        fraction = min(self.done / self.total, 1.0)
        eta = (self.total - self.done) / rate if rate > 0 and self.done < self.total else 0.0
        filled = int(fraction * _WIDTH)
        return (f"{self.label} [{'#' * filled}{'.' * (_WIDTH - filled)}] {fraction:4.0%} "
                f"{human_bytes(self.done)} {human_bytes(rate)}/s ETA {int(eta) // 60}:{int(eta) % 60:02d} ")

    def close(self) -> None:
        self.stream.write("\r" + self.line(time.monotonic()) + "\n")
        self.stream.flush()


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError
