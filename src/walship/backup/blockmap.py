"""Block maps: the SHA-256 (cut to 128 bits) of every 8 KiB block of every relation file a backup read, and where it is stored.

Every walship backup (full or incremental) writes, beside each part that holds
relation files (base/<db>/, global/, pg_tblspc/<oid>/<version>/<db>/ files named
<relfilenode>[_fsm|_vm|_init][.<segment>]), a block map object
`part_<n>.blockmap`: for each such file of the part, in the part's order, its
size and, per block, the *origin*, the index in the backup's chain (full first,
this backup last) of the backup that stores those bytes, and the hash of the
blocks this backup stores itself (its own index). A block taken from an older
backup keeps its hash in that backup's map only: an incremental's map costs
2 bytes per unchanged block (runs of one origin, which compress to almost
nothing) and 18 per block it stores, not 18 per block of the cluster. The hash
of any block is thus found in the map of the backup its origin names, where the
block's origin is that backup itself (ChainMaps resolves them, one file at a time).

The records, binary, in the codec envelope of every stored object (compressed,
encrypted like the parts):

    u16 path length, path (UTF-8), u64 file size, u32 first block, u32 blocks, u16 own index,
    blocks x u16 origin (little endian), then 16 bytes of truncated SHA-256 for each block whose origin is own

A sliced file (larger than a part) has one record per slice, in consecutive
parts. `blockmap.index` lists, per part, the first and last relation file of
its map and how many blocks of each origin it references: a restore finds the
maps it needs by path range, and checks that it wrote exactly that many blocks
from each backup of the chain.

Order: parts and their maps follow the walk's order (walk.walk), which is
`walk_key` order, so the maps of a chain and the walk of the data directory
are joined by a merge, one file at a time: memory holds the map of the files
of the parts in flight (one per backup of the chain), never a whole map.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import sys
import threading
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from walship import pipeline
from walship.errors import IntegrityError
from walship.repo import layout

BLOCK = 8192
HASH_SIZE = 16
_HEAD = struct.Struct("<QIIH")        # file size, first block, blocks, own index
_LEN = struct.Struct("<H")
_RELATION = re.compile(r"^\d+(?:_(?:fsm|vm|init))?(?:\.\d+)?$")


_sha256 = hashlib.sha256


def block_hash(data) -> bytes:
    """SHA-256 cut to 128 bits: with the CPU's SHA extensions (x86 SHA-NI, ARMv8 SHA2) about 2.5x faster than
    BLAKE2b over 8 KiB blocks here, and a full backup hashes every block of the cluster."""
    return _sha256(data).digest()[:HASH_SIZE]


def is_relation_file(path: str) -> bool:
    """A relation fork (segment) file, handled block by block: everything else is stored whole."""
    parts = path.split("/")
    where = ((len(parts) == 3 and parts[0] == "base") or (len(parts) == 2 and parts[0] == "global")
             or (len(parts) == 5 and parts[0] == "pg_tblspc"))
    return where and bool(_RELATION.match(parts[-1]))


def walk_key(path: str) -> tuple:
    """The walk's order as a sort key: a directory's own entries by name, then its subdirectories' contents."""
    parts = path.split("/")
    return (*((1, p) for p in parts[:-1]), (0, parts[-1]))


def blocks_of(size: int) -> int:
    return -(-size // BLOCK)


def _u16(values: array) -> bytes:
    if sys.byteorder == "big":
        values = array("H", values)
        values.byteswap()
    return values.tobytes()


def runs_of(origins: array, value: int) -> Iterator[tuple[int, int]]:
    """(start, end) index ranges of origins equal to value, found by array.index (in C): the cost follows the
    runs, not the blocks, so a map of a million blocks with a few runs of its own is read at once.

    >>> list(runs_of(array("H", [0, 1, 1, 0, 1]), 1))
    [(1, 3), (4, 5)]
    """
    i, n = 0, len(origins)
    while i < n:
        try:
            i = origins.index(value, i)
        except ValueError:
            return
        j = i + 1
        while j < n and origins[j] == value:
            if j + 64 <= n and origins[j:j + 64].count(value) == 64:
                j += 64
            else:
                j += 1
        yield i, j
        i = j


def _from_u16(data) -> array:
    values = array("H")
    values.frombytes(data)
    if sys.byteorder == "big":
        values.byteswap()
    return values


@dataclass(slots=True)
class FileMap:
    """The map of blocks [start, start + count) of one file, as backup #own of its chain recorded it. In memory
    `hashes` has 16 bytes for every block; read back from an object, only the own blocks' are known (the others
    zero) until ChainMaps fills them in from the backups that store them."""
    path: str
    file_size: int
    start: int
    hashes: bytearray = field(default_factory=bytearray)
    origins: array = field(default_factory=lambda: array("H"))
    own: int = 0

    @property
    def count(self) -> int:
        return len(self.origins)

    def holds(self, block: int) -> bool:
        return self.start <= block < self.start + len(self.origins)

    def hash_of(self, block: int) -> bytes:
        i = (block - self.start) * HASH_SIZE
        return bytes(self.hashes[i:i + HASH_SIZE])

    def origin_of(self, block: int) -> int:
        return self.origins[block - self.start]

    def encode(self) -> bytes:
        name = self.path.encode("utf-8", "surrogateescape")
        own, hashes = self.own, self.hashes
        if self.origins.count(own) == self.count:
            stored = bytes(hashes)
        else:
            stored = b"".join([hashes[a * HASH_SIZE:b * HASH_SIZE] for a, b in runs_of(self.origins, own)])
        return b"".join((_LEN.pack(len(name)), name, _HEAD.pack(self.file_size, self.start, self.count, own),
                         _u16(self.origins), stored))

    def take_hashes(self, source: FileMap, origin: int) -> bool:
        """The hashes of the blocks whose origin is `origin`, from that backup's own map of the file (source);
        False when source does not store every one of them itself (the chain is then broken)."""
        if source.own != origin:
            return False
        hashes, theirs = self.hashes, source.hashes
        for a, b in runs_of(self.origins, origin):
            first, last = self.start + a, self.start + b - 1
            if not (source.holds(first) and source.holds(last)):
                return False
            sa = first - source.start
            if source.origins[sa:sa + b - a].count(origin) != b - a:
                return False
            hashes[a * HASH_SIZE:b * HASH_SIZE] = theirs[sa * HASH_SIZE:(sa + b - a) * HASH_SIZE]
        return True

    def extend(self, other: FileMap) -> bool:
        """Append the next slice's map; False when it does not follow on (then the file is not mapped whole)."""
        if other.path != self.path or other.start != self.start + self.count:
            return False
        self.hashes += other.hashes
        self.origins.extend(other.origins)
        return True


def parse(chunks: Iterable[bytes], what: str) -> Iterator[FileMap]:
    """The records of a block map object's plaintext, one at a time."""
    buf = bytearray()
    pos = 0
    for chunk in chunks:
        buf += chunk
        while True:
            if len(buf) - pos < _LEN.size:
                break
            (n,) = _LEN.unpack_from(buf, pos)
            head_end = pos + _LEN.size + n + _HEAD.size
            if len(buf) < head_end:
                break
            file_size, start, count, own = _HEAD.unpack_from(buf, pos + _LEN.size + n)
            origins_end = head_end + 2 * count
            if len(buf) < origins_end:
                break
            origins = _from_u16(buf[head_end:origins_end])
            owned = origins.count(own)
            end = origins_end + owned * HASH_SIZE
            if len(buf) < end:
                break
            path = bytes(buf[pos + _LEN.size:pos + _LEN.size + n]).decode("utf-8", "surrogateescape")
            if owned == count:
                hashes = bytearray(buf[origins_end:end])
            else:
                hashes = bytearray(count * HASH_SIZE)
                j = origins_end
                for a, b in runs_of(origins, own) if owned else ():
                    hashes[a * HASH_SIZE:b * HASH_SIZE] = buf[j:j + (b - a) * HASH_SIZE]
                    j += (b - a) * HASH_SIZE
            yield FileMap(path, file_size, start, hashes, origins, own)
            pos = end
        if pos > (1 << 20):
            del buf[:pos]
            pos = 0
    if pos != len(buf):
        raise IntegrityError(f"{what} is truncated", "the backup is corrupt; take a full backup (--full)")


# --- a part's maps, written beside it --------------------------------------------------------

class PartMaps:
    """The block maps of one part as its tar stream is made, then stored as one object."""

    def __init__(self):
        self.records: list[bytes] = []
        self.first: str | None = None
        self.last: str | None = None
        self.origin_counts: dict[int, int] = {}

    def add(self, fmap: FileMap) -> None:
        self.records.append(fmap.encode())
        if self.first is None:
            self.first = fmap.path
        self.last = fmap.path
        for origin in fmap.origins:
            self.origin_counts[origin] = self.origin_counts.get(origin, 0) + 1

    def store(self, store, name: str, number: int, codec: str, level, keyring) -> int:
        """Write the object (when the part holds relation files); the bytes stored."""
        if not self.records:
            return 0
        blob = b"".join(pipeline.write(self.records, codec, level, keyring, backup=name, part=number, kind="blockmap"))
        store.put(layout.part_blockmap_key(name, number), blob)
        return len(blob)

    def index_entry(self, number: int) -> dict | None:
        if not self.records:
            return None
        return {"part": number, "first": self.first, "last": self.last,
                "blocks": {str(k): v for k, v in sorted(self.origin_counts.items())}}


def write_index(store, name: str, entries: list[dict], codec: str, keyring) -> int:
    data = json.dumps(sorted(entries, key=lambda e: e["part"]), separators=(",", ":")).encode()
    blob = pipeline.pack(data, codec, keyring=keyring)
    store.put(layout.blockmap_index_key(name), blob)
    return len(blob)


@dataclass(frozen=True)
class IndexEntry:
    part: int
    first: tuple
    last: tuple
    blocks: dict[int, int]


def read_index(store, name: str, keyring) -> list[IndexEntry]:
    key = layout.blockmap_index_key(name)
    try:
        doc = json.loads(pipeline.unpack(store.get(key), key, keyring))
        return [IndexEntry(int(e["part"]), walk_key(e["first"]), walk_key(e["last"]),
                           {int(k): int(v) for k, v in e["blocks"].items()}) for e in doc]
    except (ValueError, KeyError, TypeError):
        raise IntegrityError(f"{key} in {store.url} is corrupt", "verify the backup; take a full backup (--full)") from None


def read_part_maps(store, name: str, number: int, keyring) -> Iterator[FileMap]:
    key = layout.part_blockmap_key(name, number)
    _, plain = pipeline.read(store.stream(key, chunk_size=256 * 1024), key, keyring)
    return parse(plain, f"{key} in {store.url}")


def maps_for(store, name: str, index: list[IndexEntry], paths: set[str], keyring,
             cache: PartMapCache | None = None) -> dict[str, list[FileMap]]:
    """The maps (one per slice) of these paths, reading only the objects whose path range can hold them
    (through cache, when given, which keeps the objects it parsed)."""
    if not paths:
        return {}
    keys = [walk_key(p) for p in paths]
    low, high = min(keys), max(keys)
    found: dict[str, list[FileMap]] = {}
    for entry in index:
        if entry.last < low or entry.first > high:
            continue
        records = (cache.part(entry.part) if cache is not None
                   else read_part_maps(store, name, entry.part, keyring))
        for fmap in records:
            if fmap.path in paths:
                found.setdefault(fmap.path, []).append(fmap)
    return found


class PartMapCache:
    """One backup's part maps, each object parsed once and kept while the kept ones map at most `budget`
    blocks (18 bytes each in memory), the least recently used let go first. A chain restore looks up the
    newest backup's maps for the files of every part of every backup of the chain: without it, a chain of 7
    parsed the newest's maps 25 times. The FileMaps handed out are shared: read them, never change them."""

    def __init__(self, store, name: str, keyring, budget: int = 1 << 21):
        self.store, self.name, self.keyring, self.budget = store, name, keyring, budget
        self._kept: dict[int, tuple[list[FileMap], int]] = {}     # part -> (maps, blocks), oldest use first
        self._lock = threading.Lock()

    def part(self, number: int) -> list[FileMap]:
        with self._lock:
            kept = self._kept.pop(number, None)
            if kept is not None:
                self._kept[number] = kept                       # now the most recently used
                return kept[0]
        maps = list(read_part_maps(self.store, self.name, number, self.keyring))
        blocks = sum(m.count for m in maps)
        with self._lock:
            self._kept[number] = (maps, blocks)
            total = sum(b for _, b in self._kept.values())
            while total > self.budget and len(self._kept) > 1:
                oldest = next(iter(self._kept))
                if oldest == number:
                    break
                total -= self._kept.pop(oldest)[1]
        return maps


class _MapStream:
    """One backup's maps read in walk order, one file (all its slices) at a time."""

    def __init__(self, store, name: str, keyring):
        self.name = name
        self.index = read_index(store, name, keyring)
        self._records = self._all(store, keyring)
        self._next: FileMap | None = next(self._records, None)

    def _all(self, store, keyring) -> Iterator[FileMap]:
        for entry in self.index:
            yield from read_part_maps(store, self.name, entry.part, keyring)

    def whole(self, path: str) -> FileMap | None:
        """This backup's map of every block of path, or None; paths must come in walk order."""
        key = walk_key(path)
        while self._next is not None and walk_key(self._next.path) < key:
            self._next = next(self._records, None)
        if self._next is None or self._next.path != path:
            return None
        whole, whole_ok = self._next, self._next.start == 0
        self._next = next(self._records, None)
        while self._next is not None and self._next.path == path:
            whole_ok = whole.extend(self._next) and whole_ok
            self._next = next(self._records, None)
        return whole if whole_ok and whole.count == blocks_of(whole.file_size) else None


class ChainMaps:
    """A parent's maps in walk order, one file at a time, for the walk of the data directory to join: each file's
    origins from the parent's map and every block's hash from the map of the backup that stores it."""

    def __init__(self, store, names: list[str], keyring):
        self.names = names                                # the parent's chain, full first, then the parent
        self._streams = [_MapStream(store, name, keyring) for name in names]

    def lookup(self, path: str) -> FileMap | None:
        """The parent's whole map of path with every hash known, or None when the parent has no whole map of it."""
        parent = len(self.names) - 1
        found = self._streams[parent].whole(path)
        if found is None:
            return None
        if found.own != parent:
            raise IntegrityError(f"the block map of {self.names[parent]} says it is backup #{found.own} of its "
                                 f"chain, not #{parent}", "take a full backup (--full)")
        for origin in sorted(set(found.origins) - {parent}):
            source = self._streams[origin].whole(path) if origin < parent else None
            if source is None or not found.take_hashes(source, origin):
                raise IntegrityError(f"{self.names[parent]} takes blocks of {path} from backup #{origin} of its "
                                     "chain, whose block map does not store them",
                                     "the chain is corrupt; take a full backup (--full)")
        return found


@dataclass(frozen=True, slots=True)
class FileChanges:
    """What WAL summaries say of one relation file (segment) since the parent's start: the blocks changed
    (block numbers within the file, sorted) and the limit block (every block at or past it changed), or None."""
    changed: array
    limit: int | None = None


def runs_to_read(changes: FileChanges, parent: FileMap, first: int, end: int) -> list[tuple[int, int]]:
    """(first block, count) runs of blocks [first, end) an incremental must read: those the summaries name, those
    at or past the limit block, and those past the parent's last whole block (the file grew)."""
    floor = parent.file_size // BLOCK
    if changes.limit is not None:
        floor = min(floor, changes.limit)
    floor = max(floor, first)
    runs: list[list[int]] = []
    changed = changes.changed
    i = bisect_left(changed, first)
    stop = min(floor, end)
    while i < len(changed) and changed[i] < stop:
        number = changed[i]
        if runs and runs[-1][0] + runs[-1][1] == number:
            runs[-1][1] += 1
        else:
            runs.append([number, 1])
        i += 1
    if floor < end:
        if runs and runs[-1][0] + runs[-1][1] == floor:
            runs[-1][1] += end - floor
        else:
            runs.append([floor, end - floor])
    return [(a, n) for a, n in runs]


class Recorder:
    """Hashes one file's blocks as they are read (from block `start`), deciding against the parent's map which
    an incremental stores: a block is skipped only when the parent holds the very same bytes (equal hash).
    A block the push did not read (WAL summaries say it did not change) takes the parent's hash and origin
    (inherit_to)."""

    def __init__(self, path: str, file_size: int, start: int, parent: FileMap | None, own: int, incremental: bool):
        self.map = FileMap(path, file_size, start, own=own)
        self.parent = parent if incremental else None
        self.own = own
        self._pending = bytearray()
        self._block = start

    def hash_all(self, chunk) -> None:
        """A full's way: every block of this chunk hashed as its own, with no decision to make per block."""
        view = memoryview(chunk)
        if self._pending or self.parent is not None or len(view) % BLOCK:
            for _ in self.blocks(view):
                pass
            return
        sha, size = _sha256, HASH_SIZE
        count = len(view) // BLOCK
        self.map.hashes += b"".join([sha(view[i:i + BLOCK]).digest()[:size] for i in range(0, len(view), BLOCK)])
        self.map.origins.extend(array("H", [self.own]) * count)
        self._block += count

    def blocks(self, chunk) -> Iterator[tuple[int, memoryview, bool]]:
        """(block number, bytes, stored?) for each block completed by this chunk of the file's content."""
        view = memoryview(chunk)
        if self._pending:
            take = min(BLOCK - len(self._pending), len(view))
            self._pending += view[:take]
            view = view[take:]
            if len(self._pending) == BLOCK:
                data = memoryview(bytes(self._pending))
                self._pending.clear()
                yield self._one(data)
        while len(view) >= BLOCK:
            yield self._one(view[:BLOCK])
            view = view[BLOCK:]
        if view:
            self._pending += view

    def finish(self) -> Iterator[tuple[int, memoryview, bool]]:
        """The last, partial block (a file whose size is not a multiple of the block size)."""
        if self._pending:
            data = memoryview(bytes(self._pending))
            self._pending.clear()
            yield self._one(data)

    def inherit_to(self, number: int) -> None:
        """Blocks from the next one up to number (excluded), not read: the parent's hashes and origins."""
        parent = self.parent
        if number <= self._block:
            return
        assert parent is not None and not self._pending and parent.holds(number - 1) and parent.holds(self._block)
        i, j = (self._block - parent.start) * HASH_SIZE, (number - parent.start) * HASH_SIZE
        self.map.hashes += parent.hashes[i:j]
        self.map.origins.extend(parent.origins[self._block - parent.start:number - parent.start])
        self._block = number

    def _one(self, data: memoryview) -> tuple[int, memoryview, bool]:
        number = self._block
        self._block += 1
        digest = block_hash(data)
        parent = self.parent
        origin = self.own
        if parent is not None and parent.holds(number) and parent.hash_of(number) == digest:
            origin = parent.origin_of(number)       # the very bytes the parent's chain stores
        self.map.hashes += digest
        self.map.origins.append(origin)
        return number, data, origin == self.own
