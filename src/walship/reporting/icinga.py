"""Passive check results to Icinga 2 through its REST API.

POST /v1/actions/process-check-result with a JSON body. The host and service
names go into `filter_vars`, not into the filter text or the URL, so names with
spaces and quotes need no escaping (Icinga's URL parser does not decode '+').

Standard library only (http.client, ssl): this runs after every wal-push.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
from urllib.parse import urlsplit

from walship.errors import ConfigError, WalshipError

CONNECT_TIMEOUT_S = 5.0      # archive_command waits for this: keep it short


class IcingaError(WalshipError):
    """Icinga did not accept the result (unreachable, refused, or no such service)."""


def host_name(settings) -> str:
    """The host object the results belong to: WALSHIP_ICINGA_HOST, else this machine's FQDN."""
    return settings.icinga_host or socket.getfqdn()


def submit(settings, service: str, state: int, output: str, perfdata: list[str] | None = None,
           ttl: float | None = None) -> None:
    """Send one passive result for `service` on the configured host; raise IcingaError if not accepted."""
    host = host_name(settings)
    body = {
        "type": "Service",
        "filter": "host.name == walship_host && service.name == walship_service",
        "filter_vars": {"walship_host": host, "walship_service": service},
        "exit_status": state,
        "plugin_output": output,
        "performance_data": list(perfdata or []),
        "check_source": socket.gethostname(),
    }
    if ttl is not None:
        body["ttl"] = int(ttl)
    status, answer = _post(settings, "/v1/actions/process-check-result", body)
    results = answer.get("results") if isinstance(answer, dict) else None
    if status == 200 and results and all(r.get("code") == 200 for r in results):
        return
    if status in (401, 403):
        raise IcingaError(f"Icinga at {settings.icinga_url} refused user {settings.icinga_user!r} (HTTP {status})",
                          "check WALSHIP_ICINGA_USER/PASSWORD and the ApiUser's permissions "
                          "(actions/process-check-result)")
    if results == [] or status == 404:
        # Icinga 2 answers 500 with no results when the filter matches nothing.
        raise IcingaError(f"Icinga has no service {service!r} on host {host!r}",
                          "define it (see contrib/icinga2/walship.conf) or set WALSHIP_ICINGA_HOST "
                          "and the service name settings")
    detail = (results[0].get("status") if results else None) or (answer.get("status") if isinstance(answer, dict)
                                                                  else None)
    raise IcingaError(f"Icinga did not accept the result for {service!r}: HTTP {status}"
                      + (f" ({detail})" if detail else ""))


def _post(settings, path: str, body: dict) -> tuple[int, object]:
    url = urlsplit(settings.icinga_url or "")
    if url.scheme != "https" or not url.hostname:
        raise ConfigError(f"icinga_url {settings.icinga_url!r} is not an https:// URL",
                          "Icinga 2's API speaks TLS only: e.g. https://icinga.example.com:5665")
    context = _tls_context(settings.icinga_ca)
    conn = http.client.HTTPSConnection(url.hostname, url.port or 5665, timeout=CONNECT_TIMEOUT_S,
                                       context=context)
    credentials = f"{settings.icinga_user or ''}:{settings.icinga_password or ''}".encode()
    headers = {"Accept": "application/json", "Content-Type": "application/json",
               "Authorization": "Basic " + base64.b64encode(credentials).decode()}
    try:
        conn.request("POST", url.path.rstrip("/").removesuffix("/v1") + path, json.dumps(body).encode(),
                     headers)
        response = conn.getresponse()
        raw = response.read()
    except ssl.SSLCertVerificationError as exc:
        raise IcingaError(f"Icinga at {settings.icinga_url}: TLS certificate not trusted ({exc.verify_message})",
                          "set WALSHIP_ICINGA_CA to the Icinga CA certificate (/var/lib/icinga2/certs/ca.crt)"
                          ) from None
    except (OSError, http.client.HTTPException) as exc:
        raise IcingaError(f"cannot reach Icinga at {settings.icinga_url}: {exc}") from None
    finally:
        conn.close()
    try:
        answer = json.loads(raw) if raw else {}
    except ValueError:
        answer = {"status": raw[:200].decode(errors="replace")}
    return response.status, answer


def _tls_context(cafile: str | None) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=cafile)
    except OSError as exc:
        raise ConfigError(f"cannot read icinga_ca {cafile}: {exc.strerror or exc}") from None
    except ssl.SSLError as exc:
        raise ConfigError(f"icinga_ca {cafile} is not a PEM CA certificate: {exc}") from None
