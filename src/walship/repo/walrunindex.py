"""A summary of the WAL archive that does not grow with it: each timeline's segments as runs.

A million archived segments with no gap are one run ("timeline 1, segments A..B"), so `status`,
`check archive` and `verify --quick` read one small object (layout.WAL_INDEX_KEY) and a few dozen
probes instead of listing a million keys. The summary lives in the repository beside what it
describes and is never trusted over it: every reader checks it against the objects, advances it, and
writes it back; when it is absent, unreadable, of another segment size, or caught claiming an object
that is not there, the reader rebuilds it from a full listing (the old, linear path) and says so.

What each reader checks, on every call, exactly:
- every key after the newest summarised segment of each timeline, every key of a timeline the summary
  does not know, and every gap inside the summarised range (a late upload closes it): on S3 by listing
  after those keys (StartAfter: what precedes them is not read); on a file repository by one read of
  the wal/ directory's names, each name outside a summarised run then head()ed (no stat per name:
  about 0.3 s per million names; nothing else a reader does there grows with the archive);
- the oldest segment of each timeline (retention deletes from the front: the new front is found by
  bisection) and the end of every run (the segment a window ends at);
- WAL-E's wal_005/ keys after the highest one summarised (on S3 the listing above shows whether there
  is any: wal/ sorts before wal_005/).

What a reader checks by turns: a segment deleted from inside a run behind walship's back. Each call
audits AUDIT_WINDOW consecutive summarised segments (AUDIT_WINDOW_LISTED on S3: one listing page; a
cursor kept in the summary, wrapping around) and RANDOM_PROBES random ones: a deletion is found within
ceil(segments / window) calls. `walship verify` without --quick lists every object (exact) and
rewrites the summary.

Concurrent readers may each write the summary: every version is a true picture of the objects at
some moment, and the next reader checks it again, so the last write winning is harmless.
"""

from __future__ import annotations

import json
import random
from bisect import bisect_right
from collections.abc import Callable
from functools import partial
from itertools import compress, tee
from operator import and_
from typing import TYPE_CHECKING

from walship.errors import WalshipError
from walship.pg.walnames import Segment, history_timeline, is_segment
from walship.repo import walindex
from walship.repo.layout import (
    WAL_INDEX_KEY,
    WAL_PREFIX,
    WALE_WAL_PREFIX,
    wal_key,
    wal_name_of_key,
    wale_wal_key,
    wale_wal_name_of_key,
)

if TYPE_CHECKING:
    from walship.storage import ObjectInfo, Store

FORMAT = 1
AUDIT_WINDOW = 2000       # summarised segments checked against the objects per call (head() each: ~10 ms)
AUDIT_WINDOW_LISTED = 990  # the same on a store with an ordered listing: one page of 1,000 keys
RANDOM_PROBES = 16
RUN_END_PROBES = 64       # at most this many run ends probed (the newest runs): pathological archives


def runs_of(numbers: list[int]) -> list[tuple[int, int]]:
    """Sorted segment numbers as (first, last) runs of consecutive numbers.

    >>> runs_of([1, 2, 3, 7, 9, 10])
    [(1, 3), (7, 7), (9, 10)]
    """
    runs: list[tuple[int, int]] = []
    for n in numbers:
        if runs and runs[-1][1] + 1 == n:
            runs[-1] = (runs[-1][0], n)
        elif not runs or runs[-1][1] < n:
            runs.append((n, n))
    return runs


class RunIndex:
    """timeline -> runs [first, last, upload time of last]; history timeline -> (key, upload time)."""

    def __init__(self, segment_size: int, size_source: str) -> None:
        self.segment_size = segment_size
        self.size_source = size_source
        self.runs: dict[int, list[list]] = {}
        self.histories: dict[int, tuple[str, float]] = {}
        self.newest_mtime: float | None = None
        self.wale_after: str | None = None      # the highest wal_005/ key summarised
        self.audit_at: tuple[int, int] | None = None   # (timeline, segment number) the next audit starts at
        self.note = ""                          # how this reader got it: for `status` and tests
        self.changed = False

    # --- content ----------------------------------------------------------------------------

    def add(self, info: ObjectInfo, name: str) -> None:
        """An object seen in the repository (a segment or a .history; anything else is left out)."""
        if info.key.startswith(WALE_WAL_PREFIX) and (self.wale_after is None or info.key > self.wale_after):
            self.wale_after = info.key
            self.changed = True
        if is_segment(name):
            try:
                seg = Segment.parse(name, self.segment_size)
            except WalshipError:
                return          # a name this segment size cannot have: not a segment of this cluster
            self._insert(seg.timeline, seg.number, info.mtime)
        elif (timeline := history_timeline(name)) is not None:
            if timeline not in self.histories or info.key.startswith(WAL_PREFIX):
                if self.histories.get(timeline) != (info.key, info.mtime):
                    self.histories[timeline] = (info.key, info.mtime)
                    self.changed = True
        else:
            return
        if self.newest_mtime is None or info.mtime > self.newest_mtime:
            self.newest_mtime = info.mtime

    def _insert(self, tli: int, n: int, mtime: float) -> None:
        runs = self.runs.setdefault(tli, [])
        i = bisect_right(runs, n, key=lambda r: r[0]) - 1
        if i >= 0 and runs[i][1] >= n:
            return                                  # already summarised
        self.changed = True
        joins_left = i >= 0 and runs[i][1] + 1 == n
        joins_right = i + 1 < len(runs) and runs[i + 1][0] == n + 1
        if joins_left and joins_right:
            runs[i][1], runs[i][2] = runs[i + 1][1], runs[i + 1][2]
            del runs[i + 1]
        elif joins_left:
            runs[i][1], runs[i][2] = n, mtime
        elif joins_right:
            runs[i + 1][0] = n
        else:
            runs.insert(i + 1, [n, n, mtime])

    def count(self) -> int:
        return sum(r[1] - r[0] + 1 for runs in self.runs.values() for r in runs)

    def listing_of_histories(self) -> walindex.WalListing:
        listing = walindex.WalListing()
        listing.histories = dict(self.histories)
        return listing

    # --- the stored form ----------------------------------------------------------------------

    def to_json(self) -> bytes:
        return json.dumps({
            "format": FORMAT, "segment_size": self.segment_size, "size_source": self.size_source,
            "runs": {str(t): r for t, r in sorted(self.runs.items()) if r},
            "histories": {str(t): list(h) for t, h in sorted(self.histories.items())},
            "newest_mtime": self.newest_mtime, "wale_after": self.wale_after,
            "audit_at": list(self.audit_at) if self.audit_at else None,
        }, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RunIndex:
        """The stored summary; ValueError for anything that is not one written by this format."""
        try:
            doc = json.loads(data)
            if doc.get("format") != FORMAT:
                raise ValueError(f"format {doc.get('format')!r}")
            index = cls(int(doc["segment_size"]), str(doc["size_source"]))
            for t, runs in doc["runs"].items():
                clean = [[int(a), int(b), float(m)] for a, b, m in runs]
                if any(a < 0 or a > b for a, b, _ in clean) or any(clean[i][1] + 1 >= clean[i + 1][0]
                                                                  for i in range(len(clean) - 1)):
                    raise ValueError(f"runs of timeline {t} overlap or are out of order")
                index.runs[int(t)] = clean
            index.histories = {int(t): (str(k), float(m)) for t, (k, m) in doc["histories"].items()}
            newest, wale, audit_at = doc["newest_mtime"], doc["wale_after"], doc.get("audit_at")
            index.newest_mtime = float(newest) if newest is not None else None
            if wale is not None and not isinstance(wale, str):
                raise ValueError("wale_after is not a key")
            index.wale_after = wale
            if audit_at is not None:
                tli, number = (int(x) for x in audit_at)
                index.audit_at = (tli, number)
        except (KeyError, TypeError, AttributeError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(str(exc)) from None
        return index


# --- building it from a full listing (exact, linear) ------------------------------------------------

def build(store: Store, read_wal: Callable[[str], bytes], why: str) -> RunIndex:
    """The summary from a listing of every WAL key, written back to the repository."""
    listing = walindex.list_wal(store)
    size, source = walindex.segment_size(store, listing, read_wal)
    index = RunIndex(size, source)
    for tli, by_number in walindex.segment_numbers(listing, size).items():
        numbers = sorted(by_number)
        index.runs[tli] = [[a, b, by_number[b]] for a, b in runs_of(numbers)]
        newest = max(by_number.values())
        index.newest_mtime = newest if index.newest_mtime is None else max(index.newest_mtime, newest)
    index.histories = dict(listing.histories)
    wale = [key for key, _ in listing.segments.values() if key.startswith(WALE_WAL_PREFIX)]
    wale += [key for key, _ in listing.histories.values() if key.startswith(WALE_WAL_PREFIX)]
    index.wale_after = max(wale, default=None)
    index.note = f"rebuilt from a full listing ({why})"
    _save(store, index)
    return index


def _save(store: Store, index: RunIndex) -> None:
    try:
        store.put(WAL_INDEX_KEY, index.to_json())
    except WalshipError:
        pass    # read-only credentials: the summary is a cache, the next reader with write access stores it


# --- reading it, checked and advanced -------------------------------------------------------------

class _Stale(Exception):
    """The summary claims an object that is not there: rebuild."""


def load(store: Store, read_wal: Callable[[str], bytes], exact: bool = False) -> RunIndex:
    """The summary, checked against the objects and advanced (see the module docstring); with exact, or
    when the stored one cannot be used, rebuilt from a full listing."""
    if exact:
        return build(store, read_wal, "asked for")
    from walship.storage import ObjectNotFound
    try:
        index = RunIndex.from_json(store.get(WAL_INDEX_KEY))
    except ObjectNotFound:
        return build(store, read_wal, "no summary stored")
    except ValueError as exc:
        return build(store, read_wal, f"stored summary unreadable: {exc}")
    from walship.repo import record
    stored = record.read(store)
    if stored is not None and stored.wal_segment_size and stored.wal_segment_size != index.segment_size:
        return build(store, read_wal, "segment size changed")
    if stored is not None and stored.wal_segment_size:
        index.size_source = "repository record"
    try:
        _Checker(store, index).run()
    except _Stale as exc:
        return build(store, read_wal, str(exc))
    index.note = "summary checked and advanced"
    if index.changed:
        _save(store, index)
    return index


class _Checker:
    def __init__(self, store: Store, index: RunIndex) -> None:
        self.store, self.index = store, index
        self.size = index.segment_size
        self.wale = index.wale_after is not None

    def name(self, tli: int, n: int) -> str:
        return Segment(tli, n).name(self.size)

    def list_after(self, tli: int, after: int, until: int | None = None) -> None:
        """Add every key of the timeline after segment `after` (up to segment `until`), in key order."""
        last = wal_key(self.name(tli, until)) if until is not None else None
        for info in self.store.list(f"{WAL_PREFIX}{tli:08X}", start_after=wal_key(self.name(tli, after))):
            if last is not None and info.key > last:
                break
            self.index.add(info, wal_name_of_key(info.key))

    def run(self) -> None:
        index = self.index
        if self.store.ordered_listing:
            self.list_newcomers()
        else:
            self.list_wale()
        self.wale = index.wale_after is not None
        self.trim_fronts()
        if self.store.ordered_listing:
            self.recheck_gaps()
        else:
            self.scan_newcomers()       # covers the gaps too
        self.check_ends()
        self.audit()

    def list_wale(self) -> None:
        """WAL-E's newcomers (nothing once it stopped writing here)."""
        for info in self.store.list(WALE_WAL_PREFIX, start_after=self.index.wale_after):
            name = wale_wal_name_of_key(info.key)
            if name is not None:
                self.index.add(info, name)

    def list_newcomers(self) -> None:
        """An ordered listing: what follows each lower timeline's newest summarised segment, then one
        listing from the top timeline's newest segment on. That one returns the rest of the top timeline,
        every higher timeline, and then (wal/ sorts before wal_005/) WAL-E's first key if there is one:
        a repository WAL-E never wrote to costs no request of its own."""
        index = self.index
        timelines = sorted(t for t, runs in index.runs.items() if runs)
        for tli in timelines[:-1]:
            self.list_after(tli, index.runs[tli][-1][1])
        start = wal_key(self.name(timelines[-1], index.runs[timelines[-1]][-1][1])) if timelines else WAL_PREFIX
        for info in self.store.list(WAL_PREFIX.rstrip("/"), start_after=start):
            if not info.key.startswith(WAL_PREFIX):
                if info.key.startswith(WALE_WAL_PREFIX) or index.wale_after is not None:
                    self.list_wale()
                break
            index.add(info, wal_name_of_key(info.key))
        else:
            if index.wale_after is not None:
                self.list_wale()

    def scan_newcomers(self) -> None:
        """No ordered listing (a directory): one read of the directory's names, no stat each, and a head()
        for every name outside the summarised runs: newcomers, late uploads into a gap, a timeline the
        summary does not know, history and backup-label files (a few). The one part of a read on a file
        repository that grows with the archive: about 0.3 s per million names, against 12 us per object
        for the listing it replaces."""
        index = self.index
        # Skip the names inside summarised runs, [first, last], without Python code per name: the bounds
        # are ["", first 1, after last 1, first 2, ...], so bisect_right's result is even inside a run
        # and odd outside; compress() keeps the names whose result is odd.
        bounds = [""]
        for tli, runs in sorted(index.runs.items()):
            for a, b, _ in runs:
                bounds += [self.name(tli, a), self.name(tli, b) + "\0"]
        names, names_again = tee(self.store.names_in(WAL_PREFIX))
        found = list(compress(names, map(partial(and_, 1), map(partial(bisect_right, bounds), names_again))))
        for name in sorted(found):
            info = self.store.head(wal_key(name))
            if info is not None:
                index.add(info, name)

    def trim_fronts(self) -> None:
        """Retention deletes each timeline's oldest segments: find the new front by bisection."""
        for tli, runs in self.index.runs.items():
            while runs:
                first, last = runs[0][0], runs[0][1]
                if self.store_has(tli, first):
                    break
                self.index.changed = True
                if not self.store_has(tli, last):
                    del runs[0]
                    continue
                lo, hi = first, last            # lo absent, hi present
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if self.store_has(tli, mid):
                        hi = mid
                    else:
                        lo = mid
                runs[0][0] = hi
                break

    def store_has(self, tli: int, n: int) -> bool:
        name = self.name(tli, n)
        return self.store.head(wal_key(name)) is not None or (
            self.wale and self.store.head(wale_wal_key(name)) is not None)

    def recheck_gaps(self) -> None:
        """A gap inside the summary may have been filled since (a late upload): list it again."""
        for tli, runs in list(self.index.runs.items()):
            for before, after in [(runs[i][1], runs[i + 1][0]) for i in range(len(runs) - 1)]:
                self.list_after(tli, before, after - 1)

    def check_ends(self) -> None:
        ends = sorted(((r[1], tli) for tli, runs in self.index.runs.items() for r in runs), reverse=True)
        self.require_stored([(tli, n) for n, tli in ends[:RUN_END_PROBES]])

    def require_stored(self, segments: list[tuple[int, int]]) -> None:
        """_Stale unless every (timeline, number) is stored; on a remote store the probes run side by side
        (a round trip each: 16 in a row cost a quarter of a second)."""
        if self.store.ordered_listing and len(segments) > 1:
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(max_workers=8) as pool:
                present = list(pool.map(lambda seg: self.store_has(*seg), segments))
        else:
            present = [self.store_has(tli, n) for tli, n in segments]
        for (tli, n), ok in zip(segments, present):
            if not ok:
                raise _Stale(f"{self.name(tli, n)} is summarised but not stored")

    def audit(self) -> None:
        """AUDIT_WINDOW summarised segments from the audit cursor on, and RANDOM_PROBES random ones."""
        members = [(tli, r[0], r[1]) for tli, runs in sorted(self.index.runs.items()) for r in runs]
        if not members:
            return
        rng = random.SystemRandom()
        total = sum(b - a + 1 for _, a, b in members)
        picks = []
        for _ in range(RANDOM_PROBES):
            pick = rng.randrange(total)
            for tli, a, b in members:
                if pick <= b - a:
                    picks.append((tli, a + pick))
                    break
                pick -= b - a + 1
        self.require_stored(picks)
        at = self.index.audit_at or (members[0][0], members[0][1])
        budget = AUDIT_WINDOW_LISTED if self.store.ordered_listing and not self.wale else AUDIT_WINDOW
        i = next((j for j, (tli, _, b) in enumerate(members) if (tli, b) >= tuple(at)), 0)
        while budget > 0:
            tli, a, b = members[i]
            first = max(a, at[1]) if at[0] == tli else a
            last = min(b, first + budget - 1)
            self.audit_range(tli, first, last)
            budget -= last - first + 1
            if last < b:
                at = (tli, last + 1)
                break
            i = (i + 1) % len(members)
            at = (members[i][0], members[i][1])
            if i == 0:
                break       # the whole summary audited this call
        self.index.audit_at = (at[0], at[1])
        self.index.changed = True

    def audit_range(self, tli: int, first: int, last: int) -> None:
        if self.store.ordered_listing and not self.wale:
            expected = first
            for info in self.store.list(f"{WAL_PREFIX}{tli:08X}", start_after=wal_key(self.name(tli, first - 1))
                                        if first > 0 else f"{WAL_PREFIX}{tli:08X}"):
                name = wal_name_of_key(info.key)
                if not is_segment(name):
                    continue
                try:
                    n = Segment.parse(name, self.size).number
                except WalshipError:
                    continue
                if n > last:
                    break
                if n > expected:
                    raise _Stale(f"{self.name(tli, expected)} is summarised but not stored")
                expected = max(expected, n + 1)
            if expected <= last:
                raise _Stale(f"{self.name(tli, expected)} is summarised but not stored")
            return
        for n in range(first, last + 1):
            if not self.store_has(tli, n):
                raise _Stale(f"{self.name(tli, n)} is summarised but not stored")
