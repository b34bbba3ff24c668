"""Where everything lives in a repository: the one owner of every key below the repository URL.

walship's own objects (format 2, see CHANGELOG.md "Repository format"):

    walship-repository.json                 the repository's record (record.py)
    wal/<name>                              an archived WAL file, in the object envelope
    backups/<backup>.json                   a backup's completion marker, beside its folder, written last
    backups/<backup>/in_progress.json       written first, refreshed while the backup runs
    backups/<backup>/part_00000.tar         tar stream (codec envelope), and its manifest:
    backups/<backup>/part_00000.manifest
    backups/<backup>/part_00000.blockmap    block hashes of the part's relation files (incremental backups)
    backups/<backup>/blockmap.index         which part's block map covers which files
    locks/backups.lock                      the repository lock (lock.py)
    quarantine/<UTC time>/<key>             what `walship quarantine` set aside
    index/wal-runs.json                     a summary of wal/ as runs of segments (walrunindex.py),
                                            rebuilt from a listing whenever absent or wrong

A repository of format 1 kept the marker inside the folder (backups/<backup>/complete.json); it is still
read. WAL-E's objects (its layout 005, read for migration and deleted by retention, never written):

    wal_005/<name>.lzo
    basebackups_005/base_<segment>_<offset>_backup_stop_sentinel.json   written last
    basebackups_005/base_<segment>_<offset>/extended_version.txt
    basebackups_005/base_<segment>_<offset>/tar_partitions/part_<N>.tar.lzo

Completion markers sit directly in their folder (backups/, basebackups_005/), so a listing that stops at
a folder (Store.list_folder) finds every complete backup without listing a single part.

>>> wal_key("000000010000000000000003")
'wal/000000010000000000000003'
>>> wal_name_of_key("wal/00000002.history")
'00000002.history'
>>> marker_key("base_20261202T060000Z_000000010000000000000002")
'backups/base_20261202T060000Z_000000010000000000000002.json'
>>> legacy_marker_key("b1"), in_progress_key("b1"), part_key("b1", 3), part_manifest_key("b1", 3)
('backups/b1/complete.json', 'backups/b1/in_progress.json', 'backups/b1/part_00003.tar', 'backups/b1/part_00003.manifest')
>>> backup_name_of_key("backups/b1/part_00000.tar"), backup_name_of_key("backups/b1.json")
('b1', 'b1')
>>> backup_name_of_key("backups/notes.txt") is None
True
>>> wale_wal_key("000000010000000000000003"), wale_wal_name_of_key("wal_005/00000001000000000000000A.lzo")
('wal_005/000000010000000000000003.lzo', '00000001000000000000000A')
>>> wale_sentinel_key("base_000000010000000000000002_00000040")
'basebackups_005/base_000000010000000000000002_00000040_backup_stop_sentinel.json'
>>> wale_partitions_prefix("base_000000010000000000000002_00000040")
'basebackups_005/base_000000010000000000000002_00000040/tar_partitions/'
>>> quarantine_key("20261202T060000Z", "wal/000000010000000000000003")
'quarantine/20261202T060000Z/wal/000000010000000000000003'

Plain functions and constants only: this module is on the archive_command path.
"""

from __future__ import annotations

WAL_PREFIX = "wal/"
BACKUP_PREFIX = "backups/"
MARKER_SUFFIX = ".json"
LEGACY_MARKER = "complete.json"          # format 1: the marker inside the backup's folder
IN_PROGRESS = "in_progress.json"
LOCK_KEY = "locks/backups.lock"
QUARANTINE_PREFIX = "quarantine/"

WALE_WAL_PREFIX = "wal_005/"
WAL_INDEX_KEY = "index/wal-runs.json"
WALE_SUFFIX = ".lzo"
WALE_BACKUP_PREFIX = "basebackups_005/"
WALE_SENTINEL_SUFFIX = "_backup_stop_sentinel.json"
WALE_VERSION_FILE = "extended_version.txt"


# --- walship's WAL ---------------------------------------------------------------

def wal_key(name: str) -> str:
    return WAL_PREFIX + name


# --- wal-receive's pieces of a segment not complete yet (receive/partial.py says how they are used) ---

RECEIVE_PREFIX = "receive/"


def received_piece_key(segment_name: str, start: int, end: int) -> str:
    """receive/<segment>/<start>-<end>: bytes [start, end) of the segment, offsets as 8 hex digits.

    >>> received_piece_key("000000010000000000000003", 0, 8192)
    'receive/000000010000000000000003/00000000-00002000'
    """
    return f"{RECEIVE_PREFIX}{segment_name}/{start:08X}-{end:08X}"


def received_segment_prefix(segment_name: str) -> str:
    return f"{RECEIVE_PREFIX}{segment_name}/"


def after_received_segment_key(segment_name: str) -> str:
    """A key greater than every piece of segment_name and smaller than the next segment's (listing start_after)."""
    return f"{RECEIVE_PREFIX}{segment_name}/~"


def received_piece_of_key(key: str) -> tuple[str, int, int] | None:
    """(segment, start, end) of a piece's key, or None for any other key.

    >>> received_piece_of_key("receive/000000010000000000000003/00000000-00002000")
    ('000000010000000000000003', 0, 8192)
    >>> received_piece_of_key("wal/000000010000000000000003") is None
    True
    """
    if not key.startswith(RECEIVE_PREFIX):
        return None
    segment, slash, span = key[len(RECEIVE_PREFIX):].partition("/")
    start, dash, end = span.partition("-")
    if (not slash or not dash or len(segment) != 24 or len(start) != 8 or len(end) != 8
            or not all(c in _UPPER_HEX for c in segment + start + end)):
        return None
    return segment, int(start, 16), int(end, 16)


_UPPER_HEX = frozenset("0123456789ABCDEF")


def wal_name_of_key(key: str) -> str:
    return key[len(WAL_PREFIX):]


# --- walship's base backups ------------------------------------------------------

def backup_prefix(name: str) -> str:
    """The folder holding a backup's parts, manifests and in-progress marker."""
    return f"{BACKUP_PREFIX}{name}/"


def marker_key(name: str) -> str:
    """The completion marker (format 2): beside the folder, listable without listing any part."""
    return f"{BACKUP_PREFIX}{name}{MARKER_SUFFIX}"


def legacy_marker_key(name: str) -> str:
    """The completion marker a format 1 repository kept inside the folder."""
    return backup_prefix(name) + LEGACY_MARKER


def in_progress_key(name: str) -> str:
    return backup_prefix(name) + IN_PROGRESS


def part_key(name: str, number: int) -> str:
    return f"{backup_prefix(name)}part_{number:05d}.tar"


def part_number_of_key(name: str, key: str) -> int | None:
    """The number of the part whose tar object key is, in backup name (None: not one).

    >>> part_number_of_key("base_1", "backups/base_1/part_00012.tar")
    12
    >>> part_number_of_key("base_1", "backups/base_1/part_00012.manifest") is None
    True
    """
    stem = key[len(backup_prefix(name)):] if key.startswith(backup_prefix(name)) else ""
    digits = stem[len("part_"):-len(".tar")] if stem.startswith("part_") and stem.endswith(".tar") else ""
    return int(digits) if digits.isdecimal() and digits.isascii() else None


def part_manifest_key(name: str, number: int) -> str:
    return f"{backup_prefix(name)}part_{number:05d}.manifest"


def part_blockmap_key(name: str, number: int) -> str:
    """The block map of a part's relation files (backup/blockmap.py)."""
    return f"{backup_prefix(name)}part_{number:05d}.blockmap"


def blockmap_index_key(name: str) -> str:
    """Which part's block map covers which relation files (backup/blockmap.py)."""
    return f"{backup_prefix(name)}blockmap.index"


def backup_name_of_key(key: str) -> str | None:
    """The backup a key under backups/ belongs to: its folder's objects and its marker (None: neither)."""
    rest = key[len(BACKUP_PREFIX):] if key.startswith(BACKUP_PREFIX) else ""
    name, slash, _ = rest.partition("/")
    if slash:
        return name or None
    if rest.endswith(MARKER_SUFFIX) and len(rest) > len(MARKER_SUFFIX):
        return rest[:-len(MARKER_SUFFIX)]
    return None


# --- WAL-E's layout 005 ------------------------------------------------------------

def wale_wal_key(name: str) -> str:
    return f"{WALE_WAL_PREFIX}{name}{WALE_SUFFIX}"


def wale_wal_name_of_key(key: str) -> str | None:
    """The PostgreSQL file name of a wal_005/ key, None for a key WAL-E did not write."""
    rest = key[len(WALE_WAL_PREFIX):] if key.startswith(WALE_WAL_PREFIX) else ""
    return rest[:-len(WALE_SUFFIX)] if rest.endswith(WALE_SUFFIX) and len(rest) > len(WALE_SUFFIX) else None


def wale_backup_prefix(name: str) -> str:
    return f"{WALE_BACKUP_PREFIX}{name}/"


def wale_sentinel_key(name: str) -> str:
    return f"{WALE_BACKUP_PREFIX}{name}{WALE_SENTINEL_SUFFIX}"


def wale_version_key(name: str) -> str:
    return wale_backup_prefix(name) + WALE_VERSION_FILE


def wale_partitions_prefix(name: str) -> str:
    return f"{wale_backup_prefix(name)}tar_partitions/"


def is_completion_marker(key: str) -> bool:
    """A key whose presence makes a backup listed (walship's marker of either format, WAL-E's sentinel).

    >>> [is_completion_marker(k) for k in ("backups/b1.json", "backups/b1/complete.json",
    ...  "backups/b1/part_00000.tar", wale_sentinel_key("base_000000010000000000000002_00000040"))]
    [True, True, False, True]
    """
    name = backup_name_of_key(key)
    if name is not None:
        return key in (marker_key(name), legacy_marker_key(name))
    return (key.startswith(WALE_BACKUP_PREFIX) and key.endswith(WALE_SENTINEL_SUFFIX)
            and "/" not in key[len(WALE_BACKUP_PREFIX):])


# --- the rest ------------------------------------------------------------------------

def quarantine_key(stamp: str, key: str) -> str:
    """Where `walship quarantine` sets an object aside: quarantine/<UTC time>/<its key>."""
    return f"{QUARANTINE_PREFIX}{stamp}/{key}"
