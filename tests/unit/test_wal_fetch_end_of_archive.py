"""wal-fetch answers "not in the archive" only at the real end of it; every other failure stops recovery."""

from __future__ import annotations

import os
import struct

import pytest

from walship import cli, pipeline
from walship.archive import fetch
from walship.config import Settings
from walship.errors import ConfigError, IntegrityError, NotInArchive, StoreError
from walship.repo.record import NotARepository
from walship.storage import open_store

MB16 = 16 << 20
X = "000000010000000000000004"          # the missing segment in every synthetic listing


def _histories(**texts: str):
    by_timeline = {int(k[1:]): v for k, v in texts.items()}
    return lambda timeline: by_timeline.get(timeline)


# --- the gap rule on synthetic listings --------------------------------------------------------

def test_a_later_segment_on_the_same_timeline_is_a_gap():
    after = fetch.wal_after(X, ["000000010000000000000006", "000000010000000000000007"], _histories())
    assert after == "000000010000000000000006 on the same timeline"


def test_a_later_partial_segment_on_the_same_timeline_is_a_gap_but_the_missing_ones_own_partial_is_not():
    assert fetch.wal_after(X, ["000000010000000000000005.partial"], _histories()) is not None
    assert fetch.wal_after(X, ["000000010000000000000004.partial"], _histories()) is None


def test_only_history_and_backup_history_files_after_the_miss_is_the_end():
    later = ["000000010000000000000004.00000028.backup", "00000002.history", "00000003.history"]
    assert fetch.wal_after(X, later, _histories(t2="1\t0/3000000\tno recovery target specified\n")) is None


@pytest.mark.parametrize("branch,gap", [
    ("0/2000000", False),      # branched before X: timeline 2 has its own copy of X's WAL
    ("0/4000100", False),      # inside X: recovery following timeline 2 reads 000000020000000000000004
    ("0/5000000", True),       # exactly at X's end: all of X on timeline 1 is needed to get there
    ("0/6000028", True),       # after X
])
def test_a_descendant_timeline_counts_only_when_it_branched_at_or_after_the_end_of_the_missing_segment(branch, gap):
    later = ["00000002.history", "000000020000000000000006", "000000020000000000000007"]
    after = fetch.wal_after(X, later, _histories(t2=f"1\t{branch}\tbefore 2000-01-01 00:00:00+00\n"))
    assert (after is not None) == gap
    if gap:
        assert "000000020000000000000007 on timeline 2" in after and branch in after


def test_a_grandchild_timeline_whose_history_passes_through_the_missing_segment_is_a_gap():
    later = ["00000003.history", "000000030000000000000009"]
    history = "1\t0/6000000\tno recovery target specified\n2\t0/8000000\tno recovery target specified\n"
    assert "on timeline 3" in fetch.wal_after(X, later, _histories(t3=history))


def test_a_timeline_that_branched_from_another_one_is_not_followed_through_the_miss():
    missing = "000000020000000000000004"
    later = ["00000003.history", "000000030000000000000009"]
    assert fetch.wal_after(missing, later, _histories(t3="1\t0/3000000\tno recovery target specified\n")) is None


def test_segments_of_a_timeline_without_history_file_prove_nothing():
    assert fetch.wal_after(X, ["000000020000000000000009"], _histories()) is None


# --- on a real (file) repository ---------------------------------------------------------------

def _repo(tmp_path, *names: str, wale: tuple[str, ...] = ()):
    store = open_store(f"file://{tmp_path}/repo", Settings())
    for name in names:
        data = b"1\t0/6000000\tno recovery target specified\n" if name.endswith(".history") else b"w"
        store.put(f"wal/{name}", pipeline.pack(data, "none"))
    for name in wale:
        store.put(f"wal_005/{name}.lzo", b"lzo")
    return store


def test_an_empty_location_is_not_a_repository_whatever_is_asked(tmp_path):
    (tmp_path / "repo").mkdir()            # an unmounted mount point: an empty directory
    store = open_store(f"file://{tmp_path}/repo", Settings())
    for name in (X, "00000002.history"):
        with pytest.raises(NotARepository):
            fetch.check_end_of_archive(store, name)


def test_the_real_end_and_a_gap_on_a_file_repository(tmp_path):
    store = _repo(tmp_path, "000000010000000000000002", "000000010000000000000003", "000000010000000000000005")
    fetch.check_end_of_archive(store, "000000010000000000000006")        # the end: returns
    fetch.check_end_of_archive(store, "00000002.history")
    with pytest.raises(fetch.WalGap) as caught:
        fetch.check_end_of_archive(store, X)
    assert isinstance(caught.value, IntegrityError)
    assert X in caught.value.message and "000000010000000000000005 on the same timeline" in caught.value.message


def test_segments_wal_e_stored_after_the_miss_are_a_gap(tmp_path):
    store = _repo(tmp_path, "000000010000000000000002", wale=("000000010000000000000005",))
    with pytest.raises(fetch.WalGap, match="000000010000000000000005"):
        fetch.check_end_of_archive(store, X)


def test_a_descendant_timeline_stored_after_the_miss_is_a_gap(tmp_path):
    store = _repo(tmp_path, "000000010000000000000003", "00000002.history", "000000020000000000000006")
    with pytest.raises(fetch.WalGap, match="on timeline 2"):
        fetch.check_end_of_archive(store, X)


def test_the_local_store_lists_what_follows_a_key_in_key_order(tmp_path):
    store = _repo(tmp_path, "000000010000000000000007", "000000010000000000000003", "00000002.history",
                  "000000010000000000000004", "000000020000000000000006")
    assert [o.key for o in store.list("wal/", start_after=f"wal/{X}")] == [
        "wal/000000010000000000000007", "wal/00000002.history", "wal/000000020000000000000006"]


# --- what is served is the segment its name says, of this cluster --------------------------------

SEG1 = 1 << 20


def _segment(name: str, sysid: int, size: int = SEG1, pageaddr: int | None = None) -> bytes:
    from walship.pg.walnames import Segment
    seg = Segment.parse(name, size)
    addr = seg.start_lsn(size) if pageaddr is None else pageaddr
    header = struct.pack("<HHIQI4xQII", 0xD110, 0x0002, seg.timeline, addr, 0, sysid, size, 8192)
    return header + bytes(size - len(header))


def _pgdata(tmp_path, sysid: int):
    (tmp_path / "global").mkdir(exist_ok=True)
    (tmp_path / "global" / "pg_control").write_bytes(struct.pack("<QI", sysid, 1300) + bytes(100))
    return str(tmp_path)


def test_a_segment_of_this_cluster_is_served_and_a_foreign_or_renamed_one_is_refused(tmp_path):
    pgdata = _pgdata(tmp_path, 7311)
    name = "000000010000000000000003"
    fetch.check_served_segment(_segment(name, 7311), name, pgdata)
    with pytest.raises(IntegrityError, match="system identifier 9999"):
        fetch.check_served_segment(_segment(name, 9999), name, pgdata)
    with pytest.raises(IntegrityError, match="recycled or renamed"):
        fetch.check_served_segment(_segment(name, 7311, pageaddr=0), name, pgdata)
    with pytest.raises(IntegrityError, match="not a WAL segment size"):
        fetch.check_served_segment(_segment(name, 7311)[: SEG1 - 8192], name, pgdata)


def test_wal_fetch_never_puts_a_refused_segment_in_place(tmp_path, monkeypatch):
    monkeypatch.chdir(_pgdata(tmp_path, 7311))
    name = "000000010000000000000003"
    store = open_store(f"file://{tmp_path}/repo", Settings())
    store.put(f"wal/{name}", pipeline.pack(_segment(name, 4242), "zstd"))
    (tmp_path / "pg_wal").mkdir()
    with pytest.raises(IntegrityError, match="4242"):
        fetch.wal_fetch(name, str(tmp_path / "pg_wal" / "RECOVERYXLOG"), Settings(fetch_prefetch=0), lambda: store)
    assert os.listdir(tmp_path / "pg_wal") == []


def test_an_unwritable_destination_is_an_error_not_an_absent_file(tmp_path, monkeypatch):
    monkeypatch.chdir(_pgdata(tmp_path, 7311))
    name = "000000010000000000000003"
    store = open_store(f"file://{tmp_path}/repo", Settings())
    store.put(f"wal/{name}", pipeline.pack(_segment(name, 7311), "zstd"))
    with pytest.raises(fetch.DestinationUnwritable, match="/no/such/dir/RECOVERYXLOG"):
        fetch.wal_fetch(name, "/no/such/dir/RECOVERYXLOG", Settings(fetch_prefetch=0), lambda: store)


# --- the exit codes: one rule ---------------------------------------------------------------------

@pytest.fixture
def in_pgdata(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("error", [ConfigError("config file broken"), StoreError("store down"),
                                   IntegrityError("gap"), None])
def test_every_failure_but_the_end_of_the_archive_stops_archive_recovery(in_pgdata, error):
    (in_pgdata / "recovery.signal").touch()
    assert cli._wal_fetch_exit_code(error) == 126
    assert cli._wal_fetch_exit_code(NotInArchive("absent")) == 1


def test_a_standby_gets_the_errors_own_code_and_retries(in_pgdata):
    (in_pgdata / "recovery.signal").touch()
    (in_pgdata / "standby.signal").touch()
    assert cli._wal_fetch_exit_code(ConfigError("config file broken")) == 2
    assert cli._wal_fetch_exit_code(StoreError("store down")) == 3
    assert cli._wal_fetch_exit_code(None) == 1


def test_an_unexpected_exception_in_wal_fetch_is_one_line_and_stops_recovery(in_pgdata, monkeypatch, capsys):
    (in_pgdata / "recovery.signal").touch()

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")
    monkeypatch.setattr(fetch, "wal_fetch", broken)
    rc = cli.main(["wal-fetch", X, "pg_wal/RECOVERYXLOG", "--repo", f"file://{in_pgdata}/repo"])
    err = capsys.readouterr().err
    assert rc == 126
    assert "unexpected error: RuntimeError: a bug" in err and "Traceback" not in err


def test_an_invalid_config_file_stops_archive_recovery(in_pgdata, capsys):
    (in_pgdata / "recovery.signal").touch()
    (in_pgdata / "walship.toml").write_text("repo = [unclosed\n")
    rc = cli.main(["wal-fetch", X, "pg_wal/RECOVERYXLOG", "--config", str(in_pgdata / "walship.toml")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 126
    assert "is not valid TOML" in err[0] and "stopping recovery" in err[1]


def test_the_prefetcher_gets_the_repository_and_config_file_of_its_wal_fetch():
    settings = Settings(repo="s3://bucket/pg", fetch_prefetch=4)
    settings.sources = {"repo": "command line", "fetch_prefetch": "command line"}
    cmd = fetch.prefetcher_command(X, "/pg/pg_wal/walship_prefetch", MB16, settings, "/etc/walship/restore.toml")
    assert cmd[3:7] == ["wal-prefetch", X, "/pg/pg_wal/walship_prefetch", str(MB16)]
    words = " ".join(cmd[7:])
    assert "--repo s3://bucket/pg" in words and "--prefetch 4" in words
    assert "--config /etc/walship/restore.toml" in words
