"""The archived WAL a point-in-time recovery needs: complete, on consistent timelines, readable.

From the start segment of the oldest kept backup to the newest archived
segment: no segment missing (gaps, see monitoring.walarchive); every
timeline after the first has its .history file, whose switch point its
parent's segments reach and from where its own segments go on; every
backup's last segment is there; and, unless quick, every segment reads back
whole (checksums, authentication) through the same code wal-fetch uses.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from walship.errors import NotInArchive, WalshipError
from walship.monitoring import walarchive
from walship.pg.walnames import Segment, history_name, parse_history


def check(store, backups, keyring, quick: bool, workers: int = 4) -> tuple[list[str], dict]:
    """(problems, facts) of the repository's WAL."""
    from walship.archive.fetch import download

    archive = walarchive.load(store)
    size = archive.segment_size
    problems: list[str] = []
    since = min(backups, key=lambda b: b.start_time).start_wal if backups else archive.oldest_name
    for gap in archive.gaps(since):
        problems.append(f"WAL missing: {gap}")
    for b in backups:
        seg = Segment.parse(b.stop_wal, size)
        if seg.number not in archive.numbers.get(seg.timeline, []):
            problems.append(f"backup {b.name} needs {b.stop_wal}, which is not archived")

    for tli in sorted(t for t in archive.numbers if t > 1):
        try:
            entries = parse_history(download(store, history_name(tli), keyring).decode())
        except NotInArchive:
            problems.append(f"timeline {tli} has WAL but no {history_name(tli)} in the archive")
            continue
        except WalshipError as exc:
            problems.append(exc.one_line())
            continue
        if not entries:
            problems.append(f"{history_name(tli)} is empty")
            continue
        parent, switch_lsn, _ = entries[-1]
        switch = Segment(parent, switch_lsn // size)
        own = archive.numbers[tli]
        if own[0] > switch.number:
            problems.append(f"timeline {tli} starts at {Segment(tli, own[0]).name(size)}, after its switch point "
                            f"in {switch.name(size)}: the segments in between are missing")
        parents = archive.numbers.get(parent, [])
        if parents and since and Segment.parse(since, size).timeline <= parent and parents[-1] < switch.number - 1:
            problems.append(f"timeline {parent} ends at {Segment(parent, parents[-1]).name(size)}, before the "
                            f"switch to timeline {tli} in {switch.name(size)}")

    read = 0
    if not quick and since:
        start = Segment.parse(since, size)
        names = [Segment(tli, n).name(size) for tli, numbers in sorted(archive.numbers.items())
                 for n in numbers if (tli, n) >= (start.timeline, start.number)]

        def read_one(name: str) -> str | None:
            try:
                download(store, name, keyring)
            except WalshipError as exc:
                return exc.one_line()
            return None

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for error in pool.map(read_one, names):
                if error:
                    problems.append(error)
        read = len(names)
    facts = {"segments": archive.count, "timelines": sorted(archive.numbers), "since": since,
             "newest": archive.newest_name, "segments_read": read}
    return problems, facts
