"""pgbench TPS while a base backup runs: none, walship unlimited, walship --max-rate at half its unlimited read
rate, and pgBackRest (zst, process-max 2, as in issue 15), on one cluster in one session, interleaved.

Each phase runs pgbench (-c CLIENTS, -j 2, -P 1) and, after 5 s, one backup; the phase's TPS is the mean of
pgbench's per-second figures inside the backup's window (the baseline: a window as long as walship's
unlimited backup, without one). The backups run in a session of their own, as from cron or systemd (see
backup/priority.py: autogroup). The read rate of a backup is its data-directory bytes (backup-list "size";
pgBackRest's `info` size) over its wall time; the limit is half the rate walship's unlimited backup reached
under the same load. The target (issue 15): with the limit, TPS within 15 % of
the baseline. WAL is archived by walship wal-push throughout, in every phase.

Usage (as root, from the repository root, after scripts/setup --test; pgBackRest from apt, optional):

    /opt/walship/venv-test/bin/python bench/backup/tps.py [--scale 50] [--clients 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # the repository root, for tests.support
from tests.support import pg  # noqa: E402


def pgbench(cluster: pg.Cluster, clients: int, seconds: int) -> subprocess.Popen:
    """pgbench printing its TPS every second, each line stamped with the epoch (to cut out a backup's window)."""
    return subprocess.Popen([cluster.program("pgbench"), "-n", "-c", str(clients), "-j", "2", "-T", str(seconds),
                             "-P", "1", "--progress-timestamp", "postgres"], env=cluster.env_for_tools(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **pg.as_postgres())


def window_tps(progress: str, begin: float, end: float) -> float:
    """Mean TPS of pgbench's per-second lines that fall inside [begin, end] (epoch seconds)."""
    lines = [(float(t), float(tps)) for t, tps in re.findall(r"^progress: ([\d.]+) s, ([\d.]+) tps", progress, re.M)]
    inside = [tps for t, tps in lines if begin + 1 <= t <= end]       # a line covers the second before its stamp
    if not inside:
        sys.exit(f"no pgbench progress between {begin} and {end}:\n{progress[-2000:]}")
    return statistics.mean(inside)


def phase(cluster: pg.Cluster, clients: int, backup, idle_s: float) -> dict:
    """TPS while one backup (backup() -> (wall s, bytes read)) runs, or over idle_s seconds without one;
    pgbench runs 5 s before (warm) and goes on to the end of the window."""
    bench = pgbench(cluster, clients, 3600)
    time.sleep(5)
    begin = time.time()
    result: dict = {}
    if backup is None:
        time.sleep(idle_s)
    else:
        wall, size = backup()
        result = {"backup_s": wall, "read_mb_s": size / wall / 1e6}
    end = time.time()
    time.sleep(1.5)                                   # the last second's line
    bench.send_signal(signal.SIGINT)
    _, progress = bench.communicate()
    return {"tps": window_tps(progress, begin, end), **result}


def walship_backup(cluster: pg.Cluster, env: dict, *flags: str):
    def run() -> tuple[float, int]:
        started = time.monotonic()
        # started as a service starts it (a session of its own, no terminal)
        r = subprocess.run([pg.WALSHIP, "backup-push", str(cluster.datadir), "--progress", "none", *flags], env=env,
                           capture_output=True, text=True, timeout=3600, start_new_session=True, **pg.as_postgres())
        elapsed = time.monotonic() - started
        if r.returncode != 0:
            sys.exit(f"backup-push failed: {r.stderr[-2000:]}")
        newest = json.loads(pg.walship(["backup-list", "--json"], env, check=True).stdout)[-1]
        return elapsed, newest["size"]
    return run


def pgbackrest_backup(cluster: pg.Cluster, scratch: Path):
    """pgBackRest's full backup of the same cluster into a posix repository (its WAL check off: walship archives)."""
    conf = scratch / "pgbackrest.conf"
    for d in ("pgbr-repo", "pgbr-log", "pgbr-lock", "pgbr-spool"):
        pg.make_dir(scratch, d)
    conf.write_text(f"[global]\nrepo1-path={scratch}/pgbr-repo\nlog-path={scratch}/pgbr-log\n"
                    f"lock-path={scratch}/pgbr-lock\nspool-path={scratch}/pgbr-spool\ncompress-type=zst\n"
                    "process-max=2\nstart-fast=y\narchive-check=n\nlog-level-console=warn\nrepo1-retention-full=2\n"
                    f"[main]\npg1-path={cluster.datadir}\npg1-port={cluster.port}\npg1-socket-path={cluster.sockdir}\n")
    pg.chown_postgres(conf)
    base = ["pgbackrest", f"--config={conf}", "--stanza=main"]
    pg.run_as_postgres([*base, "stanza-create"], env=cluster.env_for_tools())

    def run() -> tuple[float, int]:
        started = time.monotonic()
        subprocess.run([*base, "--type=full", "backup"], env=cluster.env_for_tools(), timeout=3600, check=True,
                       start_new_session=True, **pg.as_postgres())
        elapsed = time.monotonic() - started
        info = json.loads(pg.run_as_postgres([*base, "--output=json", "info"], env=cluster.env_for_tools()).stdout)
        return elapsed, info[0]["backup"][-1]["info"]["size"]
    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=int, default=50)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every phase")
    parser.add_argument("--pg", type=int, default=15)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    scratch = pg.scratch_dir("walship-bench-tps-")
    repo_env = {"WALSHIP_REPO": f"file://{pg.make_dir(scratch, 'repo', 0o755)}"}
    cluster = pg.Cluster(args.pg, scratch, env=repo_env)
    try:
        cluster.initdb("max_wal_size = 1GB\nshared_buffers = 128MB\n")
        cluster.set_archiving()
        cluster.start()
        pg.run_as_postgres([cluster.program("pgbench"), "-i", "-q", "-s", str(args.scale), "postgres"],
                           env=cluster.env_for_tools(), timeout=3600)
        cluster.sql("CHECKPOINT")
        env = {**cluster.env_for_tools(), **repo_env}

        unlimited = walship_backup(cluster, env)
        unlimited()                                   # the page cache warm, the repository claimed
        results: dict[str, list[dict]] = {}

        def run(name: str, backup) -> dict:
            idle = statistics.median(r["backup_s"] for r in results["walship, no limit"]) if backup is None else 0
            results.setdefault(name, []).append(phase(cluster, args.clients, backup, idle))
            print(f"  {name}: {results[name][-1]}", flush=True)
            return results[name][-1]

        loaded = run("walship, no limit", unlimited)  # first: the limit is half the rate it reached under load
        rate = int(loaded["read_mb_s"] * 1e6 / 2)
        phases = {"no backup": None, f"walship --max-rate {rate / 1e6:.0f}M (half)":
                  walship_backup(cluster, env, "--max-rate", str(rate)), "walship, no limit": unlimited}
        if shutil.which("pgbackrest"):
            version = subprocess.run(["pgbackrest", "version"], capture_output=True, text=True).stdout.split()[-1]
            phases[f"pgBackRest {version} zst pm2"] = pgbackrest_backup(cluster, scratch)
        else:
            print("(pgbackrest not installed: its row is left out)")
        for round_ in range(args.rounds):
            for name, backup in phases.items():
                if not (round_ == 0 and backup is unlimited):   # the first round's ran already
                    run(name, backup)
    finally:
        cluster.stop()
        if not args.keep:
            pg.remove_tree(scratch)

    base = statistics.median(r["tps"] for r in results["no backup"])
    print(f"\npgbench -s {args.scale}, {args.clients} clients; TPS over the window of one backup (baseline: as long, "
          f"no backup); {args.rounds} interleaved round(s), medians")
    print(f"| {'phase':<32} | {'TPS':>7} | {'vs baseline':>11} | {'runs':>4} | {'backup s':>8} | {'read MB/s':>9} |")
    print(f"|{'-' * 34}|{'-' * 9}|{'-' * 13}|{'-' * 6}|{'-' * 10}|{'-' * 11}|")
    for name, rows in results.items():
        tps = statistics.median(r["tps"] for r in rows)
        backup_s = statistics.median(r.get("backup_s", 0) for r in rows)
        read = statistics.median(r.get("read_mb_s", 0) for r in rows)
        print(f"| {name:<32} | {tps:7.0f} | {tps / base - 1:+11.1%} | {len(rows):4d} | {backup_s:8.1f} | {read:9.0f} |")


if __name__ == "__main__":
    main()
