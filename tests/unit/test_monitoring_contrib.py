"""The shipped configuration in contrib/ is read by walship as written.
(contrib/icinga2/walship.conf is loaded by a real Icinga 2 in tests/integration/test_monitoring.py.)"""

import os
import re
import shlex
import shutil
from pathlib import Path

import pytest

from walship.cli import _parser
from walship.config import load_settings

CONTRIB = Path(__file__).parents[2] / "contrib"


def test_example_config_file_loads_with_the_monitoring_settings(tmp_path):
    path = tmp_path / "walship.toml"
    shutil.copy(CONTRIB / "walship.toml", path)
    os.chmod(path, 0o600)
    s = load_settings(env={}, config_path=str(path))
    assert (s.repo, s.log_destination, s.syslog_program) == ("s3://example-db-backups/db1", "both",
                                                             "walship-{command}")
    assert (s.icinga_url, s.icinga_service_archive, s.icinga_archive_ok_interval) == (
        "https://icinga.example.com:5665", "PostgreSQL WAL archiving to S3", 300)
    assert s.metrics_file == "/var/lib/prometheus/node-exporter/walship.prom"


def _walship_args(command_line: str) -> list[str]:
    words = shlex.split(command_line)
    return words[words.index("/opt/walship/venv/bin/walship") + 1:]


@pytest.mark.parametrize("source,pattern", [
    ("systemd/walship-backup.service", r"^ExecStart=(.*)$"),
    ("cron/walship-backup", r"^15 3 \* \* \* postgres .*; (/opt/walship/venv/bin/walship .*)$"),
    ("postgresql/archiving.conf", r"^archive_command = '(.*)'$"),
])
def test_shipped_command_lines_parse(source, pattern):
    match = re.search(pattern, (CONTRIB / source).read_text(), re.MULTILINE)
    assert match, f"no command line in contrib/{source}"
    args = _parser().parse_args(_walship_args(match.group(1)))
    assert args.command in ("backup-push", "wal-push")
