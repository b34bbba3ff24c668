"""The restore writer both restores (walship's parts, WAL-E's partitions) put their files through."""

import os
import stat

import pytest

from walship import restorefs
from walship.errors import IntegrityError
from walship.restorefs import RestoreWriter


def _writer(tmp_path, *links: str) -> RestoreWriter:
    dest = tmp_path / "restore"
    dest.mkdir()
    return RestoreWriter(str(dest), links)


def test_a_read_only_directory_gets_its_mode_only_once_its_content_is_in(tmp_path):
    writer = _writer(tmp_path)
    writer.mkdir("base", 0o500, 1_600_000_000, "part 0")
    writer.write_file("base/1/PG_VERSION", [b"16\n"], 0o600, 1_600_000_000, "part 0")
    writer.finish()
    base = tmp_path / "restore" / "base"
    assert stat.S_IMODE(base.stat().st_mode) == 0o500
    assert base.stat().st_mtime == 1_600_000_000
    assert stat.S_IMODE((base / "1").stat().st_mode) == 0o700      # no member of its own: made 0700
    assert (base / "1" / "PG_VERSION").read_bytes() == b"16\n"
    assert (writer.files, writer.bytes) == (1, 3)


def test_a_directory_member_after_its_content_still_sets_its_mode(tmp_path):
    writer = _writer(tmp_path)
    writer.write_file("global/pg_control", [b"x"], 0o600, 0, "part 1")   # another thread's part came first
    writer.mkdir("global", 0o750, None, "part 0")
    writer.finish()
    assert stat.S_IMODE((tmp_path / "restore" / "global").stat().st_mode) == 0o750


def test_a_symlink_in_the_way_is_refused_and_nothing_is_written_through_it(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    writer = _writer(tmp_path)
    os.symlink(elsewhere, tmp_path / "restore" / "base")
    with pytest.raises(IntegrityError, match="part 3: .*base is in the way of the restore"):
        writer.write_file("base/1/1259", [b"evil"], 0o600, 0, "part 3")
    assert list(elsewhere.iterdir()) == []


def test_an_existing_file_is_never_overwritten(tmp_path):
    writer = _writer(tmp_path)
    (tmp_path / "restore" / "PG_VERSION").write_bytes(b"15\n")
    with pytest.raises(IntegrityError, match="part 0: PG_VERSION is stored twice, or the destination already"):
        writer.write_file("PG_VERSION", [b"16\n"], 0o600, 0, "part 0")
    assert (tmp_path / "restore" / "PG_VERSION").read_bytes() == b"15\n"


@pytest.mark.parametrize("name", ["../escape", "/etc/cron.d/evil", "base/../../escape", "a//b", "./a", ""])
def test_names_that_could_leave_the_destination_are_refused(tmp_path, name):
    writer = _writer(tmp_path)
    with pytest.raises(IntegrityError, match="forbidden path"):
        writer.write_file(name, [b"x"], 0o600, 0, "part 0")
    assert not (tmp_path / "escape").exists()


def test_files_below_a_tablespace_link_land_in_its_location(tmp_path):
    location = tmp_path / "tblspc"
    location.mkdir()
    writer = _writer(tmp_path, "pg_tblspc/16384")
    (tmp_path / "restore" / "pg_tblspc").mkdir()
    os.symlink(location, tmp_path / "restore" / "pg_tblspc" / "16384")
    writer.mkdir("pg_tblspc/16384", 0o700, None, "part 0")              # the link stays the link
    writer.write_file("pg_tblspc/16384/PG_16_202307071/5/16385", [b"t" * 8192], 0o600, 0, "part 0")
    writer.finish()
    assert (tmp_path / "restore" / "pg_tblspc" / "16384").is_symlink()
    assert (location / "PG_16_202307071" / "5" / "16385").read_bytes() == b"t" * 8192


def test_slices_written_in_any_order_make_the_file_and_it_gets_its_mode_at_the_end(tmp_path):
    writer = _writer(tmp_path)
    writer.write_slice("base/5/16384", [b"b" * 10], 10, 20, 0o640, 1_700_000_000, "part 2")
    writer.write_slice("base/5/16384", [b"a" * 10], 0, 20, 0o640, 1_700_000_000, "part 1")
    writer.finish()
    path = tmp_path / "restore" / "base" / "5" / "16384"
    assert path.read_bytes() == b"a" * 10 + b"b" * 10
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 and path.stat().st_mtime == 1_700_000_000
    assert (writer.files, writer.bytes) == (1, 20)


def test_without_syncfs_every_file_and_directory_is_fsynced(tmp_path, monkeypatch):
    location = tmp_path / "tblspc"
    location.mkdir()
    writer = _writer(tmp_path, "pg_tblspc/16384")
    (tmp_path / "restore" / "pg_tblspc").mkdir()
    os.symlink(location, tmp_path / "restore" / "pg_tblspc" / "16384")
    writer.write_file("base/1/1259", [b"x"], 0o600, 0, "part 0")
    writer.write_file("pg_tblspc/16384/PG_16_202307071/5/16385", [b"t"], 0o600, 0, "part 0")
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(restorefs, "_syncfs_call", None)                 # a system without syncfs(2)
    monkeypatch.setattr(restorefs.os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")),
                                                             real_fsync(fd)))
    writer.finish()
    dest = str(tmp_path / "restore")
    assert {f"{dest}/base/1/1259", f"{dest}/base/1", f"{dest}/base", dest,
            f"{location}/PG_16_202307071/5/16385", f"{location}/PG_16_202307071", str(location)} <= set(synced)
