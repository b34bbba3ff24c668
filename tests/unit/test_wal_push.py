import os

import pytest

from tests.support.walfiles import segment_bytes
from walship import pipeline
from walship.archive import push, spool
from walship.config import Settings
from walship.errors import IntegrityError
from walship.storage import open_store

SEG = 1 << 20   # small segments (PostgreSQL allows 1 MiB): the logic does not depend on the size


def make_wal_dir(tmp_path, names, ready=True):
    wal = tmp_path / "pg_wal"
    (wal / "archive_status").mkdir(parents=True, exist_ok=True)
    for n in names:
        (wal / n).write_bytes(segment_bytes(n, SEG) if len(n) == 24 else b"1\t0/3000000\tno recovery target\n")
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
    assert pipeline.unpack(blob) == (wal / names(1, 1)[0]).read_bytes()


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
    path.write_bytes(segment_bytes(path.name, SEG))   # the same cluster's segment, rewritten (a split brain)
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
        assert spool.acknowledge(str(wal / n), spool_dir, spool.destination(settings))
    assert not spool.acknowledge(str(wal / batch[4]), spool_dir, spool.destination(settings))


def test_acknowledgement_requires_the_same_file(tmp_path, store):
    batch = names(1, 2)
    wal = make_wal_dir(tmp_path, batch)
    push.wal_push(str(wal / batch[0]), Settings(push_batch=2), store)
    # the file was replaced after it was uploaded: the marker must not vouch for it
    (wal / batch[1]).unlink()
    (wal / batch[1]).write_bytes(segment_bytes(batch[1], SEG))
    assert not spool.acknowledge(str(wal / batch[1]), spool.spool_dir(str(wal / batch[1])),
                                 spool.destination(Settings()))


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


def test_a_recycled_segment_is_refused_and_not_stored(tmp_path, store):
    good, recycled = names(1, 2)
    wal = make_wal_dir(tmp_path, [good], ready=False)
    push.wal_push(str(wal / good), Settings(push_batch=1), store)
    # PostgreSQL renames old segments for reuse: the file keeps the header of the segment it was
    (wal / recycled).write_bytes(segment_bytes(recycled, SEG, page_address=0))
    with pytest.raises(IntegrityError, match="recycled or renamed"):
        push.wal_push(str(wal / recycled), Settings(push_batch=1), store)
    assert store.head("wal/" + recycled) is None


def test_a_file_of_the_wrong_size_or_unwritten_is_refused(tmp_path, store):
    first, second, third = names(1, 3)
    wal = make_wal_dir(tmp_path, [first], ready=False)
    push.wal_push(str(wal / first), Settings(push_batch=1), store)
    (wal / second).write_bytes(segment_bytes(second, SEG)[: SEG // 2])
    with pytest.raises(IntegrityError, match="not the cluster's segment size"):
        push.wal_push(str(wal / second), Settings(push_batch=1), store)
    (wal / third).write_bytes(bytes(SEG))                  # preallocated, never written
    with pytest.raises(IntegrityError, match="starts with zeros"):
        push.wal_push(str(wal / third), Settings(push_batch=1), store)
    assert store.head("wal/" + second) is None and store.head("wal/" + third) is None


def test_the_first_push_records_the_owner_and_another_cluster_is_refused(tmp_path, store):
    from walship.repo import record
    ours, theirs = names(1, 2)
    wal = make_wal_dir(tmp_path, [ours], ready=False)
    push.wal_push(str(wal / ours), Settings(push_batch=1), store)
    owner = record.read(store)
    assert owner is not None and owner.system_identifier == "7311000000000000001"
    assert owner.wal_segment_size == SEG and owner.pg_major == 15
    (wal / theirs).write_bytes(segment_bytes(theirs, SEG, system_identifier=42))
    with pytest.raises(IntegrityError, match="belongs to the cluster with system identifier 7311000000000000001"):
        push.wal_push(str(wal / theirs), Settings(push_batch=1), store)
    assert store.head("wal/" + theirs) is None


def test_an_acknowledgement_is_honoured_only_for_the_repository_it_was_written_for(tmp_path):
    batch = names(1, 2)
    wal = make_wal_dir(tmp_path, batch)
    first = Settings(repo=f"file://{tmp_path}/r1", push_batch=2)
    second = Settings(repo=f"file://{tmp_path}/r2", push_batch=2)
    push.wal_push(str(wal / batch[0]), first, open_store(first.repo, first))   # batch[1] goes ahead into r1
    r2 = open_store(second.repo, second)
    results = push.wal_push(str(wal / batch[1]), second, r2)
    assert results and results[0].name == batch[1]
    assert pipeline.unpack(r2.get("wal/" + batch[1])) == (wal / batch[1]).read_bytes()


def test_a_copy_restored_by_backup_fetch_does_not_archive_into_its_origin(tmp_path, store, monkeypatch):
    from walship.errors import WalshipError
    from walship.pg.recoveryfiles import COPY, PRIMARY, write_restore_marker
    from walship.repo import record
    first, second = names(1, 2)
    wal = make_wal_dir(tmp_path, [first, second], ready=False)
    push.wal_push(str(wal / first), Settings(push_batch=1), store)
    pgdata = tmp_path / "pgdata"
    pgdata.mkdir()
    monkeypatch.chdir(pgdata)                       # archive_command runs in the data directory
    write_restore_marker(str(pgdata), COPY, store.url, record.read(store).repository_id, "base_x")
    with pytest.raises(WalshipError, match="restored as a copy"):
        push.wal_push(str(wal / second), Settings(push_batch=1), store)
    assert store.head("wal/" + second) is None
    write_restore_marker(str(pgdata), PRIMARY, store.url, record.read(store).repository_id, "base_x")
    push.wal_push(str(wal / second), Settings(push_batch=1), store)
    assert store.head("wal/" + second) is not None
