"""The recovery settings backup-fetch writes so that starting the server replays WAL to the target.

restore_command calls this same walship executable by absolute path (the
server's PATH is not the operator's) with the repository URL, and --config
when the settings came from a config file. It never carries secrets: S3
credentials come from the server's own environment (AWS_* variables in the
service's environment file, an instance profile, or a 0600 config file named
by --config), exactly as for archive_command.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass

from walship.errors import ConfigError


@dataclass(frozen=True)
class Target:
    time: str | None = None
    lsn: str | None = None
    xid: str | None = None
    name: str | None = None
    immediate: bool = False
    action: str | None = None
    timeline: str | None = None
    exclusive: bool = False

    def settings(self) -> list[tuple[str, str]]:
        chosen = [(k, v) for k, v in (("recovery_target_time", self.time), ("recovery_target_lsn", self.lsn),
                                      ("recovery_target_xid", self.xid), ("recovery_target_name", self.name))
                  if v is not None]
        if self.immediate:
            chosen.append(("recovery_target", "immediate"))
        if len(chosen) > 1:
            raise ConfigError("more than one recovery target given", "choose one of --target-time, --target-lsn, "
                                                                     "--target-xid, --target-name, --target-immediate")
        if not chosen and (self.action or self.exclusive):
            raise ConfigError("--target-action and --target-exclusive need a target",
                              "add --target-time, --target-lsn, --target-xid, --target-name or --target-immediate")
        if self.exclusive:
            chosen.append(("recovery_target_inclusive", "off"))
        if self.action:
            chosen.append(("recovery_target_action", self.action))
        if self.timeline:
            chosen.append(("recovery_target_timeline", self.timeline))
        return chosen


def walship_executable() -> str:
    """The absolute path of the walship being run, so that the same install replays WAL."""
    argv0 = shutil.which(sys.argv[0]) or sys.argv[0]
    if os.path.basename(argv0) == "walship":
        return os.path.abspath(argv0)
    return shutil.which("walship") or os.path.join(os.path.dirname(sys.executable), "walship")


def restore_command(executable: str, repo: str, config_path: str | None) -> str:
    words = [executable, "wal-fetch", "%f", "%p", "--repo", repo]
    if config_path:
        words += ["--config", os.path.abspath(config_path)]
    # %f and %p stay unquoted: PostgreSQL substitutes them before the shell runs the command
    return " ".join(w if w in ("%f", "%p") else shlex.quote(w) for w in words)


def write(dest: str, backup_name: str, command: str, target: Target) -> None:
    """Append the settings to postgresql.auto.conf (later lines win) and create recovery.signal."""
    lines = [f"# written by walship backup-fetch {backup_name} at "
             f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}",
             f"restore_command = {_quote(command)}"]
    lines += [f"{key} = {_quote(value)}" for key, value in target.settings()]
    path = os.path.join(dest, "postgresql.auto.conf")
    with open(path, "a") as fh:
        fh.write("\n".join(lines) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    fd = os.open(os.path.join(dest, "recovery.signal"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fsync(fd)
    os.close(fd)
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"
