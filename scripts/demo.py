"""walship demo: the whole loop on a throwaway PostgreSQL.

A PostgreSQL 15 cluster archives every WAL segment into a local repository
while pgbench writes to it; a hot base backup is taken; a ledger table gets
rows, then someone deletes them by mistake; walship restores the backup into a
new directory and replays the archive to the moment just before the mistake;
the restored server is started and its ledger compared with what was committed.
Run through scripts/demo (as root it runs PostgreSQL as the postgres user).
"""

from __future__ import annotations

import datetime
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PGBIN = Path("/usr/lib/postgresql/15/bin")
WALSHIP = str(Path(sys.executable).parent / "walship")


def as_postgres() -> dict:
    if os.getuid() != 0:
        return {}
    pw = pwd.getpwnam("postgres")
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def chown(path: Path) -> None:
    if os.getuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(path, pw.pw_uid, pw.pw_gid)


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


class Demo:
    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="walship-demo-", dir="/tmp"))
        os.chmod(self.base, 0o755)
        chown(self.base)
        self.repo = self.base / "repository"
        self.repo.mkdir()
        chown(self.repo)
        self.sock = self.base / "sock"
        self.sock.mkdir()
        chown(self.sock)
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith(("PG", "WALSHIP_"))},
                    "WALSHIP_REPO": f"file://{self.repo}", "HOME": "/tmp", "LC_ALL": "C.UTF-8",
                    "PATH": f"{Path(WALSHIP).parent}:{PGBIN}:/usr/bin:/bin", "PGHOST": str(self.sock),
                    "PGUSER": "postgres", "PGDATABASE": "postgres"}

    def run(self, *cmd: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(list(cmd), env=env or self.env, cwd="/tmp", capture_output=True, text=True,
                           **as_postgres())
        if check and r.returncode != 0:
            raise SystemExit(f"demo: {' '.join(cmd[:3])} failed:\n{r.stdout}{r.stderr}")
        return r

    def psql(self, port: int, sql: str) -> str:
        return self.run(str(PGBIN / "psql"), "-X", "-At", "-p", str(port), "-c", sql).stdout.strip()

    def cluster(self, datadir: Path, port: int, extra: str) -> None:
        with open(datadir / "postgresql.auto.conf", "a") as fh:
            fh.write(f"port = {port}\nlisten_addresses = ''\nunix_socket_directories = '{self.sock}'\n"
                     f"shared_buffers = 64MB\nmax_wal_size = 256MB\n{extra}")

    def start(self, datadir: Path, log: Path) -> None:
        log.touch()
        chown(log)
        self.run(str(PGBIN / "pg_ctl"), "-D", str(datadir), "-l", str(log), "-w", "-t", "120", "start")

    def stop(self, datadir: Path) -> None:
        if (datadir / "postmaster.pid").exists():
            self.run(str(PGBIN / "pg_ctl"), "-D", str(datadir), "-m", "fast", "-w", "stop", check=False)


def main() -> int:
    if not (PGBIN / "postgres").exists():
        raise SystemExit("demo: PostgreSQL 15 is not installed (scripts/setup installs it)")
    d = Demo()
    primary, restored = d.base / "primary", d.base / "restored"
    port, rport = 55432, 55433
    started = time.time()
    try:
        step(f"1. A throwaway PostgreSQL 15 in {primary}, archiving into {d.repo}")
        d.run(str(PGBIN / "initdb"), "-D", str(primary), "-U", "postgres", "--auth=trust", "--data-checksums",
              "--locale=C", "-E", "UTF8")
        d.cluster(primary, port, f"archive_mode = on\narchive_command = '{WALSHIP} wal-push %p'\n")
        d.start(primary, d.base / "primary.log")
        print(f"   archive_command = '{WALSHIP} wal-push %p'")

        step("2. Load: pgbench writes while WAL is archived")
        d.run(str(PGBIN / "pgbench"), "-p", str(port), "-i", "-s", "10", "-q")
        d.psql(port, "CREATE TABLE ledger (id bigserial PRIMARY KEY, amount numeric, "
                     "committed_at timestamptz DEFAULT clock_timestamp())")
        load = subprocess.Popen([str(PGBIN / "pgbench"), "-p", str(port), "-c", "2", "-T", "8", "-n"],
                                env=d.env, cwd="/tmp", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                **as_postgres())

        step("3. A hot base backup while the load runs: walship backup-push")
        t0 = time.time()
        r = d.run(WALSHIP, "backup-push", str(primary), env={**d.env, "PGPORT": str(port)})
        backup_s = time.time() - t0
        print("   " + "\n   ".join(l for l in r.stderr.strip().splitlines()[-2:]))
        load.wait()

        step("4. Business goes on: 500 ledger rows, then a mistake deletes them all")
        for i in range(5):
            d.psql(port, f"INSERT INTO ledger (amount) SELECT g * {i + 1} FROM generate_series(1, 100) g")
            time.sleep(0.05)
        expected = d.psql(port, "SELECT count(*) || ' ' || md5(string_agg(id || ':' || amount, ',' ORDER BY id)) "
                                "FROM ledger")
        last_commit = d.psql(port, "SELECT max(committed_at) FROM ledger")
        time.sleep(0.5)
        target = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
        time.sleep(0.5)
        d.psql(port, "DELETE FROM ledger")
        print(f"   last good commit {last_commit}; recovery target {target}; then DELETE FROM ledger")
        segment = d.psql(port, "SELECT pg_walfile_name(pg_switch_wal())")
        deadline = time.time() + 120
        while d.psql(port, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") < segment:
            if time.time() > deadline:
                raise SystemExit("demo: archiving did not catch up in 120 s")
            time.sleep(0.2)
        archived = d.psql(port, "SELECT archived_count || ' segments, ' || failed_count || ' failures' "
                                "FROM pg_stat_archiver")
        print(f"   archived: {archived}")

        step("5. The backups in the repository: walship backup-list")
        print("   " + "\n   ".join(d.run(WALSHIP, "backup-list").stdout.strip().splitlines()))

        step(f"6. Point-in-time restore into {restored}: walship backup-fetch --target-time")
        t0 = time.time()
        d.run(WALSHIP, "backup-fetch", str(restored), "LATEST", "--target-time", target,
              "--target-action", "promote")
        d.cluster(restored, rport, "archive_mode = off\n")
        d.start(restored, d.base / "restored.log")
        deadline = time.time() + 180
        while d.psql(rport, "SELECT pg_is_in_recovery()") != "f":
            if time.time() > deadline:
                raise SystemExit("demo: recovery did not finish in 180 s; see " + str(d.base / "restored.log"))
            time.sleep(0.2)
        restore_s = time.time() - t0
        got = d.psql(rport, "SELECT count(*) || ' ' || md5(string_agg(id || ':' || amount, ',' ORDER BY id)) "
                            "FROM ledger")
        accounts = d.psql(rport, "SELECT count(*) FROM pgbench_accounts")

        step("Report")
        ok = got == expected
        print(f"   base backup took {backup_s:.1f} s; restore + replay to the target took {restore_s:.1f} s")
        print(f"   ledger committed before the target : {expected}")
        print(f"   ledger in the restored server      : {got}")
        print(f"   pgbench_accounts rows restored     : {accounts}")
        print(f"   {'PASS: the restored data is exactly what was committed before the mistake' if ok else 'FAIL'}")
        kept = os.environ.get("WALSHIP_DEMO_KEEP") == "1"
        print(f"   total {time.time() - started:.0f} s; " + (f"files kept in {d.base}" if kept else
              f"{d.base} is removed now (WALSHIP_DEMO_KEEP=1 keeps it)"))
        return 0 if ok else 1
    finally:
        d.stop(restored)
        d.stop(primary)
        if os.environ.get("WALSHIP_DEMO_KEEP") != "1":
            shutil.rmtree(d.base, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
