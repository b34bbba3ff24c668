"""A backup gentle on the primary: --max-rate bounds what backup-push reads, and its threads run at a lower CPU and
I/O priority, seen from outside in /proc and with ioprio_get, as an operator would check with ps and ionice."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import require_version
from tests.support import pg, restore
from walship.backup import priority
from walship.backup.throttle import BURST_S
from walship.config import parse_rate

pytestmark = pytest.mark.serial       # read rates and the scheduler's view of the backup, measured

LOWEST_BEST_EFFORT = 2 << 13 | 7


def _thread_priorities(pid: int) -> dict[int, tuple[int, int]]:
    """{thread id: (nice, I/O priority)} of a running process's threads (those that ended meanwhile left out)."""
    seen: dict[int, tuple[int, int]] = {}
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        return seen
    for tid in tids:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            nice = int(stat[stat.rindex(")") + 2:].split()[16])      # field 19, counted after the comm
            seen[tid] = (nice, priority.ioprio_get(tid))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return seen


def _autogroups() -> bool:
    """Whether the kernel shares CPU time between sessions first (autogroup scheduling) for the programs started
    here. It is on by default, but a process in a cgroup with a CPU controller of its own (a container, a systemd
    slice with CPU accounting) is scheduled by that cgroup, not by its session: its /proc/PID/autogroup reads
    empty, and so does the backup's, which runs in the same cgroup."""
    try:
        enabled = Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return False
    return enabled and _autogroup_nice(os.getpid()) is not None


def _autogroup_nice(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/autogroup").read_text().rsplit("nice", 1)[1])
    except (OSError, ValueError, IndexError):
        return None


def _push_watching(cluster: pg.Cluster, *flags: str,
                   **env: str) -> tuple[float, dict[int, tuple[int, int]], int | None]:
    """Run backup-push, sampling its threads' priorities while it runs: (seconds it took, what was seen,
    the nice of its scheduler autogroup last seen)."""
    started = time.monotonic()
    push = subprocess.Popen([pg.WALSHIP, "backup-push", str(cluster.datadir), "--progress", "none", *flags],
                            env=restore.cli_env(cluster, **env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **pg.as_postgres())
    seen: dict[int, tuple[int, int]] = {}
    autogroup = None
    while push.poll() is None:
        seen.update(_thread_priorities(push.pid))
        # a process that exits between poll() and the read is a zombie whose autogroup reads as nothing: keep the
        # last value read from the live process
        now = _autogroup_nice(push.pid)
        autogroup = autogroup if now is None else now
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    _, err = push.communicate()
    assert push.returncode == 0, err
    return elapsed, seen, autogroup


def test_a_rate_limited_backup_reads_no_faster_than_asked_runs_low_and_restores_row_for_row(cluster_factory,
                                                                                             scratch):
    require_version(15)
    repo_env = restore.file_repo(scratch)
    primary = restore.primary(cluster_factory, 15, repo_env)
    primary.sql("CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((-g)::text) AS pad "
                "FROM generate_series(1, 400000) g")
    primary.sql("CHECKPOINT")
    expected = restore.digest(primary, "big", "id::text || pad", "id")

    rate = "20M"
    elapsed, seen, autogroup = _push_watching(primary, "--max-rate", rate, WALSHIP_BACKUP_PART_SIZE=str(8 << 20))
    [backup] = restore.backups(repo_env)
    # every byte read was paid for before its part was stored: only the first burst came free
    assert elapsed >= (backup["size"] - parse_rate(rate) * BURST_S) / parse_rate(rate)
    assert len(seen) >= 3, seen                          # the main thread and the two part workers at least
    assert set(seen.values()) == {(10, LOWEST_BEST_EFFORT)}, seen
    if _autogroups():                # a session of its own at nice 10: nice counts against the server's sessions too
        assert autogroup == 10

    restored = restore.restore(15, cluster_factory, "restored", repo_env, backup["name"])
    assert restore.digest(restored, "big", "id::text || pad", "id") == expected


def test_wale_rate_limit_limits_and_low_priority_can_be_turned_off(cluster_factory, scratch):
    require_version(15)
    repo_env = restore.file_repo(scratch)
    primary = restore.primary(cluster_factory, 15, repo_env)
    primary.sql("CREATE TABLE big AS SELECT g AS id, md5(g::text) AS pad FROM generate_series(1, 300000) g")
    expected = restore.digest(primary, "big", "id::text || pad", "id")
    base = os.getpriority(os.PRIO_PROCESS, 0)

    elapsed, seen, autogroup = _push_watching(primary, "--cluster-read-rate-limit", "20000000",
                                   WALSHIP_BACKUP_LOW_PRIORITY="false")
    [backup] = restore.backups(repo_env)
    assert elapsed >= (backup["size"] - 20_000_000 * BURST_S) / 20_000_000
    assert seen and {nice for nice, _ in seen.values()} == {base}, seen
    assert LOWEST_BEST_EFFORT not in {io for _, io in seen.values()}, seen
    assert autogroup in (None, _autogroup_nice(os.getpid()))

    restored = restore.restore(15, cluster_factory, "restored", repo_env, backup["name"])
    assert restore.digest(restored, "big", "id::text || pad", "id") == expected


def test_a_bad_rate_is_one_line_naming_the_flag_and_a_valid_form(scratch):
    for rate in ("fast", "50"):
        r = pg.walship(["backup-push", str(scratch), "--max-rate", rate],
                       {**pg.server_env(), "WALSHIP_REPO": f"file://{scratch}/repo"})
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr, r.stderr
        [line] = [line for line in r.stderr.splitlines() if line.strip()]
        assert "backup_max_rate" in line and "50M" in line, line
