"""backup-push: a hot base backup of a running cluster into the repository.

    claim the repository                       -> refused, with nothing written, when another cluster owns it
    can WAL reach the repository?              -> archive_mode, pg_stat_archiver, a forced segment switch
    take the repository lock
    pg_backup_start (one session, held open)   -> name the backup, announce it (RepositoryLock.announce)
    the switched segment in the repository?    -> a short wait (the archiver stored it while PostgreSQL
                                                  checkpointed for the start)
    walk PGDATA -> parts of ~backup_part_size  -> `backup_concurrency` workers each read, tar,
                                                  hash, compress and upload one part and its manifest
                                                  (and verify page checksums, when the cluster has them)
    pg_backup_stop (no wait for archiving)     -> backup_label and tablespace_map, as a last part
    stop segment in the repository?            -> walship waits, bounded, showing pg_stat_archiver
    completion marker, last

The checks before the first file is read make a backup whose WAL would never
arrive fail in seconds, before it reads a byte; the wait at the end is walship's,
not pg_backup_stop's, because PostgreSQL's waits forever, silently, while
archiving fails, holding the repository lock.

From a standby the same steps run on the standby (PostgreSQL allows
non-exclusive backups there), reading its files; the WAL comes from the
primary's archiving into the same repository. pg_backup_stop on a standby does
not wait for archiving, and the segment ending the backup is archived only
once the primary completes it: with --primary walship asks the primary for a
segment switch (pg_switch_wal), otherwise it waits for the primary's
archive_timeout. The archiving check then runs on the primary (--primary), or
not at all: a standby's archive_mode says nothing about the primary's.

Memory stays bounded whatever the size and number of files: the walk is lazy,
at most `backup_concurrency` parts are in flight, a part holds at most
MAX_MEMBERS entries, and data flows through in 1 MiB chunks. A file larger than
a part is sliced across parts, so that one large file is read, compressed and
later restored by several workers.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING

from walship import logs, pipeline
from walship.backup import blockmap, incremental, progress, tarstream, throttle, walk
from walship.backup.catalog import Marker, open_catalog, write_marker
from walship.backup.manifest import ManifestEntry
from walship.crypto import keyring_for_writing, keyring_from_settings
from walship.errors import PostgresError, WalshipError
from walship.pg import backup_api, versions, walnames
from walship.pg.conn import connect
from walship.repo import record as repo_record
from walship.repo.catalog import BackupInfo
from walship.repo.layout import backup_prefix, part_key, part_manifest_key, wal_key
from walship.repo.lock import RepositoryLock, remove_leftovers
from walship.storage import ObjectExists

if TYPE_CHECKING:
    from walship.pg.checksums import PageCheck

MAX_MEMBERS = 10_000           # entries per part: bounds a part's plan (~3 MB) and manifest in memory
WAL_WAIT_S = 120.0             # the stop segment: fail when the archiver made no progress for this long
STANDBY_WAL_WAIT_S = 600.0     # a standby's last segment comes at the primary's archive_timeout
PREFLIGHT_WAIT_S = 20.0        # a switched segment reaches a working archive in about a second
ARCHIVER_RETRIES = 3           # PostgreSQL's archiver tries a segment 3 times, then sleeps 60 s
STILL_WAITING_EVERY_S = 10.0   # a log line while walship waits for the stop segment
POLL_S = 0.5                   # the longest wait between two looks for a segment in the repository
FIRST_POLL_S = 0.02            # the first looks: a working archive stores a segment in about 0.1-0.3 s,
FIRST_POLLS = 15               # so for 0.3 s every 20 ms (an incremental's whole run can be a second)


def _polls() -> Iterator[float]:
    """The waits between looks for a segment: short at first, since it usually arrives within a second and each
    wait is on the backup's own critical path, then growing to POLL_S (each look is a request to the store)."""
    for _ in range(FIRST_POLLS):
        yield FIRST_POLL_S
    delay = FIRST_POLL_S * 2
    while True:
        yield delay
        delay = min(POLL_S, delay * 2)


class PartStats:
    """Totals over the parts, added to by the upload threads."""

    def __init__(self):
        self.size = 0          # file bytes read
        self.stored = 0        # bytes written to the repository
        self.files = 0         # files (a sliced file counts once)
        self.blocks_held = 0   # blocks of relation files
        self.blocks_read = 0   # of those, read from the data directory (fewer with WAL summaries)
        self._lock = threading.Lock()

    def add(self, size: int, stored: int, files: int, blocks: tarstream.BlockContext | None = None) -> None:
        with self._lock:
            self.size += size
            self.stored += stored
            self.files += files
            if blocks is not None:
                self.blocks_held += blocks.blocks_held
                self.blocks_read += blocks.blocks_read


def backup_push(pgdata: str, settings, store, lock: Callable[[], RepositoryLock], conninfo: str | None = None,
                progress_mode: str = "auto", primary: str | None = None, mode: str = "auto",
                from_name: str | None = None) -> BackupInfo:
    """Take the backup, holding lock() from before pg_backup_start to after the completion marker.
    mode: "full", "incremental" or "auto" (the settings decide), from_name: the parent (incremental.py)."""
    walk.check_data_directory(pgdata)
    with connect(conninfo, application_name="walship backup-push") as conn:
        facts = backup_api.server_facts(conn)
        versions.require_tested(versions.major_of(facts.version), settings.allow_untested_pg, "the server")
        _check_same_cluster(pgdata, facts)
        if primary and not facts.in_recovery:
            raise WalshipError("--primary is for backups taken on a standby, and this server is a primary",
                               "leave --primary out")
        # first, before anything is written (even the lock): another cluster's repository is refused
        repo_record.claim(store, repo_record.ClusterIdentity(facts.system_identifier, facts.version // 10000,
                                                             facts.wal_segment_size), "backup-push")
        archived_check: Callable[[], None] = _nothing
        if facts.in_recovery:
            if primary:
                with _primary_connection(primary, facts) as on_primary:
                    _check_archiving(on_primary, store, "the primary")
        else:
            # the wait for the switched segment comes after pg_backup_start: the archiver stores it while
            # PostgreSQL checkpoints, and still before a file is read
            archived_check = _start_archiving_check(conn, store, "this server")
        pages = _page_check_wanted(conn, settings)
        with lock() as held:
            return _push_locked(conn, facts, pgdata, settings, store, progress_mode, held, primary, pages, mode,
                                from_name, archived_check)


def _nothing() -> None:
    return None


def _push_locked(conn, facts: backup_api.ServerFacts, pgdata: str, settings, store, progress_mode: str,
                 held: RepositoryLock, primary: str | None,
                 pages: backup_api.PageLayout | None, mode: str = "auto", from_name: str | None = None,
                 archived_check: Callable[[], None] = _nothing) -> BackupInfo:
    """From pg_backup_start to the completion marker; held.check() may raise to keep it unmarked.
    archived_check: the end of the check that WAL reaches the repository, run before any file is read."""
    started = time.time()
    start = backup_api.start_backup(conn, facts.version, f"walship {_utc(started, '%Y-%m-%dT%H:%M:%SZ')}")
    facts = dataclasses.replace(facts, timeline=backup_api.backup_timeline(conn))
    start_wal = walnames.segment_name_of(walnames.parse_lsn(start.lsn), facts.timeline, facts.wal_segment_size)
    name = f"base_{_utc(started, '%Y%m%dT%H%M%SZ')}_{start_wal}"
    try:
        heartbeat = held.announce(name)       # refreshed by the lock's own heartbeat
    except ObjectExists:
        raise WalshipError(f"another backup named {name} is being taken", "wait for it to finish") from None
    page_check = None
    if pages is not None:
        from walship.pg.checksums import PageCheck  # numpy: only for clusters with data checksums
        page_check = PageCheck(walnames.parse_lsn(start.lsn), pages.blocks_per_segment)
    try:
        archived_check()
        remove_leftovers(store, time.time(), keep=name)
        block_size = backup_api.page_layout(conn).block_size
        # chosen under the lock: delete cannot remove the parent while this backup reads it
        parent = incremental.choose_parent(open_catalog(store).list(), store, settings, mode, from_name, facts,
                                           block_size, keyring_from_settings(settings))
        reads = None
        if parent is not None:
            reads = incremental.plan_reads(conn, facts, parent, start.lsn, block_size,
                                           backup_api.page_layout(conn).blocks_per_segment, store,
                                           keyring_from_settings(settings))
            if reads.changes is None:
                logs.info("incremental_whole_files", f"backup {name} reads whole relation files: {reads.why}",
                          backup=name)
        info = _take(conn, facts, pgdata, name, started, settings, store, progress_mode, held.check,
                     primary, page_check, parent, block_size, reads)
    except BaseException:
        heartbeat.stop()                 # first: a last beat must not re-announce what is removed
        _remove_unfinished(store, name)
        raise
    heartbeat.stop()
    kind = f"incremental (parent {info.parent})" if info.parent else "full"
    read = ""
    if info.blocks_held is not None:
        how = " (WAL summaries)" if info.wal_summaries else " (whole files)" if info.parent else ""
        read = f", read {info.blocks_read:,} of {info.blocks_held:,} relation blocks{how}"
    logs.info("backup_pushed", f"backup {name} complete: {kind}{read}", backup=name, bytes=info.size,
              parent=info.parent, stored_bytes=info.stored_size, duration_s=info.duration_s,
              page_checksum_failures=info.page_checksum_failures, blocks_read=info.blocks_read,
              blocks_held=info.blocks_held, wal_summaries=info.wal_summaries)
    return info


def _take(conn, facts: backup_api.ServerFacts, pgdata: str, name: str, started: float, settings, store,
          progress_mode: str, before_marker: Callable[[], None], primary: str | None,
          page_check: PageCheck | None, parent: incremental.Parent | None = None,
          block_size: int | None = None, reads: incremental.Reads | None = None) -> BackupInfo:
    """Copy the files, stop the backup, and mark it complete once its last WAL segment is archived."""
    bar = progress.make(progress_mode, f"backup {name}", backup_api.database_size(conn))
    uploader = _Uploader(store, name, settings, bar, page_check.reader if page_check else None,
                         own=len(parent.chain) if parent else 0, incremental=parent is not None)
    tablespaces = walk.tablespaces(pgdata)
    entries: Iterable[walk.Entry] = walk.walk(pgdata)
    part_size = settings.backup_part_size
    if parent is not None:
        entries = incremental.join(entries, blockmap.ChainMaps(store, list(parent.chain), keyring_from_settings(settings)),
                                   reads.changes if reads is not None else None)
        part_size *= incremental.READ_FACTOR
    parts = uploader.upload_all(tarstream.plan_parts(entries, part_size, MAX_MEMBERS))
    stop = backup_api.stop_backup(conn, facts.version)
    next_xid = backup_api.next_xid(conn, facts.version)     # lets backup-fetch choose a backup for an xid target
    uploader.upload_labels(parts, stop)
    index_stored = blockmap.write_index(store, name, uploader.map_index, settings.compression, uploader.keyring)
    bar.close()
    if page_check is not None:
        page_check.finish()
        page_check.report(name)
    start_lsn, start_wal = backup_api.label_start(stop.backup_label)
    if not name.endswith(start_wal):
        # the name, the parent's choice and the timeline all came from the start; PostgreSQL's label is the truth
        raise PostgresError(f"backup {name} does not start where PostgreSQL says it does ({start_wal}): the server "
                            "changed timeline while the backup started", "take the backup again")
    # the segment holding the last byte before the stop point (pg_backup_stop's own wait stops there too)
    stop_wal = walnames.segment_name_before(walnames.parse_lsn(stop.lsn), walnames.timeline_of(start_wal),
                                            facts.wal_segment_size)
    if facts.in_recovery:
        # PostgreSQL waited for nothing: every segment the backup spans must be checked here
        _archive_from_primary(store, stop_wal, primary, facts)
        _wait_archived(store, walnames.segments_between(start_wal, stop_wal, facts.wal_segment_size),
                       at_archive_timeout=not primary)
    else:
        # the archiver goes in order, and retries a failed segment before any later one: the last one stored
        # means every earlier one is
        _wait_for_stop_segment(conn, store, stop_wal)
    stopped = time.time()
    info = BackupInfo(name=name, start_time=started, stop_time=stopped, start_lsn=start_lsn, stop_lsn=stop.lsn,
                      timeline=facts.timeline, start_wal=start_wal, stop_wal=stop_wal, pg_version=facts.version,
                      system_identifier=facts.system_identifier, size=uploader.stats.size,
                      stored_size=uploader.stats.stored + index_stored, duration_s=round(stopped - started, 3),
                      next_xid=next_xid, page_checksum_failures=page_check.failures if page_check else None,
                      backup_type="incremental" if parent else "full", parent=parent.info.name if parent else None,
                      chain=parent.chain if parent else (), blocks_read=uploader.stats.blocks_read,
                      blocks_held=uploader.stats.blocks_held,
                      wal_summaries=(reads.changes is not None) if reads is not None else None)
    marker = Marker(info, parts + 1, uploader.stats.files, settings.compression,
                    {t.oid: t.location for t in tablespaces},
                    bad_pages={n: sorted(b) for n, b in page_check.bad.items()} if page_check else None,
                    pages_checked=page_check.pages_checked if page_check else None,
                    block_size=block_size, wal_segment_size=facts.wal_segment_size)
    before_marker()
    write_marker(store, name, marker)
    return info


def _page_check_wanted(conn, settings) -> backup_api.PageLayout | None:
    """The page layout when page checksums are to be verified: the cluster has them, and they are not off."""
    layout = backup_api.page_layout(conn)
    if not layout.data_checksums or not settings.backup_page_checksums:
        return None
    if layout.block_size != blockmap.BLOCK:
        logs.warning("page_checksums_skipped", f"page checksums are not verified: this cluster's block_size is "
                     f"{layout.block_size}, walship verifies {blockmap.BLOCK}-byte pages")
        return None
    # numpy takes 85 ms to import, a sixth of an incremental's time: imported beside the waits that come before
    # the first page is read (the lock, pg_backup_start's checkpoint, the switched segment reaching the
    # repository), not in front of them. Python's import lock makes the reader's own import wait for this one.
    # (not a daemon: an interpreter that shuts down under an import in progress may abort)
    threading.Thread(target=_import_quietly, args=("walship.pg.checksums",), name="import-checksums").start()
    return layout


def _import_quietly(module: str) -> None:
    try:
        importlib.import_module(module)
    except Exception:          # noqa: BLE001 - the reader's own import raises it again, where it is reported
        pass


def _check_archiving(conn, store, where: str) -> None:
    """Before reading a file: WAL written now reaches the repository (or fail in seconds, naming the fix)."""
    _start_archiving_check(conn, store, where)()


def _start_archiving_check(conn, store, where: str) -> Callable[[], None]:
    """The check of _check_archiving up to the forced segment switch (archive_mode off fails here); the wait
    for that segment in the repository is returned, to be called on the same connection before a file is read."""
    status = backup_api.archiver_status(conn)
    if status.archive_mode == "off":
        raise WalshipError(f"archive_mode is off on {where}: no WAL reaches {store.url}, so no backup taken "
                           "there could be restored; nothing was read",
                           "set archive_mode = on and archive_command = 'walship wal-push %p' "
                           "in postgresql.conf, restart PostgreSQL, then run backup-push again")
    backup_api.write_wal_record(conn)
    try:
        segment = backup_api.switch_wal(conn)
    except PostgresError:
        # a backup role without EXECUTE on pg_switch_wal: what the archiver last did has to do
        _check_archived_so_far(status, store)
        return _nothing
    deadline = time.monotonic() + PREFLIGHT_WAIT_S        # counted from the switch
    return lambda: _wait_for_switched_segment(conn, store, segment, status, deadline)


def _wait_for_switched_segment(conn, store, segment: str, status: backup_api.ArchiverStatus,
                               deadline: float) -> None:
    polls = _polls()
    while not store.exists(wal_key(segment)):
        now = backup_api.archiver_status(conn)
        if _archiver_stuck(status, now) or time.monotonic() > deadline:
            raise _not_archived(segment, store, now, "after a forced segment switch", "nothing was read")
        if (now.archived_count > status.archived_count and not now.failing and now.last_archived_wal
                and store.exists(wal_key(now.last_archived_wal))):
            # a backlog before the switched segment: what the archiver stored since reached this repository,
            # which is the proof wanted (the wait for the stop segment waits for the rest)
            logs.info("backup_archiving_behind", f"the archiver is still storing WAL before {segment} "
                      f"(last archived {now.last_archived_wal}); it reaches {store.url}", segment=segment)
            return
        time.sleep(next(polls))


def _check_archived_so_far(status: backup_api.ArchiverStatus, store) -> None:
    """Without a segment switch: the archiver does not fail, and the last segment it stored is in the repository."""
    if status.failing or (status.last_archived_wal and not store.exists(wal_key(status.last_archived_wal))):
        raise _not_archived(status.last_archived_wal or "?", store, status, "(the last one archived)",
                            "nothing was read")
    logs.warning("archiving_unchecked", "this role may not run pg_switch_wal(): whether WAL written now reaches "
                 f"{store.url} is checked only at the end of the backup ({status.describe()}); GRANT EXECUTE ON "
                 "FUNCTION pg_switch_wal() to it for the check before the backup")


def _wait_for_stop_segment(conn, store, segment: str) -> None:
    """Until the segment that ends the backup is in the repository, as long as the archiver gets on.

    Fails once archive_command keeps failing (_archiver_stuck: PostgreSQL would
    wait forever), or when the archiver archived nothing for WAL_WAIT_S; as long
    as it makes progress (a backlog draining) the wait goes on. A log line every
    STILL_WAITING_EVERY_S shows what PostgreSQL says meanwhile.
    """
    began = time.monotonic()
    first = backup_api.archiver_status(conn)
    progress_at, archived = began, first.archived_count
    next_note = began + STILL_WAITING_EVERY_S
    polls = _polls()
    while not store.exists(wal_key(segment)):
        now_status = backup_api.archiver_status(conn)
        now = time.monotonic()
        if now_status.archived_count != archived:
            progress_at, archived = now, now_status.archived_count
        waited = f"after {now - began:.0f} s"
        if _archiver_stuck(first, now_status):
            raise _not_archived(segment, store, now_status, waited, "the backup is not marked complete")
        if now - progress_at > WAL_WAIT_S:
            raise _not_archived(segment, store, now_status, f"{waited}, {WAL_WAIT_S:.0f} s without progress",
                                "the backup is not marked complete")
        if now >= next_note:
            logs.info("backup_waiting", f"still waiting for {segment}, which ends the backup, to reach {store.url} "
                      f"({now - began:.0f} s; {now_status.describe()})", segment=segment)
            next_note = now + STILL_WAITING_EVERY_S
        time.sleep(next(polls))


def _archiver_stuck(before: backup_api.ArchiverStatus, now: backup_api.ArchiverStatus) -> bool:
    """archive_command keeps failing: ARCHIVER_RETRIES failures in a row since `before`, or failing then and again.

    wal-push already retries a failing store for s3_retry_timeout before it fails,
    so a failure it reports is not a hiccup to wait out.
    """
    if not now.failing:
        return False
    new_failures = now.failed_count - before.failed_count
    return new_failures >= ARCHIVER_RETRIES or (before.failing and new_failures > 0)


def _not_archived(segment: str, store, status: backup_api.ArchiverStatus, when: str, outcome: str) -> WalshipError:
    why = "archive_command is failing" if status.failing else "the archiver stores nothing there"
    return WalshipError(f"WAL segment {segment} did not reach {store.url} {when}: {why} "
                        f"({status.describe()}); {outcome}",
                        "fix archive_command (it must run `walship wal-push %p` for this repository; the PostgreSQL "
                        "log says why it fails), then run backup-push again")


def _utc(epoch: float, fmt: str) -> str:
    return time.strftime(fmt, time.gmtime(epoch))


def _check_same_cluster(pgdata: str, facts: backup_api.ServerFacts) -> None:
    if os.path.realpath(pgdata) != os.path.realpath(facts.data_directory):
        raise WalshipError(f"{pgdata} is not the data directory of the server walship connected to "
                           f"({facts.data_directory})", "pass that directory, or point --pg/PGPORT at this cluster")


def _archive_from_primary(store, segment: str, primary: str | None, facts: backup_api.ServerFacts) -> None:
    """A standby's backup ends in a segment the primary is still writing: have the primary switch to the next."""
    if store.exists(wal_key(segment)):
        return
    if not primary:
        logs.info("backup_waiting", f"waiting for the primary to archive {segment}, which ends the backup "
                  "(at its archive_timeout; pass --primary to have walship switch segments there)", segment=segment)
        return
    with _primary_connection(primary, facts) as conn:
        backup_api.switch_wal(conn)


@contextmanager
def _primary_connection(primary: str, facts: backup_api.ServerFacts) -> Iterator:
    """A connection to --primary, once it is known to be the primary of this standby."""
    with connect(primary, application_name="walship backup-push (standby backup)") as conn:
        on_primary = backup_api.server_facts(conn)
        if on_primary.system_identifier != facts.system_identifier or on_primary.in_recovery:
            raise WalshipError("--primary does not point at the primary of this standby "
                               f"(system identifier {on_primary.system_identifier}, "
                               f"{'in recovery' if on_primary.in_recovery else 'primary'})",
                               "pass the conninfo of the server this standby replicates from")
        yield conn


def _wait_archived(store, segments: list[str], at_archive_timeout: bool) -> None:
    """Return once every one of these segments is in the repository (checking again only the missing ones)."""
    limit = STANDBY_WAL_WAIT_S if at_archive_timeout else WAL_WAIT_S
    deadline = time.monotonic() + limit
    missing = segments
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="wal-check") as pool:
        while missing := [s for s, there in zip(missing, pool.map(lambda s: store.exists(wal_key(s)), missing))
                          if not there]:
            if time.monotonic() > deadline:
                hint = ("the primary must archive it into this repository: check its archive_command, set "
                        "archive_timeout there, or pass --primary CONNINFO" if at_archive_timeout else
                        "check archive_command = 'walship wal-push %p' and pg_stat_archiver")
                raise WalshipError(f"WAL segment {missing[0]}, which the backup needs, is not in {store.url} "
                                   f"after {limit:.0f} s; the backup is not usable without it", hint)
            time.sleep(0.5)



def _remove_unfinished(store, name: str) -> None:
    """Best effort: what the next backup-push would otherwise remove."""
    try:
        store.delete([o.key for o in store.list(backup_prefix(name))])
    except Exception as exc:
        logs.warning("cleanup_failed", f"could not remove the unfinished backup {name}: {exc}", backup=name)


class _Uploader:
    """Uploads parts in parallel, at most backup_concurrency in flight."""

    def __init__(self, store, name: str, settings, bar,
                 inspect: Callable[[str, str, int, int], tarstream.Reader | None] | None = None,
                 own: int = 0, incremental: bool = False):
        self.store = store
        self.own, self.incremental = own, incremental     # relation files mapped (blockmap) as this chain's backup #own
        self.map_index: list[dict] = []
        self._index_lock = threading.Lock()
        self.inspect = inspect              # sees every file's blocks as they are read (page checksums)
        self.name = name
        self.codec = settings.compression
        self.level = settings.compression_level
        self.keyring = keyring_for_writing(settings)
        self.concurrency = settings.backup_concurrency
        self.bar = bar
        self.stats = PartStats()
        self.limit = throttle.from_settings(settings)   # backup_max_rate: shared by the workers

    def upload_all(self, plans: Iterable[list[walk.Entry | tarstream.Slice]]) -> int:
        """Upload every part; the number of parts."""
        count = 0
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="backup-part") as pool:
            pending: set = set()
            try:
                for number, plan in enumerate(plans):
                    while len(pending) >= self.concurrency:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for future in done:
                            future.result()
                    maps = blockmap.PartMaps()
                    blocks = tarstream.BlockContext(maps, self.own, self.incremental)
                    pending.add(pool.submit(self._upload, number,
                                            partial(tarstream.tar_chunks, plan, inspect=self.inspect, blocks=blocks),
                                            maps, blocks))
                    count = number + 1
                for future in pending:
                    future.result()
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
        return count

    def upload_labels(self, number: int, stop: backup_api.BackupStop) -> None:
        """The last part: the backup_label and tablespace_map that pg_backup_stop returned."""
        def chunks(record) -> Iterator[bytes]:
            now = time.time()
            yield tarstream.memory_member("backup_label", stop.backup_label.encode(), now, record)
            if stop.tablespace_map:
                yield tarstream.memory_member("tablespace_map", stop.tablespace_map.encode(), now, record)
            yield tarstream.END_OF_ARCHIVE
        self._upload(number, chunks)

    def _upload(self, number: int, make_chunks, maps: blockmap.PartMaps | None = None,
                blocks: tarstream.BlockContext | None = None) -> None:
        manifest = _ManifestWriter(self.codec, self.level, self.keyring, backup=self.name, part=number)
        stored = pipeline.Tally()
        tar = pipeline.count(make_chunks(manifest.add), self.bar.advance)
        if self.limit is not None:
            tar = self.limit.throttled(tar)
        body = pipeline.write(tar, self.codec, self.level, self.keyring, backup=self.name, part=number)
        self.store.put(part_key(self.name, number), pipeline.count(body, stored.add))
        manifest_blob = manifest.finish()
        self.store.put(part_manifest_key(self.name, number), manifest_blob)
        maps_stored = 0
        if maps is not None:
            maps_stored = maps.store(self.store, self.name, number, self.codec, self.level, self.keyring)
            entry = maps.index_entry(number)
            if entry is not None:
                with self._index_lock:
                    self.map_index.append(entry)
        self.stats.add(manifest.file_bytes, stored.total + len(manifest_blob) + maps_stored, manifest.files, blocks)


class _ManifestWriter:
    """A part's manifest: its lines gathered as the tar stream is made (a part holds at most MAX_MEMBERS
    entries, ~1.5 MB of lines), then written as one object by the same pipeline as the part."""

    def __init__(self, codec_name: str, level: int | None, keyring, **meta):
        self.codec_name, self.level, self.keyring, self.meta = codec_name, level, keyring, meta
        self.lines: list[bytes] = []
        self.files = 0
        self.file_bytes = 0

    def add(self, entry: ManifestEntry) -> None:
        self.lines.append(entry.line())
        self.files += entry.starts_file
        # the data directory's bytes: a piece of an incremental counts its file once, by its first piece
        self.file_bytes += entry.size if entry.blocks is None else entry.file_size if not entry.piece else 0

    def finish(self) -> bytes:
        return b"".join(pipeline.write(self.lines, self.codec_name, self.level, self.keyring, **self.meta))
