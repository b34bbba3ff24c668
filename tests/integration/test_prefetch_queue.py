"""The prefetch queue (archive/queue.py) during real recoveries: backup-fetch, then the server started with the
restore_command backup-fetch wrote; the queue's worker must serve only verified segments, leave when recovery
ends or the server dies, and leave nothing behind."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.support import pg, restore
from tests.support.recovery import DIGEST, archive_after_backup, assert_not_promoted, wait_recovery_stopped
from walship.repo.layout import wal_key


def queue_dir(restored: pg.Cluster) -> Path:
    return restored.datadir / "pg_wal" / "walship_prefetch"


def workers_of(restored: pg.Cluster) -> list[int]:
    """Processes running `wal-prefetch` for this data directory's queue."""
    found = []
    needle = str(queue_dir(restored)).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if b"wal-prefetch" in cmdline and needle in cmdline:
            found.append(int(entry))
    return found


def assert_nothing_left(restored: pg.Cluster, timeout: float = 15) -> None:
    """No worker and no queue directory, within `timeout` (the worker notices within a fraction of a second)."""
    deadline = time.time() + timeout
    while time.time() < deadline and (workers_of(restored) or queue_dir(restored).exists()):
        time.sleep(0.1)
    assert not workers_of(restored), "a prefetch worker outlived the recovery"
    left = sorted(p.name for p in queue_dir(restored).iterdir()) if queue_dir(restored).exists() else None
    assert left is None, f"the queue directory was left behind: {left}"


def restored_by_backup_fetch(cluster_factory, repo_env: dict, name: str = "restored") -> pg.Cluster:
    """backup-fetch LATEST; the server's environment is a service's: the store's endpoint, no WALSHIP_REPO."""
    restored = cluster_factory(15, name=name, env=restore.service_env(repo_env))
    r = restore.fetch(restored.datadir, "LATEST", repo_env)
    assert r.returncode == 0, r.stderr
    restored.configure(f"port = {restored.port}\nunix_socket_directories = '{restored.sockdir}'\n"
                       "archive_mode = off\n")
    return restored


def archive(cluster_factory, scratch, moto, repo_kind: str, batches: int, rows: int = 20000):
    repo_env = restore.file_repo(scratch) if repo_kind == "file" else moto.env(moto.new_bucket())
    extra = {k: v for k, v in repo_env.items() if k != "WALSHIP_REPO"}
    return repo_env, archive_after_backup(cluster_factory, repo_env["WALSHIP_REPO"], batches=batches, env=extra,
                                          rows=rows)


@pytest.mark.serial                   # a share of the segments must come from the queue: workers that keep ahead
@pytest.mark.parametrize("repo_kind", ["file", "s3"])
def test_replay_is_served_from_the_queue_and_recovery_ending_leaves_no_worker_and_no_file(
        repo_kind, cluster_factory, scratch, moto):
    # full segments, as a real replay has: redoing one takes about as long as fetching one, so that which of
    # the two wins no longer depends on how loaded the machine is
    repo_env, archived = archive(cluster_factory, scratch, moto, repo_kind, batches=10, rows=70000)
    restored = restored_by_backup_fetch(cluster_factory, repo_env)
    restored.start(wait=False)
    restored.wait_promoted()
    assert tuple(restored.sql(DIGEST)[0]) == archived.expected
    log = restored.logfile.read_text(errors="replace")
    # one worker for the whole recovery: most segments come out of the queue, served by restore_command's
    # rename (no walship process: the worker logs them) rather than by a wal-fetch
    assert log.count("restored (prefetched)") >= len(archived.segments) // 2, log
    renamed = [ln for ln in log.splitlines() if "wal-prefetch: INFO:" in ln and "restored (prefetched)" in ln]
    assert len(renamed) >= len(archived.segments) // 2, log
    assert "prefetch_failed" not in log and "ERROR" not in log, log
    assert_nothing_left(restored)


def test_a_wrong_object_on_the_queues_path_is_never_served_and_recovery_stops(cluster_factory, scratch, moto):
    repo_env, archived = archive(cluster_factory, scratch, moto, "file", batches=8)
    repo_dir = Path(repo_env["WALSHIP_REPO"][len("file://"):])
    wrong, donor = archived.segments[4], archived.segments[3]
    # a well-formed stored object (its checksum holds) with another segment's bytes: only the check of the WAL
    # header against the name can refuse it
    shutil.copyfile(repo_dir / wal_key(donor), repo_dir / wal_key(wrong))
    restored = restored_by_backup_fetch(cluster_factory, repo_env)
    log = wait_recovery_stopped(restored)
    assert f"prefetch of {wrong} failed" in log, log        # the worker refused to queue it
    assert f"{wrong} restored" not in log and f'restored log file "{wrong}"' not in log, log
    assert "stopping recovery" in log, log
    assert_not_promoted(restored)
    assert_nothing_left(restored)
    # what replay reached is what came before the wrong object, nothing after it
    assert f'restored log file "{archived.segments[3]}"' in log
    assert f'restored log file "{archived.segments[5]}"' not in log


def test_a_server_killed_mid_recovery_leaves_no_worker_and_starting_it_again_reaches_the_same_rows(
        cluster_factory, scratch, moto):
    repo_env, archived = archive(cluster_factory, scratch, moto, "file", batches=24)
    restored = restored_by_backup_fetch(cluster_factory, repo_env)
    restored.start(wait=False)
    deadline = time.time() + 120
    log = ""
    while time.time() < deadline:
        log = restored.logfile.read_text(errors="replace") if restored.logfile.exists() else ""
        if log.count("restored (prefetched)") >= 3:
            break
        time.sleep(0.01)
    assert workers_of(restored), "the queue's worker should be running during recovery"
    restored.kill9()
    log = restored.logfile.read_text(errors="replace")
    assert "database system is ready to accept connections" not in log, "recovery ended before the kill"
    assert_nothing_left(restored)

    restored.logfile.write_text("")
    restored.start(wait=False)
    restored.wait_promoted()
    assert tuple(restored.sql(DIGEST)[0]) == archived.expected
    log = restored.logfile.read_text(errors="replace")
    assert "restored (prefetched)" in log and "ERROR" not in log, log
    assert_nothing_left(restored)
