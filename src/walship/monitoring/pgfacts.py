"""What the PostgreSQL server says about its archiving: pg_stat_archiver, the .ready backlog, pg_wal.

Needs PostgreSQL 12+ (pg_ls_archive_statusdir) and a role that is superuser or
member of pg_monitor (pg_ls_waldir, pg_ls_archive_statusdir).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from walship.errors import PostgresError

CONNECT_TIMEOUT_S = 5

_QUERY = """
SELECT current_setting('server_version_num')::int,
       current_setting('archive_mode'),
       pg_size_bytes(current_setting('wal_segment_size')),
       pg_is_in_recovery(),
       a.archived_count, a.last_archived_wal, extract(epoch FROM a.last_archived_time)::float8,
       a.failed_count, a.last_failed_wal, extract(epoch FROM a.last_failed_time)::float8,
       (SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'),
       (SELECT extract(epoch FROM now() - min(modification))::float8
          FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'),
       (SELECT coalesce(sum(size), 0) FROM pg_ls_waldir())::bigint,
       extract(epoch FROM now())::float8
  FROM pg_stat_archiver a
"""


@dataclass(frozen=True)
class ArchiverFacts:
    server_version: int
    archive_mode: str
    wal_segment_size: int
    in_recovery: bool
    archived_count: int
    last_archived_wal: str | None
    last_archived_time: float | None
    failed_count: int
    last_failed_wal: str | None
    last_failed_time: float | None
    ready_count: int               # .ready files: WAL waiting for archive_command
    oldest_ready_age_s: float | None
    wal_size: int                  # bytes in pg_wal
    now: float                     # the server's clock, for ages

    @property
    def failing(self) -> bool:
        """The last archive_command call failed (pg_stat_archiver's last failure is its latest event)."""
        if self.last_failed_time is None:
            return False
        return self.last_archived_time is None or self.last_failed_time > self.last_archived_time

    @property
    def archiving_here(self) -> bool:
        return self.archive_mode == "always" or (self.archive_mode == "on" and not self.in_recovery)

    def as_dict(self) -> dict:
        return {**asdict(self), "failing": self.failing}


def collect(conninfo: str | None) -> ArchiverFacts:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - a dependency
        raise PostgresError("psycopg is not installed") from None
    try:
        with psycopg.connect(conninfo or "", connect_timeout=CONNECT_TIMEOUT_S, autocommit=True) as conn:
            if conn.info.server_version < 120000:
                raise PostgresError(f"PostgreSQL {conn.info.server_version // 10000} is too old for "
                                    "`walship check archive`", "it needs 12 or later (pg_ls_archive_statusdir)")
            row = conn.execute(_QUERY).fetchone()
    except psycopg.errors.InsufficientPrivilege as exc:
        raise PostgresError(f"PostgreSQL refused to show the archiver's state: {exc.diag.message_primary}",
                            "connect as a superuser or a member of pg_monitor "
                            "(GRANT pg_monitor TO <role>)") from None
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PostgresError(f"cannot query PostgreSQL: {first}",
                            "pass --pg 'host=... user=...' or set PGHOST/PGPORT/PGUSER") from None
    return ArchiverFacts(*row)
