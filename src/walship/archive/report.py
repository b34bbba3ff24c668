"""wal-push's passive result and metrics, sent through reporting/ after each call.

A failure is reported at once, every time; a success at most once
per `icinga_archive_ok_interval`, which keeps the service fresh without one
Icinga result per WAL segment. The time of the last reported success is the
mtime of a small file in the spool directory (next to pg_wal, like the spool's
markers); a failure removes it, so the recovery after a failure is reported at
once. Losing the file costs one extra OK result, nothing else. When no channel
took a success, the next one is tried a minute later, not by every wal-push:
an unreachable Icinga must not add its timeout to each segment.

Reporting never changes the outcome of the archive: every channel that fails is
logged as a warning and the others still run.
"""

from __future__ import annotations

import os
import time

from walship import logs
from walship.archive import spool
from walship.reporting import channels
from walship.reporting.plugin import CRITICAL, OK, CheckResult, Perf, format_bytes

LAST_OK_REPORT = "last_ok_report"
RETRY_UNSENT_OK_S = 60.0


def after_push(settings, ok: bool, results=None, error=None, segment: str | None = None) -> None:
    """After each wal-push: passive result and metrics, when configured; never raises."""
    if not channels.wanted(settings):
        return
    try:
        archive(settings, ok=ok, results=results or [], error=error, segment=segment)
    except Exception as exc:  # a failure to report is logged, never raised
        logs.warning("report_failed", f"could not report the archive result: {exc}")


def archive(settings, ok: bool, results, error=None, segment: str | None = None) -> None:
    name = os.path.basename(segment) if segment else "?"
    wal_dir = os.path.dirname(os.path.abspath(segment)) if segment else None
    state_dir = spool.spool_dir(segment, settings.spool_dir) if segment else None
    backlog = ready_backlog(wal_dir, state_dir, exclude=name if ok else None)
    result = archive_result(ok, name, results, error, backlog)

    if settings.metrics_file:
        channels.guarded("metrics", lambda: _archive_metrics(settings.metrics_file, ok, name, results, backlog))
    if not channels.passive_wanted(settings):
        return
    marker = os.path.join(state_dir, LAST_OK_REPORT) if state_dir else None
    if ok and marker and _reported_within(marker, settings.icinga_archive_ok_interval):
        return
    sent = channels.send(settings, settings.icinga_service_archive, result)
    if marker:
        if not ok:
            _forget_ok(marker)
        elif sent:
            _remember_ok(marker)
        else:
            # Icinga unreachable: do not make every following wal-push wait for its timeout
            # (that would slow archiving down); try again in a minute.
            _remember_ok(marker, backdate_s=max(0.0, settings.icinga_archive_ok_interval - RETRY_UNSENT_OK_S))


def archive_result(ok: bool, name: str, results, error, backlog: int | None) -> CheckResult:
    total = sum(r.bytes for r in results)
    # Uploads of one call run in parallel: the slowest one is the call's upload time.
    duration = max((r.duration_s for r in results), default=0.0)
    perf = [Perf("duration", round(duration, 3), "s"), Perf("bytes", total, "B"), Perf("segments", len(results))]
    if backlog is not None:
        perf.append(Perf("backlog", backlog))
    waiting = f"; {backlog} WAL files waiting (.ready)" if backlog else ""
    if not ok:
        return CheckResult(CRITICAL, f"wal-push {name} failed: {channels.one_line(error)}{waiting}", perf)
    if not results:
        return CheckResult(OK, f"{name} archived (by an earlier call){waiting}", perf)
    more = f" and {len(results) - 1} more" if len(results) > 1 else ""
    return CheckResult(OK, f"archived {name}{more}: {format_bytes(total)} in {duration:.1f}s{waiting}", perf)


def ready_backlog(wal_dir: str | None, state_dir: str | None, exclude: str | None = None) -> int | None:
    """WAL files PostgreSQL still wants archived: .ready in archive_status, minus those
    an earlier call already stored (spool markers) and minus the one just archived."""
    if not wal_dir:
        return None
    try:
        entries = os.listdir(os.path.join(wal_dir, "archive_status"))
    except OSError:
        return None
    waiting = [e[:-6] for e in entries if e.endswith(".ready")]
    return sum(1 for n in waiting if n != exclude and not (state_dir and spool.is_recorded(n, state_dir)))


def _archive_metrics(path: str, ok: bool, name: str, results, backlog: int | None) -> None:
    from walship.reporting import metrics
    now = time.time()
    values: dict[str, float] = {}
    increment: tuple[str, ...] = ()
    replace: tuple[str, ...] = ()
    if backlog is not None:
        values["walship_archive_backlog_segments"] = backlog
    if ok and results:
        newest = max(r.name for r in results)
        values.update({
            "walship_last_archived_timestamp_seconds": round(now, 3),
            f'walship_last_archived_info{{segment="{metrics.label(newest)}"}}': 1,
            "walship_last_archived_bytes": sum(r.bytes for r in results),
            "walship_last_archived_duration_seconds": round(max(r.duration_s for r in results), 3),
        })
        replace = ("walship_last_archived_info",)
    elif not ok:
        values["walship_last_archive_failure_timestamp_seconds"] = round(now, 3)
        increment = ("walship_archive_failures_total",)
    metrics.update(path, values, increment=increment, replace=replace, counters=("walship_archive_failures_total",))


def _reported_within(marker: str, interval_s: float) -> bool:
    try:
        return time.time() - os.stat(marker).st_mtime < interval_s
    except OSError:
        return False


def _remember_ok(marker: str, backdate_s: float = 0.0) -> None:
    """Start the interval now (backdated: it ends sooner)."""
    when = time.time() - backdate_s
    try:
        os.makedirs(os.path.dirname(marker), mode=0o700, exist_ok=True)
        with open(marker, "w") as fh:
            fh.write(f"{when:.3f}\n")
        os.utime(marker, (when, when))
    except OSError as exc:
        logs.warning("report_state", f"cannot write {marker}: {exc.strerror}; the next success is reported again")


def _forget_ok(marker: str) -> None:
    try:
        os.unlink(marker)
    except FileNotFoundError:
        pass
    except OSError as exc:
        logs.warning("report_state", f"cannot remove {marker}: {exc.strerror}")
