"""Sending one result to every channel the operator configured, and nothing else.

A channel that fails (Icinga down, send_nsca missing, a metrics file on a full disk) is logged as a
warning and the others still run: reporting never changes the outcome of the work it reports.
"""

from __future__ import annotations

from walship import logs
from walship.reporting.plugin import CheckResult

TYPE_CHECKING = False          # typing's import (and collections.abc's, 1.2 ms) kept off archive_command's path
if TYPE_CHECKING:
    from collections.abc import Callable

    from walship.config import Settings


def wanted(settings: Settings) -> bool:
    """Whether any result goes anywhere: the commands skip all reporting work otherwise."""
    return bool(settings.icinga_url or settings.nsca_host or settings.metrics_file)


def passive_wanted(settings: Settings) -> bool:
    return bool(settings.icinga_url or settings.nsca_host)


def send(settings: Settings, service: str, result: CheckResult) -> bool:
    """Send to every configured passive channel; True if at least one accepted the result."""
    perfdata = [str(p) for p in result.perfdata]
    sent = False
    if settings.icinga_url:
        from walship.reporting import icinga
        sent |= guarded("icinga", lambda: icinga.submit(settings, service, result.state, result.output, perfdata))
    if settings.nsca_host:
        from walship.reporting import nsca
        sent |= guarded("nsca", lambda: nsca.submit(settings, service, result.state, result.output, perfdata))
    return sent


def guarded(channel: str, action: Callable[[], object]) -> bool:
    """Run one channel's action; a failure is a warning naming the channel, never an exception."""
    try:
        action()
        return True
    except Exception as exc:   # never let reporting change the command's result
        message = one_line(exc)
        logs.warning("report_failed", f"could not report to {channel}: {message}", error=message)
        return False


def one_line(error: object) -> str:
    if hasattr(error, "one_line"):
        return error.one_line()
    return str(error) or type(error).__name__   # KeyboardInterrupt has no text
