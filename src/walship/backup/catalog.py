"""What a repository holds: the complete base backups, for listing, restore, retention and checks.

This is the interface the rest of walship uses (backup-list, backup-fetch LATEST,
delete, `walship check backup`, `walship status`, WAL-E compatibility). A backup
that did not finish is never returned: only backups with a completion marker
(objects.MARKER), written last, are.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, fields

from walship.backup import objects
from walship.errors import IntegrityError, WalshipError
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
            # fields with a default are optional: markers written before them stay readable
            info = BackupInfo(**{f.name: doc[f.name] for f in fields(BackupInfo)
                                 if f.name in doc or f.default is MISSING})
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
