"""A file repository as the operator meets it: written by root, on a read-only mount."""

import os
import subprocess

import pytest

from walship.config import Settings
from walship.errors import StoreError
from walship.storage import open_store

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, mount)")


@needs_root
def test_as_root_new_directories_and_files_get_the_repository_owner(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    os.chown(repo, 12345, 23456)               # the archiving user's repository (no such user needed)
    store = open_store(f"file://{repo}", Settings())
    store.put("backups/b1/parts/part_0001.tar", b"data")
    store.put("backups/b1/marker.json", b"{}", if_absent=True)
    for path in ("backups", "backups/b1", "backups/b1/parts", "backups/b1/parts/part_0001.tar",
                 "backups/b1/marker.json"):
        st = os.stat(repo / path)
        assert (st.st_uid, st.st_gid) == (12345, 23456), path


@needs_root
def test_as_root_a_root_owned_repository_stays_root_owned(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    open_store(f"file://{repo}", Settings()).put("wal/000000010000000000000001", b"x")
    st = os.stat(repo / "wal" / "000000010000000000000001")
    assert (st.st_uid, st.st_gid) == (0, 0)


@pytest.fixture
def read_only_repo(tmp_path):
    mount_point = tmp_path / "ro"
    mount_point.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount_point)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {r.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


@needs_root
def test_a_read_only_repository_filesystem_is_named_as_such(read_only_repo):
    # chmod is no proof as root (root writes anyway): the filesystem itself is read-only
    store = open_store(f"file://{read_only_repo}", Settings())
    with pytest.raises(StoreError) as caught:
        store.put("wal/000000010000000000000001", b"x", if_absent=True)
    line = caught.value.one_line()
    assert line.startswith("read-only file system: cannot write wal/000000010000000000000001 in ")
    assert "remount" in line and "permission denied" not in line and "writable by" not in line
