"""Command-line parser of `walship wal-receive` (light: imported on every run)."""

from __future__ import annotations

HANDLER = "walship.receive.commands:run"


def add_parsers(sub, common) -> None:
    p = sub.add_parser(
        "wal-receive", parents=[common],
        help="stream WAL from the primary into the repository (a long-running service; RPO zero with --synchronous)",
        description="Connects with the replication protocol, uses a physical replication slot (created when "
                    "missing) and stores the stream into the repository, reporting to the primary as flushed only "
                    "WAL that is durable: fsynced in --spool, and with --synchronous stored in the repository too "
                    "(set synchronous_standby_names = 'walship' on the primary for commits to wait for it).")
    p.add_argument("--pg", metavar="CONNINFO", help="libpq connection string (default: PGHOST, PGPORT, PGUSER)")
    p.add_argument("--slot", help="physical replication slot (setting receive_slot, default walship)")
    p.add_argument("--spool", help="local directory for WAL not yet stored (setting receive_spool_dir)")
    p.add_argument("--synchronous", action="store_true", default=None,
                   help="acknowledge WAL only once it is in the repository (setting receive_synchronous)")
    p.add_argument("--asynchronous", action="store_false", dest="synchronous",
                   help="acknowledge WAL once it is in the spool; store it every --upload-interval seconds")
    p.add_argument("--upload-interval", type=float, help="asynchronous: seconds between two stores "
                                                         "(setting receive_upload_interval, default 5)")
    p.add_argument("--application-name", help="application_name, the name synchronous_standby_names lists "
                                               "(setting receive_application_name, default walship)")
    p.set_defaults(handler=HANDLER)
