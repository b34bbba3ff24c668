"""Retention: which backups go, and exactly which WAL no kept backup needs."""

from __future__ import annotations

import pytest

from walship.backup import retention
from walship.errors import ConfigError
from walship.repo.catalog import BackupInfo
from walship.repo.walindex import obsolete_wal


def backup(name: str, start_wal: str, stop_time: float) -> BackupInfo:
    return BackupInfo(name=name, start_time=stop_time - 10, stop_time=stop_time, start_lsn="0/0", stop_lsn="0/0",
                      timeline=int(start_wal[:8], 16), start_wal=start_wal, stop_wal=start_wal, pg_version=150000,
                      system_identifier="1", size=1, stored_size=1, duration_s=10)


B1 = backup("b1", "000000010000000000000003", 1000)
B2 = backup("b2", "000000010000000000000007", 2000)
B3 = backup("b3", "00000002000000000000000A", 3000)


def test_retain_keeps_the_newest():
    plan = retention.choose([B1, B2, B3], retain=1)
    assert (plan.delete, plan.keep) == ([B1, B2], [B3])
    assert retention.choose([B1, B2, B3], retain=5).delete == []


def test_before_a_name_keeps_that_backup_and_before_a_time_never_deletes_the_newest():
    assert retention.choose([B1, B2, B3], before="b2").delete == [B1]
    assert retention.choose([B1, B2, B3], before="1970-01-01T00:40:00Z").delete == [B1, B2]
    assert retention.choose([B1, B2, B3], before="2100-01-01").keep == [B3]


@pytest.mark.parametrize("kwargs", [{}, {"retain": 0}, {"retain": 1, "before": "b1"}, {"before": "yesterday"}])
def test_unclear_requests_are_refused(kwargs):
    with pytest.raises(ConfigError):
        retention.choose([B1, B2], **kwargs)


def test_wal_before_the_oldest_kept_start_goes_on_every_timeline_and_history_stays():
    names = ["000000010000000000000009", "00000001000000000000000A", "00000002000000000000000B",
             "000000010000000000000009.partial", "000000010000000000000009.00000028.backup",
             "00000002.history", "000000020000000100000000"]
    assert obsolete_wal(names, [backup("kept", "00000002000000000000000A", 0)]) == [
        "000000010000000000000009", "000000010000000000000009.partial", "000000010000000000000009.00000028.backup"]
