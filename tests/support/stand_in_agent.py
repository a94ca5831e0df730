"""A minimal stand-in for the agent server, for the Rust API tests of the process backend.

It answers GET /alive like the real agent server and exposes its own environment and working
directory (GET /env, GET /cwd) so tests can check what the backend injected. The end-to-end tests
in tests/e2e run the real OpenHands agent server instead.
"""

import argparse
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        bodies = {
            "/alive": {"status": "ok"},
            "/env": dict(os.environ),
            "/cwd": {"cwd": os.getcwd()},
        }
        body = bodies.get(self.path)
        self.send_response(200 if body is not None else 404)
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
