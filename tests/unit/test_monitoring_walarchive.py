"""The WAL archive on synthetic listings: gaps, windows across timeline switches, forks, segment size."""

from walship import codec, pipeline
from walship.config import Settings
from walship.monitoring import walarchive
from walship.pg.walnames import format_lsn
from walship.repo import record, walindex
from walship.repo.catalog import BackupInfo
from walship.storage import open_store

MIB = 1024 * 1024


def seg(tli, log, n):
    return f"{tli:08X}{log:08X}{n:08X}"


def repo(tmp_path, segment_size=16 * MIB):
    store = open_store(f"file://{tmp_path}/repo", Settings())
    if segment_size:
        rec = record.RepositoryRecord("id", "7", 15, segment_size, "2026-12-01T00:00:00Z", "link")
        store.put(record.RECORD_KEY, rec.to_json())
    return store


def archive_of(tmp_path, names, histories=(), segment_size=16 * MIB):
    """names: segments (stored as dummies: only the listing matters here); histories: (tli, parent, lsn)."""
    store = repo(tmp_path, segment_size)
    for name in names:
        store.put(f"wal/{name}", b"x")
    for tli, parent, lsn in histories:
        text = f"{parent}\t{format_lsn(lsn)}\tno recovery target specified\n"
        store.put(f"wal/{tli:08X}.history", pipeline.pack(text.encode(), "none"))
    return walarchive.load(store)


def backup(name, start, stop, stop_lsn, timeline=1):
    return BackupInfo(name=name, start_time=1000.0, stop_time=1100.0, start_lsn="0/0", stop_lsn=stop_lsn,
                      timeline=timeline, start_wal=start, stop_wal=stop, pg_version=150000, system_identifier="7",
                      size=1, stored_size=1, duration_s=100.0)


def test_continuous_archive_across_a_log_boundary_has_no_gap(tmp_path):
    names = [seg(1, 0, 0xFE), seg(1, 0, 0xFF), seg(1, 1, 0), seg(1, 1, 1), "00000001000000000000000A.partial",
             seg(1, 0, 0xFE) + ".00000028.backup"]
    archive = archive_of(tmp_path, names)
    assert archive.count == 4
    assert archive.newest_name == seg(1, 1, 1)
    assert archive.gaps(seg(1, 0, 0xFE)) == []


def test_a_segment_deleted_from_the_middle_is_a_gap_named_with_what_follows(tmp_path):
    names = [seg(1, 0, n) for n in range(1, 10) if n not in (4, 6, 7)]
    gaps = archive_of(tmp_path, names).gaps(seg(1, 0, 1))
    assert [(g.first, g.last, g.count, g.next) for g in gaps] == [
        (seg(1, 0, 4), seg(1, 0, 4), 1, seg(1, 0, 5)), (seg(1, 0, 6), seg(1, 0, 7), 2, seg(1, 0, 8))]


def test_missing_backup_start_segment_is_a_gap(tmp_path):
    gaps = archive_of(tmp_path, [seg(1, 0, 5), seg(1, 0, 6)]).gaps(seg(1, 0, 3))
    assert [(g.first, g.count) for g in gaps] == [(seg(1, 0, 3), 2)]


def test_segments_before_the_backup_do_not_count(tmp_path):
    gaps = archive_of(tmp_path, [seg(1, 0, 1), seg(1, 0, 5), seg(1, 0, 6)]).gaps(seg(1, 0, 5))
    assert gaps == []


def test_later_timeline_without_history_is_checked_from_its_first_segment(tmp_path):
    names = [seg(1, 0, 1), seg(1, 0, 2), seg(2, 0, 2), seg(2, 0, 4)]
    archive = archive_of(tmp_path, names)
    assert [g.first for g in archive.gaps(seg(1, 0, 1))] == [seg(2, 0, 3)]
    assert [f[0] for f in archive.timelines()[1].flags] == ["NO HISTORY"]


def test_a_gap_after_the_only_backup_leaves_the_window_up_to_the_gap(tmp_path):
    archive = archive_of(tmp_path, [seg(1, 0, n) for n in range(2, 10) if n != 6])
    b = backup("b1", seg(1, 0, 2), seg(1, 0, 3), "0/3000100")
    [window] = archive.windows([b])
    assert (window.timeline, window.backup, format_lsn(window.start_lsn), window.start_time) == \
        (1, "b1", "0/3000100", 1100.0)                    # the consistency point, not the backup's start
    assert (window.end_wal, format_lsn(window.end_lsn)) == (seg(1, 0, 5), "0/6000000")
    assert window.gap_after.as_dict() == {"first": seg(1, 0, 6), "last": seg(1, 0, 6), "count": 1,
                                          "next": seg(1, 0, 7)}
    assert [g.first for g in archive.gaps(b.start_wal)] == [seg(1, 0, 6)]


def test_the_window_follows_a_promotion_into_the_new_timeline(tmp_path):
    # A standby promoted at 0/5000060: timeline 1's segment 5 was archived only as .partial,
    # timeline 2 starts with segment 5 (which holds the branch point).
    names = [seg(1, 0, n) for n in range(2, 5)] + [seg(1, 0, 5) + ".partial"] + [seg(2, 0, n) for n in range(5, 9)]
    archive = archive_of(tmp_path, names, histories=[(2, 1, 0x5000060)])
    b = backup("b1", seg(1, 0, 2), seg(1, 0, 3), "0/3000100")
    w1, w2 = archive.windows([b])
    assert (w1.timeline, w1.end_wal, w1.gap_after) == (1, seg(1, 0, 4), None)
    assert (w2.timeline, format_lsn(w2.start_lsn), w2.start_time, w2.end_wal, w2.via) == \
        (2, "0/5000060", None, seg(2, 0, 8), (1, 2))
    assert archive.gaps(b.start_wal) == []
    t1, t2 = archive.timelines()
    assert (t1.parent, t2.parent, format_lsn(t2.branch_lsn), t2.flags) == (None, 1, "0/5000060", ())
    assert t2.time is not None


def test_a_backup_after_the_branch_point_stays_on_its_own_timeline(tmp_path):
    names = [seg(1, 0, n) for n in range(2, 5)] + [seg(2, 0, n) for n in range(4, 9)]
    archive = archive_of(tmp_path, names, histories=[(2, 1, 0x4000060)])
    [w] = archive.windows([backup("b2", seg(2, 0, 6), seg(2, 0, 6), "0/6000200", timeline=2)])
    assert (w.timeline, w.end_wal, w.via) == (2, seg(2, 0, 8), (2,))


def test_a_parent_that_stops_short_of_the_branch_point_is_a_gap(tmp_path):
    names = [seg(1, 0, 2), seg(1, 0, 3)] + [seg(2, 0, n) for n in range(5, 8)]
    archive = archive_of(tmp_path, names, histories=[(2, 1, 0x5000060)])
    b = backup("b1", seg(1, 0, 2), seg(1, 0, 3), "0/3000100")
    assert [(g.first, g.next) for g in archive.gaps(b.start_wal)] == [(seg(1, 0, 4), seg(2, 0, 5))]
    [w] = archive.windows([b])
    assert (w.timeline, w.end_wal) == (1, seg(1, 0, 3))      # recovery cannot reach timeline 2


def test_a_parent_with_wal_beyond_the_branch_point_is_a_fork(tmp_path):
    # timeline 2 branched at 0/5000060, and timeline 1 went on writing through segment 8: two servers
    names = [seg(1, 0, n) for n in range(2, 9)] + [seg(2, 0, n) for n in range(5, 7)]
    archive = archive_of(tmp_path, names, histories=[(2, 1, 0x5000060)])
    t1, t2 = archive.timelines()
    assert t1.flags == ()
    [(kind, message, hint)] = t2.flags
    assert kind == "FORK"
    assert "timeline 1 has WAL archived after timeline 2 branched off it at 0/5000060" in message
    assert seg(1, 0, 8) in message and "split brain" in message
    assert "stop it" in hint
    # both histories are recoverable: timeline 1 to its end, timeline 2 from the branch point
    windows = archive.windows([backup("b1", seg(1, 0, 2), seg(1, 0, 3), "0/3000100")])
    assert [(w.timeline, w.end_wal) for w in windows] == [(1, seg(1, 0, 8)), (2, seg(2, 0, 6))]


def test_64_mib_segments_past_0_ffffffff_have_no_false_gap(tmp_path):
    # 64 segments of 64 MiB per 4 GiB "log": 0000000100000000 0000003F is followed by 00000001 00000001 00000000
    names = [seg(1, 0, 0x3D), seg(1, 0, 0x3E), seg(1, 0, 0x3F), seg(1, 1, 0), seg(1, 1, 1)]
    archive = archive_of(tmp_path, names, segment_size=64 * MIB)
    assert (archive.segment_size, archive.size_source) == (64 * MIB, "repository record")
    b = backup("b1", seg(1, 0, 0x3D), seg(1, 0, 0x3E), "0/F8000100")
    assert archive.gaps(b.start_wal) == []
    [w] = archive.windows([b])
    assert (w.end_wal, format_lsn(w.end_lsn), w.gap_after) == (seg(1, 1, 1), "1/8000000", None)


def test_segment_size_without_a_record_comes_from_a_stored_segment_header(tmp_path):
    store = repo(tmp_path, segment_size=None)
    for name in (seg(1, 0, 0x3F), seg(1, 1, 0)):
        store.put(f"wal/{name}", codec.encode_header({"codec": "none", "size": 64 * MIB, "sha256": "0" * 64}))
    archive = walarchive.load(store)
    assert archive.segment_size == 64 * MIB and archive.size_source.startswith("header of wal/")
    assert archive.gaps(seg(1, 0, 0x3F)) == []


def test_segment_size_guess_only_when_no_segment_can_be_read():
    assert walindex.largest_size_the_names_allow([seg(1, 0, 0x1FF)]) == 8 * MIB
    assert walindex.largest_size_the_names_allow([seg(1, 0, 0x10)]) == 128 * MIB


def test_segments_wal_e_archived_before_the_switch_count(tmp_path):
    store = repo(tmp_path)
    for n in (1, 2):
        store.put(f"wal_005/{seg(1, 0, n)}.lzo", b"x")
    for n in (2, 3):
        store.put(f"wal/{seg(1, 0, n)}", b"x")
    archive = walarchive.load(store)
    assert archive.count == 3 and archive.gaps(seg(1, 0, 1)) == []
