"""Reading the lzop streams WAL-E stored everything in (`lzop -c`).

`lzop -c` (what WAL-E ran) writes an Adler-32 of every uncompressed block, so
each block is verified on the way out. Streams are decompressed by
Debian's `lzop` binary, which verifies every checksum and refuses a stream that
stops before its end marker (no LZO wheel installs without a C toolchain, and
the binary decompresses at several hundred MB/s). walship never writes lzop:
the container's parser and an lzop writer for the tests are tests/support/lzop.py.
"""

from __future__ import annotations

from walship.errors import IntegrityError
from walship.walecompat import filters

MAGIC = b"\x89LZO\x00\r\n\x1a\n"


def decompress_filter(what: str) -> filters.Filter:
    """The pipeline stage that turns an lzop stream into its content (`lzop -d`)."""
    program = filters.require_program("lzop", "lzop")

    def failure(status: int, stderr: str) -> IntegrityError:
        return IntegrityError(f"{what} is corrupt or truncated: lzop: {_lzop_reason(stderr)}")
    # -d -c: decompress stdin to stdout; -q: no progress output
    return filters.Filter([program, "-d", "-c", "-q", "-"], failure)


def _lzop_reason(stderr: str) -> str:
    line = filters.first_line(stderr)
    lowered = line.lower()
    if "checksum" in lowered:
        return "checksum mismatch"
    if "not a lzop file" in lowered:
        return "not an lzop stream"
    # a stream cut short: lzop 1.04 says "unexpected end of file", or reports ENOTTY for stdin
    if "unexpected end" in lowered or "inappropriate ioctl" in lowered:
        return "the stream ends before its end marker"
    return line.replace("lzop: ", "").replace("<stdin>: ", "")
