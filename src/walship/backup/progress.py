"""Progress of a backup or restore: a bar with rate and ETA on a terminal, log lines elsewhere.

From cron or systemd (stderr not a terminal) `--progress auto` means `line`: a
log line every LINE_EVERY_S seconds or LINE_EVERY_PERCENT percent, whichever
comes first, so the journal or the cron mail shows a long backup moving. The
lines go through walship's log (text or JSON, stderr and/or syslog).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

_REDRAW_S = 0.25
_WIDTH = 30
LINE_EVERY_S = 10.0
LINE_EVERY_PERCENT = 5.0


def make(mode: str, label: str, total: int):
    """A Bar on a terminal (`auto`) or when asked for, Lines when not on a terminal (`auto`) or asked
    for, NoProgress for `none`."""
    if mode == "bar" or (mode == "auto" and sys.stderr.isatty()):
        return Bar(label, total)
    if mode in ("line", "auto"):
        return Lines(label, total)
    return NoProgress()


class NoProgress:
    def advance(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class _Meter:
    """Bytes done of an estimated total, shared by worker threads; the rate and ETA they imply."""

    def __init__(self, label: str, total: int, clock: Callable[[], float] = time.monotonic):
        self.label = label
        self.total = max(total, 1)          # an estimate for backup-push: shown as at most 100%
        self.done = 0
        self.clock = clock
        self.started = clock()
        self._lock = threading.Lock()

    def figures(self, now: float) -> tuple[float, float, float]:
        """(fraction done, bytes per second, seconds left)"""
        elapsed = max(now - self.started, 1e-6)
        rate = self.done / elapsed
        fraction = min(self.done / self.total, 1.0)
        eta = (self.total - self.done) / rate if rate > 0 and self.done < self.total else 0.0
        return fraction, rate, eta


def _clock_time(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


class Bar(_Meter):
    def __init__(self, label: str, total: int, stream=None):
        super().__init__(label, total)
        self.stream = stream or sys.stderr
        self._drawn = 0.0

    def advance(self, n: int) -> None:
        with self._lock:
            self.done += n
            now = self.clock()
            if now - self._drawn >= _REDRAW_S:
                self._drawn = now
                self.stream.write("\r" + self.line(now))
                self.stream.flush()

    def line(self, now: float) -> str:
        fraction, rate, eta = self.figures(now)
        filled = int(fraction * _WIDTH)
        return (f"{self.label} [{'#' * filled}{'.' * (_WIDTH - filled)}] {fraction:4.0%} "
                f"{human_bytes(self.done)} {human_bytes(rate)}/s ETA {_clock_time(eta)} ")

    def close(self) -> None:
        self.stream.write("\r" + self.line(self.clock()) + "\n")
        self.stream.flush()


def _log_progress(message: str, fields: dict) -> None:
    from walship import logs
    logs.info("progress", message, **fields)


class Lines(_Meter):
    """One log line every LINE_EVERY_S seconds or LINE_EVERY_PERCENT percent, and one at the end."""

    def __init__(self, label: str, total: int, clock: Callable[[], float] = time.monotonic,
                 emit: Callable[[str, dict], None] = _log_progress):
        super().__init__(label, total, clock)
        self.emit = emit
        self._last_time = self.started
        self._last_fraction = 0.0

    def advance(self, n: int) -> None:
        with self._lock:
            self.done += n
            now = self.clock()
            fraction = min(self.done / self.total, 1.0)
            if now - self._last_time >= LINE_EVERY_S or \
                    (fraction - self._last_fraction) * 100 >= LINE_EVERY_PERCENT:
                self._last_time, self._last_fraction = now, fraction
                self._line(now)

    def _line(self, now: float, finished: bool = False) -> None:
        fraction, rate, eta = self.figures(now)
        if finished:
            message = (f"{self.label}: {human_bytes(self.done)} done in {_clock_time(now - self.started)} "
                       f"({human_bytes(rate)}/s)")
        else:
            message = (f"{self.label}: {fraction:.0%} of about {human_bytes(self.total)}, "
                       f"{human_bytes(self.done)} at {human_bytes(rate)}/s, ETA {_clock_time(eta)}")
        self.emit(message, {"done_bytes": self.done, "total_bytes": self.total,
                            "percent": round(fraction * 100, 1)})

    def close(self) -> None:
        with self._lock:
            self._line(self.clock(), finished=True)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError
