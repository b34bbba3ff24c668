"""backup-fetch restores the right backup to the right point, or refuses before downloading anything."""

from __future__ import annotations

import os
import pwd
import subprocess
import threading

import pytest

from tests.conftest import require_version
from tests.support import pg, restore
from tests.support.restore import STAMPED


class _Writer:
    """Commits one row at a time into `during` while a backup runs (client clock around each commit)."""

    def __init__(self, cluster: pg.Cluster, first: int):
        self.cluster, self.next_id, self.rows = cluster, first, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.rows += restore.stamp_rows(self.cluster, self.next_id, 1, table="during")
            self.next_id += 1

    def __enter__(self) -> _Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def _backup(cluster: pg.Cluster, writes_during: bool, first_id: int) -> list[restore.Stamp]:
    if not writes_during:
        restore.backup_push(cluster)
        return []
    with _Writer(cluster, first_id) as writer:
        restore.backup_push(cluster)
    assert writer.rows, "no row was written during the backup"
    return writer.rows


def _refused(r: subprocess.CompletedProcess, dest, *words: str) -> None:
    """One line on stderr, nothing downloaded, nothing that looks like a finished restore."""
    assert r.returncode != 0, r.stdout
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr, r.stderr
    for word in words:
        assert word in r.stderr, r.stderr
    assert not os.path.exists(dest), f"{dest} was written into before the target was checked"


@pytest.mark.parametrize("writes_during", [False, True], ids=["quiet", "writes-during-backups"])
def test_a_target_between_two_backups_restores_from_the_older_one_exact_to_the_commit(
        writes_during, cluster_factory, scratch):
    require_version(15)
    repo_env = restore.file_repo(scratch)
    primary = restore.primary(cluster_factory, 15, repo_env)
    primary.sql(STAMPED)
    primary.sql(STAMPED.replace("stamped", "during"))
    rows = restore.stamp_rows(primary, 1, 5)
    during_b1 = _backup(primary, writes_during, 1000)
    rows += restore.stamp_rows(primary, 6, 10)
    _backup(primary, writes_during, 2000)
    rows += restore.stamp_rows(primary, 16, 5)
    primary.wait_archived(primary.switch_wal())
    b1, b2 = restore.backups(repo_env)
    assert b1["next_xid"] < b2["next_xid"]
    primary.kill9()

    # between the two backups: restored from the older one, up to the commit before the target
    cut = 9                                               # rows[9] is id 10, committed between B1 and B2
    target = restore.between(rows[cut], rows[cut + 1])
    copy = cluster_factory(15, name="copy")
    dest_parent = pg.make_dir(scratch, "restores", 0o755)           # owned by postgres; backup-fetch runs as root
    copy.datadir = dest_parent / "copy"
    r = restore.fetch(copy.datadir, "LATEST", repo_env, "--target-time", target, "--target-action", "promote",
                      as_root=True)
    assert r.returncode == 0, r.stderr
    assert f"restoring backup {b1['name']}" in r.stdout, r.stdout
    assert "at the target: promote" in r.stdout and "files owned by postgres" in r.stdout
    postgres_uid = pwd.getpwnam("postgres").pw_uid
    assert all(os.lstat(os.path.join(d, n)).st_uid == postgres_uid
               for d, ds, fs in os.walk(copy.datadir) for n in ds + fs)
    restore.start_restored(copy)
    assert restore.ids(copy) == [s.id for s in rows[:cut + 1]]
    assert restore.ids(copy, "during") == [s.id for s in during_b1]
    copy.stop()

    # a named backup that ends after the target is refused, naming the one that works
    dest = scratch / "named"
    _refused(restore.fetch(dest, b2["name"], repo_env, "--target-time", target), dest,
             f"backup {b2['name']}", f"restore {b1['name']}")
    # a target before every backup
    _refused(restore.fetch(dest, "LATEST", repo_env, "--target-time", restore.between(rows[0], rows[1])), dest,
             "no backup in the repository is consistent before the target")
    # an xid target: the backup whose recorded next xid is not after it
    xid = str(b2["next_xid"] - 1)
    r = restore.fetch(scratch / "by_xid", "LATEST", repo_env, "--target-xid", xid, "--target-action", "promote")
    assert r.returncode == 0 and f"restoring backup {b1['name']}" in r.stdout, r.stdout + r.stderr


def test_bad_targets_are_refused_in_one_line_before_anything_is_downloaded(cluster_factory, scratch):
    require_version(15)
    repo_env = restore.file_repo(scratch)
    primary = restore.primary(cluster_factory, 15, repo_env)
    primary.sql("CREATE TABLE t AS SELECT generate_series(1, 100) AS id")
    restore.backup_push(primary)
    primary.wait_archived(primary.switch_wal())
    [backup] = restore.backups(repo_env)
    end_lsn = primary.scalar("SELECT pg_current_wal_lsn()::text")
    dest = scratch / "dest"
    for flags, words in [
        (["--target-xid", "abc"], "--target-xid 'abc' is not a transaction ID"),
        (["--target-lsn", "zz/yy"], "--target-lsn 'zz/yy' is not an LSN"),
        (["--target-time", "garbage"], "--target-time 'garbage' is not a timestamp"),
        (["--target-time", "2026-12-02 09:30:00"], "has no UTC offset or zone"),
        (["--target-timeline", "99"], "holds no 00000063.history"),
        (["--target-lsn", "FF/0"], "is beyond the archived WAL on timeline 1"),
        (["--target-time", "2999-01-01 00:00:00+00"], "is after the archived WAL on timeline 1"),
        (["--target-action", "promote"], "need a target"),
    ]:
        _refused(restore.fetch(dest, "LATEST", repo_env, *flags), dest, *words)
    _refused(restore.fetch(dest, backup["name"], repo_env, "--target-lsn", "0/1"), dest,
             "is consistent only after the target")
    # WAL still arriving: the operator says so, and the restore goes ahead
    far = f"{int(end_lsn.split('/')[0], 16) + 1:X}/0"
    r = restore.fetch(dest, "LATEST", repo_env, "--target-lsn", far, "--target-beyond-archive")
    assert r.returncode == 0, r.stderr
    assert (dest / "recovery.signal").exists()


def test_a_cluster_restored_to_a_point_then_promoted_backs_up_and_restores_to_its_end(cluster_factory, scratch):
    require_version(15)
    repo_env = restore.file_repo(scratch)
    primary = restore.primary(cluster_factory, 15, repo_env)
    primary.sql(STAMPED)
    rows = restore.stamp_rows(primary, 1, 10)
    restore.backup_push(primary)
    rows += restore.stamp_rows(primary, 11, 30)
    restore.backup_push(primary)                         # taken after the mistake the operator will undo
    primary.wait_archived(primary.switch_wal())
    first, late = restore.backups(repo_env)
    primary.kill9()

    # the operator goes back to before a mistake and makes that the new primary (timeline 2)
    cut = 29
    new_primary = restore.restore(15, cluster_factory, "new_primary", repo_env, "LATEST", "--as-primary",
                                  "--target-time", restore.between(rows[cut], rows[cut + 1]),
                                  "--target-action", "promote", server_env=repo_env)
    assert restore.ids(new_primary) == [s.id for s in rows[:cut + 1]]
    more = restore.stamp_rows(new_primary, 100, 10)
    new_primary.wait_archived(new_primary.switch_wal())
    assert "00000002.history" in restore.archived_wal(repo_env)       # it archives as the new primary

    # the backup taken on timeline 1 after the branch point cannot follow timeline 2: refused, naming the fixes
    for name in (late["name"], "LATEST"):
        dest = scratch / "late"
        _refused(restore.fetch(dest, name, repo_env), dest,
                 f"backup {late['name']} cannot start that recovery: timeline 2 branched off timeline 1",
                 f"restore {first['name']} to follow that timeline", "--target-timeline current")
    old_history = restore.restore(15, cluster_factory, "old_history", repo_env, late["name"],
                                  "--target-timeline", "current")
    assert restore.ids(old_history) == [s.id for s in rows]
    old_history.stop()

    # its postgresql.auto.conf still holds that restore's target: its next backup must not carry it into a restore
    restore.backup_push(new_primary)
    more += restore.stamp_rows(new_primary, 200, 5)
    new_primary.wait_archived(new_primary.switch_wal())
    expected = [s.id for s in rows[:cut + 1] + more]
    assert restore.ids(new_primary) == expected
    new_primary.kill9()

    latest = restore.restore(15, cluster_factory, "latest", repo_env, "LATEST")
    assert restore.ids(latest) == expected
    from walship.pg.recoveryfiles import DISABLED_PREFIX
    assert f"{DISABLED_PREFIX}recovery_target_time" in (latest.datadir / "postgresql.auto.conf").read_text()
