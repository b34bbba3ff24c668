"""One line per event: to stderr (text or JSON lines) and/or syslog.

The operations manual finds failures by syslog program name, so the program
name is a setting (`syslog_program`, "{command}" expands to the command), e.g.
`wal-e_postgres_base_backup_push` keeps an existing Kibana query working.

Events carry structured fields (segment, backup, bytes, duration_s, error);
JSON output writes them as keys, text output appends the useful ones.
"""

from __future__ import annotations

import json
import logging
import sys
import time

_LOGGER_NAME = "walship"
_STATE = {"command": "walship", "program": "walship"}
_FIELD_ORDER = ("segment", "backup", "bytes", "stored_bytes", "segments", "duration_s", "error")


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        extras = " ".join(f"{k}={fields[k]}" for k in _FIELD_ORDER if k in fields and k != "error")
        line = f"walship {_STATE['command']}: {record.levelname}: {record.getMessage()}"
        return f"{line} ({extras})" if extras else line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                  + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "program": _STATE["program"],
            "command": _STATE["command"],
            "event": getattr(record, "event", None) or "message",
            "message": record.getMessage(),
        }
        doc.update(getattr(record, "fields", {}))
        return json.dumps(doc, sort_keys=False, default=str)


class _SyslogFormatter(logging.Formatter):
    def __init__(self, inner: logging.Formatter):
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        # Python's SysLogHandler.ident is a raw prefix: "name: " makes it the program name.
        text = self.inner.format(record)
        if isinstance(self.inner, _TextFormatter):
            text = text.split(": ", 1)[1] if text.startswith("walship ") else text
        # One event, one syslog line: over TCP a newline would start a new message,
        # which then has no program name and escapes the Kibana query.
        return " ".join(text.splitlines())


def _syslog_handler(address: str, facility: str) -> logging.Handler:
    # imported here: logging.handlers costs ~15 ms, paid only when syslog is wanted
    import logging.handlers
    import socket
    fac = logging.handlers.SysLogHandler.facility_names.get(facility.lower())
    if fac is None:
        from walship.errors import ConfigError
        raise ConfigError(f"unknown syslog facility {facility!r}", "use user, daemon, local0 ... local7")
    if address.startswith(("udp://", "tcp://")):
        scheme, _, hostport = address.partition("://")
        host, _, port = hostport.rpartition(":")
        kind = socket.SOCK_DGRAM if scheme == "udp" else socket.SOCK_STREAM
        handler = logging.handlers.SysLogHandler(address=(host, int(port)), facility=fac, socktype=kind)
        if kind == socket.SOCK_STREAM:
            handler.append_nul = False   # rsyslog frames TCP messages by newline
            _newline_terminated(handler)
        return handler
    return logging.handlers.SysLogHandler(address=address, facility=fac)


def _newline_terminated(handler) -> None:
    original = handler.format

    def fmt(record: logging.LogRecord) -> str:
        return original(record) + "\n"

    handler.format = fmt  # type: ignore[method-assign]


def setup(command: str, settings=None) -> logging.Logger:
    """Configure the walship logger for one command run."""
    logger = logging.getLogger(_LOGGER_NAME)
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    logger.propagate = False
    _STATE["command"] = command
    _STATE.pop("syslog_failed", None)
    destination = getattr(settings, "log_destination", "stderr")
    fmt_name = getattr(settings, "log_format", "text")
    level = getattr(settings, "log_level", "info").upper()
    logger.setLevel(getattr(logging, level, logging.INFO))
    program = getattr(settings, "syslog_program", "walship").replace("{command}", command)
    _STATE["program"] = program
    formatter: logging.Formatter = _JsonFormatter() if fmt_name == "json" else _TextFormatter()

    if destination in ("stderr", "both"):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(formatter)
        logger.addHandler(h)
    if destination in ("syslog", "both"):
        try:
            h = _syslog_handler(getattr(settings, "syslog_address", "/dev/log"),
                                getattr(settings, "syslog_facility", "user"))
        except OSError as exc:
            # Logging must never make an archive or a backup fail: say so on stderr and go on.
            print(f"walship {command}: WARNING: cannot open syslog at "
                  f"{getattr(settings, 'syslog_address', '/dev/log')}: {exc}", file=sys.stderr)
        else:
            h.ident = f"{program}: "
            h.setFormatter(_SyslogFormatter(formatter))
            h.handleError = _syslog_write_failed  # type: ignore[method-assign]
            logger.addHandler(h)
    return logger


def _syslog_write_failed(record: logging.LogRecord) -> None:
    """A lost syslog line must not print logging's traceback (or fail the command): one warning, once."""
    if _STATE.get("syslog_failed"):
        return
    _STATE["syslog_failed"] = "yes"
    exc = sys.exc_info()[1]
    print(f"walship {_STATE['command']}: WARNING: cannot write to syslog: {exc}; "
          f"lost: {record.getMessage()}", file=sys.stderr)


def get() -> logging.Logger:
    return logging.getLogger(_LOGGER_NAME)


def event(level: int, name: str, message: str, **fields) -> None:
    get().log(level, message, extra={"event": name, "fields": fields})


def info(name: str, message: str, **fields) -> None:
    event(logging.INFO, name, message, **fields)


def warning(name: str, message: str, **fields) -> None:
    event(logging.WARNING, name, message, **fields)


def error(name: str, message: str, **fields) -> None:
    event(logging.ERROR, name, message, **fields)


def debug(name: str, message: str, **fields) -> None:
    event(logging.DEBUG, name, message, **fields)
