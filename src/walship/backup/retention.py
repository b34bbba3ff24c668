"""Retention: which backups to delete, and the WAL no kept backup needs.

This module deletes walship's own objects (backups/, wal/). WAL-E's backups
take part in the choice only with --include-wal-e, and their objects
(basebackups_005/, wal_005/) are then deleted by walship.walecompat.retention;
without it they are all kept, and so is the wal/ they may need (a WAL-E
backup taken before the switch to walship replays walship's WAL after its own).

WAL is deleted when its segment precedes the start segment of the oldest kept
backup, on every timeline: segment names compare by their log/segment digits
(characters 8-24), whatever the timeline and segment size. Timeline history
files are always kept (a few bytes each, and recovery needs the whole chain).
A backup's completion marker is deleted first, so a backup interrupted while
being deleted is never listed, and its remains are leftovers for the next
backup-push or delete (inflight).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from walship.backup import objects
from walship.backup.catalog import BackupInfo
from walship.errors import ConfigError
from walship.layout import WAL_PREFIX, wal_name_of_key
from walship.pg import walnames


@dataclass
class Plan:
    delete: list[BackupInfo]
    keep: list[BackupInfo]
    wal_keys: list[str] = field(default_factory=list)


def choose(backups: list[BackupInfo], retain: int | None = None, before: str | None = None) -> Plan:
    """Split the backups (oldest first) into deleted and kept; the newest backup is always kept."""
    if (retain is None) == (before is None):
        raise ConfigError("say what to delete", "use exactly one of --retain N or --before NAME|TIME")
    if retain is not None:
        if retain < 1:
            raise ConfigError("--retain must be at least 1", "walship always keeps the newest backup")
        cut = max(len(backups) - retain, 0)
    else:
        cut = _index_before(backups, before)
    cut = min(cut, max(len(backups) - 1, 0))
    return Plan(delete=backups[:cut], keep=backups[cut:])


def _index_before(backups: list[BackupInfo], before: str) -> int:
    for i, backup in enumerate(backups):
        if backup.name == before:
            return i
    moment = parse_time(before)
    return sum(1 for b in backups if b.stop_time < moment)


def parse_time(text: str) -> float:
    """An ISO 8601 time (UTC unless it says otherwise) as epoch seconds."""
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--before {text!r} is neither a backup name nor a time",
                          "use a name from `walship backup-list` or a time like 2026-11-23T08:00:00Z") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def obsolete_wal(wal_names: list[str], oldest_kept_start: str) -> list[str]:
    """Segments, partial segments and .backup files before the oldest kept backup's start segment."""
    boundary = oldest_kept_start[8:24]
    return [n for n in wal_names
            if not walnames.HISTORY_RE.match(n) and walnames.is_archivable(n) and n[8:24] < boundary]


def plan(store, backups: list[BackupInfo], retain: int | None, before: str | None,
         untouched: list[BackupInfo] = ()) -> Plan:
    """Choose among backups; untouched ones (WAL-E's, unless included) are kept and keep their WAL too."""
    chosen = choose(backups, retain, before)
    kept = chosen.keep + list(untouched)
    if kept:
        oldest = min(kept, key=lambda b: b.start_wal[8:24])
        names = [wal_name_of_key(o.key) for o in store.list(WAL_PREFIX)]
        chosen.wal_keys = sorted(WAL_PREFIX + n for n in obsolete_wal(names, oldest.start_wal))
    return chosen


def execute(store, chosen: Plan) -> None:
    for backup in (b for b in chosen.delete if b.source == "walship"):
        store.delete([objects.marker_key(backup.name)])
        store.delete([o.key for o in store.list(objects.prefix(backup.name))])
    store.delete(chosen.wal_keys)

