"""The summary of WAL runs on its own: merging segments into runs, and its stored form."""

import random

import pytest

from walship.repo.walrunindex import RunIndex, runs_of
from walship.storage import ObjectInfo

MIB = 1 << 20


def seg(tli, n):
    return f"{tli:08X}{n // 256:08X}{n % 256:08X}"


def add(index, tli, n, mtime=1.0):
    index.add(ObjectInfo(f"wal/{seg(tli, n)}", 1, mtime), seg(tli, n))


def test_segments_in_any_order_make_the_same_runs_as_sorting_them():
    numbers = [n for n in range(0, 600) if n % 97 not in (3, 4) and n != 300]
    shuffled = numbers[:]
    random.Random(7).shuffle(shuffled)
    index = RunIndex(16 * MIB, "test")
    for n in shuffled:
        add(index, 1, n)
    assert [tuple(r[:2]) for r in index.runs[1]] == runs_of(numbers)
    assert index.count() == len(numbers)


def test_a_segment_that_joins_two_runs_makes_one_and_keeps_the_later_end_time():
    index = RunIndex(16 * MIB, "test")
    for n, t in [(1, 1.0), (2, 2.0), (4, 4.0), (5, 5.0)]:
        add(index, 1, n, t)
    add(index, 1, 3, 3.0)
    assert index.runs[1] == [[1, 5, 5.0]]
    assert index.newest_mtime == 5.0


def test_names_this_segment_size_cannot_have_and_other_files_are_left_out():
    index = RunIndex(1 << 30, "test")          # 1 GiB segments: 4 per log
    index.add(ObjectInfo("wal/000000010000000000000007", 1, 1.0), "000000010000000000000007")
    index.add(ObjectInfo("wal/000000010000000000000002.00000028.backup", 1, 1.0),
              "000000010000000000000002.00000028.backup")
    index.add(ObjectInfo("wal/00000002.history", 1, 9.0), "00000002.history")
    assert index.runs == {} and index.histories == {2: ("wal/00000002.history", 9.0)}


def test_the_stored_form_reads_back():
    index = RunIndex(16 * MIB, "repository record")
    for n in [*range(0, 10), *range(20, 25)]:
        add(index, 1, n, float(n))
    add(index, 3, 7, 70.0)
    index.histories[3] = ("wal/00000003.history", 5.0)
    index.wale_after, index.audit_at = "wal_005/000000010000000000000001.lzo", (1, 4)
    back = RunIndex.from_json(index.to_json())
    assert (back.runs, back.histories, back.newest_mtime, back.wale_after, back.audit_at) == \
        (index.runs, index.histories, 70.0, index.wale_after, (1, 4))


@pytest.mark.parametrize("text", [b"", b"[]", b'{"format": 1}', b'{"format": 2, "segment_size": 1}'])
def test_anything_else_is_refused_as_unreadable(text):
    with pytest.raises(ValueError):
        RunIndex.from_json(text)
