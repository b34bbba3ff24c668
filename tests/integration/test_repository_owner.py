"""One repository, one cluster: the record at its root, checked by every writer; nothing stored that is not right."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import pg
from tests.support.faultproxy import FaultProxy
from tests.support.walfiles import segment_bytes


def _stored(repo_dir, name: str) -> bool:
    return (repo_dir / "wal" / name).exists()


def _archiving(cluster_factory, scratch, name: str = "primary") -> tuple[Path, str, pg.Cluster]:
    """A new file repository and a running PostgreSQL 15 archiving into it: (its directory, its URL, the server)."""
    repo_dir = pg.make_dir(scratch, "repo", 0o755)
    repo = f"file://{repo_dir}"
    cluster = cluster_factory(15, name=name)
    cluster.initdb()
    cluster.set_archiving(repo)
    cluster.start()
    return repo_dir, repo, cluster


def test_a_second_cluster_cannot_archive_into_or_expire_the_first_clusters_repository(cluster_factory, scratch):
    repo_dir, repo, first = _archiving(cluster_factory, scratch, 'first')
    first.sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
    for _ in range(3):
        last = first.switch_wal()
    first.wait_archived(last)
    tools = first.env_for_tools()
    tools["WALSHIP_REPO"] = repo
    pg.walship(["backup-push", str(first.datadir)], tools, check=True)
    owner_id = first.scalar("SELECT system_identifier::text FROM pg_control_system()")

    second = cluster_factory(15, name="second")
    second.initdb()
    second.start()
    second.sql("CREATE TABLE u AS SELECT g FROM generate_series(1, 1000) g")
    theirs = second.switch_wal()
    second.stop()
    before = sorted(p.name for p in (repo_dir / "wal").iterdir())

    env = pg.server_env({"WALSHIP_REPO": repo})
    push = pg.walship(["wal-push", f"pg_wal/{theirs}"], env, cwd=str(second.datadir))
    assert push.returncode == 4, push.stderr
    controldata = pg.run_as_postgres([str(second.bin / "pg_controldata"), str(second.datadir)]).stdout
    other_id = next(line.split(":")[1].strip() for line in controldata.splitlines()
                    if line.startswith("Database system identifier"))
    assert other_id != owner_id
    assert f"(system identifier {other_id})" in push.stderr
    assert f"belongs to the cluster with system identifier {owner_id}" in push.stderr
    assert len(push.stderr.strip().splitlines()) == 1 and "Traceback" not in push.stderr
    assert sorted(p.name for p in (repo_dir / "wal").iterdir()) == before, "nothing may be written"

    delete = pg.walship(["delete", "--retain", "1", "--pgdata", str(second.datadir)], env)
    assert delete.returncode == 4, delete.stderr
    assert f"belongs to the cluster with system identifier {owner_id}" in delete.stderr
    listed = pg.walship(["backup-list", "--json"], env, check=True).stdout
    assert '"name": "base_' in listed, "the first cluster's backup must still be listed"
    assert sorted(p.name for p in (repo_dir / "wal").iterdir()) == before


def test_a_recycled_segment_pushed_by_hand_is_refused_and_the_real_one_archives_later(cluster_factory, scratch):
    repo_dir, repo, primary = _archiving(cluster_factory, scratch)
    old = primary.switch_wal()
    primary.wait_archived(old)
    current = primary.scalar("SELECT pg_walfile_name(pg_current_wal_lsn())")
    # PostgreSQL recycles a segment by renaming it to a future name: its header still says what it was
    future = current[:16] + f"{int(current[16:], 16) + 1:08X}"
    recycled = pg.make_dir(scratch, "manual") / future
    shutil.copyfile(primary.datadir / "pg_wal" / old, recycled)
    pg.chown_postgres(recycled)
    env = pg.server_env({"WALSHIP_REPO": repo})
    push = pg.walship(["wal-push", str(recycled)], env, cwd=str(primary.datadir))
    assert push.returncode == 4, push.stderr
    assert "recycled or renamed" in push.stderr and "Traceback" not in push.stderr
    assert not _stored(repo_dir, future)

    primary.sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g")
    primary.switch_wal()
    done = primary.switch_wal()
    primary.wait_archived(done)
    assert _stored(repo_dir, future), "the real segment archives normally afterwards"
    failed = primary.scalar("SELECT failed_count FROM pg_stat_archiver")
    assert failed == 0


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_two_different_contents_pushed_at_once_exactly_one_is_acknowledged_and_stored(kind, scratch, moto):
    if kind == "file":
        env = pg.server_env({"WALSHIP_REPO": f"file://{pg.make_dir(scratch, 'repo', 0o755)}"})
    else:
        env = pg.server_env(moto.env(moto.new_bucket()))
    work = pg.make_dir(scratch, "work", 0o755)
    size = 1 << 20
    for round_ in range(4):
        name = f"0000000100000000000000{round_ + 1:02X}"
        paths = []
        for who in ("x", "y"):
            d = pg.make_dir(work, f"{who}{round_}", 0o755)
            path = d / name
            path.write_bytes(segment_bytes(name, size, fill=who.encode() * 4096))
            pg.chown_postgres(path)
            paths.append(path)
        procs = [subprocess.Popen([pg.WALSHIP, "wal-push", str(p)], env=env, cwd="/tmp", stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, **pg.as_postgres()) for p in paths]
        results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
        codes = [rc for rc, _ in results]
        assert sorted(codes) == [0, 4], results
        winner = paths[codes.index(0)]
        got = pg.walship(["wal-fetch", name, str(work / f"got{round_}")], env, check=True)
        assert got.returncode == 0
        assert (work / f"got{round_}").read_bytes() == winner.read_bytes()
        assert "different content" in results[codes.index(4)][1]


def test_a_store_that_ignores_conditional_writes_is_refused_before_anything_is_archived(scratch, moto):
    bucket = moto.new_bucket()
    proxy = FaultProxy(moto.port)
    proxy.strip_request_headers = {"if-none-match"}
    try:
        env = pg.server_env(moto.env(bucket, endpoint=proxy.endpoint))
        wal = pg.make_dir(scratch, "pg_wal", 0o755)
        name = "000000010000000000000001"
        (wal / name).write_bytes(segment_bytes(name, 1 << 20))
        pg.chown_postgres(wal / name)
        push = pg.walship(["wal-push", str(wal / name)], env)
        assert push.returncode == 3, push.stderr
        assert "ignored If-None-Match" in push.stderr and "Traceback" not in push.stderr
        assert len(push.stderr.strip().splitlines()) == 1
    finally:
        proxy.close()
    assert moto.client().list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0, "nothing may be stored"


def test_a_conflicting_object_is_set_aside_by_quarantine_and_archiving_resumes(cluster_factory, scratch):
    from walship import pipeline
    from walship.storage.local import LocalStore

    repo_dir, repo, primary = _archiving(cluster_factory, scratch)
    primary.wait_archived(primary.switch_wal())
    primary.sql("CREATE TABLE first_write_of_the_next_segment ()")
    upcoming = primary.scalar("SELECT pg_walfile_name(pg_current_wal_lsn())")
    # what a split brain leaves: another server's object under the name this server will archive next
    impostor = pipeline.pack(segment_bytes(upcoming, 16 << 20), "zstd", 1, None, name=upcoming)
    LocalStore(str(repo_dir)).put(f"wal/{upcoming}", impostor, if_absent=True)
    pg.chown_postgres(repo_dir / "wal" / upcoming)

    primary.sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
    primary.switch_wal()
    deadline = time.time() + 60
    while primary.scalar("SELECT last_failed_wal FROM pg_stat_archiver") != upcoming:
        assert time.time() < deadline, primary.log_tail()
        time.sleep(0.2)
    assert "different content; refusing to overwrite" in primary.logfile.read_text()
    assert (repo_dir / "wal" / upcoming).read_bytes() == impostor

    env = pg.server_env({"WALSHIP_REPO": repo})
    moved = pg.walship(["quarantine", upcoming, "--reason", "split brain: the old primary's segment"], env)
    assert moved.returncode == 0, moved.stderr
    aside = list((repo_dir / "quarantine").glob(f"*/wal/{upcoming}"))
    assert len(aside) == 1 and aside[0].read_bytes() == impostor, "set aside, never deleted"
    assert "split brain" in aside[0].with_name(upcoming + ".json").read_text()

    last = primary.switch_wal()                 # wakes the archiver, which retries the segment
    primary.wait_archived(last)
    restored = scratch / "check"
    pg.walship(["wal-fetch", upcoming, str(restored)], env, check=True)
    assert restored.read_bytes() == (primary.datadir / "pg_wal" / upcoming).read_bytes()
