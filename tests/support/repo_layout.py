"""Repositories in the layouts walship wrote: stub backups for listing tests, and a real repository turned
back into format 1 (completion markers inside the backup folders, the layout of walship before format 2)."""

from __future__ import annotations

import json

from walship.backup.catalog import Marker, write_marker
from walship.repo import layout, record
from walship.repo.catalog import BackupInfo


def stub_backup(name: str, stop_time: float, start_wal: str = "000000010000000000000002") -> BackupInfo:
    return BackupInfo(name=name, start_time=stop_time - 10, stop_time=stop_time, start_lsn="0/2000028",
                      stop_lsn="0/2000100", timeline=1, start_wal=start_wal, stop_wal=start_wal,
                      pg_version=150000, system_identifier="7000000000000000001", size=1, stored_size=1,
                      duration_s=10)


def write_stub_backup(store, info: BackupInfo, parts: int) -> None:
    """A complete backup's objects as backup-push leaves them (the parts' bytes are not a real tar)."""
    store.put(layout.in_progress_key(info.name), b"{}")
    for number in range(parts):
        store.put(layout.part_key(info.name, number), b"part")
        store.put(layout.part_manifest_key(info.name, number), b"manifest")
    write_marker(store, info.name, Marker(info, parts, parts, "none", {}))


def make_record(store) -> None:
    record.claim(store, record.ClusterIdentity("7000000000000000001", 15, 16 << 20), "test")


def to_format_1(store) -> list[str]:
    """Rewrite the repository as a walship before format 2 left it: every completion marker moved into its
    backup's folder (backups/<name>/complete.json) and the record at format 1. The backups moved."""
    objects, _ = store.list_folder(layout.BACKUP_PREFIX)
    moved = []
    for info in objects:
        name = layout.backup_name_of_key(info.key)
        if name and info.key == layout.marker_key(name):
            store.put(layout.legacy_marker_key(name), store.get(info.key))
            store.delete([info.key])
            moved.append(name)
    doc = json.loads(store.get(record.RECORD_KEY))
    doc["format"] = 1
    store.put(record.RECORD_KEY, json.dumps(doc).encode())
    return sorted(moved)


class CountingStore:
    """A store that counts the keys its listings return (objects and folders), to prove what is listed."""

    def __init__(self, store):
        self._store = store
        self.listed: list[str] = []

    def __getattr__(self, attribute: str):
        return getattr(self._store, attribute)

    def list(self, prefix: str, start_after: str | None = None):
        for info in self._store.list(prefix, start_after):
            self.listed.append(info.key)
            yield info

    def list_folder(self, folder: str):
        objects, folders = self._store.list_folder(folder)
        self.listed += [o.key for o in objects] + folders
        return objects, folders
