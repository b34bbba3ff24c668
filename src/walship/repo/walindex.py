"""The one listing of a repository's WAL: segments per timeline, history files, and the segment size.

walship's objects live under wal/, WAL-E's (read for migration, never written)
under wal_005/ as `<name>.lzo`; wal-fetch restores both, so both count.
The segment size comes from the repository's record; a repository written
before records existed tells it by a stored segment: walship's object header
holds the uncompressed size, and an encrypted or WAL-E segment is read back
once. The server is never asked, and 16 MiB is never assumed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from walship.errors import WalshipError
from walship.pg import walnames
from walship.pg.walnames import DEFAULT_SEGMENT_SIZE, Segment, history_name, history_timeline, is_segment, parse_history
from walship.repo.layout import WAL_PREFIX, WALE_WAL_PREFIX, wal_name_of_key, wale_wal_name_of_key

if TYPE_CHECKING:
    from walship.repo.catalog import BackupInfo
    from walship.storage import Store


class History(tuple):
    """(timeline, parent timeline, branch-point LSN, reason, time the object was stored) of one .history."""

    __slots__ = ()

    def __new__(cls, timeline: int, parent: int, branch_lsn: int, reason: str, mtime: float | None) -> History:
        return tuple.__new__(cls, (timeline, parent, branch_lsn, reason, mtime))

    @property
    def timeline(self) -> int:
        return self[0]

    @property
    def parent(self) -> int:
        return self[1]

    @property
    def branch_lsn(self) -> int:
        return self[2]

    @property
    def reason(self) -> str:
        return self[3]

    @property
    def mtime(self) -> float | None:
        return self[4]


class WalListing:
    """Names in the archive: segment name -> (key, upload time); history timeline -> (key, upload time)."""

    def __init__(self) -> None:
        self.segments: dict[str, tuple[str, float]] = {}
        self.histories: dict[int, tuple[str, float]] = {}

    def add(self, name: str, key: str, mtime: float) -> None:
        if is_segment(name):
            # walship's object wins over WAL-E's of the same name (wal-fetch reads it first)
            if name not in self.segments or key.startswith(WAL_PREFIX):
                self.segments[name] = (key, mtime)
        elif (timeline := history_timeline(name)) is not None:
            if timeline not in self.histories or key.startswith(WAL_PREFIX):
                self.histories[timeline] = (key, mtime)


def list_wal(store: Store) -> WalListing:
    """Every archived segment and history file (walship's and WAL-E's); .backup and .partial are left out."""
    listing = WalListing()
    for info in store.list(WALE_WAL_PREFIX):
        name = wale_wal_name_of_key(info.key)
        if name is not None:
            listing.add(name, info.key, info.mtime)
    for info in store.list(WAL_PREFIX):
        listing.add(wal_name_of_key(info.key), info.key, info.mtime)
    return listing


def obsolete_wal(names: list[str], keep: list[BackupInfo]) -> list[str]:
    """The WAL file names retention deletes: segments, partial segments and .backup files before the start
    segment of the oldest kept backup, on every timeline (names compare by their log/segment digits,
    whatever the timeline and segment size). History files are always kept: a few bytes each, and
    recovery needs the whole chain.

    >>> class Kept: start_wal = "000000020000000000000005"
    >>> obsolete_wal(["000000010000000000000004", "000000010000000000000005", "00000002.history",
    ...               "000000010000000000000003.00000028.backup", "x"], [Kept()])
    ['000000010000000000000004', '000000010000000000000003.00000028.backup']
    """
    if not keep:
        return []
    boundary = min(b.start_wal[8:24] for b in keep)
    return [n for n in names
            if not walnames.is_history(n) and walnames.is_archivable(n) and n[8:24] < boundary]


def segment_size(store: Store, listing: WalListing, read_wal: Callable[[str], bytes]) -> tuple[int, str]:
    """(segment size, where it came from): the repository's record, else a stored segment; only a
    repository whose every segment is unreadable falls back to what the names allow.

    read_wal(name): a WAL file's content as wal-fetch restores it (archive.fetch.download, given by the
    caller: the archive layer sits above this one)."""
    from walship.repo import record
    stored = record.read(store)
    if stored is not None and stored.wal_segment_size:
        return stored.wal_segment_size, "repository record"
    if not listing.segments:
        # Nothing to name or count yet: the size is not used.
        return DEFAULT_SEGMENT_SIZE, "no segment archived"
    from walship import codec
    names = sorted(listing.segments)
    for name in (names[-1], names[0]):
        key = listing.segments[name][0]
        if not key.startswith(WAL_PREFIX):
            continue
        try:
            meta, _ = codec.parse_header(store.get_range(key, 0, codec.HEADER_PROBE), key)
        except WalshipError:
            continue
        if isinstance(meta.get("size"), int) and meta["size"] > 0:
            return meta["size"], f"header of {key}"
    # Encrypted objects keep no size in the clear and WAL-E's are lzop: read one back.
    for name in (names[-1], names[0]):
        try:
            return len(read_wal(name)), f"content of {name}"
        except WalshipError:
            continue
    return largest_size_the_names_allow(names), "guessed from the names (no segment readable)"


def largest_size_the_names_allow(names: list[str], largest: int = 1 << 30) -> int:
    """The largest segment size (a power of two, 1 MiB to 1 GiB) every name is valid for: a guess, only
    for a repository whose segments cannot be read. A 4 GiB "log" holds fewer segments the larger they
    are, and the archive crossing into the next log has named the last segment of the one before."""
    size = largest
    while size > 1 << 20:
        try:
            for name in names:
                Segment.parse(name, size)
            return size
        except WalshipError:
            size //= 2
    return size


def segment_numbers(listing: WalListing, size: int) -> dict[int, dict[int, float]]:
    """timeline -> {segment number: upload time}, for segments valid at this size."""
    out: dict[int, dict[int, float]] = {}
    for name, (_key, mtime) in listing.segments.items():
        try:
            seg = Segment.parse(name, size)
        except WalshipError:
            continue      # a name this segment size cannot have: not a segment of this cluster
        out.setdefault(seg.timeline, {})[seg.number] = mtime
    return out


def read_histories(listing: WalListing, read_wal: Callable[[str], bytes]
                   ) -> tuple[dict[int, History], dict[int, str]]:
    """(timeline -> its parent and branch point, timeline -> why its history could not be read)."""
    found: dict[int, History] = {}
    errors: dict[int, str] = {}
    for timeline, (_key, mtime) in sorted(listing.histories.items()):
        name = history_name(timeline)
        try:
            entries = parse_history(read_wal(name).decode("utf-8", "replace"))
        except WalshipError as exc:
            errors[timeline] = exc.one_line()
            continue
        if not entries:
            errors[timeline] = f"{name} is empty"
            continue
        parent, lsn, reason = entries[-1]     # the last line is the switch to this timeline
        found[timeline] = History(timeline, parent, lsn, reason, mtime)
    return found, errors
