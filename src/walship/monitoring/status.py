"""`walship status`: one screen for a person, or JSON for machines.

The backups, the recoverable window (from the start of the oldest backup whose
WAL is continuous up to the newest archived segment), gaps, and the last
failures (pg_stat_archiver when the server is reachable, the metrics file's
failure times when one is configured).
"""

from __future__ import annotations

import json
import time

from walship.monitoring import walarchive
from walship.monitoring.plugin import format_age, format_bytes


def gather(settings, store, conninfo: str | None, now: float) -> dict:
    from walship.backup.catalog import list_backups
    from walship.errors import WalshipError
    from walship.monitoring import pgfacts

    facts, pg_error = None, None
    try:
        facts = pgfacts.collect(conninfo)
    except WalshipError as exc:
        pg_error = exc.message
    backups = sorted(list_backups(store), key=lambda b: b.start_time)
    archive = walarchive.load(store, facts.wal_segment_size if facts else None)
    oldest = backups[0] if backups else None
    gaps = archive.gaps(oldest.start_wal if oldest else None)
    return {
        "repository": store.url,
        "time": now,
        "backups": [b.as_dict() for b in backups],
        "wal": {"segments": archive.count, "oldest": archive.oldest_name, "newest": archive.newest_name,
                "newest_time": archive.newest_mtime, "segment_size": archive.segment_size},
        "window": _window(backups, archive, gaps),
        "gaps": [{"first": g.first, "last": g.last, "count": g.count} for g in gaps],
        "archiver": facts.as_dict() if facts else {"error": pg_error},
        "last_failures": _failures(settings, facts),
    }


def _window(backups, archive, gaps) -> dict | None:
    """From the oldest backup that starts after the last gap, to the newest archived segment."""
    if not backups or archive.newest_name is None:
        return None
    last_gap_end = max((g.last for g in gaps), default=None)
    usable = [b for b in backups if last_gap_end is None or b.start_wal > last_gap_end]
    if not usable:
        return None
    first = usable[0]
    return {"start_time": first.start_time, "start_backup": first.name, "start_wal": first.start_wal,
            "end_time": archive.newest_mtime, "end_wal": archive.newest_name}


def _failures(settings, facts) -> dict:
    out: dict = {}
    if facts and facts.last_failed_time:
        out["archive_command"] = {"time": facts.last_failed_time, "wal": facts.last_failed_wal,
                                  "count": facts.failed_count, "still_failing": facts.failing}
    if settings.metrics_file:
        from walship.monitoring import metrics
        values = metrics.read(settings.metrics_file)
        if "walship_last_backup_failure_timestamp_seconds" in values:
            out["backup_push"] = {"time": values["walship_last_backup_failure_timestamp_seconds"],
                                  "count": int(values.get("walship_backup_failures_total", 0))}
        if "walship_last_archive_failure_timestamp_seconds" in values and "archive_command" not in out:
            out["wal_push"] = {"time": values["walship_last_archive_failure_timestamp_seconds"],
                               "count": int(values.get("walship_archive_failures_total", 0))}
    return out


def _utc(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts else "-"


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
            lines.append(f"  {b['name']:<{width}} {_utc(b['stop_time']):<24} {format_bytes(b['size']):>10} "
                         f"{format_bytes(b['stored_size']):>10} {format_age(b['duration_s']):>7}  {b['start_wal']}")
            if b.get("page_checksum_failures"):
                lines.append(f"    WARNING: {b['page_checksum_failures']} pages with a wrong checksum when it "
                             "was taken (stored as found; backup-push's warnings name the files)")
    else:
        lines.append("base backups: NONE (take one: walship backup-push $PGDATA)")
    wal = status["wal"]
    lines.append("")
    if wal["newest"]:
        lines.append(f"archived WAL  {wal['segments']} segments, {wal['oldest']} .. {wal['newest']} "
                     f"(newest uploaded {format_age(now - wal['newest_time'])} ago)")
    else:
        lines.append("archived WAL  none")
    window = status["window"]
    if window:
        lines.append(f"recoverable   {_utc(window['start_time'])} (backup {window['start_backup']}) .. "
                     f"{_utc(window['end_time'])} (WAL {window['end_wal']})")
    else:
        lines.append("recoverable   NOTHING: no base backup with continuous WAL after it")
    if status["gaps"]:
        lines.append(f"gaps          {len(status['gaps'])}: point-in-time recovery cannot cross them")
        for g in status["gaps"]:
            span = g["first"] if g["count"] == 1 else f"{g['first']} .. {g['last']} ({g['count']} segments)"
            lines.append(f"  missing {span}")
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
        lines.append(f"last failure  {what}: {_utc(f['time'])}{where} ({f['count']} in total)")
    return "\n".join(lines)
