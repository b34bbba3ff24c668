"""Reading the tar parts walship writes, straight from the decompressed chunks.

tarfile's stream mode copies every byte twice (into its buffer, then out of it
for each read) and cost about a third of a restore's CPU. This reader hands out
a member's content as views of the decompressed chunks themselves, which go to
the digest and to write(2) without a copy.

It reads what tarstream writes: POSIX ustar headers, each possibly preceded by a
PAX extended header (long names, big sizes, fractional times). Anything else a
tar file may hold (GNU long names, sparse files, global headers, hard links,
devices) is handed on as a member of another kind, which the restore refuses.
A part must end with the end-of-archive blocks: a stream that stops at a member
boundary is truncated, not short.
"""

from __future__ import annotations

import struct
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

BLOCK = 512
_KINDS = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "link"}
_PAX_FIELDS = {"path", "linkpath", "size", "mtime"}


class TarFormatError(Exception):
    """The stream is not a tar stream walship wrote, or it ends early."""


@dataclass(slots=True)
class Member:
    name: str
    kind: str              # "file", "dir", "link", or "type <flag>" for anything else
    mode: int
    mtime: float
    size: int              # content bytes (0 but for files)
    linkname: str = ""


class TarReader:
    """One pass over a tar stream given as an iterator of bytes chunks."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = iter(chunks)
        self._view = memoryview(b"")
        self._unread = 0              # content bytes of the current member not handed out yet
        self._padding = 0             # zeros after them up to the next block

    def members(self) -> Iterator[Member]:
        """Every member, in order; content a caller did not read is skipped."""
        while True:
            self._skip(self._unread + self._padding)
            self._unread = self._padding = 0
            block = self._exact(BLOCK)
            if not any(block):
                self._check_end()
                return
            member = self._parse(block)
            self._unread = member.size
            self._padding = -member.size % BLOCK
            yield member

    def data(self) -> Iterator[memoryview]:
        """The current member's content, as views of the stream's own chunks."""
        while self._unread:
            piece = self._take(self._unread)
            if not piece:
                raise TarFormatError("the stream ends inside a member's content")
            self._unread -= len(piece)
            yield piece

    # --- headers -----------------------------------------------------------

    def _parse(self, block: bytes) -> Member:
        pax: dict[str, str] = {}
        name, kind_flag, mode, size, mtime, linkname = _header(block)
        if kind_flag == tarfile.XHDTYPE:
            pax = _pax_records(self._exact(size + (-size % BLOCK))[:size])
            block = self._exact(BLOCK)
            if not any(block):
                raise TarFormatError("an extended header is followed by the end of the archive")
            name, kind_flag, mode, size, mtime, linkname = _header(block)
        try:
            size = int(pax["size"]) if "size" in pax else size
            when = float(pax["mtime"]) if "mtime" in pax else float(mtime)
        except ValueError:
            raise TarFormatError("an extended header holds a size or time that is not a number") from None
        if size < 0:
            raise TarFormatError("a member with a negative size")
        kind = _KINDS.get(kind_flag, f"type {kind_flag!r}")
        if kind in ("dir", "link"):
            size = 0                # no content follows them, whatever the size field says (as tarfile reads it)
        return Member(name=pax.get("path", name), kind=kind, mode=mode, mtime=when, size=size,
                      linkname=pax.get("linkpath", linkname))

    def _check_end(self) -> None:
        """After the first zero block only zeros may follow (the second block, record padding)."""
        while True:
            piece = self._take(1 << 20)
            if not piece:
                return
            if any(piece):
                raise TarFormatError("data after the end-of-archive marker")

    # --- the byte stream ---------------------------------------------------

    def _take(self, most: int) -> memoryview:
        """Up to `most` bytes from the current chunk (the next one if it is used up); empty at the end."""
        while not self._view:
            try:
                self._view = memoryview(next(self._chunks))
            except StopIteration:
                return memoryview(b"")
        piece = self._view[:most]
        self._view = self._view[len(piece):]
        return piece

    def _exact(self, n: int) -> bytes:
        pieces, left = [], n
        while left:
            piece = self._take(left)
            if not piece:
                raise TarFormatError("the stream ends early: no end-of-archive marker")
            pieces.append(piece)
            left -= len(piece)
        return b"".join(pieces)

    def _skip(self, n: int) -> None:
        while n:
            piece = self._take(n)
            if not piece:
                raise TarFormatError("the stream ends inside a member's content")
            n -= len(piece)


# name, mode, uid, gid, size, mtime, chksum, typeflag, linkname, magic, version, uname, gname, devmajor,
# devminor, prefix: the ustar header (POSIX.1-1988), 500 of the block's 512 bytes
_USTAR = struct.Struct("100s8s8s8s12s12s8sc100s6s2s32s32s8s8s155s")


def _header(block: bytes) -> tuple[str, bytes, int, int, int, str]:
    """(name, type flag, mode, size, mtime, link target) of one ustar header block, its checksum checked.

    Read with one struct unpack instead of tarfile.TarInfo.frombuf, which builds a TarInfo and decodes
    every field (uid, owner names, device numbers) that a restore never uses: a chain restore reads a
    header for every file of every backup of the chain, and frombuf was a tenth of its time."""
    (name, mode, _uid, _gid, size, mtime, chksum, flag, linkname, _magic, _version, _uname, _gname, _major,
     _minor, prefix) = _USTAR.unpack_from(block)
    stored = _number(chksum, "checksum")
    unsigned = 256 + sum(block[:148]) + sum(block[156:BLOCK])
    if stored != unsigned and stored != 256 + sum(_SIGNED.unpack_from(block)) + sum(_SIGNED_TAIL.unpack_from(block, 156)):
        raise TarFormatError("bad header (bad checksum)")
    text = _text(name)
    if flag == tarfile.AREGTYPE and text.endswith("/"):
        flag = tarfile.DIRTYPE           # an old tar's way of writing a directory, as tarfile reads it
    if flag == tarfile.DIRTYPE:
        text = text.rstrip("/")
    if prefix[:1] not in (b"", b"\x00") and flag not in tarfile.GNU_TYPES:
        text = _text(prefix) + "/" + text
    return text, flag, _number(mode, "mode"), _number(size, "size"), _number(mtime, "mtime"), _text(linkname)


_SIGNED = struct.Struct("148b")
_SIGNED_TAIL = struct.Struct("356b")


def _text(field: bytes) -> str:
    end = field.find(b"\x00")
    return (field if end < 0 else field[:end]).decode("utf-8", "surrogateescape")


def _number(field: bytes, what: str) -> int:
    """A numeric header field: octal digits (NUL or space terminated), or base-256 (GNU) when its first
    byte has the high bit set."""
    if field[:1] in (b"\x80", b"\xff"):
        value = int.from_bytes(field[1:], "big")
        return value - 256 ** (len(field) - 1) if field[:1] == b"\xff" else value
    end = field.find(b"\x00")
    digits = (field if end < 0 else field[:end]).strip()
    try:
        return int(digits or b"0", 8)
    except ValueError:
        raise TarFormatError(f"bad header (its {what} is not a number)") from None


def _pax_records(data: bytes) -> dict[str, str]:
    """The records of a PAX extended header ("<length> <key>=<value>\\n"), those walship uses."""
    records, pos = {}, 0
    while pos < len(data):
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise TarFormatError("a corrupt extended header") from None
        record = data[space + 1:pos + length]
        if space < 0 or length <= space - pos or not record.endswith(b"\n") or b"=" not in record:
            raise TarFormatError("a corrupt extended header")
        key, _, value = record[:-1].partition(b"=")
        name = key.decode("utf-8", "surrogateescape")
        if name in _PAX_FIELDS:
            records[name] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records
