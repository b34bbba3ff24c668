"""Every SQL statement walship runs: PostgreSQL's non-exclusive base backup API, the facts a backup
records, and what the server says about its archiving (backup-push, `walship check`, `walship status`).

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
import time
from dataclasses import asdict, dataclass

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


def backup_timeline(conn) -> int:
    """The timeline of the checkpoint pg_backup_start just took (a primary) or used (a standby's restartpoint):
    the one the backup starts on. Read after the start, not before: a server promoted moments ago still names
    its old timeline in the control file until its first checkpoint on the new one."""
    return int(conn.execute("SELECT timeline_id FROM pg_control_checkpoint()").fetchone()[0])


def stop_backup(conn, version: int) -> BackupStop:
    """Leave backup mode without waiting for archiving.

    PostgreSQL's own wait (wait_for_archive => true) never ends while archiving
    fails, silently; backup-push waits for the stop segment in the repository
    itself, bounded, showing the archiver's state. On a primary PostgreSQL still
    writes the backup end record and switches to a new segment either way.
    """
    try:
        if version >= PG15:
            row = conn.execute("SELECT lsn::text, labelfile, spcmapfile "
                               "FROM pg_backup_stop(wait_for_archive => false)").fetchone()
        else:
            row = conn.execute("SELECT lsn::text, labelfile, spcmapfile FROM pg_stop_backup(false, false)").fetchone()
    except Exception as exc:
        raise PostgresError(f"PostgreSQL failed to stop the backup: {_first_line(exc)}") from None
    return BackupStop(row[0], row[1], row[2] or "")


def next_xid(conn, version: int) -> int:
    """The next full transaction ID (xmax of a snapshot taken now): called once pg_backup_stop returned, every
    transaction from this one on commits after the backup's consistency point."""
    if version >= 130000:
        return int(conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text").fetchone()[0])
    return int(conn.execute("SELECT txid_snapshot_xmax(txid_current_snapshot())::text").fetchone()[0])


def switch_wal(conn) -> str:
    """Complete the current WAL segment (on a primary) so that the archiver takes it now; its name.

    On a server that wrote nothing since the last switch, pg_switch_wal does
    nothing: the name is then that of the last segment completed.
    """
    try:
        return conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
    except Exception as exc:
        raise PostgresError(f"the primary refused pg_switch_wal(): {_first_line(exc)}",
                            "connect to the primary as a superuser or a role granted EXECUTE on "
                            "pg_switch_wal") from None


def write_wal_record(conn, prefix: str = "walship", content: str = "backup-push archiving check") -> bool:
    """One small WAL record (a logical message), so that the next switch completes a new segment.

    False when the role may not (pg_logical_emit_message); the switch then
    names the last segment completed, which proves less but still something.
    """
    try:
        conn.execute("SELECT pg_logical_emit_message(false, %s, %s)", (prefix, content))
        return True
    except Exception:
        return False


def database_size(conn) -> int:
    """Bytes of all databases together: what a base backup copies, roughly (for its progress bar)."""
    return conn.execute("SELECT sum(pg_database_size(oid))::bigint FROM pg_database").fetchone()[0] or 0


def in_recovery(conn) -> bool:
    return bool(conn.execute("SELECT pg_is_in_recovery()").fetchone()[0])


def show(conn, name: str) -> str:
    """The value of one setting, as SHOW prints it."""
    return conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0]


@dataclass(frozen=True)
class ArchiverStatus:
    """archive_mode and pg_stat_archiver, as PostgreSQL shows its archiving."""
    archive_mode: str
    archived_count: int
    last_archived_wal: str | None
    last_archived_time: float | None
    failed_count: int
    last_failed_wal: str | None
    last_failed_time: float | None

    @property
    def failing(self) -> bool:
        """The archiver's latest event is a failure."""
        if self.last_failed_time is None:
            return False
        return self.last_archived_time is None or self.last_failed_time > self.last_archived_time

    def describe(self) -> str:
        """PostgreSQL's view in a few words, for a log line or an error."""
        last = f"last archived {self.last_archived_wal}" if self.last_archived_wal else "nothing archived yet"
        if not self.failed_count:
            return f"pg_stat_archiver: {last}, no failure"
        when = time.strftime("%H:%M:%S UTC", time.gmtime(self.last_failed_time or 0))
        return (f"pg_stat_archiver: {last}, last failure on {self.last_failed_wal} at {when}, "
                f"{self.failed_count} failure{'s' if self.failed_count != 1 else ''} since stats reset")


@dataclass(frozen=True)
class ArchiverFacts(ArchiverStatus):
    """ArchiverStatus with what the server shows around it: the .ready backlog and pg_wal (`walship check
    archive`, `walship status`)."""
    server_version: int
    wal_segment_size: int
    in_recovery: bool
    ready_count: int               # .ready files: WAL waiting for archive_command
    oldest_ready_age_s: float | None
    wal_size: int                  # bytes in pg_wal
    now: float                     # the server's clock, for ages

    @property
    def archiving_here(self) -> bool:
        return self.archive_mode == "always" or (self.archive_mode == "on" and not self.in_recovery)

    def as_dict(self) -> dict:
        return {**asdict(self), "failing": self.failing}


_ARCHIVER_COLUMNS = (
    "current_setting('archive_mode'), a.archived_count, a.last_archived_wal,"
    " extract(epoch FROM a.last_archived_time)::float8, a.failed_count, a.last_failed_wal,"
    " extract(epoch FROM a.last_failed_time)::float8")


def archiver_status(conn) -> ArchiverStatus:
    row = conn.execute(f"SELECT {_ARCHIVER_COLUMNS} FROM pg_stat_archiver a").fetchone()
    return ArchiverStatus(*row)


def archiver_facts(conn) -> ArchiverFacts:
    """Needs PostgreSQL 12+ (pg_ls_archive_statusdir) and a role that is superuser or member of pg_monitor
    (pg_ls_waldir, pg_ls_archive_statusdir); PostgresError otherwise, saying which."""
    import psycopg

    if conn.info.server_version < 120000:
        raise PostgresError(f"PostgreSQL {conn.info.server_version // 10000} is too old for "
                            "`walship check archive`", "it needs 12 or later (pg_ls_archive_statusdir)")
    try:
        row = conn.execute(
            f"SELECT {_ARCHIVER_COLUMNS},"
            "       current_setting('server_version_num')::int,"
            "       pg_size_bytes(current_setting('wal_segment_size')),"
            "       pg_is_in_recovery(),"
            "       (SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'),"
            "       (SELECT extract(epoch FROM now() - min(modification))::float8"
            "          FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'),"
            "       (SELECT coalesce(sum(size), 0) FROM pg_ls_waldir())::bigint,"
            "       extract(epoch FROM now())::float8"
            "  FROM pg_stat_archiver a").fetchone()
    except psycopg.errors.InsufficientPrivilege as exc:
        raise PostgresError(f"PostgreSQL refused to show the archiver's state: {exc.diag.message_primary}",
                            "connect as a superuser or a member of pg_monitor "
                            "(GRANT pg_monitor TO <role>)") from None
    except psycopg.Error as exc:
        raise PostgresError(f"cannot query PostgreSQL: {_first_line(exc)}",
                            "pass --pg 'host=... user=...' or set PGHOST/PGPORT/PGUSER") from None
    return ArchiverFacts(*row)



@dataclass(frozen=True)
class PageLayout:
    """What verifying page checksums needs: on only when the cluster has data checksums."""
    data_checksums: bool
    block_size: int
    blocks_per_segment: int      # of a relation file segment (<relfilenode>.N), 131072 for 1 GiB


def page_layout(conn) -> PageLayout:
    row = conn.execute(
        "SELECT current_setting('data_checksums') = 'on', current_setting('block_size')::int,"
        "       (pg_size_bytes(current_setting('segment_size')) / current_setting('block_size')::int)::int"
        ).fetchone()
    return PageLayout(*row)


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
