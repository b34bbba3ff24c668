"""WAL file names and LSN arithmetic.

A segment name is TTTTTTTTXXXXXXXXYYYYYYYY: timeline, then the segment number
split into "log" (high 32 bits of the LSN) and the segment within that log.
With segment size S, there are 0x100000000 // S segments per log.
"""

from __future__ import annotations

from walship.errors import WalshipError

# checked by hand rather than with re: restore_command's cold calls would pay 2 ms to import it
_HEX = frozenset("0123456789ABCDEF")
DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024


class InvalidWalName(WalshipError):
    pass


def _hex(text: str, digits: int) -> bool:
    return len(text) == digits and _HEX.issuperset(text)


def is_segment(name: str) -> bool:
    """24 upper-case hex digits: 000000010000000A000000FF.

    >>> is_segment("000000010000000A000000FF"), is_segment("000000010000000a000000ff")
    (True, False)
    >>> is_segment("000000010000000A000000FF\\n")
    False
    """
    return _hex(name, 24)


def is_partial(name: str) -> bool:
    """A segment PostgreSQL did not finish on its timeline (or one wal-receive is streaming), with .partial."""
    return len(name) == 32 and name.endswith(".partial") and _hex(name[:24], 24)


def is_backup_label(name: str) -> bool:
    """A backup history file: 000000010000000000000002.00000028.backup."""
    return (len(name) == 40 and name[24] == "." and name.endswith(".backup")
            and _hex(name[:24], 24) and _hex(name[25:33], 8))


def is_history(name: str) -> bool:
    """A timeline history file: 00000002.history."""
    return len(name) == 16 and name.endswith(".history") and _hex(name[:8], 8)


def is_archivable(name: str) -> bool:
    """Names PostgreSQL hands to archive_command / restore_command.

    >>> [is_archivable(n) for n in ("00000002.history", "000000010000000000000002.00000028.backup",
    ...                              "000000010000000000000003.partial", "00000002.history.tmp", "RECOVERYXLOG")]
    [True, True, True, False, False]
    """
    return is_segment(name) or is_partial(name) or is_backup_label(name) or is_history(name)


def check_name(name: str) -> str:
    if not is_archivable(name):
        raise InvalidWalName(f"{name!r} is not a WAL file name",
                             "expected a segment (24 hex digits), .partial, .backup or .history file")
    return name


def segments_per_log(segment_size: int) -> int:
    return 0x100000000 // segment_size


class Segment(tuple):
    """(timeline, absolute segment number = LSN // segment_size); ordered and hashable as that tuple.
    A tuple rather than a dataclass: importing dataclasses costs ~10 ms on every archive_command."""

    __slots__ = ()

    def __new__(cls, timeline: int, number: int) -> Segment:
        return tuple.__new__(cls, (timeline, number))

    @property
    def timeline(self) -> int:
        return self[0]

    @property
    def number(self) -> int:
        return self[1]

    def __repr__(self) -> str:
        return f"Segment(timeline={self[0]}, number={self[1]})"

    @classmethod
    def parse(cls, name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> Segment:
        if not (is_segment(name) or is_partial(name)):
            raise InvalidWalName(f"{name!r} is not a WAL segment name")
        tli = int(name[0:8], 16)
        log = int(name[8:16], 16)
        seg = int(name[16:24], 16)
        per = segments_per_log(segment_size)
        if seg >= per:
            raise InvalidWalName(f"{name!r} is not a valid segment for {segment_size}-byte segments")
        return cls(tli, log * per + seg)

    def name(self, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
        per = segments_per_log(segment_size)
        return f"{self.timeline:08X}{self.number // per:08X}{self.number % per:08X}"

    def next(self, n: int = 1) -> Segment:
        return Segment(self.timeline, self.number + n)

    def start_lsn(self, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
        return self.number * segment_size


def parse_lsn(text: str) -> int:
    """'16/B374D848' -> integer."""
    try:
        hi, lo = text.strip().split("/")
        return (int(hi, 16) << 32) | int(lo, 16)
    except ValueError:
        raise WalshipError(f"{text!r} is not an LSN", "expected the form 16/B374D848") from None


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def segment_of(lsn: int, timeline: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> Segment:
    return Segment(timeline, lsn // segment_size)


def segment_name_of(lsn: int, timeline: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    return segment_of(lsn, timeline, segment_size).name(segment_size)


def segment_name_before(lsn: int, timeline: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    """The segment holding the last byte before lsn: where WAL that ends at lsn ends (a stop point
    on a segment boundary belongs to the segment before it)."""
    return segment_name_of(lsn - 1, timeline, segment_size)


def segments_between(first_name: str, last_name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> list[str]:
    """The names of the segments from first_name through last_name, on first_name's timeline."""
    first = Segment.parse(first_name, segment_size)
    last = Segment.parse(last_name, segment_size)
    return [Segment(first.timeline, n).name(segment_size) for n in range(first.number, last.number + 1)]


def timeline_of(name: str) -> int:
    """The timeline of any WAL file name: a segment, .partial, .backup or .history file."""
    return int(check_name(name)[:8], 16)


def position_key(name: str) -> str:
    """A segment's place in the WAL stream whatever its timeline (log and segment number, the 16 hex
    digits after the timeline): names compare as their positions compare, for one segment size."""
    return name[8:24]


def history_name(timeline: int) -> str:
    return f"{timeline:08X}.history"


def history_timeline(name: str) -> int | None:
    """The timeline of a .history file name (00000002.history -> 2), None for any other name."""
    return int(name[:8], 16) if is_history(name) else None


def parse_history(text: str) -> list[tuple[int, int, str]]:
    """Entries (parent timeline, switch-point LSN, reason) of a .history file."""
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].isdecimal():
            raise WalshipError(f"malformed timeline history line {line!r}")
        entries.append((int(parts[0]), parse_lsn(parts[1]), parts[2] if len(parts) > 2 else ""))
    return entries
