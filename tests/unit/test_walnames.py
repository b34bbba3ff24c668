import pytest
from hypothesis import given
from hypothesis import strategies as st

from walship.pg import walnames as w


def test_segment_name_round_trip_and_next_crosses_log_boundary():
    seg = w.Segment.parse("0000000100000000000000FF")
    assert seg.next().name() == "000000010000000100000000"
    assert w.Segment.parse("000000010000000100000000").number == 256


def test_segment_names_depend_on_segment_size():
    # 64 MiB segments: 64 per log
    assert w.Segment.parse("00000001000000000000003F", 64 << 20).next().name(64 << 20) == "000000010000000100000000"
    with pytest.raises(w.InvalidWalName):
        w.Segment.parse("000000010000000000000040", 64 << 20)


@pytest.mark.parametrize("name", ["000000010000000000000001", "00000002.history",
                                  "000000010000000000000002.00000028.backup",
                                  "000000010000000000000003.partial"])
def test_archivable_names(name):
    assert w.check_name(name) == name


@pytest.mark.parametrize("name", ["", "../etc/passwd", "00000001000000000000000", "0000000100000000000000zz",
                                  "000000010000000000000001.gz", "00000002.historyx"])
def test_invalid_names_are_refused(name):
    with pytest.raises(w.InvalidWalName):
        w.check_name(name)


def test_lsn_parse_and_format():
    assert w.parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert w.format_lsn(w.parse_lsn("0/3000028")) == "0/3000028"
    assert w.segment_name_of(w.parse_lsn("0/3000028"), 1) == "000000010000000000000003"


def test_history_file_parsing():
    text = "1\t0/3000000\tno recovery target specified\n\n2\t0/5000A0\tbefore 2026-01-01\n"
    assert w.parse_history(text) == [(1, 0x3000000, "no recovery target specified"), (2, 0x5000A0, "before 2026-01-01")]


@given(st.integers(min_value=1, max_value=0xFFFFFFFF), st.integers(min_value=0, max_value=(1 << 40) - 1))
def test_name_parse_inverts_name(timeline, number):
    seg = w.Segment(timeline, number)
    assert w.Segment.parse(seg.name()) == seg


@given(st.text(max_size=40))
def test_check_name_never_crashes(text):
    try:
        w.check_name(text)
    except w.InvalidWalName:
        pass


def test_the_segment_before_a_stop_point_on_a_boundary_is_the_previous_one():
    from walship.pg.walnames import segment_name_before
    assert segment_name_before(w.parse_lsn("0/3000000"), 1) == "000000010000000000000002"
    assert segment_name_before(w.parse_lsn("0/3000028"), 1) == "000000010000000000000003"
    assert segment_name_before(w.parse_lsn("1/0"), 2) == "0000000200000000000000FF"


def test_segments_between_two_names_cross_a_log_boundary():
    from walship.pg.walnames import segments_between
    assert segments_between("0000000300000000000000FE", "000000030000000100000001") == [
        "0000000300000000000000FE", "0000000300000000000000FF", "000000030000000100000000",
        "000000030000000100000001"]
    assert segments_between("000000010000000000000004", "000000010000000000000004") == ["000000010000000000000004"]


def test_timeline_and_position_of_every_kind_of_name():
    from walship.pg.walnames import position_key, timeline_of
    assert [timeline_of(n) for n in ("0000000A0000000000000003", "0000000A0000000000000003.partial",
                                     "0000000A0000000000000003.00000028.backup", "0000000A.history")] == [10] * 4
    assert position_key("000000020000000100000003") > position_key("0000000300000000000000FF")
    with pytest.raises(w.InvalidWalName):
        timeline_of("RECOVERYXLOG")


def test_the_name_examples_hold():
    import doctest

    from walship.pg import walnames
    failed, tried = doctest.testmod(walnames)
    assert tried > 0 and failed == 0
