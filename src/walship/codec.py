"""The stored object format: a small self-describing header, then the payload.

    b"WALSHIP\\x01" | u32 big-endian header length | header JSON | payload

The header names the codec (zstd, lz4, gzip, none) and, for objects that are
stored whole (WAL), the uncompressed size and SHA-256 so that a restore can
prove it got back exactly what was archived and wal-push can tell a repeated
push of the same segment from a conflicting one by reading only the header.
Compressed payloads also carry their codec's own checksum (zstd and lz4
content checksums, gzip CRC) and must end with a complete frame, so a
truncated object is detected even when streamed.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from typing import Iterable, Iterator

from walship.errors import IntegrityError

MAGIC = b"WALSHIP\x01"
_LEN = struct.Struct(">I")
HEADER_PROBE = 4096          # bytes to read to be sure to have the whole header
DEFAULT_LEVELS = {"zstd": 3, "lz4": 0, "gzip": 6, "none": 0}


def encode_header(meta: dict) -> bytes:
    body = json.dumps(meta, separators=(",", ":"), sort_keys=True).encode()
    return MAGIC + _LEN.pack(len(body)) + body


def parse_header(data: bytes, name: str = "object") -> tuple[dict, int]:
    """(header, offset of the payload); IntegrityError when it is not a walship object."""
    if len(data) < len(MAGIC) + 4 or data[:len(MAGIC)] != MAGIC:
        raise IntegrityError(f"{name} is not a walship object (bad magic): corrupt or written by another tool")
    (length,) = _LEN.unpack_from(data, len(MAGIC))
    start = len(MAGIC) + 4
    if length > 1 << 20 or len(data) < start + length:
        raise IntegrityError(f"{name} has a truncated or corrupt header")
    try:
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

    def decompress(self, data: bytes) -> bytes:
        return bytes(data)


def compressor(codec: str, level: int | None = None):
    level = DEFAULT_LEVELS[codec] if level is None else level
    if codec == "zstd":
        import zstandard
        return zstandard.ZstdCompressor(level=level, write_checksum=True).compressobj()
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
    if codec == "zstd":
        import zstandard
        return _ZstdDecompressor(zstandard.ZstdDecompressor().decompressobj())
    if codec == "lz4":
        import lz4.frame
        return lz4.frame.LZ4FrameDecompressor()
    if codec == "gzip":
        return zlib.decompressobj(31)
    return _Identity()


class _ZstdDecompressor:
    """zstandard's decompressobj has no `eof`; track the end of the frame ourselves."""

    def __init__(self, inner):
        self.inner = inner
        self.eof = False

    def decompress(self, data: bytes) -> bytes:
        out = self.inner.decompress(data)
        if getattr(self.inner, "eof", None) is not None:
            self.eof = bool(self.inner.eof)
        else:  # older zstandard: unused_data appears once the frame ended
            self.eof = self.eof or bool(getattr(self.inner, "unused_data", b""))
        return out


def compress_bytes(data: bytes, codec: str, level: int | None = None) -> bytes:
    if codec == "zstd":
        import zstandard
        lvl = DEFAULT_LEVELS[codec] if level is None else level
        return zstandard.ZstdCompressor(level=lvl, write_checksum=True).compress(data)
    if codec == "lz4":
        import lz4.frame
        lvl = DEFAULT_LEVELS[codec] if level is None else level
        return lz4.frame.compress(data, compression_level=lvl, content_checksum=True)
    c = compressor(codec, level)
    return c.compress(data) + c.flush()


# --- whole objects (WAL) ---------------------------------------------------

def pack(data: bytes, codec: str, level: int | None = None, **meta) -> bytes:
    header = {"codec": codec, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), **meta}
    return encode_header(header) + compress_bytes(data, codec, level)


def unpack(blob: bytes, name: str = "object") -> bytes:
    """The original bytes, verified against the header's size and SHA-256."""
    meta, offset = parse_header(blob, name)
    data = b"".join(decode_stream([blob[offset:]], meta["codec"], name))
    if "size" in meta and len(data) != meta["size"]:
        raise IntegrityError(f"{name} is corrupt: {len(data)} bytes instead of {meta['size']}")
    if "sha256" in meta and hashlib.sha256(data).hexdigest() != meta["sha256"]:
        raise IntegrityError(f"{name} is corrupt: SHA-256 mismatch")
    return data


# --- streams (backups) -----------------------------------------------------

def encode_stream(chunks: Iterable[bytes], codec: str, level: int | None = None, **meta) -> Iterator[bytes]:
    yield encode_header({"codec": codec, **meta})
    comp = compressor(codec, level)
    for chunk in chunks:
        out = comp.compress(chunk)
        if out:
            yield out
    tail = comp.flush()
    if tail:
        yield tail


def decode_stream(payload: Iterable[bytes], codec: str, name: str = "object") -> Iterator[bytes]:
    """Decompress a payload stream; IntegrityError if it is corrupt or truncated."""
    dec = decompressor(codec)
    try:
        for chunk in payload:
            if getattr(dec, "eof", False) and codec != "none" and chunk:
                raise IntegrityError(f"{name} is corrupt: data after the end of the compressed stream")
            out = dec.decompress(chunk)
            if out:
                yield out
    except IntegrityError:
        raise
    except Exception as exc:  # zstd.ZstdError, RuntimeError (lz4), zlib.error
        raise IntegrityError(f"{name} is corrupt: {codec} decompression failed ({exc})") from None
    if codec != "none" and not getattr(dec, "eof", False):
        raise IntegrityError(f"{name} is truncated: the {codec} stream ends early")


def split_header(chunks: Iterable[bytes], name: str = "object") -> tuple[dict, Iterator[bytes]]:
    """Read the header off a stream of chunks; returns it and the payload chunks."""
    it = iter(chunks)
    buf = b""
    while True:
        if len(buf) >= len(MAGIC) + 4:
            if buf[:len(MAGIC)] != MAGIC:
                parse_header(buf, name)  # raises the right error
            (length,) = _LEN.unpack_from(buf, len(MAGIC))
            if len(buf) >= len(MAGIC) + 4 + length:
                meta, offset = parse_header(buf, name)
                rest = buf[offset:]

                def payload() -> Iterator[bytes]:
                    if rest:
                        yield rest
                    yield from it
                return meta, payload()
        try:
            buf += next(it)
        except StopIteration:
            parse_header(buf, name)  # raises: truncated
            raise IntegrityError(f"{name} has a truncated header") from None
