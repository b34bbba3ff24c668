from walship.config import Settings
from walship.monitoring import walarchive
from walship.storage import open_store

MIB = 1024 * 1024


def seg(tli, log, n):
    return f"{tli:08X}{log:08X}{n:08X}"


def archive_of(tmp_path, names):
    store = open_store(f"file://{tmp_path}/repo", Settings())
    for name in names:
        store.put(f"wal/{name}", b"x")
    return walarchive.load(store, 16 * MIB)


def test_continuous_archive_across_a_log_boundary_has_no_gap(tmp_path):
    names = [seg(1, 0, 0xFE), seg(1, 0, 0xFF), seg(1, 1, 0), seg(1, 1, 1), "00000001000000000000000A.partial",
             "00000002.history", seg(1, 0, 0xFE) + ".00000028.backup"]
    archive = archive_of(tmp_path, names)
    assert archive.count == 4
    assert archive.newest_name == seg(1, 1, 1)
    assert archive.gaps(seg(1, 0, 0xFE)) == []


def test_a_segment_deleted_from_the_middle_is_a_gap(tmp_path):
    names = [seg(1, 0, n) for n in range(1, 10) if n not in (4, 6, 7)]
    gaps = archive_of(tmp_path, names).gaps(seg(1, 0, 1))
    assert [(g.first, g.last, g.count) for g in gaps] == [(seg(1, 0, 4), seg(1, 0, 4), 1),
                                                         (seg(1, 0, 6), seg(1, 0, 7), 2)]


def test_missing_backup_start_segment_is_a_gap(tmp_path):
    gaps = archive_of(tmp_path, [seg(1, 0, 5), seg(1, 0, 6)]).gaps(seg(1, 0, 3))
    assert [(g.first, g.count) for g in gaps] == [(seg(1, 0, 3), 2)]


def test_segments_before_the_backup_do_not_count(tmp_path):
    gaps = archive_of(tmp_path, [seg(1, 0, 1), seg(1, 0, 5), seg(1, 0, 6)]).gaps(seg(1, 0, 5))
    assert gaps == []


def test_later_timeline_is_checked_from_its_first_segment(tmp_path):
    names = [seg(1, 0, 1), seg(1, 0, 2), seg(2, 0, 2), seg(2, 0, 4)]
    gaps = archive_of(tmp_path, names).gaps(seg(1, 0, 1))
    assert [g.first for g in gaps] == [seg(2, 0, 3)]


def test_smaller_segment_size_is_inferred_from_names():
    assert walarchive.infer_segment_size([seg(1, 0, 0x1FF)]) == 8 * MIB
    assert walarchive.infer_segment_size([seg(1, 0, 0x10)]) == 16 * MIB


def test_segments_wal_e_archived_before_the_switch_count(tmp_path):
    store = open_store(f"file://{tmp_path}/repo", Settings())
    for n in (1, 2):
        store.put(f"wal_005/{seg(1, 0, n)}.lzo", b"x")
    for n in (2, 3):
        store.put(f"wal/{seg(1, 0, n)}", b"x")
    archive = walarchive.load(store, 16 * MIB)
    assert archive.count == 3 and archive.gaps(seg(1, 0, 1)) == []
