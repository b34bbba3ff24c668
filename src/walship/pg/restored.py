"""What backup-fetch leaves in a restored data directory to say what the server is.

`PGDATA/walship_restore.json`:

    {"mode": "copy" | "primary", "origin_repository": "s3://...", "origin_repository_id": "<uuid>" | null,
     "backup": "base_...", "restored_at": "2026-12-02T05:40:00Z"}

- "copy" (the default): a server restored to look at old data. Its WAL must never reach the repository it came
  from, or production's history forks (its promotion's timeline becomes what `LATEST` follows). backup-fetch
  turns archiving off for it; wal-push refuses its origin repository even if archiving is turned back on.
- "primary" (`backup-fetch --as-primary`): the new primary after the old one was lost; it archives into the
  same repository, and later restores follow its timeline.

The file is not part of base backups (backup-push leaves it out): each restore writes its own.
"""

from __future__ import annotations

import json
import os
import time

RESTORE_MARKER = "walship_restore.json"
COPY = "copy"
PRIMARY = "primary"


def read_restore_marker(pgdata: str = ".") -> dict[str, object] | None:
    """The marker of a restored data directory, or None (not restored by walship, or unreadable)."""
    try:
        with open(os.path.join(pgdata, RESTORE_MARKER), "rb") as fh:
            doc = json.loads(fh.read())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("mode") in (COPY, PRIMARY) else None


def write_restore_marker(pgdata: str, mode: str, origin_repository: str, origin_repository_id: str | None,
                         backup: str) -> None:
    """Write the marker durably (fsynced); the caller fsyncs the directory with the rest of the restore."""
    if mode not in (COPY, PRIMARY):
        raise ValueError(mode)
    doc = {"mode": mode, "origin_repository": origin_repository, "origin_repository_id": origin_repository_id,
           "backup": backup, "restored_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path = os.path.join(pgdata, RESTORE_MARKER)
    with open(path, "w") as fh:
        fh.write(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
