"""Command-line parser of `walship verify` (light: imported on every run)."""

from __future__ import annotations


def add_parsers(sub, common) -> None:
    p = sub.add_parser("verify", parents=[common],
                       help="read backups and WAL back from the repository and check them (exit 0 = restorable)")
    p.add_argument("name", nargs="?", help="a backup name or LATEST (default: every backup, as --all)")
    p.add_argument("--all", action="store_true", help="every backup (the default)")
    p.add_argument("--quick", action="store_true",
                   help="check WAL continuity and timelines from the listing only, without reading WAL contents")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler="walship.verify.commands:run")
