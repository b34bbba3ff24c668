"""backup-push's passive result and metrics, sent through reporting/ after each push.

A failure is CRITICAL; a backup that read pages whose checksum was wrong is WARNING (it was stored as
found, and the operator must look at the disk). Reporting never changes the outcome of the backup.
"""

from __future__ import annotations

import time

from walship import logs
from walship.reporting import channels
from walship.reporting.plugin import CRITICAL, OK, WARNING, CheckResult, Perf, format_age, format_bytes


def after_push(settings, ok: bool, backup=None, error=None, duration_s: float | None = None) -> None:
    """After each backup-push: passive result and metrics, when configured; never raises."""
    if not channels.wanted(settings):
        return
    try:
        result = backup_result(ok, backup, error, duration_s)
        if settings.metrics_file:
            channels.guarded("metrics", lambda: _backup_metrics(settings.metrics_file, ok, backup, duration_s))
        if channels.passive_wanted(settings):
            channels.send(settings, settings.icinga_service_backup, result)
    except Exception as exc:  # a failure to report is logged, never raised
        logs.warning("report_failed", f"could not report the backup result: {exc}")


def backup_result(ok: bool, backup, error, duration_s: float | None) -> CheckResult:
    duration = duration_s if duration_s is not None else getattr(backup, "duration_s", None)
    perf = [Perf("duration", round(duration or 0, 3), "s")]
    if not ok:
        after = f" after {format_age(duration)}" if duration else ""
        return CheckResult(CRITICAL, f"base backup failed{after}: {channels.one_line(error)}", perf)
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
    from walship.reporting import metrics
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
