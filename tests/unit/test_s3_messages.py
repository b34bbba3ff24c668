"""What the S3 store says when it fails, and which credentials it uses (no network: obstore's error texts)."""

import pytest

from walship.config import Settings
from walship.storage.s3 import S3Store, credential_source

RETRIED_RESET = ("Generic S3 error: Error performing PUT http://127.0.0.1:9000/b/pg/wal/x in 2.5s, after 4 retries, "
                 "max_retries: 4, retry_timeout: 20s  - HTTP error: error sending request ... IncompleteMessage")
METADATA_403 = ("Generic S3 error: Error performing PUT http://169.254.169.254/latest/api/token in 1.2ms - "
                "Server returned non-2xx status code: 403 Forbidden: ")


@pytest.fixture
def store(monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_PROFILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_METADATA_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", "/nonexistent")
    return S3Store("b", "pg", Settings(s3_endpoint="http://127.0.0.1:9000", s3_region="us-east-1"))


def test_a_failed_upload_says_how_often_and_how_long_it_was_tried(store):
    err = store._error(Exception(RETRIED_RESET), "writing", "wal/x")
    assert err.one_line().startswith("the connection to S3 at http://127.0.0.1:9000 broke while writing wal/x "
                                     "(after 5 attempts over 2.5 s)")
    streamed = store._error(Exception(RETRIED_RESET), "writing", "backups/b1/part_0001", streamed=True)
    assert "(a part after 5 attempts over 2.5 s; the streamed upload was not restarted)" in streamed.one_line()


def test_a_refusing_metadata_service_is_no_credentials_not_a_bucket_policy(store):
    line = store._error(Exception(METADATA_403), "writing", "wal/x").one_line()
    assert line.startswith("no usable AWS credentials (tried AWS_ACCESS_KEY_ID, AWS_WEB_IDENTITY_TOKEN_FILE, "
                           "profile default in /nonexistent/.aws/credentials, the container endpoint and instance "
                           "metadata at http://169.254.169.254: HTTP 403) for bucket b")
    assert "bucket policy" not in line


def test_the_credential_source_follows_the_chain(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("AWS_ACCESS_KEY_ID", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_PROFILE",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(var, raising=False)
    assert credential_source(Settings())[0] == "instance role (EC2 instance metadata)"
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/x")
    assert credential_source(Settings())[0].startswith("container credentials endpoint")
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "credentials").write_text("[default]\naws_access_key_id = AKIA1\naws_secret_access_key = s\n")
    source, keys, profile = credential_source(Settings())
    assert source == f"profile default ({tmp_path}/.aws/credentials)" and keys["access_key_id"] == "AKIA1"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA2")
    assert credential_source(Settings()) == ("environment (AWS_ACCESS_KEY_ID)", {}, None)
    s = Settings(s3_access_key_id="AKIA3", s3_secret_access_key="x")
    s.sources["s3_access_key_id"] = "file /etc/walship/walship.toml"
    assert credential_source(s)[0] == "walship setting s3_access_key_id (file /etc/walship/walship.toml)"
