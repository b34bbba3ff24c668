"""The long page header at the start of every WAL segment, and the identity in pg_control.

A segment's first page starts with XLogLongPageHeaderData:

    uint16 xlp_magic      WAL format of the major version that wrote it
    uint16 xlp_info       flags; XLP_LONG_HEADER (0x0002) on a segment's first page
    uint32 xlp_tli        timeline of the page
    uint64 xlp_pageaddr   LSN of the page: the start of the segment its name says
    uint32 xlp_rem_len    (4 bytes of padding follow)
    uint64 xlp_sysid      system identifier of the cluster (pg_control)
    uint32 xlp_seg_size   wal_segment_size
    uint32 xlp_xlog_blcksz

Little-endian on every platform PostgreSQL is tested on here (x86-64, arm64).
A recycled segment keeps the header of the segment it was before it was renamed,
so its page address gives it away; a segment of another cluster carries another
system identifier.
"""

from __future__ import annotations

import struct

from walship.errors import IntegrityError

_LONG_HEADER = struct.Struct("<HHIQI4xQII")
LONG_HEADER_SIZE = _LONG_HEADER.size          # 40
XLP_LONG_HEADER = 0x0002

# xlp_magic (XLOG_PAGE_MAGIC in src/include/access/xlog_internal.h) -> major version
WAL_MAGIC_MAJOR = {0xD10D: 14, 0xD110: 15, 0xD113: 16, 0xD116: 17, 0xD118: 18}


class SegmentHeader(tuple):
    """(magic, timeline, page address, system identifier, segment size, block size)."""

    __slots__ = ()

    @property
    def magic(self) -> int:
        return self[0]

    @property
    def timeline(self) -> int:
        return self[1]

    @property
    def page_address(self) -> int:
        return self[2]

    @property
    def system_identifier(self) -> str:
        return str(self[3])

    @property
    def segment_size(self) -> int:
        return self[4]

    @property
    def block_size(self) -> int:
        return self[5]

    @property
    def pg_major(self) -> int | None:
        return WAL_MAGIC_MAJOR.get(self[0])


def parse_segment_header(data: bytes, what: str) -> SegmentHeader:
    """The long header of a segment's first page; IntegrityError when there is none."""
    if len(data) < LONG_HEADER_SIZE:
        raise IntegrityError(f"{what} is too short to be a WAL segment ({len(data)} bytes)")
    magic, info, tli, pageaddr, _rem, sysid, seg_size, blcksz = _LONG_HEADER.unpack_from(data)
    if magic == 0 and sysid == 0 and pageaddr == 0:
        raise IntegrityError(f"{what} starts with zeros: it is not a written WAL segment",
                             "PostgreSQL has not written it yet (a preallocated or recycled file)")
    if not info & XLP_LONG_HEADER:
        raise IntegrityError(f"{what} has no long page header: it is not the start of a WAL segment")
    return SegmentHeader((magic, tli, pageaddr, sysid, seg_size, blcksz))


def check_segment(data: bytes, name: str, *, size: int, start_lsn: int, timeline: int,
                  system_identifier: str | None, allow_unknown_format: bool = False) -> SegmentHeader:
    """Refuse a file that is not the segment `name` of this cluster, before it is archived or served.

    size: the segment size the file must have; start_lsn and timeline: what its name says;
    allow_unknown_format: the operator's allow_untested_pg (a newer major's WAL magic).
    """
    what = f"WAL file {name}"
    if len(data) != size:
        raise IntegrityError(f"{what} is {len(data)} bytes, not the cluster's segment size {size}",
                             "it is not a complete WAL segment; do not archive it by hand")
    header = parse_segment_header(data, what)
    if header.pg_major is None and not allow_unknown_format:
        raise IntegrityError(f"{what} has WAL format 0x{header.magic:04X}, which walship does not know",
                             "it was written by a PostgreSQL walship was not tested on (allow_untested_pg = true runs it anyway), "
                             "or it is not WAL")
    if header.segment_size != size:
        raise IntegrityError(f"{what} says its segment size is {header.segment_size}, but the file is {size} bytes")
    if header.page_address != start_lsn:
        from walship.pg.walnames import format_lsn
        raise IntegrityError(
            f"{what} starts at LSN {format_lsn(header.page_address)}, not at {format_lsn(start_lsn)} as its name says: "
            "it is a recycled or renamed file, not that segment",
            "PostgreSQL has not written this segment yet; never archive it by hand")
    if header.timeline > timeline:
        raise IntegrityError(f"{what} holds timeline {header.timeline} pages, newer than its name's {timeline}")
    if system_identifier is not None and header.system_identifier != system_identifier:
        raise IntegrityError(
            f"{what} belongs to the cluster with system identifier {header.system_identifier}, "
            f"not {system_identifier}",
            "another cluster's WAL: give each cluster its own repository")
    return header


def read_control_identity(pgdata: str = ".") -> tuple[str, int] | None:
    """(system identifier, pg_control version) from PGDATA/global/pg_control, or None when unreadable."""
    import os
    try:
        with open(os.path.join(pgdata, "global", "pg_control"), "rb") as fh:
            head = fh.read(12)
    except OSError:
        return None
    if len(head) < 12:
        return None
    sysid, control_version = struct.unpack("<QI", head)
    return str(sysid), control_version


def read_pg_major(pgdata: str = ".") -> int | None:
    """The major version in PGDATA/PG_VERSION, or None when unreadable."""
    import os
    try:
        with open(os.path.join(pgdata, "PG_VERSION")) as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None
