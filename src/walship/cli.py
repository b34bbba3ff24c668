"""walship's command line: a thin layer over the library.

Each command's module is imported only when that command runs, so that
`walship wal-push` (archive_command, one process per WAL segment) stays cheap.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from walship.errors import WalshipError   # a plain module with no imports: free on every path

EXIT_CODES_HELP = """\
exit codes:
  0    success
  1    failure (wal-push: PostgreSQL retries the segment; wal-fetch: the file is
       not in the archive and nothing after it is: the real end of recovery)
  2    bad command line or configuration
  3    the repository is unreachable or refused access
  4    integrity: corrupt object, checksum mismatch, or an archived file exists
       with different content
  126  wal-fetch during archive recovery, any failure but the real end of the
       archive (a gap, a wrong segment, destination, configuration, key, store):
       PostgreSQL stops recovery instead of ending it at the wrong point
  check commands: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (Nagios plugin API)
"""


# Packages that add commands: each has a light `cli` module with add_parsers(sub, common),
# whose parsers set `handler="package.module:function"`, called as
# function(command, args, settings, store_factory) -> exit code.
COMMAND_MODULES = (
    "walship.archive.cli",
    "walship.backup.cli",
    "walship.monitoring.cli",
    "walship.verify.cli",
)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "wal-push" and not argv[1].startswith("-"):
        rc = _fast_wal_push(argv[1])
        if rc is not None:
            return rc
        # the plain archive_command form needs no argument parser (~25 ms saved per cold call)
        from types import SimpleNamespace
        return _execute("wal-push", SimpleNamespace(command="wal-push", wal_path=argv[1]))
    fetch = _plain_wal_fetch(argv)
    if fetch is not None:
        # restore_command runs once per file during recovery, several times where nothing is found
        # (the next segment, timeline history files): building the parser would cost ~25 ms each
        return _execute("wal-fetch", fetch)
    return _run(argv)


def _plain_wal_fetch(argv: list[str]):
    """The arguments of `wal-fetch NAME PATH [--repo URL] [--config FILE]`, the form backup-fetch
    writes into restore_command; None for any other command line (the parser handles it)."""
    if len(argv) not in (3, 5, 7) or argv[0] != "wal-fetch" or any(a.startswith("-") for a in argv[1:3]):
        return None
    options = dict(zip(argv[3::2], argv[4::2]))
    if len(options) != (len(argv) - 3) // 2 or not set(options) <= {"--repo", "--config"}:
        return None
    if any(not v or v.startswith("-") for v in options.values()):
        return None
    from types import SimpleNamespace
    return SimpleNamespace(command="wal-fetch", wal_name=argv[1], dest_path=argv[2],
                           repo=options.get("--repo"), config=options.get("--config"))


def _fast_wal_push(wal_path: str) -> int | None:
    """The archive_command fast path: acknowledge a segment an earlier call already stored."""
    import os

    from walship.archive import spool
    from walship.errors import WalshipError
    try:
        from walship.config import load_settings
        settings = load_settings()
    except WalshipError:
        return None  # the full path reports the configuration error
    if not spool.acknowledge(wal_path, spool.spool_dir(wal_path, settings.spool_dir), spool.destination(settings)):
        return None
    from walship import logs
    logs.setup("wal-push", settings)
    logs.info("wal_pushed", f"{os.path.basename(wal_path)} archived (by an earlier call)",
              segment=os.path.basename(wal_path))
    return 0


def _parser():
    import argparse

    from walship import __version__

    parser = argparse.ArgumentParser(
        prog="walship",
        description="PostgreSQL continuous archiving and point-in-time recovery to S3 "
                    "or a filesystem repository.",
        epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"walship {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--repo", help="repository: s3://bucket/prefix or file:///path (env WALSHIP_REPO)")
    common.add_argument("--config", help="TOML config file (env WALSHIP_CONFIG)")
    common.add_argument("--log-format", choices=["text", "json"], help="log lines as text or JSON")
    common.add_argument("--log-destination", choices=["stderr", "syslog", "both", "none"])
    common.add_argument("--syslog-program", help="syslog program name ('{command}' = the command)")
    # WAL-E's global flags, accepted so that WAL-E command lines keep working.
    common.add_argument("--terse", action="store_true", help=argparse.SUPPRESS)
    common.add_argument("--gpg-key-id", help=argparse.SUPPRESS)
    common.add_argument("--aws-instance-profile", action="store_true", help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("wal-push", parents=[common], help="archive a WAL file (archive_command = 'walship wal-push %%p')")
    p.add_argument("wal_path")
    p.add_argument("--pool-size", type=int, dest="push_concurrency", help="parallel uploads (WAL-E's flag)")

    p = sub.add_parser("wal-fetch", parents=[common],
                       help="restore a WAL file (restore_command = 'walship wal-fetch %%f %%p')")
    p.add_argument("wal_name")
    p.add_argument("dest_path")
    p.add_argument("--prefetch", type=int, dest="fetch_prefetch", help="segments to download ahead (0 = off)")
    p.add_argument("--blind-restore", action="store_true", help=argparse.SUPPRESS)

    p = sub.add_parser("wal-prefetch", parents=[common], help="(internal) download WAL ahead of wal-fetch")
    p.add_argument("wal_name")
    p.add_argument("directory")
    p.add_argument("segment_size", type=int)
    p.add_argument("--prefetch", type=int, dest="fetch_prefetch", help="segments to download ahead")

    for module in COMMAND_MODULES:
        __import__(module, fromlist=["add_parsers"]).add_parsers(sub, common)

    p = sub.add_parser("config", parents=[common], help="print the effective settings (secrets masked)")
    p.add_argument("--json", action="store_true")

    sub.add_parser("keygen", help="print a new random encryption key (base64) for WALSHIP_ENCRYPTION_KEY_FILE")
    sub.add_parser("version", help="print the version")
    return parser


def _flags(args) -> dict:
    keys = ("repo", "log_format", "log_destination", "syslog_program", "push_concurrency",
            "fetch_prefetch", "backup_concurrency", "gpg_key_id")
    flags = {k: getattr(args, k, None) for k in keys}
    if getattr(args, "terse", False):
        flags["log_level"] = "warning"         # WAL-E's --terse: warnings and errors only
    return flags


EXIT_CLOSED_PIPE = 141    # 128 + SIGPIPE: what a shell reports for a tool whose reader went away


def _exit_quietly_on_closed_pipe(run: Callable[[list[str]], int]) -> Callable[[list[str]], int]:
    """`walship config | head -1`: the reader closing the pipe is no error to report, and no traceback."""
    def guarded(argv: list[str]) -> int:
        try:
            try:
                return run(argv)
            finally:
                sys.stdout.flush()          # here, not at exit: a closed pipe is then caught below
        except BrokenPipeError:
            import os
            # stdout still holds unwritten output: point it at /dev/null so that the interpreter's last
            # flush at exit does not complain about the closed pipe either
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            return EXIT_CLOSED_PIPE
    return guarded


@_exit_quietly_on_closed_pipe
def _run(argv: list[str]) -> int:
    from walship.errors import EXIT_USAGE
    from walship.walecompat.commandline import UnsupportedOption, translate
    try:
        argv, notices = translate(argv)
    except UnsupportedOption as exc:
        print(f"walship: ERROR: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for notice in notices:
        print(f"walship: WARNING: {notice}", file=sys.stderr)
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        if argv[:1] == ["wal-fetch"] and exc.code not in (0, None):
            # a restore_command the parser refuses must not read as "end of the archive" either
            from walship import logs
            logs.setup("wal-fetch")
            return _wal_fetch_exit_code(None)
        raise
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    if args.command == "keygen":
        from walship.crypto import generate_key
        print(generate_key())
        return 0
    if args.command == "version":
        from walship import __version__
        print(f"walship {__version__}")
        return 0
    return _execute(args.command, args)


def _execute(command: str, args) -> int:
    """Load the settings, set up logging, run the command: every expected failure is one line."""
    from walship import logs
    from walship.errors import WalshipError
    try:
        from walship.config import load_settings
        settings = load_settings(_flags(args), config_path=getattr(args, "config", None))
    except WalshipError as exc:
        if getattr(args, "plugin", False):  # Nagios plugin API: a check that cannot run is UNKNOWN
            print(f"UNKNOWN: {exc.one_line()}")
            return 3
        if command == "wal-fetch":
            logs.setup(command)
            logs.error("error", exc.one_line(), error=exc.one_line())
            return _wal_fetch_exit_code(exc)
        print(f"walship {command}: ERROR: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    logs.setup(command, settings)
    try:
        return _dispatch(command, args, settings)
    except WalshipError as exc:
        logs.error("error", exc.one_line(), error=exc.one_line())
        return _wal_fetch_exit_code(exc) if command == "wal-fetch" else exc.exit_code
    except KeyboardInterrupt:
        logs.error("interrupted", "interrupted")
        return 130
    except Exception as exc:
        if command != "wal-fetch":
            raise
        # a bug, not an answer: say what it was in one line (Python's own exit 1 would end recovery)
        logs.error("error", f"unexpected error: {type(exc).__name__}: {exc}", error=type(exc).__name__)
        return _wal_fetch_exit_code(None)


def _wal_fetch_exit_code(exc: WalshipError | None) -> int:
    """restore_command's exit code for a wal-fetch that did not serve its file.

    PostgreSQL reads any exit below 126 during archive recovery as "not in the archive" and ends
    recovery there, selects a new timeline and promotes. So wal-fetch answers 1 only for the real end
    of the archive (NotInArchive, raised only once the miss is proven to be that end, and answered in
    _dispatch); every other failure (a gap, the destination unwritable or full, the configuration or the
    encryption key unavailable, the repository missing, unmounted or failing, a refused segment, a bug)
    exits 126 during archive recovery: PostgreSQL stops, and starting the server again after the fix
    goes on where it stopped. A standby (standby.signal) retries whatever the code: it gets the error's own.
    exc: the WalshipError, or None for a failure that is not one (its exit would be 1)."""
    from walship.errors import EXIT_ABORT_RECOVERY, EXIT_FAILURE, NotInArchive
    if isinstance(exc, NotInArchive):
        return exc.exit_code
    from walship.pg.recoveryfiles import in_archive_recovery
    if in_archive_recovery():    # restore_command runs in PGDATA
        from walship import logs
        logs.error("recovery_aborted",
                   "stopping recovery: ending it here would lose the WAL still in the repository; "
                   "fix the cause above and start the server again")
        return EXIT_ABORT_RECOVERY
    return exc.exit_code if exc is not None else EXIT_FAILURE


def _store_factory(settings):
    from walship.config import require_repo
    from walship.storage import open_store

    def factory():
        return open_store(require_repo(settings), settings)
    return factory


def _dispatch(command: str, args, settings) -> int:
    if command == "wal-push":
        from walship.archive.push import wal_push
        from walship.monitoring.hooks import archive_result
        try:
            results = wal_push(args.wal_path, settings, _store_factory(settings)())
        except Exception as exc:
            archive_result(settings, ok=False, error=exc, segment=args.wal_path)
            raise
        archive_result(settings, ok=True, results=results, segment=args.wal_path)
        return 0
    if command == "wal-fetch":
        from walship.archive.fetch import wal_fetch
        from walship.errors import NotInArchive
        try:
            wal_fetch(args.wal_name, args.dest_path, settings, _store_factory(settings),
                      config_path=getattr(args, "config", None))
        except NotInArchive as exc:
            # The real end of the archive (wal_fetch proved it): PostgreSQL asks for the segment
            # after the last one, and for timeline history files that do not exist.
            from walship import logs
            from walship.archive.fetch import forget_prefetched, notice_end_of_restored_copy
            logs.info("wal_not_found", exc.message, segment=args.wal_name)
            forget_prefetched(args.wal_name, args.dest_path)
            notice_end_of_restored_copy(args.wal_name, args.dest_path)
            return exc.exit_code
        return 0
    if command == "wal-prefetch":
        from walship.archive.fetch import run_prefetcher
        return run_prefetcher(args.wal_name, args.directory, args.segment_size, settings,
                              _store_factory(settings))
    if command == "config":
        return _print_config(settings, args.json)
    handler = getattr(args, "handler", None)
    if handler:
        module, _, func = handler.partition(":")
        return getattr(__import__(module, fromlist=[func]), func)(command, args, settings, _store_factory(settings))
    raise AssertionError(command)


def _print_config(settings, as_json: bool) -> int:
    """Every setting, its value (secrets masked) and where it came from; for an S3 repository also the
    source of the AWS credentials (never their values), which are not settings but decide everything."""
    values = settings.masked()
    credentials = None
    if not settings.repo or settings.repo.startswith("s3://"):
        from walship.storage.s3 import describe_credentials
        credentials = describe_credentials(settings)
    if as_json:
        import json
        doc = {k: {"value": v, "source": settings.sources.get(k, "default")} for k, v in values.items()}
        if credentials is not None:
            doc["s3_credentials"] = {"value": credentials, "source": "AWS credential chain"}
        print(json.dumps(doc, indent=2, default=str))
        return 0
    width = max(len(k) for k in values)
    for key, value in values.items():
        shown = "" if value is None else value
        print(f"{key:<{width}}  {shown!s:<40}  ({settings.sources.get(key, 'default')})")
    if credentials is not None:
        print(f"{'s3_credentials':<{width}}  {credentials}  (AWS credential chain)")
    return 0
