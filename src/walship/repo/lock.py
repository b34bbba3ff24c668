"""The repository lock, the announcement of running backups, and the leftovers of backups that died.

The lock: one object, locks/backups.lock, created with create-only semantics
(S3 If-None-Match, link(2) on a filesystem), so exactly one of two racing
commands (backup-push, delete) gets it. The holder rewrites it every HEARTBEAT_S
seconds and checks on each beat that it is still its own (a token); it removes
it when done. A lock is stale, and may be broken, when it names this host and a
process that no longer runs, or when it has not been rewritten for STALE_AFTER_S
(a holder that died on another host). Breaking deletes it and creates it anew,
create-only again, so two commands breaking the same stale lock still cannot
both win; a holder whose lock was broken under it notices at its next beat.

A running backup-push announces its backup with backups/<name>/in_progress.json
(host, pid, start), written create-only before anything else; the lock's one
heartbeat thread refreshes the announcements of its holder too. A backup folder
without a completion marker is a leftover to remove when
- its in_progress.json names this host and a process that no longer runs
  (a backup-push killed here: removed at once), or
- nothing under it was written for STALE_AFTER_S (a backup-push that died on
  another host, or a half-finished deletion),
so a backup running concurrently, here or elsewhere, is never touched, even one
of an older walship that does not take the lock. Fifteen heartbeats leave room
for clock skew between this host and the store.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid

from walship import logs
from walship.errors import WalshipError
from walship.processes import process_running
from walship.repo import layout
from walship.repo.catalog import BackupFolders
from walship.storage import ObjectExists, ObjectNotFound

LOCK_KEY = layout.LOCK_KEY
HEARTBEAT_S = 60.0
STALE_AFTER_S = 15 * HEARTBEAT_S


class RepositoryLocked(WalshipError):
    pass


class Announcement:
    """A running backup's in_progress.json, refreshed by the lock's heartbeat until stopped."""

    def __init__(self, lock: RepositoryLock, name: str):
        self.lock = lock
        self.key = layout.in_progress_key(name)
        self.doc = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}).encode()

    def refresh(self) -> None:
        try:
            self.lock.store.put(self.key, self.doc)
        except Exception as exc:  # the parts being written also show the backup is alive
            logs.warning("heartbeat_failed", f"could not refresh {self.key}: {exc}")

    def stop(self) -> None:
        """No beat refreshes it after this returns (so a removed backup is not re-announced)."""
        with self.lock._beating:
            if self in self.lock._announced:
                self.lock._announced.remove(self)


class RepositoryLock:
    def __init__(self, store, command: str):
        self.store = store
        self.command = command
        self.token = uuid.uuid4().hex
        self.lost = False
        self._stop = threading.Event()
        self._beating = threading.Lock()          # a beat and an Announcement.stop never interleave
        self._announced: list[Announcement] = []
        self._thread = threading.Thread(target=self._beat, name="repository-lock", daemon=True)

    def _doc(self) -> bytes:
        return json.dumps({"command": self.command, "host": socket.gethostname(), "pid": os.getpid(),
                           "token": self.token, "written": time.time()}).encode()

    def __enter__(self) -> RepositoryLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        try:
            self.store.put(LOCK_KEY, self._doc(), if_absent=True, durable=False)
        except ObjectExists:
            holder = self._holder()
            if holder is None or not _stale(holder, self.store.head(LOCK_KEY)):
                raise self._locked(holder) from None
            logs.warning("lock_broken", f"breaking a stale repository lock of {_describe(holder)}")
            self.store.delete([LOCK_KEY])
            try:
                self.store.put(LOCK_KEY, self._doc(), if_absent=True, durable=False)
            except ObjectExists:
                raise self._locked(self._holder()) from None
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        holder = self._holder()
        if holder and holder.get("token") == self.token:
            self.store.delete([LOCK_KEY])

    def check(self) -> None:
        """Raise when the lock was taken away (broken as stale by another command)."""
        if self.lost:
            raise WalshipError("the repository lock was broken by another command while this one ran",
                               "nothing was marked complete; run the command again")

    def announce(self, name: str) -> Announcement:
        """Announce the backup called name; ObjectExists when a backup of the same name already did."""
        announcement = Announcement(self, name)
        self.store.put(announcement.key, announcement.doc, if_absent=True)
        with self._beating:
            self._announced.append(announcement)
        return announcement

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.store.get(LOCK_KEY))
        except ObjectNotFound:
            return None
        except ValueError:
            return {}

    def _locked(self, holder: dict | None) -> RepositoryLocked:
        return RepositoryLocked(f"the repository {self.store.url} is locked by {_describe(holder or {})}",
                                "wait for it to finish; a lock left by a dead process is broken automatically")

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with self._beating:
                for announcement in self._announced:
                    announcement.refresh()
            try:
                holder = self._holder()
                if not holder or holder.get("token") != self.token:
                    self.lost = True
                    logs.error("lock_lost", "the repository lock is no longer this command's")
                    return
                self.store.put(LOCK_KEY, self._doc(), durable=False)
            except Exception as exc:   # a missed beat is not fatal: the lock only goes stale after many
                logs.warning("lock_heartbeat_failed", f"could not refresh the repository lock: {exc}")


def _describe(holder: dict) -> str:
    if not holder:
        return f"an unreadable lock object ({LOCK_KEY})"
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(holder.get("written", 0)))
    return f"{holder.get('command', '?')} on {holder.get('host', '?')} (pid {holder.get('pid', '?')}), last seen {since}"


def _stale(holder: dict, info) -> bool:
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        if not process_running(holder["pid"]):
            return True
    written = info.mtime if info is not None else holder.get("written", 0)
    return time.time() - written > STALE_AFTER_S


# --- leftovers of backups that died -----------------------------------------------------------

def leftovers(store, now: float, keep: str | None = None) -> dict[str, list[str]]:
    """Backups that died before completion: name -> their keys. Only folders without a marker are listed."""
    found = {}
    for name in BackupFolders(store).unfinished:
        if name == keep:
            continue
        objects = list(store.list(layout.backup_prefix(name)))
        if objects and _dead(store, name, max(o.mtime for o in objects), now):
            found[name] = [o.key for o in objects]
    return found


def _dead(store, name: str, newest_write: float, now: float) -> bool:
    if now - newest_write > STALE_AFTER_S:
        return True
    try:
        doc = json.loads(store.get(layout.in_progress_key(name)))
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
