"""What a repository holds: the complete base backups, for listing, restore, retention and checks.

This is the interface the rest of walship uses (backup-list, backup-fetch LATEST,
delete, `walship check backup`, `walship status`, WAL-E compatibility). A backup
that did not finish is never returned: only backups with a completion marker
(objects.MARKER), written last, are.
"""

from __future__ import annotations

import json
import time
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Callable

from walship.backup import objects
from walship.errors import ConfigError, IntegrityError, WalshipError
from walship.layout import BACKUP_PREFIX
from walship.storage import ObjectNotFound

MARKER_FORMAT = 2            # 2: files larger than a part may be stored as slices


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
    source: str = "walship"      # "walship" or "wal-e"
    # the next transaction ID once the backup was consistent (pg_snapshot_xmax at pg_backup_stop, a full
    # 64-bit xid): every transaction from this one on commits after the consistency point. None: not recorded
    next_xid: int | None = None
    # pages whose checksum was wrong when backup-push read them (stored as found); None: not verified
    # (no data checksums, verification off, a backup of an older walship or of WAL-E)
    page_checksum_failures: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Marker:
    """The completion marker: the backup's description and what a restore needs to read it."""
    info: BackupInfo
    parts: int                   # part_00000 .. part_<parts-1>, each with its manifest
    files: int
    codec: str
    tablespaces: dict[str, str]  # oid -> location on the backed-up host
    bad_pages: dict[str, list[int]] | None = None   # file in the backup -> blocks with a wrong checksum
    pages_checked: int | None = None                # pages whose checksum was verified

    def to_json(self) -> bytes:
        doc = {"format": MARKER_FORMAT, **self.info.as_dict(), "parts": self.parts, "files": self.files,
               "codec": self.codec, "tablespaces": self.tablespaces}
        if self.pages_checked is not None:      # optional fields: absent from markers without them
            doc.update(bad_pages=self.bad_pages or {}, pages_checked=self.pages_checked)
        return json.dumps(doc, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, what: str) -> "Marker":
        try:
            doc = json.loads(data)
            if int(doc.get("format", 1)) > MARKER_FORMAT:
                raise WalshipError(f"{what} was written by a newer walship (backup format {doc['format']})",
                                   "upgrade walship to restore it")
            # fields added later have defaults: markers written before them still read
            info = BackupInfo(**{f.name: doc[f.name] if f.default is MISSING else doc.get(f.name, f.default)
                                 for f in fields(BackupInfo)})
            checked = doc.get("pages_checked")
            return cls(info, int(doc["parts"]), int(doc["files"]), str(doc["codec"]), dict(doc["tablespaces"]),
                       {str(k): [int(b) for b in v] for k, v in dict(doc.get("bad_pages") or {}).items()},
                       int(checked) if checked is not None else None)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise IntegrityError(f"{what} is corrupt (not a walship completion marker)",
                                 "delete that backup with `walship delete --before`") from None


def read_marker(store, name: str) -> Marker:
    key = objects.marker_key(name)
    try:
        return Marker.from_json(store.get(key), f"{key} in {store.url}")
    except ObjectNotFound:
        raise BackupNotFound(f"no complete backup named {name} in {store.url}",
                             "see `walship backup-list` for the backups there") from None


def list_walship_backups(store) -> list[BackupInfo]:
    """walship's complete backups, oldest first."""
    found = []
    for obj in store.list(BACKUP_PREFIX):
        name = objects.backup_name_of_key(obj.key)
        if name and obj.key == objects.marker_key(name):
            try:
                found.append(read_marker(store, name).info)
            except BackupNotFound:
                continue                     # deleted between the listing and the read
    return sorted(found, key=lambda b: (b.stop_time, b.name))


def list_backups(store) -> list[BackupInfo]:
    """Every complete backup in the repository, oldest first (walship's and WAL-E's)."""
    from walship.walecompat import backups as wale
    return sorted(list_walship_backups(store) + wale.list_backups(store), key=lambda b: (b.stop_time, b.name))


def find(store, name: str) -> BackupInfo:
    """The complete backup called name, or the newest one for LATEST."""
    backups = list_backups(store)
    if name == "LATEST":
        if not backups:
            raise BackupNotFound(f"no complete backup in {store.url}", "take one with `walship backup-push PGDATA`")
        return backups[-1]
    for backup in backups:
        if backup.name == name:
            return backup
    raise BackupNotFound(f"no complete backup named {name} in {store.url}",
                         "see `walship backup-list` for the backups there")


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
        backup = next((b for b in backups if b.name == name), None)
        if backup is None:
            raise BackupNotFound(f"no complete backup named {name} in the repository",
                                 "see `walship backup-list` for the backups there")
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
