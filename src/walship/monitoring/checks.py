"""The plugin checks' verdicts, from facts already gathered (pure functions, so tests can
state every case): `walship check backup` and `walship check archive`."""

from __future__ import annotations

import time
from dataclasses import dataclass

from walship.reporting.plugin import CRITICAL, OK, UNKNOWN, WARNING, CheckResult, Perf, format_age, format_bytes, worst


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"


# --- check backup --------------------------------------------------------------------

def check_backup(backups, repo: str, warning_s: float, critical_s: float, now: float) -> CheckResult:
    """Age, size and duration of the newest complete base backup."""
    if not backups:
        return CheckResult(CRITICAL, f"no complete base backup in {repo}",
                           [Perf("age", 0, "s", warning_s, critical_s), Perf("backups", 0)])
    newest = max(backups, key=lambda b: b.stop_time)
    age = max(0.0, now - newest.stop_time)
    state = CRITICAL if age >= critical_s else WARNING if age >= warning_s else OK
    limit = {CRITICAL: f" (critical at {format_age(critical_s)})",
             WARNING: f" (warning at {format_age(warning_s)})", OK: ""}[state]
    checked_pages = getattr(newest, "page_checksum_failures", None)    # None: not verified
    bad_pages = checked_pages or 0
    if bad_pages:
        state = worst(state, WARNING)
    text = (f"{_count(bad_pages, 'page')} with a wrong checksum in the newest base backup (stored as found: "
            "check the disk and run pg_checksums or pg_amcheck); " if bad_pages else "") + (
            f"newest base backup {newest.name} finished {format_age(age)} ago{limit} at {_utc(newest.stop_time)}, "
            f"{format_bytes(newest.size)} (stored {format_bytes(newest.stored_size)}) in "
            f"{format_age(newest.duration_s)}; {_count(len(backups), 'backup')}")
    perf = [Perf("age", round(age), "s", warning_s, critical_s), Perf("size", newest.size, "B"),
            Perf("stored", newest.stored_size, "B"), Perf("duration", round(newest.duration_s, 1), "s"),
            Perf("backups", len(backups))]
    if checked_pages is not None:
        perf.append(Perf("bad_pages", bad_pages, "", 1))
    return CheckResult(state, text, perf)


# --- check archive -------------------------------------------------------------------

@dataclass(frozen=True)
class ArchiveThresholds:
    backlog_warning: int = 10
    backlog_critical: int = 100
    age_warning_s: float | None = None      # newest archived segment; off by default (idle servers)
    age_critical_s: float | None = None


def check_archive(facts, archive, gaps, since: str | None, repo_error: str | None,
                  limits: ArchiveThresholds, now: float) -> CheckResult:
    """facts: ArchiverFacts; archive: WalArchive or None (repository unreadable, then repo_error says why);
    gaps: the archive's gaps from `since` (the oldest kept backup's start segment)."""
    problems: list[tuple[int, str]] = []

    if not facts.archiving_here:
        if facts.in_recovery:
            return CheckResult(OK, f"standby with archive_mode={facts.archive_mode}: the primary archives")
        problems.append((CRITICAL, "archive_mode is off: no WAL is archived"))
    if facts.failing:
        since_failure = format_age(now - facts.last_failed_time)
        failures = _count(facts.failed_count, "failure")
        problems.append((CRITICAL, f"archive_command failing: last failure {since_failure} ago on "
                                   f"{facts.last_failed_wal} ({failures} since stats reset)"))
    backlog = facts.ready_count
    backlog_state = (CRITICAL if backlog >= limits.backlog_critical
                     else WARNING if backlog >= limits.backlog_warning else OK)
    if backlog_state != OK or (facts.failing and backlog):
        oldest = (f", oldest waiting {format_age(facts.oldest_ready_age_s)}"
                  if facts.oldest_ready_age_s is not None else "")
        problems.append((CRITICAL if facts.failing else backlog_state,
                         f"{backlog} WAL files waiting to be archived{oldest}, pg_wal {format_bytes(facts.wal_size)}"))
    if gaps:
        missing = sum(g.count for g in gaps)
        origin = f"since {since}" if since else "in the archive"
        problems.append((CRITICAL, f"{_count(missing, 'WAL segment')} missing {origin}: "
                                   + ", ".join(str(g) for g in gaps[:3]) + (" ..." if len(gaps) > 3 else "")))
    newest_age = None
    if archive is not None and archive.newest_mtime is not None:
        newest_age = max(0.0, now - archive.newest_mtime)
        if limits.age_critical_s is not None and newest_age >= limits.age_critical_s:
            problems.append((CRITICAL, f"newest archived segment is {format_age(newest_age)} old"))
        elif limits.age_warning_s is not None and newest_age >= limits.age_warning_s:
            problems.append((WARNING, f"newest archived segment is {format_age(newest_age)} old"))
    elif archive is not None:
        problems.append((CRITICAL if facts.archived_count else WARNING, "no WAL in the repository"))
    if repo_error:
        problems.append((UNKNOWN, f"repository: {repo_error}"))

    perf = [Perf("backlog", backlog, "", limits.backlog_warning, limits.backlog_critical),
            Perf("failed", facts.failed_count), Perf("wal_size", facts.wal_size, "B")]
    if facts.oldest_ready_age_s is not None:
        perf.append(Perf("oldest_ready_age", round(facts.oldest_ready_age_s), "s"))
    if newest_age is not None:
        perf.append(Perf("newest_archived_age", round(newest_age), "s", limits.age_warning_s, limits.age_critical_s))
    if archive is not None:
        perf.append(Perf("missing_segments", sum(g.count for g in gaps), "", None, 1))

    state = worst(*(s for s, _ in problems))
    if state != OK:
        problems.sort(key=lambda p: -{CRITICAL: 3, WARNING: 2, UNKNOWN: 1, OK: 0}[p[0]])
        return CheckResult(state, "; ".join(text for s, text in problems if s != OK), perf)
    last = (f"last archived {facts.last_archived_wal} {format_age(now - facts.last_archived_time)} ago"
            if facts.last_archived_time else "nothing archived yet")
    continuous = f", archive continuous since {since}" if since else ""
    return CheckResult(OK, f"{last}, {backlog} waiting, pg_wal {format_bytes(facts.wal_size)}{continuous}", perf)
