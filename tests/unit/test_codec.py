import os

import pytest
from hypothesis import given, settings, strategies as st

from walship import codec
from walship.errors import IntegrityError

CODECS = ["zstd", "lz4", "gzip", "none"]


@pytest.mark.parametrize("name", CODECS)
def test_pack_unpack_round_trip(name):
    data = os.urandom(1000) + b"a" * 100000
    blob = codec.pack(data, name)
    assert codec.unpack(blob) == data


@pytest.mark.parametrize("name", CODECS)
def test_flipped_byte_is_detected(name):
    data = b"walship" * 20000
    blob = bytearray(codec.pack(data, name))
    blob[len(blob) // 2] ^= 0x40
    with pytest.raises(IntegrityError):
        codec.unpack(bytes(blob), "wal/x")


@pytest.mark.parametrize("name", CODECS)
def test_truncated_object_is_detected(name):
    blob = codec.pack(os.urandom(50000), name)
    with pytest.raises(IntegrityError):
        codec.unpack(blob[: len(blob) - 10], "wal/x")


def test_foreign_object_is_refused_with_its_name():
    with pytest.raises(IntegrityError, match="wal/000000010000000000000001 is not a walship object"):
        codec.unpack(b"\x89LZO\x00garbage", "wal/000000010000000000000001")


@pytest.mark.parametrize("name", CODECS)
def test_stream_round_trip_in_small_chunks(name):
    data = os.urandom(300000) + b"z" * 300000
    chunks = [data[i:i + 7777] for i in range(0, len(data), 7777)]
    encoded = b"".join(codec.encode_stream(chunks, name, part=3))
    pieces = [encoded[i:i + 1000] for i in range(0, len(encoded), 1000)]
    meta, payload = codec.split_header(pieces, "part")
    assert meta == {"codec": name, "part": 3}
    assert b"".join(codec.decode_stream(payload, name)) == data


@pytest.mark.parametrize("name", ["zstd", "lz4", "gzip"])
def test_truncated_stream_is_detected(name):
    encoded = b"".join(codec.encode_stream([os.urandom(100000)], name))
    meta, payload = codec.split_header([encoded[:-20]])
    with pytest.raises(IntegrityError, match="truncated|corrupt"):
        b"".join(codec.decode_stream(payload, name, "part"))


@pytest.mark.parametrize("name", ["zstd", "lz4", "gzip"])
def test_decompression_hands_out_bounded_pieces_of_zero_filled_data(name):
    # 256 MiB of zeros compress to a few KiB: a decompressor that returns all the output of
    # one input chunk at once would need the whole 256 MiB in memory.
    size = 256 << 20
    encoded = b"".join(codec.encode_stream((bytes(16 << 20) for _ in range(16)), name))
    assert len(encoded) < size // 100
    _, payload = codec.split_header([encoded])
    total = 0
    for piece in codec.decode_stream(payload, name):
        assert len(piece) <= codec.OUTPUT_CHUNK
        assert not any(piece[::4096])
        total += len(piece)
    assert total == size


@pytest.mark.parametrize("name", ["zstd", "lz4", "gzip"])
def test_stream_missing_only_its_last_bytes_is_truncated(name):
    # zstd and lz4 end with a content checksum; gzip with CRC and length: losing them loses no data
    # bytes, yet the object is incomplete and must not be taken as whole
    encoded = b"".join(codec.encode_stream([b"walship" * 50000], name))
    _, payload = codec.split_header([encoded[:-3]])
    with pytest.raises(IntegrityError, match="truncated"):
        b"".join(codec.decode_stream(payload, name, "part"))


@pytest.mark.parametrize("name", ["zstd", "lz4", "gzip"])
def test_bytes_after_the_end_of_the_stream_are_refused(name):
    encoded = b"".join(codec.encode_stream([b"walship" * 50000], name))
    for pieces in ([encoded + b"trailing"], [encoded, b"trailing"]):
        _, payload = codec.split_header(pieces)
        with pytest.raises(IntegrityError, match="after the end"):
            b"".join(codec.decode_stream(payload, name, "part"))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_header_parser_rejects_garbage_cleanly(data):
    try:
        codec.parse_header(data)
    except IntegrityError:
        pass
