"""Incremental backups: only the blocks that changed since the parent, restored in one pass from the repository.

What an incremental stores. Every file that is not a relation file (pg_control,
pg_xact, pg_filenode.map, configuration...) is stored whole, always: they are
small, and storing them is simpler to trust than deciding they did not change.
A relation file (blockmap.is_relation_file) is read whole and hashed block by
block (SHA-256, cut to 128 bits, of each 8 KiB block); a block is left out only when the
parent's block map holds the same hash for the same block number of the same
path, i.e. when the parent's chain stores those very bytes. Anything else is
stored: a new file, a block past the parent's end (the file grew), a file the
parent did not have, a parent map that is missing or does not cover the file
whole. A file that shrank is recorded by its new size. Timestamps, sizes and
file identities are never trusted: a file dropped and recreated under the
same name, a database made with either CREATE DATABASE strategy, a rewrite
by VACUUM FULL or CLUSTER, all come down to hashes that differ or not.
What PostgreSQL changes while the file is read is what a full backup gets too:
the blocks as read, repaired by WAL replay from the backup's start.

What is read. On PostgreSQL 17+ with summarize_wal on, the server's WAL
summaries say which blocks WAL records touched between the parent's start
LSN and this backup's (plan_reads: after pg_backup_start, wait at most 60 s
for the summarizer to reach the new start on its timeline; the summaries
must tile the range along the timeline history, else nothing is trusted).
Why that range is enough: the parent's pg_backup_start checkpoint wrote every
change before its start to disk before the parent read a byte, so a block no
WAL record touched from then to the new start holds, on disk, the bytes the
parent read (hint bits aside, which replay does not need); a block touched
after the new start is repaired by replay from it (full-page writes). Then,
for a relation file whose path the parent's map holds, only these blocks are
read: those the summaries name, those at or past the fork's lowest limit
block (truncated, created or dropped in the range), and those past the
parent's last whole block (the file grew). Every other block takes the
parent's hash and origin, so the new map is complete and the restore and
verify do not change. Blocks read are hashed and compared with the parent's
map as always: one the summaries named but whose bytes the parent holds is
not stored. Read whole, always: a file the parent does not have, the forks
other than main (visibility map bits are cleared without a WAL record of their
own, the free space map is mostly not WAL-logged; both are small), and every
file of a database that CREATE DATABASE ... STRATEGY FILE_COPY or DROP
DATABASE touched in the range (its files are copied without per-block WAL,
and a database remade under the same OID has the same paths). Without
summaries for the whole range (PostgreSQL 14-16, summarize_wal off or turned
on after the parent's WAL left pg_wal, summaries removed by
wal_summary_keep_time, a parent on a timeline this server never summarized, a
summarizer that does not get there in time, a role that may not read them)
every block is read as before, and one info line says why. The push's log
line, and the marker (blocks_read, blocks_held, wal_summaries: backup-list
--json), say how many blocks were read of how many the files hold. Page
checksums are verified on the blocks read.

The stored blocks of a relation file are tar members ("pieces", at most
tarstream.PIECE bytes each) whose manifest lines list the block runs they hold;
every relation file has at least one (possibly empty) piece, so that the
newest backup names every file. The block map records, for every block of the
file, its hash and its origin: the index in the chain of the backup storing it
(an unchanged block inherits the parent's origin). The chain is in the marker:
`chain` (the ancestors, the full first) and `parent`.

The parent. The newest complete walship backup of the same cluster (system
identifier, PostgreSQL major, block size and WAL segment size) with block
maps, on the server's timeline or one in its history; WAL-E backups and
backups of older walship versions (no block maps) never are. `--from NAME`
names it, `--full` forces a full; without a flag, `full_every` (the most
backups of a chain, the full counted; 0: every flagless push is a full),
`full_max_age_days` and `full_chain_size` (a full once the chain's incrementals
store more than this many times its full: a restore reads them all) decide,
so a daily cron line needs no change. A killed
incremental has no completion marker: never listed, so never a parent.

Restore: every part of every backup of the chain is read once, by the same
`backup_concurrency` workers as a full. A worker reads its part's manifest,
fetches the newest backup's block maps of that part's relation files (found
by path range through blockmap.index) and writes each block whose origin is
the part's backup, where that backup's own map must say it stores the block
(the blocks of pieces, what incrementals stored, are checked against its hash
there; a full's whole files are covered by their SHA-256, as in a full
restore; `verify` checks every block's hash): each block
is written once, from the newest backup that holds it, straight into place
(pwrite), with no staging copy. Files that are not relation files, and
directories, come from the newest backup alone. Memory is the maps of the
files of the parts in flight, whatever the chain's depth. The chain tiles
every file exactly when each backup supplied as many blocks as the index says
the newest map takes from it: otherwise the restore fails (naming the backup)
before anything marks it finished. `verify` runs the same pass, writing nothing.

Retention (--retain N) counts backups, i.e. restorable points, and keeps
every backup one of the kept ones depends on (backup/retention.py).
"""

from __future__ import annotations

import hashlib
import threading
import time
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from typing import cast

from walship import logs, pipeline
from walship.backup import blockmap, tarstream
from walship.backup.catalog import Marker, part_sizes, read_marker
from walship.backup.extract import check_member, walk_part
from walship.backup.manifest import ManifestEntry
from walship.backup.tarreader import Member, TarReader
from walship.errors import IntegrityError, WalshipError
from walship.repo import layout
from walship.repo.catalog import BackupInfo

_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_CHAIN = 1000              # origins are u16; a deeper chain restores slower and risks more: take a full
READ_FACTOR = 8               # an incremental's part covers this many times backup_part_size of files read


@dataclass(frozen=True)
class Parent:
    info: BackupInfo
    chain: tuple[str, ...]    # the new backup's ancestors, the full first, the parent last


def choose_parent(backups: list[BackupInfo], store, settings, mode: str, from_name: str | None, facts,
                  block_size: int, keyring, now: float | None = None) -> Parent | None:
    """The parent of the backup about to be taken, or None for a full.

    mode: "full", "incremental" (a full, said so, when no backup can be a parent) or "auto" (the settings decide).
    """
    if mode == "full" or (mode == "auto" and not settings.full_every):
        return None                     # nothing read: a repository without incrementals is left as it was
    if from_name is not None:
        named = [b for b in backups if b.name == from_name]
        if not named:
            raise WalshipError(f"--from {from_name}: no complete backup of that name",
                               "see `walship backup-list`; or leave --from out to use the newest")
        parent, why = named[0], _unfit(named[0], store, facts, block_size, keyring)
        if why:
            raise WalshipError(f"--from {from_name} cannot be the parent of an incremental backup: {why}",
                               "name another backup, or take a full with --full")
        return Parent(parent, (*parent.chain, parent.name))
    newest = None
    reason = "the repository holds no walship backup"
    for backup in reversed(backups):
        why = _unfit(backup, store, facts, block_size, keyring)
        if why is None:
            newest = backup
            break
        reason = f"{backup.name}: {why}"
        if backup.source == "walship":
            break                 # the newest walship backup is what an incremental must follow, or nothing
    if newest is None:
        if mode == "incremental":
            logs.warning("incremental_without_parent", f"no backup can be the parent ({reason}): taking a full")
        return None
    chain = (*newest.chain, newest.name)
    if mode == "auto":
        if not settings.full_every or len(chain) >= settings.full_every:
            return None
        full = next(b for b in backups if b.name == chain[0])
        if settings.full_max_age_days and (now or time.time()) - full.start_time > settings.full_max_age_days * 86400:
            return None
        # a restore reads every backup of its chain whole: once the incrementals store more than the full,
        # the next restore reads more than two fulls' worth, and a full is the cheaper next backup
        stored = sum(b.stored_size for b in backups if b.name in chain[1:])
        if settings.full_chain_size and stored > settings.full_chain_size * full.stored_size:
            logs.info("full_for_chain_size",
                      f"taking a full: the {len(chain) - 1} incrementals after {full.name} store "
                      f"{stored / max(full.stored_size, 1):.2f}x what it does (full_chain_size "
                      f"{settings.full_chain_size:g})")
            return None
    return Parent(newest, chain)


def _unfit(backup: BackupInfo, store, facts, block_size: int, keyring) -> str | None:
    """Why this backup cannot be a parent, or None."""
    if backup.source != "walship":
        return "a WAL-E backup has no block maps"
    if backup.system_identifier != facts.system_identifier:
        return f"it is of another cluster (system identifier {backup.system_identifier})"
    if backup.pg_version // 10000 != facts.version // 10000:
        return f"it is of PostgreSQL {backup.pg_version // 10000}"
    if len(backup.chain) + 1 >= MAX_CHAIN:
        return f"its chain is {len(backup.chain) + 1} backups deep already"
    marker = read_marker(store, backup.name)
    if not marker.block_size:
        return "it has no block maps (taken by an older walship)"
    if marker.block_size != block_size:
        return f"its block size is {marker.block_size}, the server's {block_size}"
    if marker.wal_segment_size != facts.wal_segment_size:
        return f"its wal_segment_size is {marker.wal_segment_size}, the server's {facts.wal_segment_size}"
    if backup.timeline != facts.timeline:
        from walship.backup import timelines
        from walship.pg import walnames
        history = timelines.Archive(store, keyring, facts.wal_segment_size).chain(facts.timeline)
        problem = timelines.problem_with(history, backup.timeline, walnames.parse_lsn(backup.stop_lsn))
        if problem:
            return problem
    return None


def join(entries: Iterable, parent_maps: blockmap.ChainMaps, changes: ChangedBlocks | None = None) -> Iterator:
    """The walk's entries, relation files with the parent's map of the same path (merged in walk order) and,
    when WAL summaries cover the range, what they say changed in the file."""
    for entry in entries:
        if entry.kind == "file" and blockmap.is_relation_file(entry.name):
            parent = parent_maps.lookup(entry.name)
            yield tarstream.MappedEntry(**{f.name: getattr(entry, f.name) for f in fields(entry)}, parent=parent,
                                        changes=changes.for_file(entry.name) if changes and parent else None)
        else:
            yield entry


# --- what WAL summaries say changed ------------------------------------------------------------

class ChangedBlocks:
    """The blocks WAL summaries name between the parent's start and this backup's, per relation fork, gathered
    from the streamed rows of pg_wal_summary_contents: 4 bytes a changed block, looked up per walked file."""

    def __init__(self, blocks_per_segment: int):
        self.blocks_per_segment = blocks_per_segment
        self._blocks: dict[tuple[int, int, int, int], array] = {}
        self._limits: dict[tuple[int, int, int, int], int] = {}
        self._recreated: set[tuple[int, int]] = set()     # (tablespace, database) copied or dropped whole
        self.rows = 0

    def add(self, rows: Iterable[tuple[int, int, int, int, int, bool]]) -> None:
        blocks, limits = self._blocks, self._limits
        for spc, db, rel, fork, block, is_limit in rows:
            self.rows += 1
            if rel == 0:
                self._recreated.add((spc, db))
                continue
            key = (spc, db, rel, fork)
            if is_limit:
                limits[key] = min(limits.get(key, block), block)
            else:
                found = blocks.get(key)
                if found is None:
                    found = blocks[key] = array("I")
                found.append(block)

    def seal(self) -> None:
        """Once every summary was added: each fork's blocks sorted, each once."""
        for key, found in self._blocks.items():
            self._blocks[key] = array("I", sorted(set(found)))

    def for_file(self, name: str) -> blockmap.FileChanges | None:
        """What changed in this relation file (block numbers within the file), or None: read it whole.

        Whole: the forks other than main (the visibility map's bits are cleared without a WAL record of their
        own, the free space map is mostly not WAL-logged; both are small), and every file of a database that
        CREATE DATABASE ... STRATEGY FILE_COPY or DROP DATABASE touched in the range (relfilenode 0)."""
        from walship.pg import walsummaries
        rel = walsummaries.relation_file(name)
        if rel is None or rel.fork != walsummaries.MAIN_FORK or (rel.tablespace, rel.database) in self._recreated:
            return None
        low = rel.segment * self.blocks_per_segment
        high = low + self.blocks_per_segment
        found = self._blocks.get(rel.key)
        changed = array("I")
        if found is not None:
            i, j = bisect_left(found, low), bisect_left(found, high)
            changed = array("I", (b - low for b in found[i:j])) if low else found[i:j]
        limit = self._limits.get(rel.key)
        if limit is not None:
            limit = max(0, limit - low) if limit < high else None
        return blockmap.FileChanges(changed, limit)


@dataclass(frozen=True)
class Reads:
    """How the push reads relation files: `changes` from WAL summaries, or None (whole files) and why."""
    changes: ChangedBlocks | None
    why: str


def plan_reads(conn, facts, parent: Parent, start_lsn: str, block_size: int, blocks_per_segment: int, store,
               keyring) -> Reads:
    """On PostgreSQL 17+ with summarize_wal on: the blocks WAL summaries say changed from the parent's start to
    this backup's (after waiting, bounded, for the summarizer to reach it). Any doubt: whole files."""
    from walship.pg import walnames, walsummaries
    if not walsummaries.supported(facts.version):
        return Reads(None, f"PostgreSQL {facts.version // 10000} has no WAL summaries (17 and later have)")
    if block_size != blockmap.BLOCK:
        return Reads(None, f"this cluster's block_size is {block_size}, the block maps' {blockmap.BLOCK}")
    try:
        if not walsummaries.summarize_wal_on(conn):
            return Reads(None, "summarize_wal is off (set summarize_wal = on to read only the changed blocks)")
        begin, end = walnames.parse_lsn(parent.info.start_lsn), walnames.parse_lsn(start_lsn)
        if end < begin:
            return Reads(None, f"this backup starts before its parent {parent.info.name} ({start_lsn})")
        why = walsummaries.wait_summarized(conn, facts.timeline, end)
        if why:
            return Reads(None, why)
        history: list = [(facts.timeline, 0, None)]
        if parent.info.timeline != facts.timeline:
            from walship.backup import timelines
            history = timelines.Archive(store, keyring, facts.wal_segment_size).chain(facts.timeline)
        chosen, why = walsummaries.covering(walsummaries.available(conn), history, begin, end)
        if why:
            return Reads(None, why)
        changes = ChangedBlocks(blocks_per_segment)
        for summary in chosen:
            changes.add(walsummaries.contents(conn, summary))
        changes.seal()
    except Exception as exc:        # e.g. a role without EXECUTE on the summary functions: read everything
        text = exc.one_line() if isinstance(exc, WalshipError) else str(exc).strip()
        first = (text.splitlines() or [type(exc).__name__])[0]
        return Reads(None, f"the WAL summaries could not be read ({first})")
    return Reads(changes, f"WAL summaries from {parent.info.start_lsn} to {start_lsn} "
                          f"({len(chosen)} summar{'y' if len(chosen) == 1 else 'ies'}, {changes.rows} entries)")


# --- restore and verify ------------------------------------------------------------------

CHECKED_RUNS = 8          # a restore checks the hashes of every this many runs of an incremental's piece


class ChainReader:
    """One pass over every part of a chain, writing (or, with no destination, only checking) each block of the
    newest backup once, from the backup that holds it."""

    def __init__(self, store, newest: Marker, keyring, destination=None, progress=None):
        self.store = store
        self.newest = newest
        self.names = [*newest.info.chain, newest.info.name]
        self.keyring = keyring
        self.destination = destination          # extract.Destination, or None to verify
        self.progress = progress
        self.markers = [self._marker(n) for n in self.names[:-1]] + [newest]
        self.index = blockmap.read_index(store, newest.info.name, keyring)
        self.expected = [0] * len(self.names)
        for entry in self.index:
            for origin, count in entry.blocks.items():
                if origin >= len(self.names):
                    raise IntegrityError(f"the block map of {newest.info.name} names backup #{origin} of a chain of "
                                         f"{len(self.names)}", "the backup is corrupt; restore another one")
                self.expected[origin] += count
        self.supplied = [0] * len(self.names)
        self._lock = threading.Lock()
        self._indexes: dict[int, list[blockmap.IndexEntry]] = {len(self.names) - 1: self.index}
        self._newest_maps = blockmap.PartMapCache(store, newest.info.name, keyring)

    def _index_of(self, index: int) -> list[blockmap.IndexEntry]:
        """The blockmap.index of backup #index of the chain, read once."""
        with self._lock:
            found = self._indexes.get(index)
        if found is None:
            found = blockmap.read_index(self.store, self.names[index], self.keyring)
            with self._lock:
                self._indexes[index] = found
        return found

    def _marker(self, name: str) -> Marker:
        try:
            return read_marker(self.store, name)
        except WalshipError:
            raise IntegrityError(f"backup {self.newest.info.name} is incremental and needs {name}, which is not in "
                                 f"{self.store.url}", "restore another backup") from None

    def jobs(self) -> list[tuple[int, int]]:
        """(index in the chain, part number) of every part of the chain, the largest stored first (catalog.part_sizes)."""
        sized = []
        for i, name in enumerate(self.names):
            sizes = part_sizes(self.store, name)
            sized += [(-sizes.get(p, 0), i, p) for p in range(self.markers[i].parts)]
        return [(i, p) for _, i, p in sorted(sized)]

    def run(self, workers: int, on_error: Callable[[str], None] | None = None) -> None:
        """Every part; on_error(line) collects problems instead of raising the first (verify)."""
        def one(job: tuple[int, int]) -> None:
            try:
                self.part(*job)
            except WalshipError as exc:
                if on_error is None:
                    raise
                on_error(exc.one_line())

        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="restore-part") as pool:
            futures = [pool.submit(one, job) for job in self.jobs()]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
        for i, name in enumerate(self.names):
            if self.supplied[i] != self.expected[i]:
                line = (f"backup {name} supplied {self.supplied[i]} blocks of the {self.expected[i]} that "
                        f"{self.newest.info.name}'s block map takes from it: the chain does not tile its files")
                if on_error is None:
                    raise IntegrityError(line, "the backup is corrupt; restore another one")
                on_error(line)

    def part(self, index: int, number: int) -> None:
        from walship.backup.fetch import part_manifest, part_stream
        name = self.names[index]
        what = f"{layout.part_key(name, number)} in {self.store.url}"
        manifest = list(part_manifest(self.store, name, number, self.keyring))
        relation = {e.path for e in manifest if e.type == "file" and blockmap.is_relation_file(e.path)}
        maps = blockmap.maps_for(self.store, self.newest.info.name, self.index, relation, self.keyring,
                                 self._newest_maps)
        newest = index == len(self.names) - 1
        # the hashes of the blocks this backup stores are in its own maps (the newest's name only their origin)
        own_maps = maps if newest else blockmap.maps_for(self.store, name, self._index_of(index), relation,
                                                         self.keyring)

        def handle(reader: TarReader, member: Member, expected: ManifestEntry | None) -> None:
            if not (member.kind == "file" and expected is not None and expected.path in relation):
                if newest:
                    if self.destination is not None:
                        self.destination.member(reader, member, expected, what, self.progress)
                    else:
                        _, entry = check_member(member, expected, what)
                        self._consume(reader, entry, what)
                else:
                    check_member(member, expected, what)   # not needed from an older backup: skipped
                return
            path, _ = check_member(member, expected, what)
            if not newest and member.size == 0 and expected.size == 0 and expected.sha256 == _EMPTY_SHA256:
                return          # an older backup's empty piece (the file had no change then): nothing to take
            chunks = maps.get(path)
            if chunks is None:
                if newest:
                    raise IntegrityError(f"{what}: {path} has no block map in {name}",
                                         "the backup is corrupt; restore another one")
                return                                     # not in the newest backup: dropped since
            file_size = chunks[0].file_size
            digest, size = hashlib.sha256(), pipeline.Tally()
            data = pipeline.count(pipeline.hashed(cast(Iterable[bytes], reader.data()), digest), size.add)
            blocks = self._blocks(data, expected, index, chunks, own_maps.get(path, []), name, path)
            if self.destination is not None:
                self.destination.writer.write_blocks(path, blocks, file_size,
                                                     (member.mode, member.mtime) if newest else None, what,
                                                     self.progress.advance if self.progress else None)
            else:
                for _ in blocks:
                    pass
            for _ in data:                                 # what is left after the last block wanted
                pass
            if size.total != expected.size or digest.hexdigest() != expected.sha256:
                raise IntegrityError(f"{what}: {path} does not match the manifest (size or SHA-256)",
                                     "the backup is corrupt; restore another one")

        walk_part(part_stream(self.store, name, number, self.keyring), iter(manifest), what, handle)

    @staticmethod
    def _consume(reader: TarReader, expected: ManifestEntry | None, what: str) -> None:
        if expected is None or expected.type != "file":
            return
        digest, size = hashlib.sha256(), pipeline.Tally()
        for _ in pipeline.count(pipeline.hashed(cast(Iterable[bytes], reader.data()), digest), size.add):
            pass
        if size.total != expected.size or digest.hexdigest() != expected.sha256:
            raise IntegrityError(f"{what}: {expected.path} does not match the manifest (size or SHA-256)",
                                 "the backup is corrupt; restore another one")

    def _run_blocks(self, data: Iterator, runs: list[tuple[int, int]], own_size: int, index: int,
                    chunks: list[blockmap.FileMap], own_chunks: list[blockmap.FileMap], name: str,
                    path: str, check_ends: bool) -> Iterator[tuple[int, bytes | memoryview]]:
        """_blocks for a restore: the same blocks, handed on as runs of the decompressed views (a block cut by a
        view's end is the only copy), each view's blocks decided from the maps' origins at once rather than one
        by one. runs: the member's (first block, count), in its order; check_ends for a piece."""
        block = blockmap.BLOCK
        taken = 0
        carry = bytearray()                          # the start of a block cut by the end of a view
        fmap: blockmap.FileMap | None = None
        stored: blockmap.FileMap | None = None

        def wanted(first: int, count: int) -> Iterator[tuple[int, int]]:
            """Runs (first, count) of blocks [first, first + count) the newest map takes from this backup, each
            checked to be one this backup's own map stores."""
            nonlocal fmap, stored
            while count:
                if fmap is None or not fmap.holds(first):
                    fmap = next((c for c in chunks if c.holds(first)), None)
                if fmap is None:                     # not in the newest map: dropped since, or not this one's
                    return
                n = min(count, fmap.start + fmap.count - first)
                origins = fmap.origins[first - fmap.start:first - fmap.start + n]
                mine = origins.count(index)
                if mine:
                    if stored is None or not stored.holds(first):
                        stored = fmap if fmap.own == index else next((c for c in own_chunks if c.holds(first)),
                                                                     None)
                    ok = stored is not None and stored.own == index and stored.holds(first + n - 1)
                    if mine == n:
                        if not ok or stored is None or stored.origins[first - stored.start:
                                                                      first - stored.start + n].count(index) != n:
                            ok = False
                        if ok:
                            yield first, n
                    else:
                        run_first, run_count = first, 0
                        for i, origin in enumerate(origins):
                            if origin == index:
                                if not ok or stored is None or stored.origins[first + i - stored.start] != index:
                                    ok = False
                                    break
                                if not run_count:
                                    run_first = first + i
                                run_count += 1
                            elif run_count:
                                yield run_first, run_count
                                run_count = 0
                        if ok and run_count:
                            yield run_first, run_count
                    if not ok:
                        raise IntegrityError(f"{self.newest.info.name} takes blocks of {path} from backup {name}, "
                                             "whose block map does not store them",
                                             "the backup is corrupt; restore another one")
                first, count = first + n, count - n

        checked = 0
        last_run: tuple[int, int, memoryview | bytes, blockmap.FileMap] | None = None

        def verify_run(first: int, n: int, data: memoryview | bytes, own: blockmap.FileMap) -> None:
            for number_, at in ((first, 0), (first + n - 1, (n - 1) * block))[:1 if n == 1 else 2]:
                if blockmap.block_hash(data[at:at + block]) != own.hash_of(number_):
                    raise IntegrityError(f"block {number_} of {path} in backup {name} does not match its block map",
                                         "the backup is corrupt; restore another one")

        def check(first: int, n: int, data: memoryview | bytes) -> None:
            """A piece's runs against the hashes this backup's map holds: the first and last block of every
            CHECKED_RUNS-th run and of the member's last, so that runs numbered wrong cannot pass (the member's
            SHA-256 covers every byte; verify checks each block)."""
            nonlocal checked, last_run
            assert stored is not None
            if checked % CHECKED_RUNS == 0:
                verify_run(first, n, data, stored)
                last_run = None
            else:
                last_run = (first, n, data, stored)
            checked += 1

        def size_of(b: int) -> int:
            return min(block, own_size - b * block)

        r = 0
        number, stop = runs[0][0], runs[0][0] + runs[0][1]

        def advance(k: int) -> None:
            nonlocal number, stop, r
            number += k
            if number == stop:
                r += 1
                if r < len(runs):
                    number, stop = runs[r][0], runs[r][0] + runs[r][1]

        def carried_block() -> Iterator[tuple[int, bytes]]:
            """The block gathered across pieces, now whole: what of it the newest map takes from this backup."""
            nonlocal taken
            whole_block = bytes(carry)      # a copy: carry is reused for the next block
            for first, n in wanted(number, 1):
                taken += n
                if check_ends:
                    check(first, n, whole_block)
                yield number * block, whole_block
            advance(1)
            carry.clear()

        for piece in data:
            view = memoryview(piece)
            if carry:
                need = min(size_of(number) - len(carry), len(view))
                carry += view[:need]
                view = view[need:]
                if len(carry) == size_of(number):
                    yield from carried_block()
            while view and r < len(runs):
                whole = min(len(view) // block, stop - number)
                if whole and size_of(number + whole - 1) < block:
                    whole -= 1                          # the file's last, partial block: below
                if whole:
                    for first, n in wanted(number, whole):
                        taken += n
                        at = (first - number) * block
                        run = view[at:at + n * block]
                        if check_ends:
                            check(first, n, run)
                        yield first * block, run
                    view = view[whole * block:]
                    advance(whole)
                    continue
                carry += view[:size_of(number)]
                view = view[len(carry):]
                if len(carry) == size_of(number):
                    yield from carried_block()
            if view:
                raise IntegrityError(f"{path} in backup {name} holds more than its blocks",
                                     "the backup is corrupt; restore another one")
        if r < len(runs) or carry:
            raise IntegrityError(f"{path} in backup {name} ends inside block {number}",
                                 "the backup is corrupt; restore another one")
        if last_run is not None:
            verify_run(*last_run)
        with self._lock:
            self.supplied[index] += taken

    def _blocks(self, data: Iterator, expected: ManifestEntry, index: int, chunks: list[blockmap.FileMap],
                own_chunks: list[blockmap.FileMap], name: str,
                path: str) -> Iterator[tuple[int, bytes | memoryview]]:
        """(offset, bytes) of the member's blocks the newest map takes from this backup.

        Every block must be one this backup's own map says it stores. `verify` (no destination) checks every
        block's hash against that map, one by one. A restore (_run_blocks) hashes each byte once: the member's
        SHA-256 covers every byte (checked at its end, as in a full restore); the blocks of a whole file or slice
        lie at their own offsets, and of each run of a piece (what an incremental stored) the first and last
        blocks are checked against the map's hashes, so that a run numbered wrong cannot pass."""
        if expected.blocks is not None:
            numbers: Iterable[int] = (b for first, n in expected.blocks for b in range(first, first + n))
            own_size = expected.file_size
        elif expected.offset is not None:
            first = expected.offset // blockmap.BLOCK
            numbers = range(first, first + blockmap.blocks_of(expected.size))
            own_size = expected.file_size
        else:
            numbers = range(blockmap.blocks_of(expected.size))
            own_size = expected.size
        runs = (list(expected.blocks) if expected.blocks is not None
                else [(numbers.start, len(numbers))] if isinstance(numbers, range) and len(numbers) else [])
        if self.destination is not None and runs:
            yield from self._run_blocks(data, runs, own_size, index, chunks, own_chunks, name, path,
                                        check_ends=expected.blocks is not None)
            return
        taken = 0
        source = iter(data)
        current = memoryview(b"")
        fmap: blockmap.FileMap | None = None
        stored: blockmap.FileMap | None = None
        for number in numbers:
            want = min(blockmap.BLOCK, own_size - number * blockmap.BLOCK)
            if len(current) >= want:
                block = current[:want]
                current = current[want:]
            else:
                gathered = bytearray(current)
                while len(gathered) < want:
                    piece = next(source, None)
                    if piece is None:
                        raise IntegrityError(f"{path} in backup {name} ends inside block {number}",
                                             "the backup is corrupt; restore another one")
                    piece = memoryview(piece)
                    need = want - len(gathered)
                    gathered += piece[:need]
                    current = piece[need:]
                block = memoryview(bytes(gathered))
            if fmap is None or not fmap.holds(number):
                fmap = next((c for c in chunks if c.holds(number)), None)
            if fmap is None or fmap.origins[number - fmap.start] != index:
                continue
            if stored is None or not stored.holds(number):
                stored = fmap if fmap.own == index else next((c for c in own_chunks if c.holds(number)), None)
            if stored is None or stored.own != index or stored.origins[number - stored.start] != index:
                raise IntegrityError(f"{self.newest.info.name} takes block {number} of {path} from backup {name}, "
                                     "whose block map does not store it", "the backup is corrupt; restore another one")
            if blockmap.block_hash(block) != stored.hash_of(number):
                raise IntegrityError(f"block {number} of {path} in backup {name} does not match its block map",
                                     "the backup is corrupt; restore another one")
            taken += 1
            yield number * blockmap.BLOCK, block
        with self._lock:
            self.supplied[index] += taken
