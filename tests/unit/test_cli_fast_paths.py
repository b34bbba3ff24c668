"""The command lines PostgreSQL runs most often skip the argument parser: exactly those, nothing else."""

import pytest

from walship.cli import _plain_wal_fetch
from walship.backup.recovery import restore_command


def test_the_restore_command_backup_fetch_writes_takes_the_fast_path():
    words = restore_command("/opt/walship/venv/bin/walship", "s3://bucket/pg", "/etc/walship.toml").split()
    argv = [w.replace("%f", "000000010000000000000003").replace("%p", "pg_wal/RECOVERYXLOG") for w in words[1:]]
    args = _plain_wal_fetch(argv)
    assert (args.wal_name, args.dest_path, args.repo, args.config) == (
        "000000010000000000000003", "pg_wal/RECOVERYXLOG", "s3://bucket/pg", "/etc/walship.toml")
    plain = _plain_wal_fetch(["wal-fetch", "00000002.history", "pg_wal/RECOVERYHISTORY"])
    assert (plain.repo, plain.config) == (None, None)


@pytest.mark.parametrize("argv", [
    ["wal-fetch", "X", "p", "--prefetch", "0"],             # any other option: the parser handles it
    ["wal-fetch", "X", "p", "--repo"],                      # a flag without its value
    ["wal-fetch", "X", "p", "--repo", "--config"],
    ["wal-fetch", "X", "p", "--repo", "a", "--repo", "b"],  # repeated
    ["wal-fetch", "X", "p", "--repo=s3://b/p"],
    ["wal-fetch", "X"],
    ["wal-fetch", "--help", "p"],
    ["wal-push", "X", "p"],
])
def test_anything_else_goes_through_the_parser(argv):
    assert _plain_wal_fetch(argv) is None
