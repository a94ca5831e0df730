"""A minimal stand-in for the agent server, for the Rust API tests of the process backend.

It answers GET /alive like the real agent server and exposes its own environment and working
directory (GET /env, GET /cwd) so tests can check what the backend injected. Like the real one,
GET /api/conversations?ids=a&ids=b answers a list (here `{"id": ...}` per id) to callers with the
session key; the trace headers of that last call are shown by GET /last-trace-headers. For the
gateway tests it also reports what it received (any other path, any method: method, raw path,
headers, body size), streams N bytes (GET /bytes?n=N), answers late (GET /slow?seconds=S) and
echoes WebSocket messages (/ws). The end-to-end tests in tests/e2e run the real OpenHands agent
server instead.
"""

import argparse
import base64
import hashlib
import json
import os
import struct
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LAST_TRACE_HEADERS: dict[str, str | None] = {}
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Head and body go out in two writes: with Nagle on, the body waits for the client's delayed
    # ACK (40 ms), which the real agent server (uvicorn, TCP_NODELAY) never does.
    disable_nagle_algorithm = True

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def echo(self):
        length = int(self.headers.get("Content-Length") or 0)
        received = 0
        while received < length:
            chunk = self.rfile.read(min(1 << 20, length - received))
            if not chunk:
                break
            received += len(chunk)
        self.reply(200, {
            "method": self.command,
            "path": self.path,
            "headers": [[k.lower(), v] for k, v in self.headers.items()],
            "body_bytes": received,
            "runtime_dir": os.environ.get("RUNTIME_API_RUNTIME_DIR", ""),
        })

    def do_GET(self):
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/ws" and self.headers.get("Upgrade", "").lower() == "websocket":
            return self.websocket()
        if url.path == "/bytes":
            n = int(query["n"][0])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            block = b"x" * (1 << 20)
            while n > 0:
                self.wfile.write(block[: min(n, len(block))])
                n -= len(block)
            return
        if url.path == "/slow":
            time.sleep(float(query["seconds"][0]))
            return self.reply(200, {"slow": True})
        if url.path == "/api/conversations":
            LAST_TRACE_HEADERS.update({h: self.headers.get(h) for h in ("traceparent", "baggage")})
            if self.headers.get("X-Session-API-Key") != os.environ.get("SESSION_API_KEY"):
                return self.reply(401, {"detail": "bad session key"})
            return self.reply(200, [{"id": i} for i in query.get("ids", [])])
        bodies = {
            "/alive": {"status": "ok"},
            "/env": dict(os.environ),
            "/cwd": {"cwd": os.getcwd()},
            "/last-trace-headers": LAST_TRACE_HEADERS,
        }
        body = bodies.get(self.path)
        if body is None:
            return self.echo()
        self.reply(200, body)

    do_POST = do_PUT = do_DELETE = do_PATCH = echo

    def websocket(self):
        accept = base64.b64encode(
            hashlib.sha1((self.headers["Sec-WebSocket-Key"] + WS_GUID).encode()).digest()
        ).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                break
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                length = struct.unpack(">H", self.rfile.read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self.rfile.read(8))[0]
            mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(length)))
            if opcode == 8:
                self.wfile.write(b"\x88\x00")
                break
            if opcode == 9:
                opcode = 10
            if length < 126:
                header = bytes([0x80 | opcode, length])
            elif length < 65536:
                header = bytes([0x80 | opcode, 126]) + struct.pack(">H", length)
            else:
                header = bytes([0x80 | opcode, 127]) + struct.pack(">Q", length)
            self.wfile.write(header + payload)
            self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()
