"""The archived WAL a point-in-time recovery needs: complete, on consistent timelines, readable.

From the start segment of the oldest kept backup to the newest archived
segment: no segment missing (gaps, see monitoring.walarchive, which also
follows each timeline from its branch point and its parent up to it); every
timeline after the first has a readable .history; every backup's own WAL
(start to stop segment) is there; and, unless quick, every segment reads back
whole (checksums, authentication) through the same code wal-fetch uses.
A FORK (two servers wrote after a branch) is a warning: the repository still
restores, but someone must look.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from walship.errors import WalshipError
from walship.monitoring import walarchive
from walship.pg.walnames import Segment

if TYPE_CHECKING:
    from walship.crypto import Keyring
    from walship.repo.catalog import BackupInfo
    from walship.storage import Store

# Timeline flags that make a restore impossible along that timeline; the others are warnings.
BLOCKING_FLAGS = ("NO HISTORY", "HISTORY UNREADABLE")


def check(store: Store, backups: list[BackupInfo], keyring: Keyring | None, quick: bool, workers: int = 4,
          chosen: list[BackupInfo] | None = None) -> tuple[list[str], dict]:
    """(problems, facts) of the repository's WAL; the windows are those of `chosen` (default: every backup)."""
    from walship.archive.fetch import download

    # quick: the summary of runs, checked against the objects (repo.walrunindex); full: every key listed,
    # and the summary rewritten from that listing
    archive = walarchive.load(store, keyring, exact=not quick)
    size = archive.segment_size
    problems: list[str] = []
    warnings: list[str] = []
    since = min(backups, key=lambda b: b.start_time).start_wal if backups else archive.oldest_name
    gaps = archive.gaps(since)
    problems += [f"WAL missing: {gap.describe()}" for gap in gaps]
    for b in backups:
        missing = archive.backup_missing(b)
        if missing:
            problems.append(f"backup {b.name} needs {missing}, which is not archived")
    if archive.size_source.startswith("guessed"):
        warnings.append(f"the segment size ({size} bytes) is {archive.size_source}: LSNs shown may be wrong; "
                        "the repository record, written by the next wal-push, settles it")
    timelines = archive.timelines()
    for t in timelines:
        for kind, message, hint in t.flags:
            (problems if kind in BLOCKING_FLAGS else warnings).append(f"{kind}: {message}; {hint}")

    read = 0
    if not quick and since:
        start = Segment.parse(since, size)
        names = [archive.name(tli, n) for tli in sorted(archive.starts)
                 for a, b in zip(archive.starts[tli], archive.ends[tli]) for n in range(a, b + 1)
                 if (tli, n) >= (start.timeline, start.number)]

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
    windows = archive.windows(backups if chosen is None else chosen)
    facts = {"segments": archive.count, "segment_size": size, "segment_size_source": archive.size_source,
             "since": since, "newest": archive.newest_name, "segments_read": read,
             "timelines": [t.as_dict() for t in timelines], "windows": [w.as_dict() for w in windows],
             "gaps": [g.as_dict() for g in gaps], "warnings": warnings}
    return problems, facts
