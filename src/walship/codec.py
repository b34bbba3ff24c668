"""The stored object format: a small self-describing header, then the payload.

    b"WALSHIP\\x01" | u32 big-endian header length | header JSON | payload

The header names the codec (zstd, lz4, gzip, none) and, for objects that are
stored whole (WAL), the uncompressed size and SHA-256 so that a restore can
prove it got back exactly what was archived and wal-push can tell a repeated
push of the same segment from a conflicting one by reading only the header.
Compressed payloads also carry their codec's own checksum (zstd and lz4
content checksums, gzip CRC) and must end with a complete frame, so a
truncated object is detected even when streamed.

Writing and reading objects (compressing, sealing, verifying) is walship.pipeline's.
"""

from __future__ import annotations

import struct
import zlib

from walship import flatjson
from walship.errors import IntegrityError

MAGIC = b"WALSHIP\x01"
LENGTH = struct.Struct(">I")   # the header's length, after the magic
HEADER_PROBE = 4096          # bytes to read to be sure to have the whole header
DEFAULT_LEVELS = {"zstd": 3, "lz4": 0, "gzip": 6, "none": 0}
CODECS = tuple(DEFAULT_LEVELS)
# The levels each codec accepts (inclusive); "none" takes no level. zstd also has negative "fast"
# levels, down to the bound its module reports (see level_error).
LEVEL_RANGES: dict[str, tuple[int, int] | None] = {"zstd": (1, 22), "lz4": (0, 16), "gzip": (0, 9), "none": None}
# archive_command latency matters more than the last few percent of size: zstd -1 compresses
# a 16 MiB segment in ~37 ms here (level 3: ~62 ms) for ~25 % more bytes.
WAL_LEVELS = {"zstd": 1, "lz4": 0, "gzip": 1, "none": 0}
OUTPUT_CHUNK = 1 << 20      # largest piece a decompressor hands out: bounds memory on any ratio


def level_error(codec: str, level: int) -> str | None:
    """None when codec accepts level, else the levels it accepts (for a one-line configuration error)."""
    bounds = LEVEL_RANGES[codec]
    if bounds is None:
        return f"compression {codec} takes no level: unset compression_level"
    low, high = bounds
    if low <= level <= high:
        return None
    fastest = None
    if codec == "zstd":
        try:
            fastest = _zstd().CompressionParameter.compression_level.bounds()[0]
        except (ImportError, AttributeError):
            fastest = None
        if fastest is not None and fastest <= level < 0:
            return None
    fast = f", or {fastest} to -1 (fast levels)" if fastest is not None and fastest < 0 else ""
    return f"{codec} takes levels {low} to {high}{fast}"


def encode_header(meta: dict) -> bytes:
    body = flatjson.dumps(meta).encode()
    return MAGIC + LENGTH.pack(len(body)) + body


def parse_header(data: bytes, name: str = "object") -> tuple[dict, int]:
    """(header, offset of the payload); IntegrityError when it is not a walship object."""
    if len(data) < len(MAGIC) + 4 or data[:len(MAGIC)] != MAGIC:
        raise IntegrityError(f"{name} is not a walship object (bad magic): corrupt or written by another tool")
    (length,) = LENGTH.unpack_from(data, len(MAGIC))
    start = len(MAGIC) + 4
    if length > 1 << 20 or len(data) < start + length:
        raise IntegrityError(f"{name} has a truncated or corrupt header")
    try:
        meta = flatjson.loads(data[start:start + length])
        if meta is None:
            import json
            meta = json.loads(data[start:start + length])
    except ValueError:
        raise IntegrityError(f"{name} has a corrupt header") from None
    if not isinstance(meta, dict) or meta.get("codec") not in DEFAULT_LEVELS:
        raise IntegrityError(f"{name} has an unknown codec {meta.get('codec') if isinstance(meta, dict) else '?'}")
    return meta, start + length


# --- compression -----------------------------------------------------------

class _Identity:
    eof = True

    def compress(self, data: bytes) -> bytes:
        return bytes(data)

    def flush(self) -> bytes:
        return b""


_ZSTD = None


def _zstd():
    """PEP 784's zstd module: in the standard library from Python 3.14, backports.zstd before.

    Chosen over python-zstandard because its decompressor takes max_length (memory stays
    bounded on data that compresses 30,000:1, like zero-filled files), reports `eof` so a
    truncated stream is caught, and hands out 1 MiB pieces instead of one joined buffer.
    Found once: Python does not remember an import that failed, so asking for compression.zstd
    on every call searched sys.path again for each object read (a chain restore reads hundreds).
    """
    global _ZSTD
    if _ZSTD is None:
        try:
            from compression import zstd  # type: ignore[import-not-found]
        except ImportError:
            from backports import zstd  # type: ignore[no-redef,unused-ignore]  # a redefinition only where 3.14 has compression.zstd
        _ZSTD = zstd
    return _ZSTD


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_LZ4_MAGIC = b"\x04\x22\x4d\x18"
FRAME_PROBE = 5                # bytes of a payload that checksum_declared reads


def checksum_declared(codec: str, payload_start: bytes) -> bool:
    r"""Whether the compressed frame starting payload_start declares a checksum of its whole content, which
    its decompressor then verifies at the frame's end: zstd's Content_Checksum_flag (XXH64) or lz4's
    C.Checksum flag (XXH32) in the frame header's descriptor byte. walship writes both; a frame without
    (another writer, or a damaged header) gets False, and the reader verifies SHA-256 instead.

    >>> checksum_declared("zstd", _ZSTD_MAGIC + b"\x24")
    True
    >>> checksum_declared("zstd", _ZSTD_MAGIC + b"\x20"), checksum_declared("gzip", bytes(5))
    (False, False)
    """
    if len(payload_start) < FRAME_PROBE:
        return False
    if codec == "zstd":
        return payload_start[:4] == _ZSTD_MAGIC and bool(payload_start[4] & 0x04)
    if codec == "lz4":
        return payload_start[:4] == _LZ4_MAGIC and bool(payload_start[4] & 0x04)
    return False


def compressor(codec: str, level: int | None = None):
    level = DEFAULT_LEVELS[codec] if level is None else level
    if codec == "zstd":
        zstd = _zstd()
        return zstd.ZstdCompressor(options={zstd.CompressionParameter.compression_level: level,
                                            zstd.CompressionParameter.checksum_flag: 1})
    if codec == "lz4":
        import lz4.frame
        return _Lz4Compressor(lz4.frame.LZ4FrameCompressor(compression_level=level, content_checksum=True))
    if codec == "gzip":
        return zlib.compressobj(level, zlib.DEFLATED, 31)
    return _Identity()


class _Lz4Compressor:
    def __init__(self, inner):
        self.inner = inner
        self.started = False

    def compress(self, data: bytes) -> bytes:
        head = b""
        if not self.started:
            head = self.inner.begin()
            self.started = True
        return head + self.inner.compress(data)

    def flush(self) -> bytes:
        head = b"" if self.started else self.inner.begin()
        self.started = True
        return head + self.inner.flush()


def decompressor(codec: str):
    """A decompressor with decompress(data, max_length), eof, unused_data, and needs_input or unconsumed_tail."""
    if codec == "zstd":
        return _zstd().ZstdDecompressor()
    if codec == "lz4":
        import lz4.frame
        return lz4.frame.LZ4FrameDecompressor()
    if codec == "gzip":
        return zlib.decompressobj(31)
    raise ValueError(f"no decompressor for codec {codec!r}")    # "none" needs none: pipeline.decompress passes it on
