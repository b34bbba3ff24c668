"""WAL-E base backups: names, listing from sentinels, and a restore that refuses hostile archives.

The layouts here are built the way WAL-E 1.1.1 writes them (operator/backup.py,
tar_partition.py): tar partitions through `lzop -c`, then the stop sentinel.
The real WAL-E writing them is covered by tests/integration/test_wale.py.
"""

import io
import json
import os
import tarfile

import pytest

from tests.support.lzop import lzop_c
from walship.config import Settings
from walship.errors import ConfigError, IntegrityError
from walship.repo.catalog import BackupNotFound, Catalog
from walship.storage.local import LocalStore
from walship.walecompat import backups

HOT = "base_000000010000000200000034_00000040"          # pg_start_backup at 2/34000028 (decimal offset 40)
OFFLINE = "base_000000010000000000000015_00000015"       # --while-offline with REDO at 0/1500718


def catalogued(store, name):
    """The WAL-E backup as the repository's catalog (WAL-E's source alone) lists it."""
    return Catalog(store, [backups.WaleBackups(store)]).find(name)


def tar_bytes(members) -> bytes:
    """members: (TarInfo, content or None)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w|") as tar:
        for info, content in members:
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    return buf.getvalue()


def entry(name, kind=tarfile.REGTYPE, content=b"", mode=0o600, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.linkname = kind, mode, 1_700_000_000, linkname
    if kind == tarfile.REGTYPE:
        info.size = len(content)
        return info, content
    return info, None


def write_backup(store, name, parts, spec=None, version="PostgreSQL 15.18 (Debian 15.18-0+deb12u1)"):
    base = f"basebackups_005/{name}"
    store.put(f"{base}/extended_version.txt", version.encode())
    for i, members in enumerate(parts):
        store.put(f"{base}/tar_partitions/part_{i:08d}.tar.lzo", lzop_c(tar_bytes(members)))
    stop = name[5:29]
    store.put(f"{base}_backup_stop_sentinel.json", json.dumps({
        "wal_segment_backup_stop": stop, "wal_segment_offset_backup_stop": name[30:],
        "expanded_size_bytes": 12345, "spec": spec or {"base_prefix": "/var/lib/postgresql/15/main/",
                                                          "tablespaces": []}}).encode())


def datadir(*extra):
    return [[entry("/", tarfile.DIRTYPE, mode=0o700), entry("PG_VERSION", content=b"15\n"),
             entry("global", tarfile.DIRTYPE, mode=0o700),
             entry("global/pg_control", content=b"\1" * 8192, mode=0o600),
             entry("pg_wal", tarfile.DIRTYPE, mode=0o700), *extra]]


@pytest.fixture
def store(tmp_path):
    return LocalStore(str(tmp_path / "repo"))


def test_start_point_of_a_hot_backup_name_is_exact():
    start = backups.start_point(HOT)
    assert (start.candidates, start.lsn) == (("000000010000000200000034",), "2/34000028")


def test_an_offline_name_leaves_three_possible_start_segments():
    # REDO 0/1500718 was named 15: the real segment is 15 (8-digit offset), 01 (7 digits) or 00 (fewer)
    start = backups.start_point(OFFLINE)
    assert start.candidates == ("000000010000000000000000", "000000010000000000000001", "000000010000000000000015")
    assert start.lsn is None
    assert backups.start_point("base_000000010000000000000005_00000005").candidates == ("000000010000000000000000",)


def test_an_offline_backup_starts_at_its_lowest_archived_candidate(store):
    write_backup(store, OFFLINE, datadir())
    [backup] = backups.list_backups(store)
    assert backup.start_wal == "000000010000000000000000"       # nothing archived: the lowest, to be safe
    store.put("wal_005/000000010000000000000015.lzo", lzop_c(b"x"))
    assert backups.list_backups(store)[0].start_wal == "000000010000000000000015"
    store.put("wal/000000010000000000000001", b"walship's copy")
    [backup] = backups.list_backups(store)
    assert (backup.start_wal, backup.stop_wal, backup.start_lsn) == \
        ("000000010000000000000001", "000000010000000000000001", "0/1000000")


def test_pg_version_numbers():
    assert backups.pg_version_number("PostgreSQL 15.18 (Debian 15.18-0+deb12u1) on x86_64") == 150018
    assert backups.pg_version_number("PostgreSQL 9.6.24 on x86_64-pc-linux-gnu") == 90624
    assert backups.pg_version_number("PostgreSQL 16beta1") == 160000
    assert backups.pg_version_number("something else") == 0


def test_listing_shows_complete_backups_only_oldest_first(store):
    write_backup(store, OFFLINE, datadir())
    os.utime(os.path.join(store.root, f"basebackups_005/{OFFLINE}_backup_stop_sentinel.json"), (1000, 1000))
    write_backup(store, HOT, datadir())
    # a backup that never finished: partitions but no sentinel
    store.put("basebackups_005/base_000000010000000300000001_00000040/tar_partitions/part_00000000.tar.lzo",
              lzop_c(b"x"))
    listed = backups.list_backups(store)
    assert [b.name for b in listed] == [OFFLINE, HOT]
    hot = listed[1]
    assert (hot.source, hot.timeline, hot.start_wal, hot.stop_wal, hot.start_lsn, hot.stop_lsn, hot.pg_version,
            hot.size) == ("wal-e", 1, "000000010000000200000034", "000000010000000200000034", "2/34000028",
                          "2/34000028", 150018, 12345)
    assert hot.stored_size > 0
    assert catalogued(store, "LATEST").name == HOT


def test_a_corrupt_sentinel_is_named(store):
    write_backup(store, HOT, datadir())
    store.put(f"basebackups_005/{HOT}_backup_stop_sentinel.json", b"{not json")
    with pytest.raises(IntegrityError, match=f"WAL-E sentinel basebackups_005/{HOT}_backup_stop_sentinel.json"):
        backups.list_backups(store)


def test_restore_brings_back_files_modes_and_an_empty_wal_directory(store, tmp_path):
    write_backup(store, HOT, datadir(entry("base", tarfile.DIRTYPE, mode=0o700),
                                     entry("base/1", tarfile.DIRTYPE, mode=0o700),
                                     entry("base/1/1259", content=b"heap" * 2048, mode=0o600),
                                     entry("backup_label", content=b"START WAL LOCATION: 2/34000028\n"),
                                     entry("readonly.txt", content=b"r", mode=0o400))
                 + [[entry("base/1/2608", content=b"second partition", mode=0o600)]])
    dest = tmp_path / "restore"
    info = backups.restore(store, catalogued(store, HOT), str(dest), Settings(backup_concurrency=2))
    assert info.name == HOT
    assert (dest / "base/1/1259").read_bytes() == b"heap" * 2048
    assert (dest / "base/1/2608").read_bytes() == b"second partition"
    assert oct((dest / "readonly.txt").stat().st_mode & 0o777) == "0o400"
    assert (dest / "global/pg_control").stat().st_mtime == 1_700_000_000
    assert (dest / "pg_wal/archive_status").is_dir() and not os.listdir(dest / "pg_wal/archive_status")
    assert oct(dest.stat().st_mode & 0o777) == "0o700"


def test_a_symlinked_pg_wal_comes_back_as_an_empty_directory(store, tmp_path):
    write_backup(store, HOT, [[entry("PG_VERSION", content=b"15\n"),
                               entry("pg_wal", tarfile.SYMTYPE, linkname="/mnt/wal/15/main")]])
    dest = tmp_path / "restore"
    backups.restore(store, catalogued(store, HOT), str(dest), Settings())
    assert (dest / "pg_wal").is_dir() and not (dest / "pg_wal").is_symlink()


@pytest.mark.parametrize("member, complaint", [
    (entry("../escape", content=b"x"), "leaves the data directory"),
    (entry("base/../../escape", content=b"x"), "leaves the data directory"),
    (entry("/etc/cron.d/evil", content=b"x"), "leaves the data directory"),
    (entry("base/link", tarfile.SYMTYPE, linkname="/etc"), "symbolic link"),
    (entry("base/hard", tarfile.LNKTYPE, linkname="PG_VERSION"), "hard link"),
    (entry("dev", tarfile.CHRTYPE), "special file"),
    (entry("fifo", tarfile.FIFOTYPE), "special file"),
])
def test_hostile_members_are_refused_naming_the_partition(store, tmp_path, member, complaint):
    write_backup(store, HOT, [[entry("base", tarfile.DIRTYPE, mode=0o700), member]])
    with pytest.raises(IntegrityError, match=rf"tar_partitions/part_00000000.tar.lzo .*{complaint}"):
        backups.restore(store, catalogued(store, HOT), str(tmp_path / "restore"), Settings())
    assert not (tmp_path / "escape").exists()


def test_a_file_stored_twice_is_refused(store, tmp_path):
    write_backup(store, HOT, [[entry("PG_VERSION", content=b"15\n")], [entry("PG_VERSION", content=b"16\n")]])
    with pytest.raises(IntegrityError, match="PG_VERSION is stored twice"):
        backups.restore(store, catalogued(store, HOT), str(tmp_path / "restore"), Settings())


def test_a_corrupt_partition_fails_naming_it(store, tmp_path):
    write_backup(store, HOT, datadir(entry("big", content=os.urandom(200_000) + bytes(300_000))))
    key = f"basebackups_005/{HOT}/tar_partitions/part_00000000.tar.lzo"
    blob = bytearray(store.get(key))
    blob[len(blob) // 2] ^= 0x10
    store.put(key, bytes(blob))
    with pytest.raises(IntegrityError, match=f"WAL-E object {key} in file://.* is corrupt or truncated"):
        backups.restore(store, catalogued(store, HOT), str(tmp_path / "restore"), Settings())


def test_a_missing_partition_is_noticed(store, tmp_path):
    write_backup(store, HOT, [[entry("a", content=b"1")], [entry("b", content=b"2")], [entry("c", content=b"3")]])
    store.delete([f"basebackups_005/{HOT}/tar_partitions/part_00000001.tar.lzo"])
    with pytest.raises(IntegrityError, match=r"missing tar partitions \(found \[0, 2\]\)"):
        backups.restore(store, catalogued(store, HOT), str(tmp_path / "restore"), Settings())
    store.delete([f"basebackups_005/{HOT}/tar_partitions/part_0000000{n}.tar.lzo" for n in (0, 2)])
    with pytest.raises(IntegrityError, match="has a stop sentinel but no tar partitions"):
        backups.restore(store, catalogued(store, HOT), str(tmp_path / "restore"), Settings())


def test_tablespaces_go_back_to_their_location_or_where_the_restore_spec_says(store, tmp_path):
    original = tmp_path / "tblspc-original"
    spec = {"base_prefix": "/var/lib/postgresql/15/main/", "tablespaces": ["16385"],
            "16385": {"loc": f"{original}/", "link": "pg_tblspc/16385"}}
    members = [entry("PG_VERSION", content=b"15\n"), entry("pg_tblspc", tarfile.DIRTYPE, mode=0o700),
               entry("pg_tblspc/16385/PG_15_202209061", tarfile.DIRTYPE, mode=0o700),
               entry("pg_tblspc/16385/PG_15_202209061/5/16386", content=b"table in tablespace")]
    write_backup(store, HOT, [members], spec=spec)

    backups.restore(store, catalogued(store, HOT), str(tmp_path / "r1"), Settings())
    assert os.readlink(tmp_path / "r1/pg_tblspc/16385") == str(original)
    assert (original / "PG_15_202209061/5/16386").read_bytes() == b"table in tablespace"

    # the original location is in use now: refused, and a restore spec moves it
    with pytest.raises(ConfigError, match=f"tablespace 16385 would be restored into {original}/, which is not empty"):
        backups.restore(store, catalogued(store, HOT), str(tmp_path / "r2"), Settings())
    moved = tmp_path / "tblspc-moved"
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({"16385": {"loc": str(moved)}}))
    backups.restore(store, catalogued(store, HOT), str(tmp_path / "r3"), Settings(), restore_spec=str(spec_file))
    assert (tmp_path / "r3/pg_tblspc/16385/PG_15_202209061/5/16386").read_bytes() == b"table in tablespace"
    assert os.readlink(tmp_path / "r3/pg_tblspc/16385") == str(moved)


def test_restore_refuses_a_non_empty_destination_and_an_unknown_name(store, tmp_path):
    write_backup(store, HOT, datadir())
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "something").write_text("x")
    with pytest.raises(ConfigError, match="is not empty"):
        backups.restore(store, catalogued(store, HOT), str(busy), Settings())
    with pytest.raises(BackupNotFound, match="no complete backup named base_0000000100000009"):
        catalogued(store, "base_000000010000000900000001_00000040")
