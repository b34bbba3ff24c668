"""wal-receive's passive result in a real Icinga 2 (../shared/testenv): OK while streaming, CRITICAL at once when
the server goes away, OK again at once when it is back."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.support import pg
from tests.support.icinga import TESTENV, IcingaApi, icinga_env, start_testenv
from tests.support.receive import Receiver

pytestmark = pytest.mark.integration

RECEIVE = "PostgreSQL WAL streaming (wal-receive)"
OBJECTS = """
object Host "pg-receive" { check_command = "dummy"; check_interval = 1m; address = "127.0.0.1" }
object Service "%s" {
  host_name = "pg-receive"
  enable_passive_checks = true
  enable_active_checks = true
  max_check_attempts = 1
  check_interval = 10m
  check_command = "passive"
}
""" % RECEIVE  # noqa: UP031 (the Icinga DSL is full of braces)


@pytest.fixture(scope="module")
def icinga_receive(tmp_path_factory):
    directory = tmp_path_factory.mktemp("icinga2-receive")
    (directory / "etc" / "conf.d").mkdir(parents=True)
    (directory / "etc" / "conf.d" / "walship-receive-test.conf").write_text(OBJECTS)
    env = start_testenv("icinga2-up.sh", directory)
    shared = pg.scratch_dir("walship-icinga-receive-")
    shutil.copy(env["ICINGA2_CA_CERT"], shared / "ca.crt")    # readable by wal-receive, run as postgres
    os.chmod(shared / "ca.crt", 0o644)
    env["WALSHIP_CA"] = str(shared / "ca.crt")
    yield env
    subprocess.run([str(TESTENV / "icinga2-down.sh"), str(directory)], check=True)
    pg.remove_tree(shared)


def test_wal_receive_reports_streaming_then_the_lost_server_at_once_then_the_recovery(
        icinga_receive, cluster_factory, scratch):
    api = IcingaApi(icinga_receive)
    repo_env = {"WALSHIP_REPO": f"file://{pg.make_dir(scratch, 'repo', 0o755)}"}
    primary = cluster_factory(15, env=repo_env)
    primary.initdb()
    primary.start()
    receiver = Receiver(primary, {**repo_env, **icinga_env(icinga_receive, "pg-receive"),
                                  "WALSHIP_ICINGA_RECEIVE_OK_INTERVAL": "3600"},
                        pg.make_dir(scratch, "spool")).start()
    try:
        receiver.wait_streaming()
        ok = api.wait_for("pg-receive", RECEIVE, lambda r: r["state"] == 0, timeout=30)
        assert ok, (api.result("pg-receive", RECEIVE), receiver.log())
        assert ok["output"].startswith("OK: wal-receive streaming (asynchronous), repository "), ok["output"]
        labels = {p.split("=")[0] for p in ok["performance_data"]}
        assert {"lag_bytes", "spool_bytes"} <= labels

        primary.stop()
        down = api.wait_for("pg-receive", RECEIVE, lambda r: r["state"] == 2, timeout=30)
        assert down, (api.result("pg-receive", RECEIVE), receiver.log())
        assert down["output"].startswith("CRITICAL: wal-receive is not connected to the server: "), down["output"]

        primary.start()        # a change of state: sent at once, not after the 3600 s interval
        back = api.wait_for("pg-receive", RECEIVE, lambda r: r["state"] == 0, timeout=60)
        assert back and back["output"].startswith("OK: wal-receive streaming"), \
            (api.result("pg-receive", RECEIVE), receiver.log())
    finally:
        receiver.stop()
    assert "Traceback" not in receiver.log()
