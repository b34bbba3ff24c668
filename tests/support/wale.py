"""The real WAL-E 1.1.1, in its own virtualenv, built on demand for the migration tests.

Built the way the peer benchmark does (shared/bench/peers/00_setup.sh): Debian's
/usr/bin/python3 (the postgres OS user runs it from archive_command, so it must
live outside /root), `pip install wal-e==1.1.1 gevent boto`, and Debian's lzop
(WAL-E's compressor) and pv (backup-push refuses to start without it).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

VENV = Path(os.environ.get("WALSHIP_WALE_VENV", "/opt/walship/wale-venv"))
WALE = VENV / "bin" / "wal-e"
PACKAGES = ("wal-e==1.1.1", "gevent", "boto")
APT_PACKAGES = {"lzop": "lzop", "pv": "pv", "gpg": "gnupg"}


def ensure() -> Path:
    """The wal-e executable, installing WAL-E and the programs it runs when missing."""
    _ensure_programs()
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(VENV.parent / ".wale-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)       # two test processes must not build it at once
        if not _works():
            shutil.rmtree(VENV, ignore_errors=True)
            subprocess.run(["/usr/bin/python3", "-m", "venv", str(VENV)], check=True)
            subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                            *PACKAGES], check=True)
            subprocess.run(["chmod", "-R", "a+rX", str(VENV)], check=True)
            if not _works():
                raise RuntimeError(f"WAL-E was installed in {VENV} but `wal-e version` fails")
    return WALE


def _works() -> bool:
    if not WALE.exists():
        return False
    r = subprocess.run([str(WALE), "version"], capture_output=True, text=True)
    return r.returncode == 0 and r.stdout.strip().endswith("1.1.1")


def _ensure_programs() -> None:
    missing = [pkg for program, pkg in APT_PACKAGES.items() if shutil.which(program) is None]
    if not missing:
        return
    if os.getuid() != 0:
        raise RuntimeError(f"WAL-E needs {' '.join(missing)}: apt-get install them (as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def file_env(repo: Path) -> dict:
    """WAL-E's environment for a filesystem prefix, in WAL-E's own URL form."""
    return {"WALE_FILE_PREFIX": f"file://localhost{repo}", "WALE_LOG_DESTINATION": "stderr"}


def s3_env(moto, bucket: str, prefix: str = "pg") -> dict:
    """WAL-E's environment for moto's S3 server (plain HTTP, path-style, as WAL-E spells it)."""
    return {
        "WALE_S3_PREFIX": f"s3://{bucket}/{prefix}",
        "WALE_S3_ENDPOINT": f"http+path://127.0.0.1:{moto.port}",
        "WALE_LOG_DESTINATION": "stderr",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_METADATA_ENDPOINT": "http://127.0.0.1:9",
    }
