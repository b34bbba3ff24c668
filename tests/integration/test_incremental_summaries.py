"""Incrementals that read only what PostgreSQL 17+'s WAL summaries say changed (summarize_wal = on): the blocks read
against the blocks held, as the operator sees them in the push's log line and in backup-list --json, and restores
of the newest backup compared table by table with the source. Without summaries for the whole range (summarize_wal
off, a parent on an older timeline that this server never summarized) every block is read, and the result is as
exact."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.support import pg, restore
from tests.support.incremental import TABLES as INCREMENTAL_TABLES
from tests.support.incremental import create_changing_tables, digests, first_round, pgbench
from tests.support.restore import STAMPED

TABLES = {**INCREMENTAL_TABLES, "still": ("id::text || pad", "id")}
DATABASES = ("by_wal_log", "by_file_copy", "reborn_copy", "reborn_wal")


def _push(c: pg.Cluster, *flags: str) -> tuple[dict, str]:
    """backup-push as the operator's cron runs it: the backup as backup-list --json shows it, and the log."""
    r = pg.walship(["backup-push", str(c.datadir), "--progress", "none", *flags], restore.cli_env(c))
    assert r.returncode == 0, r.stderr
    return restore.backups(c.process_env)[-1], r.stderr


def _in(c: pg.Cluster, db: str, *statements: str) -> None:
    import psycopg
    with psycopg.connect(c.conninfo.replace("dbname=postgres", f"dbname={db}"), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def _db_rows(c: pg.Cluster, db: str) -> list:
    import psycopg
    with psycopg.connect(c.conninfo.replace("dbname=postgres", f"dbname={db}"), autocommit=True) as conn:
        return conn.execute("SELECT count(*), md5(string_agg(id || v, ',' ORDER BY id)) FROM t").fetchall()


def _summarized(backup: dict, log: str) -> None:
    """The summaries were used: said in the log line, recorded, and far fewer blocks read than held."""
    assert backup["wal_summaries"] is True, log
    assert f"read {backup['blocks_read']:,} of {backup['blocks_held']:,} relation blocks (WAL summaries)" in log, log
    assert backup["blocks_read"] * 3 < backup["blocks_held"], (backup["blocks_read"], backup["blocks_held"])


def _whole(backup: dict, log: str, why: str) -> None:
    assert backup["wal_summaries"] is False, log
    assert backup["blocks_read"] == backup["blocks_held"] > 0, log
    assert f"reads whole relation files: {why}" in log, log


@pytest.mark.parametrize("version", [17, 18], ids=["pg17", "pg18"])
def test_a_chain_read_through_wal_summaries_restores_exactly(cluster_factory, scratch, version):
    repo_env = restore.file_repo(scratch)
    c = cluster_factory(version, env=repo_env)
    c.initdb("summarize_wal = on\n")
    c.set_archiving()
    c.start()
    pgbench(c, "-i", "-s", "1", "-q")
    c.sql(STAMPED)
    c.sql("CREATE TABLE still AS SELECT g AS id, md5(g::text) AS pad FROM generate_series(1, 150000) g")
    create_changing_tables(c)
    # databases copied from a template, dropped and copied again under the same OID: the same paths, the same
    # relfilenodes, new content (FILE_COPY writes no WAL record per block)
    c.sql("CREATE DATABASE tmpl")
    _in(c, "tmpl", "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 2000) g")
    c.sql("CREATE DATABASE reborn_copy OID 70000 TEMPLATE tmpl STRATEGY FILE_COPY")
    c.sql("CREATE DATABASE reborn_wal OID 70001 TEMPLATE tmpl STRATEGY WAL_LOG")
    c.sql("VACUUM (FREEZE)")
    full, _ = _push(c, "--full")
    assert full["blocks_read"] == full["blocks_held"] > 0

    # 1: pgbench traffic, relation extension, truncation by VACUUM, a dropped and a new table
    first_round(c, grown_to=20000)
    first, log = _push(c, "--incremental")
    assert first["parent"] == full["name"]
    _summarized(first, log)

    # 2: the template changed and both databases made again from it under their OIDs; new databases by each
    # strategy; a rewrite by VACUUM FULL; a table shrunk then grown again past its old end
    _in(c, "tmpl", "UPDATE t SET v = 'second' WHERE id % 3 = 0")
    for db, oid, strategy in (("reborn_copy", 70000, "FILE_COPY"), ("reborn_wal", 70001, "WAL_LOG")):
        c.sql(f"DROP DATABASE {db}")
        c.sql(f"CREATE DATABASE {db} OID {oid} TEMPLATE tmpl STRATEGY {strategy}")
    for db, strategy in (("by_wal_log", "WAL_LOG"), ("by_file_copy", "FILE_COPY")):
        c.sql(f"CREATE DATABASE {db} STRATEGY {strategy}")
        _in(c, db, "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 2000) g")
    c.sql("UPDATE rewritten SET pad = md5(pad) WHERE id % 7 = 0")
    c.sql("VACUUM FULL rewritten")
    c.sql("DELETE FROM shrunk WHERE id > 500")
    c.sql("VACUUM shrunk")
    c.sql("INSERT INTO shrunk SELECT g, repeat(md5((-g)::text), 4) FROM generate_series(501, 3000) g")
    pgbench(c, "-t", "100", "-c", "2", "-n")
    restore.stamp_rows(c, 4, 3)
    second, log = _push(c, "--incremental")
    assert second["parent"] == first["name"] and second["wal_summaries"] is True, log
    assert second["blocks_read"] < second["blocks_held"]

    # 3: pgbench runs while the third one reads the files: blocks change under it, WAL replay repairs them
    during = subprocess.Popen([c.program("pgbench"), "-h", str(c.sockdir), "-p", str(c.port), "-U", "postgres",
                               "-T", "6", "-c", "2", "-n", "postgres"], env=c.env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, **pg.as_postgres())
    time.sleep(1)
    third, log = _push(c, "--incremental")
    assert during.wait(timeout=60) == 0, during.stderr.read() if during.stderr else ""
    assert third["parent"] == second["name"]
    _summarized(third, log)
    restore.stamp_rows(c, 7, 2)
    c.wait_archived(c.switch_wal())
    expected = digests(c, TABLES)
    dbs = {db: _db_rows(c, db) for db in DATABASES}
    assert dbs["reborn_copy"] != _db_rows(c, "by_file_copy")      # the template's second content, not the first

    newest = restore.restore(version, cluster_factory, "newest", repo_env, "LATEST")
    assert digests(newest, TABLES) == expected
    assert {db: _db_rows(newest, db) for db in DATABASES} == dbs
    assert newest.scalar("SELECT to_regclass('doomed')") is None
    restore.check_integrity(newest)


def test_without_summaries_for_the_parents_range_whole_files_are_read(cluster_factory, scratch):
    """summarize_wal off when the parent was taken: the first incremental reads everything (saying why); once
    summaries cover the range from its parent, the next reads only the changed blocks; the restore is exact."""
    repo_env = restore.file_repo(scratch)
    c = restore.primary(cluster_factory, 17, repo_env)
    c.sql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 100000) g")
    c.sql("VACUUM (FREEZE) t")
    full, _ = _push(c, "--full")
    c.sql("UPDATE t SET v = 'one' WHERE id <= 100")
    off, log = _push(c, "--incremental")
    _whole(off, log, "summarize_wal is off")

    # the WAL of the parent's range leaves pg_wal before the summarizer starts: it cannot summarize that range
    c.sql("ALTER SYSTEM SET wal_keep_size = 0")
    c.sql("SELECT pg_reload_conf()")
    for _ in range(3):
        c.sql("CREATE TABLE IF NOT EXISTS filler ()")
        c.wait_archived(c.switch_wal())
        c.sql("CHECKPOINT")
    c.sql("ALTER SYSTEM SET summarize_wal = on")
    c.sql("SELECT pg_reload_conf()")
    c.sql("UPDATE t SET v = 'two' WHERE id BETWEEN 50000 AND 50100")
    before, log = _push(c, "--incremental")               # the summaries begin after its parent's start
    _whole(before, log, "no WAL summary covers")

    c.sql("UPDATE t SET v = 'three' WHERE id BETWEEN 90000 AND 90100")
    after, log = _push(c, "--incremental")
    assert after["parent"] == before["name"]
    _summarized(after, log)
    c.sql("CREATE TABLE after_the_backups ()")
    c.wait_archived(c.switch_wal())
    expected = restore.digest(c, "t", "id::text || v", "id")

    restored = restore.restore(17, cluster_factory, "restored", repo_env, "LATEST")
    assert restore.digest(restored, "t", "id::text || v", "id") == expected
    assert restored.scalar("SELECT count(*) FROM t WHERE v IN ('one', 'two', 'three')") == 100 + 101 + 101
    restore.check_integrity(restored)


def test_a_parent_on_the_timeline_before_a_promotion_is_followed_by_reading_whole_files(cluster_factory, scratch):
    """The parent was taken on timeline 1; the cluster restored from it and promoted (timeline 2) never summarized
    timeline 1's WAL: its first incremental reads everything, its next one (parent on timeline 2) only what
    changed, and both restore exactly."""
    repo_env = restore.file_repo(scratch)
    c = cluster_factory(18, env=repo_env)
    c.initdb("summarize_wal = on\n")
    c.set_archiving()
    c.start()
    c.sql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 100000) g")
    c.sql("VACUUM (FREEZE) t")
    full, _ = _push(c, "--full")
    c.sql("UPDATE t SET v = 'on timeline 1' WHERE id <= 100")
    c.wait_archived(c.switch_wal())
    c.kill9()

    promoted = restore.restore(18, cluster_factory, "promoted", repo_env, full["name"], "--as-primary",
                               server_env=repo_env)
    assert promoted.scalar("SELECT timeline_id FROM pg_control_checkpoint()") == 2
    promoted.sql("UPDATE t SET v = 'on timeline 2' WHERE id BETWEEN 60000 AND 60100")
    across, log = _push(promoted, "--incremental")
    assert across["parent"] == full["name"] and across["timeline"] == 2
    _whole(across, log, "no WAL summary covers")
    promoted.sql("UPDATE t SET v = 'later' WHERE id BETWEEN 80000 AND 80100")
    later, log = _push(promoted, "--incremental")
    assert later["parent"] == across["name"]
    _summarized(later, log)
    promoted.sql("CREATE TABLE after_the_backups ()")
    promoted.wait_archived(promoted.switch_wal())
    expected = restore.digest(promoted, "t", "id::text || v", "id")
    promoted.kill9()

    restored = restore.restore(18, cluster_factory, "restored", repo_env, "LATEST")
    assert restore.digest(restored, "t", "id::text || v", "id") == expected
    assert restored.scalar("SELECT count(*) FROM t WHERE v = 'on timeline 1'") == 100
    restore.check_integrity(restored)
