"""Recovery from the archive: a base backup (pg_basebackup) plus walship's restore_command."""

from __future__ import annotations

import pytest

from tests.conftest import require_version
from tests.support import pg, recovery
from tests.support.recovery import (
    archive_after_backup,
    backup_fetch,
    restore_command,
    start_and_check_every_row,
)
from walship.pg.recoveryfiles import COPY, read_restore_marker

pytestmark = pytest.mark.serial       # replay must be served from the prefetch queue: workers that keep ahead of it


# the file repository on every version, S3 on one (the S3 path is the same on all)
@pytest.mark.parametrize("pg_version,repo_kind", [(15, "file"), (16, "file"), (18, "file"), (18, "s3")])
def test_replay_from_the_archive_restores_rows_written_after_the_base_backup(
        pg_version, repo_kind, cluster_factory, scratch, moto):
    require_version(pg_version)
    repo_env = ({"WALSHIP_REPO": f"file://{pg.make_dir(scratch, 'repo', 0o755)}"} if repo_kind == "file"
                else moto.env(moto.new_bucket()))
    primary = cluster_factory(pg_version, env=repo_env)
    primary.initdb()
    primary.set_archiving()
    primary.start()
    primary.sql("CREATE TABLE t (id int PRIMARY KEY, pad text)")
    primary.sql("INSERT INTO t SELECT g, 'before' FROM generate_series(1, 1000) g")

    restored = recovery.from_pg_basebackup(primary, cluster_factory, scratch, repo_env)
    # written after the base backup: only the archive has these rows
    for i in range(5):
        primary.sql(f"INSERT INTO t SELECT g, repeat('after', 40) FROM generate_series({2000 + i * 20000}, "
                    f"{2000 + i * 20000 + 19999}) g")
        last = primary.switch_wal()
    primary.wait_archived(last)
    expected = primary.sql("SELECT count(*), md5(string_agg(id::text || pad, ',' ORDER BY id)) FROM t")[0]
    primary.stop()

    restored.start()
    restored.wait_promoted()
    got = restored.sql("SELECT count(*), md5(string_agg(id::text || pad, ',' ORDER BY id)) FROM t")[0]
    assert got == expected
    log = restored.logfile.read_text()
    assert "restored (downloaded)" in log
    assert "restored (prefetched)" in log, "replay should be served from the prefetch directory"
    assert not any((restored.datadir / "pg_wal" / "walship_prefetch").glob("0*")), "prefetched files left behind"


def test_backup_fetchs_own_restore_command_replays_from_prefetch_and_says_what_becomes_of_a_copy(
        cluster_factory, scratch):
    repo = f"file://{pg.make_dir(scratch, 'repo', 0o755)}"
    archived = archive_after_backup(cluster_factory, repo, batches=6, rows=70000)   # full segments: see test_prefetch_queue
    # the operator's shell names the repository; the server started afterwards knows only restore_command
    restored = backup_fetch(cluster_factory, "restored", {"WALSHIP_REPO": repo})
    assert restore_command(restored).endswith(f"wal-fetch %f %p --repo {repo}")
    marker = read_restore_marker(str(restored.datadir))
    assert marker is not None and marker["mode"] == COPY, "backup-fetch restores a copy by default"

    log = start_and_check_every_row(restored, archived)
    assert log.count("restored (prefetched)") >= 3, log
    assert "prefetch_failed" not in log and "no repository configured" not in log and "ERROR" not in log, log
    assert not any((restored.datadir / "pg_wal" / "walship_prefetch").glob("0*")), "prefetched files left behind"
    notices = [line for line in log.splitlines() if "end of recovery of a copy restored from" in line]
    assert len(notices) == 1, log
    assert f"must never archive into {repo}" in notices[0] and "--repo NEW_URL" in notices[0]
