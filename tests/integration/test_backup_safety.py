"""backup-push refuses what could never be restored, quickly, and says so: WAL that cannot reach the
repository, another cluster's repository; and it reports the corrupt pages it had to store."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import require_version
from tests.support import pg, restore

FAIL_FAST_S = 30.0
LOCK_KEY = "locks/backups.lock"


def _push(cluster: pg.Cluster, timeout: float = 300, **env) -> tuple[subprocess.CompletedProcess, float]:
    began = time.monotonic()
    r = pg.walship(["backup-push", str(cluster.datadir), "--progress", "none"], restore.cli_env(cluster, **env),
                   timeout=timeout)
    return r, time.monotonic() - began


def _one_line(r: subprocess.CompletedProcess, *words: str) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _assert_nothing_left(repo_env: dict) -> None:
    """No lock (a delete, which takes the same lock, works at once) and no listed backup."""
    assert LOCK_KEY not in restore.repo_keys(repo_env)
    began = time.monotonic()
    r = pg.walship(["delete", "--retain", "1", "--dry-run"], repo_env, timeout=60)
    assert r.returncode == 0 and time.monotonic() - began < 10, r.stderr
    r = pg.walship(["delete", "--retain", "1"], repo_env, timeout=60)      # this one takes the lock
    assert r.returncode == 0, r.stderr
    assert restore.backups(repo_env) == []
    assert not [k for k in restore.repo_keys(repo_env) if k.startswith("backups/")]


@pytest.mark.serial
def test_a_failing_archive_command_fails_the_backup_in_seconds_before_it_reads_a_file(cluster_factory, scratch):
    require_version(15)
    repo_env = restore.file_repo(scratch)
    c = cluster_factory(15, env=repo_env)
    c.initdb()
    c.set_archiving(command="false")
    c.start()
    c.sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 10000) g")

    r, took = _push(c, timeout=120)
    assert r.returncode == 1 and took < FAIL_FAST_S, (took, r.stderr)
    line = _one_line(r, "did not reach", "archive_command is failing", "pg_stat_archiver", "fix archive_command")
    assert "nothing was read" in line
    _assert_nothing_left(repo_env)


@pytest.mark.serial
def test_archive_mode_off_fails_the_backup_at_once_naming_the_setting(cluster_factory, scratch):
    require_version(15)
    repo_env = restore.file_repo(scratch)
    c = cluster_factory(15, env=repo_env)
    c.initdb()                                     # archive_mode stays off
    c.start()

    r, took = _push(c, timeout=120)
    assert r.returncode == 1 and took < FAIL_FAST_S, (took, r.stderr)
    _one_line(r, "archive_mode is off", "set archive_mode = on", "restart PostgreSQL")
    _assert_nothing_left(repo_env)


def test_archiving_that_breaks_during_the_backup_fails_it_at_the_stop_segment(cluster_factory, scratch):
    require_version(15)
    repo_env = restore.file_repo(scratch)
    broken = scratch / "archiving-broken"
    c = cluster_factory(15, env=repo_env)
    c.initdb()
    c.set_archiving(command=f"test ! -e {broken} && {pg.WALSHIP} wal-push %p")
    c.start()
    c.sql("CREATE TABLE big AS SELECT g, md5(g::text) || md5((-g)::text) AS pad "
          "FROM generate_series(1, 1500000) g")
    env = restore.cli_env(c, WALSHIP_BACKUP_PART_SIZE=str(4 << 20), WALSHIP_BACKUP_CONCURRENCY="1")
    push = subprocess.Popen([pg.WALSHIP, "backup-push", str(c.datadir), "--progress", "none"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **pg.as_postgres())
    repo = Path(repo_env["WALSHIP_REPO"][len("file://"):])
    deadline = time.time() + 120
    while not list(repo.glob("backups/*/part_*.tar")) and push.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    broken.touch()                                 # archive_command fails from now on
    broke = time.monotonic()
    assert push.poll() is None, "the backup finished before archiving broke: make the table bigger"
    try:
        _, stderr = push.communicate(timeout=240)
    finally:
        push.kill()
    # reading the rest takes seconds; then the archiver fails a few times and walship gives up
    assert push.returncode == 1 and time.monotonic() - broke < 90, stderr
    lines = stderr.strip().splitlines()
    error = lines[-1]
    assert "which ends the backup" not in error and "archive_command is failing" in error, stderr
    assert "the backup is not marked complete" in error and "fix archive_command" in error
    assert all("still waiting" in line for line in lines[:-1]), stderr   # the wait shows what PostgreSQL says
    broken.unlink()
    _assert_nothing_left(repo_env)


def test_a_corrupt_page_is_reported_stored_and_the_backup_still_taken(cluster_factory, scratch):
    require_version(15)
    repo_env = restore.file_repo(scratch)
    c = restore.primary(cluster_factory, 15, repo_env)    # initdb --data-checksums
    c.sql("CREATE TABLE t (id int, pad text)")
    c.sql("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 5000) g")   # ~40 pages
    c.sql("CHECKPOINT")
    relation = c.scalar("SELECT pg_relation_filepath('t')")
    c.stop()
    path = c.datadir / relation
    with open(path, "r+b") as fh:                  # flip bytes in the middle of block 3
        fh.seek(3 * 8192 + 4000)
        data = fh.read(4)
        fh.seek(3 * 8192 + 4000)
        fh.write(bytes(b ^ 0xFF for b in data))
    c.start()

    r, _ = _push(c)
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if "page checksum mismatch" in line]
    assert len(warnings) == 1 and f"{relation}: block 3 " in warnings[0], r.stderr
    [backup] = restore.backups(repo_env)
    assert backup["page_checksum_failures"] == 1

    r = pg.walship(["status"], c.env_for_tools())
    assert r.returncode == 0 and "WARNING: 1 pages with a wrong checksum" in r.stdout, r.stdout + r.stderr
    r = pg.walship(["check", "backup", "--warning", "26h", "--critical", "50h"], c.env_for_tools())
    assert r.returncode == 1 and r.stdout.startswith("WARNING") and "1 page with a wrong checksum" in r.stdout, \
        r.stdout
    r = pg.walship(["verify", backup["name"]], c.env_for_tools())
    assert r.returncode == 0 and "1 pages had a wrong checksum" in r.stdout, r.stdout + r.stderr


def test_a_clean_cluster_verifies_every_page_and_reports_none(cluster_factory, scratch):
    require_version(15)
    repo_env = restore.file_repo(scratch)
    c = restore.primary(cluster_factory, 15, repo_env)
    pg.run_as_postgres([str(c.bin / "pgbench"), "-i", "-s", "2", "-q"], env=c.env_for_tools())
    # 4 MiB parts: pgbench_accounts is sliced at offsets that are no multiple of a page
    r, _ = _push(c, WALSHIP_BACKUP_PART_SIZE=str(4 << 20))
    assert r.returncode == 0 and "page checksum" not in r.stderr, r.stderr
    [backup] = restore.backups(repo_env)
    assert backup["page_checksum_failures"] == 0
    r = pg.walship(["check", "backup"], c.env_for_tools())
    assert r.returncode == 0 and r.stdout.startswith("OK"), r.stdout


def test_a_second_cluster_is_refused_the_first_ones_repository_with_nothing_written(cluster_factory, scratch):
    require_version(15)
    repo_env = restore.file_repo(scratch)
    first = restore.primary(cluster_factory, 15, repo_env)
    r, _ = _push(first)
    assert r.returncode == 0, r.stderr
    before = restore.repo_keys(repo_env)
    second = cluster_factory(15, name="second", env=repo_env)
    second.initdb()                                # its own system identifier; it archives nowhere
    second.start()

    r, _ = _push(second)
    assert r.returncode == 4, r.stderr
    ids = [cl.scalar("SELECT system_identifier::text FROM pg_control_system()") for cl in (first, second)]
    _one_line(r, *ids, "backup-push wrote nothing")
    assert restore.repo_keys(repo_env) == before
    assert len(restore.backups(repo_env)) == 1
