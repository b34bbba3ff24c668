"""Settings: command-line flag > environment > config file > default.

Every setting has one name. Its environment variable is WALSHIP_<NAME>; in the
TOML file it is a top-level key `name`, or `key` inside a `[section]` where the
name is `section_key` (so `[s3] endpoint = ...` sets `s3_endpoint`).

WAL-E's environment (WALE_S3_PREFIX, WALE_FILE_PREFIX, WALE_S3_ENDPOINT, ...)
is read where walship's own variable is unset, so a WAL-E installation keeps
working after changing the program name.

This module is on the archive_command fast path: it imports nothing heavy.
"""

from __future__ import annotations

import os

from walship.errors import ConfigError

DEFAULT_CONFIG_PATHS = ("/etc/walship/walship.toml",)
SECRET_SETTINGS = {"s3_secret_access_key", "s3_session_token", "icinga_password",
                   "encryption_key", "nsca_password"}
CODECS = ("zstd", "lz4", "gzip", "none")
SYSLOG_FACILITIES = ("user", "daemon", "local0", "local1", "local2", "local3", "local4", "local5", "local6",
                     "local7")


class Settings:
    """Every setting with its default; an instance holds the values in force.

    A plain class rather than a dataclass: importing dataclasses (inspect, ast)
    costs ~15-45 ms, paid by every archive_command call on the fast path.
    """

    repo: str | None = None
    compression: str = "zstd"
    compression_level: int | None = None        # codec default when unset

    # S3 and S3-compatible stores
    s3_endpoint: str | None = None               # e.g. http://127.0.0.1:9000 for MinIO
    s3_region: str | None = None                 # AWS_REGION / AWS_DEFAULT_REGION when unset
    s3_path_style: bool | None = None            # None: path style iff a custom endpoint is set
    s3_sse: str | None = None                    # AES256 | aws:kms
    s3_sse_kms_key_id: str | None = None
    s3_storage_class: str | None = None          # STANDARD_IA, GLACIER_IR, ...
    s3_ca_file: str | None = None                # private CA of an S3-compatible store
    s3_access_key_id: str | None = None          # normally from the AWS credential chain
    s3_secret_access_key: str | None = None
    s3_session_token: str | None = None
    s3_profile: str | None = None                # AWS_PROFILE when unset
    s3_connect_timeout: float = 10.0
    s3_request_timeout: float = 300.0
    s3_max_retries: int = 8
    s3_retry_timeout: float = 180.0              # give up retrying one request after this long

    # WAL archiving
    push_batch: int = 8                          # segments one wal-push call uploads (itself + other .ready)
    push_concurrency: int = 4                    # parallel uploads in one call
    spool_dir: str | None = None                 # default: <pg_wal>/walship_spool
    fetch_prefetch: int = 8                      # segments wal-fetch downloads ahead
    fetch_retry_timeout: float = 60.0            # wal-fetch keeps retrying a failing store this long

    # base backups
    backup_concurrency: int = 2
    backup_part_size: int = 128 * 1024 * 1024    # uncompressed bytes per tar part (the unit of parallelism)
    retain: int | None = None                    # backup-push --retain
    backup_page_checksums: bool = True           # verify page checksums while reading (data checksums on)

    # logging
    log_destination: str = "stderr"              # stderr | syslog | both | none
    log_format: str = "text"                     # text | json
    log_level: str = "info"
    syslog_program: str = "walship"              # "{command}" expands to the command name
    syslog_facility: str = "user"
    syslog_address: str = "/dev/log"             # a socket path, or udp://host:port, tcp://host:port

    # monitoring
    icinga_url: str | None = None
    icinga_user: str | None = None
    icinga_password: str | None = None
    icinga_ca: str | None = None
    icinga_host: str | None = None
    icinga_service_backup: str = "PostgreSQL base backup push"
    icinga_service_archive: str = "PostgreSQL WAL archiving to S3"
    icinga_archive_ok_interval: float = 300.0
    nsca_host: str | None = None
    nsca_port: int = 5667
    nsca_password: str | None = None
    nsca_encryption: int = 1                     # send_nsca encryption_method (1 = XOR, nsca's default)
    metrics_file: str | None = None              # Prometheus textfile collector output

    # client-side encryption
    encryption_key: str | None = None
    encryption_key_file: str | None = None
    encryption_key_command: str | None = None
    gpg_key_id: str | None = None                # WALE_GPG_KEY_ID: WAL-E's key; its objects are decrypted with gpg

    def __init__(self, **values: object):
        self.sources: dict[str, str] = {}      # where each value came from, for `walship config`
        for name, value in values.items():
            if name not in _FIELDS:
                raise TypeError(f"unknown setting {name!r}")
            setattr(self, name, value)

    def replace(self, **changes: object) -> "Settings":
        copy = Settings(**{name: getattr(self, name) for name in _FIELDS}, **{})
        for name, value in changes.items():
            if name not in _FIELDS:
                raise TypeError(f"unknown setting {name!r}")
            setattr(copy, name, value)
        copy.sources = dict(self.sources)
        return copy

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Settings) and all(getattr(self, n) == getattr(other, n) for n in _FIELDS)

    def __repr__(self) -> str:
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in self.masked().items()) + ")"

    def masked(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for name in _FIELDS:
            value = getattr(self, name)
            if name in SECRET_SETTINGS and value:
                value = "********"
            out[name] = value
        return out


# name -> annotation text ("str | None", "int", ...), in declaration order
_FIELDS: dict[str, str] = {name: str(kind) for name, kind in Settings.__annotations__.items()}


def _convert(name: str, raw: object, origin: str) -> object:
    kind = _FIELDS[name]
    if raw is None:
        return None
    try:
        if "bool" in kind:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if "int" in kind:
            return int(raw)
        if "float" in kind:
            return float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{origin}: invalid value {raw!r} for {name}",
                          f"expected {kind.replace(' | None', '')}") from None
    return str(raw)


# WAL-E's storage prefixes, in the order WAL-E itself picks the first one set.
_WALE_PREFIXES = ("WALE_FILE_PREFIX", "WALE_GS_PREFIX", "WALE_S3_PREFIX", "WALE_SWIFT_PREFIX", "WALE_WABS_PREFIX")
_WALE_LOG_DESTINATIONS = {frozenset({"stderr"}): "stderr", frozenset({"syslog"}): "syslog",
                          frozenset({"stderr", "syslog"}): "both"}


def _wale_environment(env: dict[str, str]) -> dict[str, str]:
    """Translate WAL-E's variables into walship setting names (docs/migrating-from-wal-e.md)."""
    out: dict[str, str] = {}
    chosen = next((var for var in _WALE_PREFIXES if env.get(var)), None)
    if chosen == "WALE_S3_PREFIX":
        out["repo"] = env[chosen]
    elif chosen == "WALE_FILE_PREFIX":
        prefix = env[chosen]
        # WAL-E's form is file://localhost/absolute/path; file:///absolute/path means the same
        if prefix.startswith("file://localhost/"):
            prefix = "file:///" + prefix[len("file://localhost/"):]
        if not prefix.startswith("file:///"):
            raise ConfigError(f"WALE_FILE_PREFIX {prefix!r} is not a file:// URL of an absolute path",
                              "use file://localhost/absolute/path")
        out["repo"] = prefix
    elif chosen is not None:
        raise ConfigError(f"{chosen} is set, but walship stores only in S3 or a filesystem",
                          "copy the archive to S3 and set WALE_S3_PREFIX (or WALSHIP_REPO)")
    if env.get("WALE_S3_ENDPOINT"):
        out.update(_wale_s3_endpoint(env["WALE_S3_ENDPOINT"]))
    if env.get("WALE_S3_STORAGE_CLASS"):
        out["s3_storage_class"] = env["WALE_S3_STORAGE_CLASS"]
    if env.get("WALE_LOG_DESTINATION"):
        # WAL-E takes a comma-separated list (its default is "stderr,syslog")
        parts = frozenset(p.strip() for p in env["WALE_LOG_DESTINATION"].split(",") if p.strip())
        if parts not in _WALE_LOG_DESTINATIONS:
            raise ConfigError(f"WALE_LOG_DESTINATION {env['WALE_LOG_DESTINATION']!r} is not understood",
                              "use stderr, syslog or stderr,syslog")
        out["log_destination"] = _WALE_LOG_DESTINATIONS[parts]
    if env.get("WALE_SYSLOG_FACILITY"):
        out["syslog_facility"] = env["WALE_SYSLOG_FACILITY"].lower()
    if env.get("WALE_GPG_KEY_ID"):
        out["gpg_key_id"] = env["WALE_GPG_KEY_ID"]
    if env.get("WALE_RETRIES"):
        out["s3_max_retries"] = env["WALE_RETRIES"]
    if env.get("AWS_SECURITY_TOKEN") and not env.get("AWS_SESSION_TOKEN") and env.get("AWS_ACCESS_KEY_ID"):
        # boto 2's name for the session token of temporary credentials
        out["s3_access_key_id"] = env["AWS_ACCESS_KEY_ID"]
        out["s3_secret_access_key"] = env.get("AWS_SECRET_ACCESS_KEY", "")
        out["s3_session_token"] = env["AWS_SECURITY_TOKEN"]
    return out


def _wale_s3_endpoint(value: str) -> dict[str, str]:
    """WAL-E's form: protocol+calling_format://host[:port], e.g. https+path://s3.example:443."""
    scheme, sep, rest = value.partition("://")
    proto, _, style = scheme.partition("+")
    if not sep or proto not in ("http", "https") or style not in ("path", "virtualhost", "subdomain") \
            or not rest or "/" in rest.rstrip("/") or "@" in rest:
        raise ConfigError(f"WALE_S3_ENDPOINT {value!r} is not in WAL-E's form",
                          "use https+path://host:port (or https+virtualhost://host)")
    return {"s3_endpoint": f"{proto}://{rest.rstrip('/')}",
            "s3_path_style": "true" if style == "path" else "false"}


def _read_file(path: str) -> dict[str, object]:
    import tomllib

    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist",
                          "fix --config / WALSHIP_CONFIG") from None
    except PermissionError:
        raise ConfigError(f"config file {path} is not readable by this user",
                          "make it readable by the user that runs walship (postgres)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    flat: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            for sub, subvalue in value.items():
                flat[f"{key}_{sub}"] = subvalue
        else:
            flat[key] = value
    unknown = sorted(set(flat) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting {unknown[0]!r}",
                          "see `walship config` for the setting names")
    secrets = SECRET_SETTINGS & set(flat)
    if secrets:
        st = os.stat(path)
        if st.st_mode & 0o077:
            raise ConfigError(f"config file {path} holds secrets ({sorted(secrets)[0]}) but is readable by others",
                              f"chmod 600 {path}")
    return flat


def load_settings(flags: dict[str, object] | None = None,
                  env: dict[str, str] | None = None,
                  config_path: str | None = None) -> Settings:
    env = dict(os.environ) if env is None else env
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    settings = Settings()
    layers: list[tuple[str, dict[str, object]]] = []

    path = config_path or env.get("WALSHIP_CONFIG")
    if path:
        layers.append((f"file {path}", _read_file(path)))
    else:
        for candidate in DEFAULT_CONFIG_PATHS:
            if os.path.exists(candidate):
                layers.append((f"file {candidate}", _read_file(candidate)))
                break

    layers.append(("WAL-E environment", dict(_wale_environment(env))))
    own_env = {}
    for name in _FIELDS:
        value = env.get("WALSHIP_" + name.upper())
        if value is not None and value != "":
            own_env[name] = value
    layers.append(("environment", own_env))
    layers.append(("command line", flags))

    for origin, values in layers:
        for name, raw in values.items():
            if name not in _FIELDS:
                raise ConfigError(f"{origin}: unknown setting {name!r}")
            setattr(settings, name, _convert(name, raw, origin))
            settings.sources[name] = origin

    if settings.s3_region is None:
        settings.s3_region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    if s.compression not in CODECS:
        raise ConfigError(f"unknown compression {s.compression!r}", f"use one of {', '.join(CODECS)}")
    if s.log_destination not in ("stderr", "syslog", "both", "none"):
        raise ConfigError(f"unknown log destination {s.log_destination!r}", "use stderr, syslog, both or none")
    if s.syslog_facility.lower() not in SYSLOG_FACILITIES:
        raise ConfigError(f"unknown syslog facility {s.syslog_facility!r}", "use user, daemon or local0 ... local7")
    if s.log_format not in ("text", "json"):
        raise ConfigError(f"unknown log format {s.log_format!r}", "use text or json")
    if s.push_batch < 1 or s.push_concurrency < 1 or s.backup_concurrency < 1:
        raise ConfigError("push_batch, push_concurrency and backup_concurrency must be at least 1")
    if s.fetch_prefetch < 0:
        raise ConfigError("fetch_prefetch must be 0 or more")
    if s.s3_sse not in (None, "AES256", "aws:kms", "aws:kms:dsse"):
        raise ConfigError(f"unknown server-side encryption {s.s3_sse!r}", "use AES256 or aws:kms")
    if s.s3_sse_kms_key_id and s.s3_sse not in ("aws:kms", "aws:kms:dsse"):
        raise ConfigError("s3_sse_kms_key_id is set but s3_sse is not aws:kms", "set WALSHIP_S3_SSE=aws:kms")


def require_repo(settings: Settings) -> str:
    if not settings.repo:
        raise ConfigError("no repository configured",
                          "set WALSHIP_REPO (s3://bucket/prefix or file:///path) or pass --repo")
    return settings.repo
