"""The core loop on every PostgreSQL major walship supports (14 to 18), through the installed CLI.

Archive, a base backup under pgbench load, verify, a point-in-time restore exact to the
commit, and a restore of the latest state after the primary was killed -9, checked row
for row, with pg_amcheck (not on 16: the pgserver wheel has no amcheck) and pg_checksums
(where the build ships it: the npm builds of 14 and 17 do not). Archiving into both kinds of repository on every major is
test_archiving's; here the slow loop runs once per major, on S3 for two of them (the S3
path is the same code on every major) and on a filesystem repository for the others.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.support import pg, restore
from tests.support.restore import STAMPED

ACCOUNTS = ("pgbench_accounts", "aid::text || abalance::text", "aid")
STAMPS = ("stamped", "id::text || committed_at::text", "id")
WITHOUT_AMCHECK = {16}     # the pgserver wheel ships no amcheck extension, so pg_amcheck cannot check 16


@pytest.mark.parametrize("pg_version,repo_kind", [(14, "file"), (15, "file"), (16, "file"), (17, "s3"), (18, "s3")],
                         ids=["pg14-file", "pg15-file", "pg16-file", "pg17-s3", "pg18-s3"])
def test_backup_under_load_verifies_and_restores_exactly_to_a_commit_and_to_the_latest_after_kill_9(
        pg_version, repo_kind, cluster_factory, scratch, moto):
    repo_env = restore.file_repo(scratch) if repo_kind == "file" else moto.env(moto.new_bucket())
    primary = restore.primary(cluster_factory, pg_version, repo_env)
    assert primary.scalar("SHOW server_version_num").startswith(str(pg_version))
    primary.sql(STAMPED)
    tools = primary.env_for_tools()
    pg.run_as_postgres([primary.program("pgbench"), "-i", "-s", "2", "-q"], env=tools)
    before = restore.stamp_rows(primary, 1, 5)
    bench = subprocess.Popen([primary.program("pgbench"), "-c", "2", "-T", "6", "-n"], env=tools, cwd="/tmp",
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **pg.as_postgres())
    try:
        # 4 MiB parts: pgbench_accounts (26 MB) is stored as slices, read while pgbench writes to it
        restore.backup_push(primary, WALSHIP_BACKUP_PART_SIZE=str(4 << 20))
        after = restore.stamp_rows(primary, 100, 12)
    finally:
        _, bench_errors = bench.communicate(timeout=60)
    assert bench.returncode == 0, bench_errors
    source_accounts = restore.digest(primary, *ACCOUNTS)
    source_stamped = restore.digest(primary, *STAMPS)
    primary.wait_archived(primary.switch_wal())
    primary.kill9()

    [backup] = restore.backups(repo_env)
    assert backup["pg_version"] // 10000 == pg_version and backup["stored_size"] > 0
    r = pg.walship(["verify", "--all"], pg.server_env(repo_env))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verify: the repository is restorable" in r.stdout

    # a target strictly between two commits 50 ms apart: the first is in, the second out
    cut = 6
    at_target = restore.restore(pg_version, cluster_factory, "at_target", repo_env, "LATEST",
                                "--target-time", restore.between(after[cut], after[cut + 1]),
                                "--target-action", "promote")
    assert restore.ids(at_target) == [s.id for s in before + after[:cut + 1]]
    at_target.stop()

    latest = restore.restore(pg_version, cluster_factory, "latest", repo_env, backup["name"])
    assert restore.digest(latest, *STAMPS) == source_stamped
    assert restore.digest(latest, *ACCOUNTS) == source_accounts
    # pg_amcheck is skipped only where the build lacks amcheck, never because a build lost it
    assert latest.scalar("SELECT count(*) FROM pg_available_extensions WHERE name = 'amcheck'") == \
        (0 if pg_version in WITHOUT_AMCHECK else 1)
    restore.check_integrity(latest)
