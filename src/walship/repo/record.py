"""The repository's own record: what it is, and which cluster owns it.

`walship-repository.json` at the root of every repository, written create-only
by the first wal-push or backup-push of its cluster; after that only its format
is ever raised (require_format), when a newer layout is first written:

    {"format": 2, "repository_id": "<uuid>", "system_identifier": "7311...",
     "pg_major": 15, "wal_segment_size": 16777216, "created": "2026-12-02T05:40:00Z",
     "create_only": "if-none-match" | "link"}

- Writers (wal-push, backup-push, delete) `claim` it: they create it on first use,
  and refuse, before writing or deleting anything, a repository another cluster owns.
- Readers (wal-fetch, verify, status) `require` it: a location with neither the record
  nor any object is not a repository (a wrong URL, a file system that is not mounted),
  which must never read as "the archive is empty".
- A repository written before the record existed holds objects but no record: readers
  accept it, and the first writer adopts it by writing the record.

Plain classes, and json only where the record is not the flat object walship writes: this module is on the
archive_command and restore_command paths.
"""

from __future__ import annotations

import os
import time

from walship import flatjson
from walship.errors import IntegrityError, StoreError, WalshipError

RECORD_KEY = "walship-repository.json"
# 1: completion markers inside each backup's folder (backups/<name>/complete.json)
# 2: completion markers beside the folders (backups/<name>.json), found by a listing that stops at backups/;
#    format 1 backups in the same repository are still read. See CHANGELOG.md, "Repository format".
FORMAT = 2


class NotARepository(StoreError):
    """Nothing at the repository location: refuse rather than read it as an empty archive."""
    aborts_recovery = True


class ClusterIdentity(tuple):
    """(system identifier, major version or None, WAL segment size or None) of the cluster at hand."""

    __slots__ = ()

    def __new__(cls, system_identifier: str, pg_major: int | None = None,
                wal_segment_size: int | None = None) -> ClusterIdentity:
        return tuple.__new__(cls, (str(system_identifier), pg_major, wal_segment_size))

    @property
    def system_identifier(self) -> str:
        return self[0]

    @property
    def pg_major(self) -> int | None:
        return self[1]

    @property
    def wal_segment_size(self) -> int | None:
        return self[2]


class RepositoryRecord:
    def __init__(self, repository_id: str, system_identifier: str, pg_major: int | None,
                 wal_segment_size: int | None, created: str, create_only: str, format: int = FORMAT,
                 adopted: bool = False):
        self.format = format
        self.repository_id = repository_id
        self.system_identifier = system_identifier
        self.pg_major = pg_major
        self.wal_segment_size = wal_segment_size
        self.created = created
        self.create_only = create_only
        self.adopted = adopted

    def as_dict(self) -> dict[str, object]:
        return {"format": self.format, "repository_id": self.repository_id,
                "system_identifier": self.system_identifier, "pg_major": self.pg_major,
                "wal_segment_size": self.wal_segment_size, "created": self.created,
                "create_only": self.create_only, "adopted": self.adopted}

    def to_json(self) -> bytes:
        import json  # written once per repository: the pretty form, for operators who read it
        return json.dumps(self.as_dict(), indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> RepositoryRecord:
        try:
            doc = flatjson.loads(data)
            if doc is None:
                import json
                doc = json.loads(data)
            fmt = int(doc["format"])
        except (ValueError, KeyError, TypeError):
            raise IntegrityError(f"{RECORD_KEY} in {where} is corrupt (not a walship repository record)",
                                 "restore it from a copy, or investigate before writing anything there") from None
        if fmt > FORMAT:
            raise WalshipError(f"the repository {where} has format {fmt}, newer than this walship knows ({FORMAT})",
                               "upgrade walship")
        try:
            size = doc.get("wal_segment_size")
            major = doc.get("pg_major")
            return cls(str(doc["repository_id"]), str(doc["system_identifier"]),
                       int(major) if major is not None else None, int(size) if size is not None else None,
                       str(doc.get("created", "")), str(doc.get("create_only", "")), fmt,
                       bool(doc.get("adopted", False)))
        except (ValueError, KeyError, TypeError):
            raise IntegrityError(f"{RECORD_KEY} in {where} is corrupt (missing fields)",
                                 "restore it from a copy, or investigate before writing anything there") from None


def read(store) -> RepositoryRecord | None:
    from walship.storage import ObjectNotFound
    try:
        data = store.get(RECORD_KEY)
    except ObjectNotFound:
        return None
    return RepositoryRecord.from_json(data, store.url)


def _holds_objects(store) -> bool:
    for _ in store.list(""):
        return True
    return False


def require(store) -> RepositoryRecord | None:
    """The record, or None for a repository written before records existed; NotARepository for nothing."""
    record = read(store)
    if record is not None:
        return record
    _refuse_unmounted(store)
    if not _holds_objects(store):
        raise NotARepository(f"{store.url} is not a walship repository: it holds no {RECORD_KEY} and no objects",
                             "check the repository URL, and that its file system is mounted")
    return None


def check_owner(record: RepositoryRecord, identity: ClusterIdentity, store, command: str) -> None:
    if record.system_identifier != identity.system_identifier:
        raise IntegrityError(
            f"the repository {store.url} belongs to the cluster with system identifier "
            f"{record.system_identifier}, not to this one (system identifier {identity.system_identifier}); "
            f"{command} wrote nothing",
            "give each cluster its own repository (a restored copy keeps its origin's identifier: "
            "see docs/restoring.md)")
    if (record.wal_segment_size and identity.wal_segment_size
            and record.wal_segment_size != identity.wal_segment_size):
        raise IntegrityError(
            f"the repository {store.url} holds WAL of {record.wal_segment_size}-byte segments, "
            f"and this cluster's are {identity.wal_segment_size} bytes; {command} wrote nothing",
            "a cluster whose wal_segment_size changed needs a new repository")
    if record.pg_major and identity.pg_major and identity.pg_major < record.pg_major:
        raise IntegrityError(
            f"the repository {store.url} holds PostgreSQL {record.pg_major} WAL and this cluster "
            f"runs {identity.pg_major}; {command} wrote nothing", "check which cluster archives here")


def claim(store, identity: ClusterIdentity, command: str) -> RepositoryRecord:
    """The record of a repository this cluster may write into: created on first use, else checked."""
    record = read(store)
    if record is None:
        record = _create(store, identity)
    check_owner(record, identity, store, command)
    return record


def require_format(store, wanted: int) -> None:
    """Raise the record's format to wanted before the first object of that layout is written, so that a
    walship too old to read it refuses the repository ("upgrade walship") instead of misreading it.
    Only the format changes; a record already at wanted or beyond is left as it is."""
    record = read(store)
    if record is None or record.format >= wanted:
        return
    record.format = wanted
    store.put(RECORD_KEY, record.to_json())


def _create(store, identity: ClusterIdentity) -> RepositoryRecord:
    from walship.storage import ObjectExists
    _refuse_unmounted(store)
    adopted = _holds_objects(store)
    create_only = store.prove_create_only()
    import uuid
    record = RepositoryRecord(uuid.uuid4().hex, identity.system_identifier, identity.pg_major,
                              identity.wal_segment_size, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              create_only, adopted=adopted)
    try:
        store.put(RECORD_KEY, record.to_json(), if_absent=True)
    except ObjectExists:
        stored = read(store)                  # another first writer won the race: its record counts
        if stored is None:
            raise StoreError(f"{RECORD_KEY} in {store.url} exists and vanished again", "try again") from None
        return stored
    return record


def _refuse_unmounted(store) -> None:
    root = getattr(store, "root", None)
    if root is None:
        return
    mount_point = unmounted_mount_point(root)
    if mount_point is not None:
        raise NotARepository(f"the repository {store.url} is under {mount_point}, a mount point in /etc/fstab "
                             "that is not mounted; nothing was read or written",
                             f"mount {mount_point} (and check why it went away)")


def unmounted_mount_point(path: str, fstab: str = "/etc/fstab", mounts: str = "/proc/self/mounts") -> str | None:
    """The /etc/fstab mount point at or above path that is not mounted now, or None."""
    def points(file: str) -> set[str]:
        found = set()
        try:
            with open(file) as fh:
                for line in fh:
                    fields = line.split()
                    if len(fields) >= 2 and not fields[0].startswith("#") and fields[1].startswith("/"):
                        found.add(os.path.normpath(fields[1].replace("\\040", " ")))
        except OSError:
            pass
        return found

    wanted = points(fstab) - {"/"}
    if not wanted:
        return None
    mounted = points(mounts)
    path = os.path.normpath(os.path.abspath(path))
    for point in sorted(wanted, key=len, reverse=True):
        if (path == point or path.startswith(point + "/")) and point not in mounted:
            return point
    return None
