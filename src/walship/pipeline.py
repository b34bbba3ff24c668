"""The byte pipeline: every stored object is written, and read back, by one chain of small stages.

    write:  plaintext -> compress -> seal (with a key ring) -> header + payload
    read:   header + payload -> unseal -> decompress -> verify (size, SHA-256: when the header has them)

A stage is a generator from chunks to chunks, so a chain streams whatever its
length: a 16 MiB WAL segment is one chunk through it, a backup part thousands.
Whole objects (WAL, history files) and streams (backup parts, manifests) go
through the same writer and the same reader; `count` and `hashed` are the stages
a caller adds to watch bytes pass (progress, stored size, digests). The model is
pgBackRest's filter group (src/common/io/filter/), in far fewer lines: Python
generators already are its buffers and its "done" flag.

Reading hands chunks on as the decompressor produced them (no join, no copy):
a restore writes them to disk as they come (backup/extract.py).
The envelope itself (magic, header, codecs) is codec.py's.
"""

from __future__ import annotations

from walship import codec
from walship.errors import IntegrityError

TYPE_CHECKING = False          # typing's own would import typing on archive_command's fast path
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from typing import TypeVar
    Piece = TypeVar("Piece", bytes, memoryview)    # what passes through count and hashed unchanged

# --- stages ------------------------------------------------------------------

def compress(chunks: Iterable[bytes], codec_name: str, level: int | None = None) -> Iterator[bytes]:
    """The chunks compressed with codec_name, ending with a complete frame."""
    compressor = codec.compressor(codec_name, level)
    for chunk in chunks:
        out = compressor.compress(chunk)
        if out:
            yield out
    tail = compressor.flush()
    if tail:
        yield tail


def seal(chunks: Iterable[bytes], header: bytes, keyring) -> Iterator[bytes]:
    """The chunks encrypted with the key ring's current key, the object's header authenticated with them."""
    from walship import crypto
    return crypto.encrypt(chunks, keyring.current, header)


def unseal(chunks: Iterable[bytes], meta: dict, header: bytes, keyring, name: str) -> Iterable[bytes]:
    """The payload decrypted and authenticated when the header says it is sealed; as is otherwise."""
    enc = meta.get("enc")
    if not enc:
        return chunks
    from walship import crypto
    if enc.get("alg") != crypto.ALGORITHM:
        raise IntegrityError(f"{name} is encrypted with an unknown scheme {enc.get('alg')!r}")
    if keyring is None:
        raise IntegrityError(f"{name} is encrypted (key {enc.get('kid')}) but no encryption key is configured",
                             "set WALSHIP_ENCRYPTION_KEY_FILE (or _KEY / _KEY_COMMAND)")
    return crypto.decrypt(chunks, keyring.key_for(enc.get("kid", ""), name), header, name)


def decompress(chunks: Iterable[bytes], codec_name: str, name: str = "object") -> Iterator[bytes]:
    """Decompress a payload in pieces of at most codec.OUTPUT_CHUNK bytes, whatever the ratio;
    IntegrityError if it is corrupt, truncated, or has data after its end."""
    if codec_name == "none":
        yield from chunks
        return
    dec = codec.decompressor(codec_name)
    try:
        for chunk in chunks:
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
        raise IntegrityError(f"{name} is corrupt: {codec_name} decompression failed ({exc})") from None
    if not dec.eof:
        raise IntegrityError(f"{name} is truncated: the {codec_name} stream ends early")


def _inflate(dec, data: bytes) -> Iterator[bytes]:
    """All the output of one input chunk, codec.OUTPUT_CHUNK bytes at a time."""
    out = dec.decompress(data, codec.OUTPUT_CHUNK)
    if out:
        yield out
    if hasattr(dec, "unconsumed_tail"):                      # zlib keeps unused input for the next call
        while not dec.eof and (dec.unconsumed_tail or len(out) == codec.OUTPUT_CHUNK):
            out = dec.decompress(dec.unconsumed_tail, codec.OUTPUT_CHUNK)
            if not out and not dec.unconsumed_tail:
                break
            if out:
                yield out
    else:                                                    # zstd and lz4 keep it inside
        while not dec.eof and not dec.needs_input:
            out = dec.decompress(b"", codec.OUTPUT_CHUNK)
            if out:
                yield out


class Tally:
    """A byte total that a count stage adds to."""

    def __init__(self) -> None:
        self.total = 0

    def add(self, n: int) -> None:
        self.total += n


def count(chunks: Iterable[Piece], add: Callable[[int], object]) -> Iterator[Piece]:
    """The chunks unchanged; add(len) for each as it passes."""
    for chunk in chunks:
        add(len(chunk))
        yield chunk


def hashed(chunks: Iterable[Piece], digest) -> Iterator[Piece]:
    """The chunks unchanged, fed to digest (a hashlib object) as they pass."""
    for chunk in chunks:
        digest.update(chunk)
        yield chunk


def verify(chunks: Iterable[bytes], meta: dict, name: str) -> Iterator[bytes]:
    """The chunks unchanged; IntegrityError at their end unless they have the header's size and SHA-256."""
    if "size" not in meta and "sha256" not in meta:
        yield from chunks                                    # streams and sealed objects: nothing to compare
        return
    size = Tally()
    if "sha256" not in meta:
        yield from count(chunks, size.add)
        digest = None
    else:
        import hashlib  # here, not at the top: a restore_command miss never hashes (OpenSSL costs it 2 ms)
        digest = hashlib.sha256()
        yield from count(hashed(chunks, digest), size.add)
    if "size" in meta and size.total != meta["size"]:
        raise IntegrityError(f"{name} is corrupt: {size.total} bytes instead of {meta['size']}")
    if digest is not None and digest.hexdigest() != meta["sha256"]:
        raise IntegrityError(f"{name} is corrupt: SHA-256 mismatch")


# --- the writer and the reader -----------------------------------------------

def write(chunks: Iterable[bytes], codec_name: str, level: int | None = None, keyring=None,
          **meta) -> Iterator[bytes]:
    """A stored object: its header, then the chunks compressed, and sealed when a key ring is given.
    meta goes into the header (the key id is added when sealed)."""
    return _envelope(compress(chunks, codec_name, level), codec_name, keyring, meta)


def _envelope(payload: Iterable[bytes], codec_name: str, keyring, meta: dict) -> Iterator[bytes]:
    """The header, then the compressed payload, sealed when a key ring is given."""
    if keyring is not None:
        from walship import crypto
        meta = {**meta, "enc": {"alg": crypto.ALGORITHM, "kid": keyring.current_id}}
    header = codec.encode_header({"codec": codec_name, **meta})
    yield header
    yield from (seal(payload, header, keyring) if keyring is not None else payload)


def read(chunks: Iterable[bytes], name: str = "object", keyring=None,
         codec_checksum_suffices: bool = False) -> tuple[dict, Iterator[bytes]]:
    """The header of a stored object and its plaintext: decrypted, decompressed, verified as it is read
    (a consumer must read to the end: the last checks run there).

    codec_checksum_suffices (WAL served to recovery): where the compressed frame declares a checksum of its
    content (codec.checksum_declared), that checksum, which the decompressor verifies, proves the bytes
    unchanged since they were archived, and the header's SHA-256 is not computed again; the size still is.
    SHA-256 was a fifth of a cold restore_command call and a core-second for every 2 GiB replayed. Against
    someone who can write to the repository it added nothing: the header it sits in is theirs to rewrite
    too (encryption's authentication is what stops them). `walship verify` still checks every SHA-256."""
    meta, header, payload = split(chunks, name)
    if codec_checksum_suffices and "sha256" in meta and not meta.get("enc"):
        start, payload = _peek(payload, codec.FRAME_PROBE)
        if codec.checksum_declared(meta["codec"], start):
            meta = {k: v for k, v in meta.items() if k != "sha256"}
    plain = decompress(unseal(payload, meta, header, keyring, name), meta["codec"], name)
    return meta, verify(plain, meta, name)


def _peek(chunks: Iterator[bytes], n: int) -> tuple[bytes, Iterator[bytes]]:
    """The first n bytes of chunks (fewer at their end), and the chunks whole again."""
    taken: list[bytes] = []
    have = 0
    for chunk in chunks:
        taken.append(chunk)
        have += len(chunk)
        if have >= n:
            break
    start = b"".join(chunk[:n] for chunk in taken)[:n]

    def again() -> Iterator[bytes]:
        yield from taken
        yield from chunks
    return start, again()


def split(chunks: Iterable[bytes], name: str = "object") -> tuple[dict, bytes, Iterator[bytes]]:
    """(header as a dict, header bytes, payload chunks) of a stored object given as chunks."""
    it = iter(chunks)
    buf = b""
    probe = len(codec.MAGIC) + codec.LENGTH.size
    while True:
        if len(buf) >= probe:
            if buf[:len(codec.MAGIC)] != codec.MAGIC:
                codec.parse_header(buf, name)  # raises the right error
            (length,) = codec.LENGTH.unpack_from(buf, len(codec.MAGIC))
            if len(buf) >= probe + length:
                meta, offset = codec.parse_header(buf, name)
                rest = buf[offset:]

                def payload(rest: bytes = rest) -> Iterator[bytes]:
                    if rest:
                        yield rest
                    yield from it
                return meta, buf[:offset], payload()
        try:
            buf += next(it)
        except StopIteration:
            codec.parse_header(buf, name)  # raises: truncated
            raise IntegrityError(f"{name} has a truncated header") from None


# --- whole objects (WAL, history files) --------------------------------------

THREADED_HASH = 1 << 20       # pack_hashed hashes data this large in a thread beside its compression

def pack_hashed(data: bytes, codec_name: str, level: int | None = None, keyring=None, **meta) -> tuple[bytes, str]:
    """pack(data, ...) and data's SHA-256 (hex). The hash runs in a thread beside the compression: OpenSSL and
    zstd both let go of the GIL, so a 16 MiB WAL segment takes the longer of the two instead of their sum
    (24 -> 16 ms here, a quarter of a cold archive_command call). Below THREADED_HASH bytes (a history
    file) a thread costs more than it saves: hashed first, then compressed."""
    import _thread  # the bare module: threading costs archive_command's cold path an import for one lock
    import hashlib
    found: list[str | BaseException] = []
    done = _thread.allocate_lock()
    done.acquire()

    def digest() -> None:
        try:
            found.append(hashlib.sha256(data).hexdigest())
        except BaseException as exc:          # noqa: BLE001 - raised again in the caller's thread below
            found.append(exc)
        finally:
            done.release()

    if len(data) < THREADED_HASH:
        digest()
    else:
        try:
            _thread.start_new_thread(digest, ())
        except RuntimeError:                  # no thread to be had: one after the other
            digest()
    try:
        payload = list(compress([data], codec_name, level))
    finally:
        done.acquire()                        # the hash is done (also when compressing failed)
    result = found[0]
    if isinstance(result, BaseException):
        raise result
    if keyring is None:
        meta = {"size": len(data), "sha256": result, **meta}
    return b"".join(_envelope(payload, codec_name, keyring, meta)), result


def pack(data: bytes, codec_name: str, level: int | None = None, keyring=None, sha256: str | None = None,
         **meta) -> bytes:
    """A stored object holding data. Unencrypted objects carry size and SHA-256 in the header
    (a conflicting push is then recognised from the header alone); encrypted ones carry
    neither in the clear: the AEAD authenticates their content."""
    if keyring is None:
        import hashlib
        meta = {"size": len(data), "sha256": sha256 or hashlib.sha256(data).hexdigest(), **meta}
    return b"".join(write([data], codec_name, level, keyring, **meta))


def unpack(blob: bytes, name: str = "object", keyring=None, codec_checksum_suffices: bool = False) -> bytes:
    """The original bytes, authenticated (encrypted) or checked against size and SHA-256 (or, with
    codec_checksum_suffices, the codec's own checksum where the frame declares one: see read)."""
    _, plain = read([blob], name, keyring, codec_checksum_suffices)
    return b"".join(plain)
