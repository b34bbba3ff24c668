"""Base backups and point-in-time recovery on real PostgreSQL servers, through the installed CLI."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import require_version
from tests.support import pg, restore
from walship.repo.layout import backup_name_of_key


def test_a_backup_killed_midway_is_never_listed_and_the_next_one_cleans_up(cluster_factory, scratch):
    require_version(15)
    repo_env = restore.file_repo(scratch)
    primary = restore.primary(cluster_factory, 15, repo_env)
    primary.sql("CREATE TABLE big AS SELECT g, md5(g::text) || md5((-g)::text) AS pad "
                "FROM generate_series(1, 1500000) g")
    env = restore.cli_env(primary, WALSHIP_BACKUP_PART_SIZE=str(4 << 20))
    push = subprocess.Popen([pg.WALSHIP, "backup-push", str(primary.datadir), "--progress", "none"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **pg.as_postgres())
    repo = Path(repo_env["WALSHIP_REPO"][len("file://"):])
    deadline = time.time() + 60
    while len(list(repo.glob("backups/*/part_*.tar"))) < 3 and push.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    push.kill()
    assert push.wait() == -9, "backup-push finished before it could be killed: make the table bigger"
    [dead] = {backup_name_of_key(k) for k in restore.repo_keys(repo_env) if k.startswith("backups/")}
    assert "locks/backups.lock" in restore.repo_keys(repo_env)
    assert restore.backups(repo_env) == []

    restore.backup_push(primary)                    # breaks the dead process's lock, removes its objects
    [backup] = restore.backups(repo_env)
    assert {backup_name_of_key(k) for k in restore.repo_keys(repo_env) if k.startswith("backups/")} == {backup["name"]}
    assert backup["name"] != dead
    assert "locks/backups.lock" not in restore.repo_keys(repo_env)


def test_retention_deletes_exactly_the_older_backups_and_the_wal_only_they_need(cluster_factory, scratch):
    require_version(15)
    from walship import pipeline
    from walship.storage.local import LocalStore

    repo_env = restore.file_repo(scratch)
    primary = restore.primary(cluster_factory, 15, repo_env)
    primary.sql("CREATE TABLE t (id int)")
    for i in range(3):
        primary.sql(f"INSERT INTO t SELECT g FROM generate_series({i * 1000 + 1}, {i * 1000 + 1000}) g")
        primary.wait_archived(primary.switch_wal())
        restore.backup_push(primary)
    primary.sql("INSERT INTO t SELECT g FROM generate_series(3001, 4000) g")
    primary.wait_archived(primary.switch_wal())
    expected_rows = primary.scalar("SELECT count(*) FROM t")
    history = "wal/00000002.history"            # as a promoted standby would have archived it
    repo = repo_env["WALSHIP_REPO"][len("file://"):]
    LocalStore(repo).put(history, pipeline.pack(b"1\t0/3000000\tno reason\n", "none"))
    pg.chown_postgres(f"{repo}/{history}")
    old1, old2, kept = restore.backups(repo_env)
    before = restore.repo_keys(repo_env)

    r = pg.walship(["delete", "--retain", "1", "--dry-run"], repo_env)
    assert r.returncode == 0, r.stderr
    assert f"would delete backup {old1['name']}" in r.stdout and f"would delete backup {old2['name']}" in r.stdout
    assert kept["name"] not in r.stdout
    assert restore.repo_keys(repo_env) == before

    r = pg.walship(["delete", "--retain", "1"], repo_env)
    assert r.returncode == 0, r.stderr
    boundary = kept["start_wal"][8:24]
    expected = {k for k in before
                if backup_name_of_key(k) not in (old1["name"], old2["name"])
                and not (k.startswith("wal/") and k != history and k[len("wal/"):][8:24] < boundary)}
    assert restore.repo_keys(repo_env) == expected
    assert history in expected and f"wal/{kept['start_wal']}" in expected
    assert any(k.startswith("wal/") and k[12:28] < boundary for k in before), "the test deleted no WAL"
    assert [b["name"] for b in restore.backups(repo_env)] == [kept["name"]]

    primary.stop()
    # timeline 2 (the history file above) never existed here: stay on the backup's timeline
    restored = restore.restore(15, cluster_factory, "restored", repo_env, "LATEST", "--target-timeline", "current")
    assert restored.scalar("SELECT count(*) FROM t") == expected_rows


def _one_line_error(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode != 0
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr, r.stderr
    for word in words:
        assert word in r.stderr, r.stderr


def test_expected_failures_are_one_line_errors(scratch):
    repo_env = restore.file_repo(scratch)
    env = pg.server_env(repo_env)
    _one_line_error(pg.walship(["backup-fetch", str(scratch / "dest"), "nope"], env), "no complete backup named nope")
    full = pg.make_dir(scratch, "full")
    (full / "PG_VERSION").write_text("15\n")
    _one_line_error(pg.walship(["backup-fetch", str(full), "LATEST"], env), "is not empty")
    (full / "postmaster.pid").write_text("1\n")
    _one_line_error(pg.walship(["backup-fetch", str(full), "LATEST"], env), "postmaster.pid")
    _one_line_error(pg.walship(["backup-push", str(scratch)], env), "not a PostgreSQL data directory")
    (full / "global").mkdir()
    _one_line_error(pg.walship(["backup-push", str(full)], {**env, "PGHOST": str(scratch), "PGPORT": "1"}),
                    "cannot connect to PostgreSQL")


def test_a_tablespace_is_restored_where_the_operator_asks_and_push_retain_expires_the_older_backup(
        cluster_factory, scratch):
    require_version(16)
    repo_env = restore.file_repo(scratch)
    primary = restore.primary(cluster_factory, 16, repo_env)
    location = pg.make_dir(scratch, "ts")
    primary.sql(f"CREATE TABLESPACE ts LOCATION '{location}'")
    primary.sql("CREATE TABLE far (id int) TABLESPACE ts")
    primary.sql("INSERT INTO far SELECT generate_series(1, 1000)")
    oid = str(primary.scalar("SELECT oid FROM pg_tablespace WHERE spcname = 'ts'"))
    restore.backup_push(primary)
    [first] = restore.backups(repo_env)
    primary.sql("INSERT INTO far SELECT generate_series(1001, 1500)")
    restore.backup_push(primary, "--retain", "1")
    [second] = restore.backups(repo_env)
    assert second["name"] != first["name"]
    primary.sql("INSERT INTO far SELECT generate_series(1501, 2000)")
    primary.wait_archived(primary.switch_wal())
    primary.stop()

    moved = scratch / "ts_restored"
    # run as root, backup-fetch gives the tablespace's files too to the owner of the data directory's parent
    restored = restore.restore(16, cluster_factory, "restored", repo_env, "LATEST", "--tablespace", f"{oid}={moved}",
                        as_root=True)
    assert {p.stat().st_uid for p in [moved, *moved.rglob("*")]} == {scratch.stat().st_uid}
    assert restored.scalar("SELECT count(*) FROM far") == 2000
    assert (restored.datadir / "pg_tblspc" / oid).resolve() == moved
    assert restored.scalar("SELECT pg_tablespace_location(%s::oid)", (oid,)) == str(moved)
    relation = restored.scalar("SELECT pg_relation_filepath('far')")
    assert (moved / relation.split("/", 2)[2]).exists()


@pytest.mark.parametrize("switch", ["--primary", "archive_timeout"])
def test_a_backup_taken_on_a_standby_restores_what_the_primary_committed(switch, cluster_factory, scratch):
    require_version(15)
    repo_env = restore.file_repo(scratch)
    primary = restore.primary(cluster_factory, 15, repo_env)
    primary.sql("CREATE TABLE t (id int PRIMARY KEY, pad text)")
    primary.sql("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
    standby = cluster_factory(15, name="standby", env=repo_env)
    pg.run_as_postgres([str(primary.bin / "pg_basebackup"), "-h", str(primary.sockdir), "-p", str(primary.port),
                        "-U", "postgres", "-D", str(standby.datadir), "-X", "stream", "-c", "fast", "-R"],
                       env=primary.env)
    standby.configure(f"port = {standby.port}\nunix_socket_directories = '{standby.sockdir}'\n")
    standby.start()
    primary.sql("INSERT INTO t SELECT g, 'streamed' FROM generate_series(20001, 30000) g")
    deadline = time.time() + 60
    while standby.scalar("SELECT count(*) FROM t") != 30000:
        assert time.time() < deadline, "the standby did not catch up"
        time.sleep(0.2)

    if switch == "--primary":
        # --primary only makes sense on a standby
        r = pg.walship(["backup-push", str(primary.datadir), "--progress", "none", "--primary", primary.conninfo],
                       restore.cli_env(primary))
        assert r.returncode != 0 and "--primary is for backups taken on a standby" in r.stderr
        # the primary switches segments at walship's request: the backup's last segment is archived at once
        r = pg.walship(["backup-push", str(standby.datadir), "--progress", "none", "--primary", primary.conninfo],
                       restore.cli_env(standby), timeout=300)
    else:
        # without --primary walship waits until the primary completes the segment on its own
        primary.sql("ALTER SYSTEM SET archive_timeout = '1s'")
        primary.sql("SELECT pg_reload_conf()")
        push = subprocess.Popen([pg.WALSHIP, "backup-push", str(standby.datadir), "--progress", "none"],
                                env=restore.cli_env(standby), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                **pg.as_postgres())
        n = 100000
        while push.poll() is None:                 # a primary at work: archive_timeout switches segments
            primary.sql(f"INSERT INTO t VALUES ({n}, 'during')")
            n += 1
            time.sleep(0.1)
        r = subprocess.CompletedProcess(push.args, push.returncode, *push.communicate())
    assert r.returncode == 0, r.stderr
    [backup] = restore.backups(repo_env)
    primary.sql("INSERT INTO t SELECT g, 'after' FROM generate_series(30001, 31000) g")
    source = restore.digest(primary, "t", "id::text || pad", "id")
    primary.wait_archived(primary.switch_wal())
    standby.stop()
    primary.kill9()

    restored = restore.restore(15, cluster_factory, "from_standby", repo_env, "LATEST")
    assert "BACKUP FROM: standby" in (restored.datadir / "backup_label.old").read_text()
    assert restore.digest(restored, "t", "id::text || pad", "id") == source
    assert backup["name"].startswith("base_")
    restore.check_integrity(restored)
