"""What the original Go service offers besides the contract: `POST /sessions/batch-conversations`
against real agent servers, and distributed tracing end to end (the caller's W3C trace context in,
spans out to a real OTLP/HTTP receiver, the trace and baggage on to the agent server)."""

from __future__ import annotations

import sys
import uuid

import httpx
import pytest

from conftest import _start_service, _stop_and_check
from runtime_api_support.otlp import Receiver
from runtime_api_support.service import REPO_ROOT
from test_http_contract import new_session_id, start, stop, wait_running

CALLER_TRACE_ID = uuid.uuid4().hex
CALLER_SPAN_ID = "b7ad6b7169203331"


def test_batch_conversations_with_real_agent_servers(api, service):
    running = start(api, new_session_id())
    paused = start(api, new_session_id())
    try:
        wait_running(api, running["session_id"])
        wait_running(api, paused["session_id"])
        assert api.post("/pause", json={"runtime_id": paused["runtime_id"]}).status_code == 200
        unknown = uuid.uuid4().hex
        conversation = str(uuid.uuid4())
        body = {"sandboxes": {
            running["runtime_id"]: {"session_id": running["session_id"], "conversation_ids": [conversation]},
            paused["runtime_id"]: {"session_id": paused["session_id"], "conversation_ids": [conversation]},
            unknown: {"session_id": "nobody", "conversation_ids": [conversation]},
        }}
        r = api.post("/sessions/batch-conversations", json=body)
        assert r.status_code == 200, r.text
        answer = r.json()
        # The real agent server answered (null: no such conversation there); the others: [].
        assert answer == {running["runtime_id"]: [None], paused["runtime_id"]: [], unknown: []}, answer
        # Without the session key the agent server refuses: the service did send it.
        direct = httpx.get(f"{running['url']}/api/conversations", params={"ids": conversation}, timeout=10)
        assert direct.status_code == 401, direct.text
        # Asking did not wake the paused runtime.
        assert api.get(f"/runtime/{paused['runtime_id']}").json()["status"] == "paused"
    finally:
        service.note_agents()
        stop(api, running["runtime_id"])
        stop(api, paused["runtime_id"])


@pytest.fixture(scope="module")
def traced():
    """A service exporting traces to a receiver started here, with stand-in agent servers that
    show the trace headers they were sent."""
    agent = REPO_ROOT / "tests" / "support" / "stand_in_agent.py"
    with Receiver() as receiver:
        svc = _start_service({
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_SERVICE_NAME": "runtime-api-e2e",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "PROCESS_AGENT_COMMAND": f"{sys.executable} {agent} --port {{port}}",
        })
        yield svc, receiver
        _stop_and_check(svc)


def test_spans_reach_a_real_otlp_receiver_and_the_trace_reaches_the_agent(traced):
    from runtime_api_support.service import wait_for

    svc, receiver = traced
    with svc.client(timeout=30) as api:
        session_id = new_session_id()
        runtime = start(api, session_id)
        wait_running(api, session_id, timeout=30)
        headers = {"traceparent": f"00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01", "baggage": "tenant=acme"}
        body = {"sandboxes": {runtime["runtime_id"]: {"session_id": session_id, "conversation_ids": ["c1"]}}}
        r = api.post("/sessions/batch-conversations", json=body, headers=headers)
        assert r.status_code == 200 and r.json() == {runtime["runtime_id"]: [{"id": "c1"}]}, r.text
        untraced = api.get("/list")
        assert untraced.status_code == 200

        def exported():
            spans = receiver.of_trace(CALLER_TRACE_ID)
            server = [s for s in spans if s.name == "POST /sessions/batch-conversations"]
            client = [s for s in spans if s.name == "agent conversations"]
            return (server[0], client[0]) if server and client else None
        server, client = wait_for(exported, 20, interval=0.2, desc="the request's spans at the receiver")

        assert server.kind == "SPAN_KIND_SERVER" and server.parent_span_id == CALLER_SPAN_ID, server
        assert server.service == "runtime-api-e2e", server
        assert server.attributes.get("http.route") == "/sessions/batch-conversations", server
        assert server.attributes.get("http.response.status_code") == 200, server
        assert client.kind == "SPAN_KIND_CLIENT" and client.parent_span_id == server.span_id, client
        assert client.attributes.get("runtime_id") == runtime["runtime_id"], client

        # The agent server saw the same trace, with the client span as its parent, and the
        # caller's baggage plus the runtime's ids.
        seen = httpx.get(f"{runtime['url']}/last-trace-headers", timeout=10).json()
        assert seen["traceparent"] == f"00-{CALLER_TRACE_ID}-{client.span_id}-01", seen
        baggage = {e.strip() for e in seen["baggage"].split(",")}
        assert {"tenant=acme", f"runtime_id={runtime['runtime_id']}", f"session_id={session_id}"} <= baggage, seen

        # A request without a trace context starts its own trace; health checks make no spans.
        lists = wait_for(lambda: [s for s in receiver.spans if s.name == "GET /list"], 20, interval=0.2,
                         desc="the span of GET /list")
        assert lists[0].trace_id != CALLER_TRACE_ID and lists[0].parent_span_id == "", lists
        assert not [s for s in receiver.spans if s.name.endswith("/health")]
        stop(api, runtime["runtime_id"])
