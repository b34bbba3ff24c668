"""The restore writer: how both restores (walship's parts, WAL-E's partitions) put files on disk.

Never writes outside the destination: a member name must be relative, without
`.` or `..` components (`safe_relative`); every missing directory level is made
as a real directory, and something else in the way (a symlink, a file) is
refused; files are created with O_EXCL | O_NOFOLLOW, so nothing already on disk
(a symlink, a file of an earlier member) redirects a write. The only links met
are the tablespace links pg_tblspc/<oid> the restore made beforehand where the
operator wants the tablespace.

Directory modes and times are applied by `finish`, deepest first: a read-only
directory must stay writable while its content arrives, possibly from another
thread. A file larger than a part arrives as slices, possibly at once: the first
to arrive creates it (exclusively: no other member can have made it), each is
written at its offset with pwrite(2), and its mode and time wait for `finish`.

Durability: a large file's pages are handed to the disk while it is written
(sync_file_range), and `finish` flushes the whole restore with one syncfs(2) per
filesystem (what initdb and pg_basebackup do with --sync-method=syncfs):
per-file fsync costs one journal commit per file, seconds for a thousand files
on a virtual disk. Where syncfs is not available every file and directory is
fsynced instead.

A leaf module: both backup/ and walecompat/ restore through it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import itertools
import os
import threading
from collections.abc import Callable, Iterable

from walship.errors import IntegrityError, WalshipError

WRITEBACK_STEP = 128 << 20    # start writing a large file to disk every this many bytes (8, 32, 128 MiB
                              # measured alike within noise here, 128 best: 4.8 s against 5.2 without)
WRITEBACK_MIN = 1 << 20       # ... and its tail when at least this large (smaller files: the final syncfs)
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW


def safe_relative(name: str, what: str) -> str:
    """The member name as a relative path, or IntegrityError when it could reach outside."""
    parts = name.split("/")
    if (not name or name.startswith("/") or "\\" in name or "\x00" in name
            or any(p in ("", ".", "..") for p in parts)):
        raise IntegrityError(f"{what} holds a member with a forbidden path {name!r}, which leaves the data "
                             "directory", "refusing to extract: the backup is corrupt or was tampered with")
    return name


class RestoreWriter:
    """One restore target; members may be written into it from several threads."""

    def __init__(self, dest: str, tablespace_links: Iterable[str] = ()):
        self.dest = dest
        self.tablespace_links = frozenset(tablespace_links)    # "pg_tblspc/<oid>", made beforehand
        self.files = 0
        self.bytes = 0
        self._dirs: set[str] = {dest}                           # made already: saves a mkdir per file
        self._dir_modes: dict[str, tuple[int, float | None]] = {}   # applied by finish
        self._sliced_meta: dict[str, tuple[int, float]] = {}    # sliced file -> (mode, mtime), set by finish
        self._block_files: dict[str, tuple[int, float] | None] = {}   # incremental's files -> (mode, mtime)
        self._lock = threading.Lock()

    # --- members ----------------------------------------------------------------
    def mkdir(self, name: str, mode: int, mtime: float | None, what: str) -> None:
        """The directory `name` (a tablespace link stays the link); its mode and time are set by finish."""
        name = safe_relative(name, what)
        if name in self.tablespace_links:
            return
        path = os.path.join(self.dest, name)
        self._make_dirs(path, what)
        with self._lock:
            self._dir_modes[path] = (mode & 0o7777, mtime)

    def write_file(self, name: str, pieces: Iterable[bytes | memoryview], mode: int, mtime: float, what: str,
                   progress: Callable[[int], object] | None = None) -> int:
        """Create the file `name` (it must not exist) with the pieces as content; the bytes written."""
        path = self._file_path(name, what)
        fd = self._create(path, name, what)
        try:
            size = self._write(fd, pieces, 0, progress)
            os.fchmod(fd, mode & 0o7777)
            os.utime(fd, (mtime, mtime))
        finally:
            os.close(fd)
        self._count(1, size)
        return size

    def write_slice(self, name: str, pieces: Iterable[bytes | memoryview], offset: int, file_size: int, mode: int,
                    mtime: float, what: str, progress: Callable[[int], object] | None = None) -> int:
        """Write one slice of the file `name` at offset; the first slice to arrive creates the file
        (exclusively) and reserves its whole size. The bytes written."""
        path = self._file_path(name, what)
        with self._lock:
            first = name not in self._sliced_meta
            fd = self._create(path, name, what) if first else os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
            if first:
                self._sliced_meta[name] = (mode, mtime)
        try:
            if first:
                reserve(fd, file_size)
            size = self._write(fd, pieces, offset, progress)
        finally:
            os.close(fd)
        self._count(first, size)
        return size

    def write_blocks(self, name: str, blocks: Iterable[tuple[int, bytes | memoryview]], file_size: int,
                     meta: tuple[int, float] | None, what: str, progress: Callable[[int], object] | None = None) -> int:
        """Write (offset, bytes) blocks of the file `name`, file_size bytes long once whole: the first writer
        creates it (exclusively) at its size, the others write into it, consecutive blocks in one pwrite.
        meta (mode, mtime), from the backup that names the file, is applied by finish. The bytes written."""
        path = self._file_path(name, what)
        blocks = iter(blocks)
        head = next(blocks, None)      # a backup that supplies no block of the file does not open it: a chain
        with self._lock:               # of 9 opened each of the cluster's files 9 times, 8 of them for nothing
            first = name not in self._block_files
            if first:
                self._block_files[name] = None
            if meta is not None:
                self._block_files[name] = meta
            if not first and head is None:
                return 0
            fd = self._create(path, name, what) if first else os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
        written = 0
        try:
            if first:
                reserve(fd, file_size)
                os.ftruncate(fd, file_size)        # where fallocate cannot, and for a file without a block (empty)
            if head is not None:
                blocks = itertools.chain((head,), blocks)
            # consecutive blocks go out in one pwritev of the views themselves: a copy into one growing buffer
            # cost a fresh mapping, and a page fault per 4 KiB, for every MiB written. A run is written as soon
            # as it reaches WRITE_NOW, while its bytes are still in the CPU's cache from being decompressed and
            # hashed: holding it until the next block arrived (which decompresses and hashes the next MiB first)
            # made the kernel's copy into the page cache twice as slow (a chain restore: 125 samples against 69)
            run: list[bytes | memoryview] = []
            run_at, run_len = 0, 0
            unflushed, low, high = 0, 0, 0     # written since the last writeback started, and where

            def flush() -> None:
                nonlocal run, run_len, written, unflushed, low, high
                _writev_all(fd, run, run_at)
                written += run_len
                unflushed, low, high = (unflushed + run_len, min(low, run_at) if unflushed else run_at,
                                        max(high, run_at + run_len))
                run, run_len = [], 0
                if unflushed >= WRITEBACK_STEP:
                    # as the whole-file writer does: the disk works while the next parts decompress,
                    # instead of all of it at the final syncfs
                    start_writeback(fd, low, high - low)
                    unflushed = 0

            for offset, data in blocks:
                if run and offset != run_at + run_len:
                    flush()
                if not run:
                    run_at = offset
                run.append(data)
                run_len += len(data)
                if run_len >= WRITE_NOW or len(run) >= _IOV_MAX:
                    flush()
                if progress is not None:
                    progress(len(data))
            if run:
                flush()
            if unflushed >= WRITEBACK_MIN:
                start_writeback(fd, low, high - low)
        finally:
            os.close(fd)
        self._count(first, written)
        return written

    def finish(self) -> None:
        """Give sliced files and directories their modes and times, then make the whole restore durable:
        the destination and the tablespace locations its links point to."""
        metas = dict(self._sliced_meta)
        for name, block_meta in self._block_files.items():
            if block_meta is None:
                raise IntegrityError(f"{name} was restored from older backups only: the newest backup does not name it",
                                     "the backup is corrupt; restore another one")
            metas[name] = block_meta
        for name, (mode, mtime) in metas.items():
            path = os.path.join(self.dest, name)
            os.chmod(path, mode & 0o7777)         # a regular file: the first slice made it with O_EXCL
            os.utime(path, (mtime, mtime))
        for path in sorted(self._dir_modes, key=lambda p: p.count(os.sep), reverse=True):
            mode, dir_mtime = self._dir_modes[path]
            os.chmod(path, mode)
            if dir_mtime is not None:
                os.utime(path, (dir_mtime, dir_mtime))
        locations = [os.path.realpath(os.path.join(self.dest, link)) for link in sorted(self.tablespace_links)]
        for root in (self.dest, *locations):
            sync_tree(root)

    # --- the parts of a member --------------------------------------------------
    def _file_path(self, name: str, what: str) -> str:
        path = os.path.join(self.dest, safe_relative(name, what))
        self._make_dirs(os.path.dirname(path), what)
        return path

    def _make_dirs(self, path: str, what: str) -> None:
        """Every missing level up to path as a real directory, 0700 until finish gives it its mode
        (its own member may be in a part another thread has not reached)."""
        if path in self._dirs:
            return
        current, relative = self.dest, ""
        for piece in os.path.relpath(path, self.dest).split(os.sep):
            current, relative = os.path.join(current, piece), os.path.join(relative, piece)
            if current in self._dirs:
                continue
            link = relative in self.tablespace_links
            try:
                os.mkdir(current, 0o700)
            except FileExistsError:
                if not link and (os.path.islink(current) or not os.path.isdir(current)):
                    raise IntegrityError(f"{what}: {current} is in the way of the restore (not a directory)",
                                         "refusing to extract: the backup is corrupt or was tampered with") from None
            with self._lock:
                self._dirs.add(current)
                if not link:
                    self._dir_modes.setdefault(current, (0o700, None))

    @staticmethod
    def _create(path: str, name: str, what: str) -> int:
        try:
            return os.open(path, _CREATE, 0o600)
        except FileExistsError:
            raise IntegrityError(f"{what}: {name} is stored twice, or the destination already holds it",
                                 "the backup is corrupt; restore another one") from None

    @staticmethod
    def _write(fd: int, pieces: Iterable[bytes | memoryview], offset: int, progress: Callable[[int], object] | None) -> int:
        """Write the pieces at offset, starting their writeback as they go; the bytes written."""
        position = flushed = offset
        for piece in pieces:
            _write_all(fd, piece, position)
            position += len(piece)
            if position - flushed >= WRITEBACK_STEP:
                start_writeback(fd, flushed, position - flushed)
                flushed = position
            if progress is not None:
                progress(len(piece))
        if position - flushed >= WRITEBACK_MIN:
            start_writeback(fd, flushed, position - flushed)
        return position - offset

    def _count(self, files: int, size: int) -> None:
        with self._lock:
            self.files += files
            self.bytes += size


WRITE_NOW = 128 << 10         # write_blocks writes a run of consecutive blocks once it is this long
_IOV_MAX = 512                 # buffers per pwritev (Linux allows 1024)


def _writev_all(fd: int, views: list[bytes | memoryview], position: int) -> None:
    total = sum(len(v) for v in views)
    written = os.pwritev(fd, views, position)
    if written < total:                     # short: the rest one at a time
        rest = memoryview(b"".join(views))[written:]
        _write_all(fd, rest, position + written)


def _write_all(fd: int, data, position: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, position)
        view = view[written:]
        position += written


# --- durability ------------------------------------------------------------------

def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


def _libc_call(name: str, argtypes: tuple):
    """A libc function through ctypes, or None where this system has none."""
    call = getattr(_LIBC, name, None)
    if call is not None:
        call.argtypes = argtypes
    return call


_sync_file_range = _libc_call("sync_file_range", (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint))
_SYNC_FILE_RANGE_WRITE = 2
_fallocate = _libc_call("fallocate", (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64))
_syncfs_call = _libc_call("syncfs", (ctypes.c_int,))


def reserve(fd: int, size: int) -> None:
    """Allocate the file's blocks at once (fallocate(2), Linux): slices written concurrently at
    their offsets then land in contiguous extents instead of interleaved ones, which the disk
    writes faster (a 1.5 GiB restore: 4.4-4.8 s against 5.0-5.8 s here). No-op where the
    filesystem cannot; ENOSPC is raised, so a restore that cannot fit fails at once."""
    if _fallocate is None or size <= 0:
        return
    if _fallocate(fd, 0, 0, size) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise OSError(err, os.strerror(err))


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing these bytes to disk now, without waiting (Linux).

    Otherwise they would stay dirty in the page cache until the final syncfs (the
    kernel starts on its own only past gigabytes of dirty memory), which would
    then wait for all of them: writing behind the extraction hides that wait.
    Best effort: errors surface at the syncfs that follows.
    """
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def sync_tree(root: str) -> None:
    """Flush to disk what was written under root."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _syncfs(fd):
            return
    finally:
        os.close(fd)
    for dirpath, _, filenames in os.walk(root, topdown=False):
        for name in filenames:
            fsync_path(os.path.join(dirpath, name), os.O_RDONLY)
        fsync_path(dirpath, os.O_RDONLY | os.O_DIRECTORY)


def _syncfs(fd: int) -> bool:
    """syncfs(2) on the filesystem of fd; False when this system has no syncfs."""
    if _syncfs_call is None:
        return False
    if _syncfs_call(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))      # a writeback error: the restore is not durable
    return True


def fsync_path(path: str, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def disk_error(exc: OSError, dest: str) -> WalshipError:
    """An OSError during a restore as one line."""
    if exc.errno == errno.ENOSPC:
        return WalshipError(f"no space left on the device of {dest}", "free space or restore elsewhere")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return WalshipError(f"cannot write into {dest}: {exc.strerror}",
                            "run backup-fetch as the user that will run the server (postgres)")
    return WalshipError(f"error writing into {dest}: {exc.strerror or exc}")
