"""Writing one tar part of a backup as a stream of chunks, recording its manifest.

Each file is opened, its size taken from the open file, and exactly that many
bytes stored: a file PostgreSQL extends during the backup is cut at that size,
one it truncates is padded with zeros. Both are fine: WAL replay from the
backup's start point rewrites every block changed after it. A file that
vanished before it was opened was dropped by PostgreSQL and is left out.
The slices of a file larger than a part (plan_parts) cover the size the walk
saw, whatever happens to the file later, and a vanished file's slices hold
zeros, so that a restore always finds the file whole; replay drops it again.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from walship.backup.manifest import ManifestEntry
from walship.backup.walk import Entry
from walship.errors import WalshipError

CHUNK = 1 << 20
DIRECT = 64 * 1024            # blocks at least this large go to the compressor as read, not via the buffer
MIN_SLICE = 1 << 20           # a slice smaller than this would cost more than it brings: start a new part
_BLOCK = tarfile.BLOCKSIZE
_KINDS = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "link": tarfile.SYMTYPE}


def header(name: str, kind: str, mode: int, mtime: float, size: int = 0, target: str = "") -> bytes:
    info = tarfile.TarInfo(name)
    info.type = _KINDS[kind]
    info.mode = mode
    info.mtime = int(mtime)
    info.size = size if kind == "file" else 0
    info.linkname = target
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


class Reader(Protocol):
    """Sees a member's content block by block, in order, while it is read."""

    def feed(self, block: bytes) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Slice:
    """Bytes [offset, offset + length) of a file larger than a part, stored as a member of its own."""
    entry: Entry
    offset: int
    length: int


def tar_chunks(items: Iterable[Entry | Slice], record: Callable[[ManifestEntry], None],
               inspect: Callable[[str, str, int, int], Reader | None] | None = None) -> Iterator[bytes]:
    """The tar stream of a part's items; record() gets each member's manifest entry.

    Headers and small files are gathered into chunks of about CHUNK bytes; the
    blocks of larger files are handed on as they are read, without a copy.
    inspect(name, path, fd, offset), when given, may return a Reader that sees every
    block of the member as it is read (backup-push verifies page checksums so).
    """
    buf = bytearray()
    for item in items:
        entry = item.entry if isinstance(item, Slice) else item
        if entry.kind != "file":
            buf += header(entry.name, entry.kind, entry.mode, entry.mtime, target=entry.target)
            record(ManifestEntry(entry.name, entry.kind, entry.mode, entry.mtime, target=entry.target))
            continue
        fd = _open(entry.path)
        if fd is None and not isinstance(item, Slice):
            continue                  # dropped by PostgreSQL; a slice stays, as zeros, so the file stays whole
        try:
            if isinstance(item, Slice):
                start, length = item.offset, item.length
            else:
                start, length = 0, os.fstat(fd).st_size
            buf += header(entry.name, "file", entry.mode, entry.mtime, length)
            digest = hashlib.sha256()
            reader = inspect(entry.name, entry.path, fd, start) if inspect is not None and fd is not None else None
            for block in _content(fd, start, length):
                digest.update(block)
                if reader is not None:
                    reader.feed(block)
                if len(block) >= DIRECT:
                    if buf:
                        yield bytes(buf)
                        buf.clear()
                    yield block
                else:
                    buf += block
                    if len(buf) >= CHUNK:
                        yield bytes(buf)
                        buf.clear()
            buf += bytes(-length % _BLOCK)
            if reader is not None:
                reader.close()
        finally:
            if fd is not None:
                os.close(fd)
        if isinstance(item, Slice):
            record(ManifestEntry(entry.name, "file", entry.mode, entry.mtime, length, digest.hexdigest(),
                                 offset=start, file_size=entry.size))
        else:
            record(ManifestEntry(entry.name, "file", entry.mode, entry.mtime, length, digest.hexdigest()))
        if len(buf) >= CHUNK:
            yield bytes(buf)
            buf.clear()
    buf += END_OF_ARCHIVE
    yield bytes(buf)


def _open(path: str) -> int | None:
    """A file descriptor to read path, or None when the file is gone."""
    try:
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise WalshipError(f"cannot read {path}: {exc.strerror}",
                           "run backup-push as the user that owns the data directory (postgres)") from None


def _content(fd: int | None, start: int, length: int) -> Iterator[bytes]:
    """length bytes of the file from start, in blocks of at most CHUNK: zeros where it ends early (or is gone)."""
    position, end = start, start + length
    while position < end:
        want = min(CHUNK, end - position)
        block = os.pread(fd, want, position) if fd is not None else b""
        if not block:                          # truncated (or dropped) since the walk
            block = bytes(want)
        yield block
        position += len(block)


def plan_parts(entries: Iterable[Entry], part_size: int, max_members: int) -> Iterator[list[Entry | Slice]]:
    """Group entries into parts of about part_size bytes (at least one item, at most max_members).

    A file larger than a part is cut into slices: the first fills what is left of the
    current part, the next ones a part each. A restore then writes one large file
    with several workers instead of one.
    """
    part: list[Entry | Slice] = []
    size = 0
    for entry in entries:
        if entry.kind == "file" and entry.size > part_size:
            offset = 0
            while offset < entry.size:
                room = part_size - size
                if room < min(MIN_SLICE, part_size) and part:
                    yield part
                    part, size, room = [], 0, part_size
                length = min(room, entry.size - offset)
                part.append(Slice(entry, offset, length))
                size += _BLOCK + length
                offset += length
                if size >= part_size or len(part) >= max_members:
                    yield part
                    part, size = [], 0
            continue
        part.append(entry)
        size += _BLOCK + entry.size
        if size >= part_size or len(part) >= max_members:
            yield part
            part, size = [], 0
    if part:
        yield part


def memory_member(name: str, data: bytes, mtime: float, record: Callable[[ManifestEntry], None]) -> bytes:
    """A file member whose content is in memory (backup_label, tablespace_map)."""
    record(ManifestEntry(name, "file", 0o600, mtime, len(data), hashlib.sha256(data).hexdigest()))
    return header(name, "file", 0o600, mtime, len(data)) + data + bytes(-len(data) % _BLOCK)


END_OF_ARCHIVE = bytes(2 * _BLOCK)
