"""The supported-version rule: walship runs on the PostgreSQL majors its tests prove, others only when allowed."""

from __future__ import annotations

import pytest

from tests.support import pg
from walship.config import load_settings
from walship.errors import EXIT_USAGE
from walship.pg import versions, walheader


@pytest.mark.parametrize("server_version_num", [140000, 140023, 150018, 160013, 170010, 180001])
def test_every_tested_major_is_accepted(server_version_num: int) -> None:
    versions.require_tested(versions.major_of(server_version_num), False, "the server")


@pytest.mark.parametrize("server_version_num,major", [(130021, 13), (120022, 12), (190000, 19)])
def test_an_untested_major_is_refused_in_one_line_that_names_the_override(server_version_num: int,
                                                                          major: int) -> None:
    with pytest.raises(versions.UntestedPostgres) as caught:
        versions.require_tested(versions.major_of(server_version_num), False, "the server")
    line = caught.value.one_line()
    assert f"the server is PostgreSQL {major}" in line
    assert "14 to 18" in line
    assert "allow_untested_pg = true" in line and "WALSHIP_ALLOW_UNTESTED_PG=true" in line
    assert "\n" not in line
    assert caught.value.exit_code == EXIT_USAGE


def test_an_unknown_wal_format_is_refused_without_naming_a_major() -> None:
    with pytest.raises(versions.UntestedPostgres, match="a PostgreSQL major walship does not know"):
        versions.require_tested(None, False, "WAL segment 000000010000000000000001")


def test_the_override_lets_any_major_through() -> None:
    versions.require_tested(19, True, "the server")
    versions.require_tested(None, True, "WAL segment 000000010000000000000001")


@pytest.mark.parametrize("raw,expected", [("true", True), ("1", True), ("false", False)])
def test_the_override_is_a_setting_read_from_the_environment(raw: str, expected: bool) -> None:
    assert load_settings(env={"WALSHIP_ALLOW_UNTESTED_PG": raw}).allow_untested_pg is expected
    assert load_settings(env={}).allow_untested_pg is False


def test_the_tested_majors_are_the_test_matrix_and_the_wal_formats_walship_reads() -> None:
    # the rule claims exactly what the integration tests run, and wal-push knows each one's WAL magic
    assert versions.TESTED_MAJORS == pg.VERSIONS
    assert sorted(walheader.WAL_MAGIC_MAJOR.values()) == list(versions.TESTED_MAJORS)


class _Connection:
    """Stands in for the psycopg connection: backup-push only needs it as a context manager before the check."""

    def __enter__(self) -> _Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class _StartedBackup(Exception):
    """Raised by the stand-in pg_backup_start: backup-push got past the version check."""


@pytest.fixture
def pushing_to_a_server_of(monkeypatch, tmp_path):
    """backup-push against a server whose server_version_num is given; returns (push, the repository root)."""
    from walship.backup import push as push_module
    from walship.config import Settings
    from walship.pg import backup_api
    from walship.repo.lock import RepositoryLock
    from walship.storage import open_store

    pgdata = tmp_path / "pgdata"
    (pgdata / "global").mkdir(parents=True)
    (pgdata / "PG_VERSION").write_text("13\n")
    repo = tmp_path / "repo"
    repo.mkdir()

    def start_backup(*args: object) -> None:
        raise _StartedBackup()

    def push(server_version_num: int, **settings: object) -> None:
        facts = backup_api.ServerFacts(server_version_num, "7300000000000000001", 1, 16 << 20, str(pgdata), False)
        monkeypatch.setattr(push_module, "connect", lambda *a, **kw: _Connection())
        monkeypatch.setattr(backup_api, "server_facts", lambda conn: facts)
        monkeypatch.setattr(backup_api, "start_backup", start_backup)
        monkeypatch.setattr(push_module, "_start_archiving_check", lambda *a: lambda: None)  # no server to switch on
        monkeypatch.setattr(push_module, "_page_check_wanted", lambda *a: None)
        s = Settings(**settings)
        store = open_store(f"file://{repo}", s)
        push_module.backup_push(str(pgdata), s, store, lock=lambda: RepositoryLock(store, "backup-push"),
                                progress_mode="none")
    return push, repo


def test_backup_push_refuses_an_untested_server_before_it_starts_a_backup(pushing_to_a_server_of) -> None:
    push, repo = pushing_to_a_server_of
    with pytest.raises(versions.UntestedPostgres, match="the server is PostgreSQL 13"):
        push(130021)
    assert list(repo.rglob("*")) == [], "a refused backup wrote to the repository"
    with pytest.raises(_StartedBackup):
        push(130021, allow_untested_pg=True)
    with pytest.raises(_StartedBackup):
        push(170010)
