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
from collections.abc import Iterable, Iterator

from walship.errors import IntegrityError

MAGIC = b"WALSHIP\x01"
_LEN = struct.Struct(">I")
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


def _zstd():
    """PEP 784's zstd module: in the standard library from Python 3.14, backports.zstd before.

    Chosen over python-zstandard because its decompressor takes max_length (memory stays
    bounded on data that compresses 30,000:1, like zero-filled files), reports `eof` so a
    truncated stream is caught, and hands out 1 MiB pieces instead of one joined buffer.
    """
    try:
        from compression import zstd  # type: ignore[import-not-found]
    except ImportError:
        from backports import zstd  # type: ignore[no-redef]
    return zstd


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
    raise ValueError(f"no decompressor for codec {codec!r}")    # "none" needs none: decode_stream passes it on


def compress_bytes(data: bytes, codec: str, level: int | None = None) -> bytes:
    if codec == "lz4":
        import lz4.frame
        lvl = DEFAULT_LEVELS[codec] if level is None else level
        return lz4.frame.compress(data, compression_level=lvl, content_checksum=True)
    c = compressor(codec, level)
    return c.compress(data) + c.flush()


# --- encryption (optional) --------------------------------------------------

def _seal(header: bytes, payload: Iterable[bytes], keyring) -> Iterator[bytes]:
    from walship import crypto
    return crypto.encrypt(payload, keyring.current, header)


def _unseal(meta: dict, header: bytes, payload: Iterable[bytes], keyring, name: str) -> Iterable[bytes]:
    enc = meta.get("enc")
    if not enc:
        return payload
    from walship import crypto
    if enc.get("alg") != crypto.ALGORITHM:
        raise IntegrityError(f"{name} is encrypted with an unknown scheme {enc.get('alg')!r}")
    if keyring is None:
        raise IntegrityError(f"{name} is encrypted (key {enc.get('kid')}) but no encryption key is configured",
                             "set WALSHIP_ENCRYPTION_KEY_FILE (or _KEY / _KEY_COMMAND)")
    return crypto.decrypt(payload, keyring.key_for(enc.get("kid", ""), name), header, name)


def _header_for(meta: dict, keyring) -> bytes:
    if keyring is not None:
        from walship import crypto
        meta = {**meta, "enc": {"alg": crypto.ALGORITHM, "kid": keyring.current_id}}
    return encode_header(meta)


# --- whole objects (WAL) ---------------------------------------------------

def pack(data: bytes, codec: str, level: int | None = None, keyring=None, sha256: str | None = None,
         **meta) -> bytes:
    """A stored object holding data. Unencrypted objects carry size and SHA-256 in the header
    (a conflicting push is then recognised from the header alone); encrypted ones carry
    neither in the clear: the AEAD authenticates their content."""
    compressed = compress_bytes(data, codec, level)
    if keyring is None:
        digest = sha256 or hashlib.sha256(data).hexdigest()
        return encode_header({"codec": codec, "size": len(data), "sha256": digest, **meta}) + compressed
    header = _header_for({"codec": codec, **meta}, keyring)
    return header + b"".join(_seal(header, [compressed], keyring))


def unpack(blob: bytes, name: str = "object", keyring=None) -> bytes:
    """The original bytes, authenticated (encrypted) or checked against size and SHA-256."""
    meta, offset = parse_header(blob, name)
    payload = _unseal(meta, blob[:offset], [blob[offset:]], keyring, name)
    data = b"".join(decode_stream(payload, meta["codec"], name))
    if "size" in meta and len(data) != meta["size"]:
        raise IntegrityError(f"{name} is corrupt: {len(data)} bytes instead of {meta['size']}")
    if "sha256" in meta and hashlib.sha256(data).hexdigest() != meta["sha256"]:
        raise IntegrityError(f"{name} is corrupt: SHA-256 mismatch")
    return data


# --- streams (backups) -----------------------------------------------------

def encode_stream(chunks: Iterable[bytes], codec: str, level: int | None = None, keyring=None,
                  **meta) -> Iterator[bytes]:
    """A stored object streamed from plaintext chunks: header, then compressed (and sealed) payload."""
    comp = compressor(codec, level)

    def compressed() -> Iterator[bytes]:
        for chunk in chunks:
            out = comp.compress(chunk)
            if out:
                yield out
        tail = comp.flush()
        if tail:
            yield tail
    return frame(compressed(), codec, keyring, **meta)


def frame(compressed: Iterable[bytes], codec: str, keyring=None, **meta) -> Iterator[bytes]:
    """A stored object around an already compressed payload (sealed when a key ring is given)."""
    header = _header_for({"codec": codec, **meta}, keyring)
    yield header
    yield from (_seal(header, compressed, keyring) if keyring is not None else compressed)


def open_stream(chunks: Iterable[bytes], name: str = "object", keyring=None) -> tuple[dict, Iterator[bytes]]:
    """Header and plaintext of a stored stream: decrypted, decompressed, verified as it is read."""
    meta, header, payload = _split(chunks, name)
    return meta, decode_stream(_unseal(meta, header, payload, keyring, name), meta["codec"], name)


def decode_stream(payload: Iterable[bytes], codec: str, name: str = "object") -> Iterator[bytes]:
    """Decompress a payload stream in pieces of at most OUTPUT_CHUNK bytes, whatever the ratio;
    IntegrityError if it is corrupt, truncated, or has data after its end."""
    if codec == "none":
        yield from payload
        return
    dec = decompressor(codec)
    try:
        for chunk in payload:
            if not chunk:
                continue
            if dec.eof:
                raise IntegrityError(f"{name} is corrupt: data after the end of the compressed stream")
            yield from _inflate(dec, chunk)
            if dec.eof and dec.unused_data:
                raise IntegrityError(f"{name} is corrupt: data after the end of the compressed stream")
    except IntegrityError:
        raise
    except Exception as exc:  # ZstdError, RuntimeError (lz4), zlib.error, EOFError
        raise IntegrityError(f"{name} is corrupt: {codec} decompression failed ({exc})") from None
    if not dec.eof:
        raise IntegrityError(f"{name} is truncated: the {codec} stream ends early")


def _inflate(dec, data: bytes) -> Iterator[bytes]:
    """All the output of one input chunk, OUTPUT_CHUNK bytes at a time."""
    out = dec.decompress(data, OUTPUT_CHUNK)
    if out:
        yield out
    if hasattr(dec, "unconsumed_tail"):                      # zlib keeps unused input for the next call
        while not dec.eof and (dec.unconsumed_tail or len(out) == OUTPUT_CHUNK):
            out = dec.decompress(dec.unconsumed_tail, OUTPUT_CHUNK)
            if not out and not dec.unconsumed_tail:
                break
            if out:
                yield out
    else:                                                    # zstd and lz4 keep it inside
        while not dec.eof and not dec.needs_input:
            out = dec.decompress(b"", OUTPUT_CHUNK)
            if out:
                yield out


def split_header(chunks: Iterable[bytes], name: str = "object") -> tuple[dict, Iterator[bytes]]:
    """Read the header off a stream of chunks; returns it and the payload chunks."""
    meta, _, payload = _split(chunks, name)
    return meta, payload


def _split(chunks: Iterable[bytes], name: str) -> tuple[dict, bytes, Iterator[bytes]]:
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
                return meta, buf[:offset], payload()
        try:
            buf += next(it)
        except StopIteration:
            parse_header(buf, name)  # raises: truncated
            raise IntegrityError(f"{name} has a truncated header") from None
