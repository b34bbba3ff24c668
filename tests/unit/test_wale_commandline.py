"""WAL-E command lines, rewritten into walship's and then parsed by walship's own parser."""

import pytest

from walship.cli import _parser
from walship.walecompat.commandline import UnsupportedOption, translate


def parsed(*argv):
    new, notices = translate(list(argv))
    return _parser().parse_args(new), notices


def test_walship_command_lines_pass_unchanged():
    for argv in (["wal-push", "pg_wal/000000010000000000000001"], ["backup-list", "--json"],
                 ["delete", "--retain", "3", "--dry-run"], ["--version"], []):
        assert translate(argv) == (argv, [])


def test_global_options_before_the_command_move_behind_it():
    args, _ = parsed("--terse", "--s3-prefix", "s3://b/p", "wal-push", "pg_wal/000000010000000000000001")
    assert (args.command, args.repo, args.terse, args.wal_path) == \
        ("wal-push", "s3://b/p", True, "pg_wal/000000010000000000000001")
    args, _ = parsed("--file-prefix=file://localhost/srv/wal", "--gpg-key-id", "ABCD", "backup-list")
    assert (args.command, args.repo, args.gpg_key_id) == ("backup-list", "file:///srv/wal", "ABCD")
    args, _ = parsed("--aws-instance-profile", "wal-fetch", "000000010000000000000001", "pg_wal/RECOVERYXLOG")
    assert args.aws_instance_profile and args.wal_name == "000000010000000000000001"


@pytest.mark.parametrize("command, rest, attribute, value", [
    ("wal-push", ["-p", "8", "pg_wal/000000010000000000000001"], "push_concurrency", 8),
    ("wal-push", ["--pool-size", "4", "pg_wal/000000010000000000000001"], "push_concurrency", 4),
    ("wal-fetch", ["-p", "0", "000000010000000000000001", "/tmp/x"], "fetch_prefetch", 0),
    ("wal-fetch", ["--prefetch", "16", "000000010000000000000001", "/tmp/x"], "fetch_prefetch", 16),
    ("backup-push", ["-p", "2", "/var/lib/postgresql/15/main"], "backup_concurrency", 2),
    ("backup-fetch", ["--pool-size", "3", "/srv/restore", "LATEST"], "backup_concurrency", 3),
])
def test_short_and_long_pool_options_per_command(command, rest, attribute, value):
    args, _ = parsed(command, *rest)
    assert getattr(args, attribute) == value


def test_backup_fetch_keeps_wale_restore_options():
    args, _ = parsed("backup-fetch", "--blind-restore", "--restore-spec", "spec.json", "/srv/restore",
                     "base_000000010000000000000004_00000040")
    assert (args.dest, args.name, args.blind_restore, args.restore_spec) == \
        ("/srv/restore", "base_000000010000000000000004_00000040", True, "spec.json")


def test_backup_push_rate_limit_becomes_max_rate_in_bytes_per_second():
    from walship.config import load_settings, parse_rate

    for argv in (["--cluster-read-rate-limit", "1000000"], ["--cluster-read-rate-limit=1000000"]):
        args, notices = parsed("backup-push", *argv, "--while-offline", "/pgdata")
        assert (args.pgdata, args.while_offline, notices) == ("/pgdata", True, [])
        settings = load_settings({"backup_max_rate": args.backup_max_rate}, env={})
        assert parse_rate(settings.backup_max_rate) == 1_000_000


def test_delete_retain_without_confirm_is_a_dry_run_like_wale():
    args, _ = parsed("delete", "retain", "7")
    assert (args.retain, args.dry_run, args.include_wal_e, args.wale_args) == (7, True, True, [])


def test_delete_with_confirm_deletes():
    args, _ = parsed("delete", "--confirm", "retain", "7")
    assert (args.retain, args.dry_run, args.confirm, args.include_wal_e) == (7, False, True, True)


def test_delete_before_a_backup_name_and_wales_short_dry_run():
    args, _ = parsed("delete", "-n", "--confirm", "before", "base_000000010000000000000004_00000040")
    assert (args.before, args.dry_run) == ("base_000000010000000000000004_00000040", True)


def test_walships_own_delete_is_not_turned_into_a_dry_run():
    args, _ = parsed("delete", "--retain", "7")
    assert (args.retain, args.dry_run, args.include_wal_e) == (7, False, False)


@pytest.mark.parametrize("argv, message", [
    (["delete", "--confirm", "everything"], "delete everything` is not supported"),
    (["delete", "old-versions"], "delete old-versions` is not needed"),
    (["-k", "AKIA", "wal-push", "x"], "visible to every user in ps"),
    (["--wabs-prefix", "wabs://c/p", "backup-list"], "only in S3 or a filesystem"),
    (["--s3-prefix"], "needs a value"),
])
def test_wale_options_walship_does_not_take_are_refused_with_the_reason(argv, message):
    with pytest.raises(UnsupportedOption, match=message):
        translate(argv)
