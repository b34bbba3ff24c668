"""bench/archive/cold.py: the cost of one cold restore_command call, walship beside pgBackRest.

One PostgreSQL 15 cluster archives the same segments to both tools (archive_command runs walship's
wal-push and pgBackRest's archive-push); then, interleaved segment by segment, each tool's restore_command
is called once per segment through /bin/sh as the startup process does (no prefetch: every call is cold,
walship's fetch_prefetch = 0 in its config file), and 20 times for a timeline history file that is not in
the archive (the misses PostgreSQL makes at every restore). Prints medians of wall time, CPU time and peak
RSS per call, and the walship / pgBackRest ratio.

Usage (as root, after scripts/setup): python3 bench/archive/cold.py [--segments 50] [--misses 20]
Targets (issue 15): a cold call at most pgBackRest's time; a miss at most 20 ms; peak RSS under 32 MB.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # the repository root, for tests.support
from tests.support import pg  # noqa: E402

# the production virtualenv's walship, as archive_command and restore_command run it (scripts/setup builds it
# beside the test one); the test virtualenv's site-packages, full of test tools and their .pth files, costs
# every interpreter start 4 ms more
_PRODUCTION = Path("/opt/walship/venv/bin/walship")
WALSHIP = str(_PRODUCTION if _PRODUCTION.exists() else Path(sys.executable).with_name("walship"))


def pgbackrest_conf(base: Path, cluster: pg.Cluster, repo: Path) -> Path:
    """pgBackRest as the peers' benchmarks run it: posix repository, zst, process-max 2."""
    for sub in ("log", "lock", "spool"):
        pg.make_dir(base, f"pgbr-{sub}")
    conf = base / "pgbackrest.conf"
    conf.write_text("\n".join([
        "[global]", f"repo1-path={repo}", "repo1-type=posix", "compress-type=zst", "process-max=2",
        f"log-path={base / 'pgbr-log'}", f"lock-path={base / 'pgbr-lock'}", f"spool-path={base / 'pgbr-spool'}",
        "log-level-console=warn", "log-level-file=off", "start-fast=y",
        "[main]", f"pg1-path={cluster.datadir}", f"pg1-port={cluster.port}", f"pg1-socket-path={cluster.sockdir}",
        ""]))
    pg.chown_postgres(conf)
    return conf


def archive_segments(base: Path, count: int) -> tuple[pg.Cluster, str, Path, list[str]]:
    """A stopped cluster whose `count` full segments are archived by both tools."""
    repo = pg.make_dir(base, "walship-repo", 0o755)
    pgbr_repo = pg.make_dir(base, "pgbr-repo", 0o755)
    cluster = pg.Cluster(15, base, name="primary")
    cluster.initdb()
    conf = pgbackrest_conf(base, cluster, pgbr_repo)
    url = f"file://{repo}"
    cluster.set_archiving(command=f"{WALSHIP} wal-push %p --repo {url} && "
                                  f"pgbackrest --config={conf} --stanza=main archive-push %p")
    cluster.start()
    pg.run_as_postgres(["pgbackrest", f"--config={conf}", "--stanza=main", "stanza-create"],
                       env=pg.server_env({"PGHOST": str(cluster.sockdir)}))
    cluster.sql("CREATE TABLE t (id bigint, pad text)")
    names = []
    for i in range(count):
        cluster.sql(f"INSERT INTO t SELECT g, repeat(md5(g::text), 4) FROM generate_series({i * 70000}, "
                    f"{i * 70000 + 69999}) g")
        names.append(cluster.switch_wal())
    cluster.wait_archived(names[-1])
    cluster.stop()
    return cluster, url, conf, names


def timed(command: str, cwd: Path) -> tuple[float, float, float, int]:
    """(wall ms, CPU ms, peak RSS MB of the call, exit code) of one `sh -c command` run as postgres."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    # a fresh wrapper per call: RUSAGE_CHILDREN's maxrss is the largest child so far, so read it from time -f
    run = subprocess.run(["/usr/bin/time", "-f", "%M", "runuser", "-u", "postgres", "--", "sh", "-c", command],
                         cwd=cwd, capture_output=True, text=True)
    wall = (time.perf_counter() - started) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = ((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)) * 1000
    rss_kb = int(run.stderr.strip().splitlines()[-1])
    return wall, cpu, rss_kb / 1024, run.returncode


def row(label: str, ours: list[tuple[float, float, float, int]], theirs: list[tuple[float, float, float, int]]) -> None:
    def med(rows, i):
        return statistics.median(r[i] for r in rows)
    print(f"{label:<34} {'walship':>9} {'pgBackRest':>11} {'ratio':>6}")
    for i, what in enumerate(("wall ms", "CPU ms", "peak RSS MB")):
        a, b = med(ours, i), med(theirs, i)
        print(f"  {what:<32} {a:9.1f} {b:11.1f} {a / b:6.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=int(os.environ.get("COLD_SEGMENTS", 50)))
    parser.add_argument("--misses", type=int, default=20)
    parser.add_argument("--scratch", default=None, help="scratch directory (removed at the end)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (to profile a call)")
    opts = parser.parse_args()
    base = Path(opts.scratch) if opts.scratch else pg.scratch_dir("walship-bench-cold-")
    base.mkdir(parents=True, exist_ok=True)
    pg.chown_postgres(base)
    try:
        cluster, url, conf, names = archive_segments(base, opts.segments)
        config = base / "walship.toml"
        config.write_text("fetch_prefetch = 0\nlog_destination = \"none\"\n")   # every call cold and quiet
        pg.chown_postgres(config)
        out = pg.make_dir(base, "out")
        from walship.backup.recovery import restore_command
        ours_cmd = restore_command(WALSHIP, url, str(config))        # what backup-fetch writes, fast path included
        theirs_cmd = f"pgbackrest --config={conf} --stanza=main archive-get %f %p"
        fetched: dict[str, list] = {"walship": [], "pgbackrest": []}
        for name in names:                                         # interleaved: the same noise for both
            for tool, template in (("walship", ours_cmd), ("pgbackrest", theirs_cmd)):
                dest = out / f"{tool}-RECOVERYXLOG"
                result = timed(template.replace("%f", name).replace("%p", str(dest)), cluster.datadir)
                if result[3] != 0 or (out / "walship-RECOVERYXLOG").exists() and tool == "pgbackrest" and \
                        (out / "walship-RECOVERYXLOG").read_bytes() != dest.read_bytes():
                    raise SystemExit(f"{tool} failed or differs on {name}")
                fetched[tool].append(result)
        missed: dict[str, list] = {"walship": [], "pgbackrest": []}
        for i in range(opts.misses):
            name = f"{i + 2:08X}.history"
            for tool, template in (("walship", ours_cmd), ("pgbackrest", theirs_cmd)):
                result = timed(template.replace("%f", name).replace("%p", str(out / "RECOVERYHISTORY")),
                               cluster.datadir)
                if result[3] != 1:
                    raise SystemExit(f"{tool} answered {result[3]} for the missing {name}, not 1")
                missed[tool].append(result)
        pgbr_version = subprocess.run(["pgbackrest", "version"], capture_output=True, text=True).stdout.strip()
        print(f"cold restore_command calls, PostgreSQL 15, file repositories, {pgbr_version} (zst)")
        row(f"cold fetch of a segment ({len(names)} calls)", fetched["walship"], fetched["pgbackrest"])
        row(f"miss, history file ({opts.misses} calls)", missed["walship"], missed["pgbackrest"])
    finally:
        if not opts.keep:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
