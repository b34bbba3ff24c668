"""Extracting one of WAL-E's tar partitions into a data directory, refusing what a data directory never holds.

A tar member may only create a regular file or a directory strictly below the
destination: absolute names, `..` components, hard links, devices and FIFOs
are refused, and files are opened with O_NOFOLLOW | O_EXCL so that nothing
already on disk (a symlink planted by an earlier member, or an existing file)
redirects a write. Symbolic links are refused too, except the ones WAL-E
stored for a symlinked `pg_wal`/`pg_xlog`: those become empty directories,
because the original WAL directory belongs to the original server.

Every file is fsynced before the extraction reports success, directories
included (by the caller, once every partition is in, see `Extraction.finish`),
so a restore that said it finished survives a crash of the machine.
"""

from __future__ import annotations

import os
import stat
import tarfile
import threading
from typing import IO

from walship.backup.extract import fsync_path
from walship.errors import IntegrityError

_WAL_DIRS = ("pg_wal", "pg_xlog")
_BUF = 1 << 20


class Extraction:
    """Extract several partitions into one destination (one call per partition, possibly in threads)."""

    def __init__(self, dest: str, what: str, tablespace_links: tuple[str, ...] = ()):
        self.dest = os.path.realpath(dest)
        self.what = what                       # the backup, for messages
        # pg_tblspc/<oid> symlinks the restore itself made to put a tablespace where it belongs
        self.tablespace_links = {os.path.join(self.dest, link) for link in tablespace_links}
        self._dir_modes: dict[str, tuple[int, float | None]] = {}
        self._lock = threading.Lock()
        self.files = 0
        self.bytes = 0

    def partition(self, stream: IO[bytes], part: str) -> None:
        """Extract one tar stream; `part` names it in messages."""
        try:
            # 64 KiB reads: tarfile's default 10 KiB buffer costs a third more CPU
            with tarfile.open(fileobj=stream, mode="r|", bufsize=64 * 1024) as tar:
                for member in tar:
                    self._member(tar, member, part)
        except tarfile.TarError as exc:
            raise IntegrityError(f"{part} is not a valid tar stream: {exc}") from None

    def finish(self) -> None:
        """Apply directory modes and times (deepest first) and fsync every directory."""
        for path in sorted(self._dir_modes, key=lambda p: p.count(os.sep), reverse=True):
            mode, mtime = self._dir_modes[path]
            os.chmod(path, mode)
            if mtime is not None:
                os.utime(path, (mtime, mtime))
        for path in sorted(self._all_dirs(), key=lambda p: p.count(os.sep), reverse=True):
            fsync_path(path, os.O_RDONLY | os.O_DIRECTORY)

    # --- one member ----------------------------------------------------------
    def _member(self, tar: tarfile.TarFile, member: tarfile.TarInfo, part: str) -> None:
        if member.isdir() and member.name.strip("/.") == "":
            return                             # WAL-E stores the data directory itself as "/": dest is it
        path = self._target(member.name, part)
        if member.isdir():
            self._mkdir(path, member.mode, member.mtime)
        elif member.isreg():
            self._parent(path)
            self._write_file(tar, member, path, part)
        elif member.issym() and os.path.relpath(path, self.dest) in _WAL_DIRS:
            # WAL-E stored a symlinked pg_wal as a link to the original server's WAL directory
            self._mkdir(path, 0o700, member.mtime)
        else:
            kind = "symbolic link" if member.issym() else "hard link" if member.islnk() else "special file"
            raise IntegrityError(f"{part} holds a {kind} {member.name!r}, which a restore refuses")

    def _target(self, name: str, part: str) -> str:
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if name.startswith("/") or ".." in parts or not parts:
            raise IntegrityError(f"{part} holds the path {name!r}, which leaves the data directory: refused")
        return os.path.join(self.dest, *parts)

    def _parent(self, path: str) -> None:
        parent = os.path.dirname(path)
        if parent != self.dest and not os.path.isdir(parent):
            self._makedirs(parent)

    def _makedirs(self, path: str) -> None:
        # Create each missing level as a real directory; an existing symlink on the way is refused.
        rel = os.path.relpath(path, self.dest)
        current = self.dest
        for piece in rel.split(os.sep):
            current = os.path.join(current, piece)
            try:
                os.mkdir(current, 0o700)
            except FileExistsError:
                if current in self.tablespace_links:
                    continue
                if os.path.islink(current) or not os.path.isdir(current):
                    raise IntegrityError(f"{self.what}: {current} is in the way of the restore "
                                         "(not a directory)") from None
            with self._lock:
                self._dir_modes.setdefault(current, (0o700, None))

    def _mkdir(self, path: str, mode: int, mtime: float) -> None:
        self._parent(path)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if path in self.tablespace_links:
                return
            if os.path.islink(path) or not os.path.isdir(path):
                raise IntegrityError(f"{self.what}: {path} is in the way of the restore (not a directory)") from None
        # applied at the end: a read-only directory must stay writable while its content arrives
        with self._lock:
            self._dir_modes[path] = (stat.S_IMODE(mode) | 0o700, mtime)

    def _write_file(self, tar: tarfile.TarFile, member: tarfile.TarInfo, path: str, part: str) -> None:
        source = tar.extractfile(member)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            raise IntegrityError(f"{part}: {member.name} is stored twice, or the destination "
                                 "already holds it") from None
        try:
            with os.fdopen(fd, "wb", closefd=False) as out:
                while True:
                    block = source.read(_BUF)
                    if not block:
                        break
                    out.write(block)
            os.fchmod(fd, stat.S_IMODE(member.mode))
            os.utime(fd, (member.mtime, member.mtime))
            os.fsync(fd)
        finally:
            os.close(fd)
        with self._lock:
            self.files += 1
            self.bytes += member.size

    def _all_dirs(self) -> set[str]:
        dirs = {self.dest}
        for path in self._dir_modes:
            while path.startswith(self.dest + os.sep):
                dirs.add(path)
                path = os.path.dirname(path)
        return dirs
