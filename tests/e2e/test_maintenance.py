"""Idle pause driven by a real agent server's /server_info, on the process backend.

The service asks each running agent server for its `idle_time` and pauses (never deletes) the
runtimes idle longer than RUNTIME_IDLE_SECONDS. File operations count as activity for the agent
server, so a runtime in use is left alone; once left alone it is paused, and resumes intact.
"""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from openhands.workspace import APIRemoteWorkspace

from conftest import _start_service, _stop_and_check
from runtime_api_support.service import url_refuses, wait_for

# Long enough that the SDK (which polls readiness with up to 10 s pauses) gets to use the
# sandbox before it counts as idle.
IDLE_SECONDS = 20


@pytest.fixture(scope="module")
def idle_service():
    svc = _start_service({"RUNTIME_IDLE_SECONDS": str(IDLE_SECONDS), "MAINTENANCE_INTERVAL_SECONDS": "1"})
    yield svc
    _stop_and_check(svc)


def _metric(base_url: str, name: str, labels: str) -> float:
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and labels in line)


def test_idle_runtime_is_paused_not_deleted_and_resumes(idle_service, tmp_path):
    base_url, api_key = idle_service
    session_id = f"idle-{uuid.uuid4()}"
    ws = APIRemoteWorkspace(runtime_api_url=base_url, runtime_api_key=api_key, session_id=session_id,
                            server_image="ghcr.io/openhands/agent-server:1.58.2-python",
                            runtime_class=None, init_timeout=120, startup_wait_timeout=180)
    try:
        cwd = ws.execute_command("pwd").stdout.strip()
        marker = tmp_path / "marker.txt"
        marker.write_text("survives idle pause")
        assert ws.file_upload(str(marker), f"{cwd}/marker.txt").success

        with httpx.Client(base_url=base_url, headers={"X-API-Key": api_key}, timeout=30) as api:
            runtime = api.get(f"/sessions/{session_id}").json()
            # The agent server's own view of idleness is what drives the decision.
            info = httpx.get(f"{runtime['url']}/server_info",
                             headers={"X-Session-API-Key": runtime["session_api_key"]}, timeout=10).json()
            assert info["idle_time"] < IDLE_SECONDS, info

            paused = wait_for(lambda: (r := api.get(f"/sessions/{session_id}").json())["status"] == "paused" and r,
                              timeout=IDLE_SECONDS + 60, interval=0.5, desc="idle pause")
            assert "idle for" in (paused.get("status_detail") or ""), paused
            # The status says paused as soon as the pause begins; the agent server gets its
            # SIGTERM grace to stop answering.
            wait_for(lambda: url_refuses(runtime["url"]), 30,
                     desc="the agent server to stop answering after the idle pause")
            # Paused, not deleted: listed with ?status=paused, same key and URL.
            listed = api.get("/list", params={"status": "paused"}).json()["runtimes"]
            assert [r["runtime_id"] for r in listed] == [runtime["runtime_id"]]
            assert paused["session_api_key"] == runtime["session_api_key"]
            # Counted once the pause has finished (the status says paused as soon as it begins).
            wait_for(lambda: _metric(base_url, "runtime_api_maintenance_actions_total",
                                     'operation="idle_pause",outcome="ok"') >= 1,
                     timeout=20, desc="the idle_pause maintenance metric")

        ws.resume()
        out = ws.execute_command(f"cat {cwd}/marker.txt")
        assert out.exit_code == 0 and out.stdout.strip() == "survives idle pause"
    finally:
        ws.cleanup()
