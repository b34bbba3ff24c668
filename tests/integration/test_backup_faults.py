"""Base backups through a faulty S3: a backup completes or is never listed; a restore never looks complete."""

from __future__ import annotations

import json

from tests.support import pg
from tests.support.faultproxy import FaultProxy


def _env(moto, bucket, proxy, c: pg.Cluster) -> dict:
    return {**c.env_for_tools(), **moto.env(bucket, endpoint=proxy.endpoint), "WALSHIP_S3_MAX_RETRIES": "3",
            "WALSHIP_S3_RETRY_TIMEOUT": "10", "WALSHIP_S3_REQUEST_TIMEOUT": "5",
            "WALSHIP_BACKUP_PART_SIZE": str(4 << 20), "WALSHIP_FETCH_PREFETCH": "0"}


def _listed(env: dict) -> list[str]:
    r = pg.walship(["backup-list", "--json"], env)
    assert r.returncode == 0, r.stderr
    return [b["name"] for b in json.loads(r.stdout)]


def test_backup_push_and_fetch_under_s3_faults(cluster_factory, scratch, moto):
    bucket = moto.new_bucket()
    proxy = FaultProxy(moto.port)
    c = cluster_factory(15)
    c.initdb()
    env = _env(moto, bucket, proxy, c)
    c.process_env.update({k: v for k, v in env.items() if k.startswith(("WALSHIP_", "AWS_"))})
    c.set_archiving()
    c.start()
    c.sql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 200000) g")

    # throttling and server errors on the parts are retried: the backup completes
    proxy.add("PUT", r"/backups/.*part_0000[01]\.tar", "503", times=2)
    proxy.add("PUT", r"/backups/.*part_00002\.tar", "500", times=1)
    r = pg.walship(["backup-push", str(c.datadir), "--progress", "none"], env)
    assert r.returncode == 0, r.stderr
    assert len(proxy.fired) == 3 and len(_listed(env)) == 1

    # a part the store keeps refusing: the backup fails and is never listed
    proxy.clear()
    proxy.add("PUT", r"/backups/.*part_00001\.tar", "500", times=-1)
    r = pg.walship(["backup-push", str(c.datadir), "--progress", "none"], env)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert len(_listed(env)) == 1
    proxy.clear()

    # a restore whose part downloads keep breaking fails, reports it, and does not look complete
    for fault in ("truncate", "reset"):
        proxy.clear()
        proxy.add("GET", r"/backups/.*part_00001\.tar", fault, times=-1)
        dest = scratch / f"restore-{fault}"
        r = pg.walship(["backup-fetch", str(dest), "LATEST", "--progress", "none"], env)
        assert r.returncode in (3, 4), r.stderr
        assert "part_00001.tar" in r.stderr or "S3" in r.stderr
        assert not (dest / "recovery.signal").exists()
    proxy.clear()

    # and with the store healthy again the same backup restores
    dest = scratch / "restore-ok"
    r = pg.walship(["backup-fetch", str(dest), "LATEST", "--progress", "none"], env)
    assert r.returncode == 0, r.stderr
    assert (dest / "recovery.signal").exists()
    proxy.close()
