"""The lzop container, on streams made by the real lzop binary (what WAL-E ran), and its failures."""

import os
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import lzop
from tests.support.lzop import lzop_c
from walship.errors import IntegrityError


def sample() -> bytes:
    # one incompressible block (stored as is by lzop) and compressible ones, over several 256 KiB blocks
    return os.urandom(300_000) + b"WAL record " * 60_000 + bytes(100_000)


def decompress(blob: bytes, what: str = "wal_005/000000010000000000000001.lzo") -> bytes:
    chunks = [blob[i:i + 65536] for i in range(0, len(blob), 65536)]
    return b"".join(lzop.decompress(chunks, what))


def test_header_of_what_wale_wrote():
    header = lzop.parse_header(lzop_c(b"x" * 1000))
    assert header.method == "LZO1X-1"
    assert header.checks_data                      # lzop -c writes an Adler-32 of every block
    assert header.name == ""                       # read from stdin: no file name


def test_block_framing_adds_up_to_the_content():
    data = sample()
    blob = lzop_c(data)
    sizes = list(lzop.block_sizes(blob))
    assert sum(dst for dst, _ in sizes) == len(data)
    assert any(src == dst for dst, src in sizes)   # the random block is stored uncompressed
    assert any(src < dst for dst, src in sizes)


@pytest.mark.parametrize("flags", [(), ("-9",), ("--crc32",), ("-1", "--no-checksum")])
def test_decompression_gives_back_the_original(flags):
    data = sample()
    blob = lzop_c(data, *flags)
    assert decompress(blob) == data
    assert sum(d for d, _ in lzop.block_sizes(blob)) == len(data)


def test_empty_content():
    assert decompress(lzop_c(b"")) == b""


def test_a_flipped_bit_in_a_block_is_a_checksum_error_naming_the_object():
    blob = bytearray(lzop_c(sample()))
    blob[len(blob) // 2] ^= 0x04
    with pytest.raises(IntegrityError, match=r"wal_005/000000010000000000000001.lzo in s3://b/p is corrupt "
                                             r"or truncated: lzop: "):
        decompress(bytes(blob), "wal_005/000000010000000000000001.lzo in s3://b/p")


@pytest.mark.parametrize("cut", [4, 100, 70_000])
def test_a_truncated_stream_is_refused_naming_the_object(cut):
    blob = lzop_c(sample())
    with pytest.raises(IntegrityError, match="part_00000000.tar.lzo is corrupt or truncated"):
        decompress(blob[:-cut], "part_00000000.tar.lzo")
    with pytest.raises(IntegrityError, match="part_00000000.tar.lzo is truncated"):
        list(lzop.block_sizes(blob[:-cut], "part_00000000.tar.lzo"))


def test_not_an_lzop_stream():
    with pytest.raises(IntegrityError, match="obj is not an lzop stream"):
        lzop.parse_header(b"PK\x03\x04 not lzop at all", "obj")
    with pytest.raises(IntegrityError, match="obj is corrupt or truncated: lzop: not an lzop stream"):
        decompress(b"garbage that is not lzop" * 10, "obj")


def test_a_damaged_header_fails_its_checksum():
    blob = bytearray(lzop_c(b"hello" * 100))
    blob[20] ^= 0x01                                # a flags bit: inside the checksummed header
    with pytest.raises(IntegrityError, match="lzop header checksum does not match"):
        lzop.parse_header(bytes(blob), "obj")


def test_bytes_after_the_end_marker_are_refused():
    blob = lzop_c(b"hello" * 100) + b"trailing"
    with pytest.raises(IntegrityError, match="8 bytes after the end of its lzop stream"):
        list(lzop.block_sizes(blob, "obj"))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600_000).map(lambda b: b * 3))
def test_property_parser_and_binary_agree_on_any_content(data):
    blob = lzop_c(data)
    assert sum(d for d, _ in lzop.block_sizes(blob)) == len(data)
    assert decompress(blob) == data


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.integers(min_value=0))
def test_property_damaged_headers_only_ever_raise_integrity_errors(junk, position):
    blob = bytearray(lzop_c(b"segment" * 50))
    at = 9 + position % (len(blob) - 9)
    blob[at:at + len(junk)] = junk
    try:
        list(lzop.block_sizes(bytes(blob), "obj"))
    except IntegrityError:
        pass


def test_header_checksum_is_adler32_of_the_header_body():
    blob = lzop_c(b"abc")
    header = lzop.parse_header(blob)
    body = blob[len(lzop.MAGIC):header.size - 4]
    assert int.from_bytes(blob[header.size - 4:header.size], "big") == zlib.adler32(body)
