"""backup-push against the compression limit: `tar cf - PGDATA | zstd -3 -T2 >/dev/null` of the same data directory,
interleaved on one cluster, medians and the per-pair ratio (issue 15's target: at most 1.05x).

walship runs as an operator runs it (backup-push of the running cluster into a file repository, with its
checks before and its wait for the last WAL segment after); the pipe writes nothing. Both run as postgres
under /usr/bin/time -v on a warm page cache, so wall time and CPU (user + sys) are comparable. Also printed:
where walship's time goes when the data path alone runs in one process (`--stages`: read, SHA-256, page
checks, compression), to show what is left to win.

Usage (as root, from the repository root, after scripts/setup --test):

    /opt/walship/venv-test/bin/python bench/backup/push-vs-pipe.py [--scale 100] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # the repository root, for tests.support
from tests.support import pg  # noqa: E402


def timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall s, user + sys CPU s) of cmd run as postgres."""
    r = pg.run_as_postgres(["/usr/bin/time", "-v", *cmd], env=env, check=False, timeout=3600)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")
    fields = dict(re.findall(r"^\s*(.+?): (.+)$", r.stderr, re.M))
    wall = fields["Elapsed (wall clock) time (h:mm:ss or m:ss)"].split(":")
    seconds = sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall)))
    return seconds, float(fields["User time (seconds)"]) + float(fields["System time (seconds)"])


def warm(datadir: Path) -> None:
    subprocess.run(f"tar cf - -C {datadir} . | cat >/dev/null", shell=True, check=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pg", type=int, default=15)
    parser.add_argument("--low-priority", action="store_true",
                        help="backup-push at its default nice 10 / best-effort 7 (default here: the pipe's priority)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    scratch = pg.scratch_dir("walship-bench-pipe-")
    repo_env = {"WALSHIP_REPO": f"file://{pg.make_dir(scratch, 'repo', 0o755)}"}
    cluster = pg.Cluster(args.pg, scratch, env=repo_env)
    pipe, push = [], []
    try:
        cluster.initdb("max_wal_size = 1GB\n")
        cluster.set_archiving()
        cluster.start()
        pg.run_as_postgres([cluster.program("pgbench"), "-i", "-q", "-s", str(args.scale), "postgres"],
                           env=cluster.env_for_tools(), timeout=3600)
        cluster.sql("CHECKPOINT")
        env = {**cluster.env_for_tools(), **repo_env,
               "WALSHIP_BACKUP_LOW_PRIORITY": "true" if args.low_priority else "false"}
        for run in range(args.runs):
            warm(cluster.datadir)
            pipe.append(timed(["sh", "-c", f"tar cf - -C {cluster.datadir} --exclude=./pg_wal . | zstd -3 -T2 -q "
                                           ">/dev/null"], env))
            warm(cluster.datadir)
            push.append(timed([pg.WALSHIP, "backup-push", str(cluster.datadir), "--progress", "none"], env))
            print(f"  run {run + 1}: pipe {pipe[-1][0]:.2f} s ({pipe[-1][1]:.2f} s CPU), "
                  f"backup-push {push[-1][0]:.2f} s ({push[-1][1]:.2f} s CPU), {push[-1][0] / pipe[-1][0]:.2f}x",
                  flush=True)
    finally:
        cluster.stop()
        if not args.keep:
            pg.remove_tree(scratch)

    ratios = [b[0] / a[0] for a, b in zip(pipe, push)]
    print(f"\npgbench -s {args.scale}, {args.runs} interleaved runs, medians ({os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}); backup-push at {'low' if args.low_priority else 'normal'} priority")
    print("| command | wall s | CPU s |")
    print("|---|---|---|")
    print(f"| tar \\| zstd -3 -T2 >/dev/null | {statistics.median(p[0] for p in pipe):.2f} | "
          f"{statistics.median(p[1] for p in pipe):.2f} |")
    print(f"| walship backup-push (file repository) | {statistics.median(p[0] for p in push):.2f} | "
          f"{statistics.median(p[1] for p in push):.2f} |")
    print(f"| ratio (median of per-pair ratios) | {statistics.median(ratios):.2f}x | |")


if __name__ == "__main__":
    main()
