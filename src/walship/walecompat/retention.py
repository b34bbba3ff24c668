"""Expiring WAL-E's objects (`walship delete --include-wal-e`), with walship's retention deciding which backups go.

walship's retention (walship.backup.retention) splits the backups of both
kinds, oldest first, into deleted and kept. This module turns that decision
into WAL-E keys: every object of a deleted WAL-E backup (its stop sentinel
first, so that a delete cut short leaves a backup that is no longer listed
rather than a listed one with missing partitions), and every wal_005/ file
before the start of the oldest kept backup of either kind. Timeline history
files are always kept, as WAL-E kept them.

Without --include-wal-e nothing here runs and no WAL-E object is deleted, so
`delete` can never remove what a kept WAL-E backup needs. The start of a WAL-E
backup taken `--while-offline` is the lowest archived segment its name allows
(see the backups module): never later than the real one, so the boundary only
ever keeps more WAL, never less.
"""

from __future__ import annotations

from walship.backup.catalog import BackupInfo
from walship.pg import walnames
from walship.walecompat.backups import PREFIX, SENTINEL_SUFFIX
from walship.walecompat.wal import WALE_WAL_PREFIX


def obsolete_keys(store, delete: list[BackupInfo], keep: list[BackupInfo]) -> list[str]:
    """The WAL-E keys to delete, in the order to delete them."""
    keys: list[str] = []
    for backup in delete:
        if backup.source != "wal-e":
            continue
        keys.append(f"{PREFIX}{backup.name}{SENTINEL_SUFFIX}")
        keys.extend(sorted(o.key for o in store.list(f"{PREFIX}{backup.name}/")))
    if keep:
        boundary = min(b.start_wal[8:24] for b in keep)
        keys.extend(sorted(o.key for o in store.list(WALE_WAL_PREFIX) if _before(o.key, boundary)))
    return keys


def _before(key: str, boundary: str) -> bool:
    name = key[len(WALE_WAL_PREFIX):]
    if not name.endswith(".lzo"):
        return False                          # not WAL-E's: leave it alone
    name = name[:-len(".lzo")]
    if walnames.HISTORY_RE.match(name) or not walnames.is_archivable(name):
        return False
    return name[8:24] < boundary


def execute(store, keys: list[str]) -> None:
    """Delete in order: the sentinels come first in obsolete_keys' answer."""
    sentinels = [k for k in keys if k.endswith(SENTINEL_SUFFIX)]
    store.delete(sentinels)
    store.delete([k for k in keys if not k.endswith(SENTINEL_SUFFIX)])
