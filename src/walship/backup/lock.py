"""The repository lock: backup-push and delete never run at the same time.

One object, locks/backups.lock, created with create-only semantics (S3
If-None-Match, link(2) on a filesystem), so exactly one of two racing
commands gets it. The holder rewrites it every HEARTBEAT_S seconds and checks
on each beat that it is still its own (a token); it removes it when done.

A lock is stale, and may be broken, when it names this host and a process
that no longer runs, or when it has not been rewritten for STALE_AFTER_S
(a holder that died on another host). Breaking deletes it and creates it
anew, create-only again, so two commands breaking the same stale lock still
cannot both win; a holder whose lock was broken under it notices at its next
beat and stops.
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
from walship.storage import ObjectExists, ObjectNotFound
from walship.streams import process_running

LOCK_KEY = "locks/backups.lock"
HEARTBEAT_S = 60.0
STALE_AFTER_S = 15 * HEARTBEAT_S


class RepositoryLocked(WalshipError):
    pass


class RepositoryLock:
    def __init__(self, store, command: str):
        self.store = store
        self.command = command
        self.token = uuid.uuid4().hex
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="repository-lock", daemon=True)

    def _doc(self) -> bytes:
        return json.dumps({"command": self.command, "host": socket.gethostname(), "pid": os.getpid(),
                           "token": self.token, "written": time.time()}).encode()

    def __enter__(self) -> "RepositoryLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        try:
            self.store.put(LOCK_KEY, self._doc(), if_absent=True)
        except ObjectExists:
            holder = self._holder()
            if holder is None or not _stale(holder, self.store.head(LOCK_KEY)):
                raise self._locked(holder) from None
            logs.warning("lock_broken", f"breaking a stale repository lock of {_describe(holder)}")
            self.store.delete([LOCK_KEY])
            try:
                self.store.put(LOCK_KEY, self._doc(), if_absent=True)
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
            try:
                holder = self._holder()
                if not holder or holder.get("token") != self.token:
                    self.lost = True
                    logs.error("lock_lost", "the repository lock is no longer this command's")
                    return
                self.store.put(LOCK_KEY, self._doc())
            except Exception as exc:   # a missed beat is not fatal: the lock only goes stale after many
                logs.warning("lock_heartbeat_failed", f"could not refresh the repository lock: {exc}")


def _describe(holder: dict) -> str:
    if not holder:
        return "an unreadable lock object (locks/backups.lock)"
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(holder.get("written", 0)))
    return f"{holder.get('command', '?')} on {holder.get('host', '?')} (pid {holder.get('pid', '?')}), last seen {since}"


def _stale(holder: dict, info) -> bool:
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        if not process_running(holder["pid"]):
            return True
    written = info.mtime if info is not None else holder.get("written", 0)
    return time.time() - written > STALE_AFTER_S
