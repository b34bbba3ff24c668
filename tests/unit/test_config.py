import os

import pytest

from walship.config import load_settings, require_repo
from walship.errors import ConfigError


def write(path, text, mode=0o600):
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


def test_precedence_flag_over_env_over_file_over_default(tmp_path):
    cfg = write(tmp_path / "w.toml", 'repo = "file:///from-file"\ncompression = "lz4"\n[s3]\nendpoint = "http://file:1"\n')
    s = load_settings({}, {"WALSHIP_CONFIG": cfg})
    assert (s.repo, s.compression, s.s3_endpoint, s.push_batch) == ("file:///from-file", "lz4", "http://file:1", 8)
    s = load_settings({}, {"WALSHIP_CONFIG": cfg, "WALSHIP_REPO": "s3://env/p"})
    assert s.repo == "s3://env/p" and s.sources["repo"] == "environment"
    s = load_settings({"repo": "file:///flag"}, {"WALSHIP_CONFIG": cfg, "WALSHIP_REPO": "s3://env/p"})
    assert s.repo == "file:///flag" and s.sources["repo"] == "command line"
    assert s.sources["compression"].startswith("file")


def test_wale_environment_is_understood():
    s = load_settings({}, {"WALE_S3_PREFIX": "s3://bucket/db1", "WALE_S3_ENDPOINT": "https+path://s3.example:8443",
                           "WALE_S3_STORAGE_CLASS": "STANDARD_IA"})
    assert s.repo == "s3://bucket/db1"
    assert s.s3_endpoint == "https://s3.example:8443" and s.s3_path_style is True
    assert s.s3_storage_class == "STANDARD_IA"
    s = load_settings({}, {"WALE_FILE_PREFIX": "file://localhost/var/backups/db1"})
    assert s.repo == "file:///var/backups/db1"
    # walship's own variable wins over WAL-E's
    s = load_settings({}, {"WALE_S3_PREFIX": "s3://old/x", "WALSHIP_REPO": "s3://new/y"})
    assert s.repo == "s3://new/y"


def test_bad_values_give_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="invalid value 'lots' for push_batch"):
        load_settings({}, {"WALSHIP_PUSH_BATCH": "lots"})
    with pytest.raises(ConfigError, match="unknown compression 'rar'"):
        load_settings({}, {"WALSHIP_COMPRESSION": "rar"})
    with pytest.raises(ConfigError, match="unknown setting 'repository'"):
        load_settings({}, {"WALSHIP_CONFIG": write(tmp_path / "a.toml", 'repository = "x"\n')})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings({}, {"WALSHIP_CONFIG": write(tmp_path / "b.toml", 'repo = \n')})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings({}, {"WALSHIP_CONFIG": str(tmp_path / "missing.toml")})
    with pytest.raises(ConfigError, match="no repository configured"):
        require_repo(load_settings({}, {}))


def test_config_file_with_secrets_must_not_be_readable_by_others(tmp_path):
    cfg = write(tmp_path / "s.toml", '[s3]\nsecret_access_key = "abc"\n', mode=0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_settings({}, {"WALSHIP_CONFIG": cfg})
    os.chmod(cfg, 0o600)
    s = load_settings({}, {"WALSHIP_CONFIG": cfg})
    assert s.masked()["s3_secret_access_key"] == "********"
