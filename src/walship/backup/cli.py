"""Command-line parsers of the base-backup commands (kept light: imported on every run)."""

from __future__ import annotations

import argparse

from walship.config import add_setting_flags

HANDLER = "walship.backup.commands:run"


def add_parsers(sub, common) -> None:
    p = sub.add_parser("backup-push", parents=[common], help="take a hot base backup of a running cluster")
    p.add_argument("pgdata")
    p.add_argument("--pg", help="libpq connection string (default: PGHOST, PGPORT, PGUSER, PGDATABASE)")
    p.add_argument("--primary", metavar="CONNINFO",
                   help="backing up a standby: the primary, where walship runs pg_switch_wal() at the end so "
                        "that the WAL ending the backup is archived at once instead of at its archive_timeout")
    p.add_argument("--retain", type=int, help="after success, keep only the newest N backups (and their WAL), "
                                              "and every backup they depend on")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--incremental", dest="backup_mode", action="store_const", const="incremental",
                      help="store only the blocks changed since the newest backup (a full when there is none)")
    kind.add_argument("--full", dest="backup_mode", action="store_const", const="full",
                      help="a full backup, whatever full_every says")
    kind.add_argument("--from", dest="parent", metavar="NAME", help="an incremental backup following backup NAME")
    add_setting_flags(p, "backup-push")
    p.add_argument("--while-offline", action="store_true", help="back up a stopped cluster")
    p.add_argument("--progress", choices=["auto", "bar", "line", "none"], default="auto")

    p = sub.add_parser("backup-list", parents=[common], help="list complete base backups")
    p.add_argument("--json", action="store_true")
    p.add_argument("--detail", action="store_true", help=argparse.SUPPRESS)

    p = sub.add_parser(
        "backup-fetch", parents=[common], help="restore a base backup for point-in-time recovery",
        description="Restores a backup into DEST (absent or empty) and writes recovery.signal and, in "
                    "postgresql.auto.conf, a restore_command calling this walship with --repo (and --config "
                    "when a config file was used) plus the recovery target. It never writes credentials "
                    "there: the server must find them in its own environment (AWS_* variables, instance "
                    "profile) or in the 0600 config file, as for archive_command. The restored server is a "
                    "COPY (archive_mode = off: its WAL never reaches this repository) unless --as-primary "
                    "says it replaces the primary. With LATEST and a target, the newest backup consistent "
                    "before the target is restored. See docs/restoring.md.")
    p.add_argument("dest")
    p.add_argument("name", help="backup name or LATEST")
    p.add_argument("--target-time", help="a timestamp with its UTC offset or zone, e.g. '2026-12-02 09:30:00+00'")
    p.add_argument("--target-lsn", help="an LSN, e.g. 16/B374D848")
    p.add_argument("--target-xid", help="a transaction ID (decimal)")
    p.add_argument("--target-name", help="a restore point made with pg_create_restore_point()")
    p.add_argument("--target-immediate", action="store_true", help="stop as soon as the backup is consistent")
    p.add_argument("--target-action", choices=["promote", "pause", "shutdown"],
                   help="what the server does at the target (PostgreSQL's default: pause, read-only until "
                        "SELECT pg_wal_replay_resume())")
    p.add_argument("--target-timeline", help="latest (default), current (the backup's), or a timeline number")
    p.add_argument("--target-exclusive", action="store_true", help="stop just before the target")
    p.add_argument("--target-beyond-archive", action="store_true",
                   help="accept a target past the end of the archived WAL (WAL is still being archived)")
    p.add_argument("--as-primary", action="store_true",
                   help="the restored server replaces the lost primary: it keeps archiving into this repository "
                        "after promotion, and later restores follow its timeline (default: a copy that "
                        "archives nothing)")
    p.add_argument("--tablespace", action="append", metavar="OID=DIR",
                   help="restore tablespace OID into DIR instead of its original location (repeatable)")
    add_setting_flags(p, "backup-fetch")
    p.add_argument("--blind-restore", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--restore-spec", help=argparse.SUPPRESS)
    p.add_argument("--progress", choices=["auto", "bar", "line", "none"], default="auto")

    p = sub.add_parser("delete", parents=[common], help="retention: delete old backups and the WAL no kept backup needs")
    p.add_argument("--retain", type=int, help="keep the newest N backups")
    p.add_argument("--before", help="delete backups older than this backup NAME or time")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--confirm", action="store_true", help="WAL-E's flag: without --dry-run, deletes anyway")
    p.add_argument("--include-wal-e", action="store_true", help="also expire WAL-E backups and their WAL")
    p.add_argument("--pgdata", help="this host's data directory (default $PGDATA): delete refuses a repository "
                                    "another cluster owns; without it walship asks the local server, if any")
    p.add_argument("--pg", metavar="CONNINFO", help="libpq connection string of this host's server")
    p.add_argument("wale_args", nargs="*", help=argparse.SUPPRESS)

    for name in ("backup-push", "backup-list", "backup-fetch", "delete"):
        sub.choices[name].set_defaults(handler=HANDLER)
