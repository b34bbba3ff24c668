"""wal-receive's stored pieces and its plugin check, without a server."""

from __future__ import annotations

from walship import pipeline
from walship.config import Settings
from walship.monitoring.receive import check_receive
from walship.receive import partial
from walship.receive.report import ReceiveState, Reporter, receive_result
from walship.repo import layout
from walship.reporting.plugin import CRITICAL, OK, WARNING
from walship.storage.local import LocalStore

SEG = "000000010000000000000007"
SIZE = 1 << 20


def _put(store, start: int, data: bytes) -> None:
    store.put(layout.received_piece_key(SEG, start, start + len(data)), pipeline.pack(data, "zstd", 1, name=SEG), if_absent=True)


def test_pieces_reassemble_to_the_received_bytes_zero_filled_to_the_segment_size(tmp_path):
    store = LocalStore(str(tmp_path / "repo"))
    _put(store, 0, b"a" * 100)
    _put(store, 100, b"b" * 50)
    _put(store, 150, b"c" * 10)
    data, received = partial.assemble(store, SEG, SIZE)
    assert received == 160
    assert data == b"a" * 100 + b"b" * 50 + b"c" * 10 + bytes(SIZE - 160)


def test_a_hole_ends_the_reassembly_and_no_first_piece_means_no_partial(tmp_path):
    store = LocalStore(str(tmp_path / "repo"))
    _put(store, 100, b"b" * 50)
    assert partial.assemble(store, SEG, SIZE) is None
    _put(store, 0, b"a" * 90)                       # 90..100 never stored: what follows cannot be replayed
    data, received = partial.assemble(store, SEG, SIZE)
    assert received == 90 and data[90:160] == bytes(70)
    assert partial.contiguous_end(partial.pieces(store, SEG)) == 90


def test_overlapping_pieces_after_a_restart_reassemble_once(tmp_path):
    store = LocalStore(str(tmp_path / "repo"))
    _put(store, 0, b"a" * 100)
    _put(store, 40, b"a" * 60 + b"b" * 20)          # re-sent from an earlier point, the same bytes
    data, received = partial.assemble(store, SEG, SIZE)
    assert received == 120 and data[:120] == b"a" * 100 + b"b" * 20


def test_piece_keys_sort_after_their_segment_and_before_the_next():
    key = layout.received_piece_key(SEG, 0, 16)
    assert layout.received_piece_of_key(key)[0] == SEG
    assert (layout.received_segment_prefix(SEG) < key < layout.after_received_segment_key(SEG)
            < layout.received_segment_prefix("000000010000000000000008"))


LIMITS = dict(lag_warning=16 << 20, lag_critical=256 << 20, age_warning_s=60, age_critical_s=300,
              application_name="walship")


def test_check_receive_states():
    assert check_receive(None, None, 1000.0, **LIMITS).state == CRITICAL
    ok = check_receive(("streaming", "sync", 0, 0.001), 990.0, 1000.0, **LIMITS)
    assert ok.state == OK and "streaming (sync)" in ok.line() and "lag_bytes=0B" in ok.line()
    assert check_receive(("streaming", "async", 20 << 20, 3.0), 990.0, 1000.0, **LIMITS).state == WARNING
    assert check_receive(("streaming", "async", 300 << 20, 3.0), 990.0, 1000.0, **LIMITS).state == CRITICAL
    # behind and nothing stored for 10 minutes: the repository is not taking the WAL
    assert check_receive(("streaming", "async", 1 << 20, 3.0), 400.0, 1000.0, **LIMITS).state == CRITICAL
    # an idle server: an old last store is no problem without lag
    assert check_receive(("streaming", "async", 0, None), 0.0, 1000.0, **LIMITS).state == OK


# --- wal-receive's passive result -------------------------------------------------------------------------------
def _state(**kw) -> ReceiveState:
    base = dict(connected=True, synchronous=True, lag_bytes=0, last_store_age_s=2.0, spool_bytes=4096,
                spool_full=False, error=None)
    return ReceiveState(**{**base, **kw})


def test_the_passive_result_names_what_is_wrong():
    ok = receive_result(_state())
    assert ok.state == OK and ok.output == "OK: wal-receive streaming (synchronous), repository 0 B behind, " \
                                          "last stored 2s ago"
    assert "lag_bytes=0B;16777216;268435456;0" in ok.line()
    down = receive_result(_state(connected=False, error="the replication connection ended: closed"))
    assert down.state == CRITICAL and "not connected to the server: the replication connection ended" in down.output
    refused = receive_result(_state(error="S3 answered 403 AccessDenied", spool_bytes=3 << 20))
    assert refused.state == CRITICAL
    assert "the repository takes nothing: S3 answered 403 AccessDenied; 3.0 MiB wait in the spool and commits " \
           "wait (synchronous)" in refused.output
    assert receive_result(_state(spool_full=True)).state == CRITICAL
    assert receive_result(_state(lag_bytes=20 << 20, synchronous=False)).state == WARNING
    # behind and nothing stored for ten minutes; idle (no lag), an old store is no problem
    assert receive_result(_state(lag_bytes=1 << 20, last_store_age_s=600)).state == CRITICAL
    assert receive_result(_state(lag_bytes=0, last_store_age_s=600)).state == OK


def test_a_change_of_state_is_due_at_once_an_unchanged_ok_once_per_interval():
    reporter = Reporter(Settings(icinga_url="https://icinga.invalid:5665", icinga_receive_ok_interval=300))
    ok, critical = receive_result(_state()), receive_result(_state(connected=False))
    assert reporter.due(ok, 1000.0)                          # nothing sent yet
    reporter.last_state, reporter.last_sent = OK, 1000.0
    assert not reporter.due(ok, 1299.0) and reporter.due(ok, 1300.0)
    assert reporter.due(critical, 1001.0)                    # a failure: at once
    reporter.last_state, reporter.last_sent = CRITICAL, 1001.0
    assert not reporter.due(critical, 1030.0) and reporter.due(critical, 1061.0)   # repeated once a minute
    assert reporter.due(ok, 1002.0)                          # the recovery: at once


def test_an_icinga_that_does_not_answer_never_holds_up_the_receive_loop():
    import socket
    import time

    from walship.reporting import icinga
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)                # accepts connections into the backlog, never answers the TLS handshake
    try:
        reporter = Reporter(Settings(icinga_url=f"https://127.0.0.1:{silent.getsockname()[1]}",
                                     icinga_host="pg"))
        started = time.monotonic()
        for i in range(5):
            assert reporter.offer(_state(connected=i % 2 == 0), now=float(i)) is not None
        assert time.monotonic() - started < icinga.CONNECT_TIMEOUT_S / 2
    finally:
        silent.close()
