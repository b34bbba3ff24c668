"""backup-fetch: restore a base backup into an empty directory, ready for point-in-time recovery.

Parts are downloaded, decompressed and extracted by `backup_concurrency`
workers, each checking its part against the part's manifest member by member
(extract.Destination). Only once every part is in, every file fsynced and
every directory fsynced are the recovery settings written: a directory
without recovery.signal is not a restore that finished.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

from walship import codec, logs
from walship.backup import catalog, objects, progress, recovery
from walship.backup.extract import Destination, disk_error
from walship.backup.manifest import parse_lines
from walship.crypto import keyring_from_settings
from walship.errors import ConfigError

STREAM_CHUNK = 256 * 1024


def backup_fetch(dest: str, name: str, settings, store, target: recovery.Target,
                 tablespace_map: dict[str, str] | None = None, restore_spec: str | None = None,
                 config_path: str | None = None, progress_mode: str = "auto") -> catalog.BackupInfo:
    dest = os.path.abspath(dest)
    target.settings()                                   # refuse a bad target before downloading anything
    check_destination(dest)
    backup = catalog.find(store, name)
    started = time.time()
    if backup.source == "wal-e":
        from walship.walecompat import backups as wale
        wale.restore(store, backup.name, dest, settings, restore_spec)
    else:
        _restore(store, backup.name, dest, settings, tablespace_map or {}, progress_mode)
    command = recovery.restore_command(recovery.walship_executable(), store.url, config_path)
    recovery.write(dest, backup.name, command, target)
    logs.info("backup_fetched", f"backup {backup.name} restored into {dest}; start the server to recover",
              backup=backup.name, bytes=backup.size, duration_s=round(time.time() - started, 3))
    return backup


def check_destination(dest: str) -> None:
    if os.path.exists(os.path.join(dest, "postmaster.pid")):
        raise ConfigError(f"{dest} holds postmaster.pid: a server may be running there",
                          "stop it, or restore into a new or empty directory")
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise ConfigError(f"restore destination {dest} is not a directory", "restore into a new or empty directory")
    if os.path.isdir(dest) and os.listdir(dest):
        raise ConfigError(f"restore destination {dest} is not empty", "restore into a new or empty directory")


def _restore(store, name: str, dest: str, settings, remap: dict[str, str], progress_mode: str) -> None:
    marker = catalog.read_marker(store, name)
    keyring = keyring_from_settings(settings)
    try:
        os.makedirs(dest, mode=0o700, exist_ok=True)
        os.chmod(dest, 0o700)
        links = _make_tablespace_links(dest, marker.tablespaces, remap)
        destination = Destination(dest, links)
        bar = progress.make(progress_mode, f"restore {name}", marker.info.size)

        def extract(number: int) -> None:
            destination.extract_part(part_stream(store, name, number, keyring),
                                     part_manifest(store, name, number, keyring),
                                     f"{objects.part_key(name, number)} in {store.url}", bar)

        with ThreadPoolExecutor(max_workers=settings.backup_concurrency, thread_name_prefix="restore-part") as pool:
            futures = [pool.submit(extract, n) for n in range(marker.parts)]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                pool.shutdown(cancel_futures=True)     # a failed part fails the restore: start no other
                raise
        _rewrite_tablespace_map(dest, links)
        destination.finish(f"backup {name} in {store.url}", links.values())
        bar.close()
    except OSError as exc:
        raise disk_error(exc, dest) from None


def part_stream(store, name: str, number: int, keyring=None) -> Iterator[bytes]:
    """A part's tar stream as chunks of at most 1 MiB: read, decrypted, decompressed and checked as it goes."""
    key = objects.part_key(name, number)
    _, plain = codec.open_stream(store.stream(key, chunk_size=STREAM_CHUNK), key, keyring)
    return plain


def part_manifest(store, name: str, number: int, keyring=None):
    """A part's manifest entries, in tar order."""
    key = objects.part_manifest_key(name, number)
    _, plain = codec.open_stream([store.get(key)], key, keyring)
    return parse_lines(plain, key)


def _make_tablespace_links(dest: str, tablespaces: dict[str, str], remap: dict[str, str]) -> dict[str, str]:
    """Create pg_tblspc/<oid> -> location (the original one unless remapped); each location must be empty."""
    unknown = sorted(set(remap) - set(tablespaces))
    if unknown:
        raise ConfigError(f"the backup has no tablespace with OID {unknown[0]}",
                          f"its tablespaces: {', '.join(sorted(tablespaces)) or 'none'}")
    links = {}
    for oid, original in sorted(tablespaces.items()):
        location = os.path.abspath(remap.get(oid, original))
        if "\n" in location:
            raise ConfigError(f"tablespace location {location!r} contains a newline")
        if os.path.isdir(location) and os.listdir(location):
            raise ConfigError(f"tablespace {oid} would be restored into {location}, which is not empty",
                              f"restore it elsewhere with --tablespace {oid}=/new/empty/dir")
        os.makedirs(location, mode=0o700, exist_ok=True)
        os.makedirs(os.path.join(dest, "pg_tblspc"), mode=0o700, exist_ok=True)
        os.symlink(location, os.path.join(dest, "pg_tblspc", oid))
        links[f"pg_tblspc/{oid}"] = location
    return links


def _rewrite_tablespace_map(dest: str, links: dict[str, str]) -> None:
    """PostgreSQL recreates the links from tablespace_map when recovery starts: make it name the new places."""
    if not links:
        return
    path = os.path.join(dest, "tablespace_map")
    text = "".join(f"{link.rsplit('/', 1)[1]} {location}\n" for link, location in sorted(links.items()))
    with open(path, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def parse_tablespace_options(values: list[str] | None) -> dict[str, str]:
    """--tablespace OID=DIR, repeated."""
    out = {}
    for value in values or ():
        oid, sep, location = value.partition("=")
        if not sep or not oid.isdigit() or not os.path.isabs(location):
            raise ConfigError(f"--tablespace {value!r} is not OID=/absolute/dir")
        out[oid] = location
    return out

