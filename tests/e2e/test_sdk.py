"""End-to-end: the real OpenHands SDK client (APIRemoteWorkspace) against runtime-api's process
backend, which runs the real openhands-agent-server. Nothing is faked."""

from __future__ import annotations

import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from openhands.workspace import APIRemoteWorkspace

from runtime_api_support.service import pids_listening_on, url_refuses, wait_for

IMAGE = "ghcr.io/openhands/agent-server:1.58.2-python"
START_TIMEOUT = 180.0  # agent server cold start on 2 cores, several at once


def open_workspace(service, **kw) -> APIRemoteWorkspace:
    base_url, api_key = service
    return APIRemoteWorkspace(
        runtime_api_url=base_url,
        runtime_api_key=api_key,
        server_image=IMAGE,
        runtime_class=None,
        working_dir="/workspace",
        init_timeout=120.0,
        startup_wait_timeout=START_TIMEOUT,
        api_timeout=60.0,
        **kw,
    )


def get_session(api: httpx.Client, session_id: str) -> dict:
    r = api.get(f"/sessions/{session_id}")
    assert r.status_code == 200, f"GET /sessions/{session_id}: {r.status_code} {r.text}"
    return r.json()


def port_of(url: str) -> int:
    return httpx.URL(url).port


def assert_runtime_gone(api: httpx.Client, runtime_id: str, url: str) -> None:
    r = api.get(f"/runtime/{runtime_id}")
    assert r.status_code == 404 or (r.status_code == 200 and r.json().get("status") == "stopped"), (
        f"after stop, GET /runtime/{runtime_id} gave {r.status_code} {r.text}; want 404 or status stopped")
    wait_for(lambda: url_refuses(url), 30, desc=f"agent server at {url} to go away after stop")
    assert pids_listening_on(port_of(url)) == [], f"something still listens on {url} after stop"


def test_lifecycle_command_files_pause_resume_stop(service, api, tmp_path):
    payload = os.urandom(64 * 1024) + b"\nend-of-e2e-payload\n"
    session_id = f"agent-server-{uuid.uuid4()}"

    with open_workspace(service, session_id=session_id) as ws:
        runtime_id = ws._runtime_id
        url = ws._runtime_url
        assert runtime_id and url.startswith("http://127.0.0.1:"), (runtime_id, url)
        service.note_agents()

        res = ws.execute_command("echo hello-e2e")
        assert res.exit_code == 0, res
        assert res.stdout.strip() == "hello-e2e", res

        # the agent server runs in a per-runtime dir under STATE_DIR
        pwd = ws.execute_command("pwd")
        assert pwd.exit_code == 0, pwd
        cwd = Path(pwd.stdout.strip())
        assert cwd.resolve().is_relative_to(service.state_dir.resolve()), (
            f"agent server cwd {cwd} is not under STATE_DIR {service.state_dir}")

        remote = f"{cwd}/e2e-upload.bin"
        up = ws.file_upload(payload, remote)
        assert up.success, up
        size = ws.execute_command(f"stat -c %s {remote}")
        assert size.stdout.strip() == str(len(payload)), size
        down = ws.file_download(remote, tmp_path / "first.bin")
        assert down.success, down
        assert (tmp_path / "first.bin").read_bytes() == payload

        # pause: status paused, the agent server process is gone, record and url kept
        ws.pause()
        paused = get_session(api, session_id)
        assert paused["status"].lower() == "paused", paused
        assert paused["runtime_id"] == runtime_id
        wait_for(lambda: url_refuses(url), 30, desc="agent server to stop answering after pause")

        # resume (the SDK waits for pod_status ready and /health): same url, file still there
        ws.resume()
        resumed = get_session(api, session_id)
        assert resumed["status"].lower() == "running", resumed
        assert resumed["url"] == url, f"url changed across pause/resume: {url} -> {resumed['url']}"
        service.note_agents()
        down2 = ws.file_download(remote, tmp_path / "after-resume.bin")
        assert down2.success, down2
        assert (tmp_path / "after-resume.bin").read_bytes() == payload
        again = ws.execute_command("echo still-$((6*7))")
        assert (again.exit_code, again.stdout.strip()) == (0, "still-42"), again

    # context exit -> cleanup() -> POST /stop (the SDK swallows errors, so check the service)
    assert ws._runtime_id is None
    assert_runtime_gone(api, runtime_id, url)


def test_five_sandboxes_at_once(service, api):
    n = 5

    def run(i: int):
        ws = open_workspace(service, session_id=f"agent-server-{uuid.uuid4()}")
        try:
            res = ws.execute_command(f"echo sandbox-{i}-$(({i}*1000+7))")
            return ws._runtime_id, ws._runtime_url, res
        finally:
            ws.cleanup()

    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(run, range(n)))
    service.note_agents()

    for i, (runtime_id, url, res) in enumerate(results):
        assert res.exit_code == 0, (i, res)
        assert res.stdout.strip() == f"sandbox-{i}-{i * 1000 + 7}", (i, res)
    assert len({r[0] for r in results}) == n, f"runtime ids not distinct: {results}"
    assert len({r[1] for r in results}) == n, f"urls not distinct: {results}"
    for runtime_id, url, _ in results:
        assert_runtime_gone(api, runtime_id, url)


def test_sdk_attaches_to_existing_session(service, api):
    """A second APIRemoteWorkspace with the same session_id attaches to the running runtime
    (GET /sessions/{id} first) instead of starting another one."""
    session_id = f"agent-server-{uuid.uuid4()}"
    first = open_workspace(service, session_id=session_id)
    try:
        first.execute_command("echo marker > attach-marker.txt")
        second = open_workspace(service, session_id=session_id, keep_alive=True)
        try:
            assert second._runtime_id == first._runtime_id
            assert second._runtime_url == first._runtime_url
            res = second.execute_command("cat attach-marker.txt")
            assert (res.exit_code, res.stdout.strip()) == (0, "marker"), res
        finally:
            second.cleanup()  # keep_alive: does not stop the runtime
        assert get_session(api, session_id)["status"].lower() == "running"
    finally:
        runtime_id, url = first._runtime_id, first._runtime_url
        first.cleanup()
    assert_runtime_gone(api, runtime_id, url)


@pytest.mark.parametrize("session_id", ["Ab3dEfGhIjKlMnOpQrStUv", "deadbeef" * 4])
def test_sdk_with_non_dns_session_ids(service, api, session_id):
    """V1 uses mixed-case base62 ids, others hex: the SDK flow must work with both."""
    session_id = f"{session_id}{uuid.uuid4().hex[:6]}"
    with open_workspace(service, session_id=session_id) as ws:
        runtime_id, url = ws._runtime_id, ws._runtime_url
        assert get_session(api, session_id)["session_id"] == session_id
        res = ws.execute_command("echo ok")
        assert (res.exit_code, res.stdout.strip()) == (0, "ok"), res
    assert_runtime_gone(api, runtime_id, url)
