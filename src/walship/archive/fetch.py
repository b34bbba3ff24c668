"""wal-fetch: restore one WAL file for restore_command, and prefetch the next ones.

Replay asks for one segment at a time; one GET per call would make recovery
wait on the store for every 16 MiB. During recovery the first call starts the
prefetch queue's worker (archive/queue.py: one per data directory, living
across calls until recovery ends), which keeps the next segments, verified,
in pg_wal/walship_prefetch/. A call for a queued segment is one rename.

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

import os
import sys
import time

from walship import logs, pipeline
from walship.archive import queue
from walship.errors import IntegrityError, NotInArchive, WalshipError
from walship.pg.walnames import (
    DEFAULT_SEGMENT_SIZE,
    Segment,
    check_name,
    format_lsn,
    is_history,
    is_partial,
    is_segment,
    parse_history,
    timeline_of,
)
from walship.repo.layout import (
    RECEIVE_PREFIX,
    WAL_PREFIX,
    WALE_WAL_PREFIX,
    after_received_segment_key,
    received_piece_of_key,
    wal_key,
    wal_name_of_key,
    wale_wal_key,
    wale_wal_name_of_key,
)
from walship.storage import ObjectNotFound, Store

TYPE_CHECKING = False          # typing's own imports typing (and re) on restore_command's cold path
if TYPE_CHECKING:
    import mmap
    from collections.abc import Callable, Iterable

    from walship.config import Settings
    from walship.crypto import Keyring

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
    check_served_start(data, len(data), name, pgdata)


def check_served_start(head: bytes, size: int, name: str, pgdata: str = ".") -> None:
    """check_served_segment for a segment of `size` bytes of which only the start (`head`, its first page at
    least) is in memory: a cold call streams the segment to disk rather than hold 16 MiB in memory."""
    from walship.pg import walheader

    if size == 0 or size & (size - 1):
        raise IntegrityError(f"archived {name} is {size} bytes, not a WAL segment size (a power of 2)",
                             "the archived object is damaged; restore it from a copy, or end recovery before it "
                             "with a recovery target")
    whole: bytes | mmap.mmap = head
    if len(head) != size:
        # check_segment reads the header only; an anonymous map of the file's size costs memory only for the
        # page written (a bytearray would zero, and so touch, all 16 MiB)
        import mmap
        whole = mmap.mmap(-1, size)
        whole[:len(head)] = head
    seg = Segment.parse(name, size)
    identity = walheader.read_control_identity(pgdata)
    # check_segment reads the buffer with struct and len() only: the map serves as bytes there
    walheader.check_segment(whole, name, size=size, start_lsn=seg.start_lsn(size),  # type: ignore[arg-type]
                            timeline=seg.timeline, system_identifier=identity[0] if identity else None)


_HEAD = 8192                     # the first WAL page, which holds the long header check_served_start reads


def stream_segment(store: Store, name: str, dest_path: str, keyring: Keyring | None) -> int | None:
    """Put archived segment `name` at dest_path through a temporary file, checked, without holding it in
    memory: the bytes of the segment, or None when wal/NAME is not stored (the caller looks further).

    Renamed into place only once the pipeline verified the whole object (its last check runs as the stream
    ends) and its header is the one check_served_start wants."""
    try:
        chunks = store.stream(wal_key(name))
    except ObjectNotFound:
        return None
    tmp = f"{dest_path}.walship-tmp.{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise _unwritable(exc, dest_path) from None
    head = b""
    size = 0
    try:
        try:
            _meta, plain = pipeline.read(chunks, f"archived {name}", keyring, codec_checksum_suffices=True)
            for chunk in plain:
                if len(head) < _HEAD:
                    head += bytes(chunk[:_HEAD - len(head)])
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
                size += len(chunk)
        finally:
            os.close(fd)
        check_served_start(head, size, name)
        os.replace(tmp, dest_path)
    except ObjectNotFound:
        _remove(tmp)
        return None
    except OSError as exc:
        _remove(tmp)
        raise _unwritable(exc, dest_path) from None
    except BaseException:
        _remove(tmp)
        raise
    return size


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


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
    return pipeline.unpack(blob, f"archived {name}", keyring, codec_checksum_suffices=True)


def prefetch_directory(dest_path: str) -> str:
    return queue.directory_for(dest_path)


def wal_fetch(name: str, dest_path: str, settings: Settings, store_factory: Callable[[], Store],
              config_path: str | None = None) -> str:
    """Put archived `name` at dest_path. Returns 'prefetched' or 'downloaded'.

    NotInArchive only at the real end of the archive; a gap raises WalGap (see the module docstring)."""
    check_name(name)
    started = time.monotonic()
    pdir = prefetch_directory(dest_path)
    source = "downloaded"
    # the worker verified and checked it (check_served_segment) before renaming it into the queue
    try:
        served = is_segment(name) and settings.fetch_prefetch > 0 and queue.take(pdir, name, dest_path)
    except OSError as exc:
        raise _unwritable(exc, dest_path) from None
    if served:
        size = os.path.getsize(dest_path)
        source = "prefetched"
    else:
        from walship.crypto import keyring_from_settings
        store = store_factory()
        keyring = keyring_from_settings(settings)
        streamed = stream_segment(store, name, dest_path, keyring) if is_segment(name) else None
        if streamed is not None:
            size = streamed
        else:
            try:
                data = download(store, name, keyring, settings.gpg_key_id)
            except NotInArchive:
                check_end_of_archive(store, name, keyring)
                partial = _received_partial(store, name, keyring)   # the last segment, as far as wal-receive got
                if partial is None:
                    raise
                data = partial
                source = "received partial"
            if is_segment(name):
                check_served_segment(data, name)
            _write_atomically(dest_path, data)
            size = len(data)
    logs.info("wal_fetched", f"{name} restored ({source})", segment=name, bytes=size,
              duration_s=round(time.monotonic() - started, 3))
    if is_segment(name) and settings.fetch_prefetch > 0 and queue.in_recovery():
        queue.note_position(pdir, name)
        if not queue.worker_running(pdir):
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

    for prefix, start_after, name_of in (
            (WAL_PREFIX, wal_key(name), wal_name_of_key),
            (WALE_WAL_PREFIX, wale_wal_key(name), lambda key: wale_wal_name_of_key(key) or ""),
            (RECEIVE_PREFIX, after_received_segment_key(name), _received_partial_name)):
        later = (name_of(info.key) for info in store.list(prefix, start_after=start_after))
        after = wal_after(name, later, history, segment_size)
        if after is not None:
            raise WalGap(f"{name} is missing from the archive {store.url}, and WAL that recovery reaches only "
                         f"through it is stored ({after}): ending recovery at the gap would lose it",
                         f"restore {name} into the archive (from pg_wal of the origin server or a copy), or "
                         "end recovery before it with a recovery target; then start the server again")



def _received_partial_name(key: str) -> str:
    """The .partial a piece of wal-receive's stands for, or "" for a key that is no piece."""
    piece = received_piece_of_key(key)
    return f"{piece[0]}.partial" if piece else ""

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
        if not full and not is_partial(other):
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
        if entry != queue.LOCK:
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
        if option.flag and option.takes_flag("wal-prefetch") and given:
            cmd += [option.flag, str(getattr(settings, option.name))]
    if config_path:
        cmd += ["--config", os.path.abspath(config_path)]
    return cmd


def _start_prefetcher(name: str, pdir: str, segment_size: int, settings: Settings,
                      config_path: str | None) -> None:
    import subprocess  # here, not at the top: most restore_command calls start no worker

    # Detached: PostgreSQL's system() call returns when this process exits. stderr is inherited,
    # so whatever the worker reports lands in the server log beside wal-fetch's own lines.
    try:
        subprocess.Popen(prefetcher_command(name, pdir, segment_size, settings, config_path),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True,
                         close_fds=True)
    except OSError as exc:
        logs.warning("prefetch_failed", f"could not start the prefetch worker: {exc}")


def run_prefetcher(name: str, pdir: str, segment_size: int, settings: Settings,
                   store_factory: Callable[[], Store]) -> int:
    """Body of the detached `wal-prefetch` process: the prefetch queue's worker (archive/queue.py)."""
    if segment_size <= 0 or segment_size & (segment_size - 1):
        segment_size = DEFAULT_SEGMENT_SIZE
    return queue.run_worker(name, pdir, segment_size, settings, store_factory, download, check_served_segment)


def notice_end_of_restored_copy(name: str, dest_path: str) -> None:
    """At the end of recovery of a server backup-fetch restored as a copy, say what becomes of its WAL.

    PostgreSQL probes for the history files of the timelines after its own twice: at startup, when
    pg_wal of a restored backup holds no segment yet, and after replay, to choose the new timeline,
    when it holds the segments it restored (kept under their own names). The history file of a
    timeline those segments are on (the parent's, which PostgreSQL copies into the new timeline's
    history) is asked for then too, and is not the probe. A recovery started again after it was
    stopped has segments in pg_wal at startup too, and says it once more then."""
    if not is_history(name):
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
