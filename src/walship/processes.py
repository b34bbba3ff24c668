"""Facts about the processes of this host (a leaf: os only, cheap for restore_command's cold calls)."""

from __future__ import annotations

import os


def process_running(pid: int) -> bool:
    """Whether a process of this host runs under pid (one of another user counts)."""
    if pid <= 0:                  # kill(0) and kill(-n) signal process groups, not a process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
