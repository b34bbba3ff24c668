"""backup-push's read-rate limit and lower priority, without waiting: the limiter runs on a simulated clock."""

from __future__ import annotations

import bisect
import heapq
import os
import subprocess
import sys

import pytest

from walship.backup.throttle import RateLimit, from_settings
from walship.config import MIN_RATE, Settings, load_settings, parse_rate
from walship.errors import ConfigError

MiB = 1 << 20


@pytest.mark.parametrize(("text", "rate"), [
    ("1000000", 1_000_000), ("50M", 50_000_000), ("50m", 50_000_000), ("200MB/s", 200_000_000),
    ("200 MB/s", 200_000_000), ("1.5G", 1_500_000_000), ("64MiB/s", 64 * MiB), ("512ki", 512 * 1024),
    ("100k", 100_000),
])
def test_rates_are_bytes_per_second_with_decimal_and_binary_units(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "fast", "50X", "M", "1.2.3M", "-5M", "50M/min", "."])
def test_what_is_not_a_rate_is_refused(text):
    with pytest.raises(ValueError, match="is not a rate"):
        parse_rate(text)


def test_a_rate_without_its_unit_is_refused_as_a_probable_mistake():
    with pytest.raises(ValueError, match="was a unit left out"):
        parse_rate("50")
    assert parse_rate(str(MIN_RATE)) == MIN_RATE


def test_a_bad_rate_in_the_environment_is_refused_when_settings_load():
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"WALSHIP_BACKUP_MAX_RATE": "lots"})
    assert "backup_max_rate" in str(caught.value) and "WALSHIP_BACKUP_MAX_RATE" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_no_limit_unless_asked_and_low_priority_by_default():
    assert from_settings(Settings()) is None
    assert from_settings(Settings(backup_max_rate="20M")).rate == 20_000_000
    assert Settings().backup_low_priority is True


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds
        self.slept += seconds


def test_one_reader_is_held_to_the_rate_after_its_first_burst():
    clock = FakeClock()
    limit = RateLimit(10 * MiB, burst_s=0.25, clock=clock, sleep=clock.sleep)
    start, read = clock.now, 0
    for _ in range(500):                    # 500 MiB at 10 MiB/s: 50 s of simulated time
        limit.take(MiB)
        read += MiB
    elapsed = clock.now - start
    assert read <= limit.capacity + limit.rate * elapsed + MiB
    assert elapsed == pytest.approx((read - limit.capacity) / limit.rate, rel=0.01)


def test_no_wait_while_reads_stay_under_the_rate():
    clock = FakeClock()
    limit = RateLimit(10 * MiB, clock=clock, sleep=clock.sleep)
    for _ in range(100):
        limit.take(MiB)
        clock.now += 0.2                    # 5 MiB/s of reading, slower than the limit
    assert clock.slept == 0


def _simulate(limit: RateLimit, clock: FakeClock, workers: int, chunk: int, work_s: float,
              until: float) -> list[tuple[float, int]]:
    """Workers sharing one limit, as threads would: each reads a chunk (work_s), takes its tokens, and sleeps
    what reserve() says before its next read. Returns (time the read began, bytes) of every read."""
    ready = [(clock.now, w) for w in range(workers)]
    reads: list[tuple[float, int]] = []
    while ready:
        at, worker = heapq.heappop(ready)
        if at >= until:
            continue
        clock.now = at
        reads.append((at, chunk))
        clock.now = at + work_s                      # the read itself
        wait = limit.reserve(chunk)
        heapq.heappush(ready, (clock.now + wait, worker))
    return reads


@pytest.mark.parametrize("workers", [1, 2, 8])
def test_workers_together_read_at_most_the_rate_over_any_window(workers):
    clock = FakeClock()
    rate = 20 * MiB
    limit = RateLimit(rate, burst_s=0.25, clock=clock, sleep=clock.sleep)
    start = clock.now
    reads = _simulate(limit, clock, workers, MiB, work_s=0.001, until=start + 60)
    times = [t for t, _ in reads]             # in order: the simulation pops reads by time
    assert times == sorted(times)
    for window in (1.0, 5.0, 30.0):
        for i, begin in enumerate(times):
            inside = (bisect.bisect_left(times, begin + window) - i) * MiB
            assert inside <= rate * (window + 0.25) + workers * MiB, (window, begin)
    # and it is a limit, not a stop: over the minute the workers read about the rate
    total = sum(n for _, n in reads)
    assert rate * 60 * 0.97 <= total <= rate * 60.25 + workers * MiB


def test_a_faster_limit_than_the_readers_costs_them_nothing():
    clock = FakeClock()
    limit = RateLimit(1000 * MiB, clock=clock, sleep=clock.sleep)
    reads = _simulate(limit, clock, 2, MiB, work_s=0.01, until=clock.now + 10)   # 200 MiB/s of reading
    assert sum(n for _, n in reads) == pytest.approx(200 * MiB * 10, rel=0.01)


def test_the_limit_passes_chunks_through_unchanged():
    clock = FakeClock()
    limit = RateLimit(MiB, clock=clock, sleep=clock.sleep)
    chunks = [b"a" * 1000, b"", b"b" * (3 * MiB)]
    assert list(limit.throttled(iter(chunks))) == chunks
    assert clock.slept == pytest.approx((3 * MiB + 1000 - limit.capacity) / MiB)


_PRIORITY_PROBE = """
import os, threading
from walship.backup import priority
priority.lower({enabled})
seen = []
t = threading.Thread(target=lambda: seen.append((os.getpriority(os.PRIO_PROCESS, 0), priority.ioprio_get(0))))
t.start(); t.join()
print(os.getpriority(os.PRIO_PROCESS, 0), priority.ioprio_get(0), *seen[0])
"""


def _probe(enabled: bool) -> list[int]:
    # a process of its own: a lowered priority cannot be raised again without privileges, nor should the
    # test run's be lowered
    r = subprocess.run([sys.executable, "-c", _PRIORITY_PROBE.format(enabled=enabled)], capture_output=True,
                       text=True, check=True, env={**os.environ, "WALSHIP_LOG_DESTINATION": "stderr"})
    return [int(x) for x in r.stdout.split()]


def test_lowered_priority_is_nice_10_and_best_effort_7_in_threads_started_after():
    base = os.getpriority(os.PRIO_PROCESS, 0)
    nice, ioprio, thread_nice, thread_ioprio = _probe(True)
    assert nice == thread_nice == max(base, 10)
    assert ioprio == thread_ioprio == (2 << 13 | 7)


def test_priority_is_left_alone_when_turned_off():
    base = os.getpriority(os.PRIO_PROCESS, 0)
    nice, _, thread_nice, _ = _probe(False)
    assert nice == thread_nice == base


def test_where_priorities_may_not_be_changed_one_warning_and_the_backup_goes_on(monkeypatch):
    from walship.backup import priority

    def refused(*args):
        raise PermissionError(1, "Operation not permitted")

    warnings = []
    monkeypatch.setattr(priority.os, "getpriority", lambda *a: 0)
    monkeypatch.setattr(priority.os, "setpriority", refused)
    monkeypatch.setattr(priority, "_syscall", refused)              # a seccomp filter refusing ioprio_*
    monkeypatch.setattr(priority, "_lower_autogroup", lambda: refused())
    monkeypatch.setattr(priority, "_threads", lambda: [101, 102, 103])
    monkeypatch.setattr(priority.logs, "warning", lambda event, message, **kw: warnings.append(message))
    priority.lower(True)                                             # no exception
    [message] = warnings
    assert "normal priority" in message and "backup_low_priority = false" in message
    assert message.count("nice 10") == 2 and "I/O priority" in message   # the thread nice and the autogroup's
