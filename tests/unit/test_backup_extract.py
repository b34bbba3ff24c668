"""Extraction of backup parts: hostile members refused, every file checked against the manifest."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile

import pytest

from walship.backup import tarstream, walk
from walship.backup.extract import Destination, safe_relative
from walship.streams import ChunkReader
from walship.backup.manifest import ManifestEntry
from walship.errors import IntegrityError


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    return info, data


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, b""


def _entry_for(info: tarfile.TarInfo, data: bytes) -> ManifestEntry:
    kind = "file" if info.isreg() else "dir" if info.isdir() else "link"
    return ManifestEntry(info.name, kind, info.mode, info.mtime, len(data) if info.isreg() else 0,
                         hashlib.sha256(data).hexdigest() if info.isreg() else "", info.linkname)


def _extract(dest, members, manifest=None, links=None) -> None:
    manifest = manifest if manifest is not None else [_entry_for(i, d) for i, d in members]
    Destination(str(dest), links or {}).extract_part(ChunkReader([_tar(*members)]), iter(manifest), "part 0")


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "/etc/evil", "./x", "a//b", ""])
def test_paths_that_could_leave_the_destination_are_refused(name):
    with pytest.raises(IntegrityError, match="forbidden path"):
        safe_relative(name, "part 0")


@pytest.mark.parametrize("member", [
    _file("../outside"),
    _link("base/evil", "/etc"),                          # a symbolic link outside pg_tblspc
    _link("pg_tblspc/16384", "/"),                       # a tablespace link the restore did not plan
    _link("base/hard", "/etc/passwd", tarfile.LNKTYPE),
    _link("base/fifo", "", tarfile.FIFOTYPE),
])
def test_hostile_members_are_refused_and_nothing_is_written_outside(tmp_path, member):
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(IntegrityError):
        _extract(dest, [member])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest"]
    assert not any(p.is_symlink() for p in dest.rglob("*"))


def test_a_file_whose_content_differs_from_the_manifest_is_refused(tmp_path):
    info, data = _file("base/1/1234", b"good")
    wrong = ManifestEntry("base/1/1234", "file", 0o600, 0, 4, hashlib.sha256(b"evil").hexdigest())
    with pytest.raises(IntegrityError, match="does not match the manifest"):
        _extract(tmp_path, [(info, data)], [wrong])


def test_a_member_missing_from_the_part_is_detected(tmp_path):
    members = [_file("a", b"1")]
    extra = ManifestEntry("b", "file", 0o600, 0, 1, hashlib.sha256(b"2").hexdigest())
    with pytest.raises(IntegrityError, match="lacks b"):
        _extract(tmp_path, members, [_entry_for(*members[0]), extra])


def test_a_planned_tablespace_link_is_accepted_and_its_files_land_at_the_new_location(tmp_path):
    dest, location = tmp_path / "dest", tmp_path / "ts"
    (dest / "pg_tblspc").mkdir(parents=True)
    location.mkdir()
    os.symlink(location, dest / "pg_tblspc" / "16384")
    _extract(dest, [_link("pg_tblspc/16384", "/old/place"), _file("pg_tblspc/16384/PG_15/5/1", b"data")],
             links={"pg_tblspc/16384": str(location)})
    assert (location / "PG_15" / "5" / "1").read_bytes() == b"data"


def test_what_backup_push_writes_extracts_back_identical(tmp_path):
    src = tmp_path / "pgdata"
    (src / "global").mkdir(parents=True)
    (src / "PG_VERSION").write_text("15\n")
    (src / "base" / "5").mkdir(parents=True)
    (src / "base" / "5" / "16384").write_bytes(os.urandom(3 * tarstream.CHUNK + 17))
    (src / "global" / "pg_control").write_bytes(b"c" * 8192)
    os.chmod(src / "base" / "5" / "16384", 0o640)
    manifest: list[ManifestEntry] = []
    chunks = list(tarstream.tar_chunks(walk.walk(str(src)), manifest.append))
    dest = tmp_path / "dest"
    dest.mkdir()
    Destination(str(dest), {}).extract_part(ChunkReader(chunks), iter(manifest), "part 0")
    for entry in manifest:
        if entry.type == "file":
            assert (dest / entry.path).read_bytes() == (src / entry.path).read_bytes()
            assert (dest / entry.path).stat().st_mode & 0o777 == entry.mode
    assert oct((dest / "base" / "5" / "16384").stat().st_mode & 0o777) == "0o640"


def test_files_that_vanish_or_shrink_during_the_backup_are_handled(tmp_path):
    src = tmp_path / "pgdata"
    (src / "global").mkdir(parents=True)
    (src / "PG_VERSION").write_text("15\n")
    (src / "base").mkdir()
    (src / "base" / "dropped").write_bytes(b"d" * 5000)
    (src / "base" / "truncated").write_bytes(b"t" * 5000)
    entries = list(walk.walk(str(src)))                     # the walk saw both files at 5000 bytes
    (src / "base" / "dropped").unlink()                      # DROP TABLE, then VACUUM truncating a relation
    (src / "base" / "truncated").write_bytes(b"t" * 100)
    manifest: list[ManifestEntry] = []
    chunks = list(tarstream.tar_chunks(entries, manifest.append))
    assert "base/dropped" not in {e.path for e in manifest}
    dest = tmp_path / "dest"
    dest.mkdir()
    Destination(str(dest), {}).extract_part(ChunkReader(chunks), iter(manifest), "part 0")
    assert (dest / "base" / "truncated").read_bytes() == b"t" * 100
    assert not (dest / "base" / "dropped").exists()
