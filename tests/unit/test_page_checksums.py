"""PostgreSQL's page checksum, against the pages of a real cluster made by initdb --data-checksums."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import require_version
from tests.support import pg
from walship.pg import checksums
from walship.pg.checksums import BLOCK_SIZE, PageCheck, page_checksums, relation_first_block

NO_REPLAY = 1 << 62            # a backup start LSN past every page: every page is checked


@pytest.fixture(scope="module")
def datadir():
    require_version(15)
    base = pg.scratch_dir("walship-checksums-")
    target = base / "data"
    pg.make_dir(base, "data")
    pg.run_as_postgres([str(pg.pg_bin(15) / "initdb"), "-D", str(target), "-U", "postgres", "--data-checksums",
                        "-E", "UTF8", "--locale=C"])
    yield target
    pg.remove_tree(base)


def _relation_files(datadir) -> list[tuple[str, bytes]]:
    found = []
    for root, _, names in os.walk(datadir):
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), datadir)
            if relation_first_block(rel, 131072) is not None:
                with open(os.path.join(root, name), "rb") as fh:
                    found.append((rel, fh.read()))
    return found


def _largest(datadir) -> tuple[str, bytes]:
    return max(_relation_files(datadir), key=lambda f: len(f[1]))


def test_every_page_of_a_checksummed_cluster_has_the_checksum_we_compute(datadir):
    checked = 0
    for rel, data in _relation_files(datadir):
        pages = len(data) // BLOCK_SIZE
        if not pages:
            continue
        words = np.frombuffer(data, dtype="<u4").reshape(pages, BLOCK_SIZE // 4)
        written = words.any(axis=1)                # initdb leaves no all-zero page, but a new one would be
        stored = (words[:, 2] & 0xFFFF).astype(np.uint16)
        computed = page_checksums(words, np.arange(pages, dtype=np.uint32))
        assert (computed[written] == stored[written]).all(), rel
        assert not checksums._bad_pages(data, 0, NO_REPLAY), rel
        checked += int(written.sum())
    assert checked > 500                           # catalogs, their indexes, FSM and VM forks


def test_a_flipped_byte_is_found_in_its_block_and_only_there(datadir):
    rel, data = _largest(datadir)
    corrupt = bytearray(data)
    corrupt[5 * BLOCK_SIZE + 4000] ^= 0x01
    assert checksums._bad_pages(bytes(corrupt), 0, NO_REPLAY) == [5]
    # the block number is part of the checksum: the same pages at another place in the relation are all wrong
    assert len(checksums._bad_pages(data[:4 * BLOCK_SIZE], 1, NO_REPLAY)) == 4


def test_zero_pages_are_new_and_pages_replay_rewrites_are_skipped(datadir):
    rel, data = _largest(datadir)
    assert not checksums._bad_pages(bytes(3 * BLOCK_SIZE), 0, NO_REPLAY)
    page = bytearray(data[:BLOCK_SIZE])
    page[4000] ^= 0xFF
    lsn = int.from_bytes(page[0:4], "little") << 32 | int.from_bytes(page[4:8], "little")
    assert checksums._bad_pages(bytes(page), 0, lsn + 1) == [0]     # written before the backup started
    assert checksums._bad_pages(bytes(page), 0, lsn) == []          # at or after it: replay rewrites it


def _slices(check: PageCheck, path: str, name: str, cuts: list[int], read_size: int) -> None:
    """Feed the file as tar_chunks does: members [cut_i, cut_i+1), read in blocks of read_size."""
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        bounds = [0, *cuts, size]
        for start, end in zip(bounds, bounds[1:]):
            reader = check.reader(name, path, fd, start)
            position = start
            while position < end:
                block = os.pread(fd, min(read_size, end - position), position)
                reader.feed(block)
                position += len(block)
            reader.close()
    finally:
        os.close(fd)
    check.finish()


def test_slices_cut_anywhere_check_every_page_once(datadir, tmp_path):
    rel, data = _largest(datadir)
    corrupt = bytearray(data)
    for block in (2, 7):
        corrupt[block * BLOCK_SIZE + 100] ^= 0x10
    path = tmp_path / "16384.1"                    # the second 1 GiB segment of a relation
    path.write_bytes(bytes(corrupt))
    name = "base/5/16384.1"
    pages = len(data) // BLOCK_SIZE
    first = 131072

    # blocks 2 and 7 read in their second segment: their checksums were made for blocks 2 and 7, so every
    # page is wrong there; only the layout matters here: each page checked exactly once
    check = PageCheck(NO_REPLAY, 131072)
    _slices(check, str(path), name, [7 * BLOCK_SIZE + 777, 7 * BLOCK_SIZE + 5000], read_size=3 * BLOCK_SIZE + 123)
    assert check.pages_checked == pages
    assert sorted(check.bad[name]) == list(range(first, first + pages))

    path = tmp_path / "16384"
    path.write_bytes(bytes(corrupt))
    check = PageCheck(NO_REPLAY, 131072)
    _slices(check, str(path), "base/5/16384", [2 * BLOCK_SIZE + 1, 5 * BLOCK_SIZE, 7 * BLOCK_SIZE + 8191],
            read_size=1 << 20)
    assert check.pages_checked == pages and check.bad == {"base/5/16384": [2, 7]}
    assert check.failures == 2


def test_small_files_checked_together_are_each_reported_by_name_and_block(datadir, tmp_path):
    rel, data = _largest(datadir)
    check = PageCheck(NO_REPLAY, 131072)
    files = []
    for n in range(40):                            # 40 small relations of 4 pages: batches span files
        corrupt = bytearray(data[:4 * BLOCK_SIZE])
        if n in (3, 31):
            corrupt[(n % 4) * BLOCK_SIZE + 500] ^= 0x40
        path = tmp_path / str(16384 + n)
        path.write_bytes(bytes(corrupt))
        files.append((f"base/5/{16384 + n}", str(path)))
    for name, path in files:
        _slices(check, path, name, [], read_size=1 << 20)
    assert check.pages_checked == 160
    assert check.bad == {"base/5/16387": [3], "base/5/16415": [3]}


def test_a_page_that_is_right_when_read_again_was_a_torn_read(datadir, tmp_path):
    rel, data = _largest(datadir)
    path = tmp_path / "16384"
    path.write_bytes(data[:8 * BLOCK_SIZE])
    torn = bytearray(data[:8 * BLOCK_SIZE])
    torn[6 * BLOCK_SIZE + 10] ^= 0x01              # what a read racing with a write may see
    check = PageCheck(NO_REPLAY, 131072)
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = check.reader("base/5/16384", str(path), fd, 0)
        reader.feed(bytes(torn))
        reader.close()
    finally:
        os.close(fd)
    check.finish()
    assert check.pages_checked == 8 and check.bad == {}


def test_which_files_are_relation_forks():
    assert relation_first_block("base/5/16384", 131072) == 0
    assert relation_first_block("base/5/16384.3", 131072) == 3 * 131072
    assert relation_first_block("base/5/16384_fsm", 131072) == 0
    assert relation_first_block("base/5/16384_vm.1", 131072) == 131072
    assert relation_first_block("global/1262", 131072) == 0
    assert relation_first_block("pg_tblspc/16500/PG_15_202209061/5/16501.2", 131072) == 2 * 131072
    for other in ("global/pg_filenode.map", "global/pg_control", "base/5/PG_VERSION", "base/5/pg_internal.init",
                  "base/5/t3_16400", "pg_xact/0000", "pg_multixact/offsets/0000", "base/5/16384_init.x",
                  "16384", "pg_tblspc/16500/PG_15_202209061/16501"):
        assert relation_first_block(other, 131072) is None, other


def test_numpy_is_not_imported_by_the_commands_until_checksums_are_verified():
    code = "import sys, walship.cli, walship.backup.push, walship.archive.push; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
