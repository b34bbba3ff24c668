"""Prints bench/archive results (JSON lines) as tables: walship beside the peers."""

import json
import os
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
print("\n## Per call (64 real 16 MiB WAL segments, one archive_command call each)\n")
print("| variant | ms/segment | fast calls | fast median ms | fast p95 ms | cold calls | cold median ms |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    if r.get("op", "").startswith("per-call"):
        print(f"| {r['variant']} | {r['ms_per_segment']} | {r['fast_calls']} | {r['fast_median_ms']} | "
              f"{r['fast_p95_ms']} | {r['cold_calls']} | {r['cold_median_ms']} |")
for r in rows:
    if r.get("op", "").startswith("fast-path"):
        print(f"\nFast path alone: median {r['median_ms']} ms, max {r['max_ms']} ms over {r['calls']} calls "
              "(includes sh -c and the Python start-up).")
print("\n## Drain: a backlog of .ready segments (written by pgbench while archiving was off), archived by the tool\n")
print("| tool | repo / config | segments | drain s | segments/s | MiB/s |")
print("|---|---|---|---|---|---|")
for r in rows:
    if r.get("op", "").startswith("drain"):
        print(f"| {r['tool']} | {r['repo']} | {r['segments']} | {r['drain_s']} | {r['segments_per_s']} | "
              f"{float(r['segments_per_s']) * 16:.0f} |")
print("\n## End to end: pgbench -c 4 -j 2 -T 60, synchronous_commit=off, archive_command = tool\n")
print("| tool | repo / config | tps | WAL MiB | segments generated | .ready at end | max .ready during run | catch-up s |")
print("|---|---|---|---|---|---|---|---|")


def max_ready(r):
    if r.get("max_ready_during_run") not in (None, ""):
        return r["max_ready_during_run"]
    csv = f"/tmp/peers/logs/e2e-{r.get('repo')}-run{r.get('run')}.csv"
    if not os.path.exists(csv):
        return ""
    values = [int(line.split(",")[1]) for line in list(open(csv))[1:] if line.count(",") >= 1]
    return max(values) if values else ""


for r in rows:
    if r.get("op", "").startswith("e2e"):
        r["max_ready_during_run"] = max_ready(r)
        print(f"| {r.get('tool')} | {r.get('repo')} | {r.get('tps')} | {r.get('wal_mib')} | {r.get('seg_generated')} | "
              f"{r.get('ready_at_end')} | {r.get('max_ready_during_run', '')} | {r.get('catchup_s')} |")
