"""The recovery settings backup-fetch writes so that starting the server replays WAL to the target.

restore_command calls this same walship executable by absolute path (the
server's PATH is not the operator's) with the repository URL, and --config
when the settings came from a config file. It never carries secrets: S3
credentials come from the server's own environment (AWS_* variables in the
service's environment file, an instance profile, or a 0600 config file named
by --config), exactly as for archive_command.

Targets are checked here, in Python, before anything is downloaded: a value
PostgreSQL would refuse only when the restored server starts (after the
download) is refused at once with one line. A target time must carry its UTC
offset or zone: without one, the restored server's timezone setting would
decide what it means, which walship cannot know before the download. It is
written back normalised to UTC, so that PostgreSQL and walship's choice of
backup read the same instant.

Recovery settings the backed-up server had (an earlier PITR's target and
action, a standby's primary_conninfo, ...) are commented out in
postgresql.auto.conf, with a note saying walship did it; only the ones asked
for now are written.
"""

from __future__ import annotations

import datetime
import os
import re
import shlex
import shutil
import sys
import time
from dataclasses import dataclass

from walship.archive import queue
from walship.errors import ConfigError
from walship.pg import recoveryfiles, walnames

TIME_FORM = "2026-12-02 09:30:00+00 (or +01:00, Z, UTC, or a zone name such as Europe/Berlin)"
_TIMESTAMP = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})[ T](?P<time>\d{1,2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)\s*(?P<zone>\S.*)?$")
_OFFSET = re.compile(r"^(?P<sign>[+-])(?P<h>\d{1,2})(?::?(?P<m>\d{2})(?::?(?P<s>\d{2}))?)?$")
_LSN = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")
MAX_RESTORE_POINT_NAME = 63       # PostgreSQL's MAXFNAMELEN - 1
ACTIONS = ("promote", "pause", "shutdown")


def parse_target_time(text: str) -> datetime.datetime:
    """A timestamp with its UTC offset or zone, as an aware datetime; ConfigError otherwise."""
    m = _TIMESTAMP.match(text.strip())
    if not m:
        raise ConfigError(f"--target-time {text!r} is not a timestamp", f"use the form {TIME_FORM}")
    if m["zone"] is None:
        raise ConfigError(f"--target-time {text!r} has no UTC offset or zone: the restored server's timezone "
                          "would decide what it means", f"add one: {TIME_FORM}")
    try:
        hour, rest = m["time"].split(":", 1)
        local = datetime.datetime.fromisoformat(f"{m['date']} {int(hour):02d}:{rest}")
    except ValueError:
        raise ConfigError(f"--target-time {text!r} is not a valid date and time",
                          f"use the form {TIME_FORM}") from None
    return local.replace(tzinfo=_zone(m["zone"].strip(), text))


def _zone(zone: str, text: str) -> datetime.tzinfo:
    if zone.upper() in ("Z", "UTC", "GMT", "UT"):
        return datetime.UTC
    m = _OFFSET.match(zone)
    if m:
        seconds = int(m["h"]) * 3600 + int(m["m"] or 0) * 60 + int(m["s"] or 0)
        if seconds >= 24 * 3600:
            raise ConfigError(f"--target-time {text!r} has an impossible UTC offset {zone}", f"use {TIME_FORM}")
        return datetime.timezone(datetime.timedelta(seconds=-seconds if m["sign"] == "-" else seconds))
    import zoneinfo
    try:
        return zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"--target-time {text!r}: {zone!r} is not a UTC offset or a time zone name walship knows",
                          f"use the form {TIME_FORM}") from None


def pg_timestamp(moment: datetime.datetime) -> str:
    """The instant as PostgreSQL reads it whatever the server's timezone: UTC with an explicit +00."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")


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

    def check(self) -> None:
        """Refuse, with one line, any target PostgreSQL would refuse (or misread) at startup."""
        given = [k for k, v in (("--target-time", self.time), ("--target-lsn", self.lsn),
                                ("--target-xid", self.xid), ("--target-name", self.name)) if v is not None]
        if self.immediate:
            given.append("--target-immediate")
        if len(given) > 1:
            raise ConfigError(f"more than one recovery target given ({', '.join(given)})",
                              "choose one of --target-time, --target-lsn, --target-xid, --target-name, "
                              "--target-immediate")
        if not given and (self.action or self.exclusive):
            raise ConfigError("--target-action and --target-exclusive need a target",
                              "add --target-time, --target-lsn, --target-xid, --target-name or --target-immediate")
        if self.exclusive and self.immediate:
            raise ConfigError("--target-exclusive has no meaning with --target-immediate", "leave it out")
        if self.action is not None and self.action not in ACTIONS:
            raise ConfigError(f"--target-action {self.action!r} is not one of {', '.join(ACTIONS)}")
        if self.time is not None:
            parse_target_time(self.time)
        if self.lsn is not None and not _LSN.match(self.lsn.strip()):
            raise ConfigError(f"--target-lsn {self.lsn!r} is not an LSN", "use the form 16/B374D848 (hex/hex)")
        if self.xid is not None and not (self.xid.strip().isdecimal() and int(self.xid) < 1 << 64):
            raise ConfigError(f"--target-xid {self.xid!r} is not a transaction ID",
                              "use the decimal number, e.g. from SELECT pg_current_xact_id() or txid_current()")
        if self.name is not None and not (0 < len(self.name) <= MAX_RESTORE_POINT_NAME and "\n" not in self.name):
            raise ConfigError(f"--target-name {self.name!r} is not a restore point name",
                              f"the name given to pg_create_restore_point() (1 to {MAX_RESTORE_POINT_NAME} bytes)")
        if self.timeline is not None and not (self.timeline in ("latest", "current")
                                              or (self.timeline.isdecimal() and 0 < int(self.timeline) < 1 << 32)):
            raise ConfigError(f"--target-timeline {self.timeline!r} is not a timeline",
                              "use latest, current, or a timeline number (see the .history files in the repository)")

    @property
    def kind(self) -> str | None:
        for kind, value in (("time", self.time), ("lsn", self.lsn), ("xid", self.xid), ("name", self.name)):
            if value is not None:
                return kind
        return "immediate" if self.immediate else None

    @property
    def moment(self) -> datetime.datetime | None:
        return parse_target_time(self.time) if self.time is not None else None

    @property
    def moment_value(self) -> datetime.datetime:
        """The target time of a time target (and only of one)."""
        moment = self.moment
        assert moment is not None, "not a time target"
        return moment

    @property
    def lsn_value(self) -> int | None:
        return walnames.parse_lsn(self.lsn) if self.lsn is not None else None

    @property
    def xid_value(self) -> int | None:
        return int(self.xid) if self.xid is not None else None

    @property
    def effective_action(self) -> str | None:
        """What the server does at the target: PostgreSQL's default is pause."""
        if self.kind is None:
            return None
        return self.action or "pause"

    def describe(self) -> str:
        kind = self.kind
        if kind is None:
            return "none: replay every archived WAL file, then end recovery"
        if kind == "immediate":
            return "immediate: stop as soon as the backup is consistent"
        value = pg_timestamp(self.moment_value) if kind == "time" else getattr(self, kind)
        return f"{kind} {value} ({'exclusive: stop just before it' if self.exclusive else 'inclusive'})"

    def settings(self, timeline: int | None = None) -> list[tuple[str, str]]:
        """The recovery_target* settings, in postgresql.auto.conf order; timeline pins what walship checked."""
        self.check()
        chosen: list[tuple[str, str]] = []
        if self.time is not None:
            chosen.append(("recovery_target_time", pg_timestamp(self.moment_value)))
        if self.lsn is not None:
            chosen.append(("recovery_target_lsn", self.lsn.strip().upper()))
        if self.xid is not None:
            chosen.append(("recovery_target_xid", str(int(self.xid))))
        if self.name is not None:
            chosen.append(("recovery_target_name", self.name))
        if self.immediate:
            chosen.append(("recovery_target", "immediate"))
        if self.exclusive:
            chosen.append(("recovery_target_inclusive", "off"))
        if self.action:
            chosen.append(("recovery_target_action", self.action))
        if timeline is not None:
            chosen.append(("recovery_target_timeline", str(timeline)))
        elif self.timeline:
            chosen.append(("recovery_target_timeline", self.timeline))
        return chosen


def walship_executable() -> str:
    """The absolute path of the walship being run, so that the same install replays WAL."""
    argv0 = shutil.which(sys.argv[0]) or sys.argv[0]
    if os.path.basename(argv0) == "walship":
        return os.path.abspath(argv0)
    return shutil.which("walship") or os.path.join(os.path.dirname(sys.executable), "walship")


def restore_command(executable: str, repo: str, config_path: str | None) -> str:
    """A rename when the prefetch queue holds the segment (archive/queue.py fast_path), else wal-fetch."""
    words = [executable, "wal-fetch", "%f", "%p", "--repo", repo]
    if config_path:
        words += ["--config", os.path.abspath(config_path)]
    # %f and %p stay unquoted: PostgreSQL substitutes them before the shell runs the command
    return f"{queue.fast_path()} || " + " ".join(w if w in ("%f", "%p") else shlex.quote(w) for w in words)


def copy_archiving_lines(origin: str) -> list[str]:
    """archive_mode off for a restored copy, and why, in postgresql.auto.conf."""
    return ["# This server is a COPY restored from the repository " + origin + ". Its WAL must never go",
            "# there: after promotion its new timeline would fork that repository's history, and later",
            "# restores (LATEST) would follow this copy instead of production. To archive this copy into",
            "# its OWN repository: give it its own WALSHIP_REPO (or --repo in archive_command) and set",
            "# archive_mode = on. To make this server the new primary instead (production is lost), restore",
            "# again with `walship backup-fetch --as-primary` (see docs/restoring.md).",
            "archive_mode = 'off'"]


def write_settings(dest: str, backup_name: str, command: str, target: Target, timeline: int | None,
                   archiving_lines: list[str]) -> None:
    """Append this restore's settings to postgresql.auto.conf (later lines win)."""
    comment = (f"written by walship backup-fetch {backup_name} at "
               f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
    recoveryfiles.append_settings(dest, comment, [("restore_command", command), *target.settings(timeline)],
                                  archiving_lines)
