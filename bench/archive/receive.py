"""bench/archive/receive.py: what wal-receive costs and how fast it keeps up, side by side.

1. Commit latency of a single-row INSERT (autocommit, one client, N commits, median and p95), with
   synchronous_standby_names naming, in turn: nobody (the baseline), a local synchronous standby (a
   pg_basebackup -R copy on the same machine: the cost PostgreSQL's own synchronous replication adds),
   `wal-receive --synchronous` into the file repository, and into S3 (moto's server). The S3 store round
   trip (one PUT of a small object, measured alone) is printed beside, for the target "at most one round
   trip plus 10 ms".
2. Throughput: a bulk INSERT writing about --mib MiB of WAL, with archive_command = wal-push and
   wal-receive (asynchronous) both storing into one file repository; the time from the end of the load until
   each has stored the last segment, and the MiB/s of WAL each kept.

Usage (as root, after scripts/setup): python3 bench/archive/receive.py [--commits 300] [--mib 256]
Runs PostgreSQL 15; everything under one scratch directory, removed at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # the repository root, for tests.support
from tests.support import pg  # noqa: E402
from tests.support.receive import Receiver, make_synchronous  # noqa: E402
from tests.support.s3 import MotoS3  # noqa: E402


def commit_latencies(primary: pg.Cluster, commits: int) -> list[float]:
    import psycopg
    with psycopg.connect(primary.conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_commits (id bigint)")
        times = []
        for number in range(commits):
            started = time.perf_counter()
            conn.execute("INSERT INTO bench_commits VALUES (%s)", (number,))
            times.append((time.perf_counter() - started) * 1000)
    return times


def summary(times: list[float]) -> str:
    ordered = sorted(times)
    return f"median {statistics.median(ordered):6.2f} ms   p95 {ordered[int(len(ordered) * 0.95)]:6.2f} ms"


def s3_round_trip_ms(moto: MotoS3, bucket: str, count: int = 50) -> float:
    client = moto.client()
    times = []
    for i in range(count):
        started = time.perf_counter()
        client.put_object(Bucket=bucket, Key=f"roundtrip/{i}", Body=b"x" * 8192)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def new_primary(base: Path, name: str, env: dict) -> pg.Cluster:
    primary = pg.Cluster(15, base, name=name, env=env)
    primary.initdb()
    return primary


def latency(base: Path, commits: int, moto: MotoS3) -> None:
    print(f"\n## Commit latency, single-row INSERT, {commits} commits (PostgreSQL 15)\n")
    repo_env = {"WALSHIP_REPO": f"file://{pg.make_dir(base, 'repo-lat', 0o755)}"}
    primary = new_primary(base, "lat", repo_env)
    primary.start()
    try:
        rows = [("no synchronous standby", summary(commit_latencies(primary, commits)))]
        standby = pg.Cluster(15, base, name="lat-standby")
        pg.run_as_postgres([str(primary.bin / "pg_basebackup"), "-h", str(primary.sockdir), "-p", str(primary.port),
                            "-U", "postgres", "-D", str(standby.datadir), "-X", "stream", "-c", "fast", "-R"],
                           env=primary.env)
        standby.configure(f"port = {standby.port}\nunix_socket_directories = '{standby.sockdir}'\n"
                          "primary_conninfo = 'host=" + str(primary.sockdir) + f" port={primary.port} user=postgres "
                          "application_name=walship'\n")
        standby.start()
        make_synchronous(primary)
        rows.append(("local synchronous standby (PostgreSQL's own)", summary(commit_latencies(primary, commits))))
        standby.stop("immediate")
        for label, env in (("wal-receive --synchronous, file repository", repo_env),
                           ("wal-receive --synchronous, S3 (moto)", moto.env(moto.new_bucket()))):
            receiver = Receiver(primary, env, pg.make_dir(base, f"spool-{len(rows)}"), "--synchronous",
                                name=f"receive-{len(rows)}").start()
            receiver.wait_streaming()
            make_synchronous(primary)
            rows.append((label, summary(commit_latencies(primary, commits))))
            receiver.stop()
        for label, text in rows:
            print(f"| {label:<48} | {text} |")
        print(f"\nS3 (moto) round trip, one 8 KiB PUT: median {s3_round_trip_ms(moto, moto.new_bucket()):.2f} ms")
    finally:
        primary.stop("immediate")


def throughput(base: Path, mib: int) -> None:
    print(f"\n## Throughput: bulk INSERT of about {mib} MiB of WAL, archive_command and wal-receive together\n")
    repo_dir = pg.make_dir(base, "repo-tp", 0o755)
    repo_env = {"WALSHIP_REPO": f"file://{repo_dir}"}
    primary = new_primary(base, "tp", repo_env)
    primary.set_archiving()
    primary.start()
    receiver = Receiver(primary, repo_env, pg.make_dir(base, "spool-tp"), name="receive-tp").start()
    receiver.wait_streaming()
    try:
        primary.sql("CREATE TABLE bulk (id bigint, pad text)")
        rows = mib * 1024 * 1024 // 250
        started = time.monotonic()
        primary.sql(f"INSERT INTO bulk SELECT g, repeat('x', 200) FROM generate_series(1, {rows}) g")
        last = primary.switch_wal()
        loaded = time.monotonic()
        archived_at = received_at = None
        while archived_at is None or received_at is None:
            now = time.monotonic()
            if archived_at is None and primary.scalar("SELECT last_archived_wal FROM pg_stat_archiver") == last:
                archived_at = now
            if received_at is None and "stored" in receiver.log() and f"{last} stored" in receiver.log():
                received_at = now
            time.sleep(0.05)
        wal_mib = int(last[16:], 16) * 16
        print(f"load: {loaded - started:.1f} s for about {wal_mib} MiB of WAL")
        for label, at in (("archive_command (wal-push)", archived_at), ("wal-receive (asynchronous)", received_at)):
            print(f"| {label:<28} | last segment stored {at - loaded:6.2f} s after the load | "
                  f"{wal_mib / (at - started):6.1f} MiB/s over the run |")
    finally:
        receiver.stop()
        primary.stop("immediate")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=300)
    parser.add_argument("--mib", type=int, default=256)
    args = parser.parse_args()
    import logging
    logging.getLogger("werkzeug").setLevel(logging.ERROR)     # moto's server logs every request otherwise
    base = pg.scratch_dir("walship-bench-receive-")
    moto = MotoS3()
    try:
        latency(base, args.commits, moto)
        throughput(base, args.mib)
    finally:
        moto.stop()
        pg.remove_tree(base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
