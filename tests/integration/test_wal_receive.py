"""wal-receive: streamed WAL in the repository, durable before it is acknowledged, served on restore."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time

import pytest

from tests.support import pg
from tests.support.receive import NumberedCommits, Receiver, make_synchronous, wait_stored
from tests.support.recovery import backup_fetch, restore_command

pytestmark = pytest.mark.integration


def _primary_with_receiver(cluster_factory, version: int, scratch, repo_env: dict, *flags: str):
    primary = cluster_factory(version, env=repo_env)
    primary.initdb()
    primary.set_archiving()
    primary.start()
    receiver = Receiver(primary, repo_env, pg.make_dir(scratch, "spool"), *flags).start()
    receiver.wait_streaming()
    return primary, receiver


def _load_and_lose_the_primary(primary: pg.Cluster, commits: int, seconds: float = 0,
                               before_kill=None) -> NumberedCommits:
    """pgbench plus the numbered commits (at least `commits`, for at least `seconds`); the primary killed -9
    mid-load (right after before_kill(), when given) and its data directory deleted."""
    primary.sql("CREATE TABLE commits (id bigint PRIMARY KEY)")
    pg.run_as_postgres([primary.program("pgbench"), "-i", "-s", "2", "-q"], env=primary.env_for_tools())
    r = pg.walship(["backup-push", str(primary.datadir), "--progress", "none"], primary.env_for_tools())
    assert r.returncode == 0, r.stderr
    bench = subprocess.Popen([primary.program("pgbench"), "-c", "2", "-T", "120", "-n"], env=primary.env_for_tools(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **pg.as_postgres())
    client = NumberedCommits(primary).start()
    try:
        started = time.monotonic()
        client.wait_for(commits)
        while time.monotonic() - started < seconds:
            client.wait_for(len(client.acknowledged) + 1)
        if before_kill is not None:
            before_kill()
        primary.kill9()
    finally:
        bench.kill()
        bench.wait()
    client.thread.join(30)
    shutil.rmtree(primary.datadir)
    return client


def _restore(cluster_factory, version: int, repo_env: dict, partial_expected: bool = True) -> set[int]:
    """backup-fetch LATEST as an operator does, started with a service's environment: the rows of commits.
    The last segment was never complete: its WAL comes from the pieces wal-receive stored (synchronous mode:
    always; asynchronous mode: unless the receiver died within an interval of the segment's start)."""
    restored = backup_fetch(cluster_factory, "restored", repo_env, version=version)
    assert "--repo" in restore_command(restored)
    assert not any(k.startswith("WALSHIP_") for k in restored.process_env)
    restored.start(wait=False)
    restored.wait_promoted()
    log = restored.logfile.read_text(errors="replace")
    assert not partial_expected or "restored (received partial)" in log, log
    return {row[0] for row in restored.sql("SELECT id FROM commits")}


@pytest.mark.parametrize("version", [15, 18])
def test_synchronous_mode_loses_no_acknowledged_commit_when_the_primary_dies(version, cluster_factory, scratch):
    repo_dir = pg.make_dir(scratch, "repo", 0o755)
    repo_env = {"WALSHIP_REPO": f"file://{repo_dir}"}
    primary, receiver = _primary_with_receiver(cluster_factory, version, scratch, repo_env, "--synchronous")
    make_synchronous(primary)
    check = pg.walship(["check", "receive"], primary.env_for_tools())
    assert check.returncode == 0 and check.stdout.startswith("OK: wal-receive streaming (sync)"), check.stdout
    client = _load_and_lose_the_primary(primary, commits=400)
    receiver.kill9()

    rows = _restore(cluster_factory, version, repo_env)
    acknowledged = {number for number, _at in client.acknowledged}
    assert acknowledged, "no commit was acknowledged"
    print(f"PostgreSQL {version}, synchronous mode: {len(acknowledged)} commits acknowledged, "
          f"{len(acknowledged - rows)} lost, {len(rows)} restored")
    assert acknowledged <= rows, f"acknowledged commits lost: {sorted(acknowledged - rows)[:10]}"
    # at most the one commit in flight when the primary died may be there without its acknowledgement
    assert rows <= acknowledged | {max(acknowledged) + 1}


@pytest.mark.serial
def test_asynchronous_mode_loses_at_most_the_upload_interval(cluster_factory, scratch):
    repo_dir = pg.make_dir(scratch, "repo", 0o755)
    repo_env = {"WALSHIP_REPO": f"file://{repo_dir}"}
    interval = 1.0
    primary, receiver = _primary_with_receiver(cluster_factory, 15, scratch, repo_env,
                                               "--upload-interval", str(interval))
    killed = []

    def kill_the_receiver_first() -> None:
        # the receiver's host dies with the primary: only what it stored counts (a live receiver would
        # store what it spooled after the primary died, and lose nothing)
        killed.append(time.time())
        receiver.kill9()
    client = _load_and_lose_the_primary(primary, commits=400, seconds=5 * interval,
                                        before_kill=kill_the_receiver_first)
    killed_at = killed[0]

    rows = _restore(cluster_factory, 15, repo_env, partial_expected=False)
    lost = [(number, at) for number, at in client.acknowledged if number not in rows]
    window = killed_at - min(at for _n, at in lost) if lost else 0.0
    print(f"asynchronous mode: {len(lost)} acknowledged commits lost, the last {window:.2f} s before the kill "
          f"(upload interval {interval} s)")
    # one interval plus the time one store and one fsync take on a loaded machine
    assert window <= interval + 1.5, receiver.log()
    assert rows, "nothing was restored"


def test_kill9_mid_segment_and_restart_leaves_no_gap_and_verify_clean(cluster_factory, scratch):
    repo_dir = pg.make_dir(scratch, "repo", 0o755)
    repo_env = {"WALSHIP_REPO": f"file://{repo_dir}"}
    primary = cluster_factory(15, env=repo_env)
    primary.initdb()
    primary.start()                     # no archive_command: every segment comes from wal-receive
    receiver = Receiver(primary, repo_env, pg.make_dir(scratch, "spool"), "--synchronous").start()
    receiver.wait_streaming()
    make_synchronous(primary)
    primary.sql("CREATE TABLE t (id int PRIMARY KEY, pad text)")
    for round_ in range(3):
        primary.sql(f"INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series({round_ * 30000 + 1}, "
                    f"{round_ * 30000 + 30000}) g")
        receiver.kill9()                # mid-segment: the insert's WAL fills part of one
        receiver.start()
        receiver.wait_streaming()
    last = primary.switch_wal()
    primary.sql("INSERT INTO t VALUES (0, 'after the switch')")
    wait_stored(repo_dir, last, receiver=receiver)
    receiver.stop()
    assert "Traceback" not in receiver.log()
    stored = sorted(p.name for p in (repo_dir / "wal").iterdir() if len(p.name) == 24)
    first = int(stored[0][16:], 16)
    assert [int(n[16:], 16) for n in stored] == list(range(first, first + len(stored))), f"a gap: {stored}"
    assert int(last[16:], 16) == first + len(stored) - 1
    # pieces only of the segment still being received, none of a stored one
    pieces = {p.parent.name for p in (repo_dir / "receive").rglob("*") if p.is_file()}
    assert not pieces & set(stored)
    r = pg.walship(["verify", "--all"], pg.server_env(repo_env))
    assert r.returncode in (0, 1), r.stdout + r.stderr      # 1: no backup to verify, the WAL itself clean
    assert "gap" not in (r.stdout + r.stderr).lower()


@pytest.mark.parametrize("version", [15, 18])
def test_a_promoted_standby_is_followed_onto_its_new_timeline_with_exact_history(version, cluster_factory, scratch):
    repo_dir = pg.make_dir(scratch, "repo", 0o755)
    repo_env = {"WALSHIP_REPO": f"file://{repo_dir}"}
    primary = cluster_factory(version, env=repo_env)
    primary.initdb()
    primary.start()
    primary.sql("CREATE TABLE t (id int PRIMARY KEY, pad text)")
    standby = cluster_factory(version, name="standby", env=repo_env)
    pg.run_as_postgres([str(primary.bin / "pg_basebackup"), "-h", str(primary.sockdir), "-p", str(primary.port),
                        "-U", "postgres", "-D", str(standby.datadir), "-X", "stream", "-c", "fast", "-R"],
                       env=primary.env)
    standby.configure(f"port = {standby.port}\nunix_socket_directories = '{standby.sockdir}'\n")
    standby.start()
    receiver = Receiver(standby, repo_env, pg.make_dir(scratch, "spool")).start()   # a cascading standby of it
    deadline = time.time() + 60
    while not standby.scalar("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"):
        assert time.time() < deadline and receiver.proc.poll() is None, receiver.log()
        time.sleep(0.1)
    primary.sql("INSERT INTO t SELECT g, 'timeline 1' FROM generate_series(1, 5000) g")
    switch_lsn = primary.scalar("SELECT pg_current_wal_lsn()::text")
    deadline = time.time() + 60
    while standby.scalar(f"SELECT pg_last_wal_replay_lsn() < '{switch_lsn}'"):
        assert time.time() < deadline
        time.sleep(0.1)
    primary.stop()
    standby.sql("SELECT pg_promote()")
    standby.wait_promoted()
    standby.sql("INSERT INTO t SELECT g, 'timeline 2' FROM generate_series(5001, 6000) g")
    last = standby.switch_wal()
    wait_stored(repo_dir, last, receiver=receiver)
    receiver.stop()
    assert last.startswith("00000002")
    assert "Traceback" not in receiver.log()
    # the history file is the server's own, byte for byte
    from walship import pipeline
    stored_history = pipeline.unpack((repo_dir / "wal" / "00000002.history").read_bytes())
    assert stored_history == (standby.datadir / "pg_wal" / "00000002.history").read_bytes()
    # every segment of timeline 2 from the switch on, each the server's own bytes
    on_two = sorted(p.name for p in (repo_dir / "wal").iterdir() if p.name.startswith("00000002") and len(p.name) == 24)
    assert on_two and on_two[-1] == last
    for name in on_two:
        assert pipeline.unpack((repo_dir / "wal" / name).read_bytes()) == (standby.datadir / "pg_wal" / name).read_bytes()
    # timeline 1's last segment kept up to the switch point as PostgreSQL names it, its pieces gone
    first_on_two = on_two[0]
    old_partial = repo_dir / "wal" / f"00000001{first_on_two[8:]}.partial"
    assert old_partial.exists(), sorted(p.name for p in (repo_dir / "wal").iterdir())
    assert not [p for p in (repo_dir / "receive").rglob("*") if p.is_file() and p.parent.name.startswith("00000001")]


def test_repository_unreachable_in_synchronous_mode_commits_wait_then_go_on(cluster_factory, scratch):
    repo_dir = pg.make_dir(scratch, "repo", 0o755)
    repo_env = {"WALSHIP_REPO": f"file://{repo_dir}"}
    primary, receiver = _primary_with_receiver(cluster_factory, 15, scratch, repo_env, "--synchronous")
    make_synchronous(primary)
    primary.sql("CREATE TABLE commits (id bigint PRIMARY KEY)")
    locked = [p for p in [repo_dir, *repo_dir.rglob("*")] if p.is_dir()]
    for directory in locked:
        directory.chmod(0o555)                       # the repository refuses every write
    done = threading.Event()

    def commit() -> None:
        primary.sql("INSERT INTO commits VALUES (1)")
        done.set()
    threading.Thread(target=commit, daemon=True).start()
    assert not done.wait(3), "a synchronous commit returned while its WAL could not be stored"
    assert "WAL stays in the spool" in receiver.log()
    for directory in locked:
        directory.chmod(0o755)
    assert done.wait(30), f"the commit did not return once the repository was back:\n{receiver.log()}"
    receiver.stop()


def test_wal_removed_before_it_was_received_is_a_loud_error_not_a_gap(cluster_factory, scratch):
    repo_dir = pg.make_dir(scratch, "repo", 0o755)
    repo_env = {"WALSHIP_REPO": f"file://{repo_dir}"}
    primary, receiver = _primary_with_receiver(cluster_factory, 15, scratch, repo_env)
    primary.sql("CREATE TABLE t (id int)")
    receiver.stop()
    primary.sql("ALTER SYSTEM SET wal_keep_size = 0")
    primary.sql("SELECT pg_reload_conf()")
    primary.sql("SELECT pg_drop_replication_slot('walship')")       # dropped while wal-receive was down
    for _ in range(4):
        primary.sql("INSERT INTO t SELECT generate_series(1, 1000)")
        primary.switch_wal()
    primary.sql("CHECKPOINT")                                        # the WAL after the spool is removed
    r = pg.walship(["wal-receive", "--spool", str(receiver.spool)], receiver.env, timeout=60)
    assert r.returncode == 4, r.stderr
    errors = [line for line in r.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "000000010000000000000001 has already been removed" in errors[0] and "backup-push" in errors[0]


def test_status_shows_the_stream_its_lag_last_store_and_slot_and_says_when_it_is_not_connected(
        cluster_factory, scratch):
    import json
    repo_dir = pg.make_dir(scratch, "repo", 0o755)
    repo_env = {"WALSHIP_REPO": f"file://{repo_dir}"}
    primary, receiver = _primary_with_receiver(cluster_factory, 15, scratch, repo_env, "--synchronous")
    make_synchronous(primary)
    primary.sql("CREATE TABLE t (id int)")
    primary.sql("INSERT INTO t VALUES (1)")          # synchronous: in the repository when this returns
    env = {**primary.env_for_tools(), "WALSHIP_RECEIVE_SPOOL_DIR": str(receiver.spool)}
    deadline = time.time() + 30
    while not (receiver.status() or {}).get("connected"):
        assert time.time() < deadline, receiver.log()
        time.sleep(0.2)

    r = pg.walship(["status"], env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    head = next(line for line in lines if line.startswith("wal-receive"))
    assert head.startswith("wal-receive   streaming (sync) as walship, flushed ")
    assert "last stored" in r.stdout and "(newest piece under receive/)" in r.stdout
    assert any(line.startswith("  slot        walship active, restart_lsn ") for line in lines), r.stdout
    assert any(line.startswith(f"  spool       {receiver.spool}: synchronous, received ") for line in lines), r.stdout
    doc = json.loads(pg.walship(["status", "--json"], env).stdout)["receive"]
    server = doc["server"]
    assert server["state"] == "streaming" and server["sync_state"] == "sync" and server["slot_active"]
    # what the server counts as flushed is what the repository holds: no further than the server's position
    from walship.pg.walnames import parse_lsn
    assert parse_lsn(server["flush_lsn"]) <= parse_lsn(server["server_lsn"])
    assert doc["last_store_age_s"] is not None and doc["last_store_age_s"] >= 0

    receiver.stop()
    r = pg.walship(["status"], env)
    assert r.returncode == 0, r.stderr
    assert "wal-receive   NOT CONNECTED (walship)" in r.stdout, r.stdout
    assert "  slot        walship inactive, restart_lsn " in r.stdout
    assert "not connected)" in r.stdout          # the spool's own status file says so too


def test_status_has_no_wal_receive_section_where_it_is_not_used(cluster_factory, scratch):
    repo_dir = pg.make_dir(scratch, "repo", 0o755)
    repo_env = {"WALSHIP_REPO": f"file://{repo_dir}"}
    primary = cluster_factory(15, env=repo_env)
    primary.initdb()
    primary.set_archiving()
    primary.start()
    primary.wait_archived(primary.switch_wal())
    r = pg.walship(["status"], primary.env_for_tools())
    assert r.returncode == 0, r.stderr
    assert "wal-receive" not in r.stdout and "archived WAL" in r.stdout


def test_a_slot_invalidated_by_max_slot_wal_keep_size_is_a_loud_error_and_status_says_lost(
        cluster_factory, scratch):
    repo_dir = pg.make_dir(scratch, "repo", 0o755)
    repo_env = {"WALSHIP_REPO": f"file://{repo_dir}"}
    primary, receiver = _primary_with_receiver(cluster_factory, 15, scratch, repo_env)
    primary.sql("CREATE TABLE t (id int)")
    receiver.stop()
    primary.sql("ALTER SYSTEM SET wal_keep_size = 0")
    primary.sql("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
    primary.sql("SELECT pg_reload_conf()")
    for _ in range(4):
        primary.sql("INSERT INTO t SELECT generate_series(1, 1000)")
        primary.switch_wal()
    primary.sql("CHECKPOINT")                # the slot no longer holds what wal-receive needs next
    assert primary.scalar("SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'walship'") == "lost"

    r = pg.walship(["status"], primary.env_for_tools())
    assert r.returncode == 0, r.stderr
    assert "  slot        walship inactive" in r.stdout and "LOST: the server removed WAL" in r.stdout, r.stdout
    r = pg.walship(["wal-receive", "--spool", str(receiver.spool)], receiver.env, timeout=60)
    assert r.returncode == 4, r.stderr
    errors = [line for line in r.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "the server cannot send WAL from" in errors[0] and "backup-push" in errors[0], errors[0]


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_the_primary_restarting_mid_segment_is_followed_without_a_gap_in_the_servers_own_bytes(
        mode, cluster_factory, scratch):
    repo_dir = pg.make_dir(scratch, "repo", 0o755)
    repo_env = {"WALSHIP_REPO": f"file://{repo_dir}"}
    primary = cluster_factory(15, env=repo_env)
    primary.initdb()
    primary.configure("wal_keep_size = '1GB'\n")   # the segments stay in pg_wal to be compared
    primary.start()                                # no archive_command: every segment comes from wal-receive
    receiver = Receiver(primary, repo_env, pg.make_dir(scratch, "spool"), "--synchronous").start()
    receiver.wait_streaming()
    make_synchronous(primary)
    primary.sql("CREATE TABLE t (id int PRIMARY KEY, pad text)")
    for round_ in range(3):
        primary.sql(f"INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series({round_ * 20000 + 1}, "
                    f"{round_ * 20000 + 20000}) g")
        primary.stop(mode)                         # mid-segment: the insert's WAL fills part of one
        primary.start()
        receiver.wait_streaming()
    last = primary.switch_wal()
    wait_stored(repo_dir, last, receiver=receiver)
    receiver.stop()
    assert "Traceback" not in receiver.log()
    from walship import pipeline
    stored = sorted(p.name for p in (repo_dir / "wal").iterdir() if len(p.name) == 24)
    numbers = [int(n[16:], 16) for n in stored]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), f"a gap: {stored}"
    assert stored[-1] == last
    for name in stored:
        assert pipeline.unpack((repo_dir / "wal" / name).read_bytes()) == \
            (primary.datadir / "pg_wal" / name).read_bytes(), name
