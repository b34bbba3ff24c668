"""`walship check`: end to end on a real primary, working and broken."""

from __future__ import annotations

from tests.support import pg


def _check(c: pg.Cluster, env: dict, *extra: str):
    return pg.walship(["check", "--timeout", "15", *extra], {**c.env_for_tools(), **env})


def test_end_to_end_check_says_archiving_works_or_what_is_wrong(cluster_factory, scratch, moto):
    repo = pg.make_dir(scratch, "repo", 0o755)
    env = {"WALSHIP_REPO": f"file://{repo}"}
    c = cluster_factory(15, env=env)
    c.initdb()
    c.start()
    r = _check(c, env)
    assert r.returncode == 2 and r.stdout.startswith("CRITICAL: archive_mode is off"), r.stdout + r.stderr
    c.stop()

    c.set_archiving()
    c.start()
    r = _check(c, env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("OK: archiving works: ") and f"file://{repo}" in r.stdout and "latency=" in r.stdout

    # the repository the server archives into is not the one the check looks at
    other = pg.make_dir(scratch, "elsewhere", 0o755)
    r = _check(c, {"WALSHIP_REPO": f"file://{other}"}, "--timeout", "3")
    assert r.returncode == 2 and "did not reach" in r.stdout, r.stdout

    # archiving broken: the store is unreachable for the server
    c.stop()
    c.process_env.update(moto.env("walship-missing-bucket", endpoint=f"http://127.0.0.1:{pg.free_port()}"))
    c.process_env.update(WALSHIP_S3_MAX_RETRIES="0", WALSHIP_S3_RETRY_TIMEOUT="1")
    c.start()
    r = _check(c, {"WALSHIP_REPO": f"file://{repo}"}, "--timeout", "4")
    assert r.returncode == 2 and "the archiver last failed on" in r.stdout, r.stdout
