"""wal-receive as a service runs it: a background process as the postgres OS user, streamed from a primary."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from tests.support import pg


class Receiver:
    """One `walship wal-receive` process; its log in base/<name>.log."""

    def __init__(self, primary: pg.Cluster, repo_env: dict, spool: Path, *flags: str, name: str = "receive"):
        self.primary = primary
        self.env = pg.server_env({**repo_env, "PGHOST": str(primary.sockdir), "PGPORT": str(primary.port),
                                  "PGUSER": "postgres"})
        self.spool = spool
        self.flags = list(flags)
        self.logfile = primary.base / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Receiver:
        log = open(self.logfile, "a")
        self.proc = subprocess.Popen([pg.WALSHIP, "wal-receive", "--spool", str(self.spool), *self.flags],
                                     env=self.env, stdout=log, stderr=log, cwd="/tmp", **pg.as_postgres())
        log.close()
        return self

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")

    def status(self) -> dict | None:
        try:
            return json.loads((self.spool / "walship-receive.status.json").read_text())
        except (OSError, ValueError):
            return None

    def wait_streaming(self, timeout: float = 60) -> None:
        """Until the primary lists the receiver as a streaming standby."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc is not None and self.proc.poll() is None, f"wal-receive exited:\n{self.log()}"
            if self.primary.scalar("SELECT count(*) FROM pg_stat_replication WHERE application_name = 'walship' "
                                   "AND state = 'streaming'"):
                return
            time.sleep(0.1)
        raise TimeoutError(f"wal-receive is not streaming after {timeout}s:\n{self.log()}")

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.terminate()
        return self.proc.wait(60)


def make_synchronous(primary: pg.Cluster, timeout: float = 60) -> None:
    """synchronous_standby_names = 'walship', and wait until the receiver is the synchronous standby."""
    primary.sql("ALTER SYSTEM SET synchronous_standby_names = 'walship'")
    primary.sql("SELECT pg_reload_conf()")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if primary.scalar("SELECT count(*) FROM pg_stat_replication WHERE application_name = 'walship' "
                          "AND sync_state = 'sync'"):
            return
        time.sleep(0.1)
    raise TimeoutError("wal-receive never became the synchronous standby")


def wait_stored(repo_dir: Path, name: str, timeout: float = 60, receiver: Receiver | None = None) -> None:
    """Until wal/<name> is in a file repository (the receiver's log in the failure)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (repo_dir / "wal" / name).exists():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{name} not stored in {repo_dir} in {timeout}s"
                       + (f"; wal-receive's log:\n{receiver.log()}" if receiver else ""))


class NumberedCommits:
    """A client committing rows 1, 2, 3... one per transaction, recording each commit the server acknowledged
    (with the time it was acknowledged), until its connection breaks."""

    def __init__(self, primary: pg.Cluster):
        self.primary = primary
        self.acknowledged: list[tuple[int, float]] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psycopg
        try:
            with psycopg.connect(self.primary.conninfo, autocommit=True) as conn:
                for number in range(1, 10_000_000):
                    conn.execute("INSERT INTO commits VALUES (%s)", (number,))
                    self.acknowledged.append((number, time.time()))
        except psycopg.Error:
            return                           # the primary was killed: what was acknowledged is recorded

    def start(self) -> NumberedCommits:
        self.thread.start()
        return self

    def wait_for(self, count: int, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while len(self.acknowledged) < count:
            assert time.time() < deadline, f"only {len(self.acknowledged)} commits in {timeout}s"
            assert self.thread.is_alive(), "the client stopped"
            time.sleep(0.05)
