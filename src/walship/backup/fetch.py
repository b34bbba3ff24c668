"""backup-fetch: restore a base backup into an empty directory, ready for point-in-time recovery.

Before anything is downloaded, every check that needs no download runs: the
target's syntax, the destination, who will own the files, which backup the
target needs (the newest consistent before it, for LATEST), the timeline
recovery will follow and whether the backup is in its history, and whether the
target lies within the archived WAL. backup-fetch then says what will happen.

Parts are downloaded, decompressed and extracted by `backup_concurrency`
workers, each checking its part against the part's manifest member by member
(extract.Destination). Only once every part is in, every file fsynced and
every directory fsynced are the recovery settings written, and recovery.signal
last: a directory without recovery.signal is not a restore that finished.

A restore is a COPY unless --as-primary says it is the new primary: a copy gets
archive_mode = off and the marker of pg/recoveryfiles.py, so that its WAL never
reaches the repository it came from (it would fork production's history there).
"""

from __future__ import annotations

import os
import pwd
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from walship import logs, pipeline
from walship.backup import catalog, progress, recovery, timelines
from walship.backup.extract import Destination
from walship.backup.manifest import parse_lines
from walship.crypto import keyring_from_settings
from walship.errors import ConfigError
from walship.pg import recoveryfiles, walnames
from walship.repo import layout
from walship.repo import record as repo_record
from walship.repo.catalog import BackupInfo, RestoreRequest, choose, utc_text
from walship.restorefs import disk_error, sync_tree

STREAM_CHUNK = 256 * 1024
ARCHIVE_TIME_SLACK_S = 1.0      # S3 listings give object times to the second


class Owner(tuple):
    """(uid, gid, why) of the user the restored files are given to when backup-fetch runs as root."""

    __slots__ = ()

    def __new__(cls, uid: int, gid: int, why: str) -> Owner:
        return tuple.__new__(cls, (uid, gid, why))

    @property
    def ids(self) -> tuple[int, int]:
        return self[0], self[1]

    @property
    def why(self) -> str:
        return self[2]


class Plan:
    """What the restore will do, decided before anything is downloaded."""

    def __init__(self, backup: BackupInfo, followed: int, chain: list[timelines.TimelineStep],
                 end: timelines.ArchiveEnd, diverged: list[str]):
        self.backup = backup
        self.followed = followed
        self.chain = chain
        self.end = end
        self.diverged = diverged


def backup_fetch(dest: str, name: str, settings, store, target: recovery.Target,
                 tablespace_map: dict[str, str] | None = None, restore_spec: str | None = None,
                 config_path: str | None = None, progress_mode: str = "auto", as_primary: bool = False,
                 beyond_archive: bool = False, say: Callable[[str], None] | None = None) -> BackupInfo:
    say = say or _print
    dest = os.path.abspath(dest)
    target.check()                                      # a bad target is refused before anything else
    check_destination(dest)
    owner = restore_owner(dest)
    record = repo_record.read(store)
    keyring = keyring_from_settings(settings)
    archive = timelines.Archive(store, keyring, (record.wal_segment_size if record and record.wal_segment_size
                                                 else walnames.DEFAULT_SEGMENT_SIZE))
    backups = catalog.open_catalog(store)
    plan = plan_restore(archive, backups.list(), name, target, beyond_archive)
    backup = plan.backup
    _announce(say, dest, plan, target, as_primary, store.url, owner)
    started = time.time()
    backups.restore(backup, dest, RestoreRequest(settings, keyring, tablespace_map, restore_spec, progress_mode))
    try:
        _finish(dest, plan, target, store, record, config_path, as_primary, owner, say)
    except OSError as exc:
        raise disk_error(exc, dest) from None
    duration = time.time() - started
    logs.info("backup_fetched", f"backup {backup.name} restored into {dest}; start the server to recover",
              backup=backup.name, bytes=backup.size, duration_s=round(duration, 3))
    say(f"restored backup {backup.name} into {dest} in {duration:.1f} s; start the server to recover "
        f"(e.g. pg_ctl -D {dest} start)")
    return backup


def plan_restore(archive: timelines.Archive, backups: list[BackupInfo], name: str,
                 target: recovery.Target, beyond_archive: bool) -> Plan:
    """Choose the backup and check the timeline and the target against the archive; ConfigError otherwise."""
    requested = target.timeline
    if requested not in (None, "latest", "current"):
        number = int(requested)
        if number not in archive.history_timelines and number not in {b.timeline for b in backups}:
            known = sorted(archive.history_timelines)
            raise ConfigError(f"--target-timeline {number}: the repository holds no "
                              f"{walnames.history_name(number)} and no backup on that timeline",
                              "timelines with a history file there: "
                              f"{', '.join(map(str, known)) if known else 'none'}; or use latest or current")
    paths: dict[str, tuple[int, list[timelines.TimelineStep], str | None]] = {}

    def path_of(backup: BackupInfo) -> tuple[int, list[timelines.TimelineStep], str | None]:
        if backup.name not in paths:
            paths[backup.name] = _timeline_path(archive, backup, requested)
        return paths[backup.name]

    backup = choose(backups, name, target, lambda b: path_of(b)[2])
    followed, chain, _ = path_of(backup)
    end = archive.end_of(chain)
    if not beyond_archive:
        _check_within_archive(target, end, followed)
    return Plan(backup, followed, chain, end, archive.diverged(chain))


def _timeline_path(archive: timelines.Archive, backup: BackupInfo, requested: str | None
                   ) -> tuple[int, list[timelines.TimelineStep], str | None]:
    """(timeline followed, its history, why this backup cannot start that recovery or None)."""
    if requested not in (None, "latest", "current"):
        number = int(requested)
        if number != backup.timeline and number not in archive.history_timelines:
            return number, [], (f"the repository holds no {walnames.history_name(number)}, and the backup is "
                                f"on timeline {backup.timeline}")
    followed = archive.followed_timeline(backup.timeline, requested)
    chain = archive.chain(followed)
    return followed, chain, timelines.problem_with(chain, backup.timeline, walnames.parse_lsn(backup.stop_lsn))


def _check_within_archive(target: recovery.Target, end: timelines.ArchiveEnd, followed: int) -> None:
    hint = ("wait until that WAL is archived or choose an earlier target; to restore anyway while WAL is still "
            "being archived, add --target-beyond-archive")
    if target.kind == "lsn" and (end.lsn is None or (target.lsn_value or 0) > end.lsn):
        held = f"its newest segment {end.segment} ends at {walnames.format_lsn(end.lsn)}" if end.lsn else "none"
        raise ConfigError(f"the target LSN {target.lsn} is beyond the archived WAL on timeline {followed} "
                          f"({held})", hint)
    if target.kind == "time" and (end.mtime is None or target.moment_value.timestamp() > end.mtime + ARCHIVE_TIME_SLACK_S):
        held = (f"its newest segment {end.segment} was archived at {utc_text(end.mtime)}"
                if end.mtime is not None else "none")
        raise ConfigError(f"the target time {recovery.pg_timestamp(target.moment_value)} is after the archived WAL on "
                          f"timeline {followed} ({held})", hint)


def _announce(say: Callable[[str], None], dest: str, plan: Plan, target: recovery.Target, as_primary: bool,
              origin: str, owner: Owner | None) -> None:
    backup = plan.backup
    say(f"restoring backup {backup.name} into {dest}")
    say(f"  backup: timeline {backup.timeline}, WAL {backup.start_wal} .. {backup.stop_wal}, consistent at "
        f"{backup.stop_lsn} ({utc_text(backup.stop_time)})")
    path = " -> ".join(str(s.timeline) for s in plan.chain)
    held = (f"the archive holds WAL up to {plan.end.segment} (archived {utc_text(plan.end.mtime)})"
            if plan.end.segment else "the archive holds no WAL on that timeline yet")
    say(f"  recovery: replays WAL from {backup.start_wal} following timeline {plan.followed} "
        f"(history {path}); {held}")
    for note in plan.diverged:
        say(f"  note: {note}; this restore follows timeline {plan.followed} (--target-timeline chooses another)")
    say(f"  target: {target.describe()}")
    if target.kind == "name":
        say("  (walship cannot tell where a restore point is: if it was made before this backup, recovery "
            "ends without reaching it and the server stops; then name an older backup)")
    action = target.effective_action
    if action == "promote":
        say("  at the target: promote (recovery ends, the server opens read-write on a new timeline)")
    elif action == "pause":
        say("  at the target: pause (the server stays read-only, queries allowed, until you run "
            "SELECT pg_wal_replay_resume(), which ends recovery and promotes; with hot_standby = off it shuts "
            "down instead)")
    elif action == "shutdown":
        say("  at the target: shutdown (the server stops; started again, it recovers to the same target)")
    else:
        say("  at the end of the archive: recovery ends, the server opens read-write on a new timeline")
    if as_primary:
        say(f"  restored as the NEW PRIMARY of {origin} (--as-primary): archiving stays as the backup had it, so "
            "after promotion this server's WAL and new timeline are archived there and later restores (LATEST) "
            "follow it; keep the old primary stopped")
    else:
        say(f"  restored as a COPY: archive_mode = off in postgresql.auto.conf, so this server's WAL is archived "
            f"nowhere, and never into {origin} (it would fork production's history there); to archive it into "
            "its own repository or make it the new primary, see docs/restoring.md")
    if owner is not None:
        say(f"  files owned by {_user(owner.ids[0])} (uid {owner.ids[0]}, gid {owner.ids[1]}): {owner.why}")


def _finish(dest: str, plan: Plan, target: recovery.Target, store, record, config_path: str | None,
            as_primary: bool, owner: Owner | None, say: Callable[[str], None]) -> None:
    """Settings, marker and owner once every file is in; recovery.signal last."""
    recoveryfiles.remove_signal_files(dest)
    disabled = recoveryfiles.comment_out_recovery_settings(dest)
    if disabled:
        say(f"  commented out recovery settings the backup carried: {', '.join(disabled)}")
    recoveryfiles.write_restore_marker(dest, recoveryfiles.PRIMARY if as_primary else recoveryfiles.COPY,
                                       store.url,
                                  record.repository_id if record is not None else None, plan.backup.name)
    command = recovery.restore_command(recovery.walship_executable(), store.url, config_path)
    recovery.write_settings(dest, plan.backup.name, command, target, plan.followed,
                            [] if as_primary else recovery.copy_archiving_lines(store.url))
    roots = [dest, *tablespace_locations(dest)]
    if owner is not None:
        for root in roots:
            chown_tree(root, *owner.ids)
    for root in roots:
        sync_tree(root)
    recoveryfiles.signal_recovery(dest, owner.ids if owner is not None else None)


def restore_owner(dest: str) -> Owner | None:
    """Run as root: the user the restored files go to (DEST's parent's owner, else postgres); else None."""
    if os.geteuid() != 0:
        return None
    parent = os.path.dirname(dest)
    while not os.path.isdir(parent):
        parent = os.path.dirname(parent)
    st = os.stat(parent)
    if st.st_uid != 0:
        return Owner(st.st_uid, st.st_gid, f"the owner of {parent}")
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        raise ConfigError(f"backup-fetch runs as root, {parent} belongs to root and there is no postgres user: "
                          "walship cannot tell who will run the server",
                          "restore below a directory owned by that user, or run backup-fetch as that user") from None
    return Owner(pw.pw_uid, pw.pw_gid, f"the postgres user ({parent} belongs to root)")


def tablespace_locations(dest: str) -> list[str]:
    tblspc = os.path.join(dest, "pg_tblspc")
    found = []
    for name in sorted(os.listdir(tblspc)) if os.path.isdir(tblspc) else ():
        path = os.path.join(tblspc, name)
        if os.path.islink(path):
            found.append(os.path.realpath(path))
    return found


def chown_tree(root: str, uid: int, gid: int) -> None:
    """Give root and everything below it (links themselves, never followed) to uid:gid."""
    os.lchown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _print(line: str) -> None:
    print(line, flush=True)          # flushed: the plan is on screen before a long download starts


def check_destination(dest: str) -> None:
    if os.path.exists(os.path.join(dest, "postmaster.pid")):
        raise ConfigError(f"{dest} holds postmaster.pid: a server may be running there",
                          "stop it, or restore into a new or empty directory")
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise ConfigError(f"restore destination {dest} is not a directory", "restore into a new or empty directory")
    if os.path.isdir(dest) and os.listdir(dest):
        raise ConfigError(f"restore destination {dest} is not empty", "restore into a new or empty directory")


def restore_full(store, name: str, dest: str, settings, remap: dict[str, str], progress_mode: str, keyring) -> None:
    """A full backup: its parts extracted by backup_concurrency workers."""
    def read_parts(marker: catalog.Marker, destination: Destination, bar) -> None:
        def extract(number: int) -> None:
            destination.extract_part(part_stream(store, name, number, keyring),
                                     part_manifest(store, name, number, keyring),
                                     f"{layout.part_key(name, number)} in {store.url}", bar)

        with ThreadPoolExecutor(max_workers=settings.backup_concurrency, thread_name_prefix="restore-part") as pool:
            sizes = catalog.part_sizes(store, name)
            futures = [pool.submit(extract, n) for n in sorted(range(marker.parts), key=lambda n: -sizes.get(n, 0))]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                pool.shutdown(cancel_futures=True)     # a failed part fails the restore: start no other
                raise

    _restore_into(store, name, dest, remap, progress_mode, read_parts)


def restore_incremental(store, name: str, dest: str, settings, remap: dict[str, str], progress_mode: str,
                        keyring) -> None:
    """An incremental backup: every part of its chain in one pass (backup/incremental.py)."""
    from walship.backup.incremental import ChainReader

    def read_parts(marker: catalog.Marker, destination: Destination, bar) -> None:
        ChainReader(store, marker, keyring, destination, bar).run(settings.backup_concurrency)

    _restore_into(store, name, dest, remap, progress_mode, read_parts)


def _restore_into(store, name: str, dest: str, remap: dict[str, str], progress_mode: str,
                  read_parts: Callable[[catalog.Marker, Destination, object], None]) -> None:
    """What both restores do around reading the parts: the destination and its tablespace links first, the
    tablespace map, the check that every file is whole and the flush to disk after."""
    marker = catalog.read_marker(store, name)
    try:
        os.makedirs(dest, mode=0o700, exist_ok=True)
        os.chmod(dest, 0o700)
        links = _make_tablespace_links(dest, marker.tablespaces, remap)
        destination = Destination(dest, links)
        bar = progress.make(progress_mode, f"restore {name}", marker.info.size)
        read_parts(marker, destination, bar)
        _rewrite_tablespace_map(dest, links)
        destination.finish(f"backup {name} in {store.url}")
        bar.close()
    except OSError as exc:
        raise disk_error(exc, dest) from None


def part_stream(store, name: str, number: int, keyring=None) -> Iterator[bytes]:
    """A part's tar stream as chunks of at most 1 MiB: read, decrypted, decompressed and checked as it goes."""
    key = layout.part_key(name, number)
    _, plain = pipeline.read(store.stream(key, chunk_size=STREAM_CHUNK), key, keyring)
    return plain


def part_manifest(store, name: str, number: int, keyring=None):
    """A part's manifest entries, in tar order."""
    key = layout.part_manifest_key(name, number)
    _, plain = pipeline.read([store.get(key)], key, keyring)
    return parse_lines(plain, key)


def _make_tablespace_links(dest: str, tablespaces: dict[str, str], remap: dict[str, str]) -> dict[str, str]:
    """Create pg_tblspc/<oid> -> location (the original one unless remapped); each location must be empty."""
    unknown = sorted(set(remap) - set(tablespaces))
    if unknown:
        raise ConfigError(f"the backup has no tablespace with OID {unknown[0]}",
                          f"its tablespaces: {', '.join(sorted(tablespaces)) or 'none'}")
    links = {}
    for oid, original in sorted(tablespaces.items()):
        location = os.path.abspath(remap.get(oid, original))
        if "\n" in location:
            raise ConfigError(f"tablespace location {location!r} contains a newline")
        if os.path.isdir(location) and os.listdir(location):
            raise ConfigError(f"tablespace {oid} would be restored into {location}, which is not empty",
                              f"restore it elsewhere with --tablespace {oid}=/new/empty/dir")
        os.makedirs(location, mode=0o700, exist_ok=True)
        os.makedirs(os.path.join(dest, "pg_tblspc"), mode=0o700, exist_ok=True)
        os.symlink(location, os.path.join(dest, "pg_tblspc", oid))
        links[f"pg_tblspc/{oid}"] = location
    return links


def _rewrite_tablespace_map(dest: str, links: dict[str, str]) -> None:
    """PostgreSQL recreates the links from tablespace_map when recovery starts: make it name the new places."""
    if not links:
        return
    path = os.path.join(dest, "tablespace_map")
    text = "".join(f"{link.rsplit('/', 1)[1]} {location}\n" for link, location in sorted(links.items()))
    with open(path, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def parse_tablespace_options(values: list[str] | None) -> dict[str, str]:
    """--tablespace OID=DIR, repeated."""
    out = {}
    for value in values or ():
        oid, sep, location = value.partition("=")
        if not sep or not oid.isdecimal() or not os.path.isabs(location):
            raise ConfigError(f"--tablespace {value!r} is not OID=/absolute/dir")
        out[oid] = location
    return out

