"""WAL archiving on real PostgreSQL servers: every segment lands and comes back byte-identical."""

from __future__ import annotations

import filecmp

from tests.support import pg
from tests.support.repo import open_repo
from walship import pipeline


def _archived_names(env: dict, moto, scratch) -> set[str]:
    repo = env["WALSHIP_REPO"]
    if repo.startswith("file://"):
        import os
        root = repo[len("file://"):]
        return set(os.listdir(os.path.join(root, "wal")))
    bucket, _, prefix = repo[len("s3://"):].partition("/")
    return {k.rsplit("/", 1)[1] for k in moto.keys(bucket, f"{prefix}/wal/")}


def test_every_segment_is_archived_and_fetched_back_identical(pg_version, repo_env, cluster_factory, scratch, moto):
    c = cluster_factory(pg_version, env=repo_env)
    c.initdb()
    c.set_archiving()
    c.start()
    c.sql("CREATE TABLE t (id int, pad text)")
    switched = []
    for _ in range(4):
        c.sql("INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g")
        switched.append(c.switch_wal())
    c.wait_archived(switched[-1])

    archived = _archived_names(repo_env, moto, scratch)
    wal_dir = c.datadir / "pg_wal"
    completed = sorted(p.name for p in wal_dir.iterdir() if len(p.name) == 24 and p.name <= switched[-1])
    assert set(switched) <= archived
    assert set(completed) <= archived, f"missing from archive: {set(completed) - archived}"
    stats = c.sql("SELECT archived_count, failed_count FROM pg_stat_archiver")[0]
    assert stats[1] == 0, c.log_tail()

    out = pg.make_dir(scratch, "fetched", 0o755)
    env = {**pg.server_env(repo_env), "WALSHIP_FETCH_PREFETCH": "0"}
    for name in completed:
        r = pg.walship(["wal-fetch", name, str(out / name)], env)
        assert r.returncode == 0, r.stderr
        assert filecmp.cmp(out / name, wal_dir / name, shallow=False), name


def test_fetch_of_a_segment_not_in_the_archive_says_so(repo_env, scratch):
    env = pg.server_env(repo_env)
    # a location that holds nothing is no archive at all (a wrong URL, an unmounted file system)
    r = pg.walship(["wal-fetch", "0000000100000000000000AB", str(scratch / "x")], env)
    assert r.returncode == 3 and "is not a walship repository" in r.stderr, r.stderr
    open_repo(repo_env).put("wal/00000002.history", pipeline.pack(b"1\t0/3000000\tno recovery target specified\n",
                                                              "none"))
    r = pg.walship(["wal-fetch", "0000000100000000000000AB", str(scratch / "x")], env)
    assert r.returncode == 1
    assert "not in the archive" in r.stderr
    assert not (scratch / "x").exists()
