"""wal-receive when what it writes to fails: S3 unreachable for a while, the spool's disk full."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.support import pg, recovery
from tests.support.receive import NumberedCommits, Receiver, make_synchronous, wait_stored
from tests.support.s3 import SwitchableProxy

pytestmark = pytest.mark.integration


def test_s3_unreachable_for_a_while_commits_wait_then_catch_up_and_nothing_acknowledged_is_lost(
        cluster_factory, scratch, moto):
    bucket = moto.new_bucket()
    proxy = SwitchableProxy(moto.port)
    # a request cut off silently (the proxy's close does not always reach the client) fails after 3 s, not 300
    repo_env = {**moto.env(bucket, endpoint=proxy.endpoint), "WALSHIP_S3_MAX_RETRIES": "1",
                "WALSHIP_S3_RETRY_TIMEOUT": "2", "WALSHIP_S3_CONNECT_TIMEOUT": "2", "WALSHIP_S3_REQUEST_TIMEOUT": "3"}
    primary = cluster_factory(15, env=repo_env)
    primary.initdb()
    primary.start()                 # no archive_command: after the base backup, only wal-receive stores WAL
    primary.sql("CREATE TABLE commits (id bigint PRIMARY KEY)")
    restored = recovery.from_pg_basebackup(primary, cluster_factory, scratch, repo_env)
    receiver = Receiver(primary, repo_env, pg.make_dir(scratch, "spool"), "--synchronous").start()
    receiver.wait_streaming()
    make_synchronous(primary)
    client = NumberedCommits(primary).start()
    client.wait_for(100)

    proxy.down()
    try:
        deadline = time.time() + 30
        while "WAL stays in the spool" not in receiver.log():    # the store under way has failed by now
            assert time.time() < deadline, receiver.log()
            time.sleep(0.2)
        before = len(client.acknowledged)
        time.sleep(5)
        assert len(client.acknowledged) == before, "commits were acknowledged while S3 could store nothing"
    finally:
        proxy.up()
    client.wait_for(before + 200, timeout=90)     # the receiver retried on its own and commits go on
    receiver.kill9()                # only what it stored counts now
    time.sleep(1)
    primary.kill9()
    client.thread.join(30)

    # the restore reads the bucket through the same proxy, up again
    restored.start(wait=False)
    restored.wait_promoted()
    assert "restored (received partial)" in restored.logfile.read_text(errors="replace")
    rows = {row[0] for row in restored.sql("SELECT id FROM commits")}
    proxy.close()
    acknowledged = {number for number, _at in client.acknowledged}
    print(f"S3 unreachable 8 s: {len(acknowledged)} commits acknowledged, {len(acknowledged - rows)} lost")
    assert acknowledged <= rows, f"acknowledged commits lost: {sorted(acknowledged - rows)[:10]}"
    assert max(acknowledged) >= before + 200         # commits went on after S3 came back


@pytest.fixture
def small_disk(scratch):
    """A 40 MiB tmpfs for the spool: two segments and a half (needs root to mount)."""
    if os.getuid() != 0:
        pytest.skip("mounting a small file system needs root")
    path = pg.make_dir(scratch, "small-disk")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m,mode=0700", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    pg.chown_postgres(path)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_spool_disk_stops_receiving_then_every_segment_is_stored_byte_for_byte(
        cluster_factory, scratch, small_disk):
    _spool_fills_while_the_repository_refuses(cluster_factory, scratch, small_disk, "cannot write the spool")


def test_the_spool_bound_stops_receiving_and_says_so_then_every_segment_is_stored_byte_for_byte(
        cluster_factory, scratch):
    bound = 64 << 20                     # the smallest bound the option takes: four segments
    spool = pg.make_dir(scratch, "spool")
    peak = _spool_fills_while_the_repository_refuses(
        cluster_factory, scratch, spool, "not stored in the repository: receiving stops",
        {"WALSHIP_RECEIVE_SPOOL_MAX_SIZE": str(bound)},
        rounds=12)
    # receiving stops at the bound: at most one more batch (1 MiB) and the segment it completes beyond it
    assert peak <= bound + (17 << 20), peak


def _spool_fills_while_the_repository_refuses(cluster_factory, scratch, spool, said: str,
                                              extra_env: dict | None = None, rounds: int = 5) -> int:
    """Asynchronous wal-receive into a file repository that refuses every write while `rounds` inserts of
    about 15 MiB of WAL each are written, until the receiver's log says `said`; the repository back, every
    segment must be stored, in order, the server's own bytes. Returns the most the spool held meanwhile."""
    repo_dir = pg.make_dir(scratch, "repo", 0o755)
    repo_env = {"WALSHIP_REPO": f"file://{repo_dir}"}
    primary = cluster_factory(15, env=repo_env)
    primary.initdb()
    primary.configure("wal_keep_size = '1GB'\n")    # the segments stay in pg_wal to be compared
    primary.start()
    primary.sql("CREATE TABLE t (id int, pad text)")
    receiver = Receiver(primary, {**repo_env, **(extra_env or {})}, spool, "--upload-interval", "1").start()
    receiver.wait_streaming()
    first = primary.switch_wal()
    wait_stored(repo_dir, first, receiver=receiver)

    def spool_bytes() -> int:
        return sum(p.stat().st_size for p in spool.iterdir() if p.is_file())

    locked = [p for p in [repo_dir, *repo_dir.rglob("*")] if p.is_dir()]
    for directory in locked:
        directory.chmod(0o555)           # the repository takes nothing: the spool fills up
    peak = 0
    try:
        for _ in range(rounds):
            primary.sql("INSERT INTO t SELECT g, repeat('w', 500) FROM generate_series(1, 20000) g")
            peak = max(peak, spool_bytes())
        deadline = time.time() + 60
        while said not in receiver.log():
            assert time.time() < deadline, f"the spool never filled ({peak} bytes at most):\n{receiver.log()[-3000:]}"
            assert receiver.proc is not None and receiver.proc.poll() is None, receiver.log()
            peak = max(peak, spool_bytes())
            time.sleep(0.2)
        for _ in range(10):              # it stays stopped, waiting, not crashing
            peak = max(peak, spool_bytes())
            time.sleep(0.2)
        assert receiver.proc.poll() is None, "wal-receive gave up instead of waiting"
    finally:
        for directory in locked:
            directory.chmod(0o755)
    last = primary.switch_wal()
    wait_stored(repo_dir, last, timeout=120, receiver=receiver)
    receiver.stop()
    assert "Traceback" not in receiver.log()

    from walship import pipeline
    stored = sorted(p.name for p in (repo_dir / "wal").iterdir() if len(p.name) == 24)
    numbers = [int(n[16:], 16) for n in stored]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), f"a gap: {stored}"
    assert stored[-1] == last and len(stored) >= 4, stored
    for name in stored:
        # the server's own bytes: a write cut short by a full disk left no hole of zeros behind
        assert pipeline.unpack((repo_dir / "wal" / name).read_bytes()) == \
            (primary.datadir / "pg_wal" / name).read_bytes(), name
    return peak
