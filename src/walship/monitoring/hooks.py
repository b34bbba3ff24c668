"""Called by the commands after their work; reporting never changes their outcome."""

from __future__ import annotations


def archive_result(settings, ok: bool, results=None, error=None, segment=None) -> None:
    """After each wal-push: passive result and metrics, when configured."""
    if not (settings.icinga_url or settings.nsca_host or settings.metrics_file):
        return
    try:
        from walship.monitoring import report
        report.archive(settings, ok=ok, results=results or [], error=error, segment=segment)
    except Exception as exc:  # a failure to report is logged, never raised
        from walship import logs
        logs.warning("report_failed", f"could not report the archive result: {exc}")


def backup_result(settings, ok: bool, backup=None, error=None, duration_s=None) -> None:
    """After each backup-push."""
    if not (settings.icinga_url or settings.nsca_host or settings.metrics_file):
        return
    try:
        from walship.monitoring import report
        report.backup(settings, ok=ok, backup=backup, error=error, duration_s=duration_s)
    except Exception as exc:
        from walship import logs
        logs.warning("report_failed", f"could not report the backup result: {exc}")
