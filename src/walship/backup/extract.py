"""Extracting tar parts into a destination, each member checked against the manifest.

Never writes outside the destination: a member name must be relative, without
`.` or `..` components; files are created with O_EXCL | O_NOFOLLOW; the only
links allowed are the tablespace links pg_tblspc/<oid>, which the restore
itself creates beforehand pointing where the operator wants the tablespace
(so a hostile archive cannot choose where they point). Hard links, devices and
FIFOs are refused.

Every member must be the next line of the part's manifest (same path and
type); a file's size and SHA-256 are computed while it is written and must
equal the manifest's.

Durability: once every part is in, `Destination.finish` flushes the whole
restore with one syncfs(2) per filesystem (what initdb and pg_basebackup do
with --sync-method=syncfs): per-file fsync costs one journal commit per file,
seconds for a thousand files on a virtual disk. Where syncfs is not available
every file and directory is fsynced instead.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tarfile
import threading
from typing import IO, Iterable, Iterator

from walship.backup.manifest import ManifestEntry
from walship.errors import IntegrityError, WalshipError

_BUF = 1 << 20
TAR_BUFFER = 64 * 1024


def safe_relative(name: str, what: str) -> str:
    """The member name as a relative path, or IntegrityError when it could reach outside."""
    parts = name.split("/")
    if (not name or name.startswith("/") or "\\" in name or "\x00" in name
            or any(p in ("", ".", "..") for p in parts)):
        raise IntegrityError(f"{what} holds a member with a forbidden path {name!r}",
                             "refusing to extract: the backup is corrupt or was tampered with")
    return name


def check_member(member: tarfile.TarInfo, expected: ManifestEntry | None, what: str) -> tuple[str, str]:
    """(name, kind) of a member that is safe and is the manifest's next entry; IntegrityError otherwise."""
    name = safe_relative(member.name, what)
    kind = "file" if member.isreg() else "dir" if member.isdir() else "link" if member.issym() else None
    if kind is None:
        raise IntegrityError(f"{what} holds {name!r}, which is not a file, directory or tablespace link",
                             "refusing to extract: the backup is corrupt or was tampered with")
    if expected is None or expected.path != name or expected.type != kind:
        raise IntegrityError(f"{what}: member {name!r} does not match its manifest "
                             f"(expected {expected.path if expected else 'the end of the part'!r})",
                             "the backup is corrupt; restore another one")
    return name, kind


def walk_part(tar_stream: IO[bytes], manifest: Iterator[ManifestEntry], what: str, handle) -> None:
    """Call handle(tar, member, expected) for every member of a part, in step with its manifest.

    Any tar error (also one raised while handle reads a member's data) and a manifest
    entry left over at the end are IntegrityErrors naming the part.
    """
    try:
        # tarfile copies its whole buffer on every read (two per small file): 64 KiB is cheap to copy
        # and 16 reads per MiB of a large file (its default, 10 KiB, makes 100)
        with tarfile.open(fileobj=tar_stream, mode="r|", bufsize=TAR_BUFFER) as tar:
            for member in tar:
                handle(tar, member, next(manifest, None))
                tar.members.clear()       # TarFile remembers every member: memory would grow with files
    except tarfile.TarError as exc:
        raise IntegrityError(f"{what} is not a valid tar stream: {exc}",
                             "the backup is corrupt; restore another one") from None
    extra = next(manifest, None)
    if extra is not None:
        raise IntegrityError(f"{what} lacks {extra.path}, listed in its manifest",
                             "the backup is corrupt; restore another one")


def verify_part(tar_stream: IO[bytes], manifest: Iterator[ManifestEntry], what: str) -> tuple[int, int]:
    """Read a part as a restore would, writing nothing: (files, bytes) that match the manifest."""
    counts = [0, 0]

    def check(tar, member: tarfile.TarInfo, expected: ManifestEntry | None) -> None:
        name, kind = check_member(member, expected, what)
        if kind != "file":
            return
        digest, size = hashlib.sha256(), 0
        source = tar.extractfile(member)
        while block := source.read(_BUF):
            digest.update(block)
            size += len(block)
        if size != expected.size or digest.hexdigest() != expected.sha256:
            raise IntegrityError(f"{what}: {name} does not match the manifest (size or SHA-256)",
                                 "the backup is corrupt; restore another one")
        counts[0] += 1
        counts[1] += size

    walk_part(tar_stream, manifest, what, check)
    return counts[0], counts[1]


class Destination:
    """One restore target; parts may be extracted into it from several threads."""

    def __init__(self, dest: str, tablespace_links: dict[str, str]):
        self.dest = dest
        self.tablespace_links = tablespace_links          # "pg_tblspc/<oid>" -> target made beforehand
        self._dirs: set[str] = {dest}                      # made already: saves a makedirs per file
        self._lock = threading.Lock()

    def extract_part(self, tar_stream: IO[bytes], manifest: Iterator[ManifestEntry], what: str,
                     progress=None) -> None:
        walk_part(tar_stream, manifest, what,
                  lambda tar, member, expected: self._member(tar, member, expected, what, progress))

    def _member(self, tar, member: tarfile.TarInfo, expected: ManifestEntry | None, what: str, progress) -> None:
        name, kind = check_member(member, expected, what)
        path = os.path.join(self.dest, name)
        self._make_parents(name)
        if kind == "link":
            if name not in self.tablespace_links:
                raise IntegrityError(f"{what} holds a symbolic link {name!r} that is not a tablespace of this restore",
                                     "refusing to extract: the backup is corrupt or was tampered with")
            return                                   # made beforehand, where the operator wants it
        if kind == "dir":
            if name not in self.tablespace_links:
                self._mkdir(path, member.mode)
            return
        digest = hashlib.sha256()
        size = 0
        source = tar.extractfile(member)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            raise IntegrityError(f"{what} holds {name!r} twice", "the backup is corrupt; restore another one") from None
        try:
            while True:
                block = source.read(_BUF)
                if not block:
                    break
                digest.update(block)
                _write_all(fd, block)
                size += len(block)
                if progress:
                    progress.advance(len(block))
            os.fchmod(fd, member.mode & 0o7777)
            os.utime(fd, (member.mtime, member.mtime))
        finally:
            os.close(fd)
        if size != expected.size or digest.hexdigest() != expected.sha256:
            raise IntegrityError(f"{what}: {name} does not match the manifest (size or SHA-256)",
                                 "the backup is corrupt; restore another one")

    def _make_parents(self, name: str) -> None:
        """The parent's own member may be in a part another thread has not reached: make it 0700 meanwhile."""
        parent = os.path.dirname(os.path.join(self.dest, name))
        if parent not in self._dirs:
            os.makedirs(parent, mode=0o700, exist_ok=True)
            with self._lock:
                self._dirs.add(parent)

    def _mkdir(self, path: str, mode: int) -> None:
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(path, mode & 0o7777)
        with self._lock:
            self._dirs.add(path)

    def finish(self, extra_roots: Iterable[str] = ()) -> None:
        """Make everything written durable: the destination and the tablespace locations outside it."""
        for root in (self.dest, *extra_roots):
            sync_tree(root)


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
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        syncfs = libc.syncfs
    except (OSError, AttributeError):
        return False
    if syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))      # a writeback error: the restore is not durable
    return True


def fsync_path(path: str, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def disk_error(exc: OSError, dest: str) -> WalshipError:
    """An OSError during a restore as one line."""
    if exc.errno == errno.ENOSPC:
        return WalshipError(f"no space left on the device of {dest}", "free space or restore elsewhere")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return WalshipError(f"cannot write into {dest}: {exc.strerror}",
                            "run backup-fetch as the user that will run the server (postgres)")
    return WalshipError(f"error writing into {dest}: {exc.strerror or exc}")
