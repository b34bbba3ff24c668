"""wal-receive's passive result (Icinga API, send_nsca), sent through reporting/ from the receive loop.

The result says what the loop knows best: connected or not (and why), whether the repository takes what
it stores, how far the repository is behind the server (bytes), when it last stored, and whether the spool
is full. A change of state is sent at once; an unchanged OK at most once per `icinga_receive_ok_interval`,
an unchanged problem at most once a minute (fresh, without one result per second).

Sending happens on a thread of its own, the newest result replacing one not yet sent: an Icinga API that
is slow or unreachable must never delay the loop, whose feedback synchronous commits wait for. Reporting
never changes what wal-receive does: a channel that fails is logged as a warning (reporting.channels).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from walship.reporting import channels
from walship.reporting.plugin import CRITICAL, OK, WARNING, CheckResult, Perf, format_age, format_bytes, worst

# the same defaults as `walship check receive`
LAG_WARNING_BYTES = 16 << 20
LAG_CRITICAL_BYTES = 256 << 20
AGE_WARNING_S = 60.0
AGE_CRITICAL_S = 300.0
REPEAT_PROBLEM_S = 60.0


@dataclass(frozen=True)
class ReceiveState:
    connected: bool
    synchronous: bool
    lag_bytes: int
    last_store_age_s: float | None      # None: nothing stored since wal-receive started
    spool_bytes: int
    spool_full: bool
    error: str | None                   # the last connection or store failure, None once it went away


def receive_result(s: ReceiveState) -> CheckResult:
    mode = "synchronous" if s.synchronous else "asynchronous"
    perf = [Perf("lag_bytes", s.lag_bytes, "B", LAG_WARNING_BYTES, LAG_CRITICAL_BYTES),
            Perf("spool_bytes", s.spool_bytes, "B")]
    if s.last_store_age_s is not None:
        perf.append(Perf("last_store_age", round(s.last_store_age_s, 1), "s", AGE_WARNING_S, AGE_CRITICAL_S))
    if not s.connected:
        why = f": {s.error}" if s.error else ""
        return CheckResult(CRITICAL, f"wal-receive is not connected to the server{why}; it retries (WAL written "
                                     "now reaches the repository only through archive_command)", perf)
    states = [CRITICAL if s.lag_bytes >= LAG_CRITICAL_BYTES else WARNING if s.lag_bytes >= LAG_WARNING_BYTES else OK]
    text = [f"wal-receive streaming ({mode}), repository {format_bytes(s.lag_bytes)} behind"]
    if s.last_store_age_s is not None:
        text.append(f"last stored {format_age(s.last_store_age_s)} ago")
        if s.lag_bytes > 0:       # an idle server sends nothing to store: an old store matters only with lag
            states.append(CRITICAL if s.last_store_age_s >= AGE_CRITICAL_S
                          else WARNING if s.last_store_age_s >= AGE_WARNING_S else OK)
    if s.error:
        states.append(CRITICAL)
        text.append(f"the repository takes nothing: {s.error}; {format_bytes(s.spool_bytes)} wait in the spool"
                    + (" and commits wait (synchronous)" if s.synchronous else ""))
    if s.spool_full:
        states.append(CRITICAL)
        text.append("the spool is full: receiving stopped (the slot keeps the WAL on the server)")
    return CheckResult(worst(*states), ", ".join(text), perf)


class Reporter:
    """Decides when a result is due and hands it to the sending thread."""

    def __init__(self, settings) -> None:
        self.settings = settings
        self.enabled = channels.passive_wanted(settings)
        self.last_state: int | None = None
        self.last_sent = 0.0
        self._pending: CheckResult | None = None
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def due(self, result: CheckResult, now: float) -> bool:
        if result.state != self.last_state:
            return True
        interval = self.settings.icinga_receive_ok_interval if result.state == OK else REPEAT_PROBLEM_S
        return now - self.last_sent >= interval

    def offer(self, state: ReceiveState, now: float | None = None) -> CheckResult | None:
        """Queue the result for `state` when one is due; the result queued, or None."""
        if not self.enabled:
            return None
        now = time.monotonic() if now is None else now
        result = receive_result(state)
        if not self.due(result, now):
            return None
        self.last_state, self.last_sent = result.state, now
        with self._wake:
            self._pending = result
            self._wake.notify()
        if self._thread is None:
            self._thread = threading.Thread(target=self._send_loop, name="walship-report", daemon=True)
            self._thread.start()
        return result

    def _send_loop(self) -> None:
        while True:
            with self._wake:
                while self._pending is None:
                    self._wake.wait()
                result, self._pending = self._pending, None
            channels.send(self.settings, self.settings.icinga_service_receive, result)
