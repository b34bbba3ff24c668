"""bench/archive/replay.py: WAL replay after a restore, walship beside pgBackRest (sync and async archive-get).

One PostgreSQL 15 primary archives to both tools (one archive_command runs both), both take a full backup, then
about REPLAY_MIB MiB of WAL is written (default 256 for a quick run; 2048 for the issue's figure) and the primary
stops. Each round restores the latest backup with each tool in turn, the first tool rotating from round to
round (walship backup-fetch: the restore_command it writes, nothing in the server's environment; pgbackrest
restore, archive-async off and on with a 128 MiB queue) and times the server from start to the end of recovery
(promoted). Prints medians and the ratios.
A fourth run per round measures PostgreSQL's own floor: the walship restore with every segment it will need
already in pg_wal (fetched before the clock starts) and restore_command 'false', so that the server only
reads and redoes local WAL; no archive tool can take the replay below it.

Usage (as root, after scripts/setup): REPLAY_MIB=2048 ROUNDS=3 python3 bench/archive/replay.py
Target (issue 15): walship at most 0.7x pgBackRest async.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # the repository root, for tests.support
from bench.archive.cold import WALSHIP, pgbackrest_conf  # noqa: E402
from tests.support import pg  # noqa: E402


def prepare(base: Path, mib: int) -> tuple[pg.Cluster, str, Path]:
    repo = pg.make_dir(base, "walship-repo", 0o755)
    pgbr_repo = pg.make_dir(base, "pgbr-repo", 0o755)
    primary = pg.Cluster(15, base, name="primary")
    primary.initdb()
    conf = pgbackrest_conf(base, primary, pgbr_repo)
    url = f"file://{repo}"
    primary.set_archiving(command=f"{WALSHIP} wal-push %p --repo {url} && "
                                  f"pgbackrest --config={conf} --stanza=main archive-push %p")
    primary.start()
    env = pg.server_env({"PGHOST": str(primary.sockdir), "PGPORT": str(primary.port)})
    pg.run_as_postgres(["pgbackrest", f"--config={conf}", "--stanza=main", "stanza-create"], env=env)
    primary.sql("CREATE TABLE t (id bigint, pad text)")
    r = pg.walship(["backup-push", str(primary.datadir), "--progress", "none", "--repo", url], primary.env_for_tools())
    assert r.returncode == 0, r.stderr
    pg.run_as_postgres(["pgbackrest", f"--config={conf}", "--stanza=main", "--type=full", "backup"], env=env,
                       timeout=1800)
    rows_per_segment = 70000                       # about 16 MiB of WAL each
    last = ""
    for i in range(max(1, mib // 16)):
        primary.sql(f"INSERT INTO t SELECT g, repeat(md5(g::text), 4) FROM generate_series({i * rows_per_segment}, "
                    f"{(i + 1) * rows_per_segment - 1}) g")
        last = primary.switch_wal()
    primary.wait_archived(last, timeout=1800)
    primary.stop()
    return primary, url, conf


def time_recovery(restored: pg.Cluster) -> float:
    restored.configure(f"port = {restored.port}\nunix_socket_directories = '{restored.sockdir}'\narchive_mode = off\n")
    started = time.perf_counter()
    restored.start(wait=False)
    restored.wait_promoted(timeout=3600)
    elapsed = time.perf_counter() - started
    restored.stop()
    return elapsed


def fetched(base: Path, url: str, name: str) -> pg.Cluster:
    """The latest walship backup restored by backup-fetch, with the restore_command it writes."""
    restored = pg.Cluster(15, base, name=name)
    r = pg.walship(["backup-fetch", str(restored.datadir), "LATEST", "--progress", "none", "--repo", url],
                   pg.server_env())
    assert r.returncode == 0, r.stderr
    return restored


def walship_round(base: Path, url: str, i: int) -> float:
    restored = fetched(base, url, f"ws-{i}")
    try:
        return time_recovery(restored)
    finally:
        shutil.rmtree(restored.datadir, ignore_errors=True)


def floor_round(base: Path, url: str, i: int) -> float:
    restored = fetched(base, url, f"floor-{i}")
    try:
        wal = Path(url.removeprefix("file://")) / "wal"
        for name in sorted(p.name for p in wal.iterdir() if len(p.name) == 24):
            r = pg.walship(["wal-fetch", name, str(restored.datadir / "pg_wal" / name), "--repo", url],
                           pg.server_env())
            assert r.returncode == 0, r.stderr
        pg.chown_postgres(restored.datadir / "pg_wal")
        for path in (restored.datadir / "pg_wal").iterdir():
            pg.chown_postgres(path)
        auto = restored.datadir / "postgresql.auto.conf"
        auto.write_text(auto.read_text() + "restore_command = 'false'\n")
        return time_recovery(restored)
    finally:
        shutil.rmtree(restored.datadir, ignore_errors=True)


def pgbackrest_round(base: Path, conf: Path, i: int, asynchronous: bool) -> float:
    restored = pg.Cluster(15, base, name=f"pgbr-{'async' if asynchronous else 'sync'}-{i}")
    pg.make_dir(base, restored.name)
    if asynchronous:
        # archive-async is a setting of archive-get, read from the config file restore_command names
        text = conf.read_text().replace("[main]", "archive-async=y\narchive-get-queue-max=128MiB\n[main]")
        conf = conf.with_name("pgbackrest-async.conf")
        conf.write_text(text)
        pg.chown_postgres(conf)
    pg.run_as_postgres(["pgbackrest", f"--config={conf}", "--stanza=main", f"--pg1-path={restored.datadir}",
                        "restore"], timeout=1800)
    try:
        return time_recovery(restored)
    finally:
        shutil.rmtree(restored.datadir, ignore_errors=True)


def main() -> int:
    mib = int(os.environ.get("REPLAY_MIB", 256))
    rounds = int(os.environ.get("ROUNDS", 3))
    base = pg.scratch_dir("walship-bench-replay-")
    pg.chown_postgres(base)
    try:
        _primary, url, conf = prepare(base, mib)
        times: dict[str, list[float]] = {"walship": [], "pgBackRest sync": [], "pgBackRest async": [],
                                         "local WAL (floor)": []}
        runs = {"walship": lambda i: walship_round(base, url, i),
                "pgBackRest sync": lambda i: pgbackrest_round(base, conf, i, asynchronous=False),
                "pgBackRest async": lambda i: pgbackrest_round(base, conf, i, asynchronous=True),
                "local WAL (floor)": lambda i: floor_round(base, url, i)}
        tools = list(runs)
        for i in range(rounds):
            # interleaved, and each round begins with the next tool: the first replay after the set-up runs
            # 1-5 s slower, whichever tool it is (the page cache's memory touched for the first time: on this
            # VM the host backs it then), and always giving that run to one tool made walship look slower
            for tool in tools[i % len(tools):] + tools[:i % len(tools)]:
                times[tool].append(runs[tool](i))
        ours = statistics.median(times["walship"])
        print(f"replay of ~{mib} MiB of WAL after a restore, PostgreSQL 15, file repositories, {rounds} rounds")
        for tool, values in times.items():
            med = statistics.median(values)
            print(f"  {tool:<18} median {med:7.2f} s   walship/this {ours / med:5.2f}   runs "
                  + " ".join(f"{v:.2f}" for v in values))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
