"""The summary of WAL runs (repo.walrunindex) against the objects it describes, on a file repository and on
moto's S3 over HTTP: built, advanced as WAL arrives, never hiding a segment deleted behind its back,
rebuilt when absent or corrupt, and closing a gap when the segment arrives late."""

import json

import pytest

from walship import pipeline
from walship.config import load_settings
from walship.monitoring import walarchive
from walship.pg.walnames import format_lsn
from walship.repo import record, walrunindex
from walship.repo.layout import WAL_INDEX_KEY
from walship.storage import open_store

MIB = 1024 * 1024


def seg(tli, n):
    return f"{tli:08X}{n // 256:08X}{n % 256:08X}"


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path, moto):
    if request.param == "file":
        env = {"WALSHIP_REPO": f"file://{tmp_path}/repo"}
    else:
        env = moto.env(moto.new_bucket())
    # in this (test) process the AWS variables are not in os.environ: hand them over as settings
    settings = load_settings({"s3_access_key_id": env.get("AWS_ACCESS_KEY_ID"),
                              "s3_secret_access_key": env.get("AWS_SECRET_ACCESS_KEY")}, env=env)
    s = open_store(env["WALSHIP_REPO"], settings)
    rec = record.RepositoryRecord("id", "7", 15, 16 * MIB, "2026-12-01T00:00:00Z", "link")
    s.put(record.RECORD_KEY, rec.to_json())
    yield s
    s.close()


def put_segments(store, tli, numbers):
    for n in numbers:
        store.put(f"wal/{seg(tli, n)}", b"x")


def put_history(store, tli, parent, lsn):
    text = f"{parent}\t{format_lsn(lsn)}\tno recovery target specified\n"
    store.put(f"wal/{tli:08X}.history", pipeline.pack(text.encode(), "none"))


def stored_runs(store):
    return json.loads(store.get(WAL_INDEX_KEY))["runs"]


def test_built_on_first_read_then_advanced_as_wal_arrives(store):
    put_segments(store, 1, range(2, 300))
    first = walarchive.load(store)
    assert first.index_note.startswith("rebuilt from a full listing (no summary stored")
    assert stored_runs(store) == {"1": [[2, 299, pytest.approx(stored_runs(store)["1"][0][2])]]}
    put_segments(store, 1, range(300, 310))
    later = walarchive.load(store)
    assert later.index_note == "summary checked and advanced"
    assert later.count == 308 and later.newest_name == seg(1, 309)
    assert later.gaps(seg(1, 2)) == []
    assert [r[:2] for r in stored_runs(store)["1"]] == [[2, 309]]


def test_a_backlog_and_a_segment_missing_in_it_are_both_seen(store):
    put_segments(store, 1, range(0, 5))
    walarchive.load(store)
    put_segments(store, 1, [*range(5, 100), *range(101, 208)])
    archive = walarchive.load(store)
    assert archive.index_note == "summary checked and advanced"
    assert archive.count == 207
    assert [str(g) for g in archive.gaps(seg(1, 0))] == [seg(1, 100)]


def test_a_segment_deleted_inside_a_summarised_run_is_still_a_gap(store):
    put_segments(store, 1, range(0, 100))
    walarchive.load(store)
    store.delete([f"wal/{seg(1, 40)}"])
    archive = walarchive.load(store)
    assert [str(g) for g in archive.gaps(seg(1, 0))] == [seg(1, 40)]
    assert archive.index_note.startswith("rebuilt from a full listing")
    assert [r[:2] for r in stored_runs(store)["1"]] == [[0, 39], [41, 99]]


def test_a_deletion_in_a_large_archive_is_found_within_the_audit_rounds(store, monkeypatch):
    # The audit walks AUDIT_WINDOW segments a call: with 10 a call, 100 segments are all covered in 10 calls.
    monkeypatch.setattr(walrunindex, "AUDIT_WINDOW", 10)
    monkeypatch.setattr(walrunindex, "AUDIT_WINDOW_LISTED", 10)
    monkeypatch.setattr(walrunindex, "RANDOM_PROBES", 0)
    put_segments(store, 1, range(0, 100))
    walarchive.load(store)
    store.delete([f"wal/{seg(1, 57)}"])
    found = []
    for _ in range(11):
        found = walarchive.load(store).gaps(seg(1, 0))
        if found:
            break
    assert [str(g) for g in found] == [seg(1, 57)]


def test_a_late_upload_closes_a_gap_in_the_summary(store):
    put_segments(store, 1, [*range(0, 10), *range(11, 20), *range(300, 310)])
    assert [str(g) for g in walarchive.load(store).gaps(seg(1, 0))] == [seg(1, 10), f"{seg(1, 20)}..{seg(1, 299)} (280 segments)"]
    put_segments(store, 1, [10, 150])      # one closes the short gap, one lands inside the long one
    archive = walarchive.load(store)
    assert archive.index_note == "summary checked and advanced"
    assert [str(g) for g in archive.gaps(seg(1, 0))] == [f"{seg(1, 20)}..{seg(1, 149)} (130 segments)",
                                                          f"{seg(1, 151)}..{seg(1, 299)} (149 segments)"]


def test_retention_deleting_the_oldest_segments_moves_the_front(store):
    put_segments(store, 1, range(0, 500))
    walarchive.load(store)
    store.delete([f"wal/{seg(1, n)}" for n in range(0, 321)])
    archive = walarchive.load(store)
    assert archive.index_note == "summary checked and advanced"
    assert archive.oldest_name == seg(1, 321) and archive.count == 179


def test_the_newest_segment_deleted_is_seen(store):
    put_segments(store, 1, range(0, 50))
    walarchive.load(store)
    store.delete([f"wal/{seg(1, 49)}"])
    archive = walarchive.load(store)
    assert archive.newest_name == seg(1, 48)


def test_a_new_timeline_is_followed_from_its_history(store):
    put_segments(store, 1, range(0, 20))
    walarchive.load(store)
    put_history(store, 2, 1, 19 * 16 * MIB + 100)
    put_segments(store, 2, range(19, 25))
    archive = walarchive.load(store)
    assert archive.index_note == "summary checked and advanced"
    assert archive.timeline_count(2) == 6 and archive.newest_name == seg(2, 24)
    assert 2 in archive.histories and archive.histories[2].parent == 1


def test_a_corrupt_or_foreign_summary_is_rebuilt(store):
    put_segments(store, 1, range(0, 30))
    walarchive.load(store)
    for junk in (b"{not json", json.dumps({"format": 99}).encode(),
                 json.dumps({"format": 1, "segment_size": 16 * MIB, "size_source": "x",
                             "runs": {"1": [[0, 10, 0], [5, 30, 0]]}, "histories": {},
                             "newest_mtime": 0, "wale_after": None}).encode(),
                 json.dumps({"format": 1, "segment_size": 16 * MIB, "size_source": "x",
                             "runs": {"1": [[0, 29, 0]]}, "histories": {},
                             "newest_mtime": "soon", "wale_after": 7, "audit_at": "x"}).encode()):
        store.put(WAL_INDEX_KEY, junk)
        archive = walarchive.load(store)
        assert archive.index_note.startswith("rebuilt from a full listing (stored summary unreadable")
        assert archive.count == 30 and archive.gaps(seg(1, 0)) == []


def test_a_summary_claiming_more_than_is_stored_is_caught(store):
    put_segments(store, 1, range(0, 30))
    walarchive.load(store)
    doc = json.loads(store.get(WAL_INDEX_KEY))
    doc["runs"]["1"][0][1] = 60          # claims 30..60, which were never archived
    store.put(WAL_INDEX_KEY, json.dumps(doc).encode())
    archive = walarchive.load(store)
    assert archive.count == 30 and archive.newest_name == seg(1, 29)


def test_exact_load_lists_everything_and_rewrites_the_summary(store):
    put_segments(store, 1, range(0, 30))
    walarchive.load(store)
    archive = walarchive.load(store, exact=True)
    assert archive.index_note == "rebuilt from a full listing (asked for)"
    assert archive.count == 30


def test_status_reads_the_summary_as_postgresql_archives(cluster_factory, repo_env):
    """Real archiving through wal-push: the first status builds the summary, later ones advance it and see
    every new segment; a segment deleted behind the summary's back is a gap in status and check archive."""
    from tests.support import pg
    from tests.support.restore import primary

    c = primary(cluster_factory, 15, repo_env)

    def next_segment() -> str:
        c.sql("CREATE TABLE IF NOT EXISTS filler (x int); INSERT INTO filler VALUES (1)")
        return c.switch_wal()

    def status() -> dict:
        r = pg.walship(["status", "--json"], pg.server_env(repo_env))
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    c.wait_archived(next_segment())
    first = status()
    assert first["wal"]["read_from"].startswith("rebuilt from a full listing (no summary stored")
    names = [next_segment() for _ in range(3)]
    c.wait_archived(names[-1])
    later = status()
    assert later["wal"]["read_from"] == "summary checked and advanced"
    assert later["wal"]["newest"] == names[-1] and later["wal"]["segments"] == first["wal"]["segments"] + 3

    settings = load_settings({"s3_access_key_id": repo_env.get("AWS_ACCESS_KEY_ID"),
                              "s3_secret_access_key": repo_env.get("AWS_SECRET_ACCESS_KEY")}, env=repo_env)
    store = open_store(repo_env["WALSHIP_REPO"], settings)
    store.delete([f"wal/{names[1]}"])
    store.close()
    gaps = status()["gaps"]
    assert [(g["first"], g["next"]) for g in gaps] == [(names[1], names[2])]
    r = pg.walship(["check", "archive", "--pg", c.conninfo], pg.server_env(repo_env))
    assert r.returncode == 2 and names[1] in r.stdout, r.stdout + r.stderr


def test_wal_archived_on_an_old_timeline_after_a_newer_one_is_a_fork(store):
    """A restored copy still writing timeline 1 after timeline 2 branched off: its new keys sort before
    every key of timeline 2, and the summary still finds them."""
    put_segments(store, 1, range(0, 20))
    put_history(store, 2, 1, 19 * 16 * MIB + 100)
    put_segments(store, 2, range(19, 25))
    assert walarchive.load(store).timelines()[0].flags == ()
    put_segments(store, 1, range(20, 23))
    archive = walarchive.load(store)
    assert archive.index_note == "summary checked and advanced"
    [one, two] = archive.timelines()
    assert [f[0] for f in one.flags] == [] and [f[0] for f in two.flags] == ["FORK"]
    assert one.last == seg(1, 22)


def test_segments_wal_e_archives_during_a_migration_count(store):
    put_segments(store, 1, range(0, 10))
    walarchive.load(store)
    for n in range(10, 15):
        store.put(f"wal_005/{seg(1, n)}.lzo", b"x")
    archive = walarchive.load(store)
    assert archive.index_note == "summary checked and advanced"
    assert archive.count == 15 and archive.gaps(seg(1, 0)) == []
    store.delete([f"wal_005/{seg(1, 12)}.lzo"])
    assert [str(g) for g in walarchive.load(store).gaps(seg(1, 0))] == [seg(1, 12)]
