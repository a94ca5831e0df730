"""A minimal stand-in for the agent server, for the Rust API tests of the process backend.

It answers GET /alive like the real agent server and exposes its own environment and working
directory (GET /env, GET /cwd) so tests can check what the backend injected. Like the real one,
GET /api/conversations?ids=a&ids=b answers a list (here `{"id": ...}` per id) to callers with the
session key; the trace headers of that last call are shown by GET /last-trace-headers. The
end-to-end tests in tests/e2e run the real OpenHands agent server instead.
"""

import argparse
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LAST_TRACE_HEADERS: dict[str, str | None] = {}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlsplit(self.path)
        bodies = {
            "/alive": {"status": "ok"},
            "/env": dict(os.environ),
            "/cwd": {"cwd": os.getcwd()},
            "/last-trace-headers": LAST_TRACE_HEADERS,
        }
        body = bodies.get(url.path)
        status = 200 if body is not None else 404
        if url.path == "/api/conversations":
            LAST_TRACE_HEADERS.update({h: self.headers.get(h) for h in ("traceparent", "baggage")})
            if self.headers.get("X-Session-API-Key") != os.environ.get("SESSION_API_KEY"):
                status, body = 401, {"detail": "bad session key"}
            else:
                status, body = 200, [{"id": i} for i in parse_qs(url.query).get("ids", [])]
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(body).encode())

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()
