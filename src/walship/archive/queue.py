"""The prefetch queue: one worker per data directory that keeps the next segments ready across restore_command calls.

Replay asks for one segment per restore_command call; downloading each in its own call makes recovery wait on
the store, the decompression and the check for every 16 MiB. During recovery the first wal-fetch call starts
one detached worker (`walship wal-prefetch`), which stays until recovery ends. It keeps the segments after the
one being replayed in the queue directory pg_wal/walship_prefetch/ (the same file system as %p, so serving is a
rename), bounded by bytes (`fetch_queue_bytes`, and by `fetch_prefetch` segments), topped up as segments
are served, the nearest first. wal-fetch serves a queued segment with one rename; every other call downloads as before.

The directory:
- `.lock`: flock()ed by the worker for its whole life, so at most one runs per directory, and a worker that
  died (with a crashed server, or killed) holds nothing: the next call starts another.
- `.position`: the last segment wal-fetch was asked for (written by each call): where replay is.
- `.served`: the last segment restore_command's shell fast path served (see below).
- NAME: a segment downloaded, unpacked (checksum verified) and checked as wal-fetch checks what it serves
  (check_served_segment: long page header, name, system identifier), written under a temporary name and
  renamed: nothing else is ever named like a segment here, so a rename never serves an unchecked file.

The fast path. A prefetched segment needs no walship process at all: the restore_command backup-fetch writes
begins with `mv` of pg_wal/walship_prefetch/%f to %p (PostgreSQL runs restore_command with sh, in the data
directory), and only when that fails (not queued: history files, the first segments, a miss) does it run
`walship wal-fetch`. A walship process costs 18-32 ms here (the interpreter alone 13), a rename by mv about
1 ms: on a replay of 2 GiB, 128 segments, that is seconds, and CPU replay no longer shares with the
interpreters. The fast path records what it served with a shell builtin (`echo %f > .served`); the worker
takes the newer of `.position` and `.served` as where replay is, and logs each segment that left the queue
up to it as restored (prefetched), the line wal-fetch would have written.

The worker stops, and removes the directory, when recovery ended (no recovery.signal nor standby.signal in the
data directory), when the server it started with is gone (postmaster.pid missing, or naming a process that no
longer runs: a crash), when no call came for `fetch_queue_idle` seconds, or when the directory was removed.
A new worker starts with an empty queue: it trusts no file an earlier one left (a crash can leave a segment
that was never fsynced).
"""

from __future__ import annotations

import fcntl
import os
import time

from walship.archive.spool import PREFETCH_NAME
from walship.pg.recoveryfiles import postmaster_pid
from walship.processes import process_running

TYPE_CHECKING = False          # typing's own would be an import on restore_command's path
if TYPE_CHECKING:
    from collections.abc import Callable

    from walship.config import Settings
    from walship.storage import Store

LOCK = ".lock"
POSITION = ".position"
SERVED = ".served"
_TMP = ".walship-tmp."
POLL_S = 0.05
DOWNLOADS = 3                     # segments downloaded at once (this machine kind has 2 cores)
RETRY_END_S = 2.0                # how soon a segment the archive did not have yet is asked for again
SIGNAL_FILES = ("recovery.signal", "standby.signal")


def directory_for(dest_path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(dest_path)), PREFETCH_NAME)


def take(pdir: str, name: str, dest_path: str) -> bool:
    """Serve `name` from the queue: True once it is at dest_path (one rename), False when it is not queued."""
    try:
        os.replace(os.path.join(pdir, name), dest_path)
    except FileNotFoundError:
        return False                 # not queued, or the worker dropped it a moment ago: download it
    return True


def note_position(pdir: str, name: str) -> None:
    """Tell the worker where replay is (a small file, replaced atomically)."""
    tmp = os.path.join(pdir, f"{POSITION}{_TMP}{os.getpid()}")
    try:
        with open(tmp, "w") as fh:
            fh.write(name)
        os.replace(tmp, os.path.join(pdir, POSITION))
    except OSError:
        pass                         # no queue directory (yet): the worker starts from its own argument


def fast_path(dest: str = "%p") -> str:
    """The start of restore_command: serve a queued segment by a rename, without walship (see the module
    docstring); `|| walship wal-fetch ...` follows. %f and %p are PostgreSQL's, substituted before sh runs it.

    `[` and `echo` are builtins of sh: a call the queue cannot serve (a miss, a history file) starts no
    process before wal-fetch.

    >>> print(fast_path().replace(" && ", " &&\\n"))
    [ -f pg_wal/walship_prefetch/%f ] &&
    mv -f pg_wal/walship_prefetch/%f %p 2>/dev/null &&
    { echo %f > pg_wal/walship_prefetch/.served; } 2>/dev/null
    """
    queued = f"pg_wal/{PREFETCH_NAME}"
    return (f"[ -f {queued}/%f ] && mv -f {queued}/%f {dest} 2>/dev/null && "
            f"{{ echo %f > {queued}/{SERVED}; }} 2>/dev/null")


def read_position(pdir: str) -> str | None:
    """Where replay is: the segment named by the newer of `.position` (wal-fetch) and `.served` (the fast
    path). Either may be caught empty while the shell rewrites it: then the other, or None."""
    found = [named for named in (_read_name(pdir, POSITION), _read_name(pdir, SERVED)) if named[1]]
    return max(found)[1] if found else None


def read_served(pdir: str) -> str | None:
    return _read_name(pdir, SERVED)[1]


def _read_name(pdir: str, entry: str) -> tuple[int, str | None]:
    """(when it was written, the segment name) of one of the directory's small files; (0, None) when absent
    or empty."""
    path = os.path.join(pdir, entry)
    try:
        with open(path) as fh:
            name = fh.read().strip()
        changed = os.stat(path).st_mtime_ns
    except OSError:
        return 0, None
    return (changed, name) if name else (0, None)


def worker_running(pdir: str) -> bool:
    """A worker holds the lock. Costs one open and one flock()."""
    try:
        fd = os.open(os.path.join(pdir, LOCK), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def in_recovery(pgdata: str = ".") -> bool:
    return any(os.path.exists(os.path.join(pgdata, signal)) for signal in SIGNAL_FILES)


def depth(settings: Settings, segment_size: int) -> int:
    """Segments the queue holds at most: fetch_queue_bytes of them, and no more than fetch_prefetch."""
    return max(1, min(settings.fetch_prefetch, settings.fetch_queue_bytes // max(segment_size, 1)))


def acquire(pdir: str) -> int | None:
    """The worker's lock, or None when another worker holds it. The lock file must still be the one at the path
    (a worker leaving removes it; a lock on a removed file would let a second worker run)."""
    os.makedirs(pdir, mode=0o700, exist_ok=True)
    path = os.path.join(pdir, LOCK)
    for _ in range(5):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
    return None


def remove_queue(pdir: str, keep: tuple[str, ...] = ()) -> None:
    """Everything in the directory but `keep`; the directory itself too when nothing is kept."""
    try:
        entries = os.listdir(pdir)
    except OSError:
        return
    for entry in entries:
        if entry not in keep:
            try:
                os.unlink(os.path.join(pdir, entry))
            except OSError:
                pass
    if not keep:
        try:
            os.rmdir(pdir)
        except OSError:
            pass


class Worker:
    """The body of `walship wal-prefetch NAME DIR SEGMENT_SIZE`, run in the data directory (restore_command's
    working directory)."""

    def __init__(self, name: str, pdir: str, segment_size: int, settings: Settings,
                 fetch_one: Callable[[str], bytes | None], pgdata: str = ".") -> None:
        self.start_name = name
        self.pdir = pdir
        self.segment_size = segment_size
        self.settings = settings
        self.fetch_one = fetch_one          # verified bytes of a segment, None when not in the archive
        self.pgdata = pgdata
        self.depth = depth(settings, segment_size)
        self.not_yet: dict[str, float] = {}   # segment -> when the archive did not have it
        self.refused: set[str] = set()        # failed its check: wal-fetch downloads it and says why
        self.server = postmaster_pid(pgdata)
        self.placed: dict[str, int] = {}      # segments this worker queued that are still there: their size
        import threading  # here: wal-fetch imports this module, and starts no thread
        self._lock = threading.Lock()         # placed, not_yet and refused change in the download threads

    def wanted(self, position: str) -> list[str]:
        from walship.pg.walnames import Segment
        seg = Segment.parse(position, self.segment_size)
        return [seg.next(i).name(self.segment_size) for i in range(1, self.depth + 1)]

    def should_stop(self, last_call: float) -> str | None:
        if not os.path.isdir(self.pdir):
            return "the queue directory was removed"
        if not in_recovery(self.pgdata):
            return "recovery ended"
        pid = postmaster_pid(self.pgdata)
        if pid is None or pid != self.server or not process_running(pid):
            return "the server stopped"
        if time.monotonic() - last_call > self.settings.fetch_queue_idle:
            return f"no restore_command call for {self.settings.fetch_queue_idle:g} s"
        return None

    def run(self) -> str:
        """Keep the queue filled until a reason to stop; returns that reason."""
        from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

        from walship.pg.walnames import is_segment

        remove_queue(self.pdir, keep=(LOCK, POSITION))   # nothing an earlier worker left is trusted
        position = read_position(self.pdir) or self.start_name
        last_call = time.monotonic()
        in_flight: dict[str, Future] = {}
        with ThreadPoolExecutor(max_workers=DOWNLOADS) as pool:
            while True:
                reason = self.should_stop(last_call)
                if reason:
                    return reason
                now_at = read_position(self.pdir) or position
                if now_at != position:
                    position, last_call = now_at, time.monotonic()
                wanted = self.wanted(position)
                for name in [n for n, f in in_flight.items() if f.done()]:
                    del in_flight[name]
                try:
                    entries = set(os.listdir(self.pdir))
                except OSError:
                    continue
                self._note_served(entries)
                for entry in entries:
                    if is_segment(entry) and entry not in wanted:
                        _unlink(os.path.join(self.pdir, entry))   # replayed, skipped, or another timeline
                        with self._lock:
                            self.placed.pop(entry, None)
                # topped up as each segment is served, the nearest first, DOWNLOADS at a time, rather than
                # refilled once half of it drained and then waited on as a batch. Replay still catches up
                # now and then (at 2 GiB, 9-14 of 128 segments were downloaded by wal-fetch, either way)
                missing = []
                for w in wanted:
                    if w in entries or w in self.refused or w in in_flight:
                        continue
                    if time.monotonic() - self.not_yet.get(w, -RETRY_END_S) < RETRY_END_S:
                        break                # the archive lacked it a moment ago: replay cannot pass it either
                    missing.append(w)
                for w in missing[:max(0, DOWNLOADS - len(in_flight))]:
                    in_flight[w] = pool.submit(self._one, w)
                if in_flight:
                    wait(list(in_flight.values()), timeout=POLL_S, return_when=FIRST_COMPLETED)
                else:
                    time.sleep(POLL_S)

    def _note_served(self, entries: set[str]) -> None:
        """Log the segments the fast path took out of the queue (up to the one `.served` names): the line a
        wal-fetch that served them would have written. One gone otherwise (a miss cleared the queue) is not."""
        with self._lock:
            gone = {name: self.placed.pop(name) for name in list(self.placed) if name not in entries}
        if not gone:
            return
        served = read_served(self.pdir)
        from walship import logs
        for name, size in sorted(gone.items()):
            if served is not None and name[:8] == served[:8] and name <= served:
                logs.info("wal_fetched", f"{name} restored (prefetched)", segment=name, bytes=size,
                          served_by="restore_command's rename")

    def _one(self, name: str) -> bool:
        data = self.fetch_one(name)
        if data is None:
            with self._lock:
                self.not_yet[name] = time.monotonic()
            return False
        if not data:
            with self._lock:
                self.refused.add(name)
            return False
        path = os.path.join(self.pdir, name)
        tmp = f"{path}{_TMP}{os.getpid()}"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except OSError:
            _unlink(tmp)
            return False
        with self._lock:
            self.placed[name] = len(data)
        return True


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def run_worker(name: str, pdir: str, segment_size: int, settings: Settings, store_factory: Callable[[], Store],
               download: Callable[..., bytes], check: Callable[[bytes, str], None]) -> int:
    """`wal-prefetch`: become the directory's worker (or return at once if one runs), fill the queue until
    recovery ends, then remove the directory."""
    from walship import logs
    from walship.errors import NotInArchive, WalshipError
    lock = acquire(pdir)
    if lock is None:
        return 0
    try:
        store = store_factory()
        from walship.crypto import keyring_from_settings
        keyring = keyring_from_settings(settings)

        def fetch_one(seg_name: str) -> bytes | None:
            try:
                data = download(store, seg_name, keyring, settings.gpg_key_id)
                check(data, seg_name)
            except NotInArchive:
                return None
            except WalshipError as exc:
                # never queued: wal-fetch, asked for it, downloads it again and stops recovery with the reason
                logs.warning("prefetch_failed", f"prefetch of {seg_name} failed: {exc.one_line()}",
                             segment=seg_name, error=exc.one_line())
                return b""
            return data

        reason = Worker(name, pdir, segment_size, settings, fetch_one).run()
        logs.debug("prefetch_stopped", f"prefetch worker stopped: {reason}")
    finally:
        remove_queue(pdir)
        os.close(lock)
    return 0
