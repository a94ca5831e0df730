"""Plain-HTTP end-to-end checks of the Runtime API contract corners the SDK does not exercise
(docs: runtime-api-contract.md in the steering repository). Real service, real agent servers:
only what needs a real agent server is here. Authentication, error shapes, 404s, batch and list
query forms, case-distinct session ids and request validation are checked in-process
(src/api/tests.rs) and over a socket with a stand-in agent (tests/api.rs)."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from runtime_api_support.service import start_payload, url_answers, url_refuses, wait_for

READY_TIMEOUT = 120.0

RUNTIME_FIELDS = {
    "runtime_id", "session_id", "url", "session_api_key", "status", "pod_status",
    "work_hosts", "restart_count", "restart_reasons", "status_detail", "created_at",
}


def new_session_id() -> str:
    return f"e2e-{uuid.uuid4().hex}"


def start(api: httpx.Client, session_id: str, **overrides) -> dict:
    r = api.post("/start", json=start_payload(session_id, **overrides))
    assert r.status_code == 200, f"POST /start: {r.status_code} {r.text}"
    body = r.json()
    assert body.get("runtime_id") and body.get("url"), body
    return body


def wait_running(api: httpx.Client, session_id: str, timeout: float = READY_TIMEOUT) -> dict:
    def ready():
        r = api.get(f"/sessions/{session_id}")
        assert r.status_code == 200, f"GET /sessions/{session_id}: {r.status_code} {r.text}"
        body = r.json()
        status = body["status"].lower()
        assert status not in ("error", "stopped"), body
        return body if status == "running" and body["pod_status"].lower() == "ready" else None
    return wait_for(ready, timeout, interval=0.5, desc=f"session {session_id} running/ready")


def stop(api: httpx.Client, runtime_id: str) -> None:
    r = api.post("/stop", json={"runtime_id": runtime_id})
    assert r.status_code in (200, 204), f"POST /stop: {r.status_code} {r.text}"


@pytest.fixture
def runtime(api, service):
    """One running runtime via plain HTTP; stopped afterwards."""
    sid = new_session_id()
    body = start(api, sid)
    try:
        yield wait_running(api, sid)
    finally:
        service.note_agents()
        api.post("/stop", json={"runtime_id": body["runtime_id"]})


# --- start / idempotency / runtime object ----------------------------------------------------

def test_runtime_object_has_every_field(api, runtime):
    missing = RUNTIME_FIELDS - runtime.keys()
    assert not missing, f"runtime object lacks {sorted(missing)}: {runtime}"
    assert runtime["status"].lower() == "running"
    assert runtime["pod_status"].lower() == "ready"
    assert len(runtime["session_api_key"]) >= 32, "session key looks too short for 256 bits"
    assert url_answers(runtime["url"]), f"agent server not answering /alive at {runtime['url']}"
    r = api.get(f"/runtime/{runtime['runtime_id']}")
    assert r.status_code == 200, r.text
    assert r.json()["runtime_id"] == runtime["runtime_id"] and "pod_status" in r.json()


def test_session_key_is_enforced_by_agent_server(runtime):
    """The injected session key really protects /api on the agent server."""
    url, key = runtime["url"], runtime["session_api_key"]
    path = "/api/bash/bash_events/search"
    assert httpx.get(url + path, timeout=10).status_code == 401
    assert httpx.get(url + path, headers={"X-Session-API-Key": "nope"}, timeout=10).status_code == 401
    ok = httpx.get(url + path, headers={"X-Session-API-Key": key}, timeout=10)
    assert ok.status_code == 200, ok.text


def test_start_twice_returns_same_runtime(api, service):
    sid = new_session_id()
    first = start(api, sid)
    try:
        second = start(api, sid)
        assert second["runtime_id"] == first["runtime_id"], (first, second)
        assert second["url"] == first["url"]
        assert second["session_api_key"] == first["session_api_key"]
        # and once it is running, a third /start still returns it
        wait_running(api, sid)
        third = start(api, sid)
        assert third["runtime_id"] == first["runtime_id"]
        listed = [rt for rt in api.get("/list").json()["runtimes"] if rt["session_id"] == sid]
        assert len(listed) == 1, f"/list shows {len(listed)} runtimes for one session: {listed}"
    finally:
        service.note_agents()
        stop(api, first["runtime_id"])


def test_start_after_stop_creates_fresh_runtime(api, service):
    sid = new_session_id()
    first = start(api, sid)
    wait_running(api, sid)
    stop(api, first["runtime_id"])
    second = start(api, sid)
    try:
        assert second["runtime_id"] != first["runtime_id"], "stopped runtime was reused"
        wait_running(api, sid)
    finally:
        service.note_agents()
        stop(api, second["runtime_id"])


# --- list ------------------------------------------------------------------------------------

def test_list_shape_and_paused_excluded_by_default(api, service, runtime):
    body = api.get("/list").json()
    assert isinstance(body.get("runtimes"), list) and isinstance(body.get("total"), int), body
    assert body["total"] >= len(body["runtimes"]) >= 1
    ids = {rt["runtime_id"] for rt in body["runtimes"]}
    assert runtime["runtime_id"] in ids
    for rt in body["runtimes"]:
        assert {"session_id", "status", "runtime_id", "url", "session_api_key"} <= rt.keys(), rt

    r = api.post("/pause", json={"runtime_id": runtime["runtime_id"]})
    assert r.status_code == 200, r.text
    after = api.get("/list").json()
    assert runtime["runtime_id"] not in {rt["runtime_id"] for rt in after["runtimes"]}, (
        "paused runtime still in the default /list (V1 treats every listed runtime as running)")
    statuses = {rt["status"].lower() for rt in after["runtimes"]}
    assert statuses <= {"starting", "running", "error"}, after


# --- pause / resume ----------------------------------------------------------------------------

def test_pause_resume_keeps_url_and_key(api, service, runtime):
    rid, url, key = runtime["runtime_id"], runtime["url"], runtime["session_api_key"]

    r = api.post("/pause", json={"runtime_id": rid})
    assert r.status_code == 200, f"/pause: {r.status_code} {r.text}"
    paused = api.get(f"/runtime/{rid}").json()
    assert paused["status"].lower() == "paused", paused
    wait_for(lambda: url_refuses(url), 30, desc="agent server gone after pause")

    r = api.post("/resume", json={"runtime_id": rid})
    assert r.status_code == 200, f"/resume: {r.status_code} {r.text}"
    body = r.json()
    assert body.get("session_api_key") == key, f"/resume session_api_key {body.get('session_api_key')!r} != original"
    assert body.get("runtime_id", rid) == rid

    resumed = wait_running(api, runtime["session_id"])
    service.note_agents()
    assert resumed["url"] == url, f"url changed across pause/resume: {url} -> {resumed['url']}"
    assert resumed["session_api_key"] == key
    assert resumed["runtime_id"] == rid
    # the agent server behind the same url accepts the same key
    ok = httpx.get(url + "/api/bash/bash_events/search", headers={"X-Session-API-Key": key}, timeout=10)
    assert ok.status_code == 200, ok.text


def test_stop_removes_runtime(api, service):
    sid = new_session_id()
    body = start(api, sid)
    running = wait_running(api, sid)
    service.note_agents()
    stop(api, body["runtime_id"])
    r = api.get(f"/runtime/{body['runtime_id']}")
    assert r.status_code == 404 or r.json().get("status", "").lower() == "stopped", r.text
    wait_for(lambda: url_refuses(running["url"]), 30, desc="agent server gone after stop")
    assert body["runtime_id"] not in {rt["runtime_id"] for rt in api.get("/list").json()["runtimes"]}


# --- failing agent command -----------------------------------------------------------------------

def test_agent_that_exits_reports_error_with_exit_code(failing_service):
    with failing_service.client() as api:
        sid = new_session_id()
        start(api, sid)

        def errored():
            r = api.get(f"/sessions/{sid}")
            assert r.status_code == 200, f"GET /sessions/{sid}: {r.status_code} {r.text}"
            b = r.json()
            return b if b["status"].lower() == "error" else None

        body = wait_for(errored, 60, interval=0.5, desc="status error for an agent that exits with 3")
        detail = body.get("status_detail") or ""
        assert re.search(r"\b3\b", detail), f"exit code 3 not in status_detail: {detail!r}"
        # the SDK only gives up on failed / unknown / crashloopbackoff; anything else makes it wait
        assert body["pod_status"].lower() in ("failed", "crashloopbackoff", "unknown"), body
        # error runtimes hold (or held) compute: the default /list includes them
        listed = {rt["session_id"] for rt in api.get("/list").json()["runtimes"]}
        assert sid in listed, "error runtime missing from the default /list"
        stop(api, body["runtime_id"])
