"""`walship check`: end to end, does archiving work right now?

Connects to the primary, checks archive_mode and archive_command, writes one
WAL record (pg_logical_emit_message, so that the switch below is never a
no-op on an idle server), forces a segment switch and waits until that
segment is in the repository. One plugin line says that archiving works, or
what is wrong and where to look.
"""

from __future__ import annotations

import time

from walship.repo.layout import wal_key
from walship.reporting.plugin import CRITICAL, OK, UNKNOWN, WARNING, CheckResult, Perf


def check_end_to_end(store, conninfo: str | None, timeout_s: float) -> CheckResult:
    from walship.pg import backup_api
    from walship.pg.conn import connect

    with connect(conninfo, application_name="walship check") as conn:
        if backup_api.in_recovery(conn):
            return CheckResult(UNKNOWN, "the server is a standby: run `walship check` against the primary")
        mode = backup_api.show(conn, "archive_mode")
        if mode == "off":
            return CheckResult(CRITICAL, "archive_mode is off: no WAL is archived; "
                                         "set archive_mode = on and restart PostgreSQL")
        command = backup_api.show(conn, "archive_command")
        library = backup_api.show(conn, "archive_library") if conn.info.server_version >= backup_api.PG15 else ""
        if library:
            return CheckResult(WARNING, f"archive_library = {library!r} archives, not walship")
        if not command or command == "(disabled)":
            return CheckResult(CRITICAL, "archive_command is empty: segments pile up in pg_wal; "
                                         "set archive_command = 'walship wal-push %p' and reload")
        started = time.monotonic()
        backup_api.write_wal_record(conn, "walship-check", "ping")
        segment = backup_api.switch_wal(conn)
        key = wal_key(segment)
        while time.monotonic() - started < timeout_s:
            if store.head(key) is not None:
                elapsed = time.monotonic() - started
                note = "" if "walship" in command else f" (archive_command {command!r} does not run walship)"
                state = OK if not note else WARNING
                return CheckResult(state, f"archiving works: {segment} reached {store.url} in {elapsed:.1f} s{note}",
                                   [Perf("latency", round(elapsed, 3), "s")])
            time.sleep(0.25)
        archiver = backup_api.archiver_status(conn)
    failed = (f"; the archiver last failed on {archiver.last_failed_wal} at "
              f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(archiver.last_failed_time or 0))}"
              if archiver.last_failed_wal else "")
    return CheckResult(CRITICAL, f"{segment} did not reach {store.url} within {timeout_s:.0f} s "
                                 f"(last archived: {archiver.last_archived_wal or 'none'}){failed}; "
                                 "the PostgreSQL log and walship's "
                                 "log lines (its syslog program name) say why",
                       [Perf("latency", round(timeout_s, 3), "s")])
