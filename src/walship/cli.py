"""walship's command line: a thin layer over the library.

Each command's module is imported only when that command runs, so that
`walship wal-push` (archive_command, one process per WAL segment) stays cheap.
"""

from __future__ import annotations

import sys

from walship.errors import WalshipError  # a plain module with no imports: free on every path

TYPE_CHECKING = False                     # typing's own costs archive_command an import
if TYPE_CHECKING:
    from argparse import ArgumentParser, Namespace
    from collections.abc import Callable
    from types import SimpleNamespace

    from walship.config import Settings
    from walship.storage import Store

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
    "walship.receive.cli",
    "walship.verify.cli",
)
ARCHIVE_COMMANDS = "walship.archive.commands"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "wal-push" and not argv[1].startswith("-"):
        return _plain_wal_push(argv[1])
    fetch = _plain_wal_fetch(argv)
    if fetch is not None:
        # restore_command runs once per file during recovery, several times where nothing is found
        # (the next segment, timeline history files): building the parser would cost ~25 ms each
        return _execute("wal-fetch", fetch)
    return _run(argv)


def _plain_wal_push(wal_path: str) -> int:
    """archive_command's form `wal-push PATH`, without the argument parser (~25 ms saved per cold call).

    The fast path: a segment an earlier call already stored is acknowledged from its spool marker before
    logging is even imported. Otherwise the settings loaded here are handed on: loaded once, the spool
    asked once."""
    from walship.archive.spool import already_pushed, log_already_pushed
    from walship.config import load_settings
    try:
        settings = load_settings()
    except WalshipError:
        settings = None                          # _execute loads them again and reports the error
    if settings is not None and already_pushed(wal_path, settings):
        from walship import logs
        logs.setup("wal-push", settings)
        log_already_pushed(wal_path)
        return 0
    from types import SimpleNamespace
    args = SimpleNamespace(command="wal-push", wal_path=wal_path, handler=f"{ARCHIVE_COMMANDS}:wal_push",
                           spool_checked=settings is not None)
    return _execute("wal-push", args, settings)


def _plain_wal_fetch(argv: list[str]) -> SimpleNamespace | None:
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
                           repo=options.get("--repo"), config=options.get("--config"),
                           handler=f"{ARCHIVE_COMMANDS}:wal_fetch")


def _parser() -> ArgumentParser:
    import argparse

    from walship import __version__
    from walship.config import add_setting_flags

    parser = argparse.ArgumentParser(
        prog="walship",
        description="PostgreSQL continuous archiving and point-in-time recovery to S3 "
                    "or a filesystem repository.",
        epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"walship {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="TOML config file (env WALSHIP_CONFIG)")
    add_setting_flags(common)
    # WAL-E's global flags, accepted so that WAL-E command lines keep working.
    common.add_argument("--terse", action="store_true", help=argparse.SUPPRESS)
    common.add_argument("--aws-instance-profile", action="store_true", help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    for module in COMMAND_MODULES:
        __import__(module, fromlist=["add_parsers"]).add_parsers(sub, common)

    p = sub.add_parser("config", parents=[common], help="print the effective settings (secrets masked)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler="walship.config:show_command")

    sub.add_parser("keygen", help="print a new random encryption key (base64) for WALSHIP_ENCRYPTION_KEY_FILE")
    sub.add_parser("version", help="print the version")
    return parser


def _flags(args: Namespace | SimpleNamespace) -> dict[str, object]:
    from walship.config import flag_values
    flags = flag_values(args)
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


def _execute(command: str, args: Namespace | SimpleNamespace, settings: Settings | None = None) -> int:
    """Load the settings (unless the caller did), set up logging, run the command: every expected failure
    is one line."""
    from walship import logs
    try:
        if settings is None:
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
    of the archive (NotInArchive, raised only once the miss is proven to be that end, and answered by
    archive/commands.py's wal_fetch); every other failure (a gap, the destination unwritable or full,
    the configuration or the encryption key unavailable, the repository missing, unmounted or failing,
    a refused segment, a bug)
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


def _store_factory(settings: Settings) -> Callable[[], Store]:
    from walship.config import require_repo
    from walship.storage import open_store

    def factory() -> Store:
        return open_store(require_repo(settings), settings)
    return factory


def _dispatch(command: str, args: Namespace | SimpleNamespace, settings: Settings) -> int:
    module, _, func = args.handler.partition(":")
    return getattr(__import__(module, fromlist=[func]), func)(command, args, settings, _store_factory(settings))
