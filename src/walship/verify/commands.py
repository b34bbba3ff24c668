"""`walship verify [NAME|--all] [--quick] [--json]`: a report, and exit 0 only when all is restorable.

Exit 4 when something is damaged or missing (a corrupt object, a gap, a backup
without its WAL), 1 when nothing is damaged but nothing can be restored either
(no backup, or none whose WAL is archived), 3 when the location is not a
repository at all (nothing there: a wrong URL or a file system not mounted).
"""

from __future__ import annotations

import json
import time

from walship.errors import EXIT_FAILURE, EXIT_INTEGRITY
from walship.monitoring import walarchive


def run(command: str, args, settings, store_factory) -> int:
    from walship.backup import catalog
    from walship.crypto import keyring_from_settings
    from walship.repo import record
    from walship.verify import backups as backup_check
    from walship.verify import wal

    started = time.monotonic()
    store = store_factory()
    record.require(store)
    keyring = keyring_from_settings(settings)
    backups = catalog.open_catalog(store)
    every = backups.list()
    chosen = every if (args.all or not args.name) else [backups.find(args.name)]
    report = {"repository": store.url, "backups": [], "wal": {}, "ok": True}
    for backup in chosen:
        problems, facts = backup_check.check(store, backup, keyring, settings.backup_concurrency)
        report["backups"].append({"name": backup.name, "source": backup.source, "problems": problems,
                                  "page_checksum_failures": backup.page_checksum_failures, **facts})
        report["ok"] &= not problems
    problems, facts = wal.check(store, every, keyring, args.quick, chosen=chosen)
    report["wal"] = {"problems": problems, **facts}
    report["ok"] &= not problems
    report["restorable"] = bool(facts["windows"])
    report["duration_s"] = round(time.monotonic() - started, 2)
    print(json.dumps(report, indent=2) if args.json else render(report))
    if not report["ok"]:
        return EXIT_INTEGRITY
    return 0 if report["restorable"] else EXIT_FAILURE


def render(report: dict) -> str:
    lines = [f"repository {report['repository']}"]
    if not report["backups"]:
        lines.append("backups: none")
    for b in report["backups"]:
        state = "OK" if not b["problems"] else "FAILED"
        what = f"{b.get('files', 0)} files, {b.get('bytes', 0)} bytes checked" if b.get("checked") else \
            b.get("note", "")
        if b.get("page_checksum_failures"):      # stored as found: restorable, but those pages were bad
            what += f"; {b['page_checksum_failures']} pages had a wrong checksum when it was taken"
        lines.append(f"backup {b['name']}: {state} ({what})")
        lines += [f"  - {p}" for p in b["problems"]]
    w = report["wal"]
    read = f", {w['segments_read']} read back" if w.get("segments_read") else " (listing only)"
    state = "OK" if not w["problems"] else "FAILED"
    numbers = ", ".join(str(t["timeline"]) for t in w["timelines"]) or "-"
    lines.append(f"WAL: {state}: {w['segments']} segments of {w['segment_size']} bytes "
                 f"({w['segment_size_source']}) on timeline(s) {numbers} from {w['since'] or '-'} "
                 f"to {w['newest'] or '-'}{read}")
    lines += [f"  - {p}" for p in w["problems"]]
    lines += [f"  - warning: {p}" for p in w["warnings"]]
    if w["timelines"]:
        lines.append("timelines:")
        lines += walarchive.timeline_lines(w["timelines"], "  ", flags=False)   # flags: problems and warnings above
    if w["windows"]:
        lines.append("recoverable (from a backup's consistency point to the first gap after it):")
        lines += walarchive.window_lines(w["windows"], "  ")
    if not report["ok"]:
        verdict = "PROBLEMS FOUND"
    elif not report["restorable"]:
        verdict = ("NOTHING RESTORABLE: no complete base backup; take one with `walship backup-push PGDATA`"
                   if not report["backups"] else "NOTHING RESTORABLE: no backup has its WAL archived")
    else:
        verdict = "the repository is restorable"
    lines.append(f"verify: {verdict} ({report['duration_s']} s)")
    return "\n".join(lines)
