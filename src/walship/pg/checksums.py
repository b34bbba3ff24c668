"""PostgreSQL's data page checksums, verified while backup-push reads a relation file.

pg_checksum_page (src/include/storage/checksum_impl.h): the 8 KiB page, with
pd_checksum (bytes 8-9) taken as zero, is read as 64 rows of 32 uint32 lanes;
each lane is an FNV-1a-like hash (x = sum ^ value; sum = x * 16777619 ^ (x >> 17))
started from its own base offset, then two more rounds with zeros; the lanes
are xor-ed together, xor-ed with the block number (its index in the relation:
segment number * blocks per segment + block in the file) and reduced to
(result % 65535) + 1.

A pure Python loop costs milliseconds a page; numpy runs the 66 rounds over
every page of a 1 MiB read at once (a few hundred vectorised operations per
MiB, without the GIL). numpy is imported only here, and this module only when
the cluster has data checksums.

What is not checked, as PostgreSQL's own base backup does not: a page whose
pd_lsn is at or after the backup's start (WAL replay rewrites it from a
full-page image; it may also be torn right now), an all-zero page (a new page
that was never written) and a last partial page (a file being extended).
A page that fails is read again once: a read that raced with PostgreSQL
writing that page (torn read) is not a corruption. Small reads (most
relation files are a few pages) are checked in batches of BATCH_PAGES pages
of many files, as the rounds cost the same numpy calls for one page or many.
"""

from __future__ import annotations

import bisect
import os
import re
import threading

import numpy as np

from walship import logs

BLOCK_SIZE = 8192                       # the only page size verified (the default; a build option otherwise)
_LANES = 32
_ROWS = BLOCK_SIZE // (4 * _LANES)      # 64
_FNV_PRIME = np.uint32(16777619)
_BASE_OFFSETS = np.array([
    0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
    0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
    0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
    0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
], dtype=np.uint32)

# base/<db>/, global/, pg_tblspc/<oid>/<PG_version dir>/<db>/ hold relation files: <relfilenode>[_fork][.segment]
_RELATION_DIR = re.compile(r"^(?:base/\d+|global|pg_tblspc/\d+/[^/]+/\d+)$")
_RELATION_FILE = re.compile(r"^\d+(?:_(?:fsm|vm|init))?(?:\.(\d+))?$")
MAX_BLOCKS_LISTED = 10                  # per file in the warning line; the count covers them all


def page_checksums(words: np.ndarray, block_numbers: np.ndarray) -> np.ndarray:
    """pg_checksum_page of every page: words is (pages, 2048) uint32, block_numbers (pages,) uint32."""
    pages = words.shape[0]
    rows = words.reshape(pages, _ROWS, _LANES)
    sums = np.tile(_BASE_OFFSETS, (pages, 1))
    mixed = np.empty_like(sums)
    value = np.empty_like(sums)

    def round_with(data: np.ndarray | None) -> None:
        if data is None:
            mixed[...] = sums
        else:
            np.bitwise_xor(sums, data, out=mixed)
        np.multiply(mixed, _FNV_PRIME, out=sums)
        np.right_shift(mixed, 17, out=mixed)
        np.bitwise_xor(sums, mixed, out=sums)

    # row 0 holds pd_lsn (lanes 0-1) and pd_checksum (low half of lane 2, little-endian): checksummed as zero
    value[...] = rows[:, 0, :]
    value[:, 2] &= np.uint32(0xFFFF0000)
    round_with(value)
    for row in range(1, _ROWS):
        round_with(rows[:, row, :])
    round_with(None)
    round_with(None)
    folded = np.bitwise_xor.reduce(sums, axis=1) ^ block_numbers.astype(np.uint32)
    return (folded % np.uint32(65535) + np.uint32(1)).astype(np.uint16)


def _words(data: bytes | bytearray | memoryview) -> np.ndarray:
    """The whole pages of data as (pages, 2048) little-endian uint32, without a copy."""
    pages = len(data) // BLOCK_SIZE
    return np.frombuffer(data, dtype="<u4", count=pages * (BLOCK_SIZE // 4)).reshape(pages, BLOCK_SIZE // 4)


def bad_pages(words: np.ndarray, block_numbers: np.ndarray, start_lsn: int) -> np.ndarray:
    """Indexes of the pages whose checksum is wrong, among those replay does not rewrite."""
    if not words.shape[0]:
        return np.empty(0, dtype=np.intp)
    # pd_lsn is {uint32 xlogid; uint32 xrecoff}: high word first
    lsn = (words[:, 0].astype(np.uint64) << np.uint64(32)) | words[:, 1].astype(np.uint64)
    candidates = lsn < np.uint64(start_lsn)
    # pd_upper (bytes 14-15) is 0 only on a new page; such a page is valid when it is all zeros
    new = (words[:, 3] >> np.uint32(16)) == 0
    if new.any():
        zero = ~words[new].any(axis=1)
        candidates[np.flatnonzero(new)[zero]] = False
    index = np.flatnonzero(candidates)
    if not index.size:
        return index
    selected = words if index.size == words.shape[0] else words[index]
    stored = (selected[:, 2] & np.uint32(0xFFFF)).astype(np.uint16)
    return index[page_checksums(selected, block_numbers[index]) != stored]


def _bad_pages(data: bytes | bytearray | memoryview, first_block: int, start_lsn: int) -> list[int]:
    """Indexes (in data) of the whole pages of data, relation blocks from first_block on, that are bad."""
    words = _words(data)
    blocks = np.arange(first_block, first_block + words.shape[0], dtype=np.uint32)
    return [int(i) for i in bad_pages(words, blocks, start_lsn)]


def page_is_bad(page: bytes, block_number: int, start_lsn: int) -> bool:
    return bool(_bad_pages(page, block_number, start_lsn))


def relation_first_block(name: str, blocks_per_segment: int) -> int | None:
    """The relation block number of a file's first page, or None when the file is no relation fork.

    name is the path in the backup ('base/5/16384.2' -> 2 * blocks_per_segment).
    """
    directory, _, base = name.rpartition("/")
    if not _RELATION_DIR.match(directory):
        return None
    m = _RELATION_FILE.match(base)
    if not m:
        return None
    return int(m.group(1) or 0) * blocks_per_segment


class _Batch:
    """Pages of small reads (catalogs, FSM, VM: most files are a few pages), checked together.

    The 66 rounds cost the same few hundred numpy calls for 1 page or 128;
    gathering the pages of many small files makes that cost per batch, not per file.
    """

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.chunks: list[np.ndarray] = []            # copies: the read buffers are reused
        self.blocks: list[np.ndarray] = []
        self.origins: list[tuple[str, str, int, int]] = []   # (name, path, file offset, first page index)
        self.pages = 0


class PageCheck:
    """The findings over a whole backup: read by the upload threads, reported once at the end."""

    BATCH_PAGES = 128

    def __init__(self, start_lsn: int, blocks_per_segment: int):
        self.start_lsn = start_lsn
        self.blocks_per_segment = blocks_per_segment
        self.pages_checked = 0
        self.bad: dict[str, list[int]] = {}       # file in the backup -> relation block numbers
        self._lock = threading.Lock()
        self._batches: dict[int, _Batch] = {}     # one per upload thread

    def reader(self, name: str, path: str, fd: int, offset: int) -> FileCheck | None:
        """A checker for the bytes of file `name` read from offset on, or None when it holds no pages."""
        first = relation_first_block(name, self.blocks_per_segment)
        if first is None:
            return None
        return FileCheck(self, name, path, fd, offset, first)

    def verify(self, name: str, path: str, data, offset: int, first_block: int) -> None:
        """The whole pages of data, read at offset of the file; small reads wait in this thread's batch."""
        words = _words(data)
        pages = words.shape[0]
        if not pages:
            return
        blocks = np.arange(first_block, first_block + pages, dtype=np.uint32)
        if pages >= self.BATCH_PAGES:
            self._confirm(bad_pages(words, blocks, self.start_lsn), [(name, path, offset, 0)], pages)
            return
        batch = self._batches.get(threading.get_ident())
        if batch is None:
            with self._lock:
                batch = self._batches.setdefault(threading.get_ident(), _Batch())
        batch.origins.append((name, path, offset, batch.pages))
        batch.chunks.append(words.copy())
        batch.blocks.append(blocks)
        batch.pages += pages
        if batch.pages >= self.BATCH_PAGES:
            self._flush(batch)

    def finish(self) -> None:
        """Check what waits in the batches; once the upload threads are done."""
        for batch in self._batches.values():
            self._flush(batch)

    def _flush(self, batch: _Batch) -> None:
        if not batch.pages:
            return
        words = np.concatenate(batch.chunks)
        bad = bad_pages(words, np.concatenate(batch.blocks), self.start_lsn)
        self._confirm(bad, batch.origins, batch.pages)
        batch.clear()

    def _confirm(self, bad: np.ndarray, origins: list[tuple[str, str, int, int]], pages: int) -> None:
        """Read each bad page once more from its file: a read racing with PostgreSQL's write is no corruption."""
        found: list[tuple[str, int]] = []
        starts = [first for _, _, _, first in origins]
        for index in (int(i) for i in bad):
            name, path, offset, first = origins[bisect.bisect_right(starts, index) - 1]
            page_offset = offset + (index - first) * BLOCK_SIZE
            first_block = relation_first_block(name, self.blocks_per_segment)
            assert first_block is not None         # only relation files are batched
            block = first_block + page_offset // BLOCK_SIZE
            try:
                with open(path, "rb") as fh:
                    again = os.pread(fh.fileno(), BLOCK_SIZE, page_offset)
            except FileNotFoundError:
                continue                              # dropped meanwhile: replay drops it too
            if len(again) == BLOCK_SIZE and page_is_bad(again, block, self.start_lsn):
                found.append((name, block))
        with self._lock:
            self.pages_checked += pages
            for name, block in found:
                self.bad.setdefault(name, []).append(block)

    @property
    def failures(self) -> int:
        return sum(len(blocks) for blocks in self.bad.values())

    def report(self, backup: str) -> None:
        """One warning line per relation file with bad pages."""
        for name in sorted(self.bad):
            blocks = sorted(self.bad[name])
            listed = ", ".join(str(b) for b in blocks[:MAX_BLOCKS_LISTED])
            more = f" and {len(blocks) - MAX_BLOCKS_LISTED} more" if len(blocks) > MAX_BLOCKS_LISTED else ""
            logs.warning("page_checksum_failure",
                         f"page checksum mismatch in {name}: block{'s' if len(blocks) > 1 else ''} {listed}{more} "
                         f"(read twice; stored as found in backup {backup}, which is still taken: check the "
                         "disk and run pg_checksums or pg_amcheck, or restore the relation from an older backup)",
                         file=name, blocks=blocks, backup=backup)


class FileCheck:
    """The pages of one member (a file or a slice of it) as tar_chunks reads them, in order."""

    def __init__(self, check: PageCheck, name: str, path: str, fd: int, offset: int, first_block: int):
        self.check, self.name, self.path, self.fd, self.first_block = check, name, path, fd, first_block
        self.position = offset                        # file offset of the next byte fed
        self.skip = -offset % BLOCK_SIZE              # a page begun before offset belongs to the member before
        self.pending = bytearray()                    # the start of a page cut by a read boundary

    def feed(self, block: bytes) -> None:
        view = memoryview(block)
        self.position += len(view)
        if self.skip:
            cut = min(self.skip, len(view))
            view, self.skip = view[cut:], self.skip - cut
        if self.pending:
            need = BLOCK_SIZE - len(self.pending)
            self.pending += view[:need]
            view = view[need:]
            if len(self.pending) < BLOCK_SIZE:
                return
            self._verify(bytes(self.pending), self.position - len(view) - BLOCK_SIZE)
            self.pending = bytearray()
        whole = len(view) - len(view) % BLOCK_SIZE
        if whole:
            self._verify(view[:whole], self.position - len(view))
        self.pending += view[whole:]

    def close(self) -> None:
        """Verify a page cut by the end of a slice: read whole from the file."""
        if self.pending:
            offset = self.position - len(self.pending)
            page = os.pread(self.fd, BLOCK_SIZE, offset)
            if len(page) == BLOCK_SIZE:               # else: the file's last page is being extended
                self._verify(page, offset)

    def _verify(self, data, offset: int) -> None:
        self.check.verify(self.name, self.path, data, offset, self.first_block + offset // BLOCK_SIZE)
