"""Plain-HTTP end-to-end checks of the Runtime API contract corners the SDK does not exercise
(docs: runtime-api-contract.md in the steering repository). Real service, real agent servers."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from service import start_payload, url_answers, url_refuses, wait_for

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


# --- auth --------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong-key"}, {"X-API-Key": ""}])
@pytest.mark.parametrize("method,path", [("GET", "/list"), ("POST", "/start"),
                                         ("GET", "/sessions/whatever"), ("POST", "/stop")])
def test_unauthenticated_gets_401_json(service, headers, method, path):
    r = httpx.request(method, service.base_url + path, headers=headers,
                      json=start_payload(new_session_id()) if method == "POST" else None, timeout=10)
    assert r.status_code == 401, f"{method} {path} with {headers}: {r.status_code} {r.text}"
    assert "json" in r.headers.get("content-type", ""), r.headers
    r.json()  # must parse


def test_health_needs_no_key(service):
    assert httpx.get(service.base_url + "/health", timeout=10).status_code == 200


def test_session_api_key_header_is_ignored_on_runtime_api(service):
    r = httpx.get(service.base_url + "/list", timeout=10,
                  headers={"X-API-Key": service.api_key, "X-Session-API-Key": "something-else"})
    assert r.status_code == 200, r.text


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


def test_session_ids_differing_in_case_are_distinct(api, service):
    base = "AbCdEf" + uuid.uuid4().hex[:10]
    upper, lower = start(api, base), start(api, base.lower())
    try:
        assert upper["runtime_id"] != lower["runtime_id"]
        assert api.get(f"/sessions/{base}").json()["session_id"] == base
        assert api.get(f"/sessions/{base.lower()}").json()["session_id"] == base.lower()
    finally:
        service.note_agents()
        stop(api, upper["runtime_id"])
        stop(api, lower["runtime_id"])


def test_start_accepts_list_command_and_rejects_bad_resource_factor(api, service):
    sid = new_session_id()
    body = start(api, sid, command=["/usr/local/bin/openhands-agent-server", "--port", "60000"],
                 working_dir="/workspace", resource_factor=2, runtime_class="sysbox-runc",
                 environment={"E2E_A": "1"}, some_unknown_field={"x": 1})
    try:
        for bad in (0, -1):
            r = api.post("/start", json=start_payload(new_session_id(), resource_factor=bad))
            assert r.status_code == 400, f"resource_factor={bad}: {r.status_code} {r.text}"
    finally:
        service.note_agents()
        stop(api, body["runtime_id"])


def test_unknown_ids_are_404(api):
    assert api.get(f"/sessions/{new_session_id()}").status_code == 404
    assert api.get("/runtime/does-not-exist").status_code == 404
    for action in ("pause", "resume", "stop"):
        r = api.post(f"/{action}", json={"runtime_id": "does-not-exist"})
        assert r.status_code == 404, f"/{action} unknown: {r.status_code} {r.text}"


# --- batch / list ------------------------------------------------------------------------------

def test_sessions_batch_is_bare_list(api, service):
    a, b = new_session_id(), new_session_id()
    ra, rb = start(api, a), start(api, b)
    try:
        for query in (f"ids={a}&ids={b}", f"ids={a},{b}"):
            r = api.get(f"/sessions/batch?{query}")
            assert r.status_code == 200, f"?{query}: {r.status_code} {r.text}"
            body = r.json()
            assert isinstance(body, list), f"?{query}: not a bare JSON array: {body!r}"
            assert {rt["session_id"] for rt in body} == {a, b}, body
            assert {rt["runtime_id"] for rt in body} == {ra["runtime_id"], rb["runtime_id"]}
        r = api.get(f"/sessions/batch?ids={a}&ids=no-such-session")
        assert r.status_code == 200, r.text
        assert [rt["session_id"] for rt in r.json()] == [a], r.json()
    finally:
        service.note_agents()
        stop(api, ra["runtime_id"])
        stop(api, rb["runtime_id"])


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
