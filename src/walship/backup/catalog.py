"""walship's own base backups as a backup source, and the catalog of a repository (walship's and WAL-E's).

A backup is listed only once its completion marker exists: backups/<name>.json,
written after every part, every manifest and the WAL segment that ends the
backup are in the repository (a repository of format 1 kept it inside the
folder, backups/<name>/complete.json, and is read as well). Deletion removes the
marker first. Keys: walship.repo.layout; the catalog and BackupInfo:
walship.repo.catalog. open_catalog is the one place that composes the sources.
"""

from __future__ import annotations

import builtins
import json
from dataclasses import MISSING, dataclass, fields

from walship.errors import IntegrityError, WalshipError
from walship.repo import layout
from walship.repo import record as repo_record
from walship.repo.catalog import BackupFolders, BackupInfo, BackupNotFound, BackupSource, Catalog, RestoreRequest
from walship.repo.walindex import obsolete_wal
from walship.storage import ObjectNotFound

MARKER_FORMAT = 2            # 2: files larger than a part may be stored as slices
# an incremental backup's marker says so in "backup_type": a walship without incrementals would restore only
# its changed blocks, so it refuses markers naming a type it does not know (older ones read format 2 markers,
# so format stays 2 for fulls, which any walship of format 2 restores)
INCREMENTAL_FORMAT = 3


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
    block_size: int | None = None                   # with block maps (every backup of this walship): the server's
    wal_segment_size: int | None = None             # block size and WAL segment size, which a parent must share

    def to_json(self) -> bytes:
        incremental = self.info.backup_type != "full"
        doc = {"format": INCREMENTAL_FORMAT if incremental else MARKER_FORMAT, **self.info.as_dict(),
               "parts": self.parts, "files": self.files, "codec": self.codec, "tablespaces": self.tablespaces}
        doc["chain"] = list(self.info.chain)
        if self.block_size is not None:
            doc.update(block_size=self.block_size, wal_segment_size=self.wal_segment_size)
        if self.pages_checked is not None:      # optional fields: absent from markers without them
            doc.update(bad_pages=self.bad_pages or {}, pages_checked=self.pages_checked)
        return json.dumps(doc, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, what: str) -> Marker:
        try:
            doc = json.loads(data)
            if int(doc.get("format", 1)) > INCREMENTAL_FORMAT:
                raise WalshipError(f"{what} was written by a newer walship (backup format {doc['format']})",
                                   "upgrade walship to restore it")
            # fields added later have defaults: markers written before them still read
            values = {f.name: doc[f.name] if f.default is MISSING else doc.get(f.name, f.default)
                      for f in fields(BackupInfo)}
            values["chain"] = tuple(str(n) for n in values["chain"])
            info = BackupInfo(**values)
            checked = doc.get("pages_checked")
            return cls(info, int(doc["parts"]), int(doc["files"]), str(doc["codec"]), dict(doc["tablespaces"]),
                       {str(k): [int(b) for b in v] for k, v in dict(doc.get("bad_pages") or {}).items()},
                       int(checked) if checked is not None else None,
                       int(doc["block_size"]) if doc.get("block_size") else None,
                       int(doc["wal_segment_size"]) if doc.get("wal_segment_size") else None)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise IntegrityError(f"{what} is corrupt (not a walship completion marker)",
                                 "delete that backup with `walship delete --before`") from None


def _read_marker_at(store, key: str) -> Marker:
    return Marker.from_json(store.get(key), f"{key} in {store.url}")


def read_marker(store, name: str) -> Marker:
    """The marker of the complete backup called name (where format 2 keeps it, else where format 1 did)."""
    for key in (layout.marker_key(name), layout.legacy_marker_key(name)):
        try:
            return _read_marker_at(store, key)
        except ObjectNotFound:
            continue
    raise BackupNotFound(f"no complete backup named {name} in {store.url}",
                         "see `walship backup-list` for the backups there")


def part_sizes(store, name: str) -> dict[int, int]:
    """The stored size of each part of backup name (one listing of its folder).

    Restores hand their workers the largest parts first, so that they finish together: in part order, a
    restore whose last parts were its largest left one worker idle for a fifth of its time at the end."""
    sizes = {}
    for info in store.list(layout.backup_prefix(name)):
        number = layout.part_number_of_key(name, info.key)
        if number is not None:
            sizes[number] = info.size
    return sizes


def write_marker(store, name: str, marker: Marker) -> None:
    """Mark the backup complete, in the repository's format 2 layout (the record says so first, so a
    walship that cannot read this layout refuses the repository rather than miss the backup)."""
    repo_record.require_format(store, repo_record.FORMAT)
    store.put(layout.marker_key(name), marker.to_json())


class WalshipBackups(BackupSource):
    kind = "walship"

    def list(self) -> list[BackupInfo]:
        found = []
        for _name, key in sorted(BackupFolders(self.store).markers.items()):
            try:
                found.append(_read_marker_at(self.store, key).info)
            except ObjectNotFound:
                continue                     # deleted between the listing and the read
        return found

    def restore(self, backup: BackupInfo, dest: str, request: RestoreRequest) -> None:
        from walship.backup import fetch  # the restore writer of walship's parts
        if backup.chain:
            fetch.restore_incremental(self.store, backup.name, dest, request.settings, request.tablespace_map,
                                      request.progress_mode, request.keyring)
            return
        fetch.restore_full(self.store, backup.name, dest, request.settings, request.tablespace_map,
                       request.progress_mode, request.keyring)

    def obsolete_keys(self, delete: builtins.list[BackupInfo], keep: builtins.list[BackupInfo]) -> builtins.list[str]:
        keys: list[str] = []
        for backup in (b for b in delete if b.source == self.kind):
            keys += [layout.marker_key(backup.name), layout.legacy_marker_key(backup.name)]
            keys += sorted(o.key for o in self.store.list(layout.backup_prefix(backup.name))
                           if o.key != layout.legacy_marker_key(backup.name))
        if keep:
            names = [layout.wal_name_of_key(o.key) for o in self.store.list(layout.WAL_PREFIX)]
            keys += sorted(layout.wal_key(n) for n in obsolete_wal(names, keep))
        return keys


def open_catalog(store) -> Catalog:
    """The catalog of every backup in the repository: walship's and WAL-E's."""
    from walship.walecompat.backups import WaleBackups  # lzop and tar readers: only once a catalog is opened
    return Catalog(store, [WalshipBackups(store), WaleBackups(store)])


def list_backups(store) -> list[BackupInfo]:
    """Every complete backup in the repository, oldest first (walship's and WAL-E's)."""
    return open_catalog(store).list()
