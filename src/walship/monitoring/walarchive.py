"""What the repository's WAL archive holds, and what it lets a restore reach.

- Timelines: every timeline with WAL or a .history, its parent and branch point.
  A FORK is a parent timeline with WAL archived beyond the segment that holds
  a child's branch point: two servers wrote after the branch (a restored copy
  that archived here, or a split brain). A promotion alone never does that:
  the old timeline's last segment is archived only as .partial.
- Gaps: a segment missing where recovery needs one: on the oldest backup's
  timeline from its start segment on, on a later timeline from its branch
  point (else from its first archived segment), and on a parent up to the
  segment where a child branches off.
- Windows: from each backup's consistency point (its stop LSN) to the first
  gap after it, continuing through every branch point its WAL reaches into
  the child timeline, as recovery does.

The segments are held as runs of consecutive numbers, read from the repository's summary of runs
(walship.repo.walrunindex, checked against the objects on every read; exact=True lists every key
instead, as `verify` without --quick does); segment size and history files as walship.repo.walindex
reads them.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from walship.pg.walnames import Segment, format_lsn, history_name, parse_lsn, segment_of
from walship.repo import walindex, walrunindex

if TYPE_CHECKING:
    from walship.crypto import Keyring
    from walship.repo.catalog import BackupInfo
    from walship.storage import Store


@dataclass(frozen=True)
class Gap:
    first: str              # first missing segment
    last: str               # last missing segment
    count: int
    next: str | None = None  # the archived segment after the gap (None: nothing comes after it)

    def __str__(self) -> str:
        return self.first if self.count == 1 else f"{self.first}..{self.last} ({self.count} segments)"

    def describe(self) -> str:
        return gap_text(self.as_dict())

    def as_dict(self) -> dict:
        return {"first": self.first, "last": self.last, "count": self.count, "next": self.next}


@dataclass(frozen=True)
class Span:
    """What a restore can reach on one timeline from one backup: any point from start to end."""
    timeline: int
    backup: str                  # the backup the span starts from (the oldest one, when several reach it)
    start_lsn: int               # the backup's consistency point, or the branch point it entered by
    start_time: float | None     # the backup's stop time; None when entered through a branch point
    start_wal: str
    end_wal: str                 # the last continuous segment
    end_lsn: int                 # the end of that segment
    end_time: float | None       # when that segment was archived
    via: tuple[int, ...]         # timelines followed from the backup's to this one
    gap_after: Gap | None        # what stops the span (None: the end of the archive)

    def as_dict(self) -> dict:
        return {"timeline": self.timeline, "backup": self.backup, "start_lsn": format_lsn(self.start_lsn),
                "start_time": self.start_time, "start_wal": self.start_wal, "end_wal": self.end_wal,
                "end_lsn": format_lsn(self.end_lsn), "end_time": self.end_time, "via": list(self.via),
                "gap_after": self.gap_after.as_dict() if self.gap_after else None}


@dataclass(frozen=True)
class Timeline:
    timeline: int
    parent: int | None
    branch_lsn: int | None
    time: float | None           # when its .history was archived
    reason: str
    segments: int
    first: str | None
    last: str | None
    flags: tuple[tuple[str, str, str], ...]   # (kind, what it means, what to do)

    def as_dict(self) -> dict:
        return {"timeline": self.timeline, "parent": self.parent,
                "branch_lsn": format_lsn(self.branch_lsn) if self.branch_lsn is not None else None,
                "time": self.time, "reason": self.reason, "segments": self.segments,
                "first": self.first, "last": self.last,
                "flags": [{"kind": k, "message": m, "hint": h} for k, m, h in self.flags]}


class WalArchive:
    """The archived segments of each timeline as runs of consecutive numbers (start, end), not one entry
    per segment: a million segments with no gap are one run, so nothing here grows with the archive."""

    def __init__(self, segment_size: int, numbers: dict[int, list[int]] | None = None,
                 newest_name: str | None = None, newest_mtime: float | None = None,
                 mtimes: dict[int, dict[int, float]] | None = None,
                 histories: dict[int, walindex.History] | None = None,
                 history_errors: dict[int, str] | None = None, size_source: str = "given",
                 runs: dict[int, list[tuple[int, int]]] | None = None,
                 end_mtimes: dict[tuple[int, int], float] | None = None) -> None:
        self.segment_size = segment_size
        if runs is None:
            runs = {tli: walrunindex.runs_of(sorted(ns)) for tli, ns in (numbers or {}).items() if ns}
        self.starts: dict[int, list[int]] = {tli: [s for s, _ in r] for tli, r in runs.items() if r}
        self.ends: dict[int, list[int]] = {tli: [e for _, e in r] for tli, r in runs.items() if r}
        self.end_mtimes: dict[tuple[int, int], float] = dict(end_mtimes or {})
        for tli, by_number in (mtimes or {}).items():
            for end in self.ends.get(tli, ()):
                if end in by_number:
                    self.end_mtimes[(tli, end)] = by_number[end]
        self.newest_name = newest_name                          # highest segment name
        self.newest_mtime = newest_mtime                        # latest upload time of any segment
        self.histories: dict[int, walindex.History] = histories or {}
        self.history_errors: dict[int, str] = history_errors or {}
        self.size_source = size_source
        self.index_note = ""                                    # how the runs were read (index, full listing)

    @property
    def count(self) -> int:
        return sum(self.timeline_count(tli) for tli in self.starts)

    def timeline_count(self, tli: int) -> int:
        return sum(e - s + 1 for s, e in zip(self.starts.get(tli, ()), self.ends.get(tli, ())))

    @property
    def numbers(self) -> dict[int, list[int]]:
        """timeline -> every archived segment number (one entry per segment: for small archives and tests)."""
        return {tli: [n for s, e in zip(self.starts[tli], self.ends[tli]) for n in range(s, e + 1)]
                for tli in self.starts}

    @property
    def oldest_name(self) -> str | None:
        if not self.starts:
            return None
        tli = min(self.starts)
        return self.name(tli, self.starts[tli][0])

    def name(self, timeline: int, number: int) -> str:
        return Segment(timeline, number).name(self.segment_size)

    def _run_of(self, timeline: int, number: int) -> int | None:
        """The index of the run that holds the segment, or None."""
        starts = self.starts.get(timeline, [])
        i = bisect_right(starts, number) - 1
        return i if i >= 0 and self.ends[timeline][i] >= number else None

    def has(self, timeline: int, number: int) -> bool:
        return self._run_of(timeline, number) is not None

    def branch_segment(self, timeline: int) -> int | None:
        """The segment number that holds the point where `timeline` branched off its parent."""
        history = self.histories.get(timeline)
        return self._branch_number(history) if history else None

    def _branch_number(self, history: walindex.History) -> int:
        return segment_of(history.branch_lsn, history.parent, self.segment_size).number

    def children(self, timeline: int) -> list[walindex.History]:
        return sorted((h for h in self.histories.values() if h.parent == timeline), key=lambda h: h.timeline)

    def _next_archived(self, timeline: int, after: int) -> int | None:
        if self.has(timeline, after + 1):
            return after + 1
        starts = self.starts.get(timeline, [])
        i = bisect_right(starts, after)
        return starts[i] if i < len(starts) else None

    def _gap(self, tli: int, first: int, last: int, next_name: str | None = None) -> Gap:
        if next_name is None:
            following = self._next_archived(tli, last)
            next_name = self.name(tli, following) if following is not None else None
        return Gap(self.name(tli, first), self.name(tli, last), last - first + 1, next_name)

    # --- gaps ------------------------------------------------------------------------

    def gaps(self, since: str | None = None) -> list[Gap]:
        """Missing segments from `since` (the oldest backup's start segment) on; without it, from the oldest one."""
        start = Segment.parse(since, self.segment_size) if since else None
        timelines = set(self.starts) | ({start.timeline} if start else set())
        found: list[Gap] = []
        for tli in sorted(timelines):
            if start and tli < start.timeline:
                continue    # older timelines than the oldest backup's: no restore needs them
            starts, ends = self.starts.get(tli, []), self.ends.get(tli, [])
            if start and tli == start.timeline:
                expected = start.number
            else:
                branch = self.branch_segment(tli)
                expected = branch if branch is not None and starts and branch <= starts[0] else starts[0]
                if start:
                    expected = max(expected, start.number)   # nothing before the oldest backup is needed
            later = [(max(s, expected), e) for s, e in zip(starts, ends) if e >= expected]
            if not later:
                # Nothing at all from the needed segment on, on this timeline.
                found.append(self._gap(tli, expected, expected))
                continue
            for s, e in later:
                if s > expected:
                    found.append(self._gap(tli, expected, s - 1))
                expected = e + 1
            # A child that branches off later needs this timeline up to the segment before its branch point.
            for child in self.children(tli):
                branch = self._branch_number(child)
                if self.has(child.timeline, branch) and expected < branch:
                    found.append(self._gap(tli, expected, branch - 1, self.name(child.timeline, branch)))
                    expected = branch
        return found

    # --- windows ---------------------------------------------------------------------

    def backup_missing(self, backup: BackupInfo) -> str | None:
        """The first segment of the backup's own WAL (start to stop) that is not archived, or None."""
        first = Segment.parse(backup.start_wal, self.segment_size)
        last = Segment.parse(backup.stop_wal, self.segment_size)
        n = first.number
        while n <= last.number:
            run = self._run_of(first.timeline, n)
            if run is None:
                return self.name(first.timeline, n)
            n = self.ends[first.timeline][run] + 1
        return None

    def windows(self, backups: Iterable[BackupInfo]) -> list[Span]:
        """Every span a restore of one of `backups` can reach, per timeline (one per distinct end)."""
        best: dict[tuple[int, int], Span] = {}
        for backup in sorted(backups, key=lambda b: (parse_lsn(b.stop_lsn), b.stop_time)):
            if self.backup_missing(backup) is not None:
                continue
            stop = Segment.parse(backup.stop_wal, self.segment_size)
            for span in self._walk(stop.timeline, stop.number, parse_lsn(backup.stop_lsn), backup.stop_time,
                                   backup.name, ()):
                key = (span.timeline, span.end_lsn)
                if key not in best or span.start_lsn < best[key].start_lsn:
                    best[key] = span
        return sorted(best.values(), key=lambda s: (s.timeline, s.start_lsn))

    def _walk(self, tli: int, number: int, start_lsn: int, start_time: float | None,
              backup: str, via: tuple[int, ...]) -> list[Span]:
        """Spans from segment `number` of `tli` (archived) on, and into every child whose branch point
        the continuous WAL reaches."""
        run = self._run_of(tli, number)
        assert run is not None, (tli, number)
        end = self.ends[tli][run]
        following = self._next_archived(tli, end)
        gap = self._gap(tli, end + 1, following - 1) if following is not None else None
        spans = [Span(tli, backup, start_lsn, start_time, self.name(tli, number), self.name(tli, end),
                      Segment(tli, end + 1).start_lsn(self.segment_size), self.end_mtimes.get((tli, end)),
                      via + (tli,), gap)]
        for child in self.children(tli):
            branch = self._branch_number(child)
            # Recovery reads the branch segment from the child's timeline; the parent must reach up to it.
            if child.branch_lsn >= start_lsn and branch <= end + 1 and self.has(child.timeline, branch):
                spans += self._walk(child.timeline, branch, child.branch_lsn, None, backup, via + (tli,))
        return spans

    # --- timelines -------------------------------------------------------------------

    def timelines(self) -> list[Timeline]:
        found = []
        known = set(self.starts) | set(self.histories) | set(self.history_errors)
        lowest = min(known, default=1)
        for tli in sorted(known):
            starts, ends = self.starts.get(tli, []), self.ends.get(tli, [])
            history = self.histories.get(tli)
            flags: list[tuple[str, str, str]] = []
            if tli in self.history_errors:
                flags.append(("HISTORY UNREADABLE", self.history_errors[tli],
                              "without it a restore cannot follow the switch to this timeline"))
            elif history is None and starts and tli != lowest:
                # The oldest timeline kept needs no history: nothing before it is followed.
                flags.append(("NO HISTORY", f"timeline {tli} has WAL but no {history_name(tli)} in the archive",
                              f"archive it from pg_wal of the server that runs on timeline {tli} "
                              f"(walship wal-push pg_wal/{history_name(tli)})"))
            if history is not None:
                fork = self._fork(history)
                if fork:
                    flags.append(fork)
            found.append(Timeline(tli, history.parent if history else None,
                                  history.branch_lsn if history else None, history.mtime if history else None,
                                  history.reason if history else "", self.timeline_count(tli),
                                  self.name(tli, starts[0]) if starts else None,
                                  self.name(tli, ends[-1]) if ends else None, tuple(flags)))
        return found

    def _fork(self, history: walindex.History) -> tuple[str, str, str] | None:
        parent_ends = self.ends.get(history.parent, [])
        branch = self._branch_number(history)
        if not parent_ends or parent_ends[-1] <= branch:
            return None
        return ("FORK",
                f"timeline {history.parent} has WAL archived after timeline {history.timeline} branched off it at "
                f"{format_lsn(history.branch_lsn)} (up to {self.name(history.parent, parent_ends[-1])}): two servers "
                f"wrote after the branch, a restored copy that archived here or a split brain",
                f"find the server still writing timeline {history.parent} (pg_stat_archiver on each) and stop it or "
                f"give it its own repository; a restore follows the latest timeline ({max(self.histories)}) unless "
                f"backup-fetch --target-timeline says otherwise")


def load(store: Store, keyring: Keyring | None = None, exact: bool = False) -> WalArchive:
    """The repository's WAL, its segment size and its timelines, from the repository alone: from the
    summary of runs (repo.walrunindex, checked against the objects), or with exact from a full listing."""
    from walship.archive.fetch import download
    histories_read: dict[str, bytes] = {}

    def read_wal(name: str) -> bytes:
        if name not in histories_read:          # a .history is read by the index and again below: once
            histories_read[name] = download(store, name, keyring)
        return histories_read[name]
    index = walrunindex.load(store, read_wal, exact=exact)
    runs = {tli: [(a, b) for a, b, _ in r] for tli, r in index.runs.items() if r}
    end_mtimes = {(tli, b): m for tli, r in index.runs.items() for _, b, m in r}
    archive = WalArchive(index.segment_size, runs=runs, end_mtimes=end_mtimes, size_source=index.size_source)
    archive.index_note = index.note
    if runs:
        archive.newest_mtime = index.newest_mtime
        archive.newest_name = max(archive.name(tli, r[-1][1]) for tli, r in runs.items())
    archive.histories, archive.history_errors = walindex.read_histories(index.listing_of_histories(), read_wal)
    return archive


def load_with_backups(store: Store, keyring: Keyring | None = None) -> tuple[WalArchive, list[BackupInfo]]:
    """load() and the backups' listing side by side: each waits on the store's round trips, not the CPU
    (30 markers on S3 are 30 GETs: about as long as the WAL summary's checks)."""
    from concurrent.futures import ThreadPoolExecutor

    from walship.backup.catalog import list_backups
    with ThreadPoolExecutor(max_workers=2) as pool:
        backups = pool.submit(list_backups, store)
        archive = load(store, keyring)
        return archive, backups.result()


# --- text, shared by `walship status` and `walship verify` (from the JSON form, so both say the same) ----

def utc(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts else "-"


def gap_text(gap: dict) -> str:
    """The missing segments and what comes after them."""
    span = gap["first"] if gap["count"] == 1 else f"{gap['first']} .. {gap['last']} ({gap['count']} segments)"
    return span + (f", next archived {gap['next']}" if gap["next"] else ", nothing archived after it")


def timeline_lines(timelines: list[dict], indent: str, flags: bool = True) -> list[str]:
    lines = []
    for t in timelines:
        if t["parent"] is None:
            origin = "the first timeline here"
        else:
            origin = f"from timeline {t['parent']} at {t['branch_lsn']} (history archived {utc(t['time'])})"
        plural = "segment" if t["segments"] == 1 else "segments"
        wal = f"WAL {t['first']} .. {t['last']} ({t['segments']} {plural})" if t["segments"] else "no WAL"
        lines.append(f"{indent}{t['timeline']}: {origin}, {wal}")
        for flag in t["flags"] if flags else ():
            lines.append(f"{indent}   {flag['kind']}: {flag['message']}")
            lines.append(f"{indent}   what to do: {flag['hint']}")
    return lines


def window_lines(windows: list[dict], indent: str) -> list[str]:
    lines = []
    for w in windows:
        if w["start_time"] is not None:
            start = f"{utc(w['start_time'])} (backup {w['backup']} consistent at {w['start_lsn']})"
        else:
            start = (f"the branch at {w['start_lsn']} (backup {w['backup']} via timeline "
                     f"{' -> '.join(map(str, w['via']))})")
        stop = f"; then missing {gap_text(w['gap_after'])}" if w["gap_after"] else ""
        lines.append(f"{indent}timeline {w['timeline']}: {start} .. {w['end_lsn']} (end of WAL {w['end_wal']}, "
                     f"archived {utc(w['end_time'])}){stop}")
    return lines
