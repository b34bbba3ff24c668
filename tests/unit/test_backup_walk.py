"""What a base backup holds: PostgreSQL's documented exclusions, tablespaces, part planning."""

from __future__ import annotations

import os

import pytest

from walship.backup import tarstream, walk
from walship.errors import WalshipError


@pytest.fixture
def pgdata(tmp_path):
    root = tmp_path / "pgdata"
    files = ["PG_VERSION", "postgresql.conf", "postmaster.pid", "postmaster.opts", "backup_label.old",
             "global/pg_control", "global/pg_internal.init",
             "base/5/1259", "base/5/1259_fsm", "base/5/16390", "base/5/16390_init", "base/5/16390.1",
             "base/5/16390_fsm", "base/pgsql_tmp/pgsql_tmp123.0",
             "pg_wal/000000010000000000000001", "pg_wal/archive_status/000000010000000000000001.ready",
             "pg_wal/walship_spool/x", "pg_replslot/slot/state", "pg_stat_tmp/db_0.stat", "pg_subtrans/0000",
             "pg_notify/0000", "pg_serial/0000", "pg_snapshots/x", "pg_dynshmem/mmap.1", "pg_xact/0000"]
    for name in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 10)
    ts = tmp_path / "ts"
    (ts / "PG_15_1" / "5").mkdir(parents=True)
    (ts / "PG_15_1" / "5" / "16400").write_bytes(b"t")
    (root / "pg_tblspc").mkdir()
    os.symlink(ts, root / "pg_tblspc" / "16399")
    return root


def test_the_walk_leaves_out_what_postgresql_says_a_base_backup_may_leave_out(pgdata):
    names = {e.name: e.kind for e in walk.walk(str(pgdata))}
    assert set(names) == {
        "PG_VERSION", "postgresql.conf", "global", "global/pg_control",
        "base", "base/5", "base/5/1259", "base/5/1259_fsm", "base/5/16390_init",
        "pg_wal", "pg_wal/archive_status", "pg_replslot", "pg_stat_tmp", "pg_subtrans", "pg_notify",
        "pg_serial", "pg_snapshots", "pg_dynshmem", "pg_xact", "pg_xact/0000",
        "pg_tblspc", "pg_tblspc/16399", "pg_tblspc/16399/PG_15_1", "pg_tblspc/16399/PG_15_1/5",
        "pg_tblspc/16399/PG_15_1/5/16400"}
    assert names["pg_tblspc/16399"] == "link"


def test_directories_come_before_their_contents(pgdata):
    seen = set()
    for entry in walk.walk(str(pgdata)):
        parent = entry.name.rpartition("/")[0]
        assert not parent or parent in seen, entry.name
        seen.add(entry.name)


def test_tablespaces_are_found_with_their_locations(pgdata):
    assert walk.tablespaces(str(pgdata)) == [walk.Tablespace("16399", str(pgdata.parent / "ts"))]


def test_a_directory_that_is_not_a_data_directory_is_refused(tmp_path):
    with pytest.raises(WalshipError, match="not a PostgreSQL data directory"):
        walk.check_data_directory(str(tmp_path))


def test_parts_are_bounded_by_size_and_by_member_count():
    entries = [walk.Entry(f"f{i}", "", "file", 0o600, 0, 1000) for i in range(10)]
    assert [len(p) for p in tarstream.plan_parts(entries, 3000, 100)] == [2, 2, 2, 2, 2]
    assert [len(p) for p in tarstream.plan_parts(entries, 10**9, 4)] == [4, 4, 2]


def test_files_larger_than_a_part_are_sliced_to_fill_parts():
    def entry(name, size):
        return walk.Entry(name, "/nonexistent/" + name, "file", 0o600, 0, size)
    part = 10 << 20
    plan = list(tarstream.plan_parts([entry("a", 4 << 20), entry("big", 25 << 20), entry("b", 100)], part, 100))
    items = [[(getattr(i, "offset", None), getattr(i, "length", None)) if hasattr(i, "offset") else i.name
              for i in p] for p in plan]
    first = part - (512 + (4 << 20))                     # the first slice fills what "a" (and its header) left
    assert items == [["a", (0, first)], [(first, part)], [(first + part, (25 << 20) - first - part), "b"]]
