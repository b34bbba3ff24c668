"""Leftovers of dead backups are removed; a backup still running, here or elsewhere, never is."""

from __future__ import annotations

import json
import os
import socket
import subprocess

import pytest

from walship.repo import layout, lock
from walship.storage.local import LocalStore


@pytest.fixture
def store(tmp_path):
    return LocalStore(str(tmp_path / "repo"))


def _announce(store, name: str, host: str, pid: int) -> None:
    store.put(layout.in_progress_key(name), json.dumps({"host": host, "pid": pid, "started": 0}).encode())
    store.put(layout.part_key(name, 0), b"part")


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_a_backup_killed_on_this_host_is_a_leftover_at_once(store):
    _announce(store, "dead", socket.gethostname(), _dead_pid())
    _announce(store, "alive", socket.gethostname(), os.getpid())
    _announce(store, "elsewhere", "another-host", 1)
    now = store.head(layout.part_key("dead", 0)).mtime
    assert lock.remove_leftovers(store, now) == ["dead"]
    assert not list(store.list(layout.backup_prefix("dead")))
    assert list(store.list(layout.backup_prefix("alive"))) and list(store.list(layout.backup_prefix("elsewhere")))


def test_a_backup_silent_for_longer_than_the_threshold_is_a_leftover_wherever_it_ran(store):
    _announce(store, "elsewhere", "another-host", 1)
    now = store.head(layout.part_key("elsewhere", 0)).mtime
    assert lock.leftovers(store, now + lock.STALE_AFTER_S - 1) == {}
    assert set(lock.leftovers(store, now + lock.STALE_AFTER_S + 1)) == {"elsewhere"}


def test_a_complete_backup_and_the_one_being_taken_are_never_leftovers(store):
    _announce(store, "done", "another-host", 1)
    store.put(layout.marker_key("done"), b"{}")
    _announce(store, "mine", socket.gethostname(), _dead_pid())
    assert lock.leftovers(store, 10**12, keep="mine") == {}


def test_a_complete_backup_of_a_format_1_repository_is_never_a_leftover(store):
    _announce(store, "old", "another-host", 1)
    store.put(layout.legacy_marker_key("old"), b"{}")
    assert lock.leftovers(store, 10**12) == {}
