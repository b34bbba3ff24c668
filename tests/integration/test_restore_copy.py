"""A restored copy never forks production's history; a new primary (--as-primary) keeps the history going."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import require_version
from tests.support import restore
from tests.support.restore import STAMPED


def _marker(datadir: Path) -> dict:
    return json.loads((datadir / "walship_restore.json").read_text())


def _repository_id(repo_env: dict) -> str | None:
    record = Path(repo_env["WALSHIP_REPO"][len("file://"):]) / "walship-repository.json"
    return json.loads(record.read_text())["repository_id"] if record.exists() else None


def test_a_restored_copy_archives_nothing_and_productions_latest_stays_exact(cluster_factory, scratch):
    require_version(15)
    repo_env, production, rows = restore.stamped_production(cluster_factory, scratch)

    # someone restores a copy to look at old data, and starts it as the service starts production:
    # the restored configuration (archive_command = walship wal-push %p) and the service's WALSHIP_REPO
    copy = cluster_factory(15, name="copy", env=restore.service_env(repo_env, with_repo=True))
    r = restore.fetch(copy.datadir, "LATEST", repo_env, "--target-time", restore.between(rows[14], rows[15]),
                      "--target-action", "promote")
    assert r.returncode == 0, r.stderr
    assert "restored as a COPY: archive_mode = off" in r.stdout
    assert f"never into {repo_env['WALSHIP_REPO']}" in r.stdout
    marker = _marker(copy.datadir)
    assert (marker["mode"], marker["origin_repository"]) == ("copy", repo_env["WALSHIP_REPO"])
    assert marker["origin_repository_id"] == _repository_id(repo_env)
    restore.start_restored(copy)
    assert restore.ids(copy) == [s.id for s in rows[:15]]
    assert copy.scalar("SHOW archive_mode") == "off"
    copy.sql("INSERT INTO stamped SELECT g, now() FROM generate_series(5000, 5100) g")
    copy.switch_wal()
    copy.switch_wal()

    # production goes on, then dies
    rows += restore.stamp_rows(production, 21, 10)
    production.wait_archived(production.switch_wal())
    production.kill9()
    copy.stop()
    archived = restore.archived_wal(repo_env)
    assert not [name for name in archived if not name.startswith("00000001")], archived

    latest = restore.restore(15, cluster_factory, "latest", repo_env, "LATEST")
    assert restore.ids(latest) == [s.id for s in rows]


@pytest.mark.parametrize("pg_version,repo_kind", [(15, "file"), (18, "s3")])
def test_the_new_primary_after_a_disaster_keeps_archiving_and_latest_follows_it(pg_version, repo_kind,
                                                                                cluster_factory, scratch, moto):
    require_version(pg_version)
    repo_env = restore.file_repo(scratch) if repo_kind == "file" else moto.env(moto.new_bucket())
    production = restore.primary(cluster_factory, pg_version, repo_env)
    production.sql(STAMPED)
    rows = restore.stamp_rows(production, 1, 10)
    restore.backup_push(production)
    rows += restore.stamp_rows(production, 11, 10)
    production.wait_archived(production.switch_wal())
    production.kill9()                                    # the primary is lost

    new_primary = cluster_factory(pg_version, name="new_primary", env=restore.service_env(repo_env, with_repo=True))
    r = restore.fetch(new_primary.datadir, "LATEST", repo_env, "--as-primary")
    assert r.returncode == 0, r.stderr
    assert "restored as the NEW PRIMARY" in r.stdout and "later restores (LATEST) follow it" in r.stdout
    assert _marker(new_primary.datadir)["mode"] == "primary"
    restore.start_restored(new_primary)
    assert restore.ids(new_primary) == [s.id for s in rows]
    rows += restore.stamp_rows(new_primary, 100, 10)
    new_primary.wait_archived(new_primary.switch_wal())
    new_primary.kill9()

    latest = restore.restore(pg_version, cluster_factory, "latest", repo_env, "LATEST")
    assert restore.ids(latest) == [s.id for s in rows]
