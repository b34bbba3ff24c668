"""wal-fetch: restore one WAL file for restore_command, and prefetch the next ones.

Replay asks for one segment at a time; one GET per call would make recovery
wait on the store for every 16 MiB. After serving a segment, wal-fetch starts
one detached prefetcher (at most one runs, guarded by a lock) that downloads
the next `fetch_prefetch` segments, verified, into pg_wal/walship_prefetch/.
The next calls then only rename a file.

Files are written to a temporary name and renamed into place, so neither
DEST_PATH nor the prefetch directory ever holds a partial file. A segment is
renamed into place only once its long page header matches its name and the
restored cluster's system identifier: PostgreSQL would read another file as
the end of WAL and promote there.

"Not in the archive" (exit 1) makes PostgreSQL end recovery, so wal-fetch
answers it only at the real end of the archive: on a miss it first proves the
location is a repository (walship.repo.record.require), then lists what is
stored after the missing segment; anything recovery would still have to reach
through it makes the miss a gap (WalGap, an integrity error that stops recovery).
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from walship import logs, pipeline
from walship.archive.spool import PREFETCH_NAME
from walship.errors import IntegrityError, NotInArchive, WalshipError
from walship.pg.walnames import (
    DEFAULT_SEGMENT_SIZE,
    PARTIAL_RE,
    Segment,
    check_name,
    format_lsn,
    is_segment,
    parse_history,
    position_key,
    timeline_of,
)
from walship.repo.layout import (
    WAL_PREFIX,
    WALE_WAL_PREFIX,
    wal_key,
    wal_name_of_key,
    wale_wal_key,
    wale_wal_name_of_key,
)
from walship.storage import ObjectNotFound, Store
from walship.streams import process_running

if TYPE_CHECKING:
    from walship.config import Settings
    from walship.crypto import Keyring

_LOCK = ".lock"


class WalGap(IntegrityError):
    """A segment is missing while WAL that recovery must reach through it is stored."""


class DestinationUnwritable(WalshipError):
    """restore_command's %p (or the prefetch directory) cannot take the file."""


def _write_atomically(path: str, data: bytes) -> None:
    tmp = f"{path}.walship-tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise _unwritable(exc, path) from None
        raise


def _unwritable(exc: OSError, path: str) -> DestinationUnwritable:
    return DestinationUnwritable(f"cannot write {path}: {exc.strerror or exc}",
                                 "free space in, or make writable, the directory PostgreSQL restores WAL into "
                                 "(pg_wal), then start the server again")


def check_served_segment(data: bytes, name: str, pgdata: str = ".") -> None:
    """Refuse a segment whose header is not that of `name` in the cluster being restored.

    restore_command runs in PGDATA: pg_control there names the cluster. The segment size is the
    file's own, which its header must repeat (check_segment), so a truncated file is refused too."""
    from walship.pg import walheader

    size = len(data)
    if size == 0 or size & (size - 1):
        raise IntegrityError(f"archived {name} is {size} bytes, not a WAL segment size (a power of 2)",
                             "the archived object is damaged; restore it from a copy, or end recovery before it "
                             "with a recovery target")
    seg = Segment.parse(name, size)
    identity = walheader.read_control_identity(pgdata)
    walheader.check_segment(data, name, size=size, start_lsn=seg.start_lsn(size), timeline=seg.timeline,
                            system_identifier=identity[0] if identity else None)


def download(store: Store, name: str, keyring=None, gpg_key_id: str | None = None) -> bytes:
    """The verified content of an archived WAL file; NotInArchive when absent. gpg_key_id: the setting,
    named when a WAL-E object cannot be decrypted."""
    try:
        blob = store.get(wal_key(name))
    except ObjectNotFound:
        from walship.walecompat import wal as wale_wal  # WAL archived by WAL-E before the switch
        data = wale_wal.fetch(store, name, gpg_key_id)
        if data is None:
            raise NotInArchive(f"{name} is not in the archive {store.url}") from None
        return data
    return pipeline.unpack(blob, f"archived {name}", keyring)


def prefetch_directory(dest_path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(dest_path)), PREFETCH_NAME)


def wal_fetch(name: str, dest_path: str, settings: Settings, store_factory: Callable[[], Store],
              config_path: str | None = None) -> str:
    """Put archived `name` at dest_path. Returns 'prefetched' or 'downloaded'.

    NotInArchive only at the real end of the archive; a gap raises WalGap (see the module docstring)."""
    check_name(name)
    started = time.monotonic()
    pdir = prefetch_directory(dest_path)
    source = "downloaded"
    prefetched = os.path.join(pdir, name)
    if is_segment(name) and os.path.exists(prefetched):
        # the prefetcher verified and checked it (check_served_segment) before renaming it there
        try:
            os.replace(prefetched, dest_path)
        except OSError as exc:
            raise _unwritable(exc, dest_path) from None
        size = os.path.getsize(dest_path)
        source = "prefetched"
    else:
        from walship.crypto import keyring_from_settings
        store = store_factory()
        keyring = keyring_from_settings(settings)
        try:
            data = download(store, name, keyring, settings.gpg_key_id)
        except NotInArchive:
            check_end_of_archive(store, name, keyring)
            data = _received_partial(store, name, keyring)   # the last segment, as far as wal-receive got
            if data is None:
                raise
            source = "received partial"
        if is_segment(name):
            check_served_segment(data, name)
        _write_atomically(dest_path, data)
        size = len(data)
    logs.info("wal_fetched", f"{name} restored ({source})", segment=name, bytes=size,
              duration_s=round(time.monotonic() - started, 3))
    if is_segment(name) and settings.fetch_prefetch > 0:
        _start_prefetcher(name, pdir, size, settings, config_path)
    return source


def check_end_of_archive(store: Store, name: str, keyring: Keyring | None = None) -> None:
    """`name` is not stored: return only if that is the end of what recovery can read, else raise.

    NotARepository for a location that holds nothing (an unmounted file system, a wrong URL);
    WalGap for a segment with WAL after it that recovery would have to reach through it.
    Timeline history, .partial and .backup files that are absent are a normal answer."""
    from walship.repo import record

    found = record.require(store)
    if not is_segment(name):
        return
    segment_size = (found.wal_segment_size if found is not None and found.wal_segment_size
                    else DEFAULT_SEGMENT_SIZE)

    def history(timeline: int) -> str | None:
        from walship.pg.walnames import history_name
        try:
            return download(store, history_name(timeline), keyring).decode("utf-8", "replace")
        except NotInArchive:
            return None

    from walship.receive import partial as received
    for prefix, start_after, name_of in (
            (WAL_PREFIX, wal_key(name), wal_name_of_key),
            (WALE_WAL_PREFIX, wale_wal_key(name), lambda key: wale_wal_name_of_key(key) or ""),
            (received.RECEIVE_PREFIX, received.after_segment_key(name),
             lambda key: f"{received.segment_of_piece(key)}.partial")):
        later = (name_of(info.key) for info in store.list(prefix, start_after=start_after))
        after = wal_after(name, later, history, segment_size)
        if after is not None:
            raise WalGap(f"{name} is missing from the archive {store.url}, and WAL that recovery reaches only "
                         f"through it is stored ({after}): ending recovery at the gap would lose it",
                         f"restore {name} into the archive (from pg_wal of the origin server or a copy), or "
                         "end recovery before it with a recovery target; then start the server again")


def _received_partial(store: Store, name: str, keyring: Keyring | None) -> bytes | None:
    """At the end of the archive: segment `name` as far as wal-receive stored it (receive/partial.py), zero-filled
    to the repository's segment size, or None. Served under the segment's own name, PostgreSQL replays it to the
    last received record and ends recovery there."""
    if not is_segment(name):
        return None
    from walship.receive import partial as received
    from walship.repo import record
    found = record.read(store)
    size = found.wal_segment_size if found is not None and found.wal_segment_size else DEFAULT_SEGMENT_SIZE
    assembled = received.assemble(store, name, size, keyring)
    if assembled is None:
        return None
    data, received_bytes = assembled
    logs.info("wal_partial", f"{name} is not archived whole: serving the {received_bytes} bytes wal-receive "
              "stored of it (the end of the received WAL)", segment=name, bytes=received_bytes)
    return data


def wal_after(missing: str, later_names: Iterable[str], history: Callable[[int], str | None],
              segment_size: int = DEFAULT_SEGMENT_SIZE) -> str | None:
    """What stored WAL recovery must reach through the missing segment, described; None at the real end.

    later_names: the WAL file names stored after `missing`, in name order (one listing); history(tli):
    the text of that timeline's history file, or None. With X missing on timeline T, it counts
    - a segment (or .partial) of T after X;
    - a segment of a timeline T' whose history branches from T at or after the end of X, at or after
      that branch point: recovery follows T through X to reach it.
    A branch from T before X's end leaves X on T unneeded (the descendant has its own copy of it)."""
    timeline, number = Segment.parse(missing, segment_size)
    newest_on: dict[int, int] = {}           # a later timeline -> the highest segment number stored on it
    for other in later_names:
        full = is_segment(other)
        if not full and not PARTIAL_RE.match(other):
            continue                          # history and backup history files are no WAL to replay
        try:
            seg = Segment.parse(other, segment_size)
        except WalshipError:
            continue
        if seg.timeline == timeline and seg.number > number:
            return f"{other} on the same timeline"
        if seg.timeline > timeline and full:
            newest_on[seg.timeline] = max(seg.number, newest_on.get(seg.timeline, -1))
    end_of_missing = (number + 1) * segment_size
    for other_timeline, newest in sorted(newest_on.items()):
        text = history(other_timeline)
        if text is None:
            continue
        try:
            entries = parse_history(text)
        except WalshipError:
            continue
        branches = [switch for parent, switch, _reason in entries if parent == timeline]
        if branches and branches[0] >= end_of_missing and newest >= branches[0] // segment_size:
            return (f"{Segment(other_timeline, newest).name(segment_size)} on timeline {other_timeline}, which "
                    f"branched from timeline {timeline} at {format_lsn(branches[0])}, after {missing}")
    return None


def forget_prefetched(name: str, dest_path: str) -> None:
    """A segment missing from the archive ends replay: nothing after it was prefetched either."""
    if not is_segment(name):
        return
    pdir = prefetch_directory(dest_path)
    try:
        entries = os.listdir(pdir)
    except OSError:
        return
    for entry in entries:
        if entry != _LOCK:
            try:
                os.unlink(os.path.join(pdir, entry))
            except OSError:
                pass


# settings a wal-fetch command line may carry, and the flag that passes each on to the prefetcher
def prefetcher_command(name: str, pdir: str, segment_size: int, settings: Settings,
                       config_path: str | None) -> list[str]:
    """The wal-prefetch command line: the same repository, config file and command-line settings as the
    wal-fetch that starts it (restore_command carries --repo and --config; the server's environment
    has no WALSHIP_REPO)."""
    cmd = [sys.executable, "-m", "walship", "wal-prefetch", name, pdir, str(segment_size)]
    from walship.config import OPTIONS
    for option in OPTIONS.values():
        given = settings.sources.get(option.name) == "command line" or (option.name == "repo" and settings.repo)
        if option.takes_flag("wal-prefetch") and given:
            cmd += [option.flag, str(getattr(settings, option.name))]
    if config_path:
        cmd += ["--config", os.path.abspath(config_path)]
    return cmd


def _start_prefetcher(name: str, pdir: str, segment_size: int, settings: Settings,
                      config_path: str | None) -> None:
    os.makedirs(pdir, mode=0o700, exist_ok=True)
    _drop_older(pdir, name)
    wanted = _wanted(name, segment_size, settings.fetch_prefetch)
    if all(os.path.exists(os.path.join(pdir, w)) for w in wanted):
        return
    import subprocess  # here, not at the top: most restore_command calls start no prefetcher

    # Detached: PostgreSQL's system() call returns when this process exits. stderr is inherited,
    # so whatever the prefetcher reports lands in the server log beside wal-fetch's own lines.
    try:
        subprocess.Popen(prefetcher_command(name, pdir, segment_size, settings, config_path),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True,
                         close_fds=True)
    except OSError as exc:
        logs.warning("prefetch_failed", f"could not start the prefetcher: {exc}")


def _wanted(name: str, segment_size: int, count: int) -> list[str]:
    if segment_size <= 0 or segment_size & (segment_size - 1):
        segment_size = DEFAULT_SEGMENT_SIZE
    seg = Segment.parse(name, segment_size)
    return [seg.next(i).name(segment_size) for i in range(1, count + 1)]


def _drop_older(pdir: str, current: str) -> None:
    """Prefetched segments before the one being replayed will never be asked for."""
    try:
        entries = os.listdir(pdir)
    except OSError:
        return
    for entry in entries:
        if is_segment(entry) and position_key(entry) <= position_key(current):
            try:
                os.unlink(os.path.join(pdir, entry))
            except OSError:
                pass
        elif ".walship-tmp." in entry:
            pid = entry.rsplit(".", 1)[-1]
            if pid.isdigit() and not process_running(int(pid)):
                try:
                    os.unlink(os.path.join(pdir, entry))
                except OSError:
                    pass


def run_prefetcher(name: str, pdir: str, segment_size: int, settings, store_factory) -> int:
    """Body of the detached `wal-prefetch` process."""
    os.makedirs(pdir, mode=0o700, exist_ok=True)
    lock_fd = os.open(os.path.join(pdir, _LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another prefetcher is running
    try:
        wanted = [w for w in _wanted(name, segment_size, settings.fetch_prefetch)
                  if not os.path.exists(os.path.join(pdir, w))]
        if not wanted:
            return 0
        store = store_factory()
        from walship.crypto import keyring_from_settings
        keyring = keyring_from_settings(settings)

        def one(seg_name: str) -> bool:
            try:
                data = download(store, seg_name, keyring, settings.gpg_key_id)
                # checked as wal-fetch checks what it serves: a refused file is not kept, and
                # wal-fetch, asked for it, downloads it again and stops recovery with the reason
                check_served_segment(data, seg_name)
                _write_atomically(os.path.join(pdir, seg_name), data)
            except NotInArchive:
                return False
            except WalshipError as exc:
                logs.warning("prefetch_failed", f"prefetch of {seg_name} failed: {exc.one_line()}",
                             segment=seg_name, error=exc.one_line())
                return False
            return True

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(4, len(wanted))) as pool:
            list(pool.map(one, wanted))
    finally:
        os.close(lock_fd)
    return 0


def notice_end_of_restored_copy(name: str, dest_path: str) -> None:
    """At the end of recovery of a server backup-fetch restored as a copy, say what becomes of its WAL.

    PostgreSQL probes for the history files of the timelines after its own twice: at startup, when
    pg_wal of a restored backup holds no segment yet, and after replay, to choose the new timeline,
    when it holds the segments it restored (kept under their own names). The history file of a
    timeline those segments are on (the parent's, which PostgreSQL copies into the new timeline's
    history) is asked for then too, and is not the probe. A recovery started again after it was
    stopped has segments in pg_wal at startup too, and says it once more then."""
    from walship.pg.walnames import HISTORY_RE
    if not HISTORY_RE.match(name):
        return
    try:
        replayed = [timeline_of(entry) for entry in os.listdir(os.path.dirname(os.path.abspath(dest_path)))
                    if is_segment(entry)]
    except OSError:
        return
    if not replayed or timeline_of(name) <= max(replayed):
        return
    from walship.pg.recoveryfiles import COPY, read_restore_marker
    marker = read_restore_marker(".")
    if marker is None or marker.get("mode") != COPY:
        return
    origin = marker.get("origin_repository")
    logs.warning("restored_copy",
                 f"end of recovery of a copy restored from {origin}: backup-fetch turned its archiving off, and "
                 f"it must never archive into {origin} (its new timeline would fork the origin's history); "
                 "to keep its WAL, give it its own repository: archive_mode = on and "
                 "archive_command = 'walship wal-push %p --repo NEW_URL'")
