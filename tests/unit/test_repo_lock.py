import json
import socket
import subprocess
import time

import pytest

from walship.config import Settings
from walship.repo import lock as lockmod
from walship.repo.lock import LOCK_KEY, RepositoryLock, RepositoryLocked
from walship.storage import open_store


@pytest.fixture
def store(tmp_path):
    return open_store(f"file://{tmp_path}", Settings())


def test_second_command_is_refused_while_the_first_holds_the_lock(store):
    with RepositoryLock(store, "backup-push"):
        with pytest.raises(RepositoryLocked, match=r"locked by backup-push on .* \(pid \d+\)"):
            RepositoryLock(store, "delete").acquire()
    assert store.head(LOCK_KEY) is None          # released
    with RepositoryLock(store, "delete"):
        pass


def test_lock_of_a_dead_process_on_this_host_is_broken(store):
    dead = subprocess.Popen(["true"])
    dead.wait()
    store.put(LOCK_KEY, json.dumps({"command": "backup-push", "host": socket.gethostname(), "pid": dead.pid,
                                    "token": "x", "written": 0}).encode())
    with RepositoryLock(store, "delete") as held:
        assert json.loads(store.get(LOCK_KEY))["token"] == held.token


def test_lock_of_a_live_process_elsewhere_is_respected_until_it_goes_stale(store, monkeypatch):
    store.put(LOCK_KEY, json.dumps({"command": "backup-push", "host": "db2", "pid": 1, "token": "x",
                                    "written": 0}).encode())
    with pytest.raises(RepositoryLocked, match="backup-push on db2"):
        RepositoryLock(store, "delete").acquire()
    monkeypatch.setattr(lockmod, "STALE_AFTER_S", -1)     # the holder stopped beating long ago
    with RepositoryLock(store, "delete"):
        pass


def test_a_holder_notices_when_its_lock_was_taken_away(store, monkeypatch):
    monkeypatch.setattr(lockmod, "HEARTBEAT_S", 0.05)
    held = RepositoryLock(store, "backup-push")
    held.acquire()
    store.put(LOCK_KEY, json.dumps({"command": "delete", "host": "db2", "pid": 1, "token": "other",
                                    "written": 0}).encode())
    held._thread.join(timeout=5)
    with pytest.raises(Exception, match="lock was broken"):
        held.check()
    held.release()
    assert json.loads(store.get(LOCK_KEY))["token"] == "other"   # not ours: left alone


def test_the_one_heartbeat_refreshes_the_lock_and_the_backup_it_announced(store, monkeypatch):
    from walship.repo import layout
    from walship.storage import ObjectExists

    monkeypatch.setattr(lockmod, "HEARTBEAT_S", 0.02)
    writes: list[str] = []
    put = store.put

    def counting_put(key, data, **kw):
        writes.append(key)
        return put(key, data, **kw)

    monkeypatch.setattr(store, "put", counting_put)
    with RepositoryLock(store, "backup-push") as held:
        announced = held.announce("b1")
        with pytest.raises(ObjectExists):
            held.announce("b1")                        # a second backup of that name is refused
        deadline = time.monotonic() + 10
        while ((writes.count(layout.in_progress_key("b1")) < 3 or writes.count(LOCK_KEY) < 3)
               and time.monotonic() < deadline):
            time.sleep(0.01)
        announced.stop()
        refreshed = writes.count(layout.in_progress_key("b1"))
        assert refreshed >= 3 and writes.count(LOCK_KEY) >= 3
        before = len(writes)
        while writes[before:].count(LOCK_KEY) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert writes.count(layout.in_progress_key("b1")) == refreshed     # stopped: never re-announced
