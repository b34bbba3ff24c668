"""wal-receive's stored pieces and its plugin check, without a server."""

from __future__ import annotations

from walship import pipeline
from walship.monitoring.plugin import CRITICAL, OK, WARNING
from walship.monitoring.receive import check_receive
from walship.receive import partial
from walship.storage.local import LocalStore

SEG = "000000010000000000000007"
SIZE = 1 << 20


def _put(store, start: int, data: bytes) -> None:
    store.put(partial.piece_key(SEG, start, start + len(data)), pipeline.pack(data, "zstd", 1, name=SEG), if_absent=True)


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
    key = partial.piece_key(SEG, 0, 16)
    assert partial.segment_of_piece(key) == SEG
    assert partial.segment_prefix(SEG) < key < partial.after_segment_key(SEG) < partial.segment_prefix(
        "000000010000000000000008")


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
