"""Extracting one of WAL-E's tar partitions into a data directory, refusing what a data directory never holds.

A tar member may only create a regular file or a directory strictly below the
destination: absolute names, `..` components, hard links, devices and FIFOs
are refused. Symbolic links are refused too, except the ones WAL-E stored for
a symlinked `pg_wal`/`pg_xlog`: those become empty directories, because the
original WAL directory belongs to the original server.

How files land on disk (safe paths, exclusive creates, deferred directory
modes, durability before the restore says it finished) is the restore writer's,
walship/restorefs.py, the same as for walship's own backups.
"""

from __future__ import annotations

import builtins
import stat
import tarfile
from typing import IO

from walship.errors import IntegrityError
from walship.restorefs import RestoreWriter
from walship.streams import ChunkReader

_WAL_DIRS = ("pg_wal", "pg_xlog")
_BUF = 1 << 20


class Extraction:
    """Extract several partitions into one destination (one call per partition, possibly in threads)."""

    def __init__(self, dest: str, tablespace_links: tuple[str, ...] = ()):
        # pg_tblspc/<oid> symlinks the restore itself made to put a tablespace where it belongs
        self.writer = RestoreWriter(dest, tablespace_links)

    @property
    def files(self) -> int:
        return self.writer.files

    @property
    def bytes(self) -> int:
        return self.writer.bytes

    def partition(self, stream: IO[builtins.bytes] | ChunkReader, part: str) -> None:
        """Extract one tar stream; `part` names it in messages."""
        try:
            # 64 KiB reads: tarfile's default 10 KiB buffer costs a third more CPU
            with tarfile.open(fileobj=stream, mode="r|", bufsize=64 * 1024) as tar:
                for member in tar:
                    self._member(tar, member, part)
        except tarfile.TarError as exc:
            raise IntegrityError(f"{part} is not a valid tar stream: {exc}") from None

    def finish(self) -> None:
        """Apply directory modes and times and make the restore durable (RestoreWriter.finish)."""
        self.writer.finish()

    def _member(self, tar: tarfile.TarFile, member: tarfile.TarInfo, part: str) -> None:
        name = _normalized(member.name)
        if member.isdir() and name == "":
            return                             # WAL-E stores the data directory itself as "/": dest is it
        if member.isdir():
            # a read-only directory is made one its owner can still write: PostgreSQL's own never are
            self.writer.mkdir(name, stat.S_IMODE(member.mode) | 0o700, member.mtime, part)
        elif member.isreg():
            source = tar.extractfile(member)
            assert source is not None          # a regular member always has content
            self.writer.write_file(name, iter(lambda: source.read(_BUF), b""), stat.S_IMODE(member.mode),
                                   member.mtime, part)
        elif member.issym() and name in _WAL_DIRS:
            # WAL-E stored a symlinked pg_wal as a link to the original server's WAL directory
            self.writer.mkdir(name, 0o700, member.mtime, part)
        else:
            kind = "symbolic link" if member.issym() else "hard link" if member.islnk() else "special file"
            raise IntegrityError(f"{part} holds a {kind} {member.name!r}, which a restore refuses")


def _normalized(name: str) -> str:
    """WAL-E's member name without `.` components or a trailing slash (tar writes both);
    a leading slash or a `..` stays, for the restore writer to refuse."""
    parts = name.split("/")
    kept = "/".join(p for p in parts if p not in ("", "."))
    return "/" + kept if name.startswith("/") and kept else kept
