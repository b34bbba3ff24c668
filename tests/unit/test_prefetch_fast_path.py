"""restore_command's fast path (archive/queue.py): a queued segment is served by a rename in the shell, anything
else goes to wal-fetch; the worker learns from `.served` where replay is and logs what the rename served."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from walship.archive import queue
from walship.backup.recovery import restore_command

SEGMENT = "000000010000000000000007"


def run_restore_command(datadir: Path, name: str, fallback: str) -> subprocess.CompletedProcess:
    """As PostgreSQL runs it: %f and %p substituted, then `sh -c` in the data directory."""
    command = restore_command(fallback, "file:///nowhere", None)
    command = command.replace("%f", name).replace("%p", "pg_wal/RECOVERYXLOG")
    return subprocess.run(["sh", "-c", command], cwd=datadir, capture_output=True, text=True, timeout=30)


def fake_walship(tmp_path: Path) -> str:
    """A stand-in for walship that says it ran: shows which branch of the command ran."""
    script = tmp_path / "walship"
    script.write_text("#!/bin/sh\necho \"walship $*\"\nexit 1\n")
    script.chmod(0o755)
    return str(script)


def test_a_queued_segment_is_renamed_into_place_and_recorded_without_walship(tmp_path):
    datadir = tmp_path / "data"
    qdir = datadir / "pg_wal" / "walship_prefetch"
    qdir.mkdir(parents=True)
    (qdir / SEGMENT).write_bytes(b"verified bytes")
    (datadir / "pg_wal" / "RECOVERYXLOG").write_bytes(b"the previous segment")
    r = run_restore_command(datadir, SEGMENT, fake_walship(tmp_path))
    assert r.returncode == 0 and "walship" not in r.stdout, (r.stdout, r.stderr)
    assert r.stderr == ""
    assert (datadir / "pg_wal" / "RECOVERYXLOG").read_bytes() == b"verified bytes"
    assert not (qdir / SEGMENT).exists()
    assert (qdir / ".served").read_text().strip() == SEGMENT
    assert queue.read_position(str(qdir)) == SEGMENT


def test_what_the_queue_lacks_goes_to_wal_fetch_and_the_shell_says_nothing(tmp_path):
    datadir = tmp_path / "data"
    (datadir / "pg_wal").mkdir(parents=True)            # no queue directory at all: prefetch off, or not yet
    walship = fake_walship(tmp_path)
    for name in (SEGMENT, "00000002.history"):
        r = run_restore_command(datadir, name, walship)
        assert r.returncode == 1, r
        assert r.stdout.strip() == f"walship wal-fetch {name} pg_wal/RECOVERYXLOG --repo file:///nowhere"
        assert r.stderr == ""
    qdir = datadir / "pg_wal" / "walship_prefetch"
    qdir.mkdir()
    (qdir / "000000010000000000000008").write_bytes(b"the next one")   # another segment is queued: not this one
    r = run_restore_command(datadir, SEGMENT, walship)
    assert r.returncode == 1 and "wal-fetch" in r.stdout and r.stderr == ""
    assert (qdir / "000000010000000000000008").exists()


def test_the_newer_of_position_and_served_is_where_replay_is(tmp_path):
    qdir = str(tmp_path)

    def written_at(entry: str, name: str, second: int) -> None:
        """The file as wal-fetch or the shell writes it, with a modification time of its own (the kernel's
        clock for file times moves in ticks: two writes a moment apart may carry the same time)."""
        path = Path(qdir, entry)
        path.write_text(name + "\n")
        os.utime(path, (second, second))

    assert queue.read_position(qdir) is None
    queue.note_position(qdir, "000000010000000000000003")          # wal-fetch downloaded 3
    assert queue.read_position(qdir) == "000000010000000000000003"
    written_at(queue.POSITION, "000000010000000000000003", 1000)
    written_at(queue.SERVED, "000000010000000000000004", 1001)       # the rename served 4
    assert queue.read_position(qdir) == "000000010000000000000004"
    written_at(queue.POSITION, "000000010000000000000002", 1002)     # a recovery started again, further back
    assert queue.read_position(qdir) == "000000010000000000000002"
    written_at(queue.POSITION, "000000020000000000000004", 1003)     # a new timeline: wal-fetch again
    assert queue.read_position(qdir) == "000000020000000000000004"
    Path(qdir, queue.POSITION).write_text("")                       # caught while the shell rewrites it
    assert queue.read_position(qdir) == "000000010000000000000004"


class Settings:
    fetch_prefetch = 8
    fetch_queue_bytes = 128 << 20
    fetch_queue_idle = 60


def test_the_worker_logs_each_segment_the_rename_served_and_not_one_a_miss_cleared(tmp_path, capfd):
    from walship import logs
    logs.setup("wal-prefetch")
    qdir = tmp_path / "walship_prefetch"
    qdir.mkdir()
    data = {f"00000001000000000000000{i}": bytes([i]) * (100 + i) for i in range(3, 8)}
    worker = queue.Worker("000000010000000000000002", str(qdir), 16 << 20, Settings(),
                          lambda name: data.get(name), pgdata=str(tmp_path))
    for name in data:
        assert worker._one(name)
    assert sorted(os.listdir(qdir)) == sorted(data)
    for name in ("000000010000000000000003", "000000010000000000000004"):   # the fast path, twice in a row
        os.replace(qdir / name, tmp_path / "RECOVERYXLOG")
        (qdir / queue.SERVED).write_text(name + "\n")
    (qdir / "000000010000000000000007").unlink()                            # cleared by a miss: not served
    worker._note_served(set(os.listdir(qdir)))
    err = capfd.readouterr().err
    assert "000000010000000000000003 restored (prefetched)" in err
    assert "000000010000000000000004 restored (prefetched) (segment=000000010000000000000004 bytes=104)" in err
    assert "000000010000000000000007" not in err
    assert sorted(worker.placed) == ["000000010000000000000005", "000000010000000000000006"]
    worker._note_served(set(os.listdir(qdir)))                              # each is said once
    assert capfd.readouterr().err == ""


def test_the_fast_paths_doctest():
    import doctest
    failed, tried = doctest.testmod(queue)
    assert tried >= 1 and failed == 0
