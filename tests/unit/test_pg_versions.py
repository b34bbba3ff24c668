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
