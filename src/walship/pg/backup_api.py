"""PostgreSQL's non-exclusive base backup API, and the facts a backup records.

The backup lives in one session: PostgreSQL aborts a non-exclusive backup when
the session that started it ends, so a backup-push killed at any moment never
leaves the server in backup mode. The session must therefore stay open from
start to stop.

PostgreSQL 15 renamed pg_start_backup/pg_stop_backup to pg_backup_start/
pg_backup_stop and removed exclusive backups; older servers get the old names
with exclusive => false.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from walship.errors import PostgresError

PG15 = 150000


@dataclass(frozen=True)
class ServerFacts:
    version: int                 # server_version_num
    system_identifier: str
    timeline: int
    wal_segment_size: int
    data_directory: str
    in_recovery: bool


@dataclass(frozen=True)
class BackupStart:
    lsn: str


@dataclass(frozen=True)
class BackupStop:
    lsn: str
    backup_label: str
    tablespace_map: str


def server_facts(conn) -> ServerFacts:
    row = conn.execute(
        "SELECT current_setting('server_version_num')::int,"
        "       (SELECT system_identifier::text FROM pg_control_system()),"
        "       (SELECT timeline_id FROM pg_control_checkpoint()),"
        "       pg_size_bytes(current_setting('wal_segment_size')),"
        "       current_setting('data_directory'),"
        "       pg_is_in_recovery()").fetchone()
    return ServerFacts(*row)


def start_backup(conn, version: int, label: str) -> BackupStart:
    """Enter backup mode with an immediate checkpoint (the operator asked for a backup now)."""
    try:
        if version >= PG15:
            lsn = conn.execute("SELECT pg_backup_start(%s, fast => true)::text", (label,)).fetchone()[0]
        else:
            lsn = conn.execute("SELECT pg_start_backup(%s, true, false)::text", (label,)).fetchone()[0]
    except Exception as exc:
        raise PostgresError(f"PostgreSQL refused to start the backup: {_first_line(exc)}",
                            "the role needs superuser or EXECUTE on pg_backup_start/pg_backup_stop") from None
    return BackupStart(lsn)


def stop_backup(conn, version: int) -> BackupStop:
    """Leave backup mode; PostgreSQL waits until the segment holding the stop point is archived."""
    try:
        if version >= PG15:
            row = conn.execute("SELECT lsn::text, labelfile, spcmapfile "
                               "FROM pg_backup_stop(wait_for_archive => true)").fetchone()
        else:
            row = conn.execute("SELECT lsn::text, labelfile, spcmapfile FROM pg_stop_backup(false, true)").fetchone()
    except Exception as exc:
        raise PostgresError(f"PostgreSQL failed to stop the backup: {_first_line(exc)}") from None
    return BackupStop(row[0], row[1], row[2] or "")


def next_xid(conn, version: int) -> int:
    """The next full transaction ID (xmax of a snapshot taken now): called once pg_backup_stop returned, every
    transaction from this one on commits after the backup's consistency point."""
    if version >= 130000:
        return int(conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text").fetchone()[0])
    return int(conn.execute("SELECT txid_snapshot_xmax(txid_current_snapshot())::text").fetchone()[0])


def switch_wal(conn) -> None:
    """Complete the current WAL segment (on a primary) so that the archiver takes it now."""
    try:
        conn.execute("SELECT pg_switch_wal()")
    except Exception as exc:
        raise PostgresError(f"the primary refused pg_switch_wal(): {_first_line(exc)}",
                            "connect to the primary as a superuser or a role granted EXECUTE on "
                            "pg_switch_wal") from None


_LABEL_START = re.compile(r"^START WAL LOCATION: (\S+) \(file ([0-9A-F]{24})\)$", re.M)


def label_start(backup_label: str) -> tuple[str, str]:
    """(start LSN, start segment) as the backup_label states them: the point replay begins."""
    m = _LABEL_START.search(backup_label)
    if not m:
        raise PostgresError("pg_backup_stop returned a backup_label without START WAL LOCATION")
    return m.group(1), m.group(2)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
