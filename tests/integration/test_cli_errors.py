"""Bad input gets one clear line saying what is wrong and what to do, never a traceback."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support import pg
from tests.support.walfiles import segment_bytes


def _wal_file(scratch) -> str:
    wal = pg.make_dir(scratch, "pg_wal", 0o755)
    path = wal / "000000010000000000000001"
    path.write_bytes(segment_bytes(path.name, 1 << 16))
    pg.chown_postgres(path)
    return str(path)


def _one_error_line(r) -> str:
    assert "Traceback" not in r.stderr, r.stderr
    lines = [l for l in r.stderr.splitlines() if "ERROR" in l]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_no_repository_configured(scratch):
    r = pg.walship(["wal-push", _wal_file(scratch)], pg.server_env())
    assert r.returncode == 2
    assert "no repository configured" in _one_error_line(r) and "WALSHIP_REPO" in r.stderr


def test_unsupported_repository_url(scratch):
    r = pg.walship(["wal-push", _wal_file(scratch)], pg.server_env({"WALSHIP_REPO": "ftp://x/y"}))
    assert r.returncode == 2 and "unsupported repository URL" in _one_error_line(r)


def test_unreachable_s3_endpoint_names_it(scratch, moto):
    env = pg.server_env({**moto.env("some-bucket", endpoint=f"http://127.0.0.1:{pg.free_port()}"),
                         "WALSHIP_S3_MAX_RETRIES": "1", "WALSHIP_S3_RETRY_TIMEOUT": "1"})
    r = pg.walship(["wal-push", _wal_file(scratch)], env)
    assert r.returncode == 3
    line = _one_error_line(r)
    assert "cannot reach S3 at http://127.0.0.1:" in line and "WALSHIP_S3_ENDPOINT" in line


def test_missing_bucket_names_the_bucket(scratch, moto):
    r = pg.walship(["wal-push", _wal_file(scratch)], pg.server_env(moto.env("no-such-bucket-here")))
    assert r.returncode == 3
    assert "bucket no-such-bucket-here does not exist" in _one_error_line(r)


def test_missing_credentials(scratch, moto):
    env = {k: v for k, v in pg.server_env(moto.env(moto.new_bucket())).items()
           if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")}
    env["WALSHIP_S3_MAX_RETRIES"] = "0"
    env["WALSHIP_S3_RETRY_TIMEOUT"] = "2"
    env["HOME"] = str(scratch)              # no ~/.aws either
    r = pg.walship(["wal-push", _wal_file(scratch)], env)
    assert r.returncode == 3
    line = _one_error_line(r)
    # what was tried, not "access denied ... bucket policy"
    assert "no usable AWS credentials (tried AWS_ACCESS_KEY_ID" in line and "instance metadata at" in line
    assert "bucket policy" not in line


def test_repository_not_writable_by_postgres(scratch):
    if os.getuid() != 0:
        pytest.skip("needs root to create a directory the postgres user cannot write")
    repo = scratch / "root-owned"
    repo.mkdir(mode=0o755)
    r = pg.walship(["wal-push", _wal_file(scratch)], pg.server_env({"WALSHIP_REPO": f"file://{repo}"}))
    assert r.returncode == 3
    assert "permission denied" in _one_error_line(r) and "writable by the user that runs walship" in r.stderr


def test_invalid_wal_name(scratch):
    wal = pg.make_dir(scratch, "pg_wal", 0o755)
    bad = wal / "not-a-segment"
    bad.write_bytes(b"x")
    r = pg.walship(["wal-push", str(bad)], pg.server_env({"WALSHIP_REPO": f"file://{scratch}/repo"}))
    assert r.returncode == 1 and "is not a WAL file name" in _one_error_line(r)
    r = pg.walship(["wal-fetch", "../../etc/passwd", str(scratch / "x")],
                   pg.server_env({"WALSHIP_REPO": f"file://{scratch}/repo"}))
    assert r.returncode == 1 and "is not a WAL file name" in _one_error_line(r)


def test_corrupt_archived_segment_is_named_and_nothing_is_written(scratch):
    repo = pg.make_dir(scratch, "repo", 0o755)
    env = pg.server_env({"WALSHIP_REPO": f"file://{repo}"})
    path = _wal_file(scratch)
    assert pg.walship(["wal-push", path], env).returncode == 0
    obj = repo / "wal" / "000000010000000000000001"
    data = bytearray(obj.read_bytes())
    data[-30] ^= 0xFF
    obj.write_bytes(bytes(data))
    dest = scratch / "restored"
    r = pg.walship(["wal-fetch", "000000010000000000000001", str(dest)], {**env, "WALSHIP_FETCH_PREFETCH": "0"})
    assert r.returncode == 4
    assert "archived 000000010000000000000001 is corrupt" in _one_error_line(r)
    assert not dest.exists()


def test_store_failure_during_archive_recovery_stops_recovery_instead_of_ending_it(scratch, moto):
    # restore_command runs in PGDATA; recovery.signal there means archive recovery
    pgdata = pg.make_dir(scratch, "pgdata")
    (pgdata / "recovery.signal").touch()
    env = pg.server_env({**moto.env("b", endpoint=f"http://127.0.0.1:{pg.free_port()}"),
                         "WALSHIP_S3_MAX_RETRIES": "0", "WALSHIP_S3_RETRY_TIMEOUT": "1"})
    r = pg.walship(["wal-fetch", "000000010000000000000001", "pg_wal/RECOVERYXLOG"], env, cwd=str(pgdata))
    assert r.returncode == 126, r.stderr
    assert "stopping recovery" in r.stderr


# --- every setting checked before any work starts -----------------------------------------

@pytest.mark.parametrize("command", ["wal-push", "config"])
@pytest.mark.parametrize("setting, expected", [
    ({"WALSHIP_COMPRESSION_LEVEL": "99"}, "compression_level 99 is not valid for compression zstd"),
    ({"WALSHIP_S3_ENDPIONT": "http://127.0.0.1:9000"},
     "unknown environment variable WALSHIP_S3_ENDPIONT; did you mean WALSHIP_S3_ENDPOINT?"),
    ({"WALSHIP_S3_REQUEST_TIMEOUT": "-1"}, "s3_request_timeout = '-1' is out of range"),
    ({"WALSHIP_FETCH_RETRY_TIMEOUT": "60"}, "unknown environment variable WALSHIP_FETCH_RETRY_TIMEOUT"),
])
def test_a_bad_setting_is_refused_before_any_work(scratch, command, setting, expected):
    repo = pg.make_dir(scratch, "repo", 0o755)
    args = ["wal-push", _wal_file(scratch)] if command == "wal-push" else ["config"]
    r = pg.walship(args, pg.server_env({"WALSHIP_REPO": f"file://{repo}", **setting}))
    assert r.returncode == 2, r.stderr
    assert expected in _one_error_line(r) and r.stdout == ""
    assert not any(repo.iterdir())                       # nothing was archived


def test_backup_part_size_zero_is_refused_before_the_backup_starts(scratch):
    # it used to loop forever writing empty parts (25,733 objects in 40 s)
    repo = pg.make_dir(scratch, "repo", 0o755)
    pgdata = pg.make_dir(scratch, "pgdata")
    for size in ("0", "-1"):
        r = pg.walship(["backup-push", str(pgdata)],
                       pg.server_env({"WALSHIP_REPO": f"file://{repo}", "WALSHIP_BACKUP_PART_SIZE": size}))
        assert r.returncode == 2, r.stderr
        assert f"backup_part_size = '{size}' is out of range (WALSHIP_BACKUP_PART_SIZE); use 65536 to" \
            in _one_error_line(r)
    assert not any(repo.iterdir())


def test_a_read_only_repository_filesystem_is_named(scratch):
    if os.getuid() != 0:
        pytest.skip("needs root to mount a read-only filesystem")
    repo = scratch / "ro-repo"
    repo.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(repo)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        r = pg.walship(["wal-push", _wal_file(scratch)], pg.server_env({"WALSHIP_REPO": f"file://{repo}"}))
    finally:
        subprocess.run(["umount", str(repo)], check=True)
    assert r.returncode == 3, r.stderr
    line = _one_error_line(r)
    assert "read-only file system" in line and "remount the repository filesystem read-write" in line
    assert "permission denied" not in line
