"""The recovery settings backup-fetch writes."""

from __future__ import annotations

import pytest

from walship.backup import recovery
from walship.errors import ConfigError


def test_a_time_target_with_its_options():
    t = recovery.Target(time="2026-11-23 08:00:00+00", action="promote", exclusive=True, timeline="latest")
    assert t.settings() == [("recovery_target_time", "2026-11-23 08:00:00+00"),
                            ("recovery_target_inclusive", "off"), ("recovery_target_action", "promote"),
                            ("recovery_target_timeline", "latest")]


def test_no_target_recovers_to_the_end_of_the_archive():
    assert recovery.Target().settings() == []


@pytest.mark.parametrize("target", [recovery.Target(time="x", lsn="0/1"), recovery.Target(action="promote"),
                                    recovery.Target(xid="5", immediate=True)])
def test_ambiguous_or_incomplete_targets_are_refused(target):
    with pytest.raises(ConfigError):
        target.settings()


def test_restore_command_quotes_for_the_shell_and_names_the_config_file():
    cmd = recovery.restore_command("/opt/walship/bin/walship", "s3://b/p q", "/etc/walship/w.toml")
    assert cmd == "/opt/walship/bin/walship wal-fetch %f %p --repo 's3://b/p q' --config /etc/walship/w.toml"


def test_settings_are_appended_and_recovery_signal_created(tmp_path):
    (tmp_path / "postgresql.auto.conf").write_text("port = 5432\n")
    recovery.write(str(tmp_path), "b1", "walship wal-fetch %f %p --repo 'file:///r'",
                   recovery.Target(name="before'upgrade"))
    text = (tmp_path / "postgresql.auto.conf").read_text()
    assert text.startswith("port = 5432\n# written by walship backup-fetch b1")
    assert "restore_command = 'walship wal-fetch %f %p --repo ''file:///r'''\n" in text
    assert "recovery_target_name = 'before''upgrade'\n" in text
    assert (tmp_path / "recovery.signal").exists()
