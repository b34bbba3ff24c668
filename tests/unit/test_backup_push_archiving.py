"""When backup-push stops waiting for WAL: archive_command keeps failing, by pg_stat_archiver."""

from walship.backup.push import _archiver_stuck
from walship.pg.backup_api import ArchiverStatus


def status(archived: int, failed: int, last_ok: float | None, last_failure: float | None) -> ArchiverStatus:
    return ArchiverStatus("on", archived, "000000010000000000000004" if archived else None, last_ok, failed,
                          "000000010000000000000005" if failed else None, last_failure)


def test_three_failures_in_a_row_or_failing_before_and_again_is_stuck():
    healthy = status(4, 0, 100.0, None)
    assert not _archiver_stuck(healthy, status(5, 0, 101.0, None))
    assert not _archiver_stuck(healthy, status(4, 2, 100.0, 102.0))          # could still be a hiccup
    assert _archiver_stuck(healthy, status(4, 3, 100.0, 103.0))
    failing = status(4, 3, 100.0, 103.0)
    assert not _archiver_stuck(failing, failing)                              # nothing new yet
    assert _archiver_stuck(failing, status(4, 4, 100.0, 164.0))


def test_a_success_after_the_failures_is_not_stuck():
    assert not _archiver_stuck(status(4, 0, 100.0, None), status(5, 3, 110.0, 103.0))
    assert not _archiver_stuck(status(4, 3, 100.0, 103.0), status(5, 4, 170.0, 164.0))
