"""What an operator meets around the commands: root's cron, logs without a terminal, `walship config`."""

from __future__ import annotations

import json
import os
import pwd
import re
import subprocess

import pytest

from tests.conftest import require_version
from tests.support import pg

PG_VERSION = 15   # none of this depends on the version; one keeps the suite fast


def _primary(cluster_factory, repo) -> pg.Cluster:
    c = cluster_factory(PG_VERSION, env={"WALSHIP_REPO": f"file://{repo}"})
    c.initdb()
    c.set_archiving()
    c.start()
    return c


def _backup_names(env: dict) -> list[str]:
    r = pg.walship(["backup-list", "--json"], env)
    assert r.returncode == 0, r.stderr
    return [b["name"] for b in json.loads(r.stdout)]


def test_a_backup_pushed_by_root_can_be_deleted_by_postgres(cluster_factory, scratch):
    if os.getuid() != 0:
        pytest.skip("needs root: the point is a backup-push run by root")
    require_version(PG_VERSION)
    repo = pg.make_dir(scratch, "repo", 0o755)                  # the archiving user's repository
    c = _primary(cluster_factory, repo)
    for i in range(2):
        c.sql(f"CREATE TABLE t{i} AS SELECT g FROM generate_series(1, 1000) g")
        c.wait_archived(c.switch_wal())
        r = pg.walship(["backup-push", str(c.datadir), "--progress", "none"], c.env_for_tools(), as_pg=False)
        assert r.returncode == 0, r.stderr
    postgres = pwd.getpwnam("postgres")
    foreign = [str(p) for p in repo.rglob("*") if (p.stat().st_uid, p.stat().st_gid) !=
               (postgres.pw_uid, postgres.pw_gid)]
    assert foreign == []
    env = pg.server_env({"WALSHIP_REPO": f"file://{repo}"})
    old, kept = _backup_names(env)
    r = pg.walship(["delete", "--retain", "1"], env)               # as postgres
    assert r.returncode == 0, r.stderr
    assert _backup_names(env) == [kept]
    assert not [p for p in (repo / "backups" / old).rglob("*") if p.is_file()]


def test_without_a_terminal_backup_push_logs_its_progress(cluster_factory, scratch):
    require_version(PG_VERSION)
    repo = pg.make_dir(scratch, "repo", 0o755)
    c = _primary(cluster_factory, repo)
    c.sql("CREATE TABLE filler AS SELECT g, repeat(md5(g::text), 8) AS pad FROM generate_series(1, 50000) g")
    # stderr is a pipe here, as from cron or systemd: --progress auto means lines
    r = pg.walship(["backup-push", str(c.datadir)], c.env_for_tools())
    assert r.returncode == 0, r.stderr
    percents = [int(m) for m in re.findall(r"INFO: backup \S+: (\d+)% of about [\d.]+ MiB, ", r.stderr)]
    assert len(percents) >= 2 and percents == sorted(percents), r.stderr
    assert re.search(r"INFO: backup \S+: [\d.]+ MiB done in \d+:\d\d \(", r.stderr), r.stderr
    r = pg.walship(["backup-push", str(c.datadir), "--progress", "none"], c.env_for_tools())
    assert r.returncode == 0 and "% of about" not in r.stderr


# --- walship config: the credential source, never a value; a closed pipe --------------------

def _config(extra: dict, scratch, *args: str) -> str:
    home = pg.make_dir(scratch, "home", 0o755)
    env = {k: v for k, v in pg.server_env().items() if not k.startswith("AWS_")}
    env.update({"HOME": str(home), "WALSHIP_REPO": "s3://some-bucket/db1",
                # a metadata service that is not there: nothing leaves this machine
                "AWS_METADATA_ENDPOINT": f"http://127.0.0.1:{pg.free_port()}", **extra})
    r = pg.walship(["config", *args], env)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _credentials_line(out: str) -> str:
    return next(line for line in out.splitlines() if line.startswith("s3_credentials "))


def test_config_names_the_credential_source_without_values(scratch):
    out = _config({"AWS_ACCESS_KEY_ID": "AKIAFROMENVIRONMENT", "AWS_SECRET_ACCESS_KEY": "secret-from-env"}, scratch)
    assert "environment (AWS_ACCESS_KEY_ID)" in _credentials_line(out)
    assert "AKIAFROMENVIRONMENT" not in out and "secret-from-env" not in out

    aws = pg.make_dir(scratch / "home", ".aws", 0o700)
    (aws / "credentials").write_text("[default]\naws_access_key_id = AKIAFROMPROFILE\n"
                                     "aws_secret_access_key = secret-from-profile\n")
    pg.chown_postgres(aws / "credentials")
    out = _config({}, scratch)
    assert f"profile default ({aws / 'credentials'})" in _credentials_line(out)
    assert "AKIAFROMPROFILE" not in out and "secret-from-profile" not in out
    (aws / "credentials").unlink()

    assert "web identity" in _credentials_line(_config({"AWS_WEB_IDENTITY_TOKEN_FILE": "/run/token",
                                                        "AWS_ROLE_ARN": "arn:aws:iam::1:role/r"}, scratch))
    assert "container credentials endpoint" in _credentials_line(
        _config({"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/x"}, scratch))
    line = _credentials_line(_config({}, scratch))
    assert "none found (tried AWS_ACCESS_KEY_ID, AWS_WEB_IDENTITY_TOKEN_FILE, profile default" in line
    doc = json.loads(_config({}, scratch, "--json"))
    assert doc["s3_credentials"]["value"].startswith("none found") and doc["repo"]["value"] == "s3://some-bucket/db1"


def test_config_into_a_closed_pipe_exits_quietly(scratch):
    read_end, write_end = os.pipe()
    os.close(read_end)                          # `walship config | head -1` once head has gone
    try:
        r = subprocess.run([pg.WALSHIP, "config"], stdout=write_end, stderr=subprocess.PIPE, text=True,
                           env=pg.server_env({"WALSHIP_REPO": f"file://{scratch}/repo"}), timeout=60,
                           cwd="/tmp", **pg.as_postgres())
    finally:
        os.close(write_end)
    assert r.returncode == 141 and r.stderr == ""
