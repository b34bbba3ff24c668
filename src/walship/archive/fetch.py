"""wal-fetch: restore one WAL file for restore_command, and prefetch the next ones.

Replay asks for one segment at a time; one GET per call would make recovery
wait on the store for every 16 MiB. After serving a segment, wal-fetch starts
one detached prefetcher (at most one runs, guarded by a lock) that downloads
the next `fetch_prefetch` segments, verified, into pg_wal/walship_prefetch/.
The next calls then only rename a file.

Files are written to a temporary name and renamed into place, so neither
DEST_PATH nor the prefetch directory ever holds a partial file.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time

from walship import codec, logs
from walship.archive.spool import PREFETCH_NAME
from walship.errors import NotInArchive, WalshipError
from walship.layout import wal_key
from walship.pg.walnames import DEFAULT_SEGMENT_SIZE, Segment, check_name, is_segment
from walship.storage import ObjectNotFound, Store
from walship.streams import process_running

_LOCK = ".lock"


def _write_atomically(path: str, data: bytes) -> None:
    tmp = f"{path}.walship-tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def download(store: Store, name: str, keyring=None) -> bytes:
    """The verified content of an archived WAL file; NotInArchive when absent."""
    try:
        blob = store.get(wal_key(name))
    except ObjectNotFound:
        from walship.walecompat import wal as wale_wal   # WAL archived by WAL-E before the switch
        data = wale_wal.fetch(store, name)
        if data is None:
            raise NotInArchive(f"{name} is not in the archive {store.url}") from None
        return data
    return codec.unpack(blob, f"archived {name}", keyring)


def prefetch_directory(dest_path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(dest_path)), PREFETCH_NAME)


def wal_fetch(name: str, dest_path: str, settings, store_factory) -> str:
    """Put archived `name` at dest_path. Returns 'prefetched' or 'downloaded'."""
    check_name(name)
    started = time.monotonic()
    pdir = prefetch_directory(dest_path)
    source = "downloaded"
    prefetched = os.path.join(pdir, name)
    if is_segment(name) and os.path.exists(prefetched):
        os.replace(prefetched, dest_path)
        size = os.path.getsize(dest_path)
        source = "prefetched"
    else:
        from walship.crypto import keyring_from_settings
        data = download(store_factory(), name, keyring_from_settings(settings))
        _write_atomically(dest_path, data)
        size = len(data)
    logs.info("wal_fetched", f"{name} restored ({source})", segment=name, bytes=size,
              duration_s=round(time.monotonic() - started, 3))
    if is_segment(name) and settings.fetch_prefetch > 0:
        _start_prefetcher(name, pdir, size, settings)
    return source


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


def _start_prefetcher(name: str, pdir: str, segment_size: int, settings) -> None:
    os.makedirs(pdir, mode=0o700, exist_ok=True)
    _drop_older(pdir, name)
    wanted = _wanted(name, segment_size, settings.fetch_prefetch)
    if all(os.path.exists(os.path.join(pdir, w)) for w in wanted):
        return
    import subprocess   # here, not at the top: most restore_command calls start no prefetcher

    # Detached: PostgreSQL's system() call returns when this process exits.
    cmd = [sys.executable, "-m", "walship", "wal-prefetch", name, pdir, str(segment_size)]
    try:
        subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True, close_fds=True)
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
        if is_segment(entry) and entry[8:] <= current[8:]:
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
                data = download(store, seg_name, keyring)
            except NotInArchive:
                return False
            except WalshipError as exc:
                logs.warning("prefetch_failed", f"prefetch of {seg_name} failed: {exc.one_line()}",
                             segment=seg_name, error=exc.one_line())
                return False
            _write_atomically(os.path.join(pdir, seg_name), data)
            return True

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(4, len(wanted))) as pool:
            list(pool.map(one, wanted))
    finally:
        os.close(lock_fd)
    return 0
