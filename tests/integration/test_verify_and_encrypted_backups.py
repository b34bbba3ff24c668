"""verify on a real repository, and point-in-time recovery from an encrypted one."""

from __future__ import annotations

import json
import uuid

from tests.support import pg
from tests.support.restore import STAMPED
from tests.support.restore import backup_push as _backup_push
from tests.support.restore import primary as _primary
from tests.support.restore import restore as _restore
from tests.support.restore import stamp_rows as _stamp_rows


def _verify(env: dict, *args: str):
    return pg.walship(["verify", *args], pg.server_env(env))


def test_encrypted_repository_restores_to_a_point_in_time_and_holds_no_plaintext(cluster_factory, scratch):
    repo = pg.make_dir(scratch, "repo", 0o755)
    env = {"WALSHIP_REPO": f"file://{repo}", "WALSHIP_ENCRYPTION_KEY_FILE": pg.key_file(scratch, "key"),
           "WALSHIP_COMPRESSION": "none"}
    marker = f"PLAINTEXT-MARKER-{uuid.uuid4().hex}"
    c = _primary(cluster_factory, 18, env)
    c.sql(STAMPED)
    c.sql("CREATE TABLE notes (v text)")
    c.sql("INSERT INTO notes SELECT %s || g FROM generate_series(1, 300) g", (marker,))
    c.sql("CHECKPOINT")                                  # the marker is in the data files the backup reads
    _backup_push(c, **env, WALSHIP_BACKUP_PART_SIZE=str(256 << 10))   # catalogs over 256 KiB: sealed slices
    before = _stamp_rows(c, 1, 4)
    after = _stamp_rows(c, 5, 4)
    target = before[-1][1] + (after[0][1] - before[-1][1]) / 2
    c.wait_archived(c.switch_wal())

    for path in repo.rglob("*"):
        if path.is_file():
            assert marker.encode() not in path.read_bytes(), path
    restored = _restore(18, cluster_factory, "restored", env, "LATEST", "--target-time", target.isoformat(),
                        "--target-action", "promote")
    assert [r[0] for r in restored.sql("SELECT id FROM stamped ORDER BY id")] == [r[0] for r in before]
    assert restored.scalar("SELECT count(*) FROM notes WHERE v LIKE %s", (marker + "%",)) == 300

    # a wrong key: a clear error, nothing restored
    wrong = {**env, "WALSHIP_ENCRYPTION_KEY_FILE": pg.key_file(scratch, "other")}
    dest = scratch / "wrong-key"
    r = pg.walship(["backup-fetch", str(dest), "LATEST", "--progress", "none"], pg.server_env(wrong))
    assert r.returncode == 4 and "not among the configured keys" in r.stderr, r.stderr
    assert not (dest / "recovery.signal").exists()


def test_verify_finds_the_repository_restorable_then_names_what_was_damaged(cluster_factory, scratch):
    repo = pg.make_dir(scratch, "repo", 0o755)
    env = {"WALSHIP_REPO": f"file://{repo}"}
    c = _primary(cluster_factory, 15, env)
    c.sql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 50000) g")
    _backup_push(c, **env, WALSHIP_BACKUP_PART_SIZE=str(1 << 20))      # t (3.5 MB) is read back as slices
    segments = [c.switch_wal() for _ in range(3) if c.sql("INSERT INTO t VALUES (0, 'x')") is None]
    c.wait_archived(segments[-1])

    r = _verify(env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verify: the repository is restorable" in r.stdout
    report = json.loads(_verify(env, "--json").stdout)
    assert report["ok"] and report["backups"][0]["files"] > 100 and report["wal"]["segments_read"] >= 3

    # a flipped byte inside a backup part is found and named
    part = sorted((repo / "backups").rglob("part_00000.tar"))[0]
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0x10
    part.write_bytes(bytes(data))
    r = _verify(env)
    assert r.returncode == 4 and "part_00000.tar" in r.stdout and "PROBLEMS FOUND" in r.stdout, r.stdout

    # a segment deleted from the middle of the archive is a gap; a truncated one is named
    (repo / "wal" / segments[1]).unlink()
    tail = repo / "wal" / segments[2]
    tail.write_bytes(tail.read_bytes()[:-100])
    r = _verify(env, "--json")
    problems = json.loads(r.stdout)["wal"]["problems"]
    assert any(f"WAL missing: {segments[1]}" in p for p in problems), problems
    assert any(segments[2] in p and ("truncated" in p or "corrupt" in p) for p in problems), problems
    # --quick reads no WAL: the gap is still found from the listing
    quick = json.loads(_verify(env, "--json", "--quick").stdout)["wal"]
    assert quick["segments_read"] == 0 and any(segments[1] in p for p in quick["problems"])
