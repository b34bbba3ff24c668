"""Where one walship base backup lives in the repository.

    backups/<name>/in_progress.json        written first, rewritten every minute while the backup runs
    backups/<name>/part_00000.tar          tar stream in the object envelope (pipeline.write)
    backups/<name>/part_00000.manifest     JSON lines, one per tar member, in tar order (same envelope)
    ...
    backups/<name>/complete.json           written last: the completion marker (catalog.Marker)

A backup is listed only once complete.json exists, and complete.json is
written only after every part, every manifest and the WAL segment that ends
the backup are in the repository. Deletion removes complete.json first.
"""

from __future__ import annotations

from walship.layout import BACKUP_PREFIX

MARKER = "complete.json"
IN_PROGRESS = "in_progress.json"


def prefix(name: str) -> str:
    return f"{BACKUP_PREFIX}{name}/"


def marker_key(name: str) -> str:
    return prefix(name) + MARKER


def in_progress_key(name: str) -> str:
    return prefix(name) + IN_PROGRESS


def part_key(name: str, number: int) -> str:
    return f"{prefix(name)}part_{number:05d}.tar"


def part_manifest_key(name: str, number: int) -> str:
    return f"{prefix(name)}part_{number:05d}.manifest"


def backup_name_of_key(key: str) -> str | None:
    """The backup a key under backups/ belongs to (None for a key outside any backup)."""
    rest = key[len(BACKUP_PREFIX):] if key.startswith(BACKUP_PREFIX) else ""
    name, slash, _ = rest.partition("/")
    return name if slash and name else None
