"""An HTTP proxy between walship and the S3 server that injects faults on request.

Rules match a method and a path pattern and fire a number of times:
  "500"      answer 500 InternalError
  "503"      answer 503 SlowDown (S3's throttling answer)
  "reset"    forward, then send half of the response body and reset the connection
  "truncate" forward, announce the full Content-Length, send half the body, close
  "stall"    accept the request and answer nothing for `stall_s` seconds
  "drop"     read the request, do not forward it, reset the connection (the upload never lands)
  "cut"      read half of the request body, then reset the connection (a reset during the upload)
  "lost"     forward the request, then reset the connection without answering (it landed, the
             answer is lost)
Everything else is forwarded to the upstream server unchanged (but for the request
headers named in `strip_request_headers`, to play a store that ignores them). Counters record
what was seen, so that tests can assert that retries happened.
"""

from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass
class Rule:
    method: str
    path: str                 # regular expression searched in the request path
    fault: str
    times: int = 1            # how many matching requests it fires on (-1: forever)
    stall_s: float = 30.0

    def matches(self, method: str, path: str) -> bool:
        return self.times != 0 and (self.method in ("*", method)) and re.search(self.path, path) is not None


class FaultProxy:
    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.rules: list[Rule] = []
        self.fired: list[tuple[str, str, str]] = []
        self.requests: list[tuple[str, str]] = []
        self.strip_request_headers: set[str] = set()   # lower-case names: play a store that ignores them
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _any(self):
                proxy._handle(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, method: str, path: str, fault: str, times: int = 1, stall_s: float = 30.0) -> None:
        with self.lock:
            self.rules.append(Rule(method, path, fault, times, stall_s))

    def clear(self) -> None:
        with self.lock:
            self.rules.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _take_rule(self, method: str, path: str) -> Rule | None:
        with self.lock:
            self.requests.append((method, path))
            for rule in self.rules:
                if rule.matches(method, path):
                    if rule.times > 0:
                        rule.times -= 1
                    self.fired.append((method, path, rule.fault))
                    return rule
        return None

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        rule = self._take_rule(h.command, h.path)
        if rule and rule.fault == "cut":
            h.rfile.read(length // 2)
            _reset(h)
            return
        body = h.rfile.read(length) if length else b""
        if rule and rule.fault in ("500", "503"):
            code, name = (500, "InternalError") if rule.fault == "500" else (503, "SlowDown")
            payload = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{name}</Code>'
                       f"<Message>injected</Message></Error>").encode()
            h.send_response(code)
            h.send_header("Content-Type", "application/xml")
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            h.wfile.write(payload)
            return
        if rule and rule.fault == "drop":
            _reset(h)
            return
        if rule and rule.fault == "stall":
            time.sleep(rule.stall_s)
            h.close_connection = True
            return
        upstream = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
        headers = {k: v for k, v in h.headers.items()
                   if k.lower() not in _HOP and k.lower() not in self.strip_request_headers}
        upstream.request(h.command, h.path, body=body if body or h.command in ("PUT", "POST") else None,
                         headers=headers)
        resp = upstream.getresponse()
        data = resp.read()
        upstream.close()
        if rule and rule.fault == "lost":
            _reset(h)
            return
        h.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in _HOP and k.lower() != "content-length":
                h.send_header(k, v)
        # a HEAD answer has no body: its Content-Length is the object's, as upstream said
        length_header = resp.getheader("Content-Length") if h.command == "HEAD" else None
        h.send_header("Content-Length", length_header or str(len(data)))
        if rule and rule.fault in ("reset", "truncate"):
            h.end_headers()
            h.wfile.write(data[: len(data) // 2])
            h.wfile.flush()
            if rule.fault == "reset":
                _reset(h)
            h.close_connection = True
            return
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)


def _reset(h: BaseHTTPRequestHandler) -> None:
    """Close the client's connection with a TCP reset (SO_LINGER 0), as a broken network does."""
    h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    h.close_connection = True
