"""Passive check results through NSCA, for setups without Icinga 2's API (Nagios, Icinga 1).

Shells out to `send_nsca` (Debian package `nsca-client` or `nsca`) rather than
re-implementing its encryption. Beware: send_nsca reports success even when the
daemon drops the packet (wrong password or encryption method), so a working
NSCA setup must be proven once on the monitoring side (see docs/operations.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from walship.errors import WalshipError
from walship.reporting.icinga import host_name

TIMEOUT_S = 10


class NscaError(WalshipError):
    pass


def submit(settings, service: str, state: int, output: str, perfdata: list[str] | None = None) -> None:
    binary = shutil.which("send_nsca") or next(
        (p for p in ("/usr/sbin/send_nsca", "/usr/bin/send_nsca") if os.access(p, os.X_OK)), None)
    if not binary:
        raise NscaError("send_nsca is not installed", "apt-get install nsca-client (or nsca)")
    text = output + (" | " + " ".join(perfdata) if perfdata else "")
    # send_nsca's input: host TAB service TAB state TAB output, one result per line.
    packet = "\t".join((host_name(settings), service, str(state), text.replace("\n", " "))) + "\n"
    with tempfile.NamedTemporaryFile("w", prefix="walship-nsca-", suffix=".cfg") as cfg:
        # The password goes into a private config file, never onto the command line (ps shows it).
        os.chmod(cfg.name, 0o600)
        if settings.nsca_password:
            cfg.write(f"password={settings.nsca_password}\n")
        cfg.write(f"encryption_method={settings.nsca_encryption}\n")
        cfg.flush()
        try:
            done = subprocess.run([binary, "-H", settings.nsca_host, "-p", str(settings.nsca_port),
                                   "-to", str(TIMEOUT_S), "-c", cfg.name],
                                  input=packet, capture_output=True, text=True, timeout=TIMEOUT_S + 5)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise NscaError(f"send_nsca to {settings.nsca_host}:{settings.nsca_port} failed: {exc}") from None
    if done.returncode != 0:
        said = " ".join((done.stdout + done.stderr).split()) or f"exit {done.returncode}"
        raise NscaError(f"send_nsca to {settings.nsca_host}:{settings.nsca_port} failed: {said}")
