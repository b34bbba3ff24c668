"""Command-line parsers of the base-backup commands (kept light: imported on every run)."""

from __future__ import annotations

import argparse

HANDLER = "walship.backup.commands:run"


def add_parsers(sub, common) -> None:
    p = sub.add_parser("backup-push", parents=[common], help="take a hot base backup of a running cluster")
    p.add_argument("pgdata")
    p.add_argument("--pg", help="libpq connection string (default: PGHOST, PGPORT, PGUSER, PGDATABASE)")
    p.add_argument("--primary", metavar="CONNINFO",
                   help="backing up a standby: the primary, where walship runs pg_switch_wal() at the end so "
                        "that the WAL ending the backup is archived at once instead of at its archive_timeout")
    p.add_argument("--retain", type=int, help="after success, keep only the newest N backups (and their WAL)")
    p.add_argument("--pool-size", type=int, dest="backup_concurrency", help="parallel compress+upload workers")
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
                    "profile) or in the 0600 config file, as for archive_command.")
    p.add_argument("dest")
    p.add_argument("name", help="backup name or LATEST")
    p.add_argument("--target-time")
    p.add_argument("--target-lsn")
    p.add_argument("--target-xid")
    p.add_argument("--target-name")
    p.add_argument("--target-immediate", action="store_true")
    p.add_argument("--target-action", choices=["promote", "pause", "shutdown"])
    p.add_argument("--target-timeline")
    p.add_argument("--target-exclusive", action="store_true", help="stop just before the target")
    p.add_argument("--tablespace", action="append", metavar="OID=DIR",
                   help="restore tablespace OID into DIR instead of its original location (repeatable)")
    p.add_argument("--pool-size", type=int, dest="backup_concurrency")
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
