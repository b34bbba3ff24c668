"""Restores as an operator makes them: backup-fetch, then the server started with only a service's environment.

The restored server's environment is pg.server_env() (no WALSHIP_*): everything wal-fetch needs comes
from the restore_command backup-fetch wrote (--repo, and --config when the restore used a config file).
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.support import pg

DIGEST = "SELECT count(*), md5(string_agg(id::text || pad, ',' ORDER BY id)) FROM t"


class Archived:
    """A primary's archive: one base backup, then `segments` completed after it, and the rows they hold."""

    def __init__(self, primary: pg.Cluster, repo: str, segments: list[str], expected: tuple):
        self.primary = primary
        self.repo = repo
        self.segments = segments
        self.expected = expected


def archive_after_backup(cluster_factory, repo: str, batches: int = 5, env: dict | None = None,
                         rows: int = 20000) -> Archived:
    """A PG15 primary archiving into repo; a base backup; `batches` segments of rows after it; stopped.
    rows per segment: 20000 write about a quarter of one, 70000 fill it (as much replay as fetching)."""
    primary = cluster_factory(15, env={"WALSHIP_REPO": repo, **(env or {})})
    primary.initdb()
    primary.set_archiving()
    primary.start()
    primary.sql("CREATE TABLE t (id int PRIMARY KEY, pad text)")
    primary.sql("INSERT INTO t SELECT g, 'before' FROM generate_series(1, 1000) g")
    r = pg.walship(["backup-push", str(primary.datadir), "--progress", "none"], primary.env_for_tools())
    assert r.returncode == 0, r.stderr
    segments = []
    for i in range(batches):
        first = 2000 + i * rows
        primary.sql(f"INSERT INTO t SELECT g, repeat('after', 40) FROM generate_series({first}, {first + rows - 1}) g")
        segments.append(primary.switch_wal())
    primary.wait_archived(segments[-1])
    expected = tuple(primary.sql(DIGEST)[0])
    primary.stop()
    return Archived(primary, repo, segments, expected)


def write_config(path: Path, text: str) -> Path:
    """A config file only the postgres OS user reads, as walship wants one that may hold secrets."""
    path.write_text(text)
    path.chmod(0o600)
    pg.chown_postgres(path)
    return path


def backup_fetch(cluster_factory, name: str, cli_env: dict, *flags: str, version: int = 15) -> pg.Cluster:
    """backup-fetch LATEST into a new cluster's directory, configured to start on its own port, not archiving."""
    restored = cluster_factory(version, name=name)     # the server's environment: no WALSHIP_*
    r = pg.walship(["backup-fetch", str(restored.datadir), "LATEST", "--progress", "none", *flags],
                   pg.server_env(cli_env))
    assert r.returncode == 0, r.stderr
    restored.configure(f"port = {restored.port}\nunix_socket_directories = '{restored.sockdir}'\n"
                       "archive_mode = off\n")
    return restored


def restore_command(restored: pg.Cluster) -> str:
    """The restore_command in force (postgresql.auto.conf: the last line wins)."""
    lines = [ln for ln in (restored.datadir / "postgresql.auto.conf").read_text().splitlines()
             if ln.startswith("restore_command")]
    return lines[-1].split("=", 1)[1].strip()[1:-1].replace("''", "'")


def wait_recovery_stopped(restored: pg.Cluster, timeout: float = 120) -> str:
    """Start the server and wait until it gave up recovery (startup process failed, postmaster gone).

    Fails at once if it promoted instead. Returns the server log."""
    restored.start(wait=False)
    deadline = time.time() + timeout
    while time.time() < deadline:
        log = restored.logfile.read_text(errors="replace")
        if "database system is ready to accept connections" in log or "selected new timeline ID" in log:
            raise AssertionError(f"the server ended recovery and promoted:\n{restored.log_tail(60)}")
        if "due to startup process failure" in log and not (
                restored.datadir / "postmaster.pid").exists():
            return log
        time.sleep(0.2)
    raise TimeoutError(f"recovery neither stopped nor ended in {timeout}s:\n{restored.log_tail(60)}")


def assert_not_promoted(restored: pg.Cluster, repo_dir: Path | None = None) -> None:
    """No new timeline was chosen: no history file in pg_wal (nor in the repository), no server running."""
    assert not list((restored.datadir / "pg_wal").glob("*.history")), "a new timeline was created"
    if repo_dir is not None:
        assert not list((repo_dir / "wal").glob("0000000[2-9].history"))
    assert not (restored.datadir / "postmaster.pid").exists()


def start_and_check_every_row(restored: pg.Cluster, archived: Archived) -> str:
    """Start (again) and recover to the end of the archive: every row the primary had, exactly."""
    if restored.logfile.exists():
        restored.logfile.write_text("")                # this run's log only (the file stays postgres')
    restored.start(wait=False)
    restored.wait_promoted()
    assert tuple(restored.sql(DIGEST)[0]) == archived.expected
    return restored.logfile.read_text(errors="replace")


def from_pg_basebackup(primary: pg.Cluster, cluster_factory, scratch, repo_env: dict) -> pg.Cluster:
    """A pg_basebackup copy set up for archive recovery as a service runs it: the repository is named in
    restore_command (--repo, and --config for the other settings: S3 endpoint, key file), never in the
    server's environment."""
    service_env = {k: v for k, v in repo_env.items() if not k.startswith("WALSHIP_")}   # AWS_* only
    restored = cluster_factory(primary.version, name="restored", env=service_env)
    pg.run_as_postgres([str(primary.bin / "pg_basebackup"), "-h", str(primary.sockdir), "-p", str(primary.port),
                        "-U", "postgres", "-D", str(restored.datadir), "-X", "none", "-c", "fast"],
                       env=primary.env)
    command = f"{pg.WALSHIP} wal-fetch %f %p --repo {repo_env['WALSHIP_REPO']}"
    settings = {k[len("WALSHIP_"):].lower(): v for k, v in repo_env.items()
                if k.startswith("WALSHIP_") and k != "WALSHIP_REPO"}
    if settings:
        config = write_config(scratch / "restore.toml", "".join(f'{k} = "{v}"\n' for k, v in settings.items()))
        command += f" --config {config}"
    restored.configure(
        f"port = {restored.port}\nunix_socket_directories = '{restored.sockdir}'\n"
        "archive_mode = off\n"
        f"restore_command = '{command}'\n")
    (restored.datadir / "recovery.signal").touch()
    pg.chown_postgres(restored.datadir / "recovery.signal")
    assert not any(k.startswith("WALSHIP_") for k in restored.process_env)
    return restored

