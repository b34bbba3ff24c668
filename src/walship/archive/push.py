"""wal-push: archive one WAL file, and the other .ready ones alongside it.

PostgreSQL's archiver calls archive_command once per file, sequentially, and
starts a new process each time. To keep up with a busy primary, one call
uploads its own file plus up to `push_batch - 1` other files that PostgreSQL
has already marked .ready, `push_concurrency` at a time, and records the extra
ones in the spool (see spool.py) so that the calls for them return at once.

Safety rules:
- exit 0 only when the requested file's object is durably in the repository;
- an object is written create-only: pushing a file that is already archived
  with the same content succeeds, with different content fails loudly and
  never overwrites (two clusters archiving into one repository);
- a killed call leaves either no object or a complete one, and no marker for
  anything not stored.
"""

from __future__ import annotations

import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from walship import codec, logs
from walship.archive import spool
from walship.errors import IntegrityError, WalshipError
from walship.layout import wal_key
from walship.pg.walnames import check_name, is_archivable
from walship.storage import ObjectExists, Store


@dataclass
class PushResult:
    name: str
    bytes: int
    stored_bytes: int
    duration_s: float
    already_archived: bool = False


def push_file(store: Store, path: str, compression: str, level: int | None,
              keyring=None) -> tuple[PushResult, os.stat_result]:
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
    digest = hashlib.sha256(data).hexdigest()
    blob = codec.pack(data, compression, level, keyring, sha256=digest, name=name)
    key = wal_key(name)
    already = False
    try:
        store.put(key, blob, if_absent=True)
    except ObjectExists:
        if not _same_content(store, key, name, data, digest, keyring):
            raise IntegrityError(
                f"{name} is already archived in {store.url} with different content; refusing to overwrite it",
                "another cluster may be archiving into this repository (split brain); "
                "give each cluster its own repository and investigate before deleting anything")
        already = True
    result = PushResult(name, len(data), len(blob), time.monotonic() - started, already)
    return result, st


def _same_content(store: Store, key: str, name: str, data: bytes, digest: str, keyring) -> bool:
    """Is the archived object the same file? From its header alone when it carries the digest."""
    existing, _ = codec.parse_header(store.get_range(key, 0, codec.HEADER_PROBE), f"archived {name}")
    if "sha256" in existing:
        return existing["sha256"] == digest and existing.get("size") == len(data)
    # encrypted objects keep no digest in the clear: open the object and compare
    return codec.unpack(store.get(key), f"archived {name}", keyring) == data


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
    """Archive wal_path (and a batch of other .ready files). Raises unless wal_path is stored."""
    name = check_name(os.path.basename(wal_path))
    wal_dir = os.path.dirname(os.path.abspath(wal_path))
    spool_directory = spool.spool_dir(wal_path, settings.spool_dir)
    if spool.acknowledge(wal_path, spool_directory):
        logs.info("wal_pushed", f"{name} was archived by an earlier call", segment=name)
        return []
    if not os.path.exists(wal_path):
        raise WalshipError(f"{wal_path} does not exist", "wal-push takes the path PostgreSQL passes as %p")

    from walship.crypto import keyring_for_writing
    keyring = keyring_for_writing(settings)
    extra = ready_files(wal_dir, name, settings.push_batch - 1, spool_directory)
    results: list[PushResult] = []
    with ThreadPoolExecutor(max_workers=min(settings.push_concurrency, 1 + len(extra))) as pool:
        level = settings.compression_level
        if level is None:
            level = codec.WAL_LEVELS[settings.compression]

        def submit(path: str):
            return pool.submit(push_file, store, path, settings.compression, level, keyring)
        own = submit(wal_path)
        others = [(p, submit(p)) for p in extra]
        for path, fut in others:
            try:
                result, st = fut.result()
            except WalshipError as exc:
                # Not acknowledged: PostgreSQL will call for it and the error will surface then.
                logs.warning("wal_push_failed", f"{os.path.basename(path)} not archived ahead: {exc.one_line()}",
                             segment=os.path.basename(path), error=exc.one_line())
                continue
            spool.record(path, st, spool_directory)
            results.append(result)
            logs.info("wal_pushed", f"{result.name} archived ahead"
                      + (" (already archived, identical)" if result.already_archived else ""), **_describe(result))
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
