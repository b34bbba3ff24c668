"""One line per event: to stderr (text or JSON lines) and/or syslog.

The operations manual finds failures by syslog program name, so the program
name is a setting (`syslog_program`, "{command}" expands to the command), e.g.
`wal-e_postgres_base_backup_push` keeps an existing Kibana query working.

Events carry structured fields (segment, backup, bytes, duration_s, error);
JSON output writes them as keys, text output appends the useful ones.

Why not the `logging` module: restore_command and archive_command run one
process per segment, and `logging` (with the traceback, string and re modules
it pulls in) cost such a call about 5 ms of its 10 ms budget for a miss. What
walship needs is small: a level, one or two sinks, and the syslog wire format
(RFC 3164 as syslogd reads it from a socket: `<PRI>program: message`, NUL
terminated on datagram and unix sockets, newline terminated over TCP, where
rsyslog frames by newline). Logging must never make an archive or a backup
fail: a sink that cannot be written says so once on stderr and the command
goes on.
"""

from __future__ import annotations

import _thread
import errno
import sys
import time

TYPE_CHECKING = False          # typing's own would import typing on archive_command's fast path
if TYPE_CHECKING:
    import socket

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40
_LEVEL_NAMES = {DEBUG: "DEBUG", INFO: "INFO", WARNING: "WARNING", ERROR: "ERROR"}
_SYSLOG_SEVERITY = {DEBUG: 7, INFO: 6, WARNING: 4, ERROR: 3}
_FACILITIES = {"user": 1, "daemon": 3, **{f"local{n}": 16 + n for n in range(8)}}
_FIELD_ORDER = ("segment", "backup", "bytes", "stored_bytes", "segments", "duration_s", "error")


class _Sinks:
    """Where this run's lines go; set by setup(), one per process."""

    def __init__(self) -> None:
        self.command = "walship"
        self.program = "walship"
        self.level = INFO
        self.json = False
        self.to_stderr = True
        self.syslog: _Syslog | None = None
        self.lock = _thread.allocate_lock()        # lines of the backup's worker threads never interleave


_SINKS = _Sinks()


class _Syslog:
    """A connection to syslogd: a unix socket (datagram, or stream when that is what the socket is), UDP or TCP."""

    def __init__(self, address: str, facility: int, program: str):
        import socket
        self.facility, self.ident = facility, f"{program}: "
        self.address = address
        self.stream_framing = False
        self.sock: socket.socket | None = None
        self.warned = False
        if address.startswith(("udp://", "tcp://")):
            scheme, _, hostport = address.partition("://")
            host, _, port = hostport.rpartition(":")
            if scheme == "tcp":
                self.sock = socket.create_connection((host, int(port)), timeout=5)
                self.stream_framing = True
            else:
                self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
                self.sock.connect((host, int(port)))
        else:
            try:        # as C's openlog: syslogd may come up later, the first line retries
                self._connect_unix()
            except OSError:
                self.sock = None

    def _connect_unix(self) -> None:
        import socket
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            sock = socket.socket(socket.AF_UNIX, kind)
            try:
                sock.connect(self.address)
            except OSError as exc:
                sock.close()
                if kind == socket.SOCK_STREAM or exc.errno != errno.EPROTOTYPE:    # a stream socket: try that
                    raise
                continue
            self.sock = sock
            return

    def send(self, level: int, text: str) -> None:
        # one event, one syslog line: a newline would start a message without the program name, which then
        # escapes the Kibana query
        text = " ".join(text.splitlines())
        end = "\n" if self.stream_framing else "\x00"
        payload = f"<{self.facility * 8 + _SYSLOG_SEVERITY[level]}>{self.ident}{text}{end}".encode()
        try:
            if self.sock is None:
                raise OSError("not connected")
            self.sock.sendall(payload)
        except OSError:
            if self.stream_framing or self.address.startswith("udp://"):
                raise
            if self.sock is not None:       # syslogd restarted: one reconnect, as a fresh openlog would
                self.sock.close()
                self.sock = None
            self._connect_unix()
            assert self.sock is not None
            self.sock.sendall(payload)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def setup(command: str, settings=None) -> None:
    """Configure where this command run's lines go."""
    if _SINKS.syslog is not None:
        _SINKS.syslog.close()
        _SINKS.syslog = None
    _SINKS.command = command
    destination = getattr(settings, "log_destination", "stderr")
    _SINKS.json = getattr(settings, "log_format", "text") == "json"
    _SINKS.level = {"debug": DEBUG, "info": INFO, "warning": WARNING, "error": ERROR}.get(
        getattr(settings, "log_level", "info"), INFO)
    program = getattr(settings, "syslog_program", "walship").replace("{command}", command)
    _SINKS.program = program
    _SINKS.to_stderr = destination in ("stderr", "both")
    if destination in ("syslog", "both"):
        address = getattr(settings, "syslog_address", "/dev/log")
        # the facility is one of config's choices: an unknown one cannot get here
        facility = _FACILITIES.get(getattr(settings, "syslog_facility", "user"), 1)
        try:
            _SINKS.syslog = _Syslog(address, facility, program)
        except OSError as exc:
            print(f"walship {command}: WARNING: cannot open syslog at {address}: {exc}", file=sys.stderr)


def _text(level: int, message: str, fields: dict) -> str:
    extras = " ".join(f"{k}={fields[k]}" for k in _FIELD_ORDER if k in fields and k != "error")
    line = f"{_LEVEL_NAMES[level]}: {message}"
    return f"{line} ({extras})" if extras else line


def _json(level: int, name: str, message: str, fields: dict) -> str:
    # imported only where JSON lines are asked for
    import json
    now = time.time()
    doc = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z",
        "level": _LEVEL_NAMES[level].lower(),
        "program": _SINKS.program,
        "command": _SINKS.command,
        "event": name or "message",
        "message": message,
    }
    doc.update(fields)
    return json.dumps(doc, sort_keys=False, default=str)


def event(level: int, name: str, message: str, **fields) -> None:
    if level < _SINKS.level:
        return
    with _SINKS.lock:
        if _SINKS.json:
            line = _json(level, name, message, fields)
            stderr_line, syslog_line = line, line
        else:
            syslog_line = _text(level, message, fields)
            stderr_line = f"walship {_SINKS.command}: {syslog_line}"
        if _SINKS.to_stderr:
            try:
                sys.stderr.write(stderr_line + "\n")
                sys.stderr.flush()
            except (OSError, ValueError):          # stderr closed (a pipe whose reader left): nowhere to say it
                pass
        if _SINKS.syslog is not None:
            try:
                _SINKS.syslog.send(level, syslog_line)
            except OSError as exc:
                # a lost syslog line must not print a traceback (or fail the command): one warning, once; the
                # next line tries again (wal-receive runs for months, syslogd restarts)
                if _SINKS.syslog.warned:
                    return
                _SINKS.syslog.warned = True
                print(f"walship {_SINKS.command}: WARNING: cannot write to syslog: {exc}; lost: {message}",
                      file=sys.stderr)


def info(name: str, message: str, **fields) -> None:
    event(INFO, name, message, **fields)


def warning(name: str, message: str, **fields) -> None:
    event(WARNING, name, message, **fields)


def error(name: str, message: str, **fields) -> None:
    event(ERROR, name, message, **fields)


def debug(name: str, message: str, **fields) -> None:
    event(DEBUG, name, message, **fields)
