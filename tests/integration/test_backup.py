"""Base backups and point-in-time recovery on real PostgreSQL servers, through the installed CLI."""

from __future__ import annotations

import datetime
import json
import subprocess
import time

import pytest

from tests.conftest import require_version
from tests.support import pg

STAMPED = "CREATE TABLE stamped (id int PRIMARY KEY, committed_at timestamptz NOT NULL)"
TABLE_DIGEST = "SELECT count(*), md5(coalesce(string_agg({cols}, ',' ORDER BY {key}), '')) FROM {table}"


def _file_repo(scratch) -> dict:
    return {"WALSHIP_REPO": f"file://{pg.make_dir(scratch, 'repo', 0o755)}"}


def _primary(cluster_factory, version: int, repo_env: dict) -> pg.Cluster:
    c = cluster_factory(version, env=repo_env)
    c.initdb()
    c.set_archiving()
    c.start()
    return c


def _cli_env(cluster: pg.Cluster, **extra) -> dict:
    """The environment of backup commands run on the database host (as postgres)."""
    return {**cluster.env_for_tools(), "WALSHIP_BACKUP_CONCURRENCY": "2", **extra}


def _backup_push(cluster: pg.Cluster, *flags: str, **env) -> None:
    r = pg.walship(["backup-push", str(cluster.datadir), "--progress", "none", *flags], _cli_env(cluster, **env))
    assert r.returncode == 0, r.stderr


def _backups(env: dict) -> list[dict]:
    r = pg.walship(["backup-list", "--json"], env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _stamp_rows(cluster: pg.Cluster, first: int, count: int) -> list[tuple[int, datetime.datetime]]:
    """One row per transaction, 50 ms apart; (id, the clock just before its commit)."""
    rows = []
    with cluster.connect() as conn:
        for i in range(first, first + count):
            at = conn.execute("INSERT INTO stamped VALUES (%s, clock_timestamp()) RETURNING committed_at",
                              (i,)).fetchone()[0]
            rows.append((i, at))
            time.sleep(0.05)
    return rows


def _restore(version: int, cluster_factory, name: str, repo_env: dict, backup: str, *flags: str) -> pg.Cluster:
    restored = cluster_factory(version, name=name, env=repo_env)
    r = pg.walship(["backup-fetch", str(restored.datadir), backup, "--progress", "none", *flags],
                   pg.server_env(repo_env))
    assert r.returncode == 0, r.stderr
    assert (restored.datadir / "recovery.signal").exists()
    assert oct(restored.datadir.stat().st_mode & 0o777) == "0o700"
    restored.configure(f"port = {restored.port}\nunix_socket_directories = '{restored.sockdir}'\n"
                       "archive_mode = off\n")
    restored.start()
    _wait_promoted(restored)
    return restored


def _wait_promoted(c: pg.Cluster, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if c.scalar("SELECT pg_is_in_recovery()") is False:
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise TimeoutError(c.log_tail())


def _digest(c: pg.Cluster, table: str, cols: str, key: str) -> tuple:
    return tuple(c.sql(TABLE_DIGEST.format(table=table, cols=cols, key=key))[0])


def _check_integrity(c: pg.Cluster) -> None:
    """pg_amcheck where the server ships amcheck (the pgserver wheel of 16 does not), pg_checksums when stopped."""
    if c.scalar("SELECT count(*) FROM pg_available_extensions WHERE name = 'amcheck'"):
        r = pg.run_as_postgres([str(c.bin / "pg_amcheck"), "-h", str(c.sockdir), "-p", str(c.port), "-U", "postgres",
                                "--all", "--install-missing", "--heapallindexed"], env=c.env, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
    c.stop()
    r = pg.run_as_postgres([str(c.bin / "pg_checksums"), "--check", "-D", str(c.datadir)], env=c.env, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


# the file repository on every version, S3 (moto) on one: the S3 path is the same on all
@pytest.mark.parametrize("pg_version,repo_kind", [(15, "file"), (16, "file"), (18, "s3")])
def test_point_in_time_recovery_is_exact_and_latest_has_every_row(pg_version, repo_kind, cluster_factory,
                                                                   scratch, moto):
    require_version(pg_version)
    repo_env = _file_repo(scratch) if repo_kind == "file" else moto.env(moto.new_bucket())
    primary = _primary(cluster_factory, pg_version, repo_env)
    primary.sql(STAMPED)
    pg.run_as_postgres([str(primary.bin / "pgbench"), "-i", "-s", "2", "-q"], env=primary.env_for_tools())
    before = _stamp_rows(primary, 1, 5)
    bench = subprocess.Popen([str(primary.bin / "pgbench"), "-c", "2", "-T", "6", "-n"], env=primary.env_for_tools(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **pg.as_postgres())
    try:
        _backup_push(primary)
        after = _stamp_rows(primary, 100, 12)
    finally:
        bench.wait(timeout=60)
    assert bench.returncode == 0
    source_accounts = _digest(primary, "pgbench_accounts", "aid::text || abalance::text", "aid")
    source_stamped = _digest(primary, "stamped", "id::text || committed_at::text", "id")
    primary.wait_archived(primary.switch_wal())
    primary.kill9()

    [backup] = _backups(repo_env)
    assert backup["pg_version"] // 10000 == pg_version and backup["stored_size"] > 0

    # a target strictly between two commits 50 ms apart: the first is in, the second out
    cut = 6
    target = after[cut][1] + (after[cut + 1][1] - after[cut][1]) / 2
    at_target = _restore(pg_version, cluster_factory, "at_target", repo_env, "LATEST",
                         "--target-time", target.isoformat(), "--target-action", "promote")
    got = [r[0] for r in at_target.sql("SELECT id FROM stamped ORDER BY id")]
    assert got == [i for i, _ in before + after[:cut + 1]]
    at_target.stop()

    latest = _restore(pg_version, cluster_factory, "latest", repo_env, backup["name"])
    assert _digest(latest, "stamped", "id::text || committed_at::text", "id") == source_stamped
    assert _digest(latest, "pgbench_accounts", "aid::text || abalance::text", "aid") == source_accounts
    _check_integrity(latest)
