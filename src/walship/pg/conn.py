"""A psycopg 3 connection to the server being backed up.

Without `--pg`, libpq reads PGHOST, PGPORT, PGUSER, PGDATABASE (and ~/.pgpass,
PGPASSWORD) itself, exactly as psql does, so an empty conninfo is the default.
"""

from __future__ import annotations

from walship.errors import PostgresError

CONNECT_TIMEOUT_S = 10


def connect(conninfo: str | None = None, application_name: str = "walship", timeout_s: int = CONNECT_TIMEOUT_S):
    """An autocommit connection; a failure is one line saying where walship tried to connect."""
    import psycopg

    try:
        return psycopg.connect(conninfo or "", autocommit=True, connect_timeout=timeout_s,
                               application_name=application_name)
    except psycopg.OperationalError as exc:
        reason = " ".join(str(exc).split()) or "connection failed"
        raise PostgresError(f"cannot connect to PostgreSQL: {reason}",
                            "check that the server runs and PGHOST/PGPORT/PGUSER (or --pg) point at it") from None
