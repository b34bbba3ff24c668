"""Block maps: what an incremental stores of a relation file, and the order the maps are joined in."""

from __future__ import annotations

import os
from array import array

from walship.backup import blockmap, walk
from walship.backup.blockmap import BLOCK, FileMap, Recorder


def _record(path: str, content: bytes, parent: FileMap | None, own: int, incremental: bool = True,
            chunk: int = 3000) -> tuple[FileMap, list[int]]:
    rec = Recorder(path, len(content), 0, parent, own, incremental)
    stored = []
    for i in range(0, len(content), chunk):
        stored += [n for n, _, s in rec.blocks(content[i:i + chunk]) if s]
    stored += [n for n, _, s in rec.finish() if s]
    return rec.map, stored


def test_only_blocks_whose_bytes_differ_from_the_parent_are_stored_and_the_rest_keep_their_origin():
    old = b"".join(bytes([i]) * BLOCK for i in range(6))
    full, stored = _record("base/1/100", old, None, 0, incremental=False)
    assert stored == list(range(6)) and list(full.origins) == [0] * 6

    new = bytearray(old[:4 * BLOCK])                  # truncated to 4 blocks, block 2 changed, two blocks added
    new[2 * BLOCK + 17] ^= 1
    new += bytes([9]) * BLOCK + b"tail"
    incr, stored = _record("base/1/100", bytes(new), full, 1)
    assert stored == [2, 4, 5]                         # the changed block, the new one, the partial tail
    assert list(incr.origins) == [0, 0, 1, 0, 1, 1]
    assert incr.file_size == len(new)

    again, stored = _record("base/1/100", bytes(new), incr, 2)
    assert stored == [] and list(again.origins) == list(incr.origins)


def _own_view(m: FileMap) -> tuple:
    """What a stored map keeps: origins, and the hashes of the blocks the backup stores itself."""
    return (m.path, m.file_size, m.start, m.own, list(m.origins),
            [m.hash_of(m.start + i) for i, o in enumerate(m.origins) if o == m.own])


def test_maps_survive_encoding_whatever_the_chunking():
    maps = [FileMap(f"base/5/{n}", n * 100, n, bytearray(os.urandom(16 * n)), array("H", [i % 3 for i in range(n)]),
                    own=2) for n in (0, 1, 3, 700)]
    maps.append(FileMap("base/5/9", 9, 0, bytearray(os.urandom(16 * 50)), array("H", [0] * 50)))   # a full's
    blob = b"".join(m.encode() for m in maps)
    for size in (1, 7, 4096, len(blob)):
        back = list(blockmap.parse((blob[i:i + size] for i in range(0, len(blob), size)), "test"))
        assert [_own_view(m) for m in back] == [_own_view(m) for m in maps]


def test_an_incremental_map_stores_hashes_only_of_its_own_blocks():
    inherited = FileMap("base/5/1", 1000 * BLOCK, 0, bytearray(os.urandom(16 * 1000)), array("H", [0] * 1000), own=1)
    inherited.origins[10] = 1
    assert len(inherited.encode()) < 1000 * 2 + 2 * 16 + 64          # 2 bytes a block, 16 more for its own


def _store_chain(tmp_path, backups: list[list[FileMap]]):
    """Each backup's maps as one part, with its index, in a file store."""
    from walship.storage.local import LocalStore
    store = LocalStore(str(tmp_path))
    for i, maps in enumerate(backups):
        part = blockmap.PartMaps()
        for m in maps:
            part.add(m)
        part.store(store, f"b{i}", 0, "zstd", None, None)
        blockmap.write_index(store, f"b{i}", [part.index_entry(0)], "zstd", None)
    return store


def test_a_chain_gives_every_block_its_hash_from_the_backup_that_stores_it(tmp_path):
    old = b"".join(bytes([i]) * BLOCK for i in range(6))
    full, _ = _record("base/1/100", old, None, 0, incremental=False)
    one_bytes = bytearray(old)
    one_bytes[BLOCK] ^= 1
    one, _ = _record("base/1/100", bytes(one_bytes), full, 1)
    two_bytes = bytearray(one_bytes)
    two_bytes[4 * BLOCK] ^= 1
    two, _ = _record("base/1/100", bytes(two_bytes), one, 2)
    assert list(two.origins) == [0, 1, 0, 0, 2, 0]
    store = _store_chain(tmp_path, [[full], [one], [two]])

    resolved = blockmap.ChainMaps(store, ["b0", "b1", "b2"], None).lookup("base/1/100")
    assert resolved is not None and bytes(resolved.hashes) == bytes(two.hashes)
    third, stored = _record("base/1/100", bytes(two_bytes), resolved, 3)     # nothing changed: nothing stored
    assert stored == [] and list(third.origins) == [0, 1, 0, 0, 2, 0]


def test_a_chain_whose_older_map_lost_a_file_is_refused_not_guessed(tmp_path):
    import pytest

    from walship.errors import IntegrityError
    content = bytes(3 * BLOCK)
    full, _ = _record("base/1/100", content, None, 0, incremental=False)
    changed = bytearray(content)
    changed[0] = 1
    one, _ = _record("base/1/100", bytes(changed), full, 1)
    other, _ = _record("base/1/200", content, None, 0, incremental=False)
    store = _store_chain(tmp_path, [[other], [one]])                   # the full's map of base/1/100 is gone
    with pytest.raises(IntegrityError, match="does not store them"):
        blockmap.ChainMaps(store, ["b0", "b1"], None).lookup("base/1/100")


def test_the_map_cache_hands_out_what_the_objects_hold_and_keeps_only_its_budget(tmp_path):
    """A chain restore looks up the newest backup's maps for every part of every backup: the cache parses an
    object once, hands out the same maps maps_for reads, and lets the least recently used go past its budget."""
    from walship.storage.local import LocalStore
    store = LocalStore(str(tmp_path))
    entries = []
    for number in range(3):                                   # three parts of 10, 20, 30 blocks
        part = blockmap.PartMaps()
        part.add(_record(f"base/1/{100 + number}", os.urandom(10 * (number + 1) * BLOCK), None, 0, False)[0])
        part.store(store, "b0", number, "zstd", None, None)
        entries.append(part.index_entry(number))
    blockmap.write_index(store, "b0", entries, "zstd", None)
    index = blockmap.read_index(store, "b0", None)
    cache = blockmap.PartMapCache(store, "b0", None, budget=40)
    paths = {"base/1/100", "base/1/101", "base/1/102"}
    cached = blockmap.maps_for(store, "b0", index, paths, None, cache)
    read = blockmap.maps_for(store, "b0", index, paths, None)
    assert {p: [_own_view(m) for m in ms] for p, ms in cached.items()} == \
        {p: [_own_view(m) for m in ms] for p, ms in read.items()}
    assert sorted(cache._kept) == [2]                         # 10 + 20 + 30 blocks: the oldest two let go
    before = cache.part(2)
    assert cache.part(2) is before                            # kept: not read again


def test_walk_key_orders_paths_as_the_walk_yields_them(tmp_path):
    for rel in ("PG_VERSION", "base/1/123", "base/1/123_fsm", "base/16384/2", "base/2/9", "global/1262",
                "global/pg_control", "pg_xact/0000", "zzz"):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    names = [e.name for e in walk.walk(str(tmp_path)) if e.kind == "file"]
    assert names == sorted(names, key=blockmap.walk_key)
    assert names != sorted(names)                      # the walk's order is not plain name order


def test_relation_files_are_the_forks_of_relations_only():
    yes = ["base/1/1259", "base/1/1259_fsm", "base/1/1259_vm.3", "base/5/16384_init", "global/1262",
           "pg_tblspc/16400/PG_16_202307071/5/16401.1"]
    no = ["base/1/PG_VERSION", "base/1/pg_filenode.map", "global/pg_control", "pg_xact/0000", "base/1/1259.tmp",
          "pg_multixact/offsets/0000", "1259"]
    assert all(blockmap.is_relation_file(p) for p in yes)
    assert not any(blockmap.is_relation_file(p) for p in no)


# --- which backup an incremental follows ---------------------------------------------------------

def _info(name: str, start: float, **kw):
    from walship.repo.catalog import BackupInfo
    values = dict(start_time=start, stop_time=start + 1, start_lsn="0/1000000", stop_lsn="0/1000100", timeline=1,
                  start_wal="000000010000000000000001", stop_wal="000000010000000000000001", pg_version=170010,
                  system_identifier="7300000000000000001", size=1, stored_size=1, duration_s=1.0)
    values.update(kw)
    return BackupInfo(name=name, **values)


def _parent_of(tmp_path, backups, mode="incremental", from_name=None, segment=16 << 20, **settings):
    from walship.backup import incremental
    from walship.backup.catalog import Marker
    from walship.config import Settings
    from walship.pg.backup_api import ServerFacts
    from walship.repo import layout
    from walship.storage.local import LocalStore

    store = LocalStore(str(tmp_path))
    for b in backups:
        if b.source == "walship":
            store.put(layout.marker_key(b.name), Marker(b, 1, 1, "zstd", {}, block_size=8192,
                                                        wal_segment_size=16 << 20).to_json())
    facts = ServerFacts(170010, "7300000000000000001", 1, segment, "/nonexistent", False)
    return incremental.choose_parent(backups, store, Settings(**settings), mode, from_name, facts, 8192, None,
                                     now=10_000)


def test_the_parent_is_the_newest_walship_backup_never_wal_e_and_never_of_another_wal_segment_size(tmp_path):
    import pytest

    from walship.errors import WalshipError

    full = _info("full", 100)
    wale = _info("base_000000010000000000000009_00000040", 200, source="wal-e")
    parent = _parent_of(tmp_path, [full, wale])
    assert parent is not None and parent.info.name == "full" and parent.chain == ("full",)
    assert _parent_of(tmp_path, [wale]) is None                          # a full, with a warning
    assert _parent_of(tmp_path, [full], segment=32 << 20) is None
    with pytest.raises(WalshipError, match="wal_segment_size"):
        _parent_of(tmp_path, [full], from_name="full", segment=32 << 20)
    with pytest.raises(WalshipError, match="no complete backup"):
        _parent_of(tmp_path, [full], from_name="gone")
    assert _parent_of(tmp_path, [full], mode="full") is None


def test_full_every_and_full_max_age_decide_a_flagless_push(tmp_path):
    full = _info("full", 100)
    one = _info("one", 200, backup_type="incremental", parent="full", chain=("full",))
    assert _parent_of(tmp_path, [full, one], mode="auto") is None                       # full_every 0: fulls
    parent = _parent_of(tmp_path, [full, one], mode="auto", full_every=3)
    assert parent is not None and parent.chain == ("full", "one")
    assert _parent_of(tmp_path, [full, one], mode="auto", full_every=2) is None         # the chain is full
    assert _parent_of(tmp_path, [full, one], mode="auto", full_every=3, full_max_age_days=0.05) is None


def test_a_flagless_push_takes_a_full_once_the_chain_stores_more_than_its_full(tmp_path, capfd):
    from walship import logs
    logs.setup("backup-push")
    full = _info("full", 100, stored_size=1000)
    one = _info("one", 200, backup_type="incremental", parent="full", chain=("full",), stored_size=600)
    two = _info("two", 300, backup_type="incremental", parent="one", chain=("full", "one"), stored_size=300)
    parent = _parent_of(tmp_path, [full, one, two], mode="auto", full_every=10)      # 900 of 1000: go on
    assert parent is not None and parent.info.name == "two"
    three = _info("three", 400, backup_type="incremental", parent="two", chain=("full", "one", "two"),
                  stored_size=200)
    assert _parent_of(tmp_path, [full, one, two, three], mode="auto", full_every=10) is None   # 1100 > 1000
    assert "taking a full: the 3 incrementals after full store 1.10x what it does" in capfd.readouterr().err
    parent = _parent_of(tmp_path, [full, one, two, three], mode="auto", full_every=10, full_chain_size=2)
    assert parent is not None and parent.info.name == "three"
    parent = _parent_of(tmp_path, [full, one, two, three], mode="auto", full_every=10, full_chain_size=0)
    assert parent is not None                                                       # 0: no limit
    parent = _parent_of(tmp_path, [full, one, two, three], mode="incremental")       # asked for: not overruled
    assert parent is not None and parent.info.name == "three"


# --- a chain restore's two ways through a member ---------------------------------------------------

def _reader(chain_length: int, destination):
    import threading

    from walship.backup.incremental import ChainReader
    reader = ChainReader.__new__(ChainReader)           # only what _blocks uses: no store behind it
    reader.newest = type("Newest", (), {"info": type("Info", (), {"name": "newest"})()})()
    reader.supplied = [0] * chain_length
    reader._lock = threading.Lock()
    reader.destination = destination
    return reader


def _coalesced(pairs) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for offset, data in pairs:
        data = bytes(data)
        for i in range(0, len(data), BLOCK):
            out[offset + i] = data[i:i + BLOCK]
    return out


def test_a_whole_member_hands_on_the_same_blocks_in_runs_as_block_by_block_whatever_the_cuts():
    import random

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from walship.backup.manifest import ManifestEntry

    @settings(max_examples=60, deadline=None)
    @given(st.integers(1, 40), st.integers(0, BLOCK - 1), st.integers(0, 2**32), st.booleans())
    def check(blocks: int, tail: int, seed: int, sliced: bool):
        rnd = random.Random(seed)
        size = blocks * BLOCK + tail
        content = rnd.randbytes(size)
        first = rnd.randrange(blocks) if sliced and blocks > 1 else 0
        member = content[first * BLOCK:]
        blocks_total = -(-size // BLOCK)
        origins = array("H", [rnd.choice((0, 0, 0, 1)) for _ in range(blocks_total)])
        hashes = bytearray(b"".join(blockmap.block_hash(content[i * BLOCK:(i + 1) * BLOCK])
                                    for i in range(blocks_total)))
        split = rnd.randrange(blocks_total + 1)          # the newest map in two slices, as across parts
        newest = [FileMap("base/5/1", size, 0, hashes[:16 * split], origins[:split], own=1),
                  FileMap("base/5/1", size, split, hashes[16 * split:], origins[split:], own=1)]
        full = [FileMap("base/5/1", size, 0, bytearray(hashes), array("H", [0] * blocks_total), own=0)]
        cuts = sorted(rnd.sample(range(1, len(member)), min(len(member) - 1, rnd.randrange(8)))) if member else []
        pieces = [member[a:b] for a, b in zip([0, *cuts], [*cuts, len(member)])]
        if first:
            entry = ManifestEntry("base/5/1", "file", 0o600, 0.0, len(member), "", offset=first * BLOCK,
                                  file_size=size)
        else:
            entry = ManifestEntry("base/5/1", "file", 0o600, 0.0, size, "")
        fast = _reader(2, destination=object())
        slow = _reader(2, destination=None)              # verify's way: every block by itself, hashed
        got = _coalesced(fast._blocks(iter(pieces), entry, 0, newest, full, "full", "base/5/1"))
        want = _coalesced(slow._blocks(iter(pieces), entry, 0, newest, full, "full", "base/5/1"))
        assert got == want
        assert fast.supplied == slow.supplied == [sum(1 for b in range(first, blocks_total) if origins[b] == 0), 0]

    check()

    @settings(max_examples=60, deadline=None)
    @given(st.integers(1, 40), st.integers(0, BLOCK - 1), st.integers(0, 2**32), st.booleans())
    def check_piece(blocks: int, tail: int, seed: int, corrupt: bool):
        """A piece: runs of an incremental's blocks, its first and last checked in a restore, each in verify."""
        rnd = random.Random(seed)
        size = blocks * BLOCK + tail
        total = -(-size // BLOCK)
        content = rnd.randbytes(size)
        held = sorted(rnd.sample(range(total), rnd.randrange(1, total + 1)))
        runs: list[tuple[int, int]] = []
        for b in held:
            if runs and runs[-1][0] + runs[-1][1] == b:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1)
            else:
                runs.append((b, 1))
        origins = array("H", [1 if b in held else 0 for b in range(total)])
        hashes = bytearray(b"".join(blockmap.block_hash(content[i * BLOCK:(i + 1) * BLOCK]) for i in range(total)))
        newest = [FileMap("base/5/1", size, 0, hashes, origins, own=1)]
        member = bytearray(b"".join(content[b * BLOCK:(b + 1) * BLOCK] for b in held))
        first, n = runs[0]
        corrupt = corrupt and n >= 2 and (first + n) * BLOCK <= size
        if corrupt:                                      # a run's first and last block swapped: numbered wrong
            a, z = member[:BLOCK], member[(n - 1) * BLOCK:n * BLOCK]
            member[:BLOCK], member[(n - 1) * BLOCK:n * BLOCK] = z, a
        entry = ManifestEntry("base/5/1", "file", 0o600, 0.0, len(member), "", blocks=runs, file_size=size)
        cuts = sorted(rnd.sample(range(1, len(member)), min(len(member) - 1, rnd.randrange(8)))) if member else []
        pieces = [bytes(member[a:b]) for a, b in zip([0, *cuts], [*cuts, len(member)])]
        fast, slow = _reader(2, destination=object()), _reader(2, destination=None)
        try:
            got = _coalesced(fast._blocks(iter(pieces), entry, 1, newest, newest, "incr", "base/5/1"))
        except Exception as exc:
            got = type(exc).__name__
        try:
            want = _coalesced(slow._blocks(iter(pieces), entry, 1, newest, newest, "incr", "base/5/1"))
        except Exception as exc:
            want = type(exc).__name__
        assert got == want
        assert (got == "IntegrityError") == corrupt
        if not corrupt:
            assert got == {b * BLOCK: content[b * BLOCK:(b + 1) * BLOCK] for b in held}

    check_piece()


def test_runs_of_an_origin_are_found_whatever_their_length():
    import doctest
    import random
    failed, tried = doctest.testmod(blockmap)
    assert tried and not failed
    rnd = random.Random(7)
    for _ in range(200):
        origins = array("H", [rnd.choice((0, 0, 1)) if rnd.random() < 0.3 else 0 for _ in range(rnd.randrange(300))])
        want, i = [], 0
        while i < len(origins):
            if origins[i] == 1:
                j = i
                while j < len(origins) and origins[j] == 1:
                    j += 1
                want.append((i, j))
                i = j
            else:
                i += 1
        assert list(blockmap.runs_of(origins, 1)) == want
        assert sum(b - a for a, b in blockmap.runs_of(origins, 0)) == origins.count(0)
