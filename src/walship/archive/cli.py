"""Command-line parser of `walship quarantine` (light: imported on every run).

wal-push and wal-fetch are parsed in cli.py itself: they have fast paths that skip the parser."""

from __future__ import annotations


def add_parsers(sub, common) -> None:
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
    p.set_defaults(handler="walship.archive.commands:run")
