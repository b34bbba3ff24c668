"""`walship verify [NAME|--all] [--quick] [--json]`: a report, and exit 0 only when all is restorable."""

from __future__ import annotations

import json
import time

from walship.errors import EXIT_INTEGRITY


def run(command: str, args, settings, store_factory) -> int:
    from walship.backup import catalog
    from walship.crypto import keyring_from_settings
    from walship.verify import backups as backup_check
    from walship.verify import wal

    started = time.monotonic()
    store = store_factory()
    keyring = keyring_from_settings(settings)
    every = catalog.list_backups(store)
    chosen = every if (args.all or not args.name) else [catalog.find(store, args.name)]
    report = {"repository": store.url, "backups": [], "wal": {}, "ok": True}
    for backup in chosen:
        problems, facts = backup_check.check(store, backup, keyring, settings.backup_concurrency)
        report["backups"].append({"name": backup.name, "source": backup.source, "problems": problems,
                                  "page_checksum_failures": backup.page_checksum_failures, **facts})
        report["ok"] &= not problems
    problems, facts = wal.check(store, every, keyring, args.quick)
    report["wal"] = {"problems": problems, **facts}
    report["ok"] &= not problems
    report["duration_s"] = round(time.monotonic() - started, 2)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0 if report["ok"] else EXIT_INTEGRITY


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
    lines.append(f"WAL: {state}: {w['segments']} segments on timeline(s) {', '.join(map(str, w['timelines'])) or '-'}"
                 f" from {w['since'] or '-'} to {w['newest'] or '-'}{read}")
    lines += [f"  - {p}" for p in w["problems"]]
    lines.append("verify: " + ("the repository is restorable" if report["ok"] else "PROBLEMS FOUND") +
                 f" ({report['duration_s']} s)")
    return "\n".join(lines)
