"""Client-side encryption on a real cluster: nothing readable in the repository, recovery with the key."""

from __future__ import annotations

import uuid

from tests.support import pg, recovery


def test_encrypted_archive_holds_no_plaintext_and_recovers_with_the_key(cluster_factory, scratch):
    repo = pg.make_dir(scratch, "repo", 0o755)
    env = {"WALSHIP_REPO": f"file://{repo}", "WALSHIP_COMPRESSION": "none",
           "WALSHIP_ENCRYPTION_KEY_FILE": pg.key_file(scratch, "key")}
    marker = f"PLAINTEXT-MARKER-{uuid.uuid4().hex}"
    primary = cluster_factory(16, env=env)
    primary.initdb()
    primary.set_archiving()
    primary.start()
    primary.sql("CREATE TABLE secrets (v text)")
    restored = recovery.from_pg_basebackup(primary, cluster_factory, scratch, env)
    primary.sql("INSERT INTO secrets SELECT %s || g FROM generate_series(1, 500) g", (marker,))
    last = primary.switch_wal()
    primary.wait_archived(last)
    # the control: the WAL itself does hold the marker, so its absence below means something
    assert marker.encode() in (primary.datadir / "pg_wal" / last).read_bytes()
    for path in repo.rglob("*"):
        if path.is_file():
            assert marker.encode() not in path.read_bytes(), path
    primary.stop()

    restored.start()
    restored.wait_promoted()
    assert restored.scalar("SELECT count(*) FROM secrets WHERE v LIKE %s", (marker + "%",)) == 500

    wrong = {**pg.server_env(env), "WALSHIP_ENCRYPTION_KEY_FILE": pg.key_file(scratch, "other"),
             "WALSHIP_FETCH_PREFETCH": "0"}
    r = pg.walship(["wal-fetch", last, str(scratch / "x")], wrong)
    assert r.returncode == 4 and "not among the configured keys" in r.stderr
    assert not (scratch / "x").exists()
    nokey = {k: v for k, v in wrong.items() if k != "WALSHIP_ENCRYPTION_KEY_FILE"}
    r = pg.walship(["wal-fetch", last, str(scratch / "x")], nokey)
    assert r.returncode == 4 and "no encryption key is configured" in r.stderr
