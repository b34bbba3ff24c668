"""The command lines PostgreSQL runs most often skip the argument parser: exactly those, nothing else."""

import pytest

from walship.backup.recovery import restore_command
from walship.cli import _plain_wal_fetch


def test_the_restore_command_backup_fetch_writes_takes_the_fast_path():
    command = restore_command("/opt/walship/venv/bin/walship", "s3://bucket/pg", "/etc/walship.toml")
    words = command.split(" || ", 1)[1].split()      # what runs when the queue does not hold the segment
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


def _wal_dir(tmp_path, names):
    from tests.support.walfiles import segment_bytes
    wal = tmp_path / "pg_wal"
    (wal / "archive_status").mkdir(parents=True)
    for name in names:
        (wal / name).write_bytes(segment_bytes(name, 1 << 20))
        (wal / "archive_status" / f"{name}.ready").touch()
    return wal


def _count_calls(monkeypatch, module, name):
    calls = []
    original = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)
    monkeypatch.setattr(module, name, counted)
    return calls


def test_a_cold_wal_push_loads_the_settings_once_and_asks_the_spool_once(tmp_path, monkeypatch):
    from walship import cli, config
    from walship.archive import spool
    from walship.storage import open_store
    first, second = "000000010000000000000001", "000000010000000000000002"
    wal = _wal_dir(tmp_path, [first, second])
    monkeypatch.setenv("WALSHIP_REPO", f"file://{tmp_path}/repo")
    monkeypatch.setenv("WALSHIP_LOG_DESTINATION", "none")
    loads = _count_calls(monkeypatch, config, "load_settings")
    asks = _count_calls(monkeypatch, spool, "acknowledge")
    assert cli.main(["wal-push", str(wal / first)]) == 0          # stores both: the second goes ahead
    assert (len(loads), len(asks)) == (1, 1)
    store = open_store(f"file://{tmp_path}/repo", config.Settings())
    assert store.head("wal/" + first) is not None and store.head("wal/" + second) is not None
    assert cli.main(["wal-push", str(wal / second)]) == 0         # acknowledged from its marker
    assert (len(loads), len(asks)) == (2, 2)
    assert not spool.is_recorded(second, spool.spool_dir(str(wal / second)))


def test_the_plain_wal_push_reports_a_configuration_error_in_one_line(tmp_path, monkeypatch, capsys):
    from walship import cli
    wal = _wal_dir(tmp_path, ["000000010000000000000001"])
    monkeypatch.setenv("WALSHIP_LOG_FORMAT", "yaml")
    assert cli.main(["wal-push", str(wal / "000000010000000000000001")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown log format 'yaml'" in err


def test_every_setting_flag_is_declared_once_in_the_option_table():
    from walship import cli, config
    parser = cli._parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    flagged = {o.name: o for o in config.OPTIONS.values() if o.flag}
    assert {"repo", "gpg_key_id", "push_concurrency", "backup_concurrency", "fetch_prefetch"} <= set(flagged)
    for command, p in sub.items():
        dests = {a.dest: a for a in p._actions}
        for name, option in flagged.items():
            wanted = not option.flag_commands or command in option.flag_commands
            if command in ("keygen", "version"):
                wanted = False
            assert (name in dests) == wanted, (command, name)
            if wanted:
                assert option.flag in dests[name].option_strings
    args = sub["wal-push"].parse_args(["--pool-size", "3", "--repo", "file:///r", "--terse", "x"])
    assert cli._flags(args) == {**{n: None for n in flagged}, "push_concurrency": 3, "repo": "file:///r",
                                "log_level": "warning"}


def test_a_restore_command_miss_imports_none_of_the_heavy_modules(tmp_path):
    """PostgreSQL asks restore_command for about 20 history files that do not exist per restore, one process each:
    such a call must not pay for logging, typing, OpenSSL's hashlib, tarfile or the S3 client it does not use."""
    import subprocess
    import sys

    from walship.repo import record
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / record.RECORD_KEY).write_text(record.RepositoryRecord(
        "a" * 32, "7311", 15, 16 << 20, "2026-12-02T05:40:00Z", "link").to_json().decode())
    probe = ("import sys\nfrom walship.cli import main\nrc = main(['wal-fetch', '00000002.history', 'RECOVERYHISTORY'])\n"
             "heavy = sorted({'logging', 'typing', 'hashlib', 'tarfile', 'obstore', 'argparse', 'dataclasses'}"
             " & set(sys.modules))\nprint(rc, heavy)")
    r = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "WALSHIP_REPO": f"file://{repo}"})
    assert r.stdout.split("\n")[0] == "1 []", (r.stdout, r.stderr)
    assert "00000002.history is not in the archive" in r.stderr
