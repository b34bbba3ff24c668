"""Syslog lines as the operations manual's log queries need them (the real rsyslogd is in
tests/integration/test_monitoring.py; these use a plain unix datagram socket)."""

import json
import socket

import pytest

from walship import logs
from walship.config import Settings, load_settings
from walship.errors import ConfigError


@pytest.fixture
def syslog_socket(tmp_path):
    path = str(tmp_path / "log.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield path, sock
    sock.close()


def test_one_event_is_one_line_under_the_program_name(syslog_socket):
    path, sock = syslog_socket
    logs.setup("backup-push", Settings(log_destination="syslog", syslog_address=path,
                                       syslog_program="walship-{command}", syslog_facility="local3"))
    logs.error("backup_failed", "base backup failed:\nconnection refused", error="connection refused")
    # <PRI> = facility local3 (19) * 8 + err (3)
    assert sock.recv(4096) == b"<155>walship-backup-push: ERROR: base backup failed: connection refused\x00"


def test_json_lines_carry_the_event_fields(syslog_socket):
    path, sock = syslog_socket
    logs.setup("wal-push", Settings(log_destination="syslog", log_format="json", syslog_address=path,
                                    syslog_program="wal-e_postgres_archiving_wrapper"))
    logs.info("wal_pushed", "archived", segment="000000010000000000000001", bytes=16777216, duration_s=0.2)
    prefix, _, doc = sock.recv(4096).rstrip(b"\x00").partition(b": ")
    assert prefix == b"<14>wal-e_postgres_archiving_wrapper"
    event = json.loads(doc)
    assert {k: event[k] for k in ("event", "segment", "bytes", "duration_s", "program", "command")} == {
        "event": "wal_pushed", "segment": "000000010000000000000001", "bytes": 16777216, "duration_s": 0.2,
        "program": "wal-e_postgres_archiving_wrapper", "command": "wal-push"}


def test_lost_syslog_is_one_warning_not_a_traceback(syslog_socket, capsys):
    path, sock = syslog_socket
    logs.setup("wal-push", Settings(log_destination="syslog", syslog_address=path))
    sock.close()                       # syslogd went away after walship connected
    logs.error("x", "first")
    logs.error("x", "second")
    err = capsys.readouterr().err
    assert err.startswith("walship wal-push: WARNING: cannot write to syslog: ")
    assert "lost: first" in err and err.count("\n") == 1 and "Traceback" not in err


def test_syslog_missing_from_the_start_is_one_warning(tmp_path, capsys):
    logs.setup("wal-push", Settings(log_destination="syslog", syslog_address=str(tmp_path / "nothing")))
    logs.info("wal_pushed", "archived")
    err = capsys.readouterr().err
    assert err.startswith("walship wal-push: WARNING: cannot write to syslog: ") and "Traceback" not in err


def test_unknown_facility_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown syslog facility 'locl0'"):
        load_settings(env={"WALSHIP_SYSLOG_FACILITY": "locl0"}, config_path=None)
