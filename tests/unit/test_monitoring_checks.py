from walship.monitoring.checks import ArchiveThresholds, check_archive, check_backup
from walship.monitoring.pgfacts import ArchiverFacts
from walship.monitoring.walarchive import Gap, WalArchive
from walship.repo.catalog import BackupInfo
from walship.reporting.plugin import CRITICAL, OK, UNKNOWN, WARNING

NOW = 1_800_000_000.0
HOUR = 3600.0


def backup(name="base_000000010000000000000002_00000028", stop_ago_h=1.0):
    stop = NOW - stop_ago_h * HOUR
    return BackupInfo(name=name, start_time=stop - 300, stop_time=stop, start_lsn="0/2000028",
                      stop_lsn="0/3000100", timeline=1, start_wal="000000010000000000000002",
                      stop_wal="000000010000000000000003", pg_version=150000, system_identifier="1",
                      size=50 << 20, stored_size=10 << 20, duration_s=300)


def test_fresh_backup_is_ok_with_perfdata():
    r = check_backup([backup(stop_ago_h=30), backup("b2", stop_ago_h=2)], "s3://b/p", 26 * HOUR, 50 * HOUR, NOW)
    assert r.state == OK
    assert r.line().startswith("OK: newest base backup b2 finished 2h ago")
    assert "age=7200s;93600;180000;0" in r.line() and "size=52428800B" in r.line() and "backups=2" in r.line()


def test_old_backup_warns_then_goes_critical():
    assert check_backup([backup(stop_ago_h=27)], "r", 26 * HOUR, 50 * HOUR, NOW).state == WARNING
    r = check_backup([backup(stop_ago_h=51)], "r", 26 * HOUR, 50 * HOUR, NOW)
    assert r.state == CRITICAL and "critical at 2d2h" in r.text


def test_missing_backup_is_critical():
    r = check_backup([], "s3://bucket/pg", 26 * HOUR, 50 * HOUR, NOW)
    assert r.line().startswith("CRITICAL: no complete base backup in s3://bucket/pg |")


def facts(**kw):
    base = dict(server_version=150000, archive_mode="on", wal_segment_size=16 << 20, in_recovery=False,
                archived_count=10, last_archived_wal="00000001000000000000000A", last_archived_time=NOW - 60,
                failed_count=0, last_failed_wal=None, last_failed_time=None, ready_count=0,
                oldest_ready_age_s=None, wal_size=64 << 20, now=NOW)
    base.update(kw)
    return ArchiverFacts(**base)


def archive(newest_ago=60.0):
    return WalArchive(16 << 20, {1: list(range(2, 11))}, "00000001000000000000000A", NOW - newest_ago)


LIMITS = ArchiveThresholds(backlog_warning=10, backlog_critical=100, age_warning_s=2 * HOUR, age_critical_s=6 * HOUR)


def test_archive_ok():
    r = check_archive(facts(), archive(), [], "000000010000000000000002", None, LIMITS, NOW)
    assert r.state == OK
    assert r.output == ("OK: last archived 00000001000000000000000A 1m ago, 0 waiting, pg_wal 64.0 MiB, "
                        "archive continuous since 000000010000000000000002")
    assert "backlog=0;10;100;0" in r.line() and "missing_segments=0;;1;0" in r.line()


def test_failing_archiver_is_critical_even_when_the_repository_is_unreachable():
    f = facts(failed_count=7, last_failed_wal="00000001000000000000000B", last_failed_time=NOW - 30,
              ready_count=3, oldest_ready_age_s=600)
    r = check_archive(f, None, [], None, "cannot reach s3://b/p", LIMITS, NOW)
    assert r.state == CRITICAL
    assert r.text.startswith("archive_command failing: last failure 30s ago on 00000001000000000000000B "
                             "(7 failures since stats reset); 3 WAL files waiting to be archived, oldest waiting 10m")
    assert "repository: cannot reach s3://b/p" in r.text


def test_old_failure_followed_by_success_is_not_failing():
    f = facts(failed_count=2, last_failed_wal="000000010000000000000005", last_failed_time=NOW - 3000)
    assert check_archive(f, archive(), [], None, None, LIMITS, NOW).state == OK


def test_backlog_thresholds():
    assert check_archive(facts(ready_count=10), archive(), [], None, None, LIMITS, NOW).state == WARNING
    assert check_archive(facts(ready_count=100), archive(), [], None, None, LIMITS, NOW).state == CRITICAL


def test_gap_is_critical_and_named():
    gaps = [Gap("000000010000000000000005", "000000010000000000000005", 1)]
    r = check_archive(facts(), archive(), gaps, "000000010000000000000002", None, LIMITS, NOW)
    assert r.state == CRITICAL
    assert r.text == "1 WAL segment missing since 000000010000000000000002: 000000010000000000000005"
    assert "missing_segments=1;;1;0" in r.line()


def test_newest_archived_segment_age():
    assert check_archive(facts(), archive(3 * HOUR), [], None, None, LIMITS, NOW).state == WARNING
    assert check_archive(facts(), archive(7 * HOUR), [], None, None, LIMITS, NOW).state == CRITICAL
    assert check_archive(facts(), archive(7 * HOUR), [], None, None, ArchiveThresholds(), NOW).state == OK


def test_unreadable_repository_alone_is_unknown():
    r = check_archive(facts(), None, [], None, "cannot reach s3://b/p", LIMITS, NOW)
    assert r.state == UNKNOWN and r.text == "repository: cannot reach s3://b/p"


def test_archive_mode_off_is_critical_but_a_standby_is_fine():
    assert check_archive(facts(archive_mode="off"), archive(), [], None, None, LIMITS, NOW).state == CRITICAL
    r = check_archive(facts(in_recovery=True), archive(), [], None, None, LIMITS, NOW)
    assert r.state == OK and "primary archives" in r.text


def test_bad_pages_in_the_newest_backup_warn_even_when_it_is_fresh():
    from dataclasses import replace
    r = check_backup([replace(backup(stop_ago_h=1), page_checksum_failures=2)], "r", 26 * HOUR, 50 * HOUR, NOW)
    assert r.state == WARNING and r.text.startswith("2 pages with a wrong checksum in the newest base backup")
    assert "bad_pages=2;1;;0" in r.line()
    r = check_backup([replace(backup(stop_ago_h=51), page_checksum_failures=1)], "r", 26 * HOUR, 50 * HOUR, NOW)
    assert r.state == CRITICAL                     # too old outranks it
    r = check_backup([replace(backup(), page_checksum_failures=0)], "r", 26 * HOUR, 50 * HOUR, NOW)
    assert r.state == OK and "bad_pages=0;1;;0" in r.line()
