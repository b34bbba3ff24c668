"""`walship quarantine`: set a wrong archived WAL object aside without losing it."""

from __future__ import annotations

import getpass
import hashlib
import json
import socket
import time

from walship import logs
from walship.errors import IntegrityError, NotInArchive
from walship.repo.layout import quarantine_key, wal_key
from walship.pg.walnames import check_name
from walship.storage import ObjectExists, ObjectNotFound, Store


def run(command: str, args, settings, store_factory) -> int:
    store = store_factory()
    try:
        quarantine(store, args.wal_name, args.reason)
    finally:
        store.close()
    return 0


def quarantine(store: Store, name: str, reason: str) -> str:
    """Copy wal/NAME under quarantine/ (create-only, durable), then remove the original. Returns the new key."""
    check_name(name)
    key = wal_key(name)
    try:
        blob = store.get(key)
    except ObjectNotFound:
        raise NotInArchive(f"{name} is not in {store.url}", "nothing to set aside") from None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = quarantine_key(stamp, key)
    note = {"key": key, "moved_to": target, "reason": reason, "sha256_of_object": hashlib.sha256(blob).hexdigest(),
            "bytes": len(blob), "by": f"{getpass.getuser()}@{socket.gethostname()}",
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        store.put(target, blob, if_absent=True)
        store.put(target + ".json", json.dumps(note, indent=1).encode(), if_absent=True)
    except ObjectExists:
        raise IntegrityError(f"{target} already exists in {store.url}", "wait a second and run it again") from None
    if store.get(target) != blob:                  # read back before the original goes
        raise IntegrityError(f"the copy {target} does not read back as {key}; {key} was left in place",
                             "check the repository, then try again")
    store.delete([key])
    logs.info("wal_quarantined", f"{key} set aside as {target} ({reason}); wal-push can now archive {name} again",
              segment=name, moved_to=target)
    print(f"{key} moved to {target} (note: {target}.json); to put it back, copy it to {key}")
    return target
