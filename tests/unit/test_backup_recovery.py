"""The recovery settings backup-fetch writes, the targets it accepts, and the backup it chooses for one."""

from __future__ import annotations

import datetime
import json
import os

import pytest

from walship import pipeline
from walship.backup import fetch, recovery, timelines, walk
from walship.backup.catalog import Marker
from walship.errors import ConfigError
from walship.pg import recoveryfiles
from walship.repo import catalog
from walship.storage.local import LocalStore

UTC = datetime.UTC


def test_a_time_target_with_its_options_is_written_in_utc():
    t = recovery.Target(time="2026-11-23 09:00:00+01", action="promote", exclusive=True, timeline="latest")
    assert t.settings() == [("recovery_target_time", "2026-11-23 08:00:00.000000+00"),
                            ("recovery_target_inclusive", "off"), ("recovery_target_action", "promote"),
                            ("recovery_target_timeline", "latest")]
    assert t.settings(timeline=3)[-1] == ("recovery_target_timeline", "3")


def test_no_target_recovers_to_the_end_of_the_archive():
    assert recovery.Target().settings() == []
    assert recovery.Target().effective_action is None
    assert recovery.Target(xid="9").effective_action == "pause"      # PostgreSQL's default


@pytest.mark.parametrize("text,utc", [
    ("2026-12-02 09:30:00+00", "2026-12-02 09:30:00"),
    ("2026-12-02T09:30:00.250Z", "2026-12-02 09:30:00.250000"),
    ("2026-12-02 9:30 +01:00", "2026-12-02 08:30:00"),
    ("2026-12-02 09:30:00-0530", "2026-12-02 15:00:00"),
    ("2026-12-02 09:30:00 UTC", "2026-12-02 09:30:00"),
    ("2026-07-02 09:30:00 Europe/Berlin", "2026-07-02 07:30:00"),
])
def test_target_times_carry_their_zone(text, utc):
    moment = recovery.parse_target_time(text)
    assert moment.astimezone(UTC).replace(tzinfo=None) == datetime.datetime.fromisoformat(utc)


@pytest.mark.parametrize("target,words", [
    (recovery.Target(time="x", lsn="0/1"), "more than one recovery target"),
    (recovery.Target(action="promote"), "need a target"),
    (recovery.Target(xid="5", immediate=True), "more than one recovery target"),
    (recovery.Target(xid="abc"), "not a transaction ID"),
    (recovery.Target(xid="-5"), "not a transaction ID"),
    (recovery.Target(lsn="zz/yy"), "not an LSN"),
    (recovery.Target(lsn="0/1/2"), "not an LSN"),
    (recovery.Target(time="garbage"), "not a timestamp"),
    (recovery.Target(time="2026-12-02 09:30:00"), "no UTC offset or zone"),
    (recovery.Target(time="2026-02-30 09:30:00Z"), "not a valid date"),
    (recovery.Target(time="2026-12-02 09:30:00 Nowhere/Land"), "not a UTC offset or a time zone"),
    (recovery.Target(timeline="newest"), "not a timeline"),
    (recovery.Target(timeline="0"), "not a timeline"),
    (recovery.Target(name=""), "not a restore point name"),
    (recovery.Target(name="x" * 64), "not a restore point name"),
])
def test_malformed_or_ambiguous_targets_are_refused_in_one_line(target, words):
    with pytest.raises(ConfigError) as err:
        target.check()
    assert words in err.value.one_line() and "\n" not in err.value.one_line()


def test_restore_command_quotes_for_the_shell_and_names_the_config_file():
    cmd = recovery.restore_command("/opt/walship/bin/walship", "s3://b/p q", "/etc/walship/w.toml")
    assert cmd.endswith(" || /opt/walship/bin/walship wal-fetch %f %p --repo 's3://b/p q' "
                        "--config /etc/walship/w.toml")


def test_an_earlier_recovery_is_commented_out_and_only_this_one_is_written(tmp_path):
    (tmp_path / "postgresql.auto.conf").write_text(
        "port = 5432\narchive_mode = 'on'\nrecovery_target_time = '2026-11-01 10:00:00+00'\n"
        "Recovery_Target_Action = 'promote'\nrestore_command = 'old'\nprimary_conninfo = 'host=old'\n")
    (tmp_path / "postgresql.conf").write_text("shared_buffers = 1GB\n  standby_mode = on\n")
    (tmp_path / "standby.signal").write_text("")
    recoveryfiles.remove_signal_files(str(tmp_path))
    assert recoveryfiles.comment_out_recovery_settings(str(tmp_path)) == [
        "recovery_target_time", "recovery_target_action", "restore_command", "primary_conninfo", "standby_mode"]
    recovery.write_settings(str(tmp_path), "b1", "walship wal-fetch %f %p --repo 'file:///r'",
                            recovery.Target(name="before'upgrade"), None, [])
    recoveryfiles.signal_recovery(str(tmp_path), None)
    text = (tmp_path / "postgresql.auto.conf").read_text()
    active = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert active == ["port = 5432", "archive_mode = 'on'",
                      "restore_command = 'walship wal-fetch %f %p --repo ''file:///r'''",
                      "recovery_target_name = 'before''upgrade'"]
    assert f"{recoveryfiles.DISABLED_PREFIX}recovery_target_time = '2026-11-01 10:00:00+00'" in text
    assert f"{recoveryfiles.DISABLED_PREFIX}primary_conninfo = 'host=old'" in text
    assert ((tmp_path / "postgresql.conf").read_text()
            == f"shared_buffers = 1GB\n{recoveryfiles.DISABLED_PREFIX}  standby_mode = on\n")
    assert (tmp_path / "recovery.signal").exists() and not (tmp_path / "standby.signal").exists()


def test_a_copy_turns_archiving_off_and_says_why(tmp_path):
    (tmp_path / "postgresql.auto.conf").write_text("archive_mode = on\n")
    recovery.write_settings(str(tmp_path), "b1", "cmd", recovery.Target(), 2, recovery.copy_archiving_lines("s3://b/p"))
    text = (tmp_path / "postgresql.auto.conf").read_text()
    assert text.rstrip().endswith("archive_mode = 'off'")
    assert "COPY restored from the repository s3://b/p" in text and "--as-primary" in text
    assert "recovery_target_timeline = '2'" in text


def test_a_completion_marker_written_before_next_xid_existed_still_reads():
    doc = json.loads(Marker(B1, 2, 10, "zstd", {}).to_json())
    assert Marker.from_json(json.dumps(doc).encode(), "m").info.next_xid == 800
    del doc["next_xid"]
    assert Marker.from_json(json.dumps(doc).encode(), "m").info.next_xid is None


def test_the_restore_marker_is_not_part_of_a_backup(tmp_path):
    for name in ("PG_VERSION", "walship_restore.json", "postgresql.auto.conf"):
        (tmp_path / name).write_text("x")
    assert sorted(e.name for e in walk.walk(str(tmp_path))) == ["PG_VERSION", "postgresql.auto.conf"]


def _backup(name: str, stop_time: float, stop_lsn: str, timeline: int = 1, next_xid: int | None = None):
    return catalog.BackupInfo(name=name, start_time=stop_time - 5, stop_time=stop_time, start_lsn="0/1000028",
                              stop_lsn=stop_lsn, timeline=timeline, start_wal="000000010000000000000001",
                              stop_wal="000000010000000000000001", pg_version=150000, system_identifier="1",
                              size=1, stored_size=1, duration_s=5, next_xid=next_xid)


T0 = datetime.datetime(2026, 12, 1, 10, 0, tzinfo=UTC).timestamp()
B1 = _backup("b1", T0, "0/3000100", next_xid=800)
B2 = _backup("b2", T0 + 3600, "0/9000100", next_xid=1000)


def _at(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(T0 + seconds, UTC).isoformat()


def _none(_b):
    return None


def test_latest_with_a_target_chooses_the_newest_backup_consistent_before_it():
    assert catalog.choose([B1, B2], "LATEST", recovery.Target(time=_at(1800)), _none) is B1
    assert catalog.choose([B1, B2], "LATEST", recovery.Target(time=_at(3601)), _none) is B2
    assert catalog.choose([B1, B2], "LATEST", recovery.Target(lsn="0/5000000"), _none) is B1
    assert catalog.choose([B1, B2], "LATEST", recovery.Target(xid="999"), _none) is B1
    assert catalog.choose([B1, B2], "LATEST", recovery.Target(xid="1000"), _none) is B2
    assert catalog.choose([B1, B2], "LATEST", recovery.Target(), _none) is B2


def test_a_target_before_every_backup_or_a_named_backup_after_it_is_refused_naming_one_that_works():
    with pytest.raises(ConfigError, match="no backup in the repository is consistent before"):
        catalog.choose([B1, B2], "LATEST", recovery.Target(time=_at(-60)), _none)
    with pytest.raises(ConfigError) as err:
        catalog.choose([B1, B2], "b2", recovery.Target(time=_at(1800)), _none)
    assert "restore b1" in err.value.one_line()
    old = _backup("old", T0, "0/3000100")                 # a marker from before next_xid was recorded
    with pytest.raises(ConfigError, match="recorded their next transaction ID"):
        catalog.choose([old], "LATEST", recovery.Target(xid="5000"), _none)
    assert catalog.choose([old], "old", recovery.Target(xid="5000"), _none) is old


def test_a_backup_the_followed_timeline_does_not_contain_is_refused_naming_the_fixes():
    def problem(b):
        return "past the branch point" if b is B2 else None
    for name in ("LATEST", "b2"):
        with pytest.raises(ConfigError, match="past the branch point") as err:
            catalog.choose([B1, B2], name, recovery.Target(), problem)
        assert "restore b1 to follow that timeline, or add --target-timeline current" in err.value.one_line()
    assert catalog.choose([B1, B2], "LATEST", recovery.Target(time=_at(1800)), problem) is B1


def test_full_xid_places_a_32_bit_id_in_the_reference_epoch():
    assert catalog.full_xid(700, 1000) == 700
    assert catalog.full_xid(700, (3 << 32) + 1000) == (3 << 32) + 700
    assert catalog.full_xid(0xFFFFFF00, (3 << 32) + 1000) == (2 << 32) + 0xFFFFFF00
    assert catalog.full_xid((5 << 32) + 1, 10) == (5 << 32) + 1


def _archive(tmp_path, names: dict[str, bytes | None]) -> timelines.Archive:
    store = LocalStore(str(tmp_path / "repo"))
    for name, content in names.items():
        store.put(f"wal/{name}", pipeline.pack(content or b"x", "none"))
    return timelines.Archive(store, None)


def test_the_followed_timeline_its_history_and_the_end_of_the_archive(tmp_path):
    archive = _archive(tmp_path, {
        "000000010000000000000001": None, "000000010000000000000002": None, "000000010000000000000003": None,
        "00000002.history": b"1\t0/2800000\tno recovery target specified\n",
        "000000020000000000000002": None, "000000020000000000000004": None,
        "00000004.history": b"1\t0/2800000\tx\n2\t0/5000000\ty\n"})       # 3 is missing: probing stops at 2
    assert archive.followed_timeline(1, None) == 2 == archive.followed_timeline(1, "latest")
    assert archive.followed_timeline(1, "current") == 1
    chain = archive.chain(2)
    assert chain == [(1, 0, 0x2800000), (2, 0x2800000, None)]
    assert timelines.problem_with(chain, 1, 0x2000100) is None
    assert "branched off timeline 1 at 0/2800000" in timelines.problem_with(chain, 1, 0x3000100)
    assert "not in the history" in timelines.problem_with(chain, 3, 0x1000000)
    end = archive.end_of(chain)
    assert (end.segment, end.lsn) == ("000000020000000000000004", 0x5000000)
    assert archive.end_of(archive.chain(1)).segment == "000000010000000000000003"
    # timeline 1 went on past the branch point (segment 3 after 0/2800000): two histories, said so
    assert archive.diverged(chain) == ["timeline 1 went on after timeline 2's history branched off it at "
                                       "0/2800000 (archived up to 000000010000000000000003)"]
    assert archive.diverged(archive.chain(1)) == []


def test_plan_refuses_a_target_beyond_the_archive_unless_asked(tmp_path):
    archive = _archive(tmp_path, {"000000010000000000000003": None, "000000010000000000000009": None})
    b = _backup("b", T0, "0/3000100")
    with pytest.raises(ConfigError, match="beyond the archived WAL on timeline 1") as err:
        fetch.plan_restore(archive, [b], "LATEST", recovery.Target(lsn="0/A000001"), beyond_archive=False)
    assert "--target-beyond-archive" in err.value.one_line()
    assert fetch.plan_restore(archive, [b], "LATEST", recovery.Target(lsn="0/A000000"), False).backup is b
    assert fetch.plan_restore(archive, [b], "LATEST", recovery.Target(lsn="0/A000001"), True).backup is b
    with pytest.raises(ConfigError, match="after the archived WAL"):
        fetch.plan_restore(archive, [b], "LATEST", recovery.Target(time="2999-01-01 00:00:00Z"), False)
    with pytest.raises(ConfigError, match="holds no 00000007.history"):
        fetch.plan_restore(archive, [b], "LATEST", recovery.Target(timeline="7"), False)


def test_as_root_the_files_go_to_the_owner_of_the_parent_or_postgres(tmp_path):
    if os.geteuid() != 0:
        assert fetch.restore_owner(str(tmp_path / "dest")) is None
        return
    parent = tmp_path / "owned"
    parent.mkdir()
    os.chown(parent, 4242, 4343)
    assert fetch.restore_owner(str(parent / "dest" / "deeper"))[:2] == (4242, 4343)
    os.chown(parent, 0, 0)
    owner = fetch.restore_owner(str(parent / "dest"))
    import pwd
    assert owner[:2] == (pwd.getpwnam("postgres").pw_uid, pwd.getpwnam("postgres").pw_gid)


def test_archive_recovery_is_recovery_signal_without_standby_signal(tmp_path):
    assert not recoveryfiles.in_archive_recovery(str(tmp_path))
    recoveryfiles.signal_recovery(str(tmp_path), None)
    assert recoveryfiles.in_archive_recovery(str(tmp_path))
    (tmp_path / recoveryfiles.STANDBY_SIGNAL).touch()
    assert not recoveryfiles.in_archive_recovery(str(tmp_path))      # a standby retries instead
    recoveryfiles.remove_signal_files(str(tmp_path))
    assert not any(tmp_path.iterdir())
