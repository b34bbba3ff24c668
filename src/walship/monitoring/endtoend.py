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
from walship.monitoring.plugin import CRITICAL, OK, UNKNOWN, WARNING, CheckResult, Perf


def check_end_to_end(store, conninfo: str | None, timeout_s: float) -> CheckResult:
    from walship.pg.conn import connect

    with connect(conninfo, application_name="walship check") as conn:
        def show(name: str) -> str:
            return conn.execute(f"SHOW {name}").fetchone()[0]

        if conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
            return CheckResult(UNKNOWN, "the server is a standby: run `walship check` against the primary")
        mode = show("archive_mode")
        if mode == "off":
            return CheckResult(CRITICAL, "archive_mode is off: no WAL is archived; "
                                         "set archive_mode = on and restart PostgreSQL")
        command = show("archive_command")
        library = show("archive_library") if conn.info.server_version >= 150000 else ""
        if library:
            return CheckResult(WARNING, f"archive_library = {library!r} archives, not walship")
        if not command or command == "(disabled)":
            return CheckResult(CRITICAL, "archive_command is empty: segments pile up in pg_wal; "
                                         "set archive_command = 'walship wal-push %p' and reload")
        started = time.monotonic()
        conn.execute("SELECT pg_logical_emit_message(false, 'walship-check', 'ping')")
        segment = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
        key = wal_key(segment)
        while time.monotonic() - started < timeout_s:
            if store.head(key) is not None:
                elapsed = time.monotonic() - started
                note = "" if "walship" in command else f" (archive_command {command!r} does not run walship)"
                state = OK if not note else WARNING
                return CheckResult(state, f"archiving works: {segment} reached {store.url} in {elapsed:.1f} s{note}",
                                   [Perf("latency", round(elapsed, 3), "s")])
            time.sleep(0.25)
        row = conn.execute("SELECT failed_count, last_failed_wal, last_failed_time, last_archived_wal "
                           "FROM pg_stat_archiver").fetchone()
    failed = f"; the archiver last failed on {row[1]} at {row[2]:%Y-%m-%d %H:%M:%S %Z}" if row[1] else ""
    return CheckResult(CRITICAL, f"{segment} did not reach {store.url} within {timeout_s:.0f} s "
                                 f"(last archived: {row[3] or 'none'}){failed}; the PostgreSQL log and walship's "
                                 "log lines (its syslog program name) say why",
                       [Perf("latency", round(timeout_s, 3), "s")])
