"""What verifying page checksums costs backup-push: a pgbench cluster with data checksums, pushed to a
file repository with verification on and off, alternately (the machine is noisy: compare runs side by side).

    WALSHIP_VENV=/opt/walship/venv-bench ./scripts/setup --test
    /opt/walship/venv-bench/bin/python bench/backup/page_checksums.py [--scale 30] [--runs 3] [--compression zstd]

Each backup-push runs as postgres under /usr/bin/time -v after the data directory was read once
(warm page cache), as bench.py measures; the verified runs must report no bad page.

2026-12-02, this machine (2 cores shared with other jobs), zstd, 3 runs each, medians (wall / CPU / peak RSS):
scale 30 (471 MiB), a busy moment: verified 4.6 s / 2.11 s / 71 MiB, not verified 3.4 s / 1.47 s / 51 MiB;
scale 50 (770 MiB), quieter: verified 3.13 s / 2.59 s / 72 MiB, not verified 2.81 s / 1.91 s / 54 MiB.
The checksum costs about 0.5-0.8 ms of CPU per MiB (numpy over 1 MiB reads), importing numpy 0.15 s and 17 MiB.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import load, timed, warm  # noqa: E402   (bench.py puts the repository root on sys.path)
from tests.support import pg  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--compression", default="zstd")
    args = parser.parse_args()

    scratch = pg.scratch_dir("walship-bench-checksums-")
    primary = pg.Cluster(15, scratch, name="primary")          # initdb --data-checksums
    repo_env = {"WALSHIP_REPO": f"file://{pg.make_dir(scratch, 'repo', 0o755)}",
                "WALSHIP_COMPRESSION": args.compression}
    results: dict[str, list[dict]] = {"true": [], "false": []}
    try:
        primary.initdb("shared_buffers = 1GB\nmax_wal_size = 2GB\n")
        primary.set_archiving()
        primary.process_env.update(repo_env)
        primary.start()
        load(primary, "pgbench", args.scale)
        env = {**primary.env_for_tools(), **repo_env}
        for run in range(args.runs):
            for verify in ("true", "false"):
                warm(primary.datadir)
                push = timed([pg.WALSHIP, "backup-push", str(primary.datadir), "--progress", "none"],
                             {**env, "WALSHIP_BACKUP_PAGE_CHECKSUMS": verify})
                newest = json.loads(pg.walship(["backup-list", "--json"], env, check=True).stdout)[-1]
                assert newest["page_checksum_failures"] == (0 if verify == "true" else None), newest
                push["size_mib"] = round(newest["size"] / 2**20)
                print(json.dumps({"verify": verify, "run": run + 1, **push}), flush=True)
                results[verify].append(push)
                pg.walship(["delete", "--retain", "1"], env, check=True)
    finally:
        primary.stop("immediate")
        pg.remove_tree(scratch)

    print(f"\n| pgbench scale {args.scale}, {args.compression}, file | data MiB | wall s (median) | CPU s (median) "
          "| peak RSS MiB |")
    print("|---|---|---|---|---|")
    for verify, label in (("true", "page checksums verified"), ("false", "not verified")):
        runs = results[verify]
        print(f"| {label} | {runs[0]['size_mib']} | {statistics.median(r['wall_s'] for r in runs)} "
              f"| {statistics.median(r['cpu_s'] for r in runs)} | {max(r['rss_mib'] for r in runs)} |")


if __name__ == "__main__":
    main()
