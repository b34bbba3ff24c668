import os

import pytest

from walship.config import Settings
from walship.storage import ObjectExists, ObjectNotFound, open_store


def test_put_get_list_delete(tmp_path):
    store = open_store(f"file://{tmp_path}/repo", Settings())
    store.put("wal/a", b"1")
    store.put("backups/b/part", iter([b"x" * 10, b"y" * 5]))
    assert store.get("wal/a") == b"1"
    assert b"".join(store.stream("backups/b/part", 4)) == b"x" * 10 + b"y" * 5
    assert store.get_range("backups/b/part", 8, 4) == b"xxyy"
    assert sorted(o.key for o in store.list("")) == ["backups/b/part", "wal/a"]
    assert [o.key for o in store.list("wal/")] == ["wal/a"]
    assert store.head("wal/a").size == 1 and store.head("wal/zz") is None
    store.delete(["wal/a", "wal/never"])
    with pytest.raises(ObjectNotFound):
        store.get("wal/a")


def test_put_if_absent_never_replaces(tmp_path):
    store = open_store(f"file://{tmp_path}", Settings())
    store.put("wal/x", b"first", if_absent=True)
    with pytest.raises(ObjectExists):
        store.put("wal/x", b"second", if_absent=True)
    assert store.get("wal/x") == b"first"
    assert os.listdir(tmp_path / "wal") == ["x"]    # no temporary file left behind


def test_failed_stream_leaves_no_object(tmp_path):
    store = open_store(f"file://{tmp_path}", Settings())

    def broken():
        yield b"abc"
        raise RuntimeError("reader died")
    with pytest.raises(RuntimeError):
        store.put("backups/x/part", broken())
    assert store.head("backups/x/part") is None
    assert os.listdir(tmp_path / "backups" / "x") == []


def test_keys_cannot_escape_the_repository(tmp_path):
    store = open_store(f"file://{tmp_path}", Settings())
    with pytest.raises(ValueError):
        store.put("../outside", b"x")


def test_an_object_is_fsynced_with_its_directory_unless_it_need_not_outlive_a_crash(tmp_path, monkeypatch):
    """Every object is flushed to disk before put returns; the repository lock (durable=False) is not: its
    holder does not outlive a crash either. Create-only holds either way."""
    store = open_store(f"file://{tmp_path}", Settings())
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    store.put("wal/000000010000000000000001", b"x", if_absent=True)
    assert len(synced) == 2                     # the file, then its directory
    synced.clear()
    store.put("locks/backups.lock", b"held", if_absent=True, durable=False)
    assert synced == []
    with pytest.raises(ObjectExists):
        store.put("locks/backups.lock", b"other", if_absent=True, durable=False)
    assert store.get("locks/backups.lock") == b"held"
