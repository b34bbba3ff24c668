"""Backups and restores as an operator runs them: backup-push on the database host, backup-fetch, then the
restored server started with the configuration backup-fetch wrote (only its port and socket changed) and
the environment a service has."""

from __future__ import annotations

import datetime
import json
import subprocess
import time
from pathlib import Path

from tests.support import pg

TABLE_DIGEST = "SELECT count(*), md5(coalesce(string_agg({cols}, ',' ORDER BY {key}), '')) FROM {table}"
STAMPED = "CREATE TABLE stamped (id int PRIMARY KEY, committed_at timestamptz NOT NULL)"


def file_repo(scratch) -> dict:
    return {"WALSHIP_REPO": f"file://{pg.make_dir(scratch, 'repo', 0o755)}"}


def primary(cluster_factory, version: int, repo_env: dict, name: str = "primary") -> pg.Cluster:
    """A cluster archiving into the repository (its service environment holds WALSHIP_REPO)."""
    c = cluster_factory(version, name=name, env=repo_env)
    c.initdb()
    c.set_archiving()
    c.start()
    return c


def service_env(repo_env: dict, with_repo: bool = False) -> dict:
    """What a restored server's service has: the store's endpoint and credentials (as for archive_command),
    and the repository only when asked (restore_command carries --repo)."""
    return {k: v for k, v in repo_env.items() if k != "WALSHIP_REPO" or with_repo}


def cli_env(cluster: pg.Cluster, **extra) -> dict:
    """The environment of backup commands run on the database host (as postgres)."""
    return {**cluster.env_for_tools(), "WALSHIP_BACKUP_CONCURRENCY": "2", **extra}


def backup_push(cluster: pg.Cluster, *flags: str, **env) -> None:
    r = pg.walship(["backup-push", str(cluster.datadir), "--progress", "none", *flags], cli_env(cluster, **env))
    assert r.returncode == 0, r.stderr


def backups(env: dict) -> list[dict]:
    r = pg.walship(["backup-list", "--json"], env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def fetch(dest, backup: str, repo_env: dict, *flags: str, as_root: bool = False) -> subprocess.CompletedProcess:
    return pg.walship(["backup-fetch", str(dest), backup, "--progress", "none", *flags], pg.server_env(repo_env),
                      as_pg=not as_root)


def start_restored(restored: pg.Cluster, promoted: bool = True) -> None:
    """Start with the restored configuration; only the port and socket differ from the backed-up server."""
    assert (restored.datadir / "recovery.signal").exists()
    restored.configure(f"port = {restored.port}\nunix_socket_directories = '{restored.sockdir}'\n")
    restored.start()
    if promoted:
        restored.wait_promoted()


def restore(version: int, cluster_factory, name: str, repo_env: dict, backup: str, *flags: str,
            server_env: dict | None = None, as_root: bool = False) -> pg.Cluster:
    """backup-fetch, then start the restored server until recovery ended."""
    restored = cluster_factory(version, name=name, env=service_env(repo_env) if server_env is None else server_env)
    r = fetch(restored.datadir, backup, repo_env, *flags, as_root=as_root)
    assert r.returncode == 0, r.stderr
    assert oct(restored.datadir.stat().st_mode & 0o777) == "0o700"
    start_restored(restored)
    return restored


class Stamp(tuple):
    """(id, client clock just before the transaction began, client clock once its commit returned)."""

    __slots__ = ()

    @property
    def id(self) -> int:
        return self[0]

    @property
    def before(self) -> datetime.datetime:
        return self[1]

    @property
    def after(self) -> datetime.datetime:
        return self[2]


def stamp_rows(cluster: pg.Cluster, first: int, count: int, table: str = "stamped") -> list[Stamp]:
    """One row per transaction, 30 ms apart, each with the client's clock around its commit."""
    rows = []
    with cluster.connect() as conn:
        for i in range(first, first + count):
            before = datetime.datetime.now(datetime.UTC)
            conn.execute(f"INSERT INTO {table} VALUES (%s, clock_timestamp())", (i,))
            rows.append(Stamp((i, before, datetime.datetime.now(datetime.UTC))))
            time.sleep(0.03)
    return rows


def between(earlier: Stamp, later: Stamp) -> str:
    """A target time after the earlier commit returned and before the later transaction began."""
    assert earlier.after < later.before
    return (earlier.after + (later.before - earlier.after) / 2).isoformat()


def ids(cluster: pg.Cluster, table: str = "stamped") -> list[int]:
    return [r[0] for r in cluster.sql(f"SELECT id FROM {table} ORDER BY id")]


def digest(c: pg.Cluster, table: str, cols: str, key: str) -> tuple:
    return tuple(c.sql(TABLE_DIGEST.format(table=table, cols=cols, key=key))[0])


def archived_wal(repo_env: dict) -> set[str]:
    """The names under wal/ of a file repository."""
    root = Path(repo_env["WALSHIP_REPO"][len("file://"):]) / "wal"
    return {p.name for p in root.iterdir() if not p.name.endswith(".walship-tmp")} if root.exists() else set()


def check_integrity(c: pg.Cluster) -> None:
    """pg_amcheck where the server ships amcheck (the pgserver wheel of 16 does not), pg_checksums when stopped
    where the server's build ships it (the npm builds of 14 and 17 do not; pg_checksums reads only its own major)."""
    if c.scalar("SELECT count(*) FROM pg_available_extensions WHERE name = 'amcheck'"):
        r = pg.run_as_postgres([c.program("pg_amcheck"), "-h", str(c.sockdir), "-p", str(c.port), "-U", "postgres",
                                "--all", "--install-missing", "--heapallindexed"], env=c.env, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
    c.stop()
    if (c.bin / "pg_checksums").exists():
        r = pg.run_as_postgres([str(c.bin / "pg_checksums"), "--check", "-D", str(c.datadir)], env=c.env,
                               check=False)
        assert r.returncode == 0, r.stdout + r.stderr


def repo_keys(repo_env: dict) -> set[str]:
    """Every object of a file repository, as keys (uploads in flight left out)."""
    root = Path(repo_env["WALSHIP_REPO"][len("file://"):])
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.endswith(".walship-tmp")}


def stamped_production(cluster_factory, scratch, before: int = 10, after: int = 10, version: int = 15
                       ) -> tuple[dict, pg.Cluster, list[Stamp]]:
    """A file repository and an archiving primary with `before` stamped rows, a base backup, then `after`
    more rows whose WAL is archived: (the repository's environment, the primary, every row's stamp)."""
    repo_env = file_repo(scratch)
    production = primary(cluster_factory, version, repo_env)
    production.sql(STAMPED)
    rows = stamp_rows(production, 1, before)
    backup_push(production)
    rows += stamp_rows(production, before + 1, after)
    production.wait_archived(production.switch_wal())
    return repo_env, production, rows
