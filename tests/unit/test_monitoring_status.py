"""`walship status` on a synthetic repository: what a person reads, and the same in JSON."""

import json

import pytest

from walship import pipeline
from walship.backup.catalog import Marker, write_marker
from walship.config import Settings
from walship.errors import PostgresError
from walship.monitoring import pgfacts, status
from walship.monitoring.walarchive import utc
from walship.repo import record
from walship.repo.catalog import BackupInfo
from walship.storage import open_store

NOW = 1_800_000_000.0


def seg(tli, n):
    return f"{tli:08X}00000000{n:08X}"


@pytest.fixture(autouse=True)
def no_server(monkeypatch):
    def unreachable(conninfo):
        raise PostgresError("cannot query PostgreSQL: no server here")
    monkeypatch.setattr(pgfacts, "collect", unreachable)


def repository(tmp_path, segments, histories=(), backups=()):
    store = open_store(f"file://{tmp_path}/repo", Settings())
    rec = record.RepositoryRecord("id", "7", 15, 16 << 20, "2026-12-01T00:00:00Z", "link")
    store.put(record.RECORD_KEY, rec.to_json())
    for name in segments:
        store.put(f"wal/{name}", b"x")
    for tli, text in histories:
        store.put(f"wal/{tli:08X}.history", pipeline.pack(text.encode(), "none"))
    for b in backups:
        write_marker(store, b.name, Marker(b, 0, 0, "none", {}))
    return store


def backup(name, start, stop, stop_lsn, timeline=1):
    return BackupInfo(name=name, start_time=NOW - 3600, stop_time=NOW - 3500, start_lsn="0/2000028",
                      stop_lsn=stop_lsn, timeline=timeline, start_wal=start, stop_wal=stop, pg_version=150000,
                      system_identifier="7", size=1, stored_size=1, duration_s=100.0)


def test_status_shows_timelines_the_window_across_the_switch_and_a_fork(tmp_path):
    b = backup("base_1", seg(1, 2), seg(1, 3), "0/3000100")
    segments = [seg(1, n) for n in range(2, 9)] + [seg(2, n) for n in range(5, 7)]
    store = repository(tmp_path, segments, [(2, "1\t0/5000060\tno recovery target specified\n")], [b])
    report = status.gather(Settings(), store, None, NOW)

    assert [(t["timeline"], t["parent"], t["branch_lsn"]) for t in report["timelines"]] == \
        [(1, None, None), (2, 1, "0/5000060")]
    assert [f["kind"] for f in report["timelines"][1]["flags"]] == ["FORK"]
    assert [(w["timeline"], w["start_lsn"], w["end_wal"]) for w in report["windows"]] == \
        [(1, "0/3000100", seg(1, 8)), (2, "0/5000060", seg(2, 6))]
    assert report["window"]["timeline"] == 2 and report["window"]["start_backup"] == "base_1"
    assert report["gaps"] == [] and report["wal"]["segment_size_source"] == "repository record"
    assert json.loads(status.render_json(report))["windows"] == report["windows"]

    text = status.render_text(report)
    assert "timelines     2" in text
    assert "  2: from timeline 1 at 0/5000060 (history archived " in text
    assert "     FORK: timeline 1 has WAL archived after timeline 2 branched off it at 0/5000060" in text
    assert "     what to do: find the server still writing timeline 1" in text
    assert f"  timeline 1: {utc(NOW - 3500)} (backup base_1 consistent at 0/3000100) .. 0/9000000" in text
    assert "  timeline 2: the branch at 0/5000060 (backup base_1 via timeline 1 -> 2) .. 0/7000000" in text
    assert "gaps          none" in text


def test_a_backup_whose_own_wal_is_gone_is_named_and_nothing_is_recoverable(tmp_path):
    b = backup("base_1", seg(1, 2), seg(1, 3), "0/3000100")
    store = repository(tmp_path, [seg(1, 2), seg(1, 4)], backups=[b])
    report = status.gather(Settings(), store, None, NOW)
    assert report["windows"] == [] and report["window"] is None
    assert report["unusable_backups"] == [{"backup": "base_1", "missing": seg(1, 3)}]
    text = status.render_text(report)
    assert "recoverable   NOTHING: no base backup with its WAL archived after it" in text
    assert f"  backup base_1 cannot be restored: its WAL segment {seg(1, 3)} is missing" in text
    assert f"  missing {seg(1, 3)}, next archived {seg(1, 4)}" in text
