"""Backups being taken, and the leftovers of backups that died.

A running backup-push writes in_progress.json (host, pid, start) before
anything else and rewrites it every HEARTBEAT_S seconds. A backup prefix
without a completion marker is a leftover to remove when
- its in_progress.json names this host and a process that no longer runs
  (a backup-push killed here: removed at once), or
- nothing under it was written for STALE_AFTER_S (a backup-push that died on
  another host, or a half-finished deletion),
so a backup running concurrently, here or elsewhere, is never touched. The
threshold is fifteen heartbeats, leaving room for clock skew between this
host and the store.

backup-push and delete also hold the repository lock (lock.py), so normally
no other backup runs; these checks keep that true for a backup-push that
does not take the lock (an older walship).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

from walship import logs
from walship.backup import objects
from walship.layout import BACKUP_PREFIX
from walship.storage import ObjectNotFound
from walship.streams import process_running

HEARTBEAT_S = 60.0
STALE_AFTER_S = 15 * HEARTBEAT_S


class Heartbeat:
    """Announces a running backup and keeps announcing it until stopped."""

    def __init__(self, store, name: str):
        self.store = store
        self.name = name
        self.doc = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}).encode()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="backup-heartbeat", daemon=True)

    def start(self) -> None:
        """Announce the backup; ObjectExists when a backup of the same name already did."""
        self.store.put(objects.in_progress_key(self.name), self.doc, if_absent=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self.store.put(objects.in_progress_key(self.name), self.doc)
            except Exception as exc:  # the parts being written also show the backup is alive
                logs.warning("heartbeat_failed", f"could not refresh {objects.in_progress_key(self.name)}: {exc}")


def leftovers(store, now: float, keep: str | None = None) -> dict[str, list[str]]:
    """Backups that died before completion: name -> their keys."""
    keys: dict[str, list[str]] = {}
    newest: dict[str, float] = {}
    complete = set()
    for obj in store.list(BACKUP_PREFIX):
        name = objects.backup_name_of_key(obj.key)
        if not name or name == keep:
            continue
        keys.setdefault(name, []).append(obj.key)
        newest[name] = max(newest.get(name, 0.0), obj.mtime)
        if obj.key == objects.marker_key(name):
            complete.add(name)
    return {name: ks for name, ks in keys.items()
            if name not in complete and _dead(store, name, newest[name], now)}


def _dead(store, name: str, newest_write: float, now: float) -> bool:
    if now - newest_write > STALE_AFTER_S:
        return True
    try:
        doc = json.loads(store.get(objects.in_progress_key(name)))
    except (ObjectNotFound, ValueError):
        return False              # too recent to judge without its announcement
    return doc.get("host") == socket.gethostname() and not process_running(int(doc.get("pid", 0)))


def remove_leftovers(store, now: float, keep: str | None = None, dry_run: bool = False) -> list[str]:
    """Delete what dead backups left; the names of those backups."""
    found = leftovers(store, now, keep)
    for name, keys in sorted(found.items()):
        if dry_run:
            logs.info("leftover_found", f"would remove {len(keys)} objects left by the unfinished backup {name}",
                      backup=name)
            continue
        store.delete(keys)
        logs.info("leftover_removed", f"removed {len(keys)} objects left by the unfinished backup {name}",
                  backup=name)
    return sorted(found)
