"""Acknowledgements of segments that an earlier wal-push already stored.

One wal-push call uploads its own segment and up to `push_batch - 1` other
segments that PostgreSQL has marked .ready. For each of those it leaves a
marker here, recording the file's identity (size, mtime, inode) at upload time.
When PostgreSQL then calls wal-push for such a segment, the call finds the
marker, checks that the file is still the one that was uploaded, and returns
at once: the fast path, which imports and opens nothing else.

A marker also names the repository (URL and where the encryption key comes from) it was
stored in, and is honoured only for that one: switching WALSHIP_REPO must not
acknowledge a segment that the new repository does not hold.

The markers only ever stand for objects already durably in the repository;
losing them costs a re-upload (which is idempotent), never a segment. They live
in pg_wal (not in base backups, gone with a restore, like WAL-G's walg_data).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False          # typing's own would be an import on the fast path
if TYPE_CHECKING:
    from walship.config import Settings

SPOOL_NAME = "walship_spool"
PREFETCH_NAME = "walship_prefetch"
_SUFFIX = ".pushed"


def spool_dir(wal_path: str, configured: str | None = None) -> str:
    if configured:
        return configured
    return os.path.join(os.path.dirname(os.path.abspath(wal_path)), SPOOL_NAME)


def destination(settings: Settings) -> str:
    """Where, and with which key source, segments are being stored (no secret: a key given inline is named
    only as such). Plain text rather than a digest: hashlib costs ~4 ms on the fast path."""
    if settings.encryption_key_file:
        key = f"key-file:{settings.encryption_key_file}"
    elif settings.encryption_key_command:
        key = f"key-command:{settings.encryption_key_command}"
    else:
        key = "key:inline" if settings.encryption_key else "key:none"
    return f"{settings.repo or ''} {key}".replace("\n", " ")


def already_pushed(wal_path: str, settings: Settings) -> bool:
    """The archive_command fast path: an earlier wal-push stored exactly this file in this repository
    (its marker, consumed). Opens nothing but the marker and the file's metadata."""
    return acknowledge(wal_path, spool_dir(wal_path, settings.spool_dir), destination(settings))


def log_already_pushed(wal_path: str) -> None:
    from walship import logs  # only once acknowledged: logging is most of the fast path's imports
    name = os.path.basename(wal_path)
    logs.info("wal_pushed", f"{name} archived (by an earlier call)", segment=name)


def _identity(st: os.stat_result, destination: str) -> str:
    return f"{st.st_size} {st.st_mtime_ns} {st.st_ino} {destination}"


def acknowledge(wal_path: str, directory: str, destination: str) -> bool:
    """True when an earlier call stored exactly this file in this repository; the marker is consumed."""
    marker = os.path.join(directory, os.path.basename(wal_path) + _SUFFIX)
    try:
        with open(marker) as fh:
            recorded = fh.read().strip()
        current = _identity(os.stat(wal_path), destination)
    except OSError:
        return False
    if recorded != current:
        return False
    try:
        os.unlink(marker)
    except OSError:
        pass
    return True


def record(wal_path: str, st: os.stat_result, directory: str, destination: str) -> None:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    marker = os.path.join(directory, os.path.basename(wal_path) + _SUFFIX)
    tmp = marker + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(_identity(st, destination))
    os.replace(tmp, marker)


def is_recorded(name: str, directory: str) -> bool:
    return os.path.exists(os.path.join(directory, name + _SUFFIX))


def clean(directory: str, wal_dir: str) -> None:
    """Drop markers whose WAL file is gone (recycled after it was acknowledged)."""
    try:
        entries = os.listdir(directory)
    except OSError:
        return
    for entry in entries:
        if entry.endswith(_SUFFIX) and not os.path.exists(os.path.join(wal_dir, entry[:-len(_SUFFIX)])):
            try:
                os.unlink(os.path.join(directory, entry))
            except OSError:
                pass
