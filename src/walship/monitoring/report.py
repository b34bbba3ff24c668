"""Passive results and metrics after a wal-push or a backup-push.

Archiving: a failure is reported at once, every time; a success at most once
per `icinga_archive_ok_interval`, which keeps the service fresh without one
Icinga result per WAL segment. The time of the last reported success is the
mtime of a small file in the spool directory (next to pg_wal, like the spool's
markers); a failure removes it, so the recovery after a failure is reported at
once. Losing the file costs one extra OK result, nothing else. When no channel
took a success, the next one is tried a minute later, not by every wal-push:
an unreachable Icinga must not add its timeout to each segment.

Reporting never changes the outcome of the archive or the backup: every channel
that fails is logged as a warning and the others still run.
"""

from __future__ import annotations

import os
import time

from walship import logs
from walship.archive import spool
from walship.monitoring.plugin import CRITICAL, OK, WARNING, CheckResult, Perf, format_age, format_bytes

LAST_OK_REPORT = "last_ok_report"
RETRY_UNSENT_OK_S = 60.0


# --- WAL archiving -------------------------------------------------------------------

def archive(settings, ok: bool, results, error=None, segment: str | None = None) -> None:
    name = os.path.basename(segment) if segment else "?"
    wal_dir = os.path.dirname(os.path.abspath(segment)) if segment else None
    state_dir = spool.spool_dir(segment, settings.spool_dir) if segment else None
    backlog = ready_backlog(wal_dir, state_dir, exclude=name if ok else None)
    result = archive_result(ok, name, results, error, backlog)

    if settings.metrics_file:
        _guarded("metrics", lambda: _archive_metrics(settings.metrics_file, ok, name, results, backlog))
    if not (settings.icinga_url or settings.nsca_host):
        return
    marker = os.path.join(state_dir, LAST_OK_REPORT) if state_dir else None
    if ok and marker and _reported_within(marker, settings.icinga_archive_ok_interval):
        return
    sent = _send(settings, settings.icinga_service_archive, result)
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
        return CheckResult(CRITICAL, f"wal-push {name} failed: {_one_line(error)}{waiting}", perf)
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
    from walship.monitoring import metrics
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


# --- base backups --------------------------------------------------------------------

def backup(settings, ok: bool, backup=None, error=None, duration_s: float | None = None) -> None:
    result = backup_result(ok, backup, error, duration_s)
    if settings.metrics_file:
        _guarded("metrics", lambda: _backup_metrics(settings.metrics_file, ok, backup, duration_s))
    if settings.icinga_url or settings.nsca_host:
        _send(settings, settings.icinga_service_backup, result)


def backup_result(ok: bool, backup, error, duration_s: float | None) -> CheckResult:
    duration = duration_s if duration_s is not None else getattr(backup, "duration_s", None)
    perf = [Perf("duration", round(duration or 0, 3), "s")]
    if not ok:
        after = f" after {format_age(duration)}" if duration else ""
        return CheckResult(CRITICAL, f"base backup failed{after}: {_one_line(error)}", perf)
    perf += [Perf("size", backup.size, "B"), Perf("stored", backup.stored_size, "B")]
    text = (f"base backup {backup.name} pushed: {format_bytes(backup.size)} "
            f"(stored {format_bytes(backup.stored_size)}) in {format_age(duration or 0)}")
    bad_pages = getattr(backup, "page_checksum_failures", None)
    if bad_pages is not None:
        perf.append(Perf("bad_pages", bad_pages, "", 1))
    if bad_pages:
        return CheckResult(WARNING, f"{text}, with {bad_pages} page{'s' if bad_pages != 1 else ''} whose checksum "
                                    "was wrong (stored as found; backup-push's warnings name the files: check "
                                    "the disk and run pg_checksums or pg_amcheck)", perf)
    return CheckResult(OK, text, perf)


def _backup_metrics(path: str, ok: bool, backup, duration_s: float | None) -> None:
    from walship.monitoring import metrics
    if ok:
        values = {
            "walship_last_backup_success_timestamp_seconds": round(backup.stop_time, 3),
            "walship_last_backup_size_bytes": backup.size,
            "walship_last_backup_stored_bytes": backup.stored_size,
            "walship_last_backup_duration_seconds": round(duration_s or backup.duration_s, 3),
        }
        bad_pages = getattr(backup, "page_checksum_failures", None)
        if bad_pages is not None:
            values["walship_last_backup_bad_pages"] = bad_pages
        metrics.update(path, values, counters=("walship_backup_failures_total",))
    else:
        metrics.update(path, {"walship_last_backup_failure_timestamp_seconds": round(time.time(), 3)},
                       increment=("walship_backup_failures_total",))


def _one_line(error) -> str:
    if hasattr(error, "one_line"):
        return error.one_line()
    return str(error) or type(error).__name__   # KeyboardInterrupt has no text


# --- channels ------------------------------------------------------------------------

def _send(settings, service: str, result: CheckResult) -> bool:
    """Send to every configured channel; True if at least one accepted the result."""
    perfdata = [str(p) for p in result.perfdata]
    sent = False
    if settings.icinga_url:
        from walship.monitoring import icinga
        sent |= _guarded("icinga", lambda: icinga.submit(settings, service, result.state, result.output, perfdata))
    if settings.nsca_host:
        from walship.monitoring import nsca
        sent |= _guarded("nsca", lambda: nsca.submit(settings, service, result.state, result.output, perfdata))
    return sent


def _guarded(channel: str, action) -> bool:
    try:
        action()
        return True
    except Exception as exc:   # never let reporting change the command's result
        message = exc.one_line() if hasattr(exc, "one_line") else f"{type(exc).__name__}: {exc}"
        logs.warning("report_failed", f"could not report to {channel}: {message}", error=message)
        return False
