"""Base backups WAL-E stored (layout version 005): listing them and restoring one.

    basebackups_005/base_<segment>_<offset>/extended_version.txt        written first: `SELECT version()`
    basebackups_005/base_<segment>_<offset>/tar_partitions/part_<N>.tar.lzo
    basebackups_005/base_<segment>_<offset>_backup_stop_sentinel.json   written last: the backup is complete

The sentinel holds the stop segment and offset, the uncompressed size and the
"spec" (tablespaces: their OIDs, where they were, the pg_tblspc link). A
backup without its sentinel never finished and is never listed.

The name carries the start point, with two quirks of WAL-E 1.1.1 that this
module has to undo:
- a hot backup's offset is `lpad(file_offset::text, 8, '0')`: decimal;
- `backup-push --while-offline` (the only kind WAL-E can take on PostgreSQL 15+)
  derives both the segment and the offset from the first two characters of
  the unpadded REDO offset, so REDO `0/1500718` is named `..._00000015_00000015`
  while its segment is 01. Such names are recognised (the segment's last 8
  digits equal the offset field). The real segment is one of three: the named
  one (an 8-digit offset), its first digit (7 digits), or 0 (fewer). The
  lowest of them that is archived is taken as the start: never later than the
  real one while that one is archived, so retention keeps every WAL file the
  backup needs, and the archive's gap checks start where replay does.

A restore does not rely on the name either way: a hot backup carries its
backup_label, an offline one its pg_control; PostgreSQL finds the start there.
"""

from __future__ import annotations

import builtins
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from walship import logs
from walship.errors import ConfigError, IntegrityError
from walship.pg.walnames import Segment, format_lsn, segments_per_log, timeline_of
from walship.repo import layout
from walship.repo.catalog import BackupInfo, BackupNotFound, BackupSource, RestoreRequest
from walship.repo.layout import WALE_BACKUP_PREFIX, WALE_SENTINEL_SUFFIX
from walship.repo.walindex import obsolete_wal
from walship.storage import ObjectInfo, ObjectNotFound, Store
from walship.streams import ChunkReader
from walship.walecompat import filters, objects, untar

NAME_RE = re.compile(r"^base_(?P<segment>[0-9A-F]{24})_(?P<offset>[0-9A-F]{8})$")
PART_RE = re.compile(r"^part_(?P<number>\d+)\.tar\.lzo$")
WALE_SEGMENT_SIZE = 16 * 1024 * 1024          # WAL-E's arithmetic assumes 16 MiB segments
# WAL-E left these out of every base backup (tar_partition.PG_CONF): they live in /etc on Debian
UNSAVED_CONFIG = ("postgresql.conf", "pg_hba.conf", "pg_ident.conf")


@dataclass(frozen=True)
class StartPoint:
    candidates: tuple[str, ...]   # the segment replay starts in: one for a hot backup, lowest first
    lsn: str | None               # the exact start LSN, known for hot backups only


def is_wale_name(name: str) -> bool:
    return bool(NAME_RE.match(name))


def start_point(name: str) -> StartPoint:
    """Where WAL replay for the backup called `name` begins (see the module doc for offline names)."""
    m = NAME_RE.match(name)
    if m is None:
        raise BackupNotFound(f"{name!r} is not a WAL-E backup name (base_<segment>_<offset>)")
    segment, offset = m["segment"], m["offset"]
    if segment[16:] == offset:                # WAL-E's --while-offline naming
        start = Segment.parse(segment, WALE_SEGMENT_SIZE)
        per_log = segments_per_log(WALE_SEGMENT_SIZE)
        first_of_log, seg = start.number - start.number % per_log, start.number % per_log
        numbers = sorted({0, seg >> 4, seg}) if seg >= 0x10 else [0]
        return StartPoint(tuple(Segment(start.timeline, first_of_log + n).name(WALE_SEGMENT_SIZE) for n in numbers),
                          None)
    if not offset.isdecimal():
        raise BackupNotFound(f"{name!r} has an offset that WAL-E never writes")
    return StartPoint((segment,), _lsn(segment, int(offset, 10)))


def _lsn(segment: str, offset: int) -> str:
    return format_lsn(Segment.parse(segment, WALE_SEGMENT_SIZE).start_lsn(WALE_SEGMENT_SIZE) + offset)


def _resolve(store: Store, start: StartPoint) -> str:
    """The start segment: the lowest candidate that is archived (by WAL-E or walship), else the lowest."""
    if len(start.candidates) > 1:
        for segment in start.candidates:
            if store.head(layout.wale_wal_key(segment)) is not None or store.head(layout.wal_key(segment)) is not None:
                return segment
    return start.candidates[0]


def pg_version_number(text: str) -> int:
    """server_version_num from `SELECT version()` / pg_config's VERSION ("PostgreSQL 15.5 on ...")."""
    m = re.search(r"PostgreSQL (\d+)(?:\.(\d+))?(?:\.(\d+))?", text)
    if m is None:
        return 0
    major, second, third = int(m[1]), int(m[2] or 0), int(m[3] or 0)
    if major >= 10:
        return major * 10000 + second
    return major * 10000 + second * 100 + third


# --- listing ------------------------------------------------------------------

class WaleBackups(BackupSource):
    """WAL-E's base backups (basebackups_005/) as a source of the repository's catalog."""

    kind = "wal-e"

    def list(self) -> list[BackupInfo]:
        return list_backups(self.store)

    def restore(self, backup: BackupInfo, dest: str, request: RestoreRequest) -> None:
        restore(self.store, backup, dest, request.settings, request.restore_spec)

    def obsolete_keys(self, delete: builtins.list[BackupInfo], keep: builtins.list[BackupInfo]) -> builtins.list[str]:
        """Every object of a deleted WAL-E backup (its stop sentinel first), and every wal_005/ file before
        the start of the oldest kept backup of either kind; history files and what WAL-E did not write stay."""
        keys: list[str] = []
        for backup in (b for b in delete if b.source == self.kind):
            keys.append(layout.wale_sentinel_key(backup.name))
            keys.extend(sorted(o.key for o in self.store.list(layout.wale_backup_prefix(backup.name))))
        if keep:
            names = {}
            for o in self.store.list(layout.WALE_WAL_PREFIX):
                name = layout.wale_wal_name_of_key(o.key)
                if name is not None:
                    names[name] = o.key
            keys.extend(sorted(names[n] for n in obsolete_wal(list(names), keep)))
        return keys


def list_backups(store: Store) -> list[BackupInfo]:
    """Every complete WAL-E backup in the repository, oldest first (by the time it completed)."""
    sentinels: dict[str, ObjectInfo] = {}
    sizes: dict[str, int] = {}
    version_files: dict[str, ObjectInfo] = {}
    for obj in store.list(WALE_BACKUP_PREFIX):
        rest = obj.key[len(WALE_BACKUP_PREFIX):]
        if "/" not in rest:
            if rest.endswith(WALE_SENTINEL_SUFFIX) and is_wale_name(rest[:-len(WALE_SENTINEL_SUFFIX)]):
                sentinels[rest[:-len(WALE_SENTINEL_SUFFIX)]] = obj
            continue
        name, _, inner = rest.partition("/")
        sizes[name] = sizes.get(name, 0) + obj.size
        if obj.key == layout.wale_version_key(name):
            version_files[name] = obj
    found = [_describe(store, name, sentinel, sizes.get(name, 0), version_files.get(name))
             for name, sentinel in sentinels.items()]
    return sorted(found, key=lambda b: (b.stop_time, b.name))


def _describe(store: Store, name: str, sentinel: ObjectInfo, size: int,
              version_file: ObjectInfo | None) -> BackupInfo:
    key = sentinel.key
    try:
        doc = json.loads(store.get(key))
        stop_wal = str(doc["wal_segment_backup_stop"])
        stop_offset = str(doc["wal_segment_offset_backup_stop"])
        expanded = int(doc.get("expanded_size_bytes") or 0)
    except ObjectNotFound:
        raise IntegrityError(f"WAL-E sentinel {key} in {store.url} vanished while listing") from None
    except (ValueError, KeyError, TypeError):
        raise IntegrityError(f"WAL-E sentinel {key} in {store.url} is corrupt (not the JSON WAL-E writes)") from None
    start = start_point(name)
    start_wal = _resolve(store, start)
    pg_version = 0
    if version_file is not None:
        pg_version = pg_version_number(store.get(version_file.key).decode(errors="replace"))
    if start.lsn is not None and stop_offset.isdecimal() and re.fullmatch(r"[0-9A-F]{24}", stop_wal):
        start_lsn, stop_lsn = start.lsn, _lsn(stop_wal, int(stop_offset, 10))
    else:                                     # offline: the shutdown checkpoint, in the start segment
        start_lsn = stop_lsn = _lsn(start_wal, 0)
        stop_wal = start_wal
    started = version_file.mtime if version_file is not None else sentinel.mtime
    return BackupInfo(
        name=name, start_time=started, stop_time=sentinel.mtime,
        start_lsn=start_lsn, stop_lsn=stop_lsn, timeline=timeline_of(start_wal),
        start_wal=start_wal, stop_wal=stop_wal, pg_version=pg_version,
        system_identifier="",                 # WAL-E never recorded it
        size=expanded, stored_size=size + sentinel.size,
        duration_s=max(0.0, round(sentinel.mtime - started, 3)), source="wal-e")


def partitions(store: Store, name: str) -> list[str]:
    """The keys of a backup's tar partitions, in order."""
    prefix = layout.wale_partitions_prefix(name)
    numbered = []
    for obj in store.list(prefix):
        m = PART_RE.match(obj.key[len(prefix):])
        if m:
            numbered.append((int(m["number"]), obj.key))
    numbered.sort()
    if not numbered:
        raise IntegrityError(f"WAL-E backup {name} in {store.url} has a stop sentinel but no tar partitions")
    if [n for n, _ in numbered] != list(range(len(numbered))):
        raise IntegrityError(f"WAL-E backup {name} in {store.url} is missing tar partitions "
                             f"(found {[n for n, _ in numbered]})")
    return [key for _, key in numbered]


def spec(store: Store, name: str) -> dict:
    doc = json.loads(store.get(layout.wale_sentinel_key(name)))
    return doc.get("spec") or {}


# --- restore ------------------------------------------------------------------

def restore(store: Store, backup: BackupInfo, dest: str, settings, restore_spec: str | None = None) -> BackupInfo:
    """Extract the WAL-E backup (as the catalog listed it) into dest, an absent or empty directory.

    Tablespaces go back to the locations the sentinel recorded (WAL-E's
    `--restore-spec SOURCE`), each of which must be absent or empty, unless
    restore_spec names a JSON file mapping tablespace OIDs to {"loc": path}.
    Nothing is written into the recovery configuration here: the caller does that.
    """
    keys = partitions(store, backup.name)
    _check_destination(dest)
    os.makedirs(dest, mode=0o700, exist_ok=True)
    os.chmod(dest, 0o700)
    links = _prepare_tablespaces(dest, spec(store, backup.name), restore_spec)
    extraction = untar.Extraction(dest, tuple(links))
    workers = max(1, min(getattr(settings, "backup_concurrency", 1) or 1, len(keys)))

    def extract(key: str) -> None:
        chunks = objects.content(store, key, settings.gpg_key_id)
        try:
            stream = ChunkReader(chunks)
            extraction.partition(stream, objects.describe(store, key))
            filters.drain(stream.rest())      # runs lzop's (and gpg's) final checks
        finally:
            chunks.close()                    # stops the filter programs if extraction failed
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(extract, key) for key in keys]:
            future.result()
    # WAL-E stored the WAL directory empty (or as a link to the original's); PostgreSQL wants it there
    wal_dir = "pg_xlog" if 0 < backup.pg_version < 100000 else "pg_wal"
    os.makedirs(os.path.join(dest, wal_dir, "archive_status"), mode=0o700, exist_ok=True)
    extraction.finish()
    missing = [f for f in UNSAVED_CONFIG if not os.path.exists(os.path.join(dest, f))]
    if missing:
        logs.warning("wale_config_not_in_backup",
                     f"WAL-E backups never contain {', '.join(missing)}: put the server's copies in {dest} "
                     "(or keep them in /etc as Debian does) before starting it", backup=backup.name)
    logs.info("wale_backup_restored", f"WAL-E backup {backup.name} restored into {dest}",
              backup=backup.name, bytes=extraction.bytes)
    return backup


def _check_destination(dest: str) -> None:
    if not os.path.isabs(dest):
        raise ConfigError(f"restore destination {dest!r} is not an absolute path")
    if os.path.exists(os.path.join(dest, "postmaster.pid")):
        raise ConfigError(f"{dest} holds postmaster.pid: a server may be running there",
                          "stop it, or remove a stale postmaster.pid after making very sure")
    if os.path.isdir(dest) and os.listdir(dest):
        raise ConfigError(f"restore destination {dest} is not empty", "restore into a new or empty directory")
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise ConfigError(f"restore destination {dest} is not a directory")


def _prepare_tablespaces(dest: str, backup_spec: dict, restore_spec: str | None) -> list[str]:
    """Create pg_tblspc/<oid> -> location links; the relative link paths made."""
    oids = [str(t) for t in backup_spec.get("tablespaces") or []]
    if not oids:
        return []
    mapping = {oid: dict(backup_spec.get(oid) or {}) for oid in oids}
    if restore_spec and restore_spec != "SOURCE":        # WAL-E's pseudo-name for "where they were"
        try:
            with open(restore_spec) as fh:
                override = json.load(fh)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read restore spec {restore_spec}: {exc}") from None
        for oid in oids:
            if isinstance(override.get(oid), dict) and override[oid].get("loc"):
                mapping[oid]["loc"] = override[oid]["loc"]
    made = []
    os.makedirs(os.path.join(dest, "pg_tblspc"), mode=0o700, exist_ok=True)
    for oid in oids:
        loc = mapping[oid].get("loc")
        if not oid.isdecimal() or not loc or not os.path.isabs(loc):
            raise IntegrityError(f"the WAL-E backup's tablespace spec for {oid!r} is not usable: {mapping[oid]}")
        if os.path.isdir(loc) and os.listdir(loc):
            raise ConfigError(f"tablespace {oid} would be restored into {loc}, which is not empty",
                              "empty it, or map the tablespace elsewhere with --restore-spec FILE "
                              '({"<oid>": {"loc": "/new/path/"}})')
        os.makedirs(loc, mode=0o700, exist_ok=True)
        link = os.path.join("pg_tblspc", oid)
        os.symlink(loc.rstrip("/"), os.path.join(dest, link))
        made.append(link)
    return made
