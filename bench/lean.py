"""A lean HTTP/1.1 keep-alive client (standard library http.client) for the timed requests.

httpx costs ~0.7 ms of Python CPU per request on the 2-core machine, http.client ~0.3 ms; a
direct creation makes six requests where `/start` makes one, so with httpx the limit paid the
client six times and came out slower than the service it is meant to bound. Both sides of every
timed comparison go through this client. Connections are opened up front (`warm`) and reused
(LIFO), so no timed request pays a TCP or TLS handshake. Thread-safe.
"""

from __future__ import annotations

import http.client
import json as jsonlib
import queue
import ssl
import time
from urllib.parse import urlencode, urlsplit


class Response:
    __slots__ = ("status_code", "content")

    def __init__(self, status_code: int, content: bytes):
        self.status_code = status_code
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self):
        return jsonlib.loads(self.content)


class Lean:
    def __init__(self, base_url: str, size: int, headers: dict[str, str] | None = None,
                 context: ssl.SSLContext | None = None, timeout: float = 120.0):
        u = urlsplit(base_url)
        self.https = u.scheme == "https"
        self.host, self.port = u.hostname, u.port or (443 if self.https else 80)
        self.context, self.timeout = context, timeout
        self.headers = dict(headers or {})
        self.size = size
        self.pool: queue.LifoQueue = queue.LifoQueue()
        self.reconnects = 0
        for _ in range(size):
            self.pool.put(self._new())

    def _new(self) -> http.client.HTTPConnection:
        if self.https:
            return http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=self.timeout)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def warm(self, path: str = "/") -> None:
        """Replaces every pooled connection with a fresh, opened one (one request each)."""
        conns = [self.pool.get() for _ in range(self.size)]
        fresh = []
        try:
            for c in conns:
                c.close()
                c = self._new()
                fresh.append(c)
                c.request("GET", path, headers=self.headers)
                c.getresponse().read()
        finally:
            fresh += [self._new() for _ in range(self.size - len(fresh))]
            for c in fresh:
                self.pool.put(c)

    def request(self, method: str, path: str, json=None, params=None) -> Response:
        if params:
            path = f"{path}?{urlencode(params, doseq=True)}"
        body, headers = None, self.headers
        if json is not None:
            body = jsonlib.dumps(json).encode()
            headers = {**self.headers, "Content-Type": "application/json"}
        c = self.pool.get()
        try:
            for attempt in (0, 1):
                try:
                    c.request(method, path, body=body, headers=headers)
                    r = c.getresponse()
                    return Response(r.status, r.read())
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                        http.client.CannotSendRequest, http.client.ResponseNotReady):
                    # a kept-alive connection the server closed meanwhile: one fresh try
                    c.close()
                    c = self._new()
                    self.reconnects += 1
                    if attempt:
                        raise
                    time.sleep(0.01)
            raise AssertionError("unreachable")
        except BaseException:
            c.close()
            c = self._new()
            raise
        finally:
            self.pool.put(c)

    def get(self, path: str, params=None) -> Response:
        return self.request("GET", path, params=params)

    def post(self, path: str, json=None) -> Response:
        return self.request("POST", path, json=json)

    def close(self) -> None:
        while not self.pool.empty():
            self.pool.get().close()
