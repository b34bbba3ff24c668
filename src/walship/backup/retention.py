"""Retention: which backups to delete; each backup source names and deletes its own keys.

The choice is walship's, over the backups of both kinds, oldest first; WAL-E's
backups take part in it only with --include-wal-e. Without it they are all kept,
no WAL-E object is deleted, and the wal/ they may need is kept too (a WAL-E
backup taken before the switch to walship replays walship's WAL after its own).
--retain N keeps the newest N backups (full or incremental: N restorable points)
and, beyond them, every backup a kept incremental depends on (its chain, back to
its full); --before likewise never deletes a backup a kept one needs.
What goes, per source (BackupSource.obsolete_keys): the deleted backups' objects,
completion marker first, and the WAL before the start segment of the oldest kept
backup, on every timeline; timeline history files are always kept. A backup
interrupted while being deleted is never listed, and its remains are leftovers
for the next backup-push or delete (walship.repo.lock).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from walship.errors import ConfigError
from walship.repo.catalog import BackupInfo, Catalog


@dataclass
class Plan:
    delete: list[BackupInfo]
    keep: list[BackupInfo]
    keys: dict[str, list[str]] = field(default_factory=dict)     # source kind -> its keys to delete


def choose(backups: list[BackupInfo], retain: int | None = None, before: str | None = None) -> Plan:
    """Split the backups (oldest first) into deleted and kept; the newest backup is always kept."""
    if (retain is None) == (before is None):
        raise ConfigError("say what to delete", "use exactly one of --retain N or --before NAME|TIME")
    if retain is not None:
        if retain < 1:
            raise ConfigError("--retain must be at least 1", "walship always keeps the newest backup")
        cut = max(len(backups) - retain, 0)
    else:
        assert before is not None
        cut = _index_before(backups, before)
    cut = min(cut, max(len(backups) - 1, 0))
    # what a kept incremental backup depends on stays: --retain N counts restorable points, not chains
    needed = {name for b in backups[cut:] for name in b.chain}
    return Plan(delete=[b for b in backups[:cut] if b.name not in needed],
                keep=[b for b in backups if b.name in needed or b in backups[cut:]])


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
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def plan(catalog: Catalog, retain: int | None, before: str | None, include_wal_e: bool) -> Plan:
    """Choose among the backups (WAL-E's only when included: else kept, and so is their WAL)."""
    backups = catalog.list()
    chosen = choose([b for b in backups if include_wal_e or b.source == "walship"], retain, before)
    kept = [b for b in backups if b not in chosen.delete]
    for source in catalog.sources:
        if include_wal_e or source.kind == "walship":
            chosen.keys[source.kind] = source.obsolete_keys(chosen.delete, kept)
    return chosen


def execute(catalog: Catalog, chosen: Plan) -> None:
    for source in catalog.sources:
        source.execute(chosen.keys.get(source.kind, []))
