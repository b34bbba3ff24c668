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

from walship.backup import blockmap
from walship.backup.manifest import ManifestEntry
from walship.backup.walk import Entry
from walship.errors import WalshipError

CHUNK = 1 << 20
PIECE = 1 << 20               # an incremental's piece of a relation file: at most this many bytes (held in memory)
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
class MappedEntry(Entry):
    """A relation file with its parent's block map (None: the parent has no such file, every block is stored),
    and what WAL summaries say changed in it since the parent (None: read it whole)."""
    parent: blockmap.FileMap | None = None
    changes: blockmap.FileChanges | None = None


@dataclass
class BlockContext:
    """How one part's relation files are read: hashed into `maps`, and for an incremental stored as pieces."""
    maps: blockmap.PartMaps
    own: int                  # this backup's index in its chain (0: a full)
    incremental: bool
    blocks_held: int = 0      # blocks of the relation files (slices) of the part
    blocks_read: int = 0      # of those, the blocks read from the data directory


@dataclass(frozen=True, slots=True)
class Slice:
    """Bytes [offset, offset + length) of a file larger than a part, stored as a member of its own."""
    entry: Entry
    offset: int
    length: int


def tar_chunks(items: Iterable[Entry | Slice], record: Callable[[ManifestEntry], None],
               inspect: Callable[[str, str, int, int], Reader | None] | None = None,
               blocks: BlockContext | None = None) -> Iterator[bytes]:
    """The tar stream of a part's items; record() gets each member's manifest entry.

    Headers and small files are gathered into chunks of about CHUNK bytes; the
    blocks of larger files are handed on as they are read, without a copy.
    inspect(name, path, fd, offset), when given, may return a Reader that sees every
    block of the member as it is read (backup-push verifies page checksums so).
    blocks, when given, maps relation files block by block (blockmap.Recorder); for an incremental
    backup they are stored as pieces holding only the blocks the parent does not hold (_pieces).
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
                assert fd is not None                  # a whole file that vanished was skipped above
                start, length = 0, os.fstat(fd).st_size
            reader = inspect(entry.name, entry.path, fd, start) if inspect is not None and fd is not None else None
            recorder = None
            part_maps = blocks.maps if blocks is not None else blockmap.PartMaps()
            if blocks is not None and blockmap.is_relation_file(entry.name):
                file_size = entry.size if isinstance(item, Slice) else length
                parent = entry.parent if isinstance(entry, MappedEntry) else None
                first, end = start // blockmap.BLOCK, blockmap.blocks_of(start + length)
                recorder = blockmap.Recorder(entry.name, file_size, first, parent, blocks.own, blocks.incremental)
                blocks.blocks_held += end - first
                if blocks.incremental:
                    if buf:
                        yield bytes(buf)
                        buf.clear()
                    changes = entry.changes if isinstance(entry, MappedEntry) else None
                    if (changes is not None and parent is not None and fd is not None
                            and start % blockmap.BLOCK == 0 and length % blockmap.BLOCK == 0):
                        runs = blockmap.runs_to_read(changes, parent, first, end)
                        blocks.blocks_read += sum(n for _, n in runs)
                        found = _read_runs(entry, fd, runs, end, recorder, inspect)
                    else:
                        blocks.blocks_read += end - first
                        found = _read_all(_content(fd, start, length), recorder, reader)
                    yield from _pieces(entry, found, record, file_size)
                    if reader is not None:
                        reader.close()
                    part_maps.add(recorder.map)
                    continue
                blocks.blocks_read += end - first
            buf += header(entry.name, "file", entry.mode, entry.mtime, length)
            digest = hashlib.sha256()
            for block in _content(fd, start, length):
                digest.update(block)
                if reader is not None:
                    reader.feed(block)
                if recorder is not None:
                    recorder.hash_all(block)
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
            if recorder is not None:
                for _ in recorder.finish():
                    pass
                part_maps.add(recorder.map)
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


def _read_all(content: Iterable[bytes], recorder: blockmap.Recorder,
              reader: Reader | None) -> Iterator[tuple[int, memoryview, bool]]:
    """Every block of the file (or slice), hashed and decided (blockmap.Recorder)."""
    for chunk in content:
        if reader is not None:
            reader.feed(chunk)
        yield from recorder.blocks(chunk)
    yield from recorder.finish()


def _read_runs(entry: Entry, fd: int, runs: list[tuple[int, int]], end: int, recorder: blockmap.Recorder,
               inspect: Callable[[str, str, int, int], Reader | None] | None
               ) -> Iterator[tuple[int, memoryview, bool]]:
    """Only the blocks of these runs, hashed and decided; every other block up to `end` takes the parent's
    hash and origin (WAL summaries say it did not change since the parent's start)."""
    for first, count in runs:
        recorder.inherit_to(first)
        offset = first * blockmap.BLOCK
        reader = inspect(entry.name, entry.path, fd, offset) if inspect is not None else None
        for chunk in _content(fd, offset, count * blockmap.BLOCK):
            if reader is not None:
                reader.feed(chunk)
            yield from recorder.blocks(chunk)
        if reader is not None:
            reader.close()
    yield from recorder.finish()
    recorder.inherit_to(end)


def _pieces(entry: Entry, found: Iterable[tuple[int, memoryview, bool]], record: Callable[[ManifestEntry], None],
            file_size: int) -> Iterator[bytes]:
    """An incremental's members for one relation file (or slice): the blocks it stores, in pieces of at most
    PIECE bytes; at least one piece, empty when nothing changed, so that every file has a member."""
    pending = bytearray()
    runs: list[list[int]] = []
    number = 0

    def piece() -> bytes:
        data = bytes(pending)
        record(ManifestEntry(entry.name, "file", entry.mode, entry.mtime, len(data), hashlib.sha256(data).hexdigest(),
                             file_size=file_size, blocks=tuple((a, n) for a, n in runs), piece=number))
        return header(entry.name, "file", entry.mode, entry.mtime, len(data)) + data + bytes(-len(data) % _BLOCK)

    def chosen(found: Iterable[tuple[int, memoryview, bool]]) -> Iterator[bytes]:
        nonlocal number
        for block_number, data, stored in found:
            if not stored:
                continue
            if runs and runs[-1][0] + runs[-1][1] == block_number:
                runs[-1][1] += 1
            else:
                runs.append([block_number, 1])
            pending.extend(data)
            if len(pending) >= PIECE:
                yield piece()
                number += 1
                pending.clear()
                runs.clear()

    yield from chosen(found)
    if pending or number == 0:
        yield piece()


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
                if length < entry.size - offset and blockmap.is_relation_file(entry.name):
                    # on a block boundary: the slices of a relation file map whole blocks (blockmap)
                    length = max(length - length % blockmap.BLOCK, min(blockmap.BLOCK, entry.size - offset))
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
