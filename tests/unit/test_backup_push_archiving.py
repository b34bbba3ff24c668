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


class _Clock:
    """time for walship.backup.push: sleeping advances it."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def time(self) -> float:
        return 1_800_000_000.0 + self.now


class _Store:
    url = "file:///repo"

    def __init__(self, arrives_at: float | None, clock: _Clock):
        self.arrives_at, self.clock = arrives_at, clock

    def exists(self, key: str) -> bool:
        return self.arrives_at is not None and self.clock.now >= self.arrives_at


def _waiting(monkeypatch, archiver) -> _Clock:
    from walship.backup import push
    clock = _Clock()
    monkeypatch.setattr(push, "time", clock)
    monkeypatch.setattr(push.backup_api, "archiver_status", lambda conn: archiver(clock.now))
    return clock


def test_the_wait_for_the_stop_segment_goes_on_while_the_archiver_gets_on(monkeypatch, capsys):
    from walship import logs
    from walship.backup import push
    from walship.config import Settings
    # a backlog drains: one segment every 20 s, the stop segment after 300 s, well past WAL_WAIT_S
    clock = _waiting(monkeypatch, lambda now: status(int(now // 20), 0, now, None))
    logs.setup("backup-push")                      # to stderr, as the command logs
    try:
        push._wait_for_stop_segment(None, _Store(300.0, clock), "000000010000000000000009")
    finally:
        logs.setup("backup-push", Settings(log_destination="none"))
    assert clock.now >= 300.0
    notes = [line for line in capsys.readouterr().err.splitlines() if "still waiting" in line]
    assert len(notes) >= 25 and "pg_stat_archiver: last archived 000000010000000000000004" in notes[-1]


def test_the_wait_fails_when_nothing_is_archived_for_two_minutes(monkeypatch):
    import pytest

    from walship.backup import push
    from walship.errors import WalshipError
    clock = _waiting(monkeypatch, lambda now: status(4, 0, 100.0, None))
    with pytest.raises(WalshipError) as failed:
        push._wait_for_stop_segment(None, _Store(None, clock), "000000010000000000000009")
    assert push.WAL_WAIT_S < clock.now < push.WAL_WAIT_S + 2
    assert "120 s without progress" in str(failed.value) and "the archiver stores nothing there" in str(failed.value)


def test_the_wait_fails_in_seconds_once_archive_command_keeps_failing(monkeypatch):
    import pytest

    from walship.backup import push
    from walship.errors import WalshipError
    clock = _waiting(monkeypatch, lambda now: status(4, int(now), 100.0, 100.0 + now))   # a failure a second
    with pytest.raises(WalshipError) as failed:
        push._wait_for_stop_segment(None, _Store(None, clock), "000000010000000000000009")
    assert clock.now <= 4
    assert "archive_command is failing" in str(failed.value) and "fix archive_command" in str(failed.value)


def _preflight(monkeypatch, archiver, store_has) -> tuple[_Clock, Exception | None]:
    from walship.backup import push
    clock = _waiting(monkeypatch, archiver)
    monkeypatch.setattr(push.backup_api, "write_wal_record", lambda conn: True)
    monkeypatch.setattr(push.backup_api, "switch_wal", lambda conn: "000000010000000000000009")

    class Store(_Store):
        def exists(self, key: str) -> bool:
            return store_has(key, clock.now)

    try:
        push._check_archiving(None, Store(None, clock), "this server")
    except Exception as exc:  # noqa: BLE001 - the test looks at it
        return clock, exc
    return clock, None


def test_a_backlog_before_the_switched_segment_is_no_failure_when_it_reaches_the_repository(monkeypatch):
    # the archiver stores one older segment a second; the switched one would come much later
    clock, error = _preflight(monkeypatch, lambda now: status(4 + int(now), 0, now, None),
                              lambda key, now: key == "wal/000000010000000000000004")
    assert error is None and clock.now < 3


def test_an_archiver_that_stores_elsewhere_fails_the_preflight_in_20_seconds(monkeypatch):
    from walship.backup import push
    clock, error = _preflight(monkeypatch, lambda now: status(4 + int(now), 0, now, None), lambda key, now: False)
    assert error is not None and "after a forced segment switch" in str(error) and "nothing was read" in str(error)
    assert push.PREFLIGHT_WAIT_S <= clock.now < push.PREFLIGHT_WAIT_S + 1


def test_a_role_that_may_not_switch_segments_is_checked_on_what_was_archived(monkeypatch, capsys):
    import pytest

    from walship import logs
    from walship.backup import push
    from walship.errors import PostgresError, WalshipError

    def refused(conn):
        raise PostgresError("the primary refused pg_switch_wal(): permission denied")

    monkeypatch.setattr(push.backup_api, "write_wal_record", lambda conn: False)
    monkeypatch.setattr(push.backup_api, "switch_wal", refused)
    stored = {"wal/000000010000000000000004"}

    class Store(_Store):
        def exists(self, key: str) -> bool:
            return key in stored

    clock = _Clock()
    monkeypatch.setattr(push, "time", clock)
    monkeypatch.setattr(push.backup_api, "archiver_status", lambda conn: status(4, 0, 100.0, None))
    logs.setup("backup-push")
    try:
        push._check_archiving(None, Store(None, clock), "this server")       # archived: a warning, no failure
    finally:
        from walship.config import Settings
        logs.setup("backup-push", Settings(log_destination="none"))
    assert "GRANT EXECUTE ON FUNCTION pg_switch_wal()" in capsys.readouterr().err
    monkeypatch.setattr(push.backup_api, "archiver_status", lambda conn: status(4, 5, 100.0, 200.0))
    with pytest.raises(WalshipError, match="archive_command is failing"):
        push._check_archiving(None, Store(None, clock), "this server")
    stored.clear()                                 # archiving somewhere else
    monkeypatch.setattr(push.backup_api, "archiver_status", lambda conn: status(4, 0, 100.0, None))
    with pytest.raises(WalshipError, match="the archiver stores nothing there"):
        push._check_archiving(None, Store(None, clock), "this server")
