"""wal-push: archive one WAL file, and the other .ready ones alongside it.

PostgreSQL's archiver calls archive_command once per file, sequentially, and
starts a new process each time. To keep up with a busy primary, one call
uploads its own file plus up to `push_batch - 1` other files that PostgreSQL
has already marked .ready, `push_concurrency` at a time, and records the extra
ones in the spool (see spool.py) so that the calls for them return at once.

Safety rules:
- exit 0 only when the requested file's object is durably in the repository;
- only this cluster's WAL goes in: a segment must be the cluster's segment size and start with a long page
  header of a known WAL format, this repository's system identifier and the page address its name says (a
  recycled file not yet written by PostgreSQL, or another cluster's file, is refused, never stored); the
  repository's record names its cluster (repo/record.py), claimed on first use;
- a server that backup-fetch restored as a copy never archives into the repository it came from;
- an object is written create-only: pushing a file that is already archived
  with the same content succeeds, with different content fails loudly and
  never overwrites (two clusters archiving into one repository);
- a killed call leaves either no object or a complete one, and no marker for
  anything not stored.
"""

from __future__ import annotations

import os
import time

from walship import codec, logs, pipeline
from walship.archive import spool
from walship.errors import IntegrityError, WalshipError
from walship.pg import walheader
from walship.pg.walnames import Segment, check_name, is_archivable, is_segment
from walship.repo import record as repo_record
from walship.repo.layout import wal_key
from walship.storage import ObjectExists, Store


class PushResult:
    """One file archived. A plain class: dataclasses (with inspect and ast behind it) costs every
    archive_command call 5 ms."""

    __slots__ = ("name", "bytes", "stored_bytes", "duration_s", "already_archived")

    def __init__(self, name: str, bytes: int, stored_bytes: int, duration_s: float, already_archived: bool = False):
        self.name, self.bytes, self.stored_bytes = name, bytes, stored_bytes
        self.duration_s, self.already_archived = duration_s, already_archived

    def __repr__(self) -> str:
        return (f"PushResult(name={self.name!r}, bytes={self.bytes}, stored_bytes={self.stored_bytes}, "
                f"duration_s={self.duration_s}, already_archived={self.already_archived})")


def push_file(store: Store, path: str, compression: str, level: int | None, keyring=None,
              owner: repo_record.RepositoryRecord | None = None,
              allow_untested: bool = False) -> tuple[PushResult, os.stat_result]:
    name = os.path.basename(path)
    started = time.monotonic()
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            data = fh.read()
    except OSError as exc:
        raise WalshipError(f"cannot read {path}: {exc.strerror}",
                           "check that the file exists and is readable by the user running walship") from None
    if len(data) != st.st_size:
        raise WalshipError(f"{name} changed while it was read ({len(data)} of {st.st_size} bytes)",
                           "PostgreSQL will call wal-push again")
    if owner is not None and is_segment(name):
        check_segment_file(data, name, owner, allow_untested)
    blob, digest = pipeline.pack_hashed(data, compression, level, keyring, name=name)
    key = wal_key(name)
    already = False
    try:
        store.put(key, blob, if_absent=True)
    except ObjectExists:
        if not _same_content(store, key, name, data, digest, keyring):
            raise IntegrityError(
                f"{name} is already archived in {store.url} with different content; refusing to overwrite it",
                "another cluster may be archiving into this repository (split brain); "
                "give each cluster its own repository and investigate before deleting anything") from None
        already = True
    result = PushResult(name, len(data), len(blob), time.monotonic() - started, already)
    return result, st


def check_segment_file(data: bytes, name: str, owner: repo_record.RepositoryRecord,
                       allow_untested: bool = False) -> None:
    """Refuse what is not segment `name` of the repository's cluster (IntegrityError, nothing stored)."""
    size = owner.wal_segment_size or len(data)
    segment = Segment.parse(name, size)
    walheader.check_segment(data, name, size=size, start_lsn=segment.start_lsn(size), timeline=segment.timeline,
                            system_identifier=owner.system_identifier, allow_unknown_format=allow_untested)


def cluster_identity(wal_path: str) -> repo_record.ClusterIdentity | None:
    """This cluster's identity: from the segment's own header, else from pg_control (archive_command runs in
    PGDATA). None when neither can be read (a history file pushed by hand outside PGDATA)."""
    name = os.path.basename(wal_path)
    if is_segment(name):
        try:
            with open(wal_path, "rb") as fh:
                head = fh.read(walheader.LONG_HEADER_SIZE)
        except OSError as exc:
            raise WalshipError(f"cannot read {wal_path}: {exc.strerror}",
                               "check that the file exists and is readable by the user running walship") from None
        header = walheader.parse_segment_header(head, f"WAL file {name}")
        return repo_record.ClusterIdentity(header.system_identifier, header.pg_major, header.segment_size)
    control = walheader.read_control_identity(".")
    if control is None:
        return None
    return repo_record.ClusterIdentity(control[0], walheader.read_pg_major("."), None)


def owning_record(store: Store, wal_path: str) -> repo_record.RepositoryRecord | None:
    """The repository's record, claimed for this cluster (created on first use); refuses another cluster's."""
    identity = cluster_identity(wal_path)
    if identity is None:
        return repo_record.require(store)
    return repo_record.claim(store, identity, "wal-push")


def refuse_copy_into_origin(store: Store, owner: repo_record.RepositoryRecord | None) -> None:
    """A server backup-fetch restored as a copy must not archive into the repository it came from: its
    promotion's timeline would become the history that later restores follow."""
    from walship.pg.recoveryfiles import COPY, read_restore_marker
    marker = read_restore_marker(".")
    if marker is None or marker.get("mode") != COPY:
        return
    origin_id = marker.get("origin_repository_id")
    same = (owner is not None and origin_id == owner.repository_id) if origin_id else \
        marker.get("origin_repository") == store.url
    if same:
        raise WalshipError(
            f"this server was restored as a copy of {store.url} (backup {marker.get('backup')}); its WAL is not "
            "archived there, so that production's history stays the one restores follow",
            "give the copy its own repository (WALSHIP_REPO or --repo); if it has become the new primary, delete "
            "walship_restore.json in its data directory (docs/restoring.md)")


def _same_content(store: Store, key: str, name: str, data: bytes, digest: str, keyring) -> bool:
    """Is the archived object the same file? From its header alone when it carries the digest."""
    existing, _ = codec.parse_header(store.get_range(key, 0, codec.HEADER_PROBE), f"archived {name}")
    if "sha256" in existing:
        return existing["sha256"] == digest and existing.get("size") == len(data)
    # encrypted objects keep no digest in the clear: open the object and compare
    return pipeline.unpack(store.get(key), f"archived {name}", keyring) == data


def ready_files(wal_dir: str, exclude: str, limit: int, spool_directory: str) -> list[str]:
    """Other files PostgreSQL has marked .ready, in the order it would archive them."""
    if limit <= 0:
        return []
    try:
        entries = os.listdir(os.path.join(wal_dir, "archive_status"))
    except OSError:
        return []
    names = []
    for entry in entries:
        if not entry.endswith(".ready"):
            continue
        name = entry[:-6]
        if name == exclude or not is_archivable(name) or spool.is_recorded(name, spool_directory):
            continue
        names.append(name)
    # Like the archiver: timeline history files first, then by name (oldest first).
    names.sort(key=lambda n: (not n.endswith(".history"), n))
    return [os.path.join(wal_dir, n) for n in names[:limit]]


def _describe(r: PushResult) -> dict:
    return {"segment": r.name, "bytes": r.bytes, "stored_bytes": r.stored_bytes,
            "duration_s": round(r.duration_s, 3)}


def wal_push(wal_path: str, settings, store: Store) -> list[PushResult]:
    """Archive wal_path (and a batch of other .ready files). Raises unless wal_path is stored.
    Whether an earlier call stored it already (its spool marker) the command asks first
    (archive/commands.py), before this module is even imported."""
    name = check_name(os.path.basename(wal_path))
    wal_dir = os.path.dirname(os.path.abspath(wal_path))
    spool_directory = spool.spool_dir(wal_path, settings.spool_dir)
    destination = spool.destination(settings)
    if not os.path.exists(wal_path):
        raise WalshipError(f"{wal_path} does not exist", "wal-push takes the path PostgreSQL passes as %p")

    owner = owning_record(store, wal_path)
    refuse_copy_into_origin(store, owner)
    from walship.crypto import keyring_for_writing
    keyring = keyring_for_writing(settings)
    extra = ready_files(wal_dir, name, settings.push_batch - 1, spool_directory)
    results: list[PushResult] = []
    level = settings.compression_level
    if level is None:
        level = codec.WAL_LEVELS[settings.compression]

    def push(path: str) -> tuple[PushResult, os.stat_result]:
        return push_file(store, path, settings.compression, level, keyring, owner, settings.allow_untested_pg)

    if not extra:
        # the one segment asked for, in this thread: concurrent.futures would cost the call 6 ms for nothing
        result, _ = push(wal_path)
    else:
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(max_workers=min(settings.push_concurrency, 1 + len(extra))) as pool:
            own = pool.submit(push, wal_path)
            others = [(p, pool.submit(push, p)) for p in extra]
            for path, fut in others:
                try:
                    ahead, st = fut.result()
                except WalshipError as exc:
                    # Not acknowledged: PostgreSQL will call for it and the error will surface then.
                    logs.warning("wal_push_failed", f"{os.path.basename(path)} not archived ahead: {exc.one_line()}",
                                 segment=os.path.basename(path), error=exc.one_line())
                    continue
                spool.record(path, st, spool_directory, destination)
                results.append(ahead)
                logs.info("wal_pushed", f"{ahead.name} archived ahead"
                          + (" (already archived, identical)" if ahead.already_archived else ""), **_describe(ahead))
            result, _ = own.result()   # raises: the requested file was not stored
    results.insert(0, result)
    logs.info("wal_pushed", f"{result.name} archived"
              + (" (already archived, identical)" if result.already_archived else ""), **_describe(result))
    spool.clean(spool_directory, wal_dir)
    _clean_prefetch(wal_dir)
    return results


def _clean_prefetch(wal_dir: str) -> None:
    """A server archiving is out of recovery: files wal-fetch prefetched are no longer needed."""
    directory = os.path.join(wal_dir, spool.PREFETCH_NAME)
    if not os.path.isdir(directory):
        return
    for entry in os.listdir(directory):
        try:
            os.unlink(os.path.join(directory, entry))
        except OSError:
            pass
    try:
        os.rmdir(directory)
    except OSError:
        pass
