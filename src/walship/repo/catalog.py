"""The backups a repository holds, whoever took them: one catalog over backup sources.

A backup source is one kind of backup in the repository (walship's own, WAL-E's
basebackups_005/). Each lists its complete backups, restores one, and names the
keys retention deletes. The catalog composes the sources it is given (the
module that knows them all builds it: walship.backup.catalog.open_catalog), so
backup-list, backup-fetch, delete, status, `check backup` and verify all see
the same backups, found by one listing per source. A backup that did not finish
is never listed: every source lists only backups whose completion marker, written
last, is stored.
"""

from __future__ import annotations

import builtins
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass

from walship.errors import ConfigError, WalshipError


class BackupNotFound(WalshipError):
    pass


@dataclass(frozen=True)
class BackupInfo:
    name: str
    start_time: float            # epoch seconds (UTC)
    stop_time: float
    start_lsn: str               # 'X/Y' text form
    stop_lsn: str
    timeline: int
    start_wal: str               # first WAL segment the backup needs
    stop_wal: str                # last WAL segment the backup needs (it is archived before completion)
    pg_version: int              # server_version_num, e.g. 150018
    system_identifier: str
    size: int                    # bytes of the data directory read (uncompressed)
    stored_size: int             # bytes stored in the repository
    duration_s: float
    source: str = "walship"      # "walship" or "wal-e": the BackupSource.kind that listed it
    # the next transaction ID once the backup was consistent (pg_snapshot_xmax at pg_backup_stop, a full
    # 64-bit xid): every transaction from this one on commits after the consistency point. None: not recorded
    next_xid: int | None = None
    # pages whose checksum was wrong when backup-push read them (stored as found); None: not verified
    # (no data checksums, verification off, a backup of an older walship or of WAL-E)
    page_checksum_failures: int | None = None
    # incremental backups (backup/incremental.py): "full" or "incremental", the backup it follows, and
    # every backup it depends on, the full first (the parent last); () for a full
    backup_type: str = "full"
    parent: str | None = None
    chain: tuple[str, ...] = ()
    # relation file blocks the backup holds, and how many of them it read from the data directory (an
    # incremental reads fewer when PostgreSQL 17+'s WAL summaries say which changed: wal_summaries); None:
    # not recorded (an older walship, WAL-E)
    blocks_held: int | None = None
    blocks_read: int | None = None
    wal_summaries: bool | None = None

    def as_dict(self) -> dict:
        return asdict(self)


class RestoreRequest:
    """What the operator asked of a restore beyond the backup and the destination."""

    def __init__(self, settings, keyring=None, tablespace_map: dict[str, str] | None = None,
                 restore_spec: str | None = None, progress_mode: str = "auto"):
        self.settings = settings
        self.keyring = keyring
        self.tablespace_map = tablespace_map or {}
        self.restore_spec = restore_spec          # WAL-E's --restore-spec
        self.progress_mode = progress_mode


class BackupSource(ABC):
    """One kind of backup in a repository."""

    kind: str                    # BackupInfo.source of the backups it lists

    def __init__(self, store) -> None:
        self.store = store

    @abstractmethod
    def list(self) -> list[BackupInfo]:
        """Its complete backups, in no promised order."""

    @abstractmethod
    def restore(self, backup: BackupInfo, dest: str, request: RestoreRequest) -> None:
        """Write the backup's files into dest (checked absent or empty); no recovery configuration."""

    @abstractmethod
    def obsolete_keys(self, delete: builtins.list[BackupInfo], keep: builtins.list[BackupInfo]) -> builtins.list[str]:
        """Its keys retention deletes: the deleted backups' objects (their completion markers first) and
        its WAL before the oldest kept backup of any source."""

    def execute(self, keys: builtins.list[str]) -> None:
        """Delete what obsolete_keys chose: the completion markers first, in a request of their own, so a
        deletion cut short leaves backups that are no longer listed, never a listed one with parts missing."""
        from walship.repo.layout import is_completion_marker
        markers = [k for k in keys if is_completion_marker(k)]
        self.store.delete(markers)
        self.store.delete([k for k in keys if not is_completion_marker(k)])


class Catalog:
    """Every complete backup of a repository, listed once (per source) and kept."""

    def __init__(self, store, sources: list[BackupSource]):
        self.store = store
        self.sources = sources
        self._backups: list[BackupInfo] | None = None

    def list(self) -> list[BackupInfo]:
        """Every complete backup, oldest first."""
        if self._backups is None:
            found = [b for source in self.sources for b in source.list()]
            self._backups = sorted(found, key=lambda b: (b.stop_time, b.name))
        return self._backups

    def source_of(self, backup: BackupInfo) -> BackupSource:
        return next(s for s in self.sources if s.kind == backup.source)

    def find(self, name: str) -> BackupInfo:
        """The complete backup called name, or the newest one for LATEST."""
        backups = self.list()
        if name == "LATEST":
            if not backups:
                raise BackupNotFound(f"no complete backup in {self.store.url}",
                                     "take one with `walship backup-push PGDATA`")
            return backups[-1]
        return named(backups, name, self.store.url)

    def restore(self, backup: BackupInfo, dest: str, request: RestoreRequest) -> None:
        self.source_of(backup).restore(backup, dest, request)


def named(backups: list[BackupInfo], name: str, where: str) -> BackupInfo:
    for backup in backups:
        if backup.name == name:
            return backup
    raise BackupNotFound(f"no complete backup named {name} in {where}",
                         "see `walship backup-list` for the backups there; a backup whose completion marker "
                         "is missing never finished")


XID_EPOCH = 1 << 32


def full_xid(xid: int, reference: int) -> int:
    """A 32-bit transaction ID as the full 64-bit one nearest before reference + 2^31 (a full one stays)."""
    if xid >= XID_EPOCH:
        return xid
    candidate = (reference >> 32 << 32) | xid
    return candidate - XID_EPOCH if candidate > reference + (1 << 31) and candidate >= XID_EPOCH else candidate


def ends_before(backup: BackupInfo, target) -> bool | None:
    """Whether the backup is consistent before the target (recovery cannot stop earlier); None: unknown."""
    from walship.pg.walnames import parse_lsn
    kind = target.kind
    if kind == "time":
        return backup.stop_time < target.moment.timestamp()
    if kind == "lsn":
        return parse_lsn(backup.stop_lsn) <= target.lsn_value
    if kind == "xid":
        if backup.next_xid is None:
            return None
        return backup.next_xid <= full_xid(target.xid_value, backup.next_xid)
    return True                    # a restore point name, immediate, no target: any backup can start


def describe_end(backup: BackupInfo) -> str:
    xid = f", next xid {backup.next_xid}" if backup.next_xid is not None else ""
    return f"{backup.name} (consistent at {backup.stop_lsn}, {utc_text(backup.stop_time)}{xid})"


def choose(backups: list[BackupInfo], name: str, target, problem: Callable[[BackupInfo], str | None]
           ) -> BackupInfo:
    """The backup to restore for the target: the one named, or for LATEST the newest one consistent before
    the target. Refused (ConfigError, naming what works) when it ends after the target or when recovery from
    it cannot follow the timeline asked for: with two histories in the repository walship does not guess.

    backups: oldest first. problem(backup): why recovery from it cannot follow that timeline, or None.
    """
    if name != "LATEST":
        backup = named(backups, name, "the repository")
        if ends_before(backup, target) is False:
            fitting = [b for b in backups if ends_before(b, target)]
            hint = (f"restore {describe_end(fitting[-1])}, or LATEST, which chooses it" if fitting else
                    "no backup in the repository was consistent before it: choose a later target")
            raise ConfigError(f"backup {describe_end(backup)} is consistent only after the target "
                              f"{target.describe()}: recovery cannot stop before that", hint)
    else:
        if not backups:
            raise BackupNotFound("no complete backup in the repository",
                                 "take one with `walship backup-push PGDATA`")
        candidates = [b for b in backups if ends_before(b, target)]
        if not candidates:
            if target.kind == "xid":
                hint = ("only backups that recorded their next transaction ID can be chosen for an xid target: "
                        "name a backup taken before that transaction started, or use --target-time")
            else:
                hint = f"the oldest backup is {describe_end(backups[0])}: choose a later target"
            raise ConfigError(f"no backup in the repository is consistent before the target {target.describe()}",
                              hint)
        backup = candidates[-1]
    issue = problem(backup)
    if issue is not None:
        older = [b for b in backups if b.stop_time < backup.stop_time and ends_before(b, target) is not False
                 and problem(b) is None]
        stay = "--target-timeline current to stay on the backup's own timeline"
        hint = f"restore {older[-1].name} to follow that timeline, or add {stay}" if older else f"add {stay}"
        raise ConfigError(f"backup {backup.name} cannot start that recovery: {issue}", hint)
    return backup


def utc_text(epoch: float | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch)) if epoch is not None else "-"


class BackupFolders:
    """walship's backups/ as one listing that stops at the folder: complete backups (name -> marker key)
    and the folders of backups without a marker (being taken, or left by one that died)."""

    def __init__(self, store):
        from walship.repo import layout
        objects, folders = store.list_folder(layout.BACKUP_PREFIX)
        self.markers: dict[str, str] = {}
        for info in objects:
            name = layout.backup_name_of_key(info.key)
            if name and info.key == layout.marker_key(name):
                self.markers[name] = info.key
        self.unfinished: list[str] = []
        for folder in folders:
            name = folder[len(layout.BACKUP_PREFIX):-1]
            if not name or name in self.markers:
                continue
            # a repository of format 1 keeps the marker inside the folder: one HEAD per such backup
            legacy = layout.legacy_marker_key(name)
            if store.head(legacy) is not None:
                self.markers[name] = legacy
            else:
                self.unfinished.append(name)
