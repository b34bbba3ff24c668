"""What the repository's WAL archive holds: segments per timeline, the newest one, and gaps.

A gap is a segment missing between two archived ones on the same timeline, or
missing after the start segment of a backup: point-in-time recovery cannot
replay across it. On the backup's timeline the archive must be continuous from
the backup's start segment; a later timeline (after a promotion) must be
continuous from its first archived segment, which holds the switch point.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from walship.layout import WAL_PREFIX, wal_name_of_key
from walship.pg.walnames import DEFAULT_SEGMENT_SIZE, Segment, is_segment, segments_per_log


@dataclass(frozen=True)
class Gap:
    first: str        # first missing segment
    last: str         # last missing segment
    count: int

    def __str__(self) -> str:
        return self.first if self.count == 1 else f"{self.first}..{self.last} ({self.count} segments)"


@dataclass
class WalArchive:
    segment_size: int
    numbers: dict[int, list[int]] = field(default_factory=dict)   # timeline -> sorted segment numbers
    newest_name: str | None = None                                # highest segment name
    newest_mtime: float | None = None                             # latest upload time of any segment

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.numbers.values())

    @property
    def oldest_name(self) -> str | None:
        if not self.numbers:
            return None
        tli = min(self.numbers)
        return Segment(tli, self.numbers[tli][0]).name(self.segment_size)

    def gaps(self, since: str | None = None) -> list[Gap]:
        """Missing segments from `since` (a backup's start segment) on; without it, from the oldest one."""
        start = Segment.parse(since, self.segment_size) if since else None
        found: list[Gap] = []
        for tli in sorted(self.numbers):
            if start and tli < start.timeline:
                continue
            archived = self.numbers[tli]
            expected = start.number if start and tli == start.timeline else archived[0]
            later = [n for n in archived if n >= expected]
            if not later:
                # Nothing at all from the backup's start segment on, on its timeline.
                found.append(self._gap(tli, expected, expected))
                continue
            for n in later:
                if n > expected:
                    found.append(self._gap(tli, expected, n - 1))
                expected = n + 1
        if start and start.timeline not in self.numbers:
            found.insert(0, self._gap(start.timeline, start.number, start.number))
        return found

    def _gap(self, tli: int, first: int, last: int) -> Gap:
        return Gap(Segment(tli, first).name(self.segment_size), Segment(tli, last).name(self.segment_size),
                   last - first + 1)


def infer_segment_size(names: list[str], assumed: int = DEFAULT_SEGMENT_SIZE) -> int:
    """`assumed`, unless a name shows more segments per log than it allows (a smaller --wal-segsize)."""
    highest = max((int(n[16:24], 16) for n in names), default=0)
    size = assumed
    while highest >= segments_per_log(size) and size > 1024 * 1024:
        size //= 2
    return size


def _archived_segments(store):
    """(name, upload time) of every archived segment: walship's, and those WAL-E stored before
    the switch (wal-fetch restores both, so both close gaps)."""
    from walship.walecompat.wal import WALE_WAL_PREFIX
    for info in store.list(WAL_PREFIX):
        yield wal_name_of_key(info.key), info.mtime
    for info in store.list(WALE_WAL_PREFIX):
        yield info.key[len(WALE_WAL_PREFIX):].removesuffix(".lzo"), info.mtime


def load(store, segment_size: int | None = None) -> WalArchive:
    """List the repository's WAL. segment_size: the server's, when known (else inferred, 16 MiB)."""
    names: set[str] = set()
    newest_mtime = None
    for name, mtime in _archived_segments(store):
        if not is_segment(name):
            continue   # .history, .backup, .partial: not part of the segment sequence
        names.add(name)
        newest_mtime = mtime if newest_mtime is None else max(newest_mtime, mtime)
    size = segment_size or infer_segment_size(sorted(names))
    archive = WalArchive(size, newest_mtime=newest_mtime)
    for name in names:
        seg = Segment.parse(name, size)
        archive.numbers.setdefault(seg.timeline, []).append(seg.number)
    for numbers in archive.numbers.values():
        numbers.sort()
    archive.newest_name = max(names) if names else None
    return archive
