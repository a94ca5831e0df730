"""End-to-end through the sandbox gateway (ROUTING_MODE=gateway, process backend): the real SDK
`APIRemoteWorkspace` gets runtime URLs on the gateway and uses nothing else: commands, a 50 MB
upload and download (upload paths carry encoded slashes), the agent server's event WebSocket;
then the runtime is paused for idleness and the next `execute_command` wakes it through the
gateway, without anyone calling /resume.

The SDK needs host-shaped runtime URLs (it requires its httpx base URL to equal the runtime URL,
and httpx adds a slash to one with a path), so the gateway hands out `http://{id}.localhost:PORT`
(GATEWAY_URL=http://*.localhost:PORT). RFC 6761 says `*.localhost` names are loopback; this
machine's resolver (glibc, no systemd-resolved) does not know that, so the test process resolves
them to 127.0.0.1 itself: the wildcard DNS record a deployment has, nothing else."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import uuid

import httpx
import pytest
import websockets
from openhands.workspace import APIRemoteWorkspace

from conftest import _start_service, _stop_and_check
from runtime_api_support.service import free_port, wait_for

IMAGE = "ghcr.io/openhands/agent-server:1.58.2-python"
IDLE_SECONDS = 20
BIG = 50 * 1024 * 1024


@pytest.fixture(scope="module", autouse=True)
def localhost_subdomains_are_loopback():
    original = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if isinstance(host, str) and host.endswith(".localhost"):
            host = "127.0.0.1"
        return original(host, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo
    yield
    socket.getaddrinfo = original


@pytest.fixture(scope="module")
def gateway_service():
    port = free_port()
    svc = _start_service({
        "ROUTING_MODE": "gateway",
        "GATEWAY_PORT": str(port),
        "GATEWAY_URL": f"http://*.localhost:{port}",
        "RUNTIME_IDLE_SECONDS": str(IDLE_SECONDS),
        "MAINTENANCE_INTERVAL_SECONDS": "1",
    })
    svc.gateway_port = port
    yield svc
    _stop_and_check(svc)


def _metric(base_url: str, name: str, labels: str = "") -> float:
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and labels in line)


def _sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


async def _bash_events_until(ws_url: str, key: str, run, marker: str, timeout: float = 60) -> list[dict]:
    """Opens the agent server's bash event WebSocket, runs `run` (in a thread), and returns the
    events received until one mentions `marker`."""
    seen: list[dict] = []
    async with websockets.connect(ws_url, additional_headers={"X-Session-API-Key": key}) as sock:
        task = asyncio.create_task(asyncio.to_thread(run))
        async with asyncio.timeout(timeout):
            while True:
                event = json.loads(await sock.recv())
                seen.append(event)
                if marker in json.dumps(event):
                    break
        await task
    return seen


def test_sdk_through_the_gateway_and_wake_on_traffic(gateway_service, tmp_path):
    base_url, api_key = gateway_service
    port = gateway_service.gateway_port
    session_id = f"gateway-{uuid.uuid4()}"
    ws = APIRemoteWorkspace(runtime_api_url=base_url, runtime_api_key=api_key, session_id=session_id,
                            server_image=IMAGE, runtime_class=None, init_timeout=120,
                            startup_wait_timeout=180, api_timeout=120)
    api = httpx.Client(base_url=base_url, headers={"X-API-Key": api_key}, timeout=30)
    try:
        runtime_id = ws._runtime_id
        assert ws._runtime_url == f"http://{runtime_id}.localhost:{port}", ws._runtime_url
        res = ws.execute_command("echo via-$((40+2))")
        assert (res.exit_code, res.stdout.strip()) == (0, "via-42"), res
        cwd = ws.execute_command("pwd").stdout.strip()

        big = tmp_path / "big.bin"
        with open(big, "wb") as f:
            for _ in range(BIG // (1 << 20)):
                f.write(os.urandom(1 << 20))
        up = ws.file_upload(str(big), f"{cwd}/nested dir/big.bin")
        assert up.success, up
        size = ws.execute_command(f"stat -c %s '{cwd}/nested dir/big.bin'")
        assert size.stdout.strip() == str(BIG), size
        down = ws.file_download(f"{cwd}/nested dir/big.bin", str(tmp_path / "back.bin"))
        assert down.success, down
        assert _sha256(tmp_path / "back.bin") == _sha256(big)

        # The event WebSocket, through the gateway: a command's output arrives as events.
        key = api.get(f"/sessions/{session_id}").json()["session_api_key"]
        ws_url = f"ws://{runtime_id}.localhost:{port}/sockets/bash-events"
        events = asyncio.run(_bash_events_until(
            ws_url, key, lambda: ws.execute_command("echo socket-$((6*7))"), "socket-42"))
        assert any("socket-42" in json.dumps(e) for e in events), events

        # Left alone, the runtime is paused for idleness (the agent's own idle_time decides).
        paused = wait_for(lambda: (r := api.get(f"/sessions/{session_id}").json())["status"] == "paused" and r,
                          timeout=IDLE_SECONDS + 90, interval=0.5, desc="idle pause")
        assert "idle for" in (paused.get("status_detail") or ""), paused

        # The SDK's next command wakes it through the gateway; nobody calls /resume. The request
        # waits for an agent server cold start (5 s idle, 45 s on this machine under load): the
        # command gets a timeout (which the SDK turns into its HTTP timeout) long enough for that.
        out = ws.execute_command(f"ls -l '{cwd}/nested dir' && echo woke-up", timeout=150)
        assert out.exit_code == 0 and "woke-up" in out.stdout, out
        after = api.get(f"/sessions/{session_id}").json()
        assert after["status"] == "running" and after["url"] == ws._runtime_url, after
        assert _metric(base_url, "runtime_api_gateway_wakes_total", 'outcome="ok"') == 1
        assert _metric(base_url, "runtime_api_http_requests_total", 'route="/resume"') == 0
        assert _metric(base_url, "runtime_api_gateway_bytes_total", 'direction="request"') >= BIG
        assert _metric(base_url, "runtime_api_gateway_bytes_total", 'direction="response"') >= BIG
    finally:
        api.close()
        ws.cleanup()
