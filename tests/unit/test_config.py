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


# --- every setting checked when loaded, from its one declaration -------------------------

@pytest.mark.parametrize("env, expected", [
    # backup_part_size 0 or -1 made backup-push loop forever
    ({"WALSHIP_BACKUP_PART_SIZE": "0"}, r"backup_part_size = '0' is out of range \(WALSHIP_BACKUP_PART_SIZE\); use 65536"),
    ({"WALSHIP_BACKUP_PART_SIZE": "-1"}, r"backup_part_size = '-1' is out of range"),
    # a level the codec does not have passed `walship config` and then killed wal-push
    ({"WALSHIP_COMPRESSION_LEVEL": "99"}, r"compression_level 99 is not valid for compression zstd.*zstd takes levels 1 to 22"),
    ({"WALSHIP_COMPRESSION": "lz4", "WALSHIP_COMPRESSION_LEVEL": "17"}, r"lz4 takes levels 0 to 16"),
    ({"WALSHIP_COMPRESSION": "gzip", "WALSHIP_COMPRESSION_LEVEL": "10"}, r"gzip takes levels 0 to 9"),
    ({"WALSHIP_COMPRESSION": "none", "WALSHIP_COMPRESSION_LEVEL": "3"}, r"compression none takes no level"),
    # negative timeouts reached obstore as a negative timedelta
    ({"WALSHIP_S3_CONNECT_TIMEOUT": "-1"}, r"s3_connect_timeout = '-1' is out of range"),
    ({"WALSHIP_S3_REQUEST_TIMEOUT": "-5"}, r"s3_request_timeout = '-5' is out of range"),
    ({"WALSHIP_S3_RETRY_TIMEOUT": "-1"}, r"s3_retry_timeout = '-1' is out of range"),
    ({"WALSHIP_S3_MAX_RETRIES": "-1"}, r"s3_max_retries = '-1' is out of range"),
    ({"WALSHIP_S3_REQUEST_TIMEOUT": "nan"}, r"invalid value 'nan' for s3_request_timeout"),
    ({"WALSHIP_PUSH_BATCH": "0"}, r"push_batch = '0' is out of range"),
    ({"WALSHIP_PUSH_CONCURRENCY": "2.5"}, r"invalid value '2.5' for push_concurrency.*whole number"),
    ({"WALSHIP_NSCA_PORT": "70000"}, r"nsca_port = '70000' is out of range"),
    ({"WALSHIP_S3_PATH_STYLE": "maybe"}, r"invalid value 'maybe' for s3_path_style.*true or false"),
    ({"WALSHIP_S3_ENDPOINT": "minio:9000"}, r"invalid s3_endpoint 'minio:9000'.*http://host"),
    ({"WALSHIP_SYSLOG_ADDRESS": "udp://loghost:syslog"}, r"invalid syslog_address.*udp://host:port"),
    ({"WALSHIP_LOG_LEVEL": "verbose"}, r"unknown log level 'verbose'.*debug, info, warning, error"),
    ({"WALSHIP_S3_SSE": "kms"}, r"unknown s3 sse 'kms'"),
])
def test_bad_values_are_refused_when_loaded(env, expected):
    with pytest.raises(ConfigError, match=expected) as caught:
        load_settings({}, env)
    assert "\n" not in caught.value.one_line() and caught.value.exit_code == 2


def test_a_misspelled_or_retired_variable_is_an_error_naming_the_nearest_setting():
    with pytest.raises(ConfigError, match="unknown environment variable WALSHIP_S3_ENDPIONT; "
                                          "did you mean WALSHIP_S3_ENDPOINT?"):
        load_settings({}, {"WALSHIP_S3_ENDPIONT": "http://127.0.0.1:9000"})
    # defined and never used: removed, so setting it is refused rather than silently ignored
    with pytest.raises(ConfigError, match="unknown environment variable WALSHIP_FETCH_RETRY_TIMEOUT"):
        load_settings({}, {"WALSHIP_FETCH_RETRY_TIMEOUT": "60"})
    assert load_settings({}, {"WALSHIP_CONFIG": "", "WALSHIP_REPO": "file:///r"}).repo == "file:///r"


def test_a_misspelled_key_in_the_file_names_the_nearest_setting(tmp_path):
    cfg = write(tmp_path / "w.toml", '[s3]\nendpiont = "http://127.0.0.1:9000"\n')
    with pytest.raises(ConfigError, match="unknown setting 's3_endpiont'; did you mean s3_endpoint?"):
        load_settings({}, {"WALSHIP_CONFIG": cfg})
    cfg = write(tmp_path / "x.toml", 'backup_part_size = 0\n')
    with pytest.raises(ConfigError, match=r"backup_part_size = 0 is out of range \(backup_part_size in .*x.toml\)"):
        load_settings({}, {"WALSHIP_CONFIG": cfg})


def test_values_are_converted_from_their_declaration(tmp_path):
    cfg = write(tmp_path / "w.toml", 'compression = "LZ4"\ncompression_level = 12\n[s3]\nconnect_timeout = 2\n'
                                     'path_style = true\n')
    s = load_settings({"push_concurrency": 3}, {"WALSHIP_CONFIG": cfg, "WALSHIP_LOG_DESTINATION": "Syslog",
                                                "WALSHIP_S3_MAX_RETRIES": "0", "WALSHIP_S3_SSE": "aes256",
                                                "WALSHIP_COMPRESSION_LEVEL": ""})
    assert (s.compression, s.compression_level, s.s3_connect_timeout, s.s3_path_style) == ("lz4", 12, 2.0, True)
    assert (s.log_destination, s.s3_max_retries, s.s3_sse, s.push_concurrency) == ("syslog", 0, "AES256", 3)
    assert isinstance(s.s3_connect_timeout, float)
    # zstd's fast levels are negative
    assert load_settings({}, {"WALSHIP_COMPRESSION_LEVEL": "-5"}).compression_level == -5


def test_a_bad_command_line_value_is_refused_too():
    with pytest.raises(ConfigError, match=r"push_concurrency = 0 is out of range \(command line\)"):
        load_settings({"push_concurrency": 0}, {})


def test_numbers_and_booleans_from_the_environment_and_from_toml(tmp_path):
    # "1" and "0" are numbers for a number and booleans for a boolean; TOML's true is no number
    s = load_settings({}, {"WALSHIP_PUSH_BATCH": "1", "WALSHIP_S3_MAX_RETRIES": "0", "WALSHIP_S3_PATH_STYLE": "0"})
    assert (s.push_batch, s.s3_max_retries, s.s3_path_style) == (1, 0, False)
    cfg = write(tmp_path / "w.toml", "push_batch = true\n")
    with pytest.raises(ConfigError, match="invalid value True for push_batch"):
        load_settings({}, {"WALSHIP_CONFIG": cfg})
    with pytest.raises(ConfigError, match="invalid value 'inf' for s3_request_timeout"):
        load_settings({}, {"WALSHIP_S3_REQUEST_TIMEOUT": "inf"})
