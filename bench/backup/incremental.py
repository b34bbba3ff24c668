"""Incremental backup-push against a full, beside PostgreSQL's own and pgBackRest's, on the same cluster in the
same run.

Usage (as root, from the repository root, after `scripts/setup --test`):

    /opt/walship/venv-<x>/bin/python bench/backup/incremental.py [--scale 10] [--version 18] [--chain 7]
        [--percent 1] [--workload update|pgbench] [--data pgbench|less-compressible] [--pgbackrest]

What it does, on one fresh cluster (file repository, zstd, warm page cache):
  1. pgbench -i -s SCALE (--data less-compressible: pgbench's blank filler made random hex, as
     bench/backup/less_compressible.sh does, then VACUUM FULL), VACUUM (FREEZE) (hint bits set once, as on a
     database in service), CHECKPOINT;
  2. walship backup-push --full (and, with --pgbackrest, pgbackrest --type=full);
  3. CHAIN times: the workload (--workload update: UPDATE PERCENT % of pgbench_accounts in one key range;
     --workload pgbench: 60 s of default pgbench), then backup-push --incremental (on 17+ with summarize_wal
     on, reading only the blocks WAL summaries name) and, with --pgbackrest, pgbackrest --type=incr of the same
     state; on 17+ once more with summarize_wal off (every block read and hashed, as on 14-16);
  4. backup-fetch of the full and of the newest incremental (a chain of CHAIN + 1), each restore started
     and its pgbench_accounts counted; with --pgbackrest, pgbackrest restore of its newest incremental too.
Each command runs under /usr/bin/time -v (wall s, CPU s, peak RSS). With --version 17+ and summarize_wal on,
PostgreSQL's own is measured over the same interval as walship's first incremental (pg_basebackup right after
walship's full, `pg_basebackup --incremental` right after its first incremental), its output compressed with
zstd (-3, the level walship uses) for a fair size. --pgbackrest needs --version 15 (Debian's pgBackRest 2.45
knows 15 at most) and `apt-get install pgbackrest`; 2.45 has only file-level incrementals: a relation segment
file (up to 1 GiB) with any change is stored whole. Both tools archive the same WAL through one
archive_command; pgBackRest runs zst, process-max 2, as ../shared/bench/peers runs it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # the repository root, for tests.support
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import timed, warm  # noqa: E402
from tests.support import pg  # noqa: E402


def _backups(env: dict) -> list[dict]:
    r = pg.walship(["backup-list", "--json"], env)
    return json.loads(r.stdout)


def _update(c: pg.Cluster, round_: int, scale: int, rows: int = 100) -> None:
    first = 1 + (round_ * 7919) % (scale * 100000 - 2 * rows)
    c.sql(f"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid BETWEEN {first} AND {first + rows - 1}")
    c.sql("CHECKPOINT")


def _pgbench_load(c: pg.Cluster, seconds: int = 60) -> None:
    """The (b) workload: default pgbench (TPC-B-like, one client) for a while, then a checkpoint."""
    r = pg.run_as_postgres([c.program("pgbench"), "-h", str(c.sockdir), "-p", str(c.port), "-U", "postgres",
                            "-T", str(seconds), "postgres"], env=c.env, check=False, timeout=seconds + 600)
    assert r.returncode == 0, r.stderr
    c.sql("CHECKPOINT")


def _less_compressible(c: pg.Cluster) -> None:
    c.sql("UPDATE pgbench_accounts SET filler = md5(random()::text) || md5(random()::text) "
          "|| left(md5(random()::text), 20)")
    c.sql("VACUUM FULL pgbench_accounts")


class PgBackRest:
    """pgBackRest 2.45 on the same cluster: posix repository, zst, process-max 2 (../shared/bench/peers' way)."""

    def __init__(self, c: pg.Cluster, scratch: Path):
        # bench/archive/cold.py by its path: "bench" here is bench/backup/bench.py
        import importlib.util
        cold_py = Path(__file__).resolve().parents[1] / "archive" / "cold.py"
        spec = importlib.util.spec_from_file_location("cold", cold_py)
        assert spec is not None and spec.loader is not None
        cold = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(cold)
        pgbackrest_conf = cold.pgbackrest_conf
        self.cluster, self.scratch = c, scratch
        self.conf = pgbackrest_conf(scratch, c, pg.make_dir(scratch, "pgbr-repo", 0o755))
        self.env = pg.server_env({"PGHOST": str(c.sockdir), "PGPORT": str(c.port)})

    def command(self) -> str:
        return f"pgbackrest --config={self.conf} --stanza=main archive-push %p"

    def run(self, *args: str) -> dict:
        return timed(["pgbackrest", f"--config={self.conf}", "--stanza=main", *args], self.env)

    def stanza_create(self) -> None:
        self.run("stanza-create")

    def stored(self) -> list[tuple[str, str, int]]:
        """(label, type, bytes stored) of each backup, oldest first."""
        r = pg.run_as_postgres(["pgbackrest", f"--config={self.conf}", "--stanza=main", "--output=json", "info"],
                               env=self.env)
        [stanza] = json.loads(r.stdout)
        return [(b["label"], b["type"], b["info"]["repository"]["delta"]) for b in stanza["backup"]]

    def restore(self, name: str, scale: int) -> dict:
        restored = pg.Cluster(self.cluster.version, self.scratch, name=name)
        pg.make_dir(self.scratch, name)
        _settle()
        figures = self.run(f"--pg1-path={restored.datadir}", "restore")
        restored.configure(f"port = {restored.port}\nunix_socket_directories = '{restored.sockdir}'\n"
                           "archive_mode = off\n")
        restored.start()
        restored.wait_promoted()
        rows = restored.scalar("SELECT count(*) FROM pgbench_accounts")
        restored.stop()
        assert rows == scale * 100000, rows
        pg.remove_tree(restored.datadir)
        return figures


def _summarize_wal(c: pg.Cluster, on: bool) -> None:
    c.sql(f"ALTER SYSTEM SET summarize_wal = {'on' if on else 'off'}")
    c.sql("SELECT pg_reload_conf()")


def _settle() -> None:
    """Before a timed restore: dirty pages written and the page cache dropped (as root), so that neither run
    pays for the writeback or the reclaim of what came before it."""
    subprocess.run(["sync"], check=True)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        pass
    time.sleep(1)


def _restore(c: pg.Cluster, scratch: Path, name: str, backup: str, repo_env: dict, scale: int) -> dict:
    dest = pg.make_dir(scratch, name)
    dest.rmdir()
    _settle()
    figures = timed([pg.WALSHIP, "backup-fetch", str(dest), backup, "--progress", "none"], pg.server_env(repo_env))
    restored = pg.Cluster(c.version, scratch, name=name, env={k: v for k, v in repo_env.items()})
    restored.configure(f"port = {restored.port}\nunix_socket_directories = '{restored.sockdir}'\n")
    restored.start()
    restored.wait_promoted()
    rows = restored.scalar("SELECT count(*) FROM pgbench_accounts")
    restored.stop()
    assert rows == scale * 100000, rows
    pg.remove_tree(dest)
    return figures


class PostgresIncremental:
    """PostgreSQL's own: pg_basebackup of the state walship's full saw, then --incremental of the state walship's
    first incremental saw (the same interval, so the same changed blocks), its output compressed with zstd -3."""

    def __init__(self, c: pg.Cluster, scratch: Path):
        self.c, self.base, self.incr = c, scratch / "pgb-full", scratch / "pgb-incr"
        self.pgb = c.program("pg_basebackup")
        self.common = ["-h", str(c.sockdir), "-p", str(c.port), "-U", "postgres", "-c", "fast", "-X", "none"]
        self.result: tuple[dict, int] | None = None

    def full(self) -> None:
        pg.run_as_postgres([self.pgb, "-D", str(self.base), *self.common], env=self.c.env)

    def incremental(self) -> None:
        self.c.sql("SELECT pg_switch_wal()")
        time.sleep(2)                                 # the summarizer catches up with the switched segment
        figures = timed([self.pgb, "-D", str(self.incr), "--incremental", str(self.base / "backup_manifest"),
                         *self.common], self.c.env)
        tar = subprocess.run(f"tar -C {self.incr} -cf - . | zstd -3 -T1 -c | wc -c", shell=True,
                             capture_output=True, text=True, check=True)
        self.result = figures, int(tar.stdout.strip())
        pg.remove_tree(self.base)
        pg.remove_tree(self.incr)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--version", type=int, default=18)
    ap.add_argument("--chain", type=int, default=7)
    ap.add_argument("--percent", type=float, default=1.0, help="of pgbench_accounts updated between backups")
    ap.add_argument("--workload", choices=("update", "pgbench"), default="update")
    ap.add_argument("--data", choices=("pgbench", "less-compressible"), default="pgbench")
    ap.add_argument("--pgbackrest", action="store_true", help="pgBackRest full + incr beside (--version 15)")
    ap.add_argument("--restores", type=int, default=2, help="interleaved restores of the full and of the chain")
    args = ap.parse_args()
    if args.pgbackrest and args.version != 15:
        sys.exit("--pgbackrest: Debian's pgBackRest 2.45 backs up PostgreSQL 15 at most; add --version 15")
    scratch = pg.scratch_dir("walship-bench-incr-")
    repo = pg.make_dir(scratch, "repo", 0o755)
    repo_env = {"WALSHIP_REPO": f"file://{repo}"}
    c = pg.Cluster(args.version, scratch, env=repo_env)
    c.initdb("summarize_wal = on\n" if args.version >= 17 else "")
    pgbr = PgBackRest(c, scratch) if args.pgbackrest else None
    if pgbr is not None:
        c.set_archiving(command=f"{pg.WALSHIP} wal-push %p --repo file://{repo} && {pgbr.command()}")
    else:
        c.set_archiving()
    c.start()
    try:
        r = pg.run_as_postgres([c.program("pgbench"), "-h", str(c.sockdir), "-p", str(c.port), "-U", "postgres",
                                "-i", "-q", "-s", str(args.scale), "postgres"], env=c.env, check=False)
        assert r.returncode == 0, r.stderr
        if args.data == "less-compressible":
            _less_compressible(c)
        c.sql("VACUUM (FREEZE)")
        c.sql("CHECKPOINT")
        # the set-up's WAL (gigabytes for less-compressible data) archived first: a backup's end waits for its
        # last segment to be archived, behind that backlog (timed first, walship's full took
        # 98 s with 20 s of CPU there, pgBackRest's right after it 14.6 s)
        c.wait_archived(c.switch_wal(), timeout=3600)
        env = {**c.env_for_tools(), "WALSHIP_BACKUP_CONCURRENCY": "2"}
        push = [pg.WALSHIP, "backup-push", str(c.datadir), "--progress", "none"]
        rows = max(1, int(args.scale * 100000 * args.percent / 100))

        def workload(i: int) -> None:
            if args.workload == "update":
                _update(c, i, args.scale, rows)
            else:
                _pgbench_load(c)

        if pgbr is not None:
            pgbr.stanza_create()
        warm(c.datadir)
        full_run = timed([*push, "--full"], env)
        own = PostgresIncremental(c, scratch) if args.version >= 17 else None
        if own is not None:
            own.full()
        theirs_runs = []
        if pgbr is not None:
            warm(c.datadir)
            theirs_runs.append(pgbr.run("--type=full", "backup"))
        runs = []
        for i in range(args.chain):
            workload(i)
            warm(c.datadir)
            runs.append(timed([*push, "--incremental"], env))
            if own is not None and i == 0:
                own.incremental()
            if pgbr is not None:
                warm(c.datadir)
                theirs_runs.append(pgbr.run("--type=incr", "backup"))
        unsummarized = None
        if args.version >= 17:
            _summarize_wal(c, False)
            workload(args.chain)
            warm(c.datadir)
            unsummarized = timed([*push, "--incremental"], env)
            _summarize_wal(c, True)
        c.sql("CREATE TABLE after_the_backups ()")
        c.wait_archived(c.switch_wal())
        listed = _backups(env)
        full, incrs = listed[0], listed[1:args.chain + 1]
        off = listed[args.chain + 1] if unsummarized else None
        fulls, chains = [], []
        for i in range(args.restores):          # interleaved: the same noise for both
            fulls.append(_restore(c, scratch, f"restored-full-{i}", full["name"], repo_env, args.scale))
            chains.append(_restore(c, scratch, f"restored-chain-{i}", listed[-1]["name"], repo_env, args.scale))
        restore_full = min(fulls, key=lambda f: f["wall_s"])
        restore_chain = min(chains, key=lambda f: f["wall_s"])
        pgbr_restore = pgbr.restore("pgbr-restored", args.scale) if pgbr is not None else None
        pgbr_stored = pgbr.stored() if pgbr is not None else []
        theirs = own.result if own is not None else None
    finally:
        c.stop()
    first = runs[0]
    what = (f"{rows:,} rows ({args.percent:g} %) of pgbench_accounts updated in one key range"
            if args.workload == "update" else "60 s of default pgbench")
    print(f"\npgbench scale {args.scale} ({args.data}), PostgreSQL {args.version}, {what} between backups "
          "(file repository, zstd)\n")
    print(f"{'':44} {'wall s':>8} {'CPU s':>7} {'RSS MiB':>8} {'stored':>12}")
    print(f"{'walship full':44} {full_run['wall_s']:8.2f} {full_run['cpu_s']:7.2f} {full_run['rss_mib']:8.1f} "
          f"{full['stored_size']:12,}")
    print(f"{'walship incremental (first)':44} {first['wall_s']:8.2f} {first['cpu_s']:7.2f} {first['rss_mib']:8.1f} "
          f"{incrs[0]['stored_size']:12,}")
    print(f"{f'walship incremental (#{len(runs)})':44} {runs[-1]['wall_s']:8.2f} {runs[-1]['cpu_s']:7.2f} "
          f"{runs[-1]['rss_mib']:8.1f} {incrs[-1]['stored_size']:12,}")
    if unsummarized and off:
        print(f"{'walship incremental, summarize_wal off':44} {unsummarized['wall_s']:8.2f} "
              f"{unsummarized['cpu_s']:7.2f} {unsummarized['rss_mib']:8.1f} {off['stored_size']:12,}")
    if pgbr_stored:
        for label, (fig, (_, _kind, size)) in (("pgBackRest full", (theirs_runs[0], pgbr_stored[0])),
                                              ("pgBackRest incr (first, file-level)", (theirs_runs[1], pgbr_stored[1])),
                                              (f"pgBackRest incr (#{len(theirs_runs) - 1}, file-level)",
                                               (theirs_runs[-1], pgbr_stored[-1]))):
            print(f"{label:44} {fig['wall_s']:8.2f} {fig['cpu_s']:7.2f} {fig['rss_mib']:8.1f} {size:12,}")
    if theirs:
        fig, size = theirs
        print(f"{'pg_basebackup --incremental, tar | zstd -3':44} {fig['wall_s']:8.2f} {fig['cpu_s']:7.2f} "
              f"{fig['rss_mib']:8.1f} {size:12,}")
    print(f"{'walship restore of the full (best of the restores)':44} {restore_full['wall_s']:8.2f} {restore_full['cpu_s']:7.2f} "
          f"{restore_full['rss_mib']:8.1f}")
    print("restores, run by run (full / chain): " + ", ".join(f"{a['wall_s']:.2f} / {b['wall_s']:.2f} s"
                                                           for a, b in zip(fulls, chains)))
    print(f"{f'walship restore of a chain of {len(listed)} (best of the restores)':44} {restore_chain['wall_s']:8.2f} "
          f"{restore_chain['cpu_s']:7.2f} {restore_chain['rss_mib']:8.1f}")
    if pgbr_restore is not None:
        print(f"{f'pgBackRest restore of its incr #{len(theirs_runs) - 1}':44} {pgbr_restore['wall_s']:8.2f} "
              f"{pgbr_restore['cpu_s']:7.2f} {pgbr_restore['rss_mib']:8.1f}")
    for label, b in (("first incremental", incrs[0]), ("summarize_wal off", off)):
        if b and b.get("blocks_held"):
            print(f"{label}: read {b['blocks_read']:,} of {b['blocks_held']:,} relation blocks "
                  f"({'WAL summaries' if b.get('wal_summaries') else 'whole files'})")
    if unsummarized:
        print(f"incremental push time with summarize_wal off: {unsummarized['wall_s'] / full_run['wall_s']:.2f}x "
              "the full's")
    chain_ratio = restore_chain["wall_s"] / restore_full["wall_s"]
    pair_ratios = sorted(b["wall_s"] / a["wall_s"] for a, b in zip(fulls, chains))
    print(f"chain restore / full restore, pair by pair: {', '.join(f'{r:.2f}' for r in pair_ratios)} "
          f"(median {statistics.median(pair_ratios):.2f})")
    print(f"\nratios: incremental push time {first['wall_s'] / full_run['wall_s']:.2f}x the full's, stored "
          f"{incrs[0]['stored_size'] / full['stored_size']:.3f}x (mean of the chain "
          f"{sum(b['stored_size'] for b in incrs) / len(incrs) / full['stored_size']:.3f}x); "
          f"chain restore {chain_ratio:.2f}x")
    if theirs:
        print(f"stored by the first incremental against pg_basebackup --incremental | zstd: "
              f"{incrs[0]['stored_size'] / theirs[1]:.2f}x")
    pg.remove_tree(scratch)


if __name__ == "__main__":
    main()
