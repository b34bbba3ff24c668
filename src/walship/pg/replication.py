"""The streaming replication protocol, for wal-receive (every replication command walship sends is here).

psycopg 3 has no replication-protocol API; psycopg2's PhysicalReplicationConnection has one and, unlike
pg_receivewal, lets the client choose the flush position it reports to the primary: wal-receive reports a
position only once the WAL up to it is durable (fsynced in its spool, and in --synchronous mode stored in
the repository), which is what makes synchronous_standby_names = 'walship' mean "committed = in the
repository". psycopg2 is imported here only: no other command pays for it.
"""

from __future__ import annotations

import select
from typing import Any

from walship.errors import PostgresError, WalshipError
from walship.pg.walnames import format_lsn


class SlotUnusable(WalshipError):
    """The slot is invalidated, or the WAL wal-receive needs next was removed: a gap unless the operator acts."""
    exit_code = 4


class TimelineEnded(Exception):
    """The server ended the stream of this timeline (a promotion): reconnect and follow the next one."""


class ReplicationStream:
    """One replication connection: identify, slot, start, messages, feedback."""

    def __init__(self, conninfo: str | None, application_name: str, connect_timeout_s: int = 10) -> None:
        import psycopg2
        import psycopg2.extras

        self._psycopg2 = psycopg2
        try:
            self.conn = psycopg2.connect(conninfo or "", connection_factory=psycopg2.extras.PhysicalReplicationConnection,
                                         application_name=application_name, connect_timeout=connect_timeout_s)
        except psycopg2.OperationalError as exc:
            reason = " ".join(str(exc).split()) or "connection failed"
            raise PostgresError(f"cannot open a replication connection: {reason}",
                                "check that the server runs, that PGHOST/PGPORT/PGUSER (or --pg) point at it, and "
                                "that pg_hba.conf allows a 'replication' connection for this role") from None
        self.cursor = self.conn.cursor()
        self.server_version: int = self.conn.server_version
        self.slot, self.start_lsn, self.timeline = "", 0, 0

    def _command(self, sql: str) -> list[tuple[Any, ...]]:
        try:
            self.cursor.execute(sql)
            return self.cursor.fetchall() if self.cursor.description else []
        except self._psycopg2.Error as exc:
            raise PostgresError(f"replication command {sql.split()[0]} failed: {' '.join(str(exc).split())}",
                                "check the role's REPLICATION privilege and the server's log") from None

    def identify(self) -> tuple[str, int, int]:
        """(system identifier, current timeline, current WAL flush position)."""
        from walship.pg.walnames import parse_lsn
        systemid, timeline, xlogpos, _db = self._command("IDENTIFY_SYSTEM")[0]
        return str(systemid), int(timeline), parse_lsn(xlogpos)

    def segment_size(self) -> int:
        value = self._command("SHOW wal_segment_size")[0][0]   # "16MB"
        number, unit = int(value.rstrip("kMGB")), value.lstrip("0123456789")
        return number * {"kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}[unit]

    def slot_restart_lsn(self, slot: str) -> tuple[bool, int | None]:
        """(slot exists, its restart_lsn or None). READ_REPLICATION_SLOT exists from PostgreSQL 15."""
        from walship.pg.walnames import parse_lsn
        rows = self._command(f"READ_REPLICATION_SLOT {_identifier(slot)}")
        if not rows or rows[0][0] is None:
            return False, None
        return True, (parse_lsn(rows[0][1]) if rows[0][1] else None)

    def create_slot(self, slot: str) -> None:
        """A physical slot that holds WAL from now on (RESERVE_WAL), so nothing is removed before it is received."""
        self._command(f"CREATE_REPLICATION_SLOT {_identifier(slot)} PHYSICAL RESERVE_WAL")

    def timeline_history(self, timeline: int) -> tuple[str, bytes]:
        name, content = self._command(f"TIMELINE_HISTORY {int(timeline)}")[0]
        # psycopg2 hands the content as text (the file is ASCII); stored as the server's bytes
        return str(name), content.encode() if isinstance(content, str) else bytes(content)

    def start(self, slot: str, start_lsn: int, timeline: int) -> None:
        self.slot, self.start_lsn, self.timeline = slot, start_lsn, timeline
        try:
            self.cursor.start_replication(slot_name=slot, start_lsn=start_lsn, timeline=timeline, decode=False)
        except self._psycopg2.Error as exc:
            reason = " ".join(str(exc).split())
            self._refuse_missing_wal(reason)
            raise PostgresError(f"START_REPLICATION at {format_lsn(start_lsn)} failed: {reason}",
                                "check the server's log") from None

    def _refuse_missing_wal(self, reason: str) -> None:
        """The server no longer has the WAL wal-receive needs next (removed, or the slot invalidated by
        max_slot_wal_keep_size): never a silent gap, and no retry can help. The server says so when
        streaming starts or, for a removed segment, with its first read."""
        if "has already been removed" in reason or "invalidated" in reason or "does not exist" in reason:
            raise SlotUnusable(
                f"the server cannot send WAL from {format_lsn(self.start_lsn)} on timeline {self.timeline} "
                f"(slot {self.slot}): {reason}; the WAL from there on is not in this repository unless "
                "archive_command stored it",
                "check `walship status` for the gap; take a new base backup (backup-push) so restores "
                f"do not need the missing WAL, then drop and recreate the slot ({self.slot}) and start "
                "wal-receive with an empty --spool") from None

    def read(self, timeout_s: float) -> tuple[int, bytes] | None:
        """The next WAL message (start LSN, bytes), waiting at most timeout_s; None when nothing came.
        Raises TimelineEnded when the server ends this timeline's stream, PostgresError on a lost connection."""
        try:
            message = self.cursor.read_message()
            if message is None:
                readable, _, _ = select.select([self.cursor], [], [], timeout_s)
                if not readable:
                    return None
                message = self.cursor.read_message()
                if message is None:
                    return None
        except self._psycopg2.DatabaseError as exc:
            self._refuse_missing_wal(" ".join(str(exc).split()))
            raise PostgresError(f"the replication connection ended: {' '.join(str(exc).split()) or 'closed'}",
                                "wal-receive reconnects; check the primary if this repeats") from None
        return message.data_start, bytes(message.payload)

    def feedback(self, flushed_lsn: int, reply: bool = False) -> None:
        """Report write = flush = flushed_lsn: the primary (and synchronous commit) counts only durable WAL."""
        try:
            self.cursor.send_feedback(write_lsn=flushed_lsn, flush_lsn=flushed_lsn, apply_lsn=0, reply=reply,
                                      force=True)
        except self._psycopg2.Error as exc:
            raise PostgresError(f"the replication connection ended: {' '.join(str(exc).split()) or 'closed'}",
                                "wal-receive reconnects; check the primary if this repeats") from None

    def wal_end(self) -> int:
        """The server's WAL end as of its last message (for the lag figures)."""
        return int(self.cursor.wal_end or 0)

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:   # closing a broken connection: nothing to report
            pass


def _identifier(name: str) -> str:
    if not name.replace("_", "").isalnum() or not name.islower():
        raise WalshipError(f"{name!r} is not a usable slot name",
                           "use lower-case letters, digits and underscores (--slot)")
    return name


_RECEIVER_QUERY = """
SELECT r.state, r.sync_state,
       pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END,
                       r.flush_lsn)::bigint,
       extract(epoch FROM r.flush_lag)::float8
  FROM pg_stat_replication r
 WHERE r.application_name = %s
 ORDER BY r.backend_start DESC
 LIMIT 1
"""


def receiver_on_server(conn, application_name: str) -> tuple[str, str, int, float | None] | None:
    """(state, sync_state, flush lag in bytes, flush lag in seconds) of wal-receive as the server it streams from
    sees it (psycopg 3 connection), None when it is not connected. wal-receive's flush position is what is
    durable (and, synchronous, stored), so its flush lag is how far the repository is behind."""
    row = conn.execute(_RECEIVER_QUERY, (application_name,)).fetchone()
    if row is None:
        return None
    return str(row[0]), str(row[1]), int(row[2] or 0), (float(row[3]) if row[3] is not None else None)


_RECEIVE_STATUS_QUERY = """
SELECT s.slot_name IS NOT NULL, coalesce(s.active, false), s.restart_lsn::text, s.wal_status,
       r.state, r.sync_state, r.flush_lsn::text,
       (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END)::text,
       extract(epoch FROM r.flush_lag)::float8
  FROM (SELECT 1) AS one
  LEFT JOIN pg_replication_slots s ON s.slot_name = %s
  LEFT JOIN LATERAL (SELECT state, sync_state, flush_lsn, flush_lag FROM pg_stat_replication
                      WHERE application_name = %s ORDER BY backend_start DESC LIMIT 1) r ON true
"""


def receive_status(conn, slot: str, application_name: str) -> dict[str, Any]:
    """wal-receive as the server sees it, for `walship status` (psycopg 3 connection): its slot (exists, active,
    restart_lsn, wal_status: 'lost' once max_slot_wal_keep_size removed WAL it needed) and its connection
    (state, sync_state, flush position, flush lag; None when not connected), and the server's WAL position."""
    row = conn.execute(_RECEIVE_STATUS_QUERY, (slot, application_name)).fetchone()
    assert row is not None          # the query returns one row whatever the tables hold
    return {"slot": slot, "slot_exists": bool(row[0]), "slot_active": bool(row[1]), "slot_restart_lsn": row[2],
            "slot_wal_status": row[3], "state": row[4], "sync_state": row[5], "flush_lsn": row[6],
            "server_lsn": row[7], "flush_lag_s": float(row[8]) if row[8] is not None else None}
