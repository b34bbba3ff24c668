"""Base backups through a faulty S3: a backup completes or is never listed; a restore never looks complete."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import pg
from tests.support.faultproxy import FaultProxy


def _env(moto, bucket, proxy, c: pg.Cluster) -> dict:
    return {**c.env_for_tools(), **moto.env(bucket, endpoint=proxy.endpoint), "WALSHIP_S3_MAX_RETRIES": "3",
            "WALSHIP_S3_RETRY_TIMEOUT": "10", "WALSHIP_S3_REQUEST_TIMEOUT": "5",
            "WALSHIP_BACKUP_PART_SIZE": str(4 << 20), "WALSHIP_FETCH_PREFETCH": "0"}


def _listed(env: dict) -> list[str]:
    r = pg.walship(["backup-list", "--json"], env)
    assert r.returncode == 0, r.stderr
    return [b["name"] for b in json.loads(r.stdout)]


def test_backup_push_and_fetch_under_s3_faults(cluster_factory, scratch, moto):
    bucket = moto.new_bucket()
    proxy = FaultProxy(moto.port)
    c = cluster_factory(15)
    c.initdb()
    env = _env(moto, bucket, proxy, c)
    c.process_env.update({k: v for k, v in env.items() if k.startswith(("WALSHIP_", "AWS_"))})
    c.set_archiving()
    c.start()
    c.sql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 200000) g")

    # throttling and server errors on the parts are retried: the backup completes
    proxy.add("PUT", r"/backups/.*part_0000[01]\.tar", "503", times=2)
    proxy.add("PUT", r"/backups/.*part_00002\.tar", "500", times=1)
    r = pg.walship(["backup-push", str(c.datadir), "--progress", "none"], env)
    assert r.returncode == 0, r.stderr
    assert len(proxy.fired) == 3 and len(_listed(env)) == 1

    # a part the store keeps refusing: the backup fails and is never listed
    proxy.clear()
    proxy.add("PUT", r"/backups/.*part_00001\.tar", "500", times=-1)
    r = pg.walship(["backup-push", str(c.datadir), "--progress", "none"], env)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert len(_listed(env)) == 1
    proxy.clear()

    # a restore whose part downloads keep breaking fails, reports it, and does not look complete
    for fault in ("truncate", "reset"):
        proxy.clear()
        proxy.add("GET", r"/backups/.*part_00001\.tar", fault, times=-1)
        dest = scratch / f"restore-{fault}"
        r = pg.walship(["backup-fetch", str(dest), "LATEST", "--progress", "none"], env)
        assert r.returncode in (3, 4), r.stderr
        assert "part_00001.tar" in r.stderr or "S3" in r.stderr
        assert not (dest / "recovery.signal").exists()
    proxy.clear()

    # and with the store healthy again the same backup restores
    dest = scratch / "restore-ok"
    r = pg.walship(["backup-fetch", str(dest), "LATEST", "--progress", "none"], env)
    assert r.returncode == 0, r.stderr
    assert (dest / "recovery.signal").exists()
    proxy.close()


class _SmallDisk:
    """A tmpfs of a few MiB mounted for the test (the test runs as root, as CI does)."""

    def __init__(self, path, mib: int):
        self.path = path
        path.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m,mode=0777", "tmpfs", str(path)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")

    def __enter__(self):
        return self.path

    def __exit__(self, *exc):
        subprocess.run(["umount", "-l", str(self.path)], check=True)


def _one_line_error(r: subprocess.CompletedProcess, words: str) -> None:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if "ERROR" in line]
    assert errors and words in errors[0], r.stderr


def _archive_into(c: pg.Cluster, repo: str) -> None:
    """archive_command writes into repo from now on: a segment switched after the reload is there."""
    c.sql(f"ALTER SYSTEM SET archive_command = 'WALSHIP_REPO={repo} {pg.WALSHIP} wal-push %p'")
    c.sql("SELECT pg_reload_conf()")
    root = Path(repo[len("file://"):])
    deadline = time.time() + 60
    while True:
        c.sql("SELECT pg_logical_emit_message(false, 'test', 'new segment')")   # never a no-op switch
        segment = c.switch_wal()
        while time.time() < deadline and not (root / "wal" / segment).exists() and \
                c.scalar("SELECT last_archived_wal FROM pg_stat_archiver") != segment:
            time.sleep(0.1)
        if (root / "wal" / segment).exists():
            return
        assert time.time() < deadline, f"archive_command does not write into {repo}: {c.log_tail()}"


def test_full_disks_fail_in_one_line_and_lose_nothing(cluster_factory, scratch):
    c = cluster_factory(15)
    c.initdb()
    repo = pg.make_dir(scratch, "repo", 0o755)
    env = {**c.env_for_tools(), "WALSHIP_REPO": f"file://{repo}", "WALSHIP_BACKUP_PART_SIZE": str(4 << 20)}
    c.process_env["WALSHIP_REPO"] = env["WALSHIP_REPO"]
    c.set_archiving()
    c.start()
    c.sql("CREATE TABLE t AS SELECT g AS id, md5(g::text) || md5((-g)::text) AS v "
          "FROM generate_series(1, 300000) g")         # ~36 MB: sliced across 4 MiB parts
    rows = c.scalar("SELECT count(*) FROM t")

    # the repository's disk is full: the backup fails in one line and is never listed
    with _SmallDisk(scratch / "small-repo", 6) as small:
        pg.chown_postgres(small)
        full = {**env, "WALSHIP_REPO": f"file://{small}"}
        _archive_into(c, full["WALSHIP_REPO"])     # backup-push first checks that WAL reaches it
        r = pg.walship(["backup-push", str(c.datadir), "--progress", "none"], full)
        _one_line_error(r, "no space left on the repository filesystem")
        listed = pg.walship(["backup-list", "--json"], full)
        assert listed.returncode == 0 and json.loads(listed.stdout) == []
        _archive_into(c, env["WALSHIP_REPO"])

    r = pg.walship(["backup-push", str(c.datadir), "--progress", "none"], env)
    assert r.returncode == 0, r.stderr

    # the restore's disk is full: one line, and the backup stays restorable elsewhere
    with _SmallDisk(scratch / "small-dest", 16) as small:
        r = pg.walship(["backup-fetch", str(small / "pgdata"), "LATEST", "--progress", "none"], env)
        _one_line_error(r, "no space left on the device")
        assert not (small / "pgdata" / "recovery.signal").exists()

    restored = cluster_factory(15, name="restored", env={"WALSHIP_REPO": env["WALSHIP_REPO"]})
    r = pg.walship(["backup-fetch", str(restored.datadir), "LATEST", "--progress", "none"],
                   pg.server_env({"WALSHIP_REPO": env["WALSHIP_REPO"]}))
    assert r.returncode == 0, r.stderr
    restored.configure(f"port = {restored.port}\nunix_socket_directories = '{restored.sockdir}'\narchive_mode = off\n")
    restored.start()
    restored.wait_promoted()
    assert restored.scalar("SELECT count(*) FROM t") == rows
