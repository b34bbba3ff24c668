"""PostgreSQL 17+'s WAL summaries (summarize_wal = on): which blocks of which relation forks WAL records touched
between two LSNs. Every statement about them is here; backup/incremental.py decides what to do with the answers.

The WAL summarizer (a background process) writes, per timeline, summary files
that tile the WAL it read: each covers [start_lsn, end_lsn) and names, per
relation fork (tablespace oid, database oid, relfilenode, fork number), the
blocks modified by a WAL record in that range, and a "limit block" when the
fork was truncated (or created, or dropped) at some point in it: every block
at or past the limit must be taken as changed. A relfilenode of 0 is the whole
database (tablespace, database): CREATE DATABASE ... STRATEGY FILE_COPY and
DROP DATABASE mark it so, since they copy or remove files without a WAL record
per block. Summaries end at checkpoint redo points, so once the summarizer has
reached a backup's start LSN, summaries tile up to it exactly.

SQL: summarize_wal, pg_get_wal_summarizer_state() (how far it got),
pg_available_wal_summaries() (the files there are) and
pg_wal_summary_contents(tli, start, end) (one file's blocks, streamed: a
summary can name millions of blocks).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from walship.pg import walnames

MIN_VERSION = 170000
WAIT_S = 60.0                  # at most, for the summarizer to reach a backup's start (then: read everything)
GLOBAL_TABLESPACE = 1664       # global/
DEFAULT_TABLESPACE = 1663      # base/<database>/
FORKS = {"": 0, "_fsm": 1, "_vm": 2, "_init": 3}
MAIN_FORK = 0
_RELATION = re.compile(r"^(\d+)(_fsm|_vm|_init)?(?:\.(\d+))?$")


@dataclass(frozen=True, slots=True, order=True)
class Summary:
    timeline: int
    start: int                 # LSN, inclusive
    end: int                   # LSN, exclusive


@dataclass(frozen=True, slots=True)
class RelationFile:
    """What a relation file's path in the data directory says: the fork it holds and which segment of it."""
    tablespace: int
    database: int
    relfilenode: int
    fork: int
    segment: int               # <relfilenode>.<segment>; 0 without a suffix

    @property
    def key(self) -> tuple[int, int, int, int]:
        return (self.tablespace, self.database, self.relfilenode, self.fork)


def relation_file(path: str) -> RelationFile | None:
    """base/<db>/<rel>[_fork][.<seg>], global/<rel>..., pg_tblspc/<spc>/<version>/<db>/<rel>...; else None."""
    parts = path.split("/")
    if len(parts) == 3 and parts[0] == "base" and parts[1].isdecimal():
        spc, db = DEFAULT_TABLESPACE, int(parts[1])
    elif len(parts) == 2 and parts[0] == "global":
        spc, db = GLOBAL_TABLESPACE, 0
    elif len(parts) == 5 and parts[0] == "pg_tblspc" and parts[1].isdecimal() and parts[3].isdecimal():
        spc, db = int(parts[1]), int(parts[3])
    else:
        return None
    m = _RELATION.match(parts[-1])
    if not m:
        return None
    return RelationFile(spc, db, int(m.group(1)), FORKS[m.group(2) or ""], int(m.group(3) or 0))


def supported(version: int) -> bool:
    return version >= MIN_VERSION


def summarize_wal_on(conn) -> bool:
    return conn.execute("SELECT current_setting('summarize_wal') = 'on'").fetchone()[0] is True


def summarizer_state(conn) -> tuple[int, int]:
    """(timeline, LSN) the summarizer has summarized up to (0, 0 before it has started)."""
    tli, lsn = conn.execute("SELECT summarized_tli, summarized_lsn::text FROM pg_get_wal_summarizer_state()"
                            ).fetchone()
    return int(tli or 0), walnames.parse_lsn(lsn) if lsn else 0


def wait_summarized(conn, timeline: int, lsn: int, timeout_s: float = WAIT_S) -> str | None:
    """Wait until the summarizer has summarized timeline up to lsn; None once it has, else why not (the wait
    ended after timeout_s, naming how far it got)."""
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        tli, done = summarizer_state(conn)
        if tli > timeline or (tli == timeline and done >= lsn):
            return None
        if time.monotonic() >= deadline:
            return (f"the WAL summarizer reached only {walnames.format_lsn(done)} on timeline {tli} within "
                    f"{timeout_s:.0f} s, not this backup's start {walnames.format_lsn(lsn)} on timeline {timeline} "
                    "(see the server's log and pg_get_wal_summarizer_state())")
        time.sleep(delay)
        delay = min(0.5, delay * 2)


def available(conn) -> list[Summary]:
    rows = conn.execute("SELECT tli, start_lsn::text, end_lsn::text FROM pg_available_wal_summaries()").fetchall()
    return sorted(Summary(int(t), walnames.parse_lsn(s), walnames.parse_lsn(e)) for t, s, e in rows)


def covering(summaries: Iterable[Summary], history: Iterable[tuple[int, int, int | None]], start: int,
             end: int) -> tuple[list[Summary], str | None]:
    """The summaries that together cover [start, end) along the timeline history (steps of (timeline, first LSN,
    LSN where the next timeline branched or None)), and None; or ([], why not) when there is a gap."""
    by_timeline: dict[int, list[Summary]] = {}
    for s in summaries:
        by_timeline.setdefault(s.timeline, []).append(s)
    chosen: list[Summary] = []
    for tli, begin, branch in history:
        low, high = max(start, begin), end if branch is None else min(end, branch)
        if low >= high:
            continue
        at = low
        for s in sorted(by_timeline.get(tli, ())):
            if s.end <= at or s.start >= high:
                continue
            if s.start > at:
                break
            chosen.append(s)
            at = s.end
            if at >= high:
                break
        if at < high:
            return [], (f"no WAL summary covers {walnames.format_lsn(at)} to {walnames.format_lsn(high)} on "
                        f"timeline {tli} (summarize_wal was off, or the summaries were removed: "
                        "wal_summary_keep_time)")
    return chosen, None


def contents(conn, summary: Summary) -> Iterator[tuple[int, int, int, int, int, bool]]:
    """(tablespace, database, relfilenode, fork, block, is_limit_block) of one summary, streamed row by row."""
    cur = conn.cursor()
    yield from cur.stream(
        "SELECT reltablespace::int8, reldatabase::int8, relfilenode::int8, relforknumber::int4,"
        "       relblocknumber::int8, is_limit_block"
        "  FROM pg_wal_summary_contents(%s, %s::pg_lsn, %s::pg_lsn)",
        (summary.timeline, walnames.format_lsn(summary.start), walnames.format_lsn(summary.end)))
