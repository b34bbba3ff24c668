"""`walship status` and `walship verify` tell the truth on real clusters: the window up to a gap,
no repository where there is none, and 64 MiB segments past 0/FFFFFFFF without a server connection."""

from __future__ import annotations

import json

import pytest

from tests.support import pg
from tests.support.restore import backup_push as _backup_push
from tests.support.restore import backups as _backups
from tests.support.restore import primary as _primary


def _run(env: dict, *args: str):
    """walship as an operator on another host runs it: the repository's settings only, no PG* variables."""
    return pg.walship(list(args), pg.server_env(env))


def _next_segment(c: pg.Cluster) -> str:
    """Write something and switch (pg_switch_wal() on an empty segment does not switch)."""
    c.sql("CREATE TABLE IF NOT EXISTS filler (x int); INSERT INTO filler VALUES (1)")
    return c.switch_wal()


def test_status_and_verify_show_the_window_up_to_a_deleted_segment_and_name_the_gap(cluster_factory, scratch):
    repo = pg.make_dir(scratch, "repo", 0o755)
    env = {"WALSHIP_REPO": f"file://{repo}"}
    c = _primary(cluster_factory, 15, env)
    c.wait_archived(_next_segment(c))

    # WAL but no backup: nothing is restorable, and verify says so with its exit code
    r = _run(env, "verify", "--quick")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "verify: NOTHING RESTORABLE: no complete base backup" in r.stdout

    _backup_push(c, **env)
    [backup] = _backups(pg.server_env(env))
    after = [_next_segment(c) for _ in range(3)]
    c.wait_archived(after[-1])
    (repo / "wal" / after[1]).unlink()

    r = _run(env, "status", "--json")
    assert r.returncode == 0, r.stderr
    status = json.loads(r.stdout)
    assert status["gaps"] == [{"first": after[1], "last": after[1], "count": 1, "next": after[2]}]
    [window] = status["windows"]
    # from the backup's consistency point (its stop, not its start) to the end of the segment before the gap
    assert (window["timeline"], window["backup"], window["start_lsn"], window["start_time"]) == \
        (1, backup["name"], backup["stop_lsn"], backup["stop_time"])
    assert window["end_wal"] == after[0]
    assert window["gap_after"] == {"first": after[1], "last": after[1], "count": 1, "next": after[2]}
    assert status["window"]["start_backup"] == backup["name"] and status["window"]["end_wal"] == after[0]
    [timeline] = status["timelines"]
    assert (timeline["timeline"], timeline["parent"], timeline["flags"]) == (1, None, [])
    assert status["wal"]["segment_size"] == 16 << 20

    r = _run(env, "status")
    assert r.returncode == 0, r.stderr
    assert "recoverable   NOTHING" not in r.stdout
    assert f"(backup {backup['name']} consistent at {backup['stop_lsn']})" in r.stdout
    assert f"(end of WAL {after[0]}," in r.stdout
    assert f"then missing {after[1]}, next archived {after[2]}" in r.stdout
    assert f"  missing {after[1]}, next archived {after[2]}" in r.stdout

    r = _run(env, "verify", "--json")
    assert r.returncode == 4, r.stdout + r.stderr          # a gap: not everything archived is restorable
    report = json.loads(r.stdout)
    assert f"WAL missing: {after[1]}, next archived {after[2]}" in report["wal"]["problems"]
    assert [w["end_wal"] for w in report["wal"]["windows"]] == [after[0]]


@pytest.mark.parametrize("where", ["empty directory", "nonexistent path", "empty bucket"])
def test_verify_and_status_refuse_a_location_that_is_not_a_repository(where, scratch, moto):
    if where == "empty bucket":
        env = moto.env(moto.new_bucket())
    else:
        path = pg.make_dir(scratch, "empty", 0o755) if where == "empty directory" else scratch / "no" / "such"
        env = {"WALSHIP_REPO": f"file://{path}"}
    for command in (["verify"], ["verify", "--quick", "--json"], ["status"]):
        r = _run(env, *command)
        assert r.returncode == 3, (command, r.stdout, r.stderr)
        assert r.stdout == "", (command, r.stdout)
        [line] = r.stderr.splitlines()
        assert "is not a walship repository" in line and "check the repository URL" in line, line
        assert "restorable" not in line


def test_64_mib_segments_past_0_ffffffff_verify_without_a_server_connection(cluster_factory, scratch):
    repo = pg.make_dir(scratch, "repo", 0o755)
    env = {"WALSHIP_REPO": f"file://{repo}"}
    c = cluster_factory(15, env=env)
    c.initdb(wal_segsize=64)
    # Start just before 1/0 instead of archiving 4 GiB: 0x40 segments of 64 MiB per 4 GiB "log".
    pg.run_as_postgres([str(c.bin / "pg_resetwal"), "-l", "00000001000000000000003E", str(c.datadir)], env=c.env)
    c.set_archiving()
    c.start()
    assert c.scalar("SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'") == str(64 << 20)

    _backup_push(c, **env)
    segments = [_next_segment(c) for _ in range(3)]
    assert segments[-1] >= "000000010000000100000000", segments      # the archive crossed 1/0
    c.wait_archived(segments[-1])
    r = pg.walship(["check", "archive"], c.env_for_tools())          # the plugin: the same gap logic
    assert r.returncode == 0 and "missing_segments=0;;1;0" in r.stdout, r.stdout
    assert f"archive continuous since {_backups(pg.server_env(env))[0]['start_wal']}" in r.stdout
    c.stop()          # no server to ask (its shutdown switches and archives one more segment)

    r = _run(env, "verify")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verify: the repository is restorable" in r.stdout
    assert "WAL missing" not in r.stdout
    report = json.loads(_run(env, "verify", "--json", "--quick").stdout)
    assert report["ok"] and report["restorable"]
    assert report["wal"]["segment_size"] == 64 << 20 and report["wal"]["gaps"] == []

    status = json.loads(_run(env, "status", "--json").stdout)
    assert status["gaps"] == [] and status["wal"]["segment_size"] == 64 << 20
    [window] = status["windows"]
    assert window["end_wal"] == status["wal"]["newest"] >= segments[-1] and window["gap_after"] is None


def test_a_promotion_continues_the_window_on_the_new_timeline_and_a_split_brain_is_a_fork(cluster_factory, scratch):
    repo = pg.make_dir(scratch, "repo", 0o755)
    env = {"WALSHIP_REPO": f"file://{repo}"}
    primary = _primary(cluster_factory, 15, env)
    primary.sql("CREATE TABLE t (id int)")
    _backup_push(primary, **env)
    [backup] = _backups(pg.server_env(env))
    standby = cluster_factory(15, name="standby", env=env)
    pg.run_as_postgres([str(primary.bin / "pg_basebackup"), "-h", str(primary.sockdir), "-p", str(primary.port),
                        "-U", "postgres", "-D", str(standby.datadir), "-X", "stream", "-c", "fast", "-R"],
                       env=primary.env)
    standby.configure(f"port = {standby.port}\nunix_socket_directories = '{standby.sockdir}'\n")
    standby.start()
    primary.sql("INSERT INTO t SELECT generate_series(1, 1000)")
    primary.wait_archived(primary.switch_wal())
    primary.stop()                 # the old primary is gone: a failover, the owner's own promotion
    standby.sql("SELECT pg_promote()")
    standby.wait_promoted()
    standby.sql("INSERT INTO t SELECT generate_series(1001, 2000)")
    standby.wait_archived(standby.switch_wal())

    status = json.loads(_run(env, "status", "--json").stdout)
    t1, t2 = status["timelines"]
    assert (t1["timeline"], t1["parent"], t2["timeline"], t2["parent"]) == (1, None, 2, 1)
    assert t2["branch_lsn"] and t2["time"] and t1["flags"] == t2["flags"] == []
    assert status["gaps"] == []
    w1, w2 = status["windows"]
    assert (w1["timeline"], w1["backup"], w1["start_lsn"]) == (1, backup["name"], backup["stop_lsn"])
    assert (w2["timeline"], w2["start_lsn"], w2["via"], w2["gap_after"]) == (2, t2["branch_lsn"], [1, 2], None)
    assert w2["end_wal"] == status["wal"]["newest"]
    assert (status["window"]["timeline"], status["window"]["start_backup"]) == (2, backup["name"])
    r = _run(env, "verify", "--quick")
    assert r.returncode == 0 and "the repository is restorable" in r.stdout and "FORK" not in r.stdout, r.stdout

    # the old primary comes back and archives on timeline 1 past the branch point: two servers wrote after it
    primary.start()
    for _ in range(2):
        last = _next_segment(primary)
    primary.wait_archived(last)
    status = json.loads(_run(env, "status", "--json").stdout)
    [fork] = status["timelines"][1]["flags"]
    assert fork["kind"] == "FORK"
    assert f"timeline 1 has WAL archived after timeline 2 branched off it at {t2['branch_lsn']}" in fork["message"]
    assert last in fork["message"] and "split brain" in fork["message"]
    text = _run(env, "status").stdout
    assert "FORK: timeline 1 has WAL archived after timeline 2" in text and "what to do: find the server" in text
    r = _run(env, "verify", "--quick")
    assert r.returncode == 0, r.stdout          # still restorable along both timelines: a warning, not a failure
    assert "warning: FORK: timeline 1" in r.stdout
