"""The archived WAL as a restore sees it: timelines, their histories, and where each ends.

backup-fetch reads this before downloading anything, to compute what the
restored server will do: the timeline recovery follows (PostgreSQL's
recovery_target_timeline = latest: the newest timeline whose history file is
archived, probing upward from the backup's timeline one number at a time, as
findNewestTimeLine does), whether the backup is in that timeline's history
(else the server stops with "requested timeline N is not a child of this
server's history"), and the end of the archived WAL on that path (a target
beyond it cannot be reached yet).

The repository's one WAL listing (walship.repo.walindex: wal/ and WAL-E's
wal_005/) gives the segments and history files; history files themselves are
read only for the timelines followed.
"""

from __future__ import annotations

from walship.errors import WalshipError
from walship.pg import walnames
from walship.repo import walindex


class TimelineStep(tuple):
    """(timeline, first LSN on it, LSN where the next timeline branched off or None for the followed one)."""

    __slots__ = ()

    def __new__(cls, timeline: int, begin: int, end: int | None) -> TimelineStep:
        return tuple.__new__(cls, (timeline, begin, end))

    @property
    def timeline(self) -> int:
        return self[0]

    @property
    def begin(self) -> int:
        return self[1]

    @property
    def end(self) -> int | None:
        return self[2]


class ArchiveEnd(tuple):
    """(newest archived segment on the followed path, the LSN just after it, its object time) or Nones."""

    __slots__ = ()

    def __new__(cls, segment: str | None, lsn: int | None, mtime: float | None) -> ArchiveEnd:
        return tuple.__new__(cls, (segment, lsn, mtime))

    @property
    def segment(self) -> str | None:
        return self[0]

    @property
    def lsn(self) -> int | None:
        return self[1]

    @property
    def mtime(self) -> float | None:
        return self[2]


class Archive:
    """The segments and history files of a repository, listed once (walindex.list_wal)."""

    def __init__(self, store, keyring, segment_size: int = walnames.DEFAULT_SEGMENT_SIZE):
        self.store = store
        self.keyring = keyring
        self.segment_size = segment_size
        listing = walindex.list_wal(store)
        # timeline -> segment number -> object time
        self.segments: dict[int, dict[int, float]] = walindex.segment_numbers(listing, segment_size)
        self.history_timelines: set[int] = set(listing.histories)
        self._histories: dict[int, list[TimelineStep]] = {}

    def followed_timeline(self, backup_timeline: int, requested: str | None) -> int:
        """The timeline recovery of a backup on backup_timeline follows for recovery_target_timeline=requested."""
        if requested == "current":
            return backup_timeline
        if requested is None or requested == "latest":
            newest = backup_timeline
            while newest + 1 in self.history_timelines:
                newest += 1
            return newest
        return int(requested)     # plan_restore checked that its history file is there, or that it is the backup's

    def chain(self, timeline: int) -> list[TimelineStep]:
        """The history of timeline, oldest first: each ancestor with the LSN range it covers."""
        if timeline in self._histories:
            return self._histories[timeline]
        steps: list[TimelineStep] = []
        if timeline in self.history_timelines:
            from walship.archive.fetch import download
            name = walnames.history_name(timeline)
            try:
                text = download(self.store, name, self.keyring).decode("utf-8", "replace")
                entries = walnames.parse_history(text)
            except WalshipError as exc:
                raise WalshipError(f"cannot read {name} from {self.store.url}: {exc.message}",
                                   exc.hint or "check the repository") from None
            begin = 0
            for parent, switch, _ in entries:
                steps.append(TimelineStep(parent, begin, switch))
                begin = switch
            steps.append(TimelineStep(timeline, begin, None))
        else:
            steps.append(TimelineStep(timeline, 0, None))
        self._histories[timeline] = steps
        return steps

    def end_of(self, chain: list[TimelineStep]) -> ArchiveEnd:
        """The newest archived segment on the path the chain describes (newest timeline first)."""
        for step in reversed(chain):
            numbers = self.segments.get(step.timeline, {})
            first = step.begin // self.segment_size
            last = None if step.end is None else (step.end - 1) // self.segment_size
            on_path = [n for n in numbers if n >= first and (last is None or n <= last)]
            if not on_path:
                continue
            newest = max(on_path)
            end_lsn = (newest + 1) * self.segment_size
            if step.end is not None:
                end_lsn = min(end_lsn, step.end)
            return ArchiveEnd(walnames.Segment(step.timeline, newest).name(self.segment_size), end_lsn,
                              max(numbers[n] for n in on_path))
        return ArchiveEnd(None, None, None)

    def diverged(self, chain: list[TimelineStep]) -> list[str]:
        """Ancestors that went on after the followed path branched off them (full segments archived past the
        branch point): the repository holds two histories, and the operator should know which one he gets."""
        notes = []
        for step in chain[:-1]:
            assert step.end is not None            # every ancestor ends where the next timeline branched
            branch_segment = (step.end - 1) // self.segment_size
            later = [n for n in self.segments.get(step.timeline, {}) if n > branch_segment]
            if later:
                newest = walnames.Segment(step.timeline, max(later)).name(self.segment_size)
                notes.append(f"timeline {step.timeline} went on after timeline {chain[-1].timeline}'s history "
                             f"branched off it at {walnames.format_lsn(step.end)} (archived up to {newest})")
        return notes


def problem_with(chain: list[TimelineStep], backup_timeline: int, stop_lsn: int) -> str | None:
    """Why a backup cannot start recovery that follows this chain, or None when it can."""
    followed = chain[-1].timeline
    for step in chain:
        if step.timeline == backup_timeline:
            if step.end is not None and stop_lsn > step.end:
                return (f"timeline {followed} branched off timeline {backup_timeline} at "
                        f"{walnames.format_lsn(step.end)}, before the backup was consistent "
                        f"({walnames.format_lsn(stop_lsn)})")
            return None
    return (f"timeline {backup_timeline} is not in the history of timeline {followed} "
            f"({' -> '.join(str(s.timeline) for s in chain)})")
