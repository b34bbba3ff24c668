"""Recovery from the archive: a base backup (pg_basebackup) plus walship's restore_command."""

from __future__ import annotations

import pytest

from tests.conftest import require_version
from tests.support import pg


def _recover(primary: pg.Cluster, cluster_factory, scratch, repo_env: dict) -> pg.Cluster:
    restored = cluster_factory(primary.version, name="restored", env=repo_env)
    pg.run_as_postgres([str(primary.bin / "pg_basebackup"), "-h", str(primary.sockdir), "-p", str(primary.port),
                        "-U", "postgres", "-D", str(restored.datadir), "-X", "none", "-c", "fast"],
                       env=primary.env)
    restored.configure(
        f"port = {restored.port}\nunix_socket_directories = '{restored.sockdir}'\n"
        "archive_mode = off\n"
        f"restore_command = '{pg.WALSHIP} wal-fetch %f %p'\n")
    (restored.datadir / "recovery.signal").touch()
    pg.chown_postgres(restored.datadir / "recovery.signal")
    return restored


# the file repository on every version, S3 on one (the S3 path is the same on all)
@pytest.mark.parametrize("pg_version,repo_kind", [(15, "file"), (16, "file"), (18, "file"), (18, "s3")])
def test_replay_from_the_archive_restores_rows_written_after_the_base_backup(
        pg_version, repo_kind, cluster_factory, scratch, moto):
    require_version(pg_version)
    repo_env = ({"WALSHIP_REPO": f"file://{pg.make_dir(scratch, 'repo', 0o755)}"} if repo_kind == "file"
                else moto.env(moto.new_bucket()))
    primary = cluster_factory(pg_version, env=repo_env)
    primary.initdb()
    primary.set_archiving()
    primary.start()
    primary.sql("CREATE TABLE t (id int PRIMARY KEY, pad text)")
    primary.sql("INSERT INTO t SELECT g, 'before' FROM generate_series(1, 1000) g")

    restored = _recover(primary, cluster_factory, scratch, repo_env)
    # written after the base backup: only the archive has these rows
    for i in range(5):
        primary.sql(f"INSERT INTO t SELECT g, repeat('after', 40) FROM generate_series({2000 + i * 20000}, "
                    f"{2000 + i * 20000 + 19999}) g")
        last = primary.switch_wal()
    primary.wait_archived(last)
    expected = primary.sql("SELECT count(*), md5(string_agg(id::text || pad, ',' ORDER BY id)) FROM t")[0]
    primary.stop()

    restored.start()
    restored.wait_promoted()
    got = restored.sql("SELECT count(*), md5(string_agg(id::text || pad, ',' ORDER BY id)) FROM t")[0]
    assert got == expected
    log = restored.logfile.read_text()
    assert "restored (downloaded)" in log
    assert "restored (prefetched)" in log, "replay should be served from the prefetch directory"
    assert not any((restored.datadir / "pg_wal" / "walship_prefetch").glob("0*")), "prefetched files left behind"
