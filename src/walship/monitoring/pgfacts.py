"""What the PostgreSQL server says about its archiving: pg_stat_archiver, the .ready backlog, pg_wal.

The query and ArchiverFacts live in pg/backup_api.py with every other statement; this is the connection
`walship check archive` and `walship status` make for it.
"""

from __future__ import annotations

from walship.pg.backup_api import ArchiverFacts

__all__ = ["ArchiverFacts", "collect"]


def collect(conninfo: str | None) -> ArchiverFacts:
    from walship.pg import backup_api
    from walship.pg.conn import connect

    with connect(conninfo, application_name="walship check") as conn:
        return backup_api.archiver_facts(conn)
