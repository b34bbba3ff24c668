"""Command-line parsers of the archive commands (light: imported whenever the parser is built).

archive_command's and restore_command's plain forms skip the parser (cli.py's fast paths) and reach the
same handlers in archive/commands.py."""

from __future__ import annotations

import argparse

from walship.config import add_setting_flags

HANDLERS = "walship.archive.commands"


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("wal-push", parents=[common],
                       help="archive a WAL file (archive_command = 'walship wal-push %%p')")
    p.add_argument("wal_path")
    add_setting_flags(p, "wal-push")
    p.set_defaults(handler=f"{HANDLERS}:wal_push")

    p = sub.add_parser("wal-fetch", parents=[common],
                       help="restore a WAL file (restore_command = 'walship wal-fetch %%f %%p')")
    p.add_argument("wal_name")
    p.add_argument("dest_path")
    add_setting_flags(p, "wal-fetch")
    p.add_argument("--blind-restore", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(handler=f"{HANDLERS}:wal_fetch")

    p = sub.add_parser("wal-prefetch", parents=[common], help="(internal) download WAL ahead of wal-fetch")
    p.add_argument("wal_name")
    p.add_argument("directory")
    p.add_argument("segment_size", type=int)
    add_setting_flags(p, "wal-prefetch")
    p.set_defaults(handler=f"{HANDLERS}:wal_prefetch")

    p = sub.add_parser(
        "quarantine", parents=[common],
        help="set an archived WAL file aside (after an investigation): moved under quarantine/, never deleted",
        description="Moves wal/NAME to quarantine/<UTC time>/wal/NAME with a note (who, when, why, digest), so that "
                    "wal-push can archive the right file under that name. Use it only once you know the stored "
                    "object is wrong, e.g. after `wal-push` refused a segment with 'different content' and you "
                    "established which cluster the stored one came from. Nothing is deleted: the object stays "
                    "under quarantine/ until you remove it yourself.")
    p.add_argument("wal_name", metavar="NAME", help="WAL file name, e.g. 000000010000000000000042")
    p.add_argument("--reason", required=True, help="why (kept in the note beside the object)")
    p.set_defaults(handler=f"{HANDLERS}:quarantine_command")
