"""backup-push yields to the server it reads: a lower CPU priority and I/O priority (backup_low_priority).

Linux keeps both per thread, and a new thread starts with its creator's: lower()
runs in backup-push before the part workers start, and lowers each thread that
exists already (the storage's), so that every thread of the backup runs at them. wal-push,
wal-fetch and backup-fetch never call it: the archive and a restore must not
wait behind the server.

I/O: best-effort class at its lowest level (7), not the idle class. An idle
reader gets no disk time while anything else wants it, so a backup on a busy
primary could take forever while it holds the repository lock and keeps WAL from
being deleted; best-effort 7 yields without starving. The I/O priority counts
only under the bfq (and older cfq) I/O scheduler; with none or mq-deadline it is
set but has no effect, which is why --max-rate exists too.

Linux's autogroup scheduling (on by default) shares CPU time between sessions first and weighs nice only
within a session: see _lower_autogroup.

Where this is not allowed (a container without the syscall, a seccomp filter)
walship logs once and goes on at normal priority: a backup is worth more than its
manners.
"""

from __future__ import annotations

import os
import platform
import time

from walship import logs

NICE = 10                    # what `nice` does by default
IOPRIO_CLASS_BE = 2          # best-effort, the class every process starts in
IOPRIO_LEVEL = 7             # the lowest of best-effort's 0 (highest) to 7
IOPRIO_CLASS_IDLE = 3
IOPRIO_CLASS_SHIFT = 13
AUTOGROUP_TRIES = 10         # EAGAIN while another process changed an autogroup in the last 100 ms
IOPRIO_WHO_PROCESS = 1       # `who` 0: the calling thread
# (ioprio_set, ioprio_get) of 64-bit processes: glibc has no wrapper for them. Only these two, checked: a wrong
# number would be another syscall (elsewhere walship logs that it could not set the I/O priority)
_SYSCALLS = {"x86_64": (251, 252), "aarch64": (30, 31)}


def ioprio_value(klass: int, level: int) -> int:
    return klass << IOPRIO_CLASS_SHIFT | level


def lower(enabled: bool) -> None:
    """Lower this process's CPU and I/O priority, when enabled; a failure is logged once, not raised."""
    if not enabled:
        return
    problems: dict[str, str] = {}
    lowest = ioprio_value(IOPRIO_CLASS_BE, IOPRIO_LEVEL)
    for tid in _threads():
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < NICE:
                os.setpriority(os.PRIO_PROCESS, tid, NICE)
        except ProcessLookupError:
            continue                       # a thread that ended meanwhile
        except OSError as exc:
            problems.setdefault("nice", f"nice {NICE}: {exc.strerror or exc}")
        try:
            current = ioprio_get(tid)
            if current >> IOPRIO_CLASS_SHIFT != IOPRIO_CLASS_IDLE and current != lowest:  # lower already: leave it
                ioprio_set(tid, lowest)
        except ProcessLookupError:
            continue
        except OSError as exc:
            problems.setdefault("io", f"I/O priority best-effort {IOPRIO_LEVEL}: {exc.strerror or exc}")
    try:
        _lower_autogroup()
    except OSError as exc:
        problems.setdefault("autogroup", f"the scheduler autogroup's nice {NICE}: {exc.strerror or exc}")
    if problems:
        logs.warning("backup_priority_unchanged", "backup-push runs at normal priority: could not set "
                     + "; ".join(problems.values()) + " (set backup_low_priority = false to not try)")


def _lower_autogroup() -> None:
    """Where the kernel groups CPU time by session (autogroup), a thread's nice counts only against the
    threads of its own session, and the server's backends are in another: the session's group must be
    lowered too. That is done only where the session is the backup's: walship leads it (a systemd service,
    setsid) or it has no terminal (cron, a script run by a scheduler). An interactive session is left as it
    is: its group's nice could not be raised back without privileges, and every later command of that
    terminal would run at it. Without a terminal walship starts a session of its own first (setsid), so that
    only the backup is lowered, not the job around it: it then no longer gets signals sent to the job's process
    group (a supervisor's kill by pid, or systemd's by cgroup, still reach it)."""
    try:
        with open("/proc/sys/kernel/sched_autogroup_enabled") as fh:
            if fh.read().strip() != "1":
                return
        with open("/proc/self/autogroup") as fh:
            current = int(fh.read().rsplit("nice", 1)[1])
    except (OSError, ValueError, IndexError):
        return                             # no autogroup: nice alone does it
    if current >= NICE:
        return
    if os.getsid(0) != os.getpid():
        if _has_terminal():
            logs.info("backup_priority_session", "backup-push shares this terminal's CPU group: its nice counts "
                      "only against this session's programs, not against the server's (run it from cron or "
                      "systemd, or with setsid, for a lower priority there)")
            return
        try:
            os.setsid()                    # a session, so a CPU group, of its own: the job that started it keeps its
        except PermissionError:            # a process group leader: its group is its own already, or shared
            logs.info("backup_priority_session", "backup-push leads a process group of a session it does not "
                      "lead: its nice counts only against that session's programs (start it with setsid)")
            return
    for attempt in range(AUTOGROUP_TRIES):
        try:
            with open("/proc/self/autogroup", "w") as fh:
                fh.write(str(NICE))
            return
        except BlockingIOError:
            # without CAP_SYS_ADMIN the kernel takes one autogroup change per 100 ms, machine-wide
            if attempt == AUTOGROUP_TRIES - 1:
                raise
            time.sleep(0.11)


def _has_terminal() -> bool:
    try:
        os.close(os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY))
    except OSError:
        return False
    return True


def _threads() -> list[int]:
    """This process's threads (Linux keeps both priorities per thread); the caller alone where /proc is absent."""
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


def ioprio_get(tid: int) -> int:
    """The I/O priority of thread tid (0: the caller), as the kernel encodes it (class << 13 | level)."""
    return _syscall(1, IOPRIO_WHO_PROCESS, tid)


def ioprio_set(tid: int, value: int) -> None:
    _syscall(0, IOPRIO_WHO_PROCESS, tid, value)


def _syscall(which: int, *args: int) -> int:
    import ctypes

    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None or ctypes.sizeof(ctypes.c_void_p) != 8:      # a 32-bit process on a 64-bit kernel too
        raise OSError(f"no ioprio syscalls known on {platform.machine() or 'this machine'}")
    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.syscall(numbers[which], *(ctypes.c_int(a) for a in args))
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return result
