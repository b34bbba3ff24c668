"""Monitoring against the real things: Icinga 2's API, rsyslogd, PostgreSQL 15, S3 (moto) and file repositories.

Icinga 2 and rsyslogd come from ../shared/testenv (session fixtures, stopped at
the end). Each test reports as its own Icinga host object, so one test's
results and freshness runs never disturb another's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
from pathlib import Path

import pytest

from tests.support import pg
from tests.support.icinga import TESTENV, IcingaApi, icinga_env, start_testenv, wait_until
from tests.support.s3 import SwitchableProxy
from tests.support.walfiles import segment_bytes

CONTRIB_ICINGA = Path(__file__).parents[2] / "contrib" / "icinga2" / "walship.conf"
ARCHIVE = "PostgreSQL WAL archiving to S3"
BACKUP = "PostgreSQL base backup push"
RECEIVE = "PostgreSQL WAL streaming (wal-receive)"   # wal-receive's default service name
STALE_AFTER_S = 4
PG_VERSION = 15   # the checks do not depend on the version; one keeps the suite fast

# Our own hosts, each with walship's two services under its default names. pg-stale's
# services go stale after STALE_AFTER_S; the others' not within a test's lifetime.
TEST_OBJECTS = """
template Host "walship-test-host" { check_command = "dummy"; check_interval = 1m; address = "127.0.0.1" }
object Host "pg-archive" { import "walship-test-host"; vars.walship_test = true; vars.stale_after = 10m }
object Host "pg-backup"  { import "walship-test-host"; vars.walship_test = true; vars.stale_after = 10m }
object Host "pg-stale"   { import "walship-test-host"; vars.walship_test = true; vars.stale_after = %ds }
/* the shipped contrib/icinga2/walship.conf is loaded too; this host gets its services */
object Host "pg-contrib" { import "walship-test-host"; vars.walship = true; vars.walship_receive = true }
object Host "pg-contrib-archiving-only" { import "walship-test-host"; vars.walship = true }

apply Service "%s" {
  enable_passive_checks = true
  enable_active_checks = true
  max_check_attempts = 1
  check_interval = host.vars.stale_after
  retry_interval = host.vars.stale_after
  check_command = "dummy"
  vars.dummy_state = 2
  vars.dummy_text = "CRITICAL: no result from walship wal-push"
  assign where host.vars.walship_test == true
}
apply Service "%s" {
  enable_passive_checks = true
  enable_active_checks = true
  max_check_attempts = 1
  check_interval = host.vars.stale_after
  retry_interval = host.vars.stale_after
  check_command = "passive"
  assign where host.vars.walship_test == true
}
""" % (STALE_AFTER_S, ARCHIVE, BACKUP)  # noqa: UP031 (the Icinga DSL is full of braces)


# --- daemons ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def icinga(tmp_path_factory):
    directory = tmp_path_factory.mktemp("icinga2")
    (directory / "etc" / "conf.d").mkdir(parents=True)
    (directory / "etc" / "conf.d" / "walship-test.conf").write_text(TEST_OBJECTS)
    shutil.copy(CONTRIB_ICINGA, directory / "etc" / "conf.d" / "walship-contrib.conf")
    env = start_testenv("icinga2-up.sh", directory)
    # archive_command runs as postgres: give it a CA file it can read
    shared = pg.scratch_dir("walship-icinga-")
    shutil.copy(env["ICINGA2_CA_CERT"], shared / "ca.crt")
    os.chmod(shared / "ca.crt", 0o644)
    env["WALSHIP_CA"] = str(shared / "ca.crt")
    yield env
    subprocess.run([str(TESTENV / "icinga2-down.sh"), str(directory)], check=True)
    pg.remove_tree(shared)


@pytest.fixture(scope="session")
def rsyslog(tmp_path_factory):
    directory = tmp_path_factory.mktemp("rsyslog")
    env = start_testenv("rsyslog-up.sh", directory)
    yield env
    subprocess.run([str(TESTENV / "rsyslog-down.sh"), str(directory)], check=True)


def fake_wal_dir(parent: Path, names: list[str]) -> Path:
    """A pg_wal-like directory with .ready segments, owned by postgres."""
    wal = pg.make_dir(parent, "pg_wal", 0o755)
    pg.make_dir(wal, "archive_status", 0o755)
    for n in names:
        (wal / n).write_bytes(segment_bytes(n, 1 << 16))
        (wal / "archive_status" / f"{n}.ready").touch()
    for p in wal.rglob("*"):
        pg.chown_postgres(p)
    return wal


QUICK_S3 = {"WALSHIP_S3_MAX_RETRIES": "0", "WALSHIP_S3_RETRY_TIMEOUT": "1", "WALSHIP_S3_CONNECT_TIMEOUT": "2"}


def backup_push(cluster: pg.Cluster) -> subprocess.CompletedProcess:
    return pg.walship(["backup-push", str(cluster.datadir), "--progress", "none"], cluster.env_for_tools())


def next_segment(cluster) -> str:
    """Write something and switch: pg_switch_wal() on an empty segment does not switch."""
    cluster.sql("CREATE TABLE IF NOT EXISTS filler (x int); INSERT INTO filler VALUES (1)")
    return cluster.switch_wal()


# --- passive results -------------------------------------------------------------------

def test_wal_push_results_arrive_in_icinga_rate_limited_and_failures_at_once(icinga, cluster_factory, moto, scratch):
    api = IcingaApi(icinga)
    proxy = SwitchableProxy(moto.port)
    bucket = moto.new_bucket()
    metrics_file = scratch / "walship.prom"
    env = {**moto.env(bucket, endpoint=proxy.endpoint), **icinga_env(icinga, "pg-archive"),
           "WALSHIP_ICINGA_ARCHIVE_OK_INTERVAL": "3600", "WALSHIP_METRICS_FILE": str(metrics_file), **QUICK_S3}
    c = cluster_factory(PG_VERSION, env=env)
    c.initdb()
    c.set_archiving()
    c.start()
    try:
        first = next_segment(c)
        c.wait_archived(first)
        ok = api.wait_for("pg-archive", ARCHIVE, lambda r: r["state"] == 0)
        assert ok, api.result("pg-archive", ARCHIVE)
        assert ok["output"].startswith(f"OK: archived {first}")
        labels = {p.split("=")[0] for p in ok["performance_data"]}
        assert labels == {"duration", "bytes", "segments", "backlog"}
        assert "segments=1;;;0" in ok["performance_data"]

        # within the interval a success sends nothing: Icinga still shows the first one
        second = next_segment(c)
        c.wait_archived(second)
        assert api.result("pg-archive", ARCHIVE)["output"] == ok["output"]

        proxy.down()
        failing = next_segment(c)
        bad = api.wait_for("pg-archive", ARCHIVE, lambda r: r["state"] == 2, timeout=30)
        assert bad, (api.result("pg-archive", ARCHIVE), c.log_tail())
        assert bad["output"].startswith(f"CRITICAL: wal-push {failing} failed: ")
        assert any(p.startswith("backlog=") for p in bad["performance_data"])
        assert 'walship_archive_failures_total' in metrics_file.read_text()

        # the recovery is reported at once, not after the interval
        proxy.up()
        next_segment(c)
        back = api.wait_for("pg-archive", ARCHIVE, lambda r: r["state"] == 0, timeout=90)
        assert back and back["output"].startswith("OK: archived "), api.result("pg-archive", ARCHIVE)
    finally:
        proxy.close()
    assert c.sql("SELECT failed_count > 0 FROM pg_stat_archiver")[0][0]
    assert 'walship_last_archived_info{segment="' in metrics_file.read_text()


def test_missing_archive_result_turns_the_service_stale(icinga, scratch):
    api = IcingaApi(icinga)
    name = "000000010000000000000001"
    wal = fake_wal_dir(scratch, [name])
    repo = pg.make_dir(scratch, "repo", 0o755)
    env = pg.server_env({"WALSHIP_REPO": f"file://{repo}", **icinga_env(icinga, "pg-stale")})
    r = pg.walship(["wal-push", str(wal / name)], env)
    assert r.returncode == 0, r.stderr
    fresh = api.wait_for("pg-stale", ARCHIVE, lambda r: r["state"] == 0 and not r["active"], timeout=5)
    assert fresh and fresh["output"].startswith(f"OK: archived {name}")
    t0 = time.monotonic()
    stale = api.wait_for("pg-stale", ARCHIVE, lambda r: r["state"] == 2, timeout=STALE_AFTER_S + 10)
    assert stale, api.result("pg-stale", ARCHIVE)
    assert time.monotonic() - t0 >= STALE_AFTER_S - 2
    assert stale["active"] is True and stale["output"] == "CRITICAL: no result from walship wal-push"


def test_backup_push_results_arrive_in_icinga(icinga, cluster_factory, moto, scratch):
    api = IcingaApi(icinga)
    proxy = SwitchableProxy(moto.port)
    env = {**moto.env(moto.new_bucket(), endpoint=proxy.endpoint), **icinga_env(icinga, "pg-backup"),
           "WALSHIP_METRICS_FILE": str(scratch / "walship.prom"), **QUICK_S3}
    c = cluster_factory(PG_VERSION, env=env)
    c.initdb()
    c.set_archiving()
    c.start()
    try:
        r = backup_push(c)
        assert r.returncode == 0, r.stderr
        ok = api.wait_for("pg-backup", BACKUP, lambda r: r["state"] == 0, timeout=5)
        assert ok and ok["output"].startswith("OK: base backup base_"), api.result("pg-backup", BACKUP)
        # bad_pages: the cluster has data checksums, so backup-push verified every page (none bad)
        assert [p.split("=")[0] for p in ok["performance_data"]] == ["duration", "size", "stored", "bad_pages"]
        assert "walship_last_backup_success_timestamp_seconds" in (scratch / "walship.prom").read_text()

        proxy.down()
        r = backup_push(c)
        assert r.returncode == 3, r.stderr
        bad = api.wait_for("pg-backup", BACKUP, lambda r: r["state"] == 2, timeout=5)
        assert bad, api.result("pg-backup", BACKUP)
        assert bad["output"].startswith("CRITICAL: base backup failed after ")
        assert "S3" in bad["output"] and "\n" not in bad["output"]
    finally:
        proxy.close()


def test_shipped_icinga_config_loads_and_applies_its_services_where_asked(icinga):
    api = IcingaApi(icinga)
    assert api.service("pg-contrib", ARCHIVE)["check_interval"] == 3600
    assert api.service("pg-contrib", BACKUP)["check_interval"] == 26 * 3600
    assert api.service("pg-contrib", RECEIVE)["check_interval"] == 15 * 60
    # wal-receive is optional: a host without vars.walship_receive gets no service that would go stale
    assert api.service("pg-contrib-archiving-only", ARCHIVE)["check_interval"] == 3600
    with pytest.raises(urllib.error.HTTPError) as missing:
        api.service("pg-contrib-archiving-only", RECEIVE)
    assert missing.value.code == 404


@pytest.mark.parametrize("change,warning", [
    ({"WALSHIP_ICINGA_HOST": "no-such-host"},
     "Icinga has no service 'PostgreSQL WAL archiving to S3' on host 'no-such-host'; define it"),
    ({"WALSHIP_ICINGA_PASSWORD": "wrong"}, "refused user 'test' (HTTP 401)"),
    ({"WALSHIP_ICINGA_CA": ""}, "TLS certificate not trusted"),
], ids=["unknown-host", "bad-password", "untrusted-ca"])
def test_a_failure_to_report_is_a_warning_and_the_archive_still_succeeds(icinga, scratch, change, warning):
    name = "000000010000000000000001"
    wal = fake_wal_dir(scratch, [name])
    repo = pg.make_dir(scratch, "repo", 0o755)
    env = pg.server_env({"WALSHIP_REPO": f"file://{repo}", **icinga_env(icinga, "pg-archive"), **change})
    r = pg.walship(["wal-push", str(wal / name)], env)
    assert r.returncode == 0, r.stderr
    assert "walship wal-push: WARNING: could not report to icinga: " in r.stderr and warning in r.stderr, r.stderr
    assert (repo / "wal" / name).exists()


@pytest.fixture
def nsca_daemon(scratch):
    """A real nsca daemon on a free port, writing results into a plain file (append_to_file)."""
    if not shutil.which("nsca", path="/usr/sbin:/usr/bin") or not shutil.which("send_nsca", path="/usr/sbin:/usr/bin"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "nsca", "nsca-client"],
                       check=True, capture_output=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    port = pg.free_port()
    results = scratch / "nsca-results.cmd"
    results.touch()                # nsca writes to its dump file when command_file does not exist
    config = scratch / "nsca.cfg"
    config.write_text(f"pid_file={scratch}/nsca.pid\nserver_port={port}\nserver_address=127.0.0.1\n"
                      f"command_file={results}\nalternate_dump_file={scratch}/nsca-dump\nappend_to_file=1\n"
                      "aggregate_writes=0\nmax_packet_age=30\npassword=s3cret\ndecryption_method=1\n")
    subprocess.run(["/usr/sbin/nsca", "-c", str(config), "--daemon"], check=True)
    pid = int(wait_until(lambda: (scratch / "nsca.pid").exists() and (scratch / "nsca.pid").read_text().strip(), 5))
    yield port, results
    os.kill(pid, 15)


def test_nsca_results_reach_a_real_nsca_daemon(nsca_daemon, scratch):
    port, results = nsca_daemon
    name = "000000010000000000000001"
    wal = fake_wal_dir(scratch, [name])
    repo = pg.make_dir(scratch, "repo", 0o755)
    env = pg.server_env({"WALSHIP_REPO": f"file://{repo}", "WALSHIP_NSCA_HOST": "127.0.0.1",
                         "WALSHIP_NSCA_PORT": str(port), "WALSHIP_NSCA_PASSWORD": "s3cret",
                         "WALSHIP_ICINGA_HOST": "db1", "WALSHIP_ICINGA_ARCHIVE_OK_INTERVAL": "0"})
    r = pg.walship(["wal-push", str(wal / name)], env)
    assert r.returncode == 0 and "WARNING" not in r.stderr, r.stderr
    line = wait_until(lambda: results.read_text().strip(), 5)
    assert line, "nsca wrote no result"
    _, _, command = line.partition("] ")
    fields = command.split(";")
    assert fields[:4] == ["PROCESS_SERVICE_CHECK_RESULT", "db1", ARCHIVE, "0"]
    output, _, perfdata = ";".join(fields[4:]).partition(" | ")
    assert output.startswith(f"OK: archived {name}: 64.0 KiB in ")
    assert perfdata.split(" ")[2:] == ["segments=1;;;0", "backlog=0;;;0"]


# --- syslog ----------------------------------------------------------------------------

def _syslog_address(rsyslog: dict, transport: str) -> str:
    if transport == "unix":
        return rsyslog["RSYSLOG_SOCKET"]
    return f"{transport}://{rsyslog['RSYSLOG_HOST']}:{rsyslog['RSYSLOG_PORT']}"


# "Mmm dd hh:mm:ss host tag: msg": RFC 3164 pads a one-digit day with a space ("Dec  2"), so the
# header is parsed by its fields, not split on single spaces.
_RFC3164_HEADER = re.compile(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d (?P<host>\S+) (?P<tag>\S+)")


def _events(rsyslog: dict, program: str) -> list[dict]:
    try:
        with open(rsyslog["RSYSLOG_JSON_LOG"]) as fh:
            lines = [line for line in fh if line.endswith("\n")]   # rsyslogd may be mid-write
    except FileNotFoundError:
        return []
    return [e for e in map(json.loads, lines) if e["@fields"]["syslog_program"] == program]


@pytest.mark.parametrize("transport", ["unix", "udp", "tcp"])
def test_syslog_lines_arrive_under_the_configured_program_name(rsyslog, scratch, transport):
    program = f"wal-e_postgres_archiving_wrapper-{transport}"
    names = ["000000010000000000000001", "000000010000000000000002"]
    wal = fake_wal_dir(scratch, names)
    repo = pg.make_dir(scratch, "repo", 0o755)
    env = pg.server_env({"WALSHIP_REPO": f"file://{repo}", "WALSHIP_LOG_DESTINATION": "syslog",
                         "WALSHIP_LOG_FORMAT": "json", "WALSHIP_SYSLOG_PROGRAM": program,
                         "WALSHIP_SYSLOG_ADDRESS": _syslog_address(rsyslog, transport),
                         "WALSHIP_PUSH_BATCH": "1"})
    # as root: the test rsyslogd's socket lives in a directory postgres cannot enter
    assert pg.walship(["wal-push", str(wal / names[0])], env, as_pg=False).returncode == 0
    (wal / names[1]).unlink()      # the next push fails: its file is gone
    failed = pg.walship(["wal-push", str(wal / names[1])], env, as_pg=False)
    assert failed.returncode == 1 and failed.stderr == ""   # everything went to syslog

    events = wait_until(lambda: (lambda e: e if len(e) >= 2 else None)(_events(rsyslog, program)), 10)
    assert events, f"nothing from {program} in {rsyslog['RSYSLOG_JSON_LOG']}"
    pushed = json.loads(next(e["message"] for e in events if '"wal_pushed"' in e["message"]))
    assert pushed["event"] == "wal_pushed" and pushed["segment"] == names[0]
    assert pushed["bytes"] == 1 << 16 and pushed["duration_s"] >= 0 and pushed["program"] == program
    error = next(e for e in events if e["@fields"]["syslog_severity"] == "err")
    assert json.loads(error["message"])["error"]
    header = _RFC3164_HEADER.match(error["@message"])
    assert header, error["@message"]
    assert header["tag"] == program + ":"


# --- plugin checks and status on real clusters and repositories -------------------------

def check(c: pg.Cluster, *args: str, env: dict | None = None) -> tuple[int, str]:
    """`walship ARGS` as postgres on the database host, like an Icinga agent's check; (exit code, stdout)."""
    r = pg.walship(list(args), {**c.env_for_tools(), **(env or {})})
    assert r.stdout.count("\n") == 1 or args[0] == "status", r.stdout   # a plugin prints one line
    return r.returncode, r.stdout


def test_backup_and_archive_checks_from_missing_to_fresh_to_old_and_a_gap(cluster_factory, scratch):
    repo = pg.make_dir(scratch, "repo", 0o755)
    c = cluster_factory(PG_VERSION, env={"WALSHIP_REPO": f"file://{repo}"})
    c.initdb()
    c.set_archiving()
    c.start()

    code, out = check(c, "check", "backup")
    assert code == 2 and out.startswith(f"CRITICAL: no complete base backup in file://{repo} |"), out

    assert backup_push(c).returncode == 0
    backup = json.loads(pg.walship(["backup-list", "--json"], c.env_for_tools()).stdout)[-1]
    code, out = check(c, "check", "backup", "--warning", "26h", "--critical", "2d")
    assert code == 0 and out.startswith(f"OK: newest base backup {backup['name']} finished "), out
    assert "age=" in out and f"size={backup['size']}B" in out and "backups=1;;;0" in out
    time.sleep(2.1)
    code, out = check(c, "check", "backup", "--warning", "1s", "--critical", "1h")
    assert code == 1 and out.startswith(f"WARNING: newest base backup {backup['name']} finished "), out
    code, out = check(c, "check", "backup", "--warning", "1s", "--critical", "2s")
    assert code == 2 and "(critical at 2s)" in out, out
    code, out = check(c, "check", "backup", "--warning", "2 days")
    assert (code, out.strip()) == (3, "UNKNOWN: '2 days' is not an age; use a number with s, m, h, d or w "
                                      "(e.g. 90m, 26h, 2d)")

    after = [next_segment(c) for _ in range(3)]
    c.wait_archived(after[-1])
    code, out = check(c, "check", "archive", "--age-warning", "1h")
    assert code == 0, out
    assert out.startswith(f"OK: last archived {after[-1]} ")
    assert f"archive continuous since {backup['start_wal']}" in out
    assert "backlog=0;10;100;0" in out and "missing_segments=0;;1;0" in out and "wal_size=" in out

    (repo / "wal" / after[1]).unlink()
    code, out = check(c, "check", "archive")
    assert code == 2
    assert out.startswith(f"CRITICAL: 1 WAL segment missing since {backup['start_wal']}: {after[1]} |"), out
    assert "missing_segments=1;;1;0" in out

    code, out = check(c, "status", "--json")
    status = json.loads(out)
    assert code == 0
    assert status["gaps"] == [{"first": after[1], "last": after[1], "count": 1, "next": after[2]}]
    assert status["window"]["end_wal"] == after[0]     # the only backup is before the gap: recoverable up to it
    assert status["wal"]["newest"] == after[-1]
    assert [b["name"] for b in status["backups"]] == [backup["name"]]
    assert status["archiver"]["failing"] is False
    code, out = check(c, "status")
    assert f"  missing {after[1]}" in out and "recoverable   NOTHING" not in out and backup["name"] in out


def test_check_archive_reports_a_failing_archiver_and_the_growing_backlog(cluster_factory, moto):
    proxy = SwitchableProxy(moto.port)
    c = cluster_factory(PG_VERSION, env={**moto.env(moto.new_bucket(), endpoint=proxy.endpoint), **QUICK_S3})
    c.initdb()
    c.set_archiving()
    c.start()
    try:
        first = next_segment(c)
        c.wait_archived(first)
        code, out = check(c, "check", "archive")
        assert code == 0, out

        proxy.down()
        backlog = []
        for _ in range(2):
            next_segment(c)
            next_segment(c)
            assert wait_until(lambda: c.scalar("SELECT failed_count > 0 FROM pg_stat_archiver"), 30), c.log_tail()
            code, out = check(c, "check", "archive")
            assert code == 2, out
            assert out.startswith("CRITICAL: archive_command failing: last failure ")
            waiting = int(out.split(" WAL files waiting to be archived")[0].rsplit(" ", 1)[1])
            assert f"backlog={waiting};10;100;0" in out
            assert "; repository: the connection to S3 at " in out   # the check cannot reach it either
            backlog.append(waiting)
        assert backlog[0] >= 2 and backlog[1] >= backlog[0] + 2
        code, out = check(c, "check", "backup")
        assert code == 3 and out.startswith("UNKNOWN: the connection to S3 at "), out
    finally:
        proxy.close()
