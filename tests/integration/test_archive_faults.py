"""Faults while archiving: a killed wal-push and an unreachable store lose nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.support import pg
from tests.support.s3 import SwitchableProxy
from tests.support.walfiles import with_header
from walship import pipeline
from walship.config import Settings
from walship.storage import open_store


def _segments(scratch, count: int) -> tuple[str, list[str]]:
    """A pg_wal-like directory with `count` .ready segments of compressible-but-not-trivial data."""
    wal = pg.make_dir(scratch, "pg_wal", 0o755)
    pg.make_dir(wal, "archive_status", 0o755)
    names = [f"0000000100000000000000{i:02X}" for i in range(1, count + 1)]
    for n in names:
        block = os.urandom(4 << 20) + bytes(12 << 20)
        (wal / n).write_bytes(with_header(n, block))
        (wal / "archive_status" / f"{n}.ready").touch()
    for p in list(wal.rglob("*")) + [wal]:
        pg.chown_postgres(p)
    return str(wal), names


def _store(env: dict):
    s = Settings(repo=env["WALSHIP_REPO"], s3_endpoint=env.get("WALSHIP_S3_ENDPOINT"),
                 s3_access_key_id=env.get("AWS_ACCESS_KEY_ID"), s3_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
                 s3_region=env.get("AWS_REGION"))
    return open_store(s.repo, s)


@pytest.mark.parametrize("delay", [0.15, 0.3, 0.6])
def test_wal_push_killed_mid_upload_leaves_only_complete_objects(repo_env, scratch, delay):
    wal, names = _segments(scratch, 8)
    env = pg.server_env({**repo_env, "WALSHIP_PUSH_BATCH": "8", "WALSHIP_PUSH_CONCURRENCY": "2"})
    proc = subprocess.Popen([pg.WALSHIP, "wal-push", f"{wal}/{names[0]}"], env=env, cwd="/tmp",
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **pg.as_postgres())
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    store = _store(repo_env)
    # whatever made it is complete and exact; what did not is simply absent
    for obj in store.list("wal/"):
        name = obj.key[4:]
        assert pipeline.unpack(store.get(obj.key), name) == open(f"{wal}/{name}", "rb").read()
    # PostgreSQL would call again for every segment: each call succeeds, the archive is whole
    for n in names:
        r = pg.walship(["wal-push", f"{wal}/{n}"], env)
        assert r.returncode == 0, r.stderr
    assert sorted(o.key[4:] for o in store.list("wal/")) == names


def _archiving_through_a_proxy(cluster_factory, moto):
    """A PG15 primary archiving to S3 through a proxy that can cut the store off; short retries."""
    bucket = moto.new_bucket()
    proxy = SwitchableProxy(moto.port)
    env = {**moto.env(bucket, endpoint=proxy.endpoint), "WALSHIP_S3_MAX_RETRIES": "1",
           "WALSHIP_S3_RETRY_TIMEOUT": "2", "WALSHIP_S3_CONNECT_TIMEOUT": "2"}
    c = cluster_factory(15, env=env)
    c.initdb()
    c.set_archiving()
    c.start()
    return bucket, proxy, c


def test_store_outage_fails_archiving_then_it_catches_up_without_gaps(cluster_factory, scratch, moto):
    bucket, proxy, c = _archiving_through_a_proxy(cluster_factory, moto)
    c.sql("CREATE TABLE t (id int, pad text)")
    first = c.switch_wal()
    c.wait_archived(first)

    proxy.down()
    try:
        during = []
        for _ in range(4):
            c.sql("INSERT INTO t SELECT g, repeat('x', 300) FROM generate_series(1, 20000) g")
            during.append(c.switch_wal())
        deadline = time.time() + 60
        while c.scalar("SELECT failed_count FROM pg_stat_archiver") < 2 and time.time() < deadline:
            time.sleep(0.2)
        assert c.scalar("SELECT failed_count FROM pg_stat_archiver") >= 2
        ready = list((c.datadir / "pg_wal" / "archive_status").glob("*.ready"))
        assert len(ready) >= 3, "segments must wait in pg_wal while the store is down"
        archived = {k.rsplit("/", 1)[1] for k in moto.keys(bucket, "pg/wal/")}
        assert not set(during) & archived
        log = c.logfile.read_text()
        assert "cannot reach S3" in log or "the connection to S3 at" in log
    finally:
        proxy.up()
    c.wait_archived(during[-1], timeout=120)
    archived = sorted(k.rsplit("/", 1)[1] for k in moto.keys(bucket, "pg/wal/") if len(k.rsplit("/", 1)[1]) == 24)
    # contiguous from the first archived segment to the last switched one
    from walship.pg.walnames import Segment
    numbers = [Segment.parse(n).number for n in archived]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    assert archived[-1] >= during[-1]
    proxy.close()


def test_a_60_second_outage_under_pgbench_load_loses_no_segment(cluster_factory, scratch, moto):
    bucket, proxy, c = _archiving_through_a_proxy(cluster_factory, moto)
    tools = c.env_for_tools()
    pg.run_as_postgres([str(c.bin / "pgbench"), "-i", "-s", "2", "-q"], env=tools)
    r = pg.walship(["backup-push", str(c.datadir), "--progress", "none"], tools)
    assert r.returncode == 0, r.stderr

    # the load runs through the whole outage and a little past it (PostgreSQL's archiver backs off for 60 s after
    # three failures: an outage that long is the one that tests the catching up)
    load = subprocess.Popen([str(c.bin / "pgbench"), "-c", "2", "-T", "64", "-n"], env=tools, cwd="/tmp",
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **pg.as_postgres())
    time.sleep(2)
    proxy.down()
    time.sleep(60)
    failed_during_outage = c.scalar("SELECT failed_count FROM pg_stat_archiver")
    waiting = len(list((c.datadir / "pg_wal" / "archive_status").glob("*.ready")))
    proxy.up()
    load.wait(timeout=120)
    assert load.returncode == 0
    assert failed_during_outage > 0 and waiting > 0
    c.wait_archived(c.switch_wal(), timeout=300)

    r = pg.walship(["verify"], tools)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "WAL: OK" in r.stdout and "verify: the repository is restorable" in r.stdout
    proxy.close()
