"""Icinga 2 and rsyslog from ../shared/testenv, and reading Icinga's service state back over its API."""

from __future__ import annotations

import base64
import json
import shlex
import ssl
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

TESTENV = Path(__file__).parents[2].parent / "shared" / "testenv"


def start_testenv(script: str, directory: Path) -> dict:
    """Start one of ../shared/testenv's daemons in directory; the variables its script prints."""
    out = subprocess.run([str(TESTENV / script), str(directory), "auto"], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    values = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("export"):
            values[key] = shlex.split(value)[0] if value else ""
    return values


def wait_until(predicate, timeout: float, interval: float = 0.1):
    """predicate()'s first true value, or its last false one once timeout seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


class IcingaApi:
    """Reads service state back from Icinga (TLS verified against the test CA)."""

    def __init__(self, env: dict):
        self.base = f"https://{env['ICINGA2_TLS_NAME']}:{env['ICINGA2_API_PORT']}/v1"
        self.ctx = ssl.create_default_context(cafile=env["ICINGA2_CA_CERT"])
        cred = f"{env['ICINGA2_API_USER']}:{env['ICINGA2_API_PASSWORD']}".encode()
        self.headers = {"Accept": "application/json", "Authorization": "Basic " + base64.b64encode(cred).decode()}

    def service(self, host: str, service: str) -> dict:
        name = urllib.parse.quote(f"{host}!{service}", safe="!")   # %20: Icinga does not decode '+'
        req = urllib.request.Request(f"{self.base}/objects/services/{name}?attrs=state&attrs=last_check_result"
                                     "&attrs=check_interval", headers=self.headers)
        with urllib.request.urlopen(req, context=self.ctx, timeout=10) as resp:
            return json.load(resp)["results"][0]["attrs"]

    def result(self, host: str, service: str) -> dict | None:
        return self.service(host, service)["last_check_result"]

    def wait_for(self, host: str, service: str, predicate, timeout: float = 20) -> dict | None:
        return wait_until(lambda: (lambda r: r if r and predicate(r) else None)(self.result(host, service)), timeout)


def icinga_env(icinga: dict, host: str) -> dict:
    return {"WALSHIP_ICINGA_URL": f"https://{icinga['ICINGA2_TLS_NAME']}:{icinga['ICINGA2_API_PORT']}",
            "WALSHIP_ICINGA_USER": icinga["ICINGA2_API_USER"],
            "WALSHIP_ICINGA_PASSWORD": icinga["ICINGA2_API_PASSWORD"],
            "WALSHIP_ICINGA_CA": icinga["WALSHIP_CA"],
            "WALSHIP_ICINGA_HOST": host}
