"""`walship check backup|archive` (Nagios/Icinga plugins) and `walship status`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from walship.errors import WalshipError
from walship.reporting.plugin import UNKNOWN, CheckResult, parse_age

if TYPE_CHECKING:
    from walship.config import Settings
    from walship.monitoring.walarchive import WalArchive
    from walship.storage import Store


def run(command: str, args, settings, store_factory) -> int:
    if command == "status":
        return _status(args, settings, _bounded(settings, store_factory))
    if command == "check":
        return _plugin(lambda: _check(args, settings, _bounded(settings, store_factory)))
    raise AssertionError(command)


def _bounded(settings, store_factory):
    """A plugin must answer within Icinga's check timeout (60 s by default): no long S3 retries."""
    quick = settings.replace(s3_connect_timeout=min(settings.s3_connect_timeout, 5.0),
                                s3_request_timeout=min(settings.s3_request_timeout, 20.0),
                                s3_max_retries=min(settings.s3_max_retries, 2),
                                s3_retry_timeout=min(settings.s3_retry_timeout, 15.0))

    def factory():
        from walship.config import require_repo
        from walship.storage import open_store
        return open_store(require_repo(quick), quick)
    return factory


def _plugin(check) -> int:
    """Print one plugin line and return its state; every failure of the check itself is UNKNOWN."""
    try:
        result = check()
    except WalshipError as exc:
        result = CheckResult(UNKNOWN, exc.one_line())
    except ValueError as exc:
        result = CheckResult(UNKNOWN, str(exc))
    except Exception as exc:  # a plugin never exits with a traceback: Icinga would read exit 1 as WARNING
        result = CheckResult(UNKNOWN, f"{type(exc).__name__}: {exc}")
    print(result.line())
    return result.state


def _check(args, settings, store_factory) -> CheckResult:
    if args.check == "backup":
        return _check_backup(args, settings, store_factory)
    if args.check == "archive":
        return _check_archive(args, settings, store_factory)
    if args.check == "receive":
        from walship.monitoring.receive import run_check
        return run_check(args, settings, store_factory)
    from walship.monitoring.endtoend import check_end_to_end
    store = store_factory()
    try:
        return check_end_to_end(store, args.pg, args.timeout)
    finally:
        store.close()


def _check_backup(args, settings, store_factory) -> CheckResult:
    from walship.backup.catalog import list_backups
    from walship.monitoring.checks import check_backup

    warning, critical = parse_age(args.warning), parse_age(args.critical)
    if warning > critical:
        raise ValueError(f"--warning {args.warning} is later than --critical {args.critical}")
    store = store_factory()
    try:
        backups = list_backups(store)
    finally:
        store.close()
    return check_backup(backups, store.url, warning, critical, time.time())


def _check_archive(args, settings, store_factory) -> CheckResult:
    from walship.monitoring import pgfacts
    from walship.monitoring.checks import ArchiveThresholds, check_archive

    limits = ArchiveThresholds(
        backlog_warning=args.backlog_warning, backlog_critical=args.backlog_critical,
        age_warning_s=parse_age(args.age_warning) if args.age_warning else None,
        age_critical_s=parse_age(args.age_critical) if args.age_critical else None)
    facts = pgfacts.collect(args.pg)
    archive, gaps, since, repo_error = None, [], None, None
    try:
        archive, since = _load_archive(settings, store_factory)
        gaps = archive.gaps(since)
    except WalshipError as exc:
        # Still report what the server says: a failing archiver outranks an unreadable repository.
        repo_error = exc.message
    return check_archive(facts, archive, gaps, since, repo_error, limits, facts.now)


def _load_archive(settings: Settings, store_factory: Callable[[], Store]) -> tuple[WalArchive, str | None]:
    """The WAL archive (segment size and timelines from the repository, as `status` reads them) and the
    start segment of the oldest kept backup (None without backups)."""
    from walship.crypto import keyring_from_settings
    from walship.monitoring import walarchive

    store = store_factory()
    try:
        archive, backups = walarchive.load_with_backups(store, keyring_from_settings(settings))
        oldest = min(backups, key=lambda b: b.start_time) if backups else None
        return archive, (oldest.start_wal if oldest else None)
    finally:
        store.close()


def _status(args, settings, store_factory) -> int:
    from walship.monitoring import status

    store = store_factory()
    try:
        report = status.gather(settings, store, args.pg, time.time())
    finally:
        store.close()
    print(status.render_json(report) if args.json else status.render_text(report))
    return 0
