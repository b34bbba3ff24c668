"""A restore either reaches the end of the archive or stops before it looks finished: never a promotion at a gap.

Each test restores as an operator does (backup-fetch, its restore_command with --repo/--config, the server
started with a service's environment), makes one thing fail, and checks that the server stopped recovery
instead of promoting; then it fixes that one thing, starts the server again and gets every row.
"""

from __future__ import annotations

import shutil
import subprocess

from tests.support import pg
from tests.support.recovery import (
    archive_after_backup,
    assert_not_promoted,
    backup_fetch,
    restore_command,
    start_and_check_every_row,
    wait_recovery_stopped,
    write_config,
)
from walship import pipeline

STOPPED = "stopping recovery"


def _file_repo(scratch):
    path = pg.make_dir(scratch, "repo", 0o755)
    return path, f"file://{path}"


def test_a_segment_missing_in_the_middle_stops_recovery_and_names_the_gap(cluster_factory, scratch):
    repo_dir, repo = _file_repo(scratch)
    archived = archive_after_backup(cluster_factory, repo)
    restored = backup_fetch(cluster_factory, "restored", {"WALSHIP_REPO": repo})
    assert f"--repo {repo}" in restore_command(restored)
    middle = archived.segments[2]
    aside = scratch / middle
    shutil.move(repo_dir / "wal" / middle, aside)

    log = wait_recovery_stopped(restored)
    assert f"{middle} is missing from the archive" in log and archived.segments[3] in log, log
    assert STOPPED in log
    assert_not_promoted(restored, repo_dir)

    shutil.move(aside, repo_dir / "wal" / middle)       # the segment is found again
    start_and_check_every_row(restored, archived)


def test_a_destination_wal_fetch_cannot_write_stops_recovery(cluster_factory, scratch):
    repo_dir, repo = _file_repo(scratch)
    archived = archive_after_backup(cluster_factory, repo, batches=3)
    restored = backup_fetch(cluster_factory, "restored", {"WALSHIP_REPO": repo})
    good = restore_command(restored)
    restored.configure(f"restore_command = '{good.replace('%p', '/no/such/dir/%f')}'")

    log = wait_recovery_stopped(restored)
    assert "cannot write /no/such/dir/" in log and STOPPED in log, log
    assert_not_promoted(restored, repo_dir)

    restored.configure(f"restore_command = '{good}'")
    start_and_check_every_row(restored, archived)


def test_a_failing_encryption_key_command_stops_recovery(cluster_factory, scratch):
    repo_dir, repo = _file_repo(scratch)
    key_file = scratch / "key"
    write_config(key_file, subprocess.run([pg.WALSHIP, "keygen"], capture_output=True, text=True,
                                          check=True).stdout)
    archived = archive_after_backup(cluster_factory, repo, batches=3,
                                    env={"WALSHIP_ENCRYPTION_KEY_FILE": str(key_file)})
    vault_down = scratch / "vault-down"
    config = write_config(scratch / "restore.toml",
                          f'repo = "{repo}"\n'
                          f"encryption_key_command = \"test ! -e {vault_down} && cat {key_file}\"\n")
    restored = backup_fetch(cluster_factory, "restored", {}, "--config", str(config))
    assert f"--config {config}" in restore_command(restored)

    vault_down.touch()                                   # the key service is unavailable for a while
    log = wait_recovery_stopped(restored)
    assert "the encryption key command failed" in log and STOPPED in log, log
    assert_not_promoted(restored, repo_dir)

    vault_down.unlink()
    start_and_check_every_row(restored, archived)


def test_an_invalid_config_file_stops_recovery(cluster_factory, scratch):
    repo_dir, repo = _file_repo(scratch)
    archived = archive_after_backup(cluster_factory, repo, batches=3)
    good = f'repo = "{repo}"\nfetch_prefetch = 4\n'
    config = write_config(scratch / "restore.toml", good)
    restored = backup_fetch(cluster_factory, "restored", {}, "--config", str(config))

    config.write_text(good + "[s3\n")                   # an edit half done
    log = wait_recovery_stopped(restored)
    assert f"config file {config} is not valid TOML" in log and STOPPED in log, log
    assert_not_promoted(restored, repo_dir)

    config.write_text(good)
    start_and_check_every_row(restored, archived)


def test_an_unmounted_file_repository_stops_recovery(cluster_factory, scratch):
    repo_dir = pg.make_dir(scratch, "repo", 0o755)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m,mode=0755", "tmpfs", str(repo_dir)], check=True)
    try:
        pg.chown_postgres(repo_dir)
        repo = f"file://{repo_dir}"
        archived = archive_after_backup(cluster_factory, repo, batches=3)
        restored = backup_fetch(cluster_factory, "restored", {"WALSHIP_REPO": repo})
        kept = scratch / "repo-copy"
        subprocess.run(["cp", "-a", str(repo_dir), str(kept)], check=True)     # owners kept: postgres reads it
    finally:
        subprocess.run(["umount", str(repo_dir)], check=True)   # the mount is gone: an empty directory

    log = wait_recovery_stopped(restored)
    assert f"file://{repo_dir} is not a walship repository" in log and STOPPED in log, log
    assert_not_promoted(restored)

    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m,mode=0755", "tmpfs", str(repo_dir)], check=True)
    try:
        subprocess.run(["cp", "-a", f"{kept}/.", str(repo_dir)], check=True)
        start_and_check_every_row(restored, archived)
    finally:
        restored.stop("immediate")
        subprocess.run(["umount", str(repo_dir)], check=False)


def test_pg_wal_full_for_a_moment_stops_recovery(cluster_factory, scratch):
    repo_dir, repo = _file_repo(scratch)
    archived = archive_after_backup(cluster_factory, repo, batches=5)
    restored = backup_fetch(cluster_factory, "restored", {"WALSHIP_REPO": repo})
    pg_wal = restored.datadir / "pg_wal"
    kept = scratch / "pg_wal-before"
    subprocess.run(["cp", "-a", str(pg_wal), str(kept)], check=True)
    # room for two 16 MiB segments: replay fills it before the archive ends
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m,mode=0700", "tmpfs", str(pg_wal)], check=True)
    try:
        subprocess.run(["cp", "-a", f"{kept}/.", str(pg_wal)], check=True)
        pg.chown_postgres(pg_wal)
        log = wait_recovery_stopped(restored)
        assert "No space left on device" in log and STOPPED in log, log
        assert_not_promoted(restored, repo_dir)

        subprocess.run(["mount", "-o", "remount,size=1g", str(pg_wal)], check=True)     # space again
        start_and_check_every_row(restored, archived)
    finally:
        restored.stop("immediate")
        subprocess.run(["umount", "-l", str(pg_wal)], check=False)


def test_another_clusters_segment_under_an_archived_name_stops_recovery(cluster_factory, scratch):
    repo_dir, repo = _file_repo(scratch)
    archived = archive_after_backup(cluster_factory, repo, batches=3)
    restored = backup_fetch(cluster_factory, "restored", {"WALSHIP_REPO": repo})
    # the same name, the same LSN, another cluster's system identifier (bytes 24-31 of the long page header)
    name = archived.segments[1]
    obj = repo_dir / "wal" / name
    original = obj.read_bytes()
    wal = bytearray(pipeline.unpack(original, name))
    wal[24:32] = (int.from_bytes(wal[24:32], "little") ^ 0x5A5A).to_bytes(8, "little")
    obj.write_bytes(pipeline.pack(bytes(wal), "zstd"))

    log = wait_recovery_stopped(restored)
    assert f"WAL file {name} belongs to the cluster with system identifier" in log and STOPPED in log, log
    assert_not_promoted(restored, repo_dir)

    obj.write_bytes(original)
    start_and_check_every_row(restored, archived)
