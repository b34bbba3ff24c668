"""WAL-E's environment variables, read by walship unchanged (docs/migrating-from-wal-e.md)."""

import pytest

from walship.config import load_settings
from walship.errors import ConfigError


def settings(**env):
    return load_settings({}, env)


def test_s3_prefix_endpoint_and_storage_class():
    s = settings(WALE_S3_PREFIX="s3://bucket/db1", WALE_S3_ENDPOINT="https+path://s3.example:8443",
                 WALE_S3_STORAGE_CLASS="STANDARD_IA")
    assert (s.repo, s.s3_endpoint, s.s3_path_style, s.s3_storage_class) == \
        ("s3://bucket/db1", "https://s3.example:8443", True, "STANDARD_IA")
    assert s.sources["repo"] == "WAL-E environment"


@pytest.mark.parametrize("endpoint, url, path_style", [
    ("http+path://127.0.0.1:5000", "http://127.0.0.1:5000", True),
    ("https+virtualhost://s3.eu-west-1.amazonaws.com", "https://s3.eu-west-1.amazonaws.com", False),
    ("https+subdomain://minio.internal:9000/", "https://minio.internal:9000", False),
])
def test_every_calling_format_of_wale_s3_endpoint(endpoint, url, path_style):
    s = settings(WALE_S3_PREFIX="s3://b/p", WALE_S3_ENDPOINT=endpoint)
    assert (s.s3_endpoint, s.s3_path_style) == (url, path_style)


@pytest.mark.parametrize("endpoint", ["https://s3.example", "ftp+path://host", "https+path://host/some/path",
                                      "https+path://user:pw@host", "https+sideways://host"])
def test_a_wale_s3_endpoint_walship_cannot_honour_is_refused(endpoint):
    with pytest.raises(ConfigError, match="WALE_S3_ENDPOINT .* is not in WAL-E's form"):
        settings(WALE_S3_PREFIX="s3://b/p", WALE_S3_ENDPOINT=endpoint)


def test_file_prefix_in_wale_form_and_in_plain_form():
    assert settings(WALE_FILE_PREFIX="file://localhost/var/backups/db1").repo == "file:///var/backups/db1"
    assert settings(WALE_FILE_PREFIX="file:///var/backups/db1").repo == "file:///var/backups/db1"
    with pytest.raises(ConfigError, match="WALE_FILE_PREFIX"):
        settings(WALE_FILE_PREFIX="file://otherhost/var/backups")


def test_the_prefix_wale_itself_would_pick_wins():
    # WAL-E looks at WALE_FILE_PREFIX before WALE_S3_PREFIX
    s = settings(WALE_FILE_PREFIX="file://localhost/srv/wal", WALE_S3_PREFIX="s3://b/p")
    assert s.repo == "file:///srv/wal"


@pytest.mark.parametrize("var", ["WALE_WABS_PREFIX", "WALE_GS_PREFIX", "WALE_SWIFT_PREFIX"])
def test_stores_walship_does_not_support_are_refused_by_name(var):
    with pytest.raises(ConfigError, match=f"{var} is set, but walship stores only in S3 or a filesystem"):
        settings(**{var: "wabs://container/path"})


@pytest.mark.parametrize("value, expected", [("stderr", "stderr"), ("syslog", "syslog"),
                                             ("stderr,syslog", "both"), ("syslog, stderr", "both")])
def test_log_destination_lists(value, expected):
    assert settings(WALE_LOG_DESTINATION=value).log_destination == expected


def test_unknown_log_destination_is_refused():
    with pytest.raises(ConfigError, match="WALE_LOG_DESTINATION 'kafka' is not understood"):
        settings(WALE_LOG_DESTINATION="kafka")


def test_syslog_facility_gpg_key_and_retries():
    s = settings(WALE_SYSLOG_FACILITY="LOCAL3", WALE_GPG_KEY_ID="0xDEADBEEF", WALE_RETRIES="3")
    assert (s.syslog_facility, s.gpg_key_id, s.s3_max_retries) == ("local3", "0xDEADBEEF", 3)


def test_boto2_security_token_becomes_the_session_token():
    s = settings(AWS_ACCESS_KEY_ID="AKIA", AWS_SECRET_ACCESS_KEY="secret", AWS_SECURITY_TOKEN="tok")
    assert (s.s3_access_key_id, s.s3_secret_access_key, s.s3_session_token) == ("AKIA", "secret", "tok")
    # the standard name wins: the chain reads AWS_SESSION_TOKEN itself
    s = settings(AWS_ACCESS_KEY_ID="AKIA", AWS_SECRET_ACCESS_KEY="secret", AWS_SECURITY_TOKEN="old",
                 AWS_SESSION_TOKEN="new")
    assert s.s3_session_token is None


def test_walship_variables_win_over_wale_ones():
    s = settings(WALE_S3_PREFIX="s3://old/x", WALSHIP_REPO="s3://new/y",
                 WALE_LOG_DESTINATION="syslog", WALSHIP_LOG_DESTINATION="stderr")
    assert (s.repo, s.log_destination) == ("s3://new/y", "stderr")
