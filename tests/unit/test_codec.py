import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from walship import codec, crypto, pipeline
from walship.errors import IntegrityError

CODECS = ["zstd", "lz4", "gzip", "none"]


@pytest.mark.parametrize("name", CODECS)
def test_pack_unpack_round_trip(name):
    data = os.urandom(1000) + b"a" * 100000
    blob = pipeline.pack(data, name)
    assert pipeline.unpack(blob) == data


@pytest.mark.parametrize("name", CODECS)
def test_flipped_byte_is_detected(name):
    data = b"walship" * 20000
    blob = bytearray(pipeline.pack(data, name))
    blob[len(blob) // 2] ^= 0x40
    with pytest.raises(IntegrityError):
        pipeline.unpack(bytes(blob), "wal/x")


@pytest.mark.parametrize("name, where", [(name, where) for name in CODECS for where in ("payload start", "middle", "end")
                                          # gzip's header holds a time and flags outside its content and CRC
                                          if (name, where) != ("gzip", "payload start")])
def test_flipped_byte_is_detected_where_the_codec_checksum_stands_in_for_sha256(name, where):
    """What wal-fetch and the prefetch queue read (codec_checksum_suffices): a byte changed anywhere in the
    payload, its frame header and checksum included, is still refused."""
    data = os.urandom(3000) + b"walship" * 20000
    blob = bytearray(pipeline.pack(data, name))
    _, start = codec.parse_header(bytes(blob))
    blob[{"payload start": start + 4, "middle": (start + len(blob)) // 2, "end": len(blob) - 2}[where]] ^= 0x40
    with pytest.raises(IntegrityError):
        pipeline.unpack(bytes(blob), "wal/x", codec_checksum_suffices=True)


def _with_header_sha256(blob: bytes, sha256: str) -> bytes:
    meta, start = codec.parse_header(blob)
    return codec.encode_header({**meta, "sha256": sha256}) + blob[start:]


@pytest.mark.parametrize("name", CODECS)
def test_the_header_sha256_is_checked_unless_the_frame_declares_its_own_checksum(name):
    """A header whose SHA-256 disagrees with a sound payload: the full check (verify, backups) refuses it;
    the WAL read path relies on the frame's checksum where zstd and lz4 frames declare one (walship's do),
    and checks SHA-256 for gzip and uncompressed payloads, which have no such checksum of their own."""
    data = os.urandom(1000) + b"a" * 100000
    blob = _with_header_sha256(pipeline.pack(data, name), "0" * 64)
    with pytest.raises(IntegrityError, match="SHA-256 mismatch"):
        pipeline.unpack(blob, "wal/x")
    if name in ("zstd", "lz4"):
        assert pipeline.unpack(blob, "wal/x", codec_checksum_suffices=True) == data
    else:
        with pytest.raises(IntegrityError, match="SHA-256 mismatch"):
            pipeline.unpack(blob, "wal/x", codec_checksum_suffices=True)


def test_a_zstd_frame_without_a_checksum_is_checked_against_sha256():
    from walship.codec import _zstd
    data = b"walship" * 1000
    frame = _zstd().compress(data, options={_zstd().CompressionParameter.checksum_flag: 0})
    assert not codec.checksum_declared("zstd", frame[:codec.FRAME_PROBE])
    blob = codec.encode_header({"codec": "zstd", "size": len(data), "sha256": "0" * 64}) + frame
    with pytest.raises(IntegrityError, match="SHA-256 mismatch"):
        pipeline.unpack(blob, "wal/x", codec_checksum_suffices=True)
    assert pipeline.read([blob[:9], blob[9:20], blob[20:]], "wal/x", codec_checksum_suffices=True)[0]["sha256"]


def test_the_codec_examples_hold():
    import doctest
    failed, tried = doctest.testmod(codec)
    assert tried > 0 and failed == 0


@pytest.mark.parametrize("name", CODECS)
def test_truncated_object_is_detected(name):
    blob = pipeline.pack(os.urandom(50000), name)
    with pytest.raises(IntegrityError):
        pipeline.unpack(blob[: len(blob) - 10], "wal/x")


def test_foreign_object_is_refused_with_its_name():
    with pytest.raises(IntegrityError, match="wal/000000010000000000000001 is not a walship object"):
        pipeline.unpack(b"\x89LZO\x00garbage", "wal/000000010000000000000001")


@pytest.mark.parametrize("name", CODECS)
def test_stream_round_trip_in_small_chunks(name):
    data = os.urandom(300000) + b"z" * 300000
    chunks = [data[i:i + 7777] for i in range(0, len(data), 7777)]
    encoded = b"".join(pipeline.write(chunks, name, part=3))
    pieces = [encoded[i:i + 1000] for i in range(0, len(encoded), 1000)]
    meta, plain = pipeline.read(pieces, "part")
    assert meta == {"codec": name, "part": 3}
    assert b"".join(plain) == data


@pytest.mark.parametrize("name", ["zstd", "lz4", "gzip"])
def test_truncated_stream_is_detected(name):
    encoded = b"".join(pipeline.write([os.urandom(100000)], name))
    _, plain = pipeline.read([encoded[:-20]], "part")
    with pytest.raises(IntegrityError, match="part is (truncated|corrupt)"):
        b"".join(plain)


@pytest.mark.parametrize("name", ["zstd", "lz4", "gzip"])
def test_decompression_hands_out_bounded_pieces_of_zero_filled_data(name):
    # 256 MiB of zeros compress to a few KiB: a decompressor that returns all the output of
    # one input chunk at once would need the whole 256 MiB in memory.
    size = 256 << 20
    encoded = b"".join(pipeline.write((bytes(16 << 20) for _ in range(16)), name))
    assert len(encoded) < size // 100
    _, plain = pipeline.read([encoded])
    total = 0
    for piece in plain:
        assert len(piece) <= codec.OUTPUT_CHUNK
        assert not any(piece[::4096])
        total += len(piece)
    assert total == size


@pytest.mark.parametrize("name", ["zstd", "lz4", "gzip"])
def test_stream_missing_only_its_last_bytes_is_truncated(name):
    # zstd and lz4 end with a content checksum; gzip with CRC and length: losing them loses no data
    # bytes, yet the object is incomplete and must not be taken as whole
    encoded = b"".join(pipeline.write([b"walship" * 50000], name))
    _, plain = pipeline.read([encoded[:-3]], "part")
    with pytest.raises(IntegrityError, match="part is truncated"):
        b"".join(plain)


@pytest.mark.parametrize("name", ["zstd", "lz4", "gzip"])
def test_bytes_after_the_end_of_the_stream_are_refused(name):
    encoded = b"".join(pipeline.write([b"walship" * 50000], name))
    for pieces in ([encoded + b"trailing"], [encoded, b"trailing"]):
        _, plain = pipeline.read(pieces, "part")
        with pytest.raises(IntegrityError, match="part is corrupt: data after the end"):
            b"".join(plain)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_header_parser_rejects_garbage_cleanly(data):
    try:
        codec.parse_header(data)
    except IntegrityError:
        pass


# Objects written by walship before the byte pipeline (codec.pack, codec.encode_stream and codec.frame of
# commit bb12907), kept as fixed bytes: what is in repositories today must read the same.
BEFORE = json.loads((Path(__file__).parent / "fixtures" / "objects_before_pipeline.json").read_text())
FIXTURE_CONTENT = b"walship fixture object " * 48
FIXTURE_KEYRING = crypto.Keyring([bytes(range(32))])


@pytest.mark.parametrize("name", sorted(k for k in BEFORE if not k.startswith("_")))
def test_objects_written_before_the_pipeline_read_back(name):
    blob = bytes.fromhex(BEFORE[name])
    keyring = FIXTURE_KEYRING if name.endswith("-sealed") else None
    assert pipeline.unpack(blob, name, keyring) == FIXTURE_CONTENT
    chunks = [blob[i:i + 100] for i in range(0, len(blob), 100)]       # streamed as a restore reads
    _, plain = pipeline.read(chunks, name, keyring)
    assert b"".join(plain) == FIXTURE_CONTENT


@pytest.mark.parametrize("name", CODECS)
def test_the_pipeline_writes_the_bytes_written_before(name):
    # same bytes, so every reader of the old format reads what the pipeline writes (lz4 whole objects
    # differ only in that the old one-shot frame recorded the content size: both are plain LZ4 frames)
    stream = b"".join(pipeline.write([FIXTURE_CONTENT[:500], FIXTURE_CONTENT[500:]], name, backup="b", part=0))
    assert stream.hex() == BEFORE[f"stream-{name}"] == BEFORE[f"framed-{name}"]
    whole = pipeline.pack(FIXTURE_CONTENT, name, name="000000010000000000000001")
    if name != "lz4":
        assert whole.hex() == BEFORE[f"whole-{name}"]
    old_meta, _ = codec.parse_header(bytes.fromhex(BEFORE[f"whole-{name}"]))
    assert codec.parse_header(whole)[0] == old_meta


def test_a_sealed_object_is_refused_without_its_key():
    with pytest.raises(IntegrityError, match="no encryption key is configured"):
        pipeline.unpack(bytes.fromhex(BEFORE["whole-zstd-sealed"]), "wal/x")


@pytest.mark.parametrize("name", CODECS)
@pytest.mark.parametrize("sealed", [False, True])
@pytest.mark.parametrize("size", [100, 2 << 20])               # a history file, hashed first; a segment, beside
def test_an_object_packed_beside_its_hash_reads_back_and_carries_that_hash(name, sealed, size):
    """wal-push hashes a segment in a thread while it compresses it: the object is the one pack writes, its
    header holds the segment's SHA-256 (encrypted objects hold none in the clear), and the hash returned is
    the segment's."""
    import hashlib
    data = (os.urandom(50) + b"segment" * size)[:size]
    keyring = FIXTURE_KEYRING if sealed else None
    blob, digest = pipeline.pack_hashed(data, name, None, keyring, name="000000010000000000000001")
    assert digest == hashlib.sha256(data).hexdigest()
    meta, _ = codec.parse_header(blob)
    assert meta.get("sha256") == (None if sealed else digest) and meta["name"] == "000000010000000000000001"
    assert pipeline.unpack(blob, "wal/x", keyring) == data


def test_a_failed_compression_raises_after_the_hash_thread_ended():
    with pytest.raises(ValueError):
        pipeline.pack_hashed(b"x" * (2 << 20), "zstd", 99)         # no such zstd level
