"""Settings: command-line flag > environment > config file > default.

Every setting has one name. Its environment variable is WALSHIP_<NAME>; in the
TOML file it is a top-level key `name`, or `key` inside a `[section]` where the
name is `section_key` (so `[s3] endpoint = ...` sets `s3_endpoint`).

WAL-E's environment (WALE_S3_PREFIX, WALE_FILE_PREFIX, WALE_S3_ENDPOINT, ...)
is read where walship's own variable is unset, so a WAL-E installation keeps
working after changing the program name.

OPTIONS declares every setting once (type, default, choices, bounds, secret,
help): converting and checking a value come from that declaration, so a bad
value, an unknown WALSHIP_* variable or an unknown key in the file is refused
when the settings are loaded, before any work starts (exit 2, one line).

This module is on the archive_command fast path: it imports nothing heavy.
"""

from __future__ import annotations

import math
import os

from walship.errors import ConfigError

TYPE_CHECKING = False          # typing's own would import typing on archive_command's fast path
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from typing import Any

DEFAULT_CONFIG_PATHS = ("/etc/walship/walship.toml",)
# WALSHIP_* variables that are not settings: the config file's path, and the development scripts'
# own variables (scripts/setup, scripts/demo, tests), so that a shell that ran them can run walship.
KNOWN_VARIABLES = frozenset({"WALSHIP_CONFIG", "WALSHIP_VENV", "WALSHIP_WALE_VENV",
                             "WALSHIP_DEMO_KEEP", "WALSHIP_TEST_PG_DIR"})
_DAY = 86400.0
_MIB = 1 << 20


class Option:
    """One setting: its type, default, allowed values and help. Validation and conversion come from here.
    A plain class with __slots__ rather than a dataclass: importing dataclasses costs every archive_command."""

    __slots__ = ("name", "kind", "default", "help", "choices", "low", "high", "secret", "check", "flag",
                 "flag_commands", "flag_help")

    def __init__(self, name: str, kind: str, default: object, help: str, *,
                 choices: tuple[str, ...] | Callable[[], tuple[str, ...]] = (),
                 low: float | None = None, high: float | None = None, secret: bool = False,
                 check: Callable[[str], str | None] | None = None,
                 flag: str | None = None, flag_commands: tuple[str, ...] = (), flag_help: str | None = None):
        self.name = name
        self.kind = kind                # "str", "int", "float" or "bool"
        self.default = default          # None: unset (the help says what happens then)
        self.help = help
        self.choices = choices          # the only values allowed (without regard to case), or a function of none
                                        # returning them
        self.low = low                  # inclusive bounds of an int or float
        self.high = high
        self.secret = secret            # masked by `walship config`; a file holding it must be chmod 600
        self.check = check              # (value) -> None or what is wrong, for values with a form (URLs)
        self.flag = flag                # its command-line flag, if it has one
        self.flag_commands = flag_commands  # the commands that take the flag; () = every command
        self.flag_help = flag_help      # the flag's help where it differs from help; "" = hidden (WAL-E's flags)

    def takes_flag(self, command: str | None) -> bool:
        """Whether `command` takes this setting's flag (None: whether every command does)."""
        if self.flag is None:
            return False
        return not self.flag_commands or command in self.flag_commands


def _url(*schemes: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        scheme, sep, rest = value.partition("://")
        if not sep or scheme not in schemes or not rest.strip("/"):
            return f"expected {' or '.join(s + '://host[:port]' for s in schemes)}"
        return None
    return check


def _syslog_address(value: str) -> str | None:
    if value.startswith(("udp://", "tcp://")):
        host, _, port = value.partition("://")[2].rpartition(":")
        if not host or not port.isdecimal() or not 0 < int(port) < 65536:
            return "expected udp://host:port or tcp://host:port"
        return None
    if not value.startswith("/"):
        return "expected a socket path (/dev/log), udp://host:port or tcp://host:port"
    return None


def _codecs() -> tuple[str, ...]:
    # asked only when compression is set: the fast path of archive_command need not import codec
    from walship.codec import CODECS
    return CODECS


_OPTIONS = (
    Option("repo", "str", None, "s3://bucket/prefix or file:///absolute/path", flag="--repo"),
    Option("compression", "str", "zstd", "codec of stored objects", choices=_codecs),
    Option("compression_level", "int", None, "codec level (default: the codec's; WAL uses a fast level)"),
    Option("allow_untested_pg", "bool", False, "run on a PostgreSQL major walship was not tested on (14 to 18)"),

    # S3 and S3-compatible stores
    Option("s3_endpoint", "str", None, "S3-compatible store, e.g. http://127.0.0.1:9000", check=_url("http", "https")),
    Option("s3_region", "str", None, "region (AWS_REGION / AWS_DEFAULT_REGION when unset)"),
    Option("s3_path_style", "bool", None, "path-style addressing (default: iff a custom endpoint is set)"),
    Option("s3_sse", "str", None, "server-side encryption", choices=("AES256", "aws:kms", "aws:kms:dsse")),
    Option("s3_sse_kms_key_id", "str", None, "KMS key of s3_sse = aws:kms"),
    Option("s3_storage_class", "str", None, "storage class, e.g. STANDARD_IA"),
    Option("s3_ca_file", "str", None, "CA certificate of a private S3-compatible store"),
    Option("s3_access_key_id", "str", None, "normally from the AWS credential chain"),
    Option("s3_secret_access_key", "str", None, "normally from the AWS credential chain", secret=True),
    Option("s3_session_token", "str", None, "normally from the AWS credential chain", secret=True),
    Option("s3_profile", "str", None, "AWS profile (AWS_PROFILE when unset)"),
    Option("s3_connect_timeout", "float", 10.0, "seconds to connect", low=0.1, high=_DAY),
    Option("s3_request_timeout", "float", 300.0, "seconds for one request", low=0.1, high=_DAY),
    Option("s3_max_retries", "int", 8, "retries of one request (uploads and downloads)", low=0, high=100),
    Option("s3_retry_timeout", "float", 180.0, "seconds one request keeps being retried", low=0, high=_DAY),

    # WAL archiving
    Option("push_batch", "int", 8, "segments one wal-push call uploads (itself + other .ready)", low=1, high=1000),
    Option("push_concurrency", "int", 4, "parallel uploads in one wal-push call", low=1, high=64,
           flag="--pool-size", flag_commands=("wal-push",), flag_help="parallel uploads (WAL-E's flag)"),
    Option("spool_dir", "str", None, "default: <pg_wal>/walship_spool"),
    Option("fetch_prefetch", "int", 8, "segments wal-fetch downloads ahead (0 = off)", low=0, high=1000,
           flag="--prefetch", flag_commands=("wal-fetch", "wal-prefetch")),
    Option("fetch_queue_bytes", "int", 128 * 1024 * 1024,
           "bytes of segments the prefetch worker keeps ready during recovery (refilled at half)",
           low=1024 * 1024, high=64 * 1024 ** 3),
    Option("fetch_queue_idle", "float", 60.0, "seconds without a restore_command call before the prefetch "
           "worker leaves (the next call starts it again)", low=1, high=_DAY),

    # streaming WAL (wal-receive)
    Option("receive_spool_dir", "str", None, "wal-receive's local spool of WAL not yet stored (required)"),
    Option("receive_slot", "str", "walship", "wal-receive's physical replication slot"),
    Option("receive_application_name", "str", "walship", "wal-receive's application_name"),
    Option("receive_synchronous", "bool", False, "wal-receive acknowledges WAL only once it is in the repository"),
    Option("receive_upload_interval", "float", 5.0, "asynchronous wal-receive: seconds between two stores",
           low=0.01, high=3600),
    Option("receive_spool_max_size", "int", 4096 * _MIB, "bytes of unstored WAL wal-receive spools before it "
           "stops reading", low=64 * _MIB, high=1 << 50),

    # base backups
    Option("backup_concurrency", "int", 2, "parallel part workers of backup-push/fetch", low=1, high=64,
           flag="--pool-size", flag_commands=("backup-push", "backup-fetch"),
           flag_help="parallel compress+upload (download+extract) workers"),
    Option("backup_part_size", "int", 128 * _MIB, "uncompressed bytes per tar part",
           low=64 * 1024, high=64 * 1024 * _MIB),
    Option("retain", "int", None, "backups backup-push --retain keeps", low=1, high=100000),
    Option("backup_page_checksums", "bool", True, "verify page checksums while backup-push reads (data checksums on)"),
    Option("backup_max_rate", "str", None, "bytes of the data directory backup-push reads per second, all "
           "workers together, e.g. 50M or 200MB/s (k, M, G: powers of 1000; Ki, Mi, Gi: of 1024; a plain "
           "number: bytes/s); unset: as fast as it can", check=lambda value: _rate_problem(value),
           flag="--max-rate", flag_commands=("backup-push",), flag_help="read at most RATE bytes of the data "
           "directory per second, e.g. 50M or 200MB/s (k/M/G = 1000s, Ki/Mi/Gi = 1024s)"),
    Option("backup_low_priority", "bool", True, "backup-push runs at a lower CPU (nice +10) and I/O priority "
           "(best-effort, lowest) than the server it reads"),
    Option("full_every", "int", 0, "backup-push without --full/--incremental is incremental until a chain holds this "
           "many backups, the full counted (0: always a full)", low=0, high=1000),
    Option("full_max_age_days", "float", None, "... and takes a full once the chain's full is older than this",
           low=0, high=100000),
    Option("full_chain_size", "float", 1.0, "... or once the chain's incrementals together store more than this "
           "many times its full (a restore reads every backup of the chain; 0: no limit)", low=0, high=1000),

    # logging
    Option("log_destination", "str", "stderr", "where log lines go", choices=("stderr", "syslog", "both", "none"),
           flag="--log-destination"),
    Option("log_format", "str", "text", "log lines as text or JSON", choices=("text", "json"), flag="--log-format"),
    Option("log_level", "str", "info", "least severe level logged", choices=("debug", "info", "warning", "error")),
    Option("syslog_program", "str", "walship", 'syslog program name ("{command}" expands to the command)',
           flag="--syslog-program"),
    Option("syslog_facility", "str", "user", "syslog facility",
           choices=("user", "daemon", "local0", "local1", "local2", "local3", "local4", "local5", "local6",
                    "local7")),
    Option("syslog_address", "str", "/dev/log", "a socket path, or udp://host:port, tcp://host:port",
           check=_syslog_address),

    # monitoring
    Option("icinga_url", "str", None, "Icinga 2 API, https://host:5665", check=_url("https", "http")),
    Option("icinga_user", "str", None, "Icinga 2 API user"),
    Option("icinga_password", "str", None, "Icinga 2 API password", secret=True),
    Option("icinga_ca", "str", None, "CA certificate of the Icinga 2 API"),
    Option("icinga_host", "str", None, "host object the results are for"),
    Option("icinga_service_backup", "str", "PostgreSQL base backup push", "service of backup results"),
    Option("icinga_service_archive", "str", "PostgreSQL WAL archiving to S3", "service of archiving results"),
    Option("icinga_archive_ok_interval", "float", 300.0, "seconds between two archiving OK results",
           low=0, high=_DAY),
    Option("nsca_host", "str", None, "send_nsca target host"),
    Option("nsca_port", "int", 5667, "send_nsca target port", low=1, high=65535),
    Option("nsca_password", "str", None, "send_nsca password", secret=True),
    Option("nsca_encryption", "int", 1, "send_nsca encryption_method (1 = XOR, nsca's default)", low=0, high=26),
    Option("metrics_file", "str", None, "Prometheus textfile collector output"),

    # client-side encryption
    Option("encryption_key", "str", None, "base64 keys, one per line (the first encrypts)", secret=True),
    Option("encryption_key_file", "str", None, "file of base64 keys, one per line"),
    Option("encryption_key_command", "str", None, "command printing base64 keys, one per line"),
    Option("gpg_key_id", "str", None, "WAL-E's gpg key: its objects are decrypted with gpg", flag="--gpg-key-id",
           flag_help=""),

    # wal-receive's passive result
    Option("icinga_service_receive", "str", "PostgreSQL WAL streaming (wal-receive)",
           "service of wal-receive's results"),
    Option("icinga_receive_ok_interval", "float", 300.0, "seconds between two wal-receive OK results (a change "
                                                         "of state is sent at once)", low=1, high=_DAY),
)
OPTIONS: dict[str, Option] = {option.name: option for option in _OPTIONS}
SECRET_SETTINGS = frozenset(option.name for option in _OPTIONS if option.secret)
_KIND_TYPES: dict[str, type] = {"str": str, "int": int, "float": float}


def add_setting_flags(parser: argparse.ArgumentParser, command: str | None = None) -> None:
    """The flags the settings declare: command None adds the ones every command takes (to the shared
    parent parser), a command's name those only it takes. Each flag's dest is its setting's name."""
    import argparse  # only here: the parser is being built, argparse is loaded already

    for option in _OPTIONS:
        own = bool(option.flag_commands)       # a shared flag comes with the parent parser, once
        if not option.takes_flag(command) or own != (command is not None):
            continue
        kwargs: dict[str, object] = {"dest": option.name, "type": _KIND_TYPES[option.kind]}
        if option.choices and not callable(option.choices):
            kwargs["choices"] = list(option.choices)
        if option.flag_help == "":
            kwargs["help"] = argparse.SUPPRESS
        else:
            kwargs["help"] = f"{option.flag_help or option.help} (env WALSHIP_{option.name.upper()})"
        parser.add_argument(option.flag, **kwargs)  # type: ignore[arg-type]  # kwargs built per option kind


def flag_values(args: object) -> dict[str, object]:
    """The settings given as flags on a parsed command line (None where a flag was not given)."""
    return {option.name: getattr(args, option.name, None) for option in _OPTIONS if option.flag is not None}


class Settings:
    """Every setting with its default (from OPTIONS); an instance holds the values in force.

    A plain class rather than a dataclass: importing dataclasses (inspect, ast)
    costs ~15-45 ms, paid by every archive_command call on the fast path.
    Built directly (tests, library use) it takes values as given; load_settings validates them.
    """

    def __init__(self, **values: object):
        self.sources: dict[str, str] = {}      # where each value came from, for `walship config`
        for name, value in values.items():
            if name not in OPTIONS:
                raise TypeError(f"unknown setting {name!r}")
            setattr(self, name, value)

    if TYPE_CHECKING:
        # The attributes come from OPTIONS, declared once there; the type checker takes them as Any.
        def __getattr__(self, name: str) -> Any: ...

        def __setattr__(self, name: str, value: Any) -> None: ...

    def replace(self, **changes: object) -> Settings:
        copy = Settings(**{name: getattr(self, name) for name in OPTIONS})
        for name, value in changes.items():
            if name not in OPTIONS:
                raise TypeError(f"unknown setting {name!r}")
            setattr(copy, name, value)
        copy.sources = dict(self.sources)
        return copy

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Settings) and all(getattr(self, n) == getattr(other, n) for n in OPTIONS)

    def __repr__(self) -> str:
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in self.masked().items()) + ")"

    def masked(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for name in OPTIONS:
            value = getattr(self, name)
            if name in SECRET_SETTINGS and value:
                value = "********"
            out[name] = value
        return out


for _option in _OPTIONS:
    setattr(Settings, _option.name, _option.default)
del _option

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def convert(name: str, raw: object, where: str) -> object:
    """The value of setting name given as raw (a string from the environment, a TOML value, a flag),
    checked against its declaration; ConfigError (one line: where, what, what to do) otherwise."""
    option = OPTIONS[name]
    if raw is None:
        return None
    value = _typed(option, raw, where)
    choices = option.choices() if callable(option.choices) else option.choices
    if choices:
        match = next((c for c in choices if c.lower() == str(value).lower()), None)
        if match is None:
            raise ConfigError(f"unknown {name.replace('_', ' ')} {raw!r} ({where})",
                              f"use one of {', '.join(choices)}")
        value = match
    if option.low is not None and value < option.low or option.high is not None and value > option.high:
        raise ConfigError(f"{name} = {raw!r} is out of range ({where})",
                          f"use {_number(option.low)} to {_number(option.high)} ({option.help})")
    if option.check is not None:
        problem = option.check(value)
        if problem:
            raise ConfigError(f"invalid {name} {raw!r} ({where})", problem)
    return value


def _typed(option: Option, raw: object, where: str) -> Any:
    """raw as the option's kind: TOML gives typed values, the environment strings."""
    text = raw.strip().lower() if isinstance(raw, str) else None
    if option.kind == "str":
        return str(raw)
    if option.kind == "bool":
        if isinstance(raw, bool) or text in _TRUE + _FALSE:
            return raw if isinstance(raw, bool) else text in _TRUE
    elif isinstance(raw, bool):
        pass                                 # TOML's true is no number
    elif option.kind == "int":
        number = raw if isinstance(raw, int) else _parse(int, text)
        if number is not None:
            return number
    elif option.kind == "float":
        number = float(raw) if isinstance(raw, (int, float)) else _parse(float, text)
        if number is not None and math.isfinite(number):
            return number
    expected = {"bool": "true or false", "int": "a whole number", "float": "a number"}[option.kind]
    raise ConfigError(f"invalid value {raw!r} for {option.name} ({where})", f"expected {expected}")


def _parse(kind: type, text: str | None) -> int | float | None:
    if text is None:
        return None
    try:
        return kind(text)
    except ValueError:
        return None


def _number(value: float | None) -> str:
    if value is None:
        return "any"
    return str(int(value)) if float(value).is_integer() else str(value)


def _nearest(name: str, candidates: list[str]) -> str:
    """"did you mean X?" for a misspelled name ("" if nothing is close); difflib is imported only here,
    on the error path."""
    import difflib
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f"did you mean {close[0]}?" if close else ""


# WAL-E's storage prefixes, in the order WAL-E itself picks the first one set.
_WALE_PREFIXES = ("WALE_FILE_PREFIX", "WALE_GS_PREFIX", "WALE_S3_PREFIX", "WALE_SWIFT_PREFIX", "WALE_WABS_PREFIX")
_WALE_LOG_DESTINATIONS = {frozenset({"stderr"}): "stderr", frozenset({"syslog"}): "syslog",
                          frozenset({"stderr", "syslog"}): "both"}


def wale_file_prefix_to_repo(prefix: str) -> str:
    """WAL-E's file prefix (WALE_FILE_PREFIX, --file-prefix) as a walship repository URL: WAL-E's form is
    file://localhost/absolute/path, which file:///absolute/path means too."""
    if prefix.startswith("file://localhost/"):
        return "file:///" + prefix[len("file://localhost/"):]
    return prefix


def _wale_environment(env: dict[str, str]) -> dict[str, str]:
    """Translate WAL-E's variables into walship setting names (docs/migrating-from-wal-e.md)."""
    out: dict[str, str] = {}
    chosen = next((var for var in _WALE_PREFIXES if env.get(var)), None)
    if chosen == "WALE_S3_PREFIX":
        out["repo"] = env[chosen]
    elif chosen == "WALE_FILE_PREFIX":
        prefix = wale_file_prefix_to_repo(env[chosen])
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


_BARE_KEY = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_DIGITS = frozenset("0123456789")


def _simple_toml_value(text: str) -> tuple[object, str] | None:
    """The value at the start of text and what follows it, for the plain forms a config file holds (a string
    without escapes, a decimal integer, true, false); None for anything else."""
    if text[:1] in ('"', "'"):
        end = text.find(text[0], 1)
        value = text[1:end]
        if end < 0 or (text[0] == '"' and "\\" in value):
            return None
        return value, text[end + 1:]
    word, _, rest = text.partition(" ")
    word, tab, after_tab = word.partition("\t")
    rest = after_tab + " " + rest if tab else rest
    word, hash_, comment = word.partition("#")
    rest = "#" + comment + " " + rest if hash_ else rest
    if word in ("true", "false"):
        return word == "true", rest
    digits = word[1:] if word[:1] == "-" else word
    if digits and _DIGITS.issuperset(digits) and (digits == "0" or digits[0] != "0"):
        return int(word), rest
    return None


def _simple_toml(text: str) -> dict[str, object] | None:
    """What tomllib reads from text, when text is only comments, [table] headers and `key = value` lines of
    _simple_toml_value's forms; None when it holds anything else (then tomllib reads it, and says what is wrong).
    Why: tomllib (with re, datetime and string behind it) costs restore_command's cold call 9 ms of its 20."""
    if any(c < " " and c not in "\t\n" or c == "\x7f" for c in text):
        return None                          # control characters: tomllib refuses them (or reads them) best
    data: dict[str, object] = {}
    table = data
    for line in text.split("\n"):
        line = line.strip(" \t")
        if not line or line[0] == "#":
            continue
        if line[0] == "[":
            name, close, rest = line[1:].partition("]")
            name = name.strip(" \t")
            rest = rest.strip(" \t")
            if (not close or not name or not _BARE_KEY.issuperset(name) or name in data
                    or (rest and rest[0] != "#")):
                return None
            table = data[name] = {}
            continue
        key, equals, rest = line.partition("=")
        key = key.strip(" \t")
        if not equals or not key or not _BARE_KEY.issuperset(key) or key in table:
            return None
        parsed = _simple_toml_value(rest.lstrip(" \t"))
        if parsed is None:
            return None
        value, rest = parsed
        rest = rest.strip(" \t")
        if rest and rest[0] != "#":
            return None
        table[key] = value
    return data


def _read_file(path: str) -> dict[str, object]:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist",
                          "fix --config / WALSHIP_CONFIG") from None
    except PermissionError:
        raise ConfigError(f"config file {path} is not readable by this user",
                          "make it readable by the user that runs walship (postgres)") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory", "fix --config / WALSHIP_CONFIG") from None
    try:
        simple = None if b"\r" in raw else _simple_toml(raw.decode())
    except UnicodeDecodeError:
        simple = None
    if simple is not None:
        data = simple
    else:
        import tomllib
        try:
            data = tomllib.loads(raw.decode())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    flat: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            for sub, subvalue in value.items():
                flat[f"{key}_{sub}"] = subvalue
        else:
            flat[key] = value
    unknown = sorted(set(flat) - set(OPTIONS))
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting {unknown[0]!r}",
                          _nearest(unknown[0], list(OPTIONS)) or "see `walship config` for the setting names")
    secrets = SECRET_SETTINGS & set(flat)
    if secrets:
        st = os.stat(path)
        if st.st_mode & 0o077:
            raise ConfigError(f"config file {path} holds secrets ({sorted(secrets)[0]}) but is readable by others",
                              f"chmod 600 {path}")
    return flat


def _own_environment(env: dict[str, str]) -> dict[str, str]:
    """walship's variables as setting names; an unknown WALSHIP_* variable (a typo) is an error,
    not silently ignored."""
    out: dict[str, str] = {}
    for var, value in env.items():
        if not var.startswith("WALSHIP_") or var in KNOWN_VARIABLES:
            continue
        name = var[len("WALSHIP_"):].lower()
        if name not in OPTIONS:
            near = _nearest(var, ["WALSHIP_" + n.upper() for n in OPTIONS] + sorted(KNOWN_VARIABLES))
            raise ConfigError(f"unknown environment variable {var}",
                              (near + " " if near else "") + "(`walship config` lists the settings)")
        if value != "":
            out[name] = value
    return out


def load_settings(flags: dict[str, object] | None = None,
                  env: dict[str, str] | None = None,
                  config_path: str | None = None) -> Settings:
    """The settings in force: every value checked against its declaration in OPTIONS before any work starts."""
    env = dict(os.environ) if env is None else env
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    settings = Settings()
    # (source shown by `walship config`, how to name one value's origin in an error, values)
    layers: list[tuple[str, object, dict[str, object]]] = []

    path = config_path or env.get("WALSHIP_CONFIG")
    if not path:
        path = next((candidate for candidate in DEFAULT_CONFIG_PATHS if os.path.exists(candidate)), None)
    if path:
        layers.append((f"file {path}", lambda name, p=path: f"{name} in {p}", _read_file(path)))
    layers.append(("WAL-E environment", lambda name: "WAL-E environment", dict(_wale_environment(env))))
    layers.append(("environment", lambda name: "WALSHIP_" + name.upper(), dict(_own_environment(env))))
    layers.append(("command line", lambda name: "command line", flags))

    origins: dict[str, str] = {}        # setting -> where its value came from, named for an error message
    for source, where, values in layers:
        for name, raw in values.items():
            if name not in OPTIONS:
                raise ConfigError(f"{source}: unknown setting {name!r}")
            origins[name] = where(name)  # type: ignore[operator]
            setattr(settings, name, convert(name, raw, origins[name]))
            settings.sources[name] = source

    if settings.s3_region is None:
        settings.s3_region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    _check_combinations(settings, origins)
    return settings


def _check_combinations(s: Settings, origins: dict[str, str]) -> None:
    """Rules between settings (each value alone was checked by convert)."""
    if s.compression_level is not None:
        from walship.codec import level_error
        problem = level_error(s.compression, s.compression_level)
        if problem:
            raise ConfigError(f"compression_level {s.compression_level} is not valid for compression "
                              f"{s.compression} ({origins['compression_level']})", problem)
    if s.s3_sse_kms_key_id and s.s3_sse not in ("aws:kms", "aws:kms:dsse"):
        raise ConfigError("s3_sse_kms_key_id is set but s3_sse is not aws:kms", "set WALSHIP_S3_SSE=aws:kms")


def require_repo(settings: Settings) -> str:
    if not settings.repo:
        raise ConfigError("no repository configured",
                          "set WALSHIP_REPO (s3://bucket/prefix or file:///path) or pass --repo")
    return settings.repo


def show_command(command: str, args: argparse.Namespace, settings: Settings,
                 store_factory: Callable[[], object]) -> int:
    """`walship config [--json]`: every setting, its value (secrets masked) and where it came from; for an S3
    repository also the source of the AWS credentials (never their values), which are not settings but
    decide everything."""
    values = settings.masked()
    credentials = None
    if not settings.repo or settings.repo.startswith("s3://"):
        from walship.storage.s3 import describe_credentials
        credentials = describe_credentials(settings)
    if args.json:
        import json
        doc = {k: {"value": v, "source": settings.sources.get(k, "default")} for k, v in values.items()}
        if credentials is not None:
            doc["s3_credentials"] = {"value": credentials, "source": "AWS credential chain"}
        print(json.dumps(doc, indent=2, default=str))
        return 0
    width = max(len(k) for k in values)
    for key, value in values.items():
        shown = "" if value is None else value
        print(f"{key:<{width}}  {shown!s:<40}  ({settings.sources.get(key, 'default')})")
    if credentials is not None:
        print(f"{'s3_credentials':<{width}}  {credentials}  (AWS credential chain)")
    return 0


# --- rates (backup_max_rate) ---------------------------------------------------

_RATE_UNITS = {"": 1, "k": 1000, "m": 1000 ** 2, "g": 1000 ** 3, "t": 1000 ** 4,
               "ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30, "ti": 1 << 40}
MIN_RATE = 100_000             # below this a value is a mistake (a unit left out), not a wish for a week-long backup


def parse_rate(text: str) -> int:
    """Bytes per second of a rate such as 50M, 200MB/s, 1.5GiB/s or 1000000; ValueError (saying what is
    wrong) otherwise. Units without regard to case: k, M, G, T are powers of 1000, Ki, Mi, Gi, Ti of 1024;
    a trailing B and /s are optional."""
    raw = text.strip()
    body = raw.lower().removesuffix("/s").removesuffix("b").strip()
    digits = len(body) - len(body.lstrip("0123456789."))
    number, unit = body[:digits], body[digits:].strip()
    if unit not in _RATE_UNITS or not number or number.count(".") > 1 or number == ".":
        raise ValueError(f"{raw!r} is not a rate: expected a number of bytes per second with an optional unit, "
                         "e.g. 50M, 200MB/s, 1GiB/s")
    rate = int(float(number) * _RATE_UNITS[unit])
    if rate < MIN_RATE:
        raise ValueError(f"{raw!r} is {rate} bytes/s, below the least rate walship takes ({MIN_RATE // 1000}k): "
                         "was a unit left out? e.g. 50M")
    return rate


def _rate_problem(value: str) -> str | None:
    try:
        parse_rate(value)
    except ValueError as exc:
        return str(exc)
    return None
