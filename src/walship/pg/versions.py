"""Which PostgreSQL majors walship runs on: those its test suite proves, 14 to 18.

A major outside that range may work (the backup API and WAL naming have been
stable since 10), but nothing has shown that walship's backups and archives of it
restore: refusing is the safe default, and `allow_untested_pg = true`
(WALSHIP_ALLOW_UNTESTED_PG=true) is the operator's explicit decision to run it anyway.

Callers: backup-push with the server's server_version_num; wal-push with the
major its segment's header names (walheader.WAL_MAGIC_MAJOR; None for a magic
that table does not know).

On the archive_command fast path: imports nothing but walship.errors.
"""

from __future__ import annotations

from walship.errors import ConfigError

TESTED_MAJORS = (14, 15, 16, 17, 18)      # tests/support/pg.py VERSIONS: change both together
OVERRIDE = "allow_untested_pg"


class UntestedPostgres(ConfigError):
    """A PostgreSQL major that walship was not tested on, and no override."""


def major_of(server_version_num: int) -> int:
    """150018 -> 15 (server_version_num has been major * 10000 + minor since PostgreSQL 10)."""
    return server_version_num // 10000


def require_tested(major: int | None, allow_untested: bool, source: str) -> None:
    """Raise UntestedPostgres unless `major` is tested or the operator allowed untested majors.

    source says where the major was read (e.g. "the server", "WAL segment 00000001...");
    major is None when the source does not identify a known major (an unknown WAL magic).
    """
    if allow_untested or major in TESTED_MAJORS:
        return
    what = f"PostgreSQL {major}" if major is not None else "a PostgreSQL major walship does not know"
    raise UntestedPostgres(
        f"{source} is {what}; walship is tested on PostgreSQL {TESTED_MAJORS[0]} to {TESTED_MAJORS[-1]} only",
        f"to run it anyway set {OVERRIDE} = true in the config file (or WALSHIP_{OVERRIDE.upper()}=true)")
