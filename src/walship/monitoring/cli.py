"""Command-line parsers of `walship check backup|archive` and `walship status` (light: imported on every run)."""

from __future__ import annotations

HANDLER = "walship.monitoring.commands:run"


def add_parsers(sub, common) -> None:
    check = sub.add_parser("check", parents=[common],
                           help="Nagios/Icinga plugin checks (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN); "
                                "alone: end to end, force a WAL switch and wait for it in the repository")
    check.add_argument("--pg", metavar="CONNINFO", help="libpq connection string of the primary")
    check.add_argument("--timeout", type=float, default=60, metavar="S",
                       help="how long to wait for the segment (default 60)")
    kinds = check.add_subparsers(dest="check", metavar="CHECK")

    p = kinds.add_parser("backup", parents=[common], help="age, size and duration of the newest base backup")
    p.add_argument("--warning", "-w", default="26h", metavar="AGE", help="WARNING from this age (default 26h)")
    p.add_argument("--critical", "-c", default="50h", metavar="AGE", help="CRITICAL from this age (default 50h)")

    p = kinds.add_parser("archive", parents=[common],
                         help="archiver failures, .ready backlog, pg_wal size, newest archived segment, gaps")
    p.add_argument("--pg", metavar="CONNINFO", help="libpq connection string (default: PGHOST, PGPORT, PGUSER, ...)")
    p.add_argument("--backlog-warning", type=int, default=10, metavar="N", help=".ready files (default 10)")
    p.add_argument("--backlog-critical", type=int, default=100, metavar="N", help=".ready files (default 100)")
    p.add_argument("--age-warning", metavar="AGE", help="newest archived segment older than AGE (default: off)")
    p.add_argument("--age-critical", metavar="AGE", help="newest archived segment older than AGE (default: off)")

    p = kinds.add_parser("receive", parents=[common],
                         help="wal-receive: connected, how far the repository is behind, last store")
    p.add_argument("--pg", metavar="CONNINFO", help="the server wal-receive streams from (default: PGHOST, ...)")
    p.add_argument("--application-name", help="wal-receive's application_name (default: receive_application_name)")
    p.add_argument("--lag-warning", type=int, default=16 << 20, metavar="BYTES", help="default 16 MiB")
    p.add_argument("--lag-critical", type=int, default=256 << 20, metavar="BYTES", help="default 256 MiB")
    p.add_argument("--age-warning", default="1m", metavar="AGE", help="last store older, with lag (default 1m)")
    p.add_argument("--age-critical", default="5m", metavar="AGE", help="last store older, with lag (default 5m)")

    p = sub.add_parser("status", parents=[common],
                       help="backups, recoverable window, gaps and last failures at a glance")
    p.add_argument("--pg", metavar="CONNINFO", help="libpq connection string for the archiver's state")
    p.add_argument("--json", action="store_true")

    for parser in (check, kinds.choices["backup"], kinds.choices["archive"], kinds.choices["receive"]):
        parser.set_defaults(handler=HANDLER, plugin=True)
        parser.error = _plugin_usage_error
    sub.choices["status"].set_defaults(handler=HANDLER)


def _plugin_usage_error(message: str):
    """argparse exits 2 on a bad flag, which Icinga would show as CRITICAL: a plugin says UNKNOWN (3)."""
    import sys
    print(f"UNKNOWN: {message}; see `walship check --help`")
    sys.exit(3)
