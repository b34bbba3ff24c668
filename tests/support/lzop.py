"""lzop streams for the WAL-E tests: written by Debian's `lzop -c` (what WAL-E ran), and their container
parsed, to check what the binary wrote and how walship's reader fails on damaged ones.

Container (lzop 1.0x, all integers big-endian):

    magic 89 4C 5A 4F 00 0D 0A 1A 0A
    header: version u16, lib_version u16, [version_needed u16], method u8, [level u8],
            flags u32, [filter u32], mode u32, mtime_low u32, [mtime_high u32],
            name_len u8, name, checksum u32 (Adler-32, or CRC-32 with F_H_CRC32,
            of the header after the magic); [extra field when F_H_EXTRA_FIELD]
    blocks: dst_len u32 (0 ends the stream), src_len u32,
            [checksum of the uncompressed block], [checksum of the compressed block
            when src_len < dst_len], src_len bytes: LZO1X-compressed, or stored
            as is when src_len == dst_len
"""

from __future__ import annotations

import struct
import subprocess
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from walship.errors import IntegrityError
from walship.walecompat import filters
from walship.walecompat.lzop import MAGIC, decompress_filter


def lzop_c(data: bytes, *flags: str) -> bytes:
    """Compress like WAL-E's LZOCompressionFilter: `lzop -c` reading stdin."""
    return subprocess.run(["lzop", "-c", *flags], input=data, capture_output=True, check=True).stdout


def decompress(chunks: Iterable[bytes], what: str = "object") -> Iterator[bytes]:
    """The content of an lzop stream given as chunks, through walship's reader (`lzop -d`)."""
    return filters.run([decompress_filter(what)], chunks)


F_ADLER32_D = 0x00000001
F_ADLER32_C = 0x00000002
F_H_EXTRA_FIELD = 0x00000040
F_CRC32_D = 0x00000100
F_CRC32_C = 0x00000200
F_H_FILTER = 0x00000800
F_H_CRC32 = 0x00001000
METHODS = {1: "LZO1X-1", 2: "LZO1X-1(15)", 3: "LZO1X-999"}
MAX_BLOCK = 64 * 1024 * 1024        # lzop's own limit on one block


@dataclass(frozen=True)
class Header:
    version: int
    method: str
    level: int
    flags: int
    mode: int
    mtime: int
    name: str
    size: int                        # bytes of the header, magic included

    @property
    def checks_data(self) -> bool:
        return bool(self.flags & (F_ADLER32_D | F_CRC32_D))


class _Reader:
    def __init__(self, data: bytes, what: str):
        self.data = data
        self.pos = 0
        self.what = what

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise IntegrityError(f"{self.what} is truncated: its lzop stream ends early")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack(">H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]


def parse_header(data: bytes, what: str = "object") -> Header:
    """The lzop header at the start of data; IntegrityError when it is not one."""
    if not data.startswith(MAGIC):
        raise IntegrityError(f"{what} is not an lzop stream (bad magic): corrupt or not written by WAL-E")
    r = _Reader(data, what)
    r.take(len(MAGIC))
    version = r.u16()
    r.u16()                                   # lib_version
    if version >= 0x0940:
        r.u16()                               # version needed to extract
    method = r.u8()
    level = r.u8() if version >= 0x0940 else 0
    flags = r.u32()
    if flags & F_H_FILTER:
        r.u32()
    mode = r.u32()
    mtime = r.u32()
    if version >= 0x0940:
        mtime |= r.u32() << 32
    name = r.take(r.u8())
    checked_end = r.pos
    stored = r.u32()
    body = data[len(MAGIC):checked_end]
    actual = zlib.crc32(body) if flags & F_H_CRC32 else zlib.adler32(body)
    if actual != stored:
        raise IntegrityError(f"{what} is corrupt: the lzop header checksum does not match")
    if method not in METHODS:
        raise IntegrityError(f"{what} uses lzop method {method}, which WAL-E never wrote")
    if flags & F_H_EXTRA_FIELD:
        r.take(r.u32())
        r.u32()
    return Header(version=version, method=METHODS[method], level=level, flags=flags, mode=mode,
                  mtime=mtime, name=name.decode(errors="replace"), size=r.pos)


def block_sizes(data: bytes, what: str = "object") -> Iterator[tuple[int, int]]:
    """(uncompressed, compressed) size of every block, checking the framing up to the end marker."""
    header = parse_header(data, what)
    r = _Reader(data, what)
    r.pos = header.size
    while True:
        dst_len = r.u32()
        if dst_len == 0:
            break
        src_len = r.u32()
        if dst_len > MAX_BLOCK or src_len > dst_len:
            raise IntegrityError(f"{what} is corrupt: impossible lzop block sizes {src_len}/{dst_len}")
        checksums = bool(header.flags & F_ADLER32_D) + bool(header.flags & F_CRC32_D)
        if src_len < dst_len:
            checksums += bool(header.flags & F_ADLER32_C) + bool(header.flags & F_CRC32_C)
        r.take(4 * checksums + src_len)
        yield dst_len, src_len
    if r.pos != len(data):
        raise IntegrityError(f"{what} is corrupt: {len(data) - r.pos} bytes after the end of its lzop stream")
