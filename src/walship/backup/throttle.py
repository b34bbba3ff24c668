"""backup-push's read-rate limit (backup_max_rate, --max-rate): one token bucket shared by every worker.

A worker takes as many tokens as it read bytes, after it read them; the bucket
refills at the rate, holds at most BURST_S seconds' worth, and may go into debt:
the taker that made the debt sleeps until it is paid back. A sleeping worker
reads nothing, so over any window of T seconds the workers together read at
most rate * (T + BURST_S) bytes plus the one chunk each had in hand, whatever
their number, and the debt model needs no chunk to fit in the bucket.

The clock and the sleep are parameters so that the bound can be tested without
waiting (tests/unit/test_throttle.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator

BURST_S = 0.25       # a short burst: small enough that a limit is a limit, large enough to smooth the 1 MiB reads


class RateLimit:
    """A token bucket of `rate` bytes per second, safe to share between threads."""

    def __init__(self, rate: float, burst_s: float = BURST_S, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] = time.sleep):
        if rate <= 0:
            raise ValueError("a rate limit must be positive")
        self.rate = float(rate)
        self.capacity = self.rate * burst_s
        self._clock, self._sleep = clock, sleep
        self._tokens = self.capacity       # a full bucket: the first burst goes at once
        self._at = clock()
        self._lock = threading.Lock()

    def reserve(self, n: int) -> float:
        """Take n tokens now; the seconds the taker must wait before it goes on (0 when there were enough)."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate) - n
            self._at = now
            return -self._tokens / self.rate if self._tokens < 0 else 0.0

    def take(self, n: int) -> None:
        """Take n tokens, sleeping (outside the lock: the other workers keep going) until they are paid for."""
        wait = self.reserve(n)
        if wait > 0:
            self._sleep(wait)

    def throttled(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """The chunks unchanged, each paid for before the next is asked for (so before the next read)."""
        for chunk in chunks:
            self.take(len(chunk))
            yield chunk


def from_settings(settings) -> RateLimit | None:
    """The limit backup_max_rate asks for, or None when it is unset."""
    if not settings.backup_max_rate:
        return None
    from walship.config import parse_rate
    return RateLimit(parse_rate(settings.backup_max_rate))
