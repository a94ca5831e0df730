"""End-to-end: warm pools with late binding on the process backend, with the real SDK client and
the real agent server in deferred-init mode (dormant until runtime-api's POST /api/init)."""

from __future__ import annotations

import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from openhands.workspace import APIRemoteWorkspace

from conftest import _start_service, _stop_and_check
from runtime_api_support.service import start_payload, url_refuses, wait_for

IMAGE = "ghcr.io/openhands/agent-server:1.58.2-python"
POOL = 5
# Members boot like any agent server: several at once on 2 loaded cores take a while.
FILL_TIMEOUT = 300.0
AGENT = "env LITELLM_LOCAL_MODEL_COST_MAP=True openhands-agent-server --host 127.0.0.1 --port {port}"


@pytest.fixture(scope="module")
def pool_service():
    svc = _start_service({"WARM_POOL_SIZE": str(POOL), "DEFAULT_IMAGE": IMAGE,
                          "PROCESS_AGENT_COMMAND": AGENT})
    yield svc
    _stop_and_check(svc)


def metric(base_url: str, name: str, labels: str = "") -> float:
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and labels in line)


def wait_pool_full(svc) -> None:
    base_url, _ = svc
    wait_for(lambda: metric(base_url, "runtime_api_pool_ready", 'pool="default"') == POOL,
             FILL_TIMEOUT, interval=0.5, desc=f"{POOL} ready pool members")


def claims(base_url: str, outcome: str) -> float:
    return metric(base_url, "runtime_api_pool_claims_total", f'outcome="{outcome}"')


def bash(url: str, key: str | None, command: str) -> httpx.Response:
    headers = {"X-Session-API-Key": key} if key is not None else {}
    return httpx.post(f"{url}/api/bash/execute_bash_command", json={"command": command},
                      headers=headers, timeout=60)


def test_warm_start_binds_the_request_environment_and_key(pool_service):
    base_url, api_key = pool_service
    wait_pool_full(pool_service)
    hits = claims(base_url, "hit")
    secret = f"value-{uuid.uuid4().hex}"
    os.environ["POOL_E2E_VAR"] = secret
    session_id = f"agent-server-{uuid.uuid4()}"
    t0 = time.perf_counter()
    with APIRemoteWorkspace(runtime_api_url=base_url, runtime_api_key=api_key, server_image=IMAGE,
                            runtime_class=None, session_id=session_id, forward_env=["POOL_E2E_VAR"],
                            init_timeout=60, startup_wait_timeout=60) as ws:
        res = ws.execute_command("echo $POOL_E2E_VAR")
        first_command = time.perf_counter() - t0
        assert (res.exit_code, res.stdout.strip()) == (0, secret), res
        assert claims(base_url, "hit") == hits + 1, "the start was not served by the pool"
        runtime_id, url = ws._runtime_id, ws._runtime_url
        print(f"\n[pool] SDK warm start -> first command: {first_command:.3f} s")

        with httpx.Client(base_url=base_url, headers={"X-API-Key": api_key}, timeout=30) as api:
            rt = api.get(f"/runtime/{runtime_id}").json()
            assert rt["status"] == "running", rt
            key = rt["session_api_key"]
            # The agent answers to the session key it was given at init, and to nothing else.
            assert bash(url, None, "true").status_code == 401
            assert bash(url, "not-the-key", "true").status_code == 401
            assert bash(url, key, "echo ok").status_code == 200
            # Nothing of the dormant server's init key is left inside the sandbox (the agent
            # server keeps OH_SECRET_KEY out of commands; if it did not, it would be the session key).
            env = bash(url, key, "echo [$OH_SECRET_KEY]-$OH_DEFERRED_INIT").json()
            assert env["stdout"].strip() in ("[]-false", f"[{key}]-false"), env
            # A pool member is never a runtime: /list shows exactly the runtimes.
            listed = api.get("/list", params={"status": "all"}).json()["runtimes"]
            assert [r["runtime_id"] for r in listed] == [runtime_id], listed

            ws.pause()
            assert api.get(f"/runtime/{runtime_id}").json()["status"] == "paused"
            wait_for(lambda: url_refuses(url), 30, desc="the warm runtime's agent to stop on pause")
            ws.resume()  # a cold relaunch from the record: same key, same environment
            res = ws.execute_command("echo $POOL_E2E_VAR")
            assert (res.exit_code, res.stdout.strip()) == (0, secret), res
            assert api.get(f"/runtime/{runtime_id}").json()["session_api_key"] == key
    with httpx.Client(base_url=base_url, headers={"X-API-Key": api_key}, timeout=30) as api:
        r = api.get(f"/runtime/{runtime_id}")
        assert r.status_code == 404, r.text
    wait_for(lambda: url_refuses(url), 30, desc="the warm runtime's agent to stop")


def test_twenty_concurrent_starts_against_a_pool_of_five(pool_service):
    base_url, api_key = pool_service
    wait_pool_full(pool_service)
    hits, misses = claims(base_url, "hit"), claims(base_url, "miss")
    n = 20

    def start(i: int) -> dict:
        with httpx.Client(base_url=base_url, headers={"X-API-Key": api_key}, timeout=120) as api:
            body = start_payload(f"pool-{i}-{uuid.uuid4().hex[:8]}", image=IMAGE,
                                 environment={"POOL_INDEX": str(i)})
            r = api.post("/start", json=body)
            assert r.status_code in (200, 201), r.text
            return r.json()

    with ThreadPoolExecutor(max_workers=n) as ex:
        started = list(ex.map(start, range(n)))
    try:
        assert claims(base_url, "hit") - hits == POOL
        assert claims(base_url, "miss") - misses == n - POOL
        warm = [rt for rt in started if rt["status"] == "running"]
        assert len(warm) == POOL, [rt["status"] for rt in started]
        # No member serves two runtimes: distinct ids, addresses and keys ...
        assert len({rt["runtime_id"] for rt in started}) == n
        assert len({rt["url"] for rt in started}) == n
        assert len({rt["session_api_key"] for rt in started}) == n
        # ... and each agent holds its own request's environment and answers its own key.
        with httpx.Client(base_url=base_url, headers={"X-API-Key": api_key}, timeout=30) as api:
            def all_running() -> bool:
                statuses = [api.get(f"/runtime/{rt['runtime_id']}").json() for rt in started]
                failed = [(s["runtime_id"], s["status_detail"]) for s in statuses if s["status"] == "error"]
                assert not failed, failed
                return all(s["status"] == "running" for s in statuses)
            # 15 cold agent servers and 5 new members boot at once on 2 shared cores.
            wait_for(all_running, 2 * FILL_TIMEOUT, interval=1, desc="20 runtimes running")
        for i, rt in enumerate(started):
            out = bash(rt["url"], rt["session_api_key"], "echo $POOL_INDEX")
            assert (out.status_code, out.json()["stdout"].strip()) == (200, str(i)), out.text
    finally:
        with httpx.Client(base_url=base_url, headers={"X-API-Key": api_key}, timeout=60) as api:
            for rt in started:
                api.post("/stop", json={"runtime_id": rt["runtime_id"]})
    # The pool refills in the background.
    wait_pool_full(pool_service)


def test_a_member_that_cannot_be_initialised_falls_back_to_a_cold_start(pool_service):
    """A member whose agent died is dropped (never reused) and the start goes cold."""
    base_url, api_key = pool_service
    wait_pool_full(pool_service)
    svc_pids = set(pool_service.note_agents())
    # Kill every dormant member: their processes carry no session key yet.
    import signal
    members = [p for p in svc_pids if _is_dormant(p)]
    assert len(members) == POOL, (members, svc_pids)
    for p in members:
        os.kill(p, signal.SIGSTOP)  # alive but unanswering: POST /api/init times out or fails
    try:
        failures = claims(base_url, "init_failure")
        with httpx.Client(base_url=base_url, headers={"X-API-Key": api_key}, timeout=120) as api:
            r = api.post("/start", json=start_payload(f"pool-fallback-{uuid.uuid4().hex[:8]}", image=IMAGE))
            assert r.status_code in (200, 201), r.text
            rt = r.json()
            assert claims(base_url, "init_failure") == failures + 1
            wait_for(lambda: api.get(f"/runtime/{rt['runtime_id']}").json()["status"] == "running",
                     FILL_TIMEOUT, interval=1, desc="the cold runtime running")
            api.post("/stop", json={"runtime_id": rt["runtime_id"]}).raise_for_status()
    finally:
        for p in members:
            try:
                os.kill(p, signal.SIGCONT)
            except ProcessLookupError:
                pass


def _is_dormant(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return b"OH_DEFERRED_INIT=true\0" in f.read()
    except OSError:
        return False
