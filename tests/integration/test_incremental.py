"""Incremental backups on real PostgreSQL: a full, incrementals with changes of every kind between them, then the
newest and a point inside the chain restored, started and compared table by table with the source."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import pg, restore
from tests.support.incremental import create_changing_tables, digests, first_round, pgbench
from tests.support.restore import STAMPED


def _push(c: pg.Cluster, *flags: str, **env) -> dict:
    restore.backup_push(c, *flags, **env)
    return restore.backups(c.process_env)[-1]


def _other_db_rows(c: pg.Cluster, db: str) -> list:
    import psycopg
    with psycopg.connect(c.conninfo.replace("dbname=postgres", f"dbname={db}"), autocommit=True) as conn:
        return conn.execute("SELECT count(*), md5(string_agg(v, ',' ORDER BY id)) FROM t").fetchall()


def _make_db(c: pg.Cluster, db: str, strategy: str | None) -> None:
    import psycopg
    c.sql(f"CREATE DATABASE {db}" + (f" STRATEGY {strategy}" if strategy else ""))
    with psycopg.connect(c.conninfo.replace("dbname=postgres", f"dbname={db}"), autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 2000) g")


@pytest.mark.parametrize(("version", "checksums", "summaries"),
                         [(15, True, False), (16, False, False), (17, True, True), (18, True, False)],
                         ids=["pg15", "pg16-no-checksums", "pg17-wal-summaries", "pg18"])
def test_a_chain_restores_its_newest_backup_and_a_point_inside_it_exactly(cluster_factory, scratch, version,
                                                                            checksums, summaries):
    repo_env = restore.file_repo(scratch)
    c = cluster_factory(version, env=repo_env, data_checksums=checksums)
    c.initdb("summarize_wal = on\n" if summaries else "")
    c.set_archiving()
    c.start()
    pgbench(c, "-i", "-s", "2", "-q")
    c.sql(STAMPED)
    create_changing_tables(c)
    c.sql("CREATE UNLOGGED TABLE scratchpad AS SELECT g AS id FROM generate_series(1, 1000) g")
    full = _push(c, "--full")
    assert (full["backup_type"], full["parent"], full["chain_depth"]) == ("full", None, 0)

    # 1: pgbench traffic, relation extension, truncation at the end of a file, a dropped and a new table
    first_round(c, grown_to=30000)
    first = _push(c, "--incremental")
    assert (first["backup_type"], first["parent"], first["chain_depth"]) == ("incremental", full["name"], 1)
    assert first["stored_size"] < full["stored_size"] / 2, (first["stored_size"], full["stored_size"])

    # 2: new databases by each strategy, a rewrite by VACUUM FULL and CLUSTER, updates in place
    _make_db(c, "by_wal_log", "WAL_LOG")
    _make_db(c, "by_file_copy", "FILE_COPY")
    c.sql("UPDATE rewritten SET pad = md5(pad) WHERE id % 7 = 0")
    c.sql("VACUUM FULL rewritten")
    c.sql("CLUSTER pgbench_branches USING pgbench_branches_pkey")
    c.sql("UPDATE shrunk SET pad = 'x' WHERE id = 5")
    pgbench(c, "-t", "100", "-c", "2", "-n")
    restore.stamp_rows(c, 4, 3)
    second = _push(c, WALSHIP_FULL_EVERY="4")              # full_every: a flagless push continues the chain
    assert (second["backup_type"], second["parent"], second["chain_depth"]) == ("incremental", first["name"], 2)
    assert second["chain_stored_size"] == full["stored_size"] + first["stored_size"] + second["stored_size"]

    inside = restore.stamp_rows(c, 7, 6)                   # inside the second incremental's WAL
    point = restore.between(inside[2], inside[3])
    # pgbench runs while the third one reads the files: blocks change under it, WAL replay repairs them
    during = subprocess.Popen([c.program("pgbench"), "-h", str(c.sockdir), "-p", str(c.port), "-U", "postgres",
                               "-T", "8", "-c", "2", "-n", "postgres"], env=c.env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, **pg.as_postgres())
    time.sleep(1)
    third = _push(c, "--incremental")
    assert during.wait(timeout=60) == 0, during.stderr.read() if during.stderr else ""
    assert third["parent"] == second["name"] and third["chain_depth"] == 3
    # 17 reads what the WAL summaries name; 15, 16 and 18 (summarize_wal off) read every block and compare hashes
    assert [b.get("wal_summaries") for b in (first, second, third)] == [summaries] * 3
    restore.stamp_rows(c, 13, 2)
    c.wait_archived(c.switch_wal())
    expected = digests(c)
    dbs = {db: _other_db_rows(c, db) for db in ("by_wal_log", "by_file_copy")}

    r = pg.walship(["verify", third["name"], "--json"], pg.server_env(repo_env))
    assert r.returncode == 0, r.stdout + r.stderr

    newest = restore.restore(version, cluster_factory, "newest", repo_env, "LATEST")
    assert digests(newest) == expected
    assert {db: _other_db_rows(newest, db) for db in dbs} == dbs
    assert newest.scalar("SELECT count(*) FROM scratchpad") == 0       # unlogged: reset by recovery, as in a full
    assert newest.scalar("SELECT to_regclass('doomed')") is None
    _check(newest, checksums)

    at_point = restore.restore(version, cluster_factory, "at_point", repo_env, "LATEST", "--target-time", point,
                               "--target-action", "promote")
    assert restore.ids(at_point) == list(range(1, 10))
    _check(at_point, checksums)


def _check(c: pg.Cluster, checksums: bool) -> None:
    """pg_amcheck, and pg_checksums on the stopped cluster where it has data checksums."""
    if checksums:
        restore.check_integrity(c)
        return
    if c.scalar("SELECT count(*) FROM pg_available_extensions WHERE name = 'amcheck'"):
        r = pg.run_as_postgres([c.program("pg_amcheck"), "-h", str(c.sockdir), "-p", str(c.port), "-U", "postgres",
                                "--all", "--install-missing", "--heapallindexed"], env=c.env, check=False)
        assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture
def chain(cluster_factory, scratch):
    """A full and an incremental of a cluster (PostgreSQL 17) that updated one table in between."""
    repo_env = restore.file_repo(scratch)
    c = restore.primary(cluster_factory, 17, repo_env)
    c.sql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 200000) g")
    c.sql("VACUUM (FREEZE) t")
    full = _push(c, "--full")
    c.sql("UPDATE t SET v = 'changed' WHERE id <= 100")
    incr = _push(c, "--incremental")
    c.sql("CREATE TABLE after_the_backups ()")           # WAL to switch away from: recovery replays to it
    c.wait_archived(c.switch_wal())
    return c, repo_env, full, incr


def _repo(repo_env: dict) -> Path:
    return Path(repo_env["WALSHIP_REPO"][len("file://"):])


def test_a_corrupt_block_in_the_parent_is_found_by_verify_and_refused_by_restore(chain, scratch):
    import hashlib

    from walship import pipeline
    from walship.backup.fetch import part_manifest
    from walship.storage.local import LocalStore

    c, repo_env, full, incr = chain
    relfile = c.scalar("SELECT pg_relation_filepath('t')")
    store = LocalStore(str(_repo(repo_env)))
    # the block the incremental takes from the full: the last page of t's first segment, never updated
    for number in range(64):
        key = f"backups/{full['name']}/part_{number:05d}.tar"
        if not store.exists(key):
            pytest.fail(f"{relfile} not found in the full backup")
        if any(e.path == relfile for e in part_manifest(store, full["name"], number)):
            break
    blob = store.get(key)
    meta, plain = pipeline.read([blob], key)
    tar = bytearray(b"".join(plain))
    at = tar.find(hashlib.md5(b"150000").hexdigest().encode())   # a row the incremental did not change
    assert at > 0
    tar[at] ^= 0x01                                      # one bit of t's data, the part re-packed as it was
    path = _repo(repo_env) / key
    path.write_bytes(b"".join(pipeline.write([bytes(tar)], meta["codec"], backup=full["name"], part=number)))

    r = pg.walship(["verify", incr["name"]], pg.server_env(repo_env))
    assert r.returncode != 0
    assert full["name"] in r.stdout + r.stderr and relfile in r.stdout + r.stderr, r.stdout + r.stderr

    dest = scratch / "refused"
    r = restore.fetch(dest, incr["name"], repo_env)
    assert r.returncode != 0
    assert full["name"] in r.stderr and relfile in r.stderr and "does not match" in r.stderr, r.stderr
    assert not (dest / "recovery.signal").exists()


def test_retention_keeps_what_a_kept_incremental_needs_and_a_killed_one_is_no_parent(chain, cluster_factory):
    c, repo_env, full, incr = chain
    r = pg.walship(["delete", "--retain", "1", "--pgdata", str(c.datadir)], restore.cli_env(c))
    assert r.returncode == 0, r.stderr
    assert [b["name"] for b in restore.backups(repo_env)] == [full["name"], incr["name"]]

    c.sql("CREATE TABLE big AS SELECT g, md5(g::text) || md5((-g)::text) AS pad FROM generate_series(1, 800000) g")
    env = restore.cli_env(c, WALSHIP_BACKUP_PART_SIZE=str(1 << 20))
    push = subprocess.Popen([pg.WALSHIP, "backup-push", str(c.datadir), "--incremental", "--progress", "none"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **pg.as_postgres())
    repo = _repo(repo_env)
    deadline = time.time() + 60
    while (len([p for p in repo.glob("backups/*/part_*.tar") if incr["name"] not in str(p)
                and full["name"] not in str(p)]) < 2 and push.poll() is None and time.time() < deadline):
        time.sleep(0.01)
    push.kill()
    assert push.wait() == -9, "backup-push finished before it could be killed"
    assert [b["name"] for b in restore.backups(repo_env)] == [full["name"], incr["name"]]
    nxt = _push(c, "--incremental")
    assert nxt["parent"] == incr["name"] and nxt["chain"] == [full["name"], incr["name"]]
    listing = json.loads(pg.walship(["backup-list", "--json"], repo_env).stdout)
    assert [b["chain_depth"] for b in listing] == [0, 1, 2]
    text = pg.walship(["backup-list"], repo_env).stdout.splitlines()
    assert text[0].split()[:4] == ["name", "type", "parent", "depth"]
    assert text[3].split()[:4] == [nxt["name"], "incremental", incr["name"], "2"]
    restored = restore.restore(17, cluster_factory, "restored", repo_env, "LATEST")
    assert restored.scalar("SELECT count(*) FROM big") == 800000


def test_an_encrypted_chain_on_s3_restores_and_stores_only_what_changed(cluster_factory, scratch, moto):

    repo_env = {**moto.env(moto.new_bucket()), "WALSHIP_ENCRYPTION_KEY_FILE": pg.key_file(scratch, "key"),
                "WALSHIP_COMPRESSION": "lz4"}
    c = restore.primary(cluster_factory, 18, repo_env)
    c.sql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 300000) g")
    c.sql("VACUUM (FREEZE) t")          # else the first reads after the load set hint bits on every page
    full = _push(c, WALSHIP_FULL_EVERY="3", WALSHIP_BACKUP_PART_SIZE=str(4 << 20))     # slices of t's file
    c.sql("UPDATE t SET v = 'one' WHERE id BETWEEN 1000 AND 1100")
    one = _push(c, WALSHIP_FULL_EVERY="3", WALSHIP_BACKUP_PART_SIZE=str(4 << 20))
    c.sql("UPDATE t SET v = 'two' WHERE id BETWEEN 250000 AND 250100")
    two = _push(c, WALSHIP_FULL_EVERY="3", WALSHIP_BACKUP_PART_SIZE=str(4 << 20))
    again = _push(c, WALSHIP_FULL_EVERY="3")                                          # the chain holds 3: a full
    assert [b["backup_type"] for b in (full, one, two, again)] == ["full", "incremental", "incremental", "full"]
    # a few blocks changed: what an incremental stores is those, the files stored whole, and maps that hold
    # hashes of its own blocks only (2 bytes for any other), well under the 5 % of the full
    assert one["stored_size"] < full["stored_size"] / 20 and two["stored_size"] < full["stored_size"] / 20
    c.sql("CREATE TABLE after_the_backups ()")
    c.wait_archived(c.switch_wal())
    expected = restore.digest(c, "t", "id::text || v", "id")

    restored = restore.restore(18, cluster_factory, "restored", repo_env, two["name"], "--target-immediate",
                               "--target-action", "promote")
    got = restore.digest(restored, "t", "id::text || v", "id")
    assert restored.scalar("SELECT count(*) FROM t WHERE v = 'two'") == 101
    assert restored.scalar("SELECT count(*) FROM t WHERE v = 'one'") == 101
    assert got == expected


def _standby_of(primary: pg.Cluster, cluster_factory, repo_env: dict) -> pg.Cluster:
    standby = cluster_factory(primary.version, name="standby", env=repo_env)
    pg.run_as_postgres([str(primary.bin / "pg_basebackup"), "-h", str(primary.sockdir), "-p", str(primary.port),
                        "-U", "postgres", "-D", str(standby.datadir), "-X", "stream", "-c", "fast", "-R"],
                       env=primary.env)
    standby.configure(f"port = {standby.port}\nunix_socket_directories = '{standby.sockdir}'\n")
    standby.start()
    return standby


def _caught_up(standby: pg.Cluster, primary: pg.Cluster) -> None:
    target = primary.scalar("SELECT pg_current_wal_lsn()::text")
    deadline = time.time() + 60
    while standby.scalar(f"SELECT pg_last_wal_replay_lsn() < '{target}'"):
        assert time.time() < deadline, "the standby did not catch up"
        time.sleep(0.1)


def test_incrementals_on_a_standby_and_across_its_promotion_restore_exactly(cluster_factory, scratch):
    """A failover in the middle of a chain: an incremental taken on the standby (its parent the primary's full),
    the primary lost, the standby promoted to timeline 2, and the next incremental taken there on top of the
    standby's. The newest restores to exactly what the promoted server holds."""
    from tests.conftest import require_version
    require_version(15)
    repo_env = restore.file_repo(scratch)
    primary = restore.primary(cluster_factory, 15, repo_env)
    primary.sql("CREATE TABLE kept AS SELECT g AS id, md5(g::text) AS pad FROM generate_series(1, 30000) g")
    primary.sql("CREATE TABLE churned AS SELECT g AS id, md5(g::text) AS pad FROM generate_series(1, 30000) g")
    full = _push(primary)
    standby = _standby_of(primary, cluster_factory, repo_env)

    primary.sql("UPDATE churned SET pad = 'before the failover' WHERE id % 7 = 0")
    primary.sql("CREATE TABLE grown AS SELECT g AS id, md5(g::text) AS pad FROM generate_series(1, 5000) g")
    _caught_up(standby, primary)
    on_standby = _push(standby, "--incremental", "--primary", primary.conninfo)
    assert (on_standby["backup_type"], on_standby["parent"]) == ("incremental", full["name"])

    primary.sql("UPDATE churned SET pad = 'streamed, then the primary died' WHERE id % 11 = 0")
    _caught_up(standby, primary)
    primary.kill9()                                          # the failover: the primary is gone
    standby.sql("SELECT pg_promote()")
    standby.wait_promoted()
    assert standby.scalar("SELECT pg_walfile_name(pg_current_wal_lsn())").startswith("00000002")
    standby.sql("UPDATE churned SET pad = 'timeline 2' WHERE id % 13 = 0")
    standby.sql("INSERT INTO grown SELECT g, 'timeline 2' FROM generate_series(5001, 9000) g")
    standby.sql("DELETE FROM kept WHERE id > 25000")
    standby.sql("VACUUM kept")

    after = _push(standby, "--incremental")        # at once: the checkpoint promotion asked for is still spreading
    assert after["timeline"] == 2 and after["name"].endswith(after["start_wal"]), after
    assert (after["backup_type"], after["parent"], after["chain_depth"]) == ("incremental", on_standby["name"], 2)
    assert after["stored_size"] < full["stored_size"] / 2, (after, full)
    tables = {t: ("id::text || pad", "id") for t in ("kept", "churned", "grown")}
    source = {t: restore.digest(standby, t, *spec) for t, spec in tables.items()}
    standby.wait_archived(standby.switch_wal())
    standby.stop()

    restored = restore.restore(15, cluster_factory, "restored", repo_env, after["name"])
    assert {t: restore.digest(restored, t, *spec) for t, spec in tables.items()} == source
    restore.check_integrity(restored)
