"""The storage interface: a flat key/value object store, one module per backend.

Keys are '/'-separated relative paths below the repository prefix. Every
backend guarantees that `put` returns only once the object is durably stored,
and that an object is either absent or complete (never half-written).
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod

from walship.errors import ConfigError, WalshipError

# collections.abc (and collections behind it) would cost restore_command's cold miss 1.4 ms: annotations only
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    Chunks = Iterable[bytes]


class ObjectNotFound(WalshipError):
    pass


class ObjectExists(WalshipError):
    """put(..., if_absent=True) found an object already stored under the key."""


class ObjectInfo(tuple):
    """An object in a listing: key, size in bytes, mtime in seconds since the epoch.
    A plain tuple, not a dataclass or namedtuple: importing dataclasses costs ~10 ms per archive_command, and
    collections 1.4 ms per restore_command miss."""

    __slots__ = ()

    def __new__(cls, key: str, size: int, mtime: float) -> ObjectInfo:
        return tuple.__new__(cls, (key, size, mtime))

    @property
    def key(self) -> str:
        return self[0]

    @property
    def size(self) -> int:
        return self[1]

    @property
    def mtime(self) -> float:
        return self[2]

    def __repr__(self) -> str:
        return f"ObjectInfo(key={self[0]!r}, size={self[1]}, mtime={self[2]})"


class Store(ABC):
    url: str                 # for messages: where the repository is
    # Whether list(prefix, start_after) reads only the keys after start_after (S3's ordered listing,
    # 1,000 keys a request) rather than every key under the prefix (a directory scan, then a sort):
    # callers that look for a few keys after a known one probe with head() when it is False.
    ordered_listing: bool = False

    @abstractmethod
    def put(self, key: str, data: bytes | Chunks, *, if_absent: bool = False, durable: bool = True) -> None:
        """Store data under key, durably; with if_absent, raise ObjectExists instead of replacing.
        durable=False: the object need not outlive a crash of this host, as a lock need not (its holder
        does not either); a store that pays for durability apart (fsync) may then skip it."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The whole object (for small objects); ObjectNotFound when absent."""

    @abstractmethod
    def stream(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The object as chunks; ObjectNotFound when absent (raised before the first chunk)."""

    @abstractmethod
    def get_range(self, key: str, start: int, length: int) -> bytes:
        """Bytes [start, start+length) of the object (shorter at its end)."""

    @abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """Size and time of the object, or None when absent."""

    @abstractmethod
    def list(self, prefix: str, start_after: str | None = None) -> Iterator[ObjectInfo]:
        """Every object whose key starts with prefix, in no promised order.

        With start_after, only the keys greater than it, in key order (S3's own listing order), so
        a caller that looks for what follows one key reads no listing of what precedes it."""

    def list_folder(self, folder: str) -> tuple[builtins.list[ObjectInfo], builtins.list[str]]:
        """One folder, not below it: (its objects, its subfolders as keys ending in '/'), in no promised order.

        folder is "" (the root) or ends in '/'. A delimiter listing on S3, one directory on a filesystem;
        this default, from list(), is correct for any store but reads every key below the folder."""
        objects, folders = [], set()
        for info in self.list(folder):
            sub, slash, _ = info.key[len(folder):].partition("/")
            if slash:
                folders.add(f"{folder}{sub}/")
            else:
                objects.append(info)
        return objects, sorted(folders)

    def names_in(self, folder: str) -> Iterator[str]:
        """The names of the objects directly in folder (ends in '/'), in no promised order, without their
        sizes or times: on a filesystem one directory read, no stat per object, and then also the names
        of subfolders and of writes in progress (a caller head()s the names it means to use)."""
        for info in self.list(folder):
            rest = info.key[len(folder):]
            if "/" not in rest:
                yield rest

    @abstractmethod
    def delete(self, keys: Iterable[str]) -> None:
        """Remove the objects; absent ones are not an error."""

    def prove_create_only(self) -> str:
        """Show that put(..., if_absent=True) never replaces an object; returns how (for the record).
        Raises StoreError for a store that cannot promise it."""
        return "link"

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def close(self) -> None:
        pass


def open_store(url: str, settings) -> Store:
    """The store for a repository URL: s3://bucket/prefix or file:///absolute/path."""
    if url.startswith("s3://"):
        from walship.storage.s3 import S3Store
        return S3Store.from_url(url, settings)
    if url.startswith("file://"):
        from walship.storage.local import LocalStore
        return LocalStore.from_url(url)
    if url.startswith("/"):
        from walship.storage.local import LocalStore
        return LocalStore(url)
    raise ConfigError(f"unsupported repository URL {url!r}",
                      "use s3://bucket/prefix or file:///absolute/path")

