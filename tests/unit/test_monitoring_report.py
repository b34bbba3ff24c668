import os

import pytest

from walship.archive import report
from walship.archive.push import PushResult
from walship.archive.report import after_push as archive_result
from walship.backup import report as backup_report
from walship.backup.report import after_push as backup_result
from walship.config import Settings
from walship.errors import StoreError
from walship.repo.catalog import BackupInfo
from walship.reporting import icinga, metrics

SEG = "000000010000000000000003"


@pytest.fixture
def wal_dir(tmp_path):
    status = tmp_path / "pg_wal" / "archive_status"
    status.mkdir(parents=True)
    for n in (3, 4, 5):
        (status / f"00000001000000000000000{n}.ready").touch()
    return tmp_path / "pg_wal"


@pytest.fixture
def sent(monkeypatch):
    calls = []
    monkeypatch.setattr(icinga, "submit", lambda s, service, state, output, perfdata: calls.append(
        (service, state, output, perfdata)))
    return calls


def settings(tmp_path, **kw):
    return Settings(icinga_url="https://icinga.invalid:5665", metrics_file=str(tmp_path / "walship.prom"), **kw)


def pushed(*names):
    return [PushResult(n, 16 << 20, 1 << 20, 0.25) for n in names]


def test_success_is_reported_once_per_interval(tmp_path, wal_dir, sent):
    s = settings(tmp_path, icinga_archive_ok_interval=300)
    report.archive(s, True, pushed(SEG, "000000010000000000000004"), None, str(wal_dir / SEG))
    report.archive(s, True, pushed("000000010000000000000004"), None, str(wal_dir / "000000010000000000000004"))
    assert len(sent) == 1
    service, state, output, perfdata = sent[0]
    assert (service, state) == ("PostgreSQL WAL archiving to S3", 0)
    assert output == f"OK: archived {SEG} and 1 more: 32.0 MiB in 0.2s; 2 WAL files waiting (.ready)"
    assert perfdata == ["duration=0.25s;;;0", "bytes=33554432B;;;0", "segments=2;;;0", "backlog=2;;;0"]


def test_failure_is_reported_every_time_and_the_recovery_at_once(tmp_path, wal_dir, sent):
    s = settings(tmp_path, icinga_archive_ok_interval=300)
    report.archive(s, True, pushed(SEG), None, str(wal_dir / SEG))
    error = StoreError("cannot reach s3://bucket/pg: connection refused")
    report.archive(s, False, [], error, str(wal_dir / SEG))
    report.archive(s, False, [], error, str(wal_dir / SEG))
    report.archive(s, True, pushed(SEG), None, str(wal_dir / SEG))
    assert [state for _, state, _, _ in sent] == [0, 2, 2, 0]
    assert sent[1][2] == (f"CRITICAL: wal-push {SEG} failed: cannot reach s3://bucket/pg: connection refused; "
                          "3 WAL files waiting (.ready)")


def test_failure_to_report_is_a_warning_and_retried_a_minute_later(tmp_path, wal_dir, capsys, monkeypatch):
    from walship import logs
    s = Settings(icinga_url="https://127.0.0.1:9", icinga_archive_ok_interval=300)
    logs.setup("wal-push", s)
    archive_result(s, ok=True, results=pushed(SEG), segment=str(wal_dir / SEG))
    err = capsys.readouterr().err
    assert "WARNING: could not report to icinga: cannot reach Icinga at https://127.0.0.1:9" in err
    # the next wal-push does not wait for the unreachable Icinga again ...
    archive_result(s, ok=True, results=pushed(SEG), segment=str(wal_dir / SEG))
    assert capsys.readouterr().err == ""
    # ... but one a minute later does
    now = report.time.time()
    monkeypatch.setattr(report.time, "time", lambda: now + 61)
    archive_result(s, ok=True, results=pushed(SEG), segment=str(wal_dir / SEG))
    assert "could not report to icinga" in capsys.readouterr().err


def test_metrics_file_keeps_both_commands_gauges(tmp_path, wal_dir, sent):
    s = settings(tmp_path)
    report.archive(s, True, pushed(SEG), None, str(wal_dir / SEG))
    report.archive(s, False, [], StoreError("down"), str(wal_dir / SEG))
    b = BackupInfo("base_1", 1000.0, 1300.0, "0/2000028", "0/3000100", 1, SEG, SEG, 150000, "1", 100, 40, 300.0)
    backup_report.after_push(s, True, b, None, 300.0)
    values = metrics.read(s.metrics_file)
    assert values[f'walship_last_archived_info{{segment="{SEG}"}}'] == 1
    assert values["walship_archive_failures_total"] == 1
    assert values["walship_archive_backlog_segments"] == 3
    assert values["walship_last_backup_success_timestamp_seconds"] == 1300
    assert values["walship_last_backup_size_bytes"] == 100
    assert values["walship_backup_failures_total"] == 0
    text = open(s.metrics_file).read()
    assert "# TYPE walship_archive_failures_total counter" in text
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_backup_results(tmp_path, sent):
    s = settings(tmp_path)
    b = BackupInfo("base_000000010000000000000002_00000028", 1000.0, 1312.0, "0/2000028", "0/3000100", 1,
                   SEG, SEG, 150000, "1", 3 << 30, 1 << 30, 312.0)
    backup_result(s, ok=True, backup=b, duration_s=312.0)
    backup_result(s, ok=False, error=StoreError("cannot reach s3://b/p"), duration_s=12.0)
    assert sent[0][1:] == (0, "OK: base backup base_000000010000000000000002_00000028 pushed: 3.0 GiB "
                              "(stored 1.0 GiB) in 5m",
                           ["duration=312s;;;0", "size=3221225472B;;;0", "stored=1073741824B;;;0"])
    assert sent[1][1:3] == (2, "CRITICAL: base backup failed after 12s: cannot reach s3://b/p")
    assert metrics.read(s.metrics_file)["walship_backup_failures_total"] == 1


def test_a_backup_with_bad_pages_is_a_warning_result(tmp_path, sent):
    from dataclasses import replace
    s = settings(tmp_path)
    b = BackupInfo("base_x", 1000.0, 1312.0, "0/2000028", "0/3000100", 1, SEG, SEG, 150000, "1", 3 << 30, 1 << 30,
                   312.0, page_checksum_failures=3)
    backup_result(s, ok=True, backup=b, duration_s=312.0)
    state, output, perfdata = sent[0][1:]
    assert state == 1 and output.startswith("WARNING: base backup base_x pushed") and "3 pages whose checksum" in output
    assert "bad_pages=3;1;;0" in perfdata
    assert metrics.read(s.metrics_file)["walship_last_backup_bad_pages"] == 3
    backup_result(s, ok=True, backup=replace(b, page_checksum_failures=0), duration_s=312.0)
    assert sent[1][1] == 0
