"""bench/receive/latency.py: the commit latency synchronous wal-receive adds, beside its peer pg_receivewal.

One client commits single-row INSERTs (autocommit) on a PostgreSQL 15 primary whose
synchronous_standby_names is 'walship', naming in turn:
  - nobody (the baseline: synchronous_standby_names empty);
  - pg_receivewal --synchronous (PostgreSQL's own, the peer: it fsyncs into a local directory and reports
    the flush; it cannot wait for an upload, so its WAL is on this host only);
  - wal-receive --synchronous into the file repository (target: median at most 20 ms);
  - wal-receive --synchronous into S3, moto's server over HTTP (target: median at most one S3 round trip,
    an 8 KiB PUT measured alone, plus 10 ms).
Median and p95 of each, the added median against the baseline, and whether each target is met.

Usage (as root, after scripts/setup): venv/bin/python bench/receive/latency.py [--commits 200]
Quick by default (about a minute); scratch under one directory, removed at the end.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # the repository root, for tests.support
from tests.support import pg  # noqa: E402
from tests.support.receive import Receiver, make_synchronous  # noqa: E402
from tests.support.s3 import MotoS3  # noqa: E402

FILE_TARGET_MS = 20.0
S3_SLACK_MS = 10.0


def commit_latencies(primary: pg.Cluster, commits: int) -> list[float]:
    import psycopg
    with psycopg.connect(primary.conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_commits (id bigint)")
        for number in range(20):                                  # warm up: connection, plan, first piece
            conn.execute("INSERT INTO bench_commits VALUES (%s)", (-number,))
        times = []
        for number in range(commits):
            started = time.perf_counter()
            conn.execute("INSERT INTO bench_commits VALUES (%s)", (number,))
            times.append((time.perf_counter() - started) * 1000)
    return times


def figures(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def s3_round_trip_ms(moto: MotoS3, count: int = 50) -> float:
    client, bucket = moto.client(), moto.new_bucket()
    times = []
    for i in range(count):
        started = time.perf_counter()
        client.put_object(Bucket=bucket, Key=f"roundtrip/{i}", Body=b"x" * 8192)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def not_synchronous(primary: pg.Cluster) -> None:
    primary.sql("ALTER SYSTEM SET synchronous_standby_names = ''")
    primary.sql("SELECT pg_reload_conf()")


def with_pg_receivewal(primary: pg.Cluster, base: Path, commits: int) -> list[float] | None:
    program = primary.bin / "pg_receivewal"
    if not program.exists():
        return None
    target = pg.make_dir(base, "pg_receivewal")
    proc = subprocess.Popen([str(program), "-D", str(target), "--synchronous", "--no-loop",
                             "-d", f"host={primary.sockdir} port={primary.port} user=postgres "
                                   "application_name=walship"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **pg.as_postgres())
    try:
        make_synchronous(primary)
        return commit_latencies(primary, commits)
    finally:
        not_synchronous(primary)
        proc.terminate()
        proc.wait(30)


def with_wal_receive(primary: pg.Cluster, base: Path, env: dict, name: str, commits: int) -> list[float]:
    receiver = Receiver(primary, env, pg.make_dir(base, f"spool-{name}"), "--synchronous", name=name).start()
    try:
        receiver.wait_streaming()
        make_synchronous(primary)
        return commit_latencies(primary, commits)
    finally:
        not_synchronous(primary)
        receiver.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=200)
    args = parser.parse_args()
    import logging
    logging.getLogger("werkzeug").setLevel(logging.ERROR)     # moto's server logs every request otherwise
    base = pg.scratch_dir("walship-bench-receive-")
    moto = MotoS3()
    try:
        repo_env = {"WALSHIP_REPO": f"file://{pg.make_dir(base, 'repo', 0o755)}"}
        primary = pg.Cluster(15, base, name="primary", env=repo_env)
        primary.initdb()
        primary.start()
        try:
            rows: list[tuple[str, list[float] | None, float | None]] = []
            rows.append(("no synchronous standby (baseline)", commit_latencies(primary, args.commits), None))
            rows.append(("pg_receivewal --synchronous (peer, local dir)",
                         with_pg_receivewal(primary, base, args.commits), None))
            rows.append(("wal-receive --synchronous, file repository",
                         with_wal_receive(primary, base, repo_env, "file", args.commits), FILE_TARGET_MS))
            round_trip = s3_round_trip_ms(moto)
            rows.append(("wal-receive --synchronous, S3 (moto)",
                         with_wal_receive(primary, base, moto.env(moto.new_bucket()), "s3", args.commits),
                         round_trip + S3_SLACK_MS))
        finally:
            primary.stop("immediate")
    finally:
        moto.stop()
        pg.remove_tree(base)

    baseline = figures(rows[0][1])[0]            # type: ignore[arg-type]
    print(f"\n## Commit latency, single-row INSERT, {args.commits} commits, PostgreSQL 15, one client\n")
    print(f"| {'synchronous_standby_names names':<46} | median ms | p95 ms | added ms | target (median) |")
    print(f"|{'-' * 48}|-----------|--------|----------|-----------------|")
    for label, times, target in rows:
        if times is None:
            print(f"| {label:<46} | {'not installed':>9} |        |          |                 |")
            continue
        median, p95 = figures(times)
        verdict = "" if target is None else f"<= {target:.1f}: {'met' if median <= target else 'MISSED'}"
        print(f"| {label:<46} | {median:9.2f} | {p95:6.2f} | {median - baseline:8.2f} | {verdict:<15} |")
    print(f"\nS3 (moto) round trip, one 8 KiB PUT alone: median {round_trip:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
