"""The repository format 2: completion markers are found without listing a single part, a format 1
repository still lists, and a walship that predates the format refuses it."""

from __future__ import annotations

import doctest
import time

import pytest

from tests.support.repo_layout import CountingStore, make_record, stub_backup, to_format_1, write_stub_backup
from walship import cli
from walship.backup.catalog import list_backups, read_marker
from walship.errors import WalshipError
from walship.repo import layout, lock, record, walindex
from walship.storage.local import LocalStore

BACKUPS, PARTS = 7, 100


@pytest.fixture
def repository(tmp_path):
    """7 complete backups of 100 parts each (and a manifest per part), as a retention of 7 keeps them."""
    store = LocalStore(str(tmp_path / "repo"))
    make_record(store)
    stop = time.time() - BACKUPS * 3600
    for n in range(BACKUPS):
        write_stub_backup(store, stub_backup(f"base_{n}", stop + n * 3600), PARTS)
    return store


@pytest.mark.parametrize("doc_module", [layout, walindex])
def test_the_layout_examples_hold(doc_module):
    failed, tried = doctest.testmod(doc_module)
    assert tried > 0 and failed == 0


def test_check_backup_lists_only_the_markers(repository, monkeypatch, capsys):
    import walship.storage
    counting = CountingStore(repository)
    monkeypatch.setattr(walship.storage, "open_store", lambda url, settings: counting)   # every store opened
    rc = cli.main(["check", "backup", "--repo", repository.url, "--warning", "1d", "--critical", "2d"])
    assert rc == 0, capsys.readouterr()
    assert "base_6" in capsys.readouterr().out
    assert not [k for k in counting.listed if "part_" in k]      # not one of the 1,400 parts and manifests
    assert len(counting.listed) == 2 * BACKUPS                    # 7 markers and the 7 folders beside them


def test_backup_list_and_the_leftover_scan_list_no_part_either(repository):
    counting = CountingStore(repository)
    assert [b.name for b in list_backups(counting)] == [f"base_{n}" for n in range(BACKUPS)]
    assert lock.remove_leftovers(counting, time.time() + 10 * lock.STALE_AFTER_S) == []
    assert not [k for k in counting.listed if "part_" in k]


def test_a_format_1_repository_still_lists_and_reads(repository):
    assert to_format_1(repository) == [f"base_{n}" for n in range(BACKUPS)]
    assert record.read(repository).format == 1
    assert [b.name for b in list_backups(repository)] == [f"base_{n}" for n in range(BACKUPS)]
    assert read_marker(repository, "base_3").parts == PARTS
    assert lock.leftovers(repository, time.time() + 10 * lock.STALE_AFTER_S) == {}


def test_the_next_backup_raises_the_format_and_an_older_walship_refuses(repository, monkeypatch):
    to_format_1(repository)
    write_stub_backup(repository, stub_backup("base_new", time.time()), 1)
    assert record.read(repository).format == record.FORMAT == 2
    assert [b.name for b in list_backups(repository)][-1] == "base_new"      # the old backups stay listed
    assert len(list_backups(repository)) == BACKUPS + 1
    monkeypatch.setattr(record, "FORMAT", 1)                                 # a walship before format 2
    with pytest.raises(WalshipError, match="upgrade walship"):
        record.require(repository)


def test_deleting_a_backup_removes_its_marker_and_folder_in_either_format(repository):
    from walship.backup import retention
    from walship.backup.catalog import open_catalog
    to_format_1(repository)
    write_stub_backup(repository, stub_backup("base_new", time.time()), 1)
    catalog = open_catalog(repository)
    plan = retention.plan(catalog, retain=1, before=None, include_wal_e=False)
    retention.execute(catalog, plan)
    assert [b.name for b in list_backups(repository)] == ["base_new"]
    objects, folders = repository.list_folder(layout.BACKUP_PREFIX)
    assert [o.key for o in objects] == [layout.marker_key("base_new")] and folders == ["backups/base_new/"]


def test_list_folder_stops_at_the_folder(tmp_path):
    store = LocalStore(str(tmp_path / "repo"))
    for key in ("backups/a.json", "backups/a/part_00000.tar", "backups/b/in_progress.json", "wal/x"):
        store.put(key, b"x")
    objects, folders = store.list_folder("backups/")
    assert [o.key for o in objects] == ["backups/a.json"] and folders == ["backups/a/", "backups/b/"]
    root_objects, root_folders = store.list_folder("")
    assert root_objects == [] and root_folders == ["backups/", "wal/"]
    assert store.list_folder("nothing/") == ([], [])
