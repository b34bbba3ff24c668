"""WAL that WAL-E archived (wal_005/<name>.lzo) before a switch to walship."""

from __future__ import annotations

from walship.errors import WalshipError

WALE_WAL_PREFIX = "wal_005/"


def fetch(store, name: str) -> bytes | None:
    """The content of a WAL file WAL-E archived, or None when WAL-E stored none."""
    key = f"{WALE_WAL_PREFIX}{name}.lzo"
    if store.head(key) is None:
        return None
    raise WalshipError(f"{name} exists only as WAL-E object {key}, which this walship cannot read yet",
                       "restore it with WAL-E's wal-fetch")
