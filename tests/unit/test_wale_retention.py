"""Expiring WAL-E objects: only with --include-wal-e, never what a kept backup needs."""

import json

import pytest

from walship.repo.catalog import BackupInfo
from walship.storage.local import LocalStore
from walship.walecompat.backups import WaleBackups

OLD = "base_000000010000000000000004_00000040"
NEW = "base_000000010000000000000009_00000040"


def info(name, start_wal, source="wal-e"):
    return BackupInfo(name=name, start_time=0, stop_time=0, start_lsn="0/0", stop_lsn="0/0", timeline=1,
                      start_wal=start_wal, stop_wal=start_wal, pg_version=150000, system_identifier="",
                      size=0, stored_size=0, duration_s=0, source=source)


@pytest.fixture
def store(tmp_path):
    s = LocalStore(str(tmp_path / "repo"))
    for name in (OLD, NEW):
        s.put(f"basebackups_005/{name}/extended_version.txt", b"PostgreSQL 15.18")
        s.put(f"basebackups_005/{name}/tar_partitions/part_00000000.tar.lzo", b"lzo")
        s.put(f"basebackups_005/{name}_backup_stop_sentinel.json", json.dumps({}).encode())
    for seg in range(2, 12):
        s.put(f"wal_005/0000000100000000000000{seg:02X}.lzo", b"lzo")
    s.put("wal_005/000000010000000000000004.00000028.backup.lzo", b"lzo")
    s.put("wal_005/00000002.history.lzo", b"lzo")
    s.put("wal_005/README", b"not WAL-E's")
    return s


def test_deleting_the_old_wale_backup_and_the_wal_before_the_oldest_kept_one(store):
    keys = WaleBackups(store).obsolete_keys(delete=[info(OLD, "000000010000000000000004")],
                                   keep=[info(NEW, "000000010000000000000009")])
    assert keys[0] == f"basebackups_005/{OLD}_backup_stop_sentinel.json"
    assert set(keys[1:3]) == {f"basebackups_005/{OLD}/extended_version.txt",
                              f"basebackups_005/{OLD}/tar_partitions/part_00000000.tar.lzo"}
    assert keys[3:] == [f"wal_005/0000000100000000000000{s:02X}.lzo" for s in range(2, 4)] + \
        ["wal_005/000000010000000000000004.00000028.backup.lzo"] + \
        [f"wal_005/0000000100000000000000{s:02X}.lzo" for s in range(4, 9)]
    WaleBackups(store).execute(keys)
    left = sorted(o.key for o in store.list(""))
    assert f"basebackups_005/{NEW}_backup_stop_sentinel.json" in left
    assert not any(OLD in k for k in left)
    assert "wal_005/00000002.history.lzo" in left and "wal_005/README" in left
    assert "wal_005/000000010000000000000009.lzo" in left


def test_a_kept_walship_backup_older_than_the_wale_ones_keeps_their_wal(store):
    # the oldest kept backup of either kind sets the boundary
    walship_backup = info("20261123T080000Z", "000000010000000000000003", source="walship")
    keys = WaleBackups(store).obsolete_keys(delete=[], keep=[walship_backup, info(NEW, "000000010000000000000009")])
    assert keys == ["wal_005/000000010000000000000002.lzo"]


def test_walship_backups_in_the_delete_list_are_not_wales_business(store):
    keys = WaleBackups(store).obsolete_keys(delete=[info("20261101T080000Z", "000000010000000000000001",
                                                       source="walship")], keep=[])
    assert keys == []
