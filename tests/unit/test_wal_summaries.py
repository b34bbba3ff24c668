"""What WAL summaries make an incremental read: whether they tile the range along a timeline history, which
blocks of which walked file they name, and the runs read against the parent's map."""

from __future__ import annotations

from array import array

from walship.backup import blockmap, tarstream
from walship.backup.blockmap import BLOCK, FileChanges, FileMap
from walship.backup.incremental import ChangedBlocks
from walship.pg.walsummaries import Summary, covering, relation_file

PER_SEGMENT = 131072


def test_relation_paths_name_their_fork_and_segment():
    assert relation_file("base/5/16384").key == (1663, 5, 16384, 0)
    assert relation_file("base/5/16384_vm.2").key == (1663, 5, 16384, 2)
    assert relation_file("base/5/16384.3").segment == 3
    assert relation_file("global/1262_fsm").key == (1664, 0, 1262, 1)
    assert relation_file("pg_tblspc/16390/PG_17_202406281/5/16391.1").key == (16390, 5, 16391, 0)
    assert relation_file("base/5/pg_filenode.map") is None and relation_file("pg_xact/0000") is None


def test_summaries_cover_a_range_only_without_a_gap_on_each_timeline_of_its_history():
    one = [Summary(1, 0x100, 0x200), Summary(1, 0x200, 0x300), Summary(1, 0x300, 0x500)]
    assert covering(one, [(1, 0, None)], 0x180, 0x400) == (one, None)
    assert covering(one, [(1, 0, None)], 0x180, 0x600)[1] is not None          # not summarized that far yet
    gap, why = covering([one[0], one[2]], [(1, 0, None)], 0x180, 0x400)
    assert gap == [] and why is not None and "0/200 to 0/400 on timeline 1" in why
    # timeline 2 branched off 1 at 0x380: 1's summaries up to the branch, then 2's
    history = [(1, 0, 0x380), (2, 0x380, None)]
    two = [Summary(2, 0x380, 0x600)]
    chosen, why = covering([*one, *two], history, 0x180, 0x500)
    assert why is None and chosen == [*one, *two]
    assert covering(one, history, 0x180, 0x500)[1] is not None                 # timeline 2 not summarized
    assert covering(two, history, 0x400, 0x500) == (two, None)                 # the range lies on timeline 2 only


def _changed(rows) -> ChangedBlocks:
    changes = ChangedBlocks(PER_SEGMENT)
    changes.add(rows)
    changes.seal()
    return changes


def test_changed_blocks_are_found_per_segment_file_and_whole_files_where_summaries_cannot_tell():
    changes = _changed([(1663, 5, 100, 0, 7, False), (1663, 5, 100, 0, 7, False), (1663, 5, 100, 0, 3, False),
                        (1663, 5, 100, 0, PER_SEGMENT + 2, False), (1663, 5, 100, 0, PER_SEGMENT + 9, True),
                        (1663, 5, 100, 0, PER_SEGMENT + 4, True), (1663, 6, 0, 0, 0, True)])
    first = changes.for_file("base/5/100")
    assert first is not None and list(first.changed) == [3, 7] and first.limit is None
    second = changes.for_file("base/5/100.1")
    assert second is not None and list(second.changed) == [2] and second.limit == 4     # the lowest limit
    third = changes.for_file("base/5/100.2")
    assert third is not None and list(third.changed) == [] and third.limit == 0          # truncated below it
    untouched = changes.for_file("base/5/200")
    assert untouched is not None and not untouched.changed and untouched.limit is None
    assert changes.for_file("base/5/100_vm") is None and changes.for_file("base/5/100_fsm") is None
    assert changes.for_file("base/6/300") is None          # database 6 made by FILE_COPY (or dropped) meanwhile


def test_the_runs_read_are_the_named_blocks_those_past_a_limit_and_those_past_the_parents_end():
    parent = FileMap("base/5/100", 10 * BLOCK, 0, bytearray(16 * 10), array("H", [0] * 10))
    assert blockmap.runs_to_read(FileChanges(array("I", [1, 2, 5])), parent, 0, 12) == [(1, 2), (5, 1), (10, 2)]
    assert blockmap.runs_to_read(FileChanges(array("I", [1, 8]), 9), parent, 0, 10) == [(1, 1), (8, 2)]
    assert blockmap.runs_to_read(FileChanges(array("I", [1, 8])), parent, 4, 8) == []       # a slice
    assert blockmap.runs_to_read(FileChanges(array("I"), 0), parent, 0, 6) == [(0, 6)]
    short = FileMap("base/5/100", 3 * BLOCK + 100, 0, bytearray(16 * 4), array("H", [0] * 4))
    assert blockmap.runs_to_read(FileChanges(array("I")), short, 0, 5) == [(3, 2)]           # its partial tail


def test_an_incremental_reads_only_the_runs_and_its_map_stays_whole(tmp_path):
    old = b"".join(bytes([i]) * BLOCK for i in range(8))
    path = tmp_path / "100"
    path.write_bytes(old)
    entry = tarstream.MappedEntry("base/5/100", str(path), "file", 0o600, 0.0, len(old))
    full_ctx = tarstream.BlockContext(blockmap.PartMaps(), 0, False)
    list(tarstream.tar_chunks([entry], lambda e: None, blocks=full_ctx))
    full = next(blockmap.parse(full_ctx.maps.records, "full"))

    new = bytearray(old)
    new[2 * BLOCK] ^= 1                  # named by the summaries
    new[6 * BLOCK] ^= 1                  # not named: WAL replay's business, the parent's hash is kept
    new += bytes([9]) * BLOCK            # grown
    path.write_bytes(bytes(new))
    changed = tarstream.MappedEntry("base/5/100", str(path), "file", 0o600, 0.0, len(new), parent=full,
                                    changes=FileChanges(array("I", [2, 4])))
    ctx = tarstream.BlockContext(blockmap.PartMaps(), 1, True)
    lines = []
    list(tarstream.tar_chunks([changed], lines.append, blocks=ctx))
    incr = next(blockmap.parse(ctx.maps.records, "incr"))
    assert (ctx.blocks_read, ctx.blocks_held) == (3, 9)
    assert [b for e in lines for b in e.blocks] == [(2, 1), (8, 1)]       # block 4 read, same hash: not stored
    assert list(incr.origins) == [0, 0, 1, 0, 0, 0, 0, 0, 1]
    assert incr.hash_of(2) == blockmap.block_hash(new[2 * BLOCK:3 * BLOCK])
    assert incr.hash_of(6) == bytes(16)               # stored in the full's map only, found there when needed
    assert incr.take_hashes(full, 0) and incr.hash_of(6) == full.hash_of(6)
