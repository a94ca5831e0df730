"""A small OTLP/HTTP trace receiver for the tests: `POST /v1/traces` with a protobuf
`ExportTraceServiceRequest`, decoded with the official `opentelemetry-proto` package. It keeps
every span it receives, for the tests to inspect. The package comes with the OpenHands SDK and
is pinned in tests/e2e/constraints.txt; scripts/python.sh checks that it imports.

Why not the OpenTelemetry Collector: building it from its Go module takes many minutes on the
2-core machines of this project; the wire format is the part under test, and this decodes it with
the reference protobuf definitions.

Run alone (prints spans as JSON lines):  python -m runtime_api_support.otlp --port 4318
"""

from __future__ import annotations

import argparse
import gzip
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan


@dataclass
class ReceivedSpan:
    service: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, object] = field(default_factory=dict)


def _value(v) -> object:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def decode(body: bytes) -> list[ReceivedSpan]:
    """The spans of one export request."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for s in scope_spans.spans:
                spans.append(ReceivedSpan(
                    service=str(resource.get("service.name", "")),
                    name=s.name,
                    kind=ProtoSpan.SpanKind.Name(s.kind),
                    trace_id=s.trace_id.hex(),
                    span_id=s.span_id.hex(),
                    parent_span_id=s.parent_span_id.hex(),
                    attributes={a.key: _value(a.value) for a in s.attributes},
                ))
    return spans


class Receiver:
    """Listens on 127.0.0.1:`port` (0: any free port) in a background thread."""

    def __init__(self, port: int = 0, on_span=None):
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces" or "protobuf" not in self.headers.get("Content-Type", ""):
                    self.send_response(404 if self.path != "/v1/traces" else 415)
                    self.end_headers()
                    return
                try:
                    spans = decode(body)
                except Exception:  # noqa: BLE001 - a malformed export is the sender's bug: 400
                    self.send_response(400)
                    self.end_headers()
                    return
                with receiver._lock:
                    receiver.requests += 1
                    receiver.spans.extend(spans)
                for s in spans:
                    if on_span:
                        on_span(s)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self._server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "Receiver":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def of_trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4318)
    args = parser.parse_args()
    with Receiver(args.port, on_span=lambda s: print(json.dumps(s.__dict__), flush=True)) as r:
        print(f"listening on {r.endpoint}/v1/traces", flush=True)
        threading.Event().wait()
