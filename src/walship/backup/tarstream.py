"""Writing one tar part of a backup as a stream of chunks, recording its manifest.

Each file is opened, its size taken from the open file, and exactly that many
bytes stored: a file PostgreSQL extends during the backup is cut at that size,
one it truncates is padded with zeros. Both are fine: WAL replay from the
backup's start point rewrites every block changed after it. A file that
vanished before it was opened was dropped by PostgreSQL and is left out.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from typing import Callable, Iterable, Iterator

from walship.backup.manifest import ManifestEntry
from walship.backup.walk import Entry
from walship.errors import WalshipError

CHUNK = 1 << 20
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


def tar_chunks(entries: Iterable[Entry], record: Callable[[ManifestEntry], None]) -> Iterator[bytes]:
    """The tar stream of the entries, in chunks of about CHUNK bytes; record() gets each member's entry."""
    buf = bytearray()
    for entry in entries:
        if entry.kind != "file":
            buf += header(entry.name, entry.kind, entry.mode, entry.mtime, target=entry.target)
            record(ManifestEntry(entry.name, entry.kind, entry.mode, entry.mtime, target=entry.target))
        else:
            try:
                fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise WalshipError(f"cannot read {entry.path}: {exc.strerror}",
                                   "run backup-push as the user that owns the data directory (postgres)") from None
            with os.fdopen(fd, "rb", buffering=0) as fh:
                size = os.fstat(fd).st_size
                buf += header(entry.name, "file", entry.mode, entry.mtime, size)
                digest = hashlib.sha256()
                left = size
                while left:
                    block = fh.read(min(CHUNK, left))
                    if not block:                     # truncated since it was opened
                        block = bytes(min(CHUNK, left))
                    digest.update(block)
                    buf += block
                    left -= len(block)
                    if len(buf) >= CHUNK:
                        yield bytes(buf)
                        buf.clear()
                buf += bytes(-size % _BLOCK)
            record(ManifestEntry(entry.name, "file", entry.mode, entry.mtime, size, digest.hexdigest()))
        if len(buf) >= CHUNK:
            yield bytes(buf)
            buf.clear()
    buf += END_OF_ARCHIVE
    yield bytes(buf)


def plan_parts(entries: Iterable[Entry], part_size: int, max_members: int) -> Iterator[list[Entry]]:
    """Group entries into parts of about part_size bytes (at least one entry, at most max_members)."""
    part: list[Entry] = []
    size = 0
    for entry in entries:
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
