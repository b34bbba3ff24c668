"""`walship status`: one screen for a person, or JSON for machines.

The backups; the archived WAL, its segment size (from the repository, not the
server) and its timelines with their branch points, a FORK flagged; the
recoverable windows, from each backup's consistency point to the first gap
after it, following timeline switches; the gaps; and the last failures
(pg_stat_archiver when the server is reachable, the metrics file's failure
times when one is configured).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from walship.monitoring import walarchive
from walship.monitoring.walarchive import utc
from walship.pg.walnames import format_lsn
from walship.reporting.plugin import format_age, format_bytes

if TYPE_CHECKING:
    from walship.config import Settings
    from walship.repo.catalog import BackupInfo
    from walship.storage import Store


def gather(settings: Settings, store: Store, conninfo: str | None, now: float) -> dict:
    from walship.crypto import keyring_from_settings
    from walship.errors import WalshipError
    from walship.monitoring import pgfacts
    from walship.repo import record

    record.require(store)       # a wrong URL or an unmounted file system is not "an empty archive"
    facts, pg_error = None, None
    try:
        facts = pgfacts.collect(conninfo)
    except WalshipError as exc:
        pg_error = exc.message
    archive, listed = walarchive.load_with_backups(store, keyring_from_settings(settings))
    backups = sorted(listed, key=lambda b: b.start_time)
    oldest = backups[0] if backups else None
    gaps = archive.gaps(oldest.start_wal if oldest else None)
    windows = archive.windows(backups)
    return {
        "repository": store.url,
        "time": now,
        "backups": [b.as_dict() for b in backups],
        "wal": {"segments": archive.count, "oldest": archive.oldest_name, "newest": archive.newest_name,
                "newest_time": archive.newest_mtime, "segment_size": archive.segment_size,
                "segment_size_source": archive.size_source, "read_from": archive.index_note},
        "timelines": [t.as_dict() for t in archive.timelines()],
        "window": _newest_window(backups, windows),
        "windows": [w.as_dict() for w in windows],
        "unusable_backups": [{"backup": b.name, "missing": archive.backup_missing(b)}
                             for b in backups if archive.backup_missing(b)],
        "gaps": [g.as_dict() for g in gaps],
        "archiver": facts.as_dict() if facts else {"error": pg_error},
        "last_failures": _failures(settings, facts),
        "receive": _receive(settings, store, conninfo, now),
    }


def _receive(settings: Settings, store: Store, conninfo: str | None, now: float) -> dict | None:
    """wal-receive's section (monitoring/receive.py): None when it is not in use."""
    from walship.monitoring import receive
    return receive.status_section(settings, store, conninfo, now)


def _newest_window(backups: list[BackupInfo], windows: list[walarchive.Span]) -> dict | None:
    """The one line summary: the span on the latest timeline (the one a restore follows by default) that
    reaches furthest, from the oldest backup that reaches it."""
    if not windows:
        return None
    newest = max(windows, key=lambda w: (w.timeline, w.end_lsn))
    backup = next(b for b in backups if b.name == newest.backup)
    return {"start_time": backup.stop_time, "start_backup": backup.name, "start_lsn": backup.stop_lsn,
            "start_wal": backup.stop_wal, "timeline": newest.timeline, "end_time": newest.end_time,
            "end_wal": newest.end_wal, "end_lsn": format_lsn(newest.end_lsn)}


def _failures(settings, facts) -> dict:
    out: dict = {}
    if facts and facts.last_failed_time:
        out["archive_command"] = {"time": facts.last_failed_time, "wal": facts.last_failed_wal,
                                  "count": facts.failed_count, "still_failing": facts.failing}
    if settings.metrics_file:
        from walship.reporting import metrics
        values = metrics.read(settings.metrics_file)
        if "walship_last_backup_failure_timestamp_seconds" in values:
            out["backup_push"] = {"time": values["walship_last_backup_failure_timestamp_seconds"],
                                  "count": int(values.get("walship_backup_failures_total", 0))}
        if "walship_last_archive_failure_timestamp_seconds" in values and "archive_command" not in out:
            out["wal_push"] = {"time": values["walship_last_archive_failure_timestamp_seconds"],
                               "count": int(values.get("walship_archive_failures_total", 0))}
    return out



def render_json(status: dict) -> str:
    return json.dumps(status, indent=2, default=str)


def render_text(status: dict) -> str:
    now = status["time"]
    lines = [f"repository  {status['repository']}", ""]
    backups = status["backups"]
    if backups:
        width = max(len(b["name"]) for b in backups)
        lines.append(f"base backups ({len(backups)})")
        lines.append(f"  {'name':<{width}} {'finished':<24} {'size':>10} {'stored':>10} {'took':>7}  start WAL")
        for b in backups:
            lines.append(f"  {b['name']:<{width}} {utc(b['stop_time']):<24} {format_bytes(b['size']):>10} "
                         f"{format_bytes(b['stored_size']):>10} {format_age(b['duration_s']):>7}  {b['start_wal']}")
            if b.get("page_checksum_failures"):
                lines.append(f"    WARNING: {b['page_checksum_failures']} pages with a wrong checksum when it "
                             "was taken (stored as found; backup-push's warnings name the files)")
    else:
        lines.append("base backups: NONE (take one: walship backup-push $PGDATA)")
    wal = status["wal"]
    lines.append("")
    if wal["newest"]:
        lines.append(f"archived WAL  {wal['segments']} segments of {format_bytes(wal['segment_size'])} "
                     f"({wal['segment_size_source']}), {wal['oldest']} .. {wal['newest']} "
                     f"(newest uploaded {format_age(now - wal['newest_time'])} ago)")
    else:
        lines.append("archived WAL  none")
    if status["timelines"]:
        lines.append(f"timelines     {len(status['timelines'])}")
        lines += walarchive.timeline_lines(status["timelines"], "  ")
    if status["windows"]:
        lines.append("recoverable   from a backup's consistency point to the first gap after it:")
        lines += walarchive.window_lines(status["windows"], "  ")
    else:
        lines.append("recoverable   NOTHING: no base backup with its WAL archived after it")
    for u in status["unusable_backups"]:
        lines.append(f"  backup {u['backup']} cannot be restored: its WAL segment {u['missing']} is missing")
    if status["gaps"]:
        lines.append(f"gaps          {len(status['gaps'])}: point-in-time recovery cannot cross them")
        lines += [f"  missing {walarchive.gap_text(g)}" for g in status["gaps"]]
    else:
        lines.append("gaps          none")
    lines.append("")
    archiver = status["archiver"]
    if "error" in archiver:
        lines.append(f"archiver      unknown: {archiver['error']}")
    else:
        state = "FAILING" if archiver["failing"] else "ok"
        last = (f"last archived {archiver['last_archived_wal']} {format_age(now - archiver['last_archived_time'])} ago"
                if archiver["last_archived_time"] else "nothing archived yet")
        lines.append(f"archiver      {state}: {last}, {archiver['ready_count']} waiting (.ready), "
                     f"pg_wal {format_bytes(archiver['wal_size'])}")
    failures = status["last_failures"]
    if not failures:
        lines.append("last failures none recorded")
    for what, f in failures.items():
        where = f" on {f['wal']}" if f.get("wal") else ""
        lines.append(f"last failure  {what}: {utc(f['time'])}{where} ({f['count']} in total)")
    if status.get("receive"):
        from walship.monitoring import receive
        lines += ["", *receive.status_lines(status["receive"], now)]
    return "\n".join(lines)
