"""What a repository holds: the complete base backups, for listing, restore, retention and checks.

This is the interface the rest of walship uses (backup-list, backup-fetch LATEST,
delete, `walship check backup`, `walship status`, WAL-E compatibility). A backup
that did not finish is never returned.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class BackupInfo:
    name: str
    start_time: float            # epoch seconds (UTC)
    stop_time: float
    start_lsn: str               # 'X/Y' text form
    stop_lsn: str
    timeline: int
    start_wal: str               # first WAL segment the backup needs
    stop_wal: str                # last WAL segment the backup needs (it is archived before completion)
    pg_version: int              # server_version_num, e.g. 150018
    system_identifier: str
    size: int                    # bytes of the data directory read (uncompressed)
    stored_size: int             # bytes stored in the repository
    duration_s: float
    source: str = "walship"      # "walship" or "wal-e"

    def as_dict(self) -> dict:
        return asdict(self)


def list_backups(store) -> list[BackupInfo]:
    """Every complete backup in the repository, oldest first (walship's and WAL-E's)."""
    raise NotImplementedError("implemented by the base-backup work (issue 3)")
