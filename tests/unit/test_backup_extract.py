"""Extraction of backup parts: hostile members refused, every file checked against the manifest."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile

import pytest

from walship.backup import tarstream, walk
from walship.backup.extract import Destination, verify_part
from walship.backup.manifest import ManifestEntry, SliceTracker
from walship.errors import IntegrityError
from walship.restorefs import safe_relative


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
    Destination(str(dest), links or {}).extract_part([_tar(*members)], iter(manifest), "part 0")


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
    _file("base/" + "x" * 120 + "/../../../evil"),            # a long name: it travels in a PAX header
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
    Destination(str(dest), {}).extract_part(chunks, iter(manifest), "part 0")
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
    Destination(str(dest), {}).extract_part(chunks, iter(manifest), "part 0")
    assert (dest / "base" / "truncated").read_bytes() == b"t" * 100
    assert not (dest / "base" / "dropped").exists()


def _pgdata(tmp_path, files: dict[str, bytes]):
    src = tmp_path / "pgdata"
    (src / "global").mkdir(parents=True)
    (src / "PG_VERSION").write_text("15\n")
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    return src


def _parts(entries, part_size):
    """Each part of the plan as (chunks, manifest)."""
    parts = []
    for plan in tarstream.plan_parts(entries, part_size, 1000):
        manifest: list[ManifestEntry] = []
        parts.append((list(tarstream.tar_chunks(plan, manifest.append)), manifest))
    return parts


def test_a_file_larger_than_a_part_is_sliced_and_restored_whole_in_any_order(tmp_path):
    big = os.urandom(5 * tarstream.CHUNK + 333)
    src = _pgdata(tmp_path, {"base/5/16384": big, "base/5/16385": b"small"})
    os.chmod(src / "base/5/16384", 0o640)
    os.utime(src / "base/5/16384", (1_600_000_000, 1_600_000_000))
    parts = _parts(walk.walk(str(src)), 2 * tarstream.CHUNK)
    slices = [e for _, m in parts for e in m if e.path == "base/5/16384"]
    assert len(slices) >= 3 and len({e.offset for e in slices}) == len(slices)
    assert sum(e.size for e in slices) == len(big) and {e.file_size for e in slices} == {len(big)}
    dest = tmp_path / "dest"
    dest.mkdir()
    destination = Destination(str(dest), {})
    for number, (chunks, manifest) in reversed(list(enumerate(parts))):    # parts restore in any order
        destination.extract_part(chunks, iter(manifest), f"part {number}")
    destination.finish("backup")
    restored = dest / "base/5/16384"
    assert restored.read_bytes() == big
    assert oct(restored.stat().st_mode & 0o777) == "0o640" and restored.stat().st_mtime == 1_600_000_000
    assert (dest / "base/5/16385").read_bytes() == b"small"


def _sliced(tmp_path, size: int) -> tuple[list, Destination]:
    """A data directory whose base/5/16384 spans several 2 MiB parts: its parts, and a fresh destination."""
    src = _pgdata(tmp_path, {"base/5/16384": os.urandom(size)})
    dest = tmp_path / "dest"
    dest.mkdir()
    return _parts(walk.walk(str(src)), 2 * tarstream.CHUNK), Destination(str(dest), {})


def test_a_restore_missing_a_slice_is_refused_at_the_end(tmp_path):
    parts, destination = _sliced(tmp_path, 5 * tarstream.CHUNK)
    for number, (chunks, manifest) in enumerate(parts):
        if any(e.offset for e in manifest) and number == len(parts) - 1:
            continue                                     # the part holding the file's last slice is lost
        destination.extract_part(chunks, iter(manifest), f"part {number}")
    with pytest.raises(IntegrityError, match="base/5/16384 is incomplete"):
        destination.finish("backup")


def test_slices_that_overlap_or_repeat_are_refused(tmp_path):
    parts, destination = _sliced(tmp_path, 5 * tarstream.CHUNK)
    sliced = [(c, m) for c, m in parts if any(e.offset is not None for e in m)]
    for number, (chunks, manifest) in enumerate(parts):
        destination.extract_part(chunks, iter(manifest), f"part {number}")
    chunks, manifest = sliced[1]
    destination.extract_part(chunks, iter(manifest), "a part stored twice")
    with pytest.raises(IntegrityError, match="overlaps"):
        destination.finish("backup")


def test_a_whole_file_member_cannot_take_the_place_of_a_sliced_file(tmp_path):
    parts, destination = _sliced(tmp_path, 3 * tarstream.CHUNK)
    destination.extract_part(*parts[-1][:1], iter(parts[-1][1]), "part with a slice")
    info, data = _file("base/5/16384", b"impostor")
    with pytest.raises(IntegrityError, match="twice"):
        destination.extract_part([_tar((info, data))], iter([_entry_for(info, data)]), "hostile part")


def test_slices_of_a_file_dropped_during_the_backup_hold_zeros_and_restore_whole(tmp_path):
    src = _pgdata(tmp_path, {"base/5/16384": b"r" * (3 * tarstream.CHUNK)})
    entries = list(walk.walk(str(src)))
    (src / "base/5/16384").unlink()                       # DROP TABLE after the walk: replay drops it again
    parts = _parts(entries, 2 * tarstream.CHUNK)
    dest = tmp_path / "dest"
    dest.mkdir()
    destination = Destination(str(dest), {})
    for number, (chunks, manifest) in enumerate(parts):
        destination.extract_part(chunks, iter(manifest), f"part {number}")
    destination.finish("backup")
    assert (dest / "base/5/16384").read_bytes() == bytes(3 * tarstream.CHUNK)


def test_verify_reads_slices_and_finds_a_missing_one(tmp_path):
    src = _pgdata(tmp_path, {"base/5/16384": os.urandom(5 * tarstream.CHUNK)})
    parts = _parts(walk.walk(str(src)), 2 * tarstream.CHUNK)
    tracker = SliceTracker()
    files = sum(verify_part(c, iter(m), f"part {n}", tracker)[0] for n, (c, m) in enumerate(parts))
    tracker.check_complete("backup")
    assert files == 2                                    # PG_VERSION, and the sliced file once
    partial = SliceTracker()
    for n, (c, m) in enumerate(parts[:-1]):
        verify_part(c, iter(m), f"part {n}", partial)
    with pytest.raises(IntegrityError, match="incomplete"):
        partial.check_complete("backup")


def test_long_and_non_ascii_names_round_trip_through_pax_headers(tmp_path):
    name = "base/5/" + "é" * 60 + "x" * 90                 # over ustar's 100-byte name field
    src = _pgdata(tmp_path, {name: b"data"})
    [(chunks, manifest)] = _parts(walk.walk(str(src)), 1 << 30)
    dest = tmp_path / "dest"
    dest.mkdir()
    Destination(str(dest), {}).extract_part(chunks, iter(manifest), "part 0")
    assert (dest / name).read_bytes() == b"data"


@pytest.mark.parametrize("damage", ["cut inside a file", "cut before the end marker", "bad header checksum",
                                    "data after the end marker"])
def test_a_damaged_tar_stream_is_refused_with_the_part_named(tmp_path, damage):
    src = _pgdata(tmp_path, {"base/5/1": os.urandom(3000), "base/5/2": b"x" * 100})
    [(chunks, manifest)] = _parts(walk.walk(str(src)), 1 << 30)
    stream = b"".join(chunks)
    if damage == "cut inside a file":
        stream = stream[:len(stream) // 2]
    elif damage == "cut before the end marker":
        stream = stream[:-2 * 512]
    elif damage == "bad header checksum":
        stream = stream[:100] + bytes([stream[100] ^ 1]) + stream[101:]
    else:
        stream += b"garbage"
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(IntegrityError, match="part 7 is not a valid tar stream"):
        Destination(str(dest), {}).extract_part([stream], iter(manifest), "part 7")


def test_a_gnu_long_name_member_is_refused(tmp_path):
    info, data = _file("base/" + "y" * 150)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:   # walship writes PAX only
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(IntegrityError, match="refusing to extract"):
        Destination(str(tmp_path), {}).extract_part([out.getvalue()], iter([_entry_for(info, data)]), "part 0")


_MEMBERS = [
    (tarfile.REGTYPE, "base/5/16384", 8192, 1_700_000_000, ""),
    (tarfile.REGTYPE, "pg_tblspc/16500/PG_15_202209061/" + "d" * 60 + "/" + "r" * 60, 0, 1, ""),   # ustar prefix
    (tarfile.DIRTYPE, "base/5", 0, 1_700_000_001, ""),
    (tarfile.SYMTYPE, "pg_tblspc/16500", 0, 1_700_000_002, "/srv/tablespace"),
    (tarfile.REGTYPE, "base/5/16385.7", 9 << 30, 1_700_000_003, ""),      # larger than octal's 8 GiB
]


@pytest.mark.parametrize("fmt, kind, name, size, mtime, linkname", [
    (fmt, *member) for fmt in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT) for member in _MEMBERS
    if not (fmt == tarfile.USTAR_FORMAT and member[2] >= 8 << 30)])       # ustar cannot hold 8 GiB or more
def test_the_header_reader_reads_each_field_as_tarfile_does(fmt, kind, name, size, mtime, linkname):
    from walship.backup.tarreader import _header
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mtime, info.mode, info.linkname = kind, size, mtime, 0o640, linkname
    buf = info.tobuf(fmt, "utf-8", "surrogateescape")
    first = buf[:512]
    want = tarfile.TarInfo.frombuf(first, "utf-8", "surrogateescape")
    assert _header(first) == (want.name, want.type, want.mode, want.size, want.mtime, want.linkname)


def test_the_header_reader_refuses_a_field_that_is_not_a_number():
    from walship.backup.tarreader import TarFormatError, _header
    block = bytearray(tarfile.TarInfo("base/5/1").tobuf(tarfile.USTAR_FORMAT))
    block[124:136] = b"12x4567\x00\x00\x00\x00\x00"                 # size
    block[148:156] = b"        "
    block[148:155] = f"{sum(block):06o}\x00".encode()                 # a right checksum over the bad field
    with pytest.raises(TarFormatError, match="size is not a number"):
        _header(bytes(block))
