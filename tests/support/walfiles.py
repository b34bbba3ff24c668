"""WAL files for tests that need no server: the long page header PostgreSQL writes, then content."""

from __future__ import annotations

import os
import struct

from walship.pg.walnames import Segment

MAGIC_PG15 = 0xD110
TEST_SYSTEM_ID = 7311000000000000001


def segment_bytes(name: str, size: int = 1 << 20, system_identifier: int = TEST_SYSTEM_ID,
                  magic: int = MAGIC_PG15, fill: bytes | None = None, page_address: int | None = None) -> bytes:
    """A file that passes wal-push's checks for segment `name` of `size` bytes: a long page header with the
    page address the name says, then random bytes (or `fill` repeated, for compressible content)."""
    segment = Segment.parse(name, size)
    address = segment.start_lsn(size) if page_address is None else page_address
    header = struct.pack("<HHIQI4xQII", magic, 0x0002, segment.timeline, address, 0, system_identifier, size, 8192)
    body_size = size - len(header)
    body = os.urandom(body_size) if fill is None else (fill * (body_size // len(fill) + 1))[:body_size]
    return header + body


def write_segment(directory, name: str, size: int = 1 << 20, **kw) -> str:
    path = os.path.join(str(directory), name)
    with open(path, "wb") as fh:
        fh.write(segment_bytes(name, size, **kw))
    return path


def with_header(name: str, body: bytes, system_identifier: int = TEST_SYSTEM_ID) -> bytes:
    """`body` (its length is the segment size) with its first bytes replaced by segment `name`'s long header."""
    header = segment_bytes(name, len(body), system_identifier)[:40]
    return header + body[40:]
