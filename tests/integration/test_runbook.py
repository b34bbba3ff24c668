"""docs/restoring.md, run: every shell block of the runbook against a real cluster, as the operator would."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.conftest import require_version
from tests.support import pg, restore

RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "restoring.md"
BLOCK = re.compile(r"<!-- runbook: (?P<name>[\w-]+) -->\n```sh\n(?P<body>.*?)```", re.S)


def _blocks() -> dict[str, str]:
    text = RUNBOOK.read_text()
    found = {m["name"]: m["body"] for m in BLOCK.finditer(text)}
    assert len(found) == text.count("<!-- runbook:"), "a runbook marker without its sh block"
    assert text.count("```sh") == len(found), "an sh block the test does not run: mark it <!-- runbook: NAME -->"
    return found


class _Operator:
    """Runs the runbook's blocks as postgres, with the variables filled in."""

    def __init__(self, cluster: pg.Cluster, variables: dict[str, str]):
        self.blocks = _blocks()
        self.ran: set[str] = set()
        self.path = f"{cluster.bin}:{pg.VENV_BIN}:/usr/bin:/bin"
        self.variables = variables

    def run(self, name: str, env: dict, **variables: str) -> subprocess.CompletedProcess:
        full = {**pg.server_env(env), **self.variables, **variables, "PATH": self.path}
        r = pg.run_as_postgres(["bash", "-euo", "pipefail", "-c", self.blocks[name]], env=full, check=False)
        assert r.returncode == 0, f"runbook block {name} failed:\n{r.stdout}\n{r.stderr}"
        self.ran.add(name)
        return r


def test_the_restore_runbook_works_as_written(cluster_factory, scratch):
    require_version(15)
    repo_env, production, rows = restore.stamped_production(cluster_factory, scratch)

    restores = pg.make_dir(scratch, "restores", 0o755)
    port = str(pg.free_port())
    operator = _Operator(production, {"PORT": port, "PGHOST": str(production.sockdir),
                                      "CHECK_QUERY": "SELECT count(*), max(id) FROM stamped"})
    operator_env = repo_env                              # the operator's shell names the repository
    copy_service = restore.service_env(repo_env)         # a copy's service: no repository of its own
    primary_service = restore.service_env(repo_env, with_repo=True)

    assert all(b["name"] in operator.run("list", operator_env).stdout for b in restore.backups(repo_env))

    # a copy, paused at the target, read-only, then made writable
    copy = str(restores / "copy")
    r = operator.run("copy-fetch", operator_env, PGDATA=copy, TARGET_TIME=restore.between(rows[14], rows[15]))
    assert "restored as a COPY" in r.stdout and "at the target: pause" in r.stdout, r.stdout
    operator.run("start", copy_service, PGDATA=copy)
    operator.run("wait-paused", copy_service, PGDATA=copy)
    assert operator.run("check", copy_service, PGDATA=copy).stdout.strip() == "15|15"
    operator.run("resume", copy_service, PGDATA=copy)
    operator.run("wait-promoted", copy_service, PGDATA=copy)
    assert operator.run("check", copy_service, PGDATA=copy).stdout.strip() == "15|15"
    operator.run("stop", copy_service, PGDATA=copy)

    # production is lost: the new primary, its first backup, and its archiving
    production.kill9()
    new = str(restores / "new_primary")
    r = operator.run("primary-fetch", operator_env, PGDATA=new)
    assert "restored as the NEW PRIMARY" in r.stdout, r.stdout
    operator.run("start", primary_service, PGDATA=new)
    operator.run("wait-promoted", primary_service, PGDATA=new)
    assert operator.run("check", primary_service, PGDATA=new).stdout.strip() == "20|20"
    operator.run("new-backup", operator_env, PGDATA=new)
    assert len(restore.backups(repo_env)) == 2
    assert "00000002.history" in restore.archived_wal(repo_env)
    operator.run("stop", primary_service, PGDATA=new)
    assert operator.ran == set(operator.blocks), f"blocks never run: {set(operator.blocks) - operator.ran}"
