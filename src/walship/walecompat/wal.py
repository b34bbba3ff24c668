"""WAL that WAL-E archived before the switch to walship: wal_005/<name>.lzo.

WAL-E stored segments, timeline history files and backup history files
(`<segment>.<offset>.backup`) under the same scheme: the PostgreSQL file name
plus `.lzo`. wal-fetch asks here only when walship's own wal/<name> is absent,
so after the switch walship's copy of a file always wins.
"""

from __future__ import annotations

from walship.repo.layout import wale_wal_key
from walship.storage import ObjectNotFound, Store
from walship.walecompat import objects


def fetch(store: Store, name: str, gpg_key_id: str | None = None) -> bytes | None:
    """The content of a WAL file WAL-E archived, verified; None when WAL-E stored none."""
    try:
        return objects.read(store, wale_wal_key(name), gpg_key_id)
    except ObjectNotFound:
        return None
