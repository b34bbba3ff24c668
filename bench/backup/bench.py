"""backup-push and backup-fetch of a pgbench scale-100 database, to the filesystem and to S3 (moto).

For figures beside pgBackRest and barman-cloud use bench/backup/peers.sh instead: it measures
walship on the peers' own cluster with their helpers, in the same session. This script builds
its own cluster, for what the peers do not measure (--dataset random, --many-files).

Usage (as root, from the repository root, after scripts/setup):

    WALSHIP_VENV=/opt/walship/venv-backup ./scripts/setup --test     # moto and the test helpers
    /opt/walship/venv-backup/bin/python bench/backup/bench.py [--scale 100] [--runs 1] [--keep]
        [--dataset pgbench|random] [--many-files N]

--dataset random replaces pgbench's very compressible rows (zstd: 20x) by
about as many MiB of random bytes (a table of incompressible bytea, stored
uncompressed), the worst case for compression. --many-files N adds N files of
1 KiB to the data directory, to show that memory does not grow with the
number of files.

Measures what ../shared/bench/peers measured for the other tools, the same way:
each walship command runs as the postgres user under `/usr/bin/time -v` (wall
time, user+sys CPU, peak RSS of the process), PGDATA is read once before each
backup (warm page cache) and `sync`ed; stored size is the backup's
stored_size from backup-list (parts + manifests, WAL excluded). The restore is
checked: the restored cluster starts, recovers, and pgbench_accounts has
scale * 100000 rows. Then the peers' figures from RESULTS.md are printed
alongside (they were measured on this machine with the same method; the
machine is noisy, so compare ratios from runs close in time).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # the repository root, for tests.support
from tests.support import pg  # noqa: E402
from tests.support.s3 import MotoS3  # noqa: E402

PEER_RESULTS = Path("../shared/bench/peers/RESULTS.md")


def timed(cmd: list[str], env: dict) -> dict:
    """Run cmd as postgres under /usr/bin/time -v; wall s, CPU s (user + sys, and sys), peak RSS MiB."""
    r = pg.run_as_postgres(["/usr/bin/time", "-v", *cmd], env=env, check=False, timeout=3600)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")
    fields = dict(re.findall(r"^\s*(.+?): (.+)$", r.stderr, re.M))
    wall = fields["Elapsed (wall clock) time (h:mm:ss or m:ss)"].split(":")
    seconds = sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall)))
    user, system = float(fields["User time (seconds)"]), float(fields["System time (seconds)"])
    return {"wall_s": round(seconds, 2), "cpu_s": round(user + system, 2), "sys_s": round(system, 2),
            "rss_mib": round(int(fields["Maximum resident set size (kbytes)"]) / 1024, 1)}


def warm(datadir: Path) -> None:
    subprocess.run(f"tar cf - -C {datadir} . | cat >/dev/null; sync", shell=True, check=True)


def run_repo(kind: str, primary: pg.Cluster, scratch: Path, moto: MotoS3 | None, check: tuple[str, int],
             run: int, compression: str) -> dict:
    repo_env = ({"WALSHIP_REPO": f"file://{pg.make_dir(scratch, f'repo-{kind}-{compression}-{run}', 0o755)}"}
                if kind == "file" else moto.env(moto.new_bucket()))
    repo_env["WALSHIP_COMPRESSION"] = compression
    primary.process_env.update(repo_env)
    primary.stop()
    primary.start()                                   # archive_command now writes into this repository
    env = {**primary.env_for_tools(), **repo_env}
    warm(primary.datadir)
    push = timed([pg.WALSHIP, "backup-push", str(primary.datadir), "--progress", "none"], env)
    [backup] = json.loads(pg.walship(["backup-list", "--json"], env, check=True).stdout)

    restored = pg.Cluster(primary.version, scratch, name=f"restored-{kind}-{compression}-{run}", env=repo_env)
    fetch = timed([pg.WALSHIP, "backup-fetch", str(restored.datadir), "LATEST", "--progress", "none"],
                  pg.server_env(repo_env))
    restored.configure(f"port = {restored.port}\nunix_socket_directories = '{restored.sockdir}'\n"
                       "archive_mode = off\nshared_buffers = 128MB\n")
    started = time.time()
    restored.start()
    while restored.scalar("SELECT pg_is_in_recovery()"):
        time.sleep(0.1)
    recovered = round(time.time() - started, 2)
    rows = restored.scalar(check[0])
    restored.stop("immediate")
    pg.remove_tree(restored.datadir)
    assert rows == check[1], (rows, check)
    return {"repo": kind, "compression": compression, "run": run, "size_mib": round(backup["size"] / 2**20),
            "stored_mib": round(backup["stored_size"] / 2**20, 1), "push": push, "fetch": fetch,
            "start_to_recovery_end_s": recovered}


def load(primary: pg.Cluster, dataset: str, scale: int) -> tuple[str, int]:
    """Fill the database; the query and count that prove a restore complete."""
    if dataset == "pgbench":
        pg.run_as_postgres([str(primary.bin / "pgbench"), "-i", "-q", "-s", str(scale)],
                           env=primary.env_for_tools(), timeout=3600)
        return "SELECT count(*) FROM pgbench_accounts", scale * 100000
    rows = scale * 15 * 2**20 // 8000                  # as many MiB as pgbench's scale (15 MiB per scale)
    with primary.connect() as conn:
        conn.execute("CREATE TABLE noise (id int, payload bytea)")
        conn.execute("ALTER TABLE noise ALTER payload SET STORAGE EXTERNAL")     # no TOAST compression
        with conn.cursor().copy("COPY noise FROM STDIN") as copy:
            for i in range(rows):
                copy.write_row((i, os.urandom(8000)))
        conn.execute("CHECKPOINT")
    return "SELECT count(*) FROM noise", rows


def many_files(directory: Path, count: int) -> None:
    pg.make_dir(directory.parent, directory.name)
    for i in range(count):
        (directory / f"f{i:08d}").write_bytes(b"x" * 1024)
    subprocess.run(["chown", "-R", "postgres:postgres", str(directory)], check=True)


def peer_rows() -> list[str]:
    """The peers' base backup and restore rows of RESULTS.md, as they are."""
    if not PEER_RESULTS.exists():
        return [f"(no {PEER_RESULTS})"]
    rows, section = [], None
    for line in PEER_RESULTS.read_text().splitlines():
        if line.startswith("### "):
            section = line
            if line.startswith(("### 1.", "### 3.")):
                rows.append(line)
        elif section and section.startswith(("### 1.", "### 3.")) and line.startswith("|"):
            rows.append(line)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=int, default=100)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--repos", default="file,s3")
    parser.add_argument("--compression", default="zstd,lz4")
    parser.add_argument("--dataset", choices=["pgbench", "random"], default="pgbench")
    parser.add_argument("--many-files", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()

    logging.getLogger("werkzeug").setLevel(logging.ERROR)          # moto's request log
    scratch = pg.scratch_dir("walship-bench-backup-")
    moto = MotoS3() if "s3" in args.repos else None
    primary = pg.Cluster(15, scratch, name="primary")
    results = []
    try:
        primary.initdb("shared_buffers = 1GB\nmax_wal_size = 2GB\n")
        primary.set_archiving()
        primary.process_env["WALSHIP_REPO"] = f"file://{pg.make_dir(scratch, 'initial-repo', 0o755)}"
        primary.start()
        check = load(primary, args.dataset, args.scale)
        if args.many_files:
            many_files(primary.datadir / "walship_bench_files", args.many_files)
        for run in range(1, args.runs + 1):
            for kind in args.repos.split(","):
                for compression in args.compression.split(","):
                    result = run_repo(kind, primary, scratch, moto, check, run, compression)
                    print(json.dumps(result), flush=True)
                    results.append(result)
    finally:
        primary.stop("immediate")
        if moto:
            moto.stop()
        if not args.keep:
            pg.remove_tree(scratch)

    print("\n### walship (this run)\n")
    print("| repo | compression | data MiB | push wall s | push CPU s | push RSS MiB | stored MiB "
          "| fetch wall s | fetch CPU s | fetch RSS MiB | start→recovery end s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['repo']} | {r['compression']} | {r['size_mib']} | {r['push']['wall_s']} | {r['push']['cpu_s']} "
              f"| {r['push']['rss_mib']} | {r['stored_mib']} | {r['fetch']['wall_s']} | {r['fetch']['cpu_s']} "
              f"| {r['fetch']['rss_mib']} | {r['start_to_recovery_end_s']} |")
    print("\n### peers (../shared/bench/peers/RESULTS.md)\n")
    print("\n".join(peer_rows()))


if __name__ == "__main__":
    main()
