"""What the incremental backup tests share: pgbench runs, the tables each kind of change happens to, the first
round of changes, and table digests to compare a restore with its source."""

from __future__ import annotations

from tests.support import pg, restore

TABLES = {                      # table -> (columns digested, key)
    "pgbench_accounts": ("aid::text || abalance", "aid"),
    "pgbench_branches": ("bid::text || bbalance", "bid"),
    "pgbench_tellers": ("tid::text || tbalance", "tid"),
    "pgbench_history": ("tid::text || bid || aid || delta || mtime", "tid, bid, aid, delta, mtime"),
    "grown": ("id::text || pad", "id"),
    "shrunk": ("id::text || pad", "id"),
    "fresh": ("id::text || pad", "id"),
    "rewritten": ("id::text || pad", "id"),
    "stamped": ("id::text", "id"),
}


def pgbench(c: pg.Cluster, *args: str) -> None:
    r = pg.run_as_postgres([c.program("pgbench"), "-h", str(c.sockdir), "-p", str(c.port), "-U", "postgres",
                            *args, "postgres"], env=c.env, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def digests(c: pg.Cluster, tables: dict = TABLES) -> dict:
    return {t: restore.digest(c, t, *spec) for t, spec in tables.items()}


def create_changing_tables(c: pg.Cluster) -> None:
    """Tables the rounds of changes grow, shrink, drop and rewrite."""
    c.sql("CREATE TABLE grown (id int PRIMARY KEY, pad text)")
    c.sql("INSERT INTO grown SELECT g, md5(g::text) FROM generate_series(1, 1000) g")
    c.sql("CREATE TABLE shrunk AS SELECT g AS id, repeat(md5(g::text), 4) AS pad FROM generate_series(1, 20000) g")
    c.sql("CREATE TABLE doomed AS SELECT g AS id FROM generate_series(1, 5000) g")
    c.sql("CREATE TABLE rewritten AS SELECT g AS id, md5(g::text) AS pad FROM generate_series(1, 5000) g")
    c.sql("CREATE INDEX rewritten_pad ON rewritten (pad)")


def first_round(c: pg.Cluster, grown_to: int) -> None:
    """pgbench traffic, relation extension, truncation at the end of a file, a dropped and a new table."""
    pgbench(c, "-t", "200", "-c", "2", "-n")
    c.sql(f"INSERT INTO grown SELECT g, md5(g::text) FROM generate_series(1001, {grown_to}) g")
    c.sql("DELETE FROM shrunk WHERE id > 2000")
    c.sql("VACUUM shrunk")                                 # gives the emptied tail pages back: the file shrinks
    c.sql("DROP TABLE doomed")
    c.sql("CREATE TABLE fresh AS SELECT g AS id, md5(g::text) AS pad FROM generate_series(1, 3000) g")
    restore.stamp_rows(c, 1, 3)
