"""The archive commands: wal-push, wal-fetch, wal-prefetch (internal) and quarantine.

Each is called as function(command, args, settings, store_factory) -> exit code, as every walship
command is (cli.py maps their errors to exit codes). archive_command and restore_command import this
module on every call: it imports nothing at its top, each command imports what it needs.
"""

from __future__ import annotations

# typing's own TYPE_CHECKING would import typing (and re) on archive_command's fast path
TYPE_CHECKING = False
if TYPE_CHECKING:
    from argparse import Namespace
    from collections.abc import Callable

    from walship.config import Settings
    from walship.storage import Store


def wal_push(command: str, args: Namespace, settings: Settings, store_factory: Callable[[], Store]) -> int:
    """`walship wal-push PATH`: exit 0 only once PATH is durably in the repository. args.spool_checked:
    the caller already asked the spool (cli.py's fast path), which need not be asked twice."""
    from walship.archive import spool
    if not getattr(args, "spool_checked", False) and spool.already_pushed(args.wal_path, settings):
        spool.log_already_pushed(args.wal_path)
        return 0
    from walship.archive.push import wal_push as push
    from walship.archive.report import after_push
    try:
        results = push(args.wal_path, settings, store_factory())
    except Exception as exc:
        after_push(settings, ok=False, error=exc, segment=args.wal_path)
        raise
    after_push(settings, ok=True, results=results, segment=args.wal_path)
    return 0


def wal_fetch(command: str, args: Namespace, settings: Settings, store_factory: Callable[[], Store]) -> int:
    """`walship wal-fetch NAME PATH`: 0 with the file in place, 1 only at the real end of the archive
    (every other failure raises; cli.py turns it into the exit code recovery must see)."""
    from walship.archive.fetch import forget_prefetched, notice_end_of_restored_copy
    from walship.archive.fetch import wal_fetch as fetch
    from walship.errors import NotInArchive
    try:
        fetch(args.wal_name, args.dest_path, settings, store_factory, config_path=getattr(args, "config", None))
    except NotInArchive as exc:
        # The real end of the archive (wal_fetch proved it): PostgreSQL asks for the segment
        # after the last one, and for timeline history files that do not exist.
        from walship import logs
        logs.info("wal_not_found", exc.message, segment=args.wal_name)
        forget_prefetched(args.wal_name, args.dest_path)
        notice_end_of_restored_copy(args.wal_name, args.dest_path)
        return exc.exit_code
    return 0


def wal_prefetch(command: str, args: Namespace, settings: Settings, store_factory: Callable[[], Store]) -> int:
    """The detached downloader wal-fetch starts (internal)."""
    from walship.archive.fetch import run_prefetcher
    return run_prefetcher(args.wal_name, args.directory, args.segment_size, settings, store_factory)


def quarantine_command(command: str, args: Namespace, settings: Settings, store_factory: Callable[[], Store]) -> int:
    """`walship quarantine NAME --reason WHY`."""
    store = store_factory()
    try:
        quarantine(store, args.wal_name, args.reason)
    finally:
        store.close()
    return 0


def quarantine(store: Store, name: str, reason: str) -> str:
    """Copy wal/NAME under quarantine/ (create-only, durable), then remove the original. Returns the new key.
    Sets a wrong archived WAL object aside without losing it."""
    import getpass
    import hashlib
    import json
    import socket
    import time

    from walship import logs
    from walship.errors import IntegrityError, NotInArchive
    from walship.pg.walnames import check_name
    from walship.repo.layout import quarantine_key, wal_key
    from walship.storage import ObjectExists, ObjectNotFound
    check_name(name)
    key = wal_key(name)
    try:
        blob = store.get(key)
    except ObjectNotFound:
        raise NotInArchive(f"{name} is not in {store.url}", "nothing to set aside") from None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = quarantine_key(stamp, key)
    note = {"key": key, "moved_to": target, "reason": reason, "sha256_of_object": hashlib.sha256(blob).hexdigest(),
            "bytes": len(blob), "by": f"{getpass.getuser()}@{socket.gethostname()}",
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        store.put(target, blob, if_absent=True)
        store.put(target + ".json", json.dumps(note, indent=1).encode(), if_absent=True)
    except ObjectExists:
        raise IntegrityError(f"{target} already exists in {store.url}", "wait a second and run it again") from None
    if store.get(target) != blob:                  # read back before the original goes
        raise IntegrityError(f"the copy {target} does not read back as {key}; {key} was left in place",
                             "check the repository, then try again")
    store.delete([key])
    logs.info("wal_quarantined", f"{key} set aside as {target} ({reason}); wal-push can now archive {name} again",
              segment=name, moved_to=target)
    print(f"{key} moved to {target} (note: {target}.json); to put it back, copy it to {key}")
    return target
