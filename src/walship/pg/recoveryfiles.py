"""The files in a data directory that tell PostgreSQL (and walship) how the server recovers.

- recovery.signal / standby.signal: archive recovery / a standby (PostgreSQL 12+);
- postgresql.auto.conf (and postgresql.conf): recovery settings read, commented out, appended;
- `PGDATA/walship_restore.json`, the restore marker backup-fetch leaves to say what the server is:

    {"mode": "copy" | "primary", "origin_repository": "s3://...", "origin_repository_id": "<uuid>" | null,
     "backup": "base_...", "restored_at": "2026-12-02T05:40:00Z"}

  - "copy" (the default): a server restored to look at old data. Its WAL must never reach the repository it
    came from, or production's history forks (its promotion's timeline becomes what `LATEST` follows).
    backup-fetch turns archiving off for it; wal-push refuses its origin repository even if archiving is
    turned back on.
  - "primary" (`backup-fetch --as-primary`): the new primary after the old one was lost; it archives into the
    same repository, and later restores follow its timeline.

  The marker is not part of base backups (backup-push leaves it out): each restore writes its own.

wal-fetch (restore_command) imports this module to read the signal files: it imports nothing heavy
(json only where the marker is read or written).
"""

from __future__ import annotations

import os
import time

RECOVERY_SIGNAL = "recovery.signal"
STANDBY_SIGNAL = "standby.signal"
SIGNAL_FILES = (RECOVERY_SIGNAL, STANDBY_SIGNAL)
AUTO_CONF = "postgresql.auto.conf"
CONFIG_FILES = (AUTO_CONF, "postgresql.conf")

RESTORE_MARKER = "walship_restore.json"
COPY = "copy"
PRIMARY = "primary"

# settings of an earlier recovery or of a standby that must not steer this one (GUC names are case-insensitive)
RECOVERY_SETTINGS = ("restore_command", "recovery_end_command", "archive_cleanup_command", "primary_conninfo",
                     "primary_slot_name", "standby_mode", "recovery_min_apply_delay", "promote_trigger_file",
                     "trigger_file")
DISABLED_PREFIX = "# disabled by walship backup-fetch (a recovery setting of the backed-up server): "


def in_archive_recovery(pgdata: str = ".") -> bool:
    """recovery.signal without standby.signal: archive recovery, which ends at the first file the archive
    does not have (a standby keeps asking instead)."""
    return (os.path.exists(os.path.join(pgdata, RECOVERY_SIGNAL))
            and not os.path.exists(os.path.join(pgdata, STANDBY_SIGNAL)))


def postmaster_pid(pgdata: str = ".") -> int | None:
    """The pid postmaster.pid names, or None when the server is not running there (or the file is torn)."""
    try:
        with open(os.path.join(pgdata, "postmaster.pid")) as fh:
            first = fh.readline().strip()
    except OSError:
        return None
    return int(first) if first.isdecimal() else None


def remove_signal_files(pgdata: str) -> None:
    """A recovery.signal or standby.signal the backup carried must not survive: only a finished restore
    has one, written by signal_recovery last."""
    for name in SIGNAL_FILES:
        try:
            os.unlink(os.path.join(pgdata, name))
        except FileNotFoundError:
            pass


def signal_recovery(pgdata: str, owner: tuple[int, int] | None) -> None:
    """recovery.signal, written last: a directory without it is not a restore that finished."""
    fd = os.open(os.path.join(pgdata, RECOVERY_SIGNAL), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if owner is not None:
            os.fchown(fd, *owner)
        os.fsync(fd)
    finally:
        os.close(fd)
    fd = os.open(pgdata, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def comment_out_recovery_settings(pgdata: str) -> list[str]:
    """Comment out the recovery settings the backed-up server had, in the configuration files inside the
    data directory (with DISABLED_PREFIX saying walship did it); the settings disabled, in order."""
    import re  # compiled here, once per restore: wal-fetch reads the signal files on every call
    setting_line = re.compile(r"^\s*(recovery_target\w*|" + "|".join(RECOVERY_SETTINGS) + r")\s*=", re.IGNORECASE)
    disabled: list[str] = []
    for conf in CONFIG_FILES:
        path = os.path.join(pgdata, conf)
        text = _read(path)
        if text is None:
            continue
        lines = text.splitlines(keepends=True)
        changed = False
        for i, line in enumerate(lines):
            m = setting_line.match(line)
            if m:
                lines[i] = DISABLED_PREFIX + line
                disabled.append(m.group(1).lower())
                changed = True
        if changed:
            _write_durably(path, "".join(lines))
    return disabled


def append_settings(pgdata: str, comment: str, settings: list[tuple[str, str]], lines: list[str]) -> None:
    """Append `# comment`, the settings (quoted for PostgreSQL) and further ready-made lines to
    postgresql.auto.conf, durably (later lines win over earlier ones)."""
    new = [f"# {comment}"] + [f"{key} = {quote(value)}" for key, value in settings] + lines
    path = os.path.join(pgdata, AUTO_CONF)
    text = _read(path) or ""
    if text and not text.endswith("\n"):
        text += "\n"
    _write_durably(path, text + "\n".join(new) + "\n")


def quote(value: str) -> str:
    """A string value as postgresql.conf writes it."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def read_restore_marker(pgdata: str = ".") -> dict[str, object] | None:
    """The marker of a restored data directory, or None (not restored by walship, or unreadable)."""
    try:
        with open(os.path.join(pgdata, RESTORE_MARKER), "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    import json  # only where there is a marker: every wal-push asks, and json costs it 3 ms to import
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) and doc.get("mode") in (COPY, PRIMARY) else None


def write_restore_marker(pgdata: str, mode: str, origin_repository: str, origin_repository_id: str | None,
                         backup: str) -> None:
    """Write the marker durably (fsynced); the caller fsyncs the directory with the rest of the restore."""
    import json
    if mode not in (COPY, PRIMARY):
        raise ValueError(mode)
    doc = {"mode": mode, "origin_repository": origin_repository, "origin_repository_id": origin_repository_id,
           "backup": backup, "restored_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path = os.path.join(pgdata, RESTORE_MARKER)
    with open(path, "w") as fh:
        fh.write(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def _write_durably(path: str, text: str) -> None:
    tmp = path + ".walship-tmp"
    with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.chmod(tmp, os.stat(path).st_mode & 0o7777)
    except FileNotFoundError:
        os.chmod(tmp, 0o600)
    os.replace(tmp, path)
