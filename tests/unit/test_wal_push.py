import os

import pytest

from walship import codec
from walship.archive import push, spool
from walship.config import Settings
from walship.errors import IntegrityError
from walship.storage import open_store

SEG = 1 << 16   # small fake segments: the logic does not depend on the size


def make_wal_dir(tmp_path, names, ready=True):
    wal = tmp_path / "pg_wal"
    (wal / "archive_status").mkdir(parents=True, exist_ok=True)
    for n in names:
        (wal / n).write_bytes(os.urandom(SEG))
        if ready:
            (wal / "archive_status" / f"{n}.ready").touch()
    return wal


def names(first, count):
    return [f"0000000100000000000000{first + i:02X}" for i in range(count)]


@pytest.fixture
def store(tmp_path):
    return open_store(f"file://{tmp_path}/repo", Settings())


def test_push_stores_a_verifiable_object(tmp_path, store):
    wal = make_wal_dir(tmp_path, names(1, 1))
    push.wal_push(str(wal / names(1, 1)[0]), Settings(push_batch=1), store)
    blob = store.get("wal/" + names(1, 1)[0])
    assert codec.unpack(blob) == (wal / names(1, 1)[0]).read_bytes()


def test_repeated_push_of_identical_content_succeeds(tmp_path, store):
    wal = make_wal_dir(tmp_path, names(1, 1))
    path = str(wal / names(1, 1)[0])
    push.wal_push(path, Settings(push_batch=1), store)
    results = push.wal_push(path, Settings(push_batch=1), store)
    assert results[0].already_archived


def test_different_content_is_refused_and_never_overwrites(tmp_path, store):
    wal = make_wal_dir(tmp_path, names(1, 1))
    path = wal / names(1, 1)[0]
    push.wal_push(str(path), Settings(push_batch=1), store)
    original = store.get("wal/" + path.name)
    path.write_bytes(os.urandom(SEG))        # another cluster's segment with the same name
    with pytest.raises(IntegrityError, match="different content; refusing to overwrite"):
        push.wal_push(str(path), Settings(push_batch=1), store)
    assert store.get("wal/" + path.name) == original


def test_one_call_archives_the_ready_batch_and_later_calls_are_acknowledged(tmp_path, store):
    batch = names(1, 6)
    wal = make_wal_dir(tmp_path, batch)
    settings = Settings(push_batch=4, push_concurrency=2)
    results = push.wal_push(str(wal / batch[0]), settings, store)
    assert [r.name for r in results][0] == batch[0] and len(results) == 4
    stored = {o.key[4:] for o in store.list("wal/")}
    assert stored == set(batch[:4])
    spool_dir = spool.spool_dir(str(wal / batch[0]))
    # the next calls for segments 2..4 return without touching the store
    for n in batch[1:4]:
        assert spool.acknowledge(str(wal / n), spool_dir)
    assert not spool.acknowledge(str(wal / batch[4]), spool_dir)


def test_acknowledgement_requires_the_same_file(tmp_path, store):
    batch = names(1, 2)
    wal = make_wal_dir(tmp_path, batch)
    push.wal_push(str(wal / batch[0]), Settings(push_batch=2), store)
    # the file was replaced after it was uploaded: the marker must not vouch for it
    (wal / batch[1]).unlink()
    (wal / batch[1]).write_bytes(os.urandom(SEG))
    assert not spool.acknowledge(str(wal / batch[1]), spool.spool_dir(str(wal / batch[1])))


def test_ready_order_puts_history_files_first(tmp_path):
    wal = make_wal_dir(tmp_path, names(5, 2) + ["00000002.history"])
    got = [os.path.basename(p) for p in push.ready_files(str(wal), "x", 10, str(tmp_path / "spool"))]
    assert got == ["00000002.history"] + names(5, 2)


def test_a_failing_extra_file_does_not_fail_the_requested_one(tmp_path, store):
    batch = names(1, 3)
    wal = make_wal_dir(tmp_path, batch)
    (wal / batch[2]).unlink()                   # .ready but gone: cannot be read
    results = push.wal_push(str(wal / batch[0]), Settings(push_batch=3), store)
    assert {r.name for r in results} == set(batch[:2])
    assert not spool.is_recorded(batch[2], spool.spool_dir(str(wal / batch[0])))
