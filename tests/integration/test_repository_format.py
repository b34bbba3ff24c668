"""The repository format on real servers and S3: a repository in the layout walship wrote before format 2
(completion markers inside the backup folders) still lists and restores, the next backup raises the format,
and on S3 `check backup` finds the backups with a delimiter listing that reads no part."""

from __future__ import annotations

import time
from pathlib import Path

from tests.conftest import require_version
from tests.support import pg, restore
from tests.support.repo import open_repo
from tests.support.repo_layout import CountingStore, make_record, stub_backup, to_format_1, write_stub_backup


def _chown_repository(repo_env: dict) -> None:
    """What the test rewrote as root, back to postgres (the owner of everything archive_command wrote)."""
    root = Path(repo_env["WALSHIP_REPO"][len("file://"):])
    for path in [root, *root.rglob("*")]:
        pg.chown_postgres(path)


def test_a_repository_in_the_format_1_layout_lists_restores_and_takes_the_next_backup(cluster_factory, scratch):
    require_version(15)
    repo_env = restore.file_repo(scratch)
    primary = restore.primary(cluster_factory, 15, repo_env)
    primary.sql("CREATE TABLE t (id int PRIMARY KEY, pad text)")
    primary.sql("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 5000) g")
    restore.backup_push(primary)
    primary.sql("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(5001, 8000) g")
    primary.wait_archived(primary.switch_wal())
    expected = primary.sql("SELECT id, pad FROM t ORDER BY id")

    store = open_repo(repo_env)
    [old] = to_format_1(store)
    _chown_repository(repo_env)
    root = Path(repo_env["WALSHIP_REPO"][len("file://"):])
    assert (root / "backups" / old / "complete.json").exists() and not (root / "backups" / f"{old}.json").exists()
    assert [b["name"] for b in restore.backups(repo_env)] == [old]

    restored = restore.restore(15, cluster_factory, "restored", repo_env, old)
    assert restored.sql("SELECT id, pad FROM t ORDER BY id") == expected       # row for row
    restored.stop()

    restore.backup_push(primary)                    # writes format 2 and says so in the record
    names = [b["name"] for b in restore.backups(repo_env)]
    assert names[0] == old and len(names) == 2 and (root / "backups" / f"{names[1]}.json").exists()
    assert open_repo(repo_env).get("walship-repository.json").count(b'"format": 2') == 1


def test_check_backup_on_s3_lists_the_markers_with_a_delimiter_listing(moto):
    store = open_repo(moto.env(moto.new_bucket()))
    make_record(store)
    for n in range(7):
        write_stub_backup(store, stub_backup(f"base_{n}", time.time() - 3600 * (7 - n)), 20)
    counting = CountingStore(store)
    from walship.backup.catalog import list_backups
    assert [b.name for b in list_backups(counting)] == [f"base_{n}" for n in range(7)]
    assert sorted(counting.listed) == sorted([f"backups/base_{n}.json" for n in range(7)] +
                                             [f"backups/base_{n}/" for n in range(7)])
    objects, folders = store.list_folder("")
    assert [o.key for o in objects] == ["walship-repository.json"] and folders == ["backups/"]
    to_format_1(store)
    assert [b.name for b in list_backups(store)] == [f"base_{n}" for n in range(7)]
