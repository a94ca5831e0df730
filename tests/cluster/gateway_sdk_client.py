"""The real OpenHands SDK from this machine through the service's gateway to a real pod on the
real node: commands, 50 MB up and down, the bash-events WebSocket, and a command to a paused
sandbox that wakes it without anyone calling /resume.

Run by tests/cluster/gateway-real-node.sh against an instance with ROUTING_MODE=gateway and
GATEWAY_URL=http://*.localhost:PORT (the SDK needs host-shaped runtime URLs; `*.localhost` names
are loopback, RFC 6761, which this process resolves itself since the machine's resolver does
not). Prints one PASS/FAIL line per check and exits 1 if any failed.

Arguments: API base URL, API key, gateway port, agent image.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import sys
import tempfile
import traceback
import uuid

import httpx
import websockets
from openhands.workspace import APIRemoteWorkspace

API, KEY, PORT, IMAGE = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
BIG = 50 * 1024 * 1024
failed = 0

_getaddrinfo = socket.getaddrinfo


def _loopback_localhost(host, *args, **kwargs):
    if isinstance(host, str) and host.endswith(".localhost"):
        host = "127.0.0.1"
    return _getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _loopback_localhost


def check(description: str, ok: bool, detail: object = "") -> None:
    global failed
    if ok:
        print(f"PASS  {description}", flush=True)
    else:
        failed += 1
        print(f"FAIL  {description}\n      {detail}", flush=True)


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


async def bash_events(url: str, key: str, act, marker: str) -> bool:
    """Whether `marker` arrives as an event on the WebSocket while `act` runs a command."""
    async with websockets.connect(url, additional_headers={"X-Session-API-Key": key}) as sock:
        task = asyncio.create_task(asyncio.to_thread(act))
        try:
            async with asyncio.timeout(120):
                while True:
                    if marker in json.dumps(json.loads(await sock.recv())):
                        return True
        finally:
            await task


def main() -> int:
    session_id = f"gateway-sdk-{uuid.uuid4()}"
    ws = APIRemoteWorkspace(runtime_api_url=API, runtime_api_key=KEY, session_id=session_id,
                            server_image=IMAGE, runtime_class=None, working_dir="/workspace",
                            init_timeout=180, startup_wait_timeout=300, api_timeout=180)
    api = httpx.Client(base_url=API, headers={"X-API-Key": KEY}, timeout=30)
    try:
        runtime_id = ws._runtime_id
        print(f"RUNTIME {runtime_id}", flush=True)
        check("the SDK's runtime URL is the gateway's host for it",
              ws._runtime_url == f"http://{runtime_id}.localhost:{PORT}", ws._runtime_url)
        res = ws.execute_command("echo via-$((40+2))")
        check("execute_command through the gateway in the real pod",
              (res.exit_code, res.stdout.strip()) == (0, "via-42"), res)

        with tempfile.TemporaryDirectory() as tmp:
            big = os.path.join(tmp, "big.bin")
            with open(big, "wb") as f:
                for _ in range(BIG // (1 << 20)):
                    f.write(os.urandom(1 << 20))
            up = ws.file_upload(big, "/workspace/big.bin")
            size = ws.execute_command("stat -c %s /workspace/big.bin").stdout.strip()
            check("50 MB upload through the gateway", up.success and size == str(BIG), (up, size))
            back = os.path.join(tmp, "back.bin")
            down = ws.file_download("/workspace/big.bin", back)
            check("50 MB download through the gateway, the same bytes",
                  down.success and sha256(back) == sha256(big), down)

        key = api.get(f"/sessions/{session_id}").json()["session_api_key"]
        seen = asyncio.run(bash_events(
            f"ws://{runtime_id}.localhost:{PORT}/sockets/bash-events", key,
            lambda: ws.execute_command("echo socket-$((6*7))"), "socket-42"))
        check("the bash-events WebSocket through the gateway carries the command's output", seen)

        r = api.post("/pause", json={"runtime_id": runtime_id})
        check("pause", r.status_code == 200 and r.json().get("status") == "paused", r.text[:300])
        # The next command wakes it: a pod start on the real node, so a long timeout.
        out = ws.execute_command("cat /proc/1/cmdline >/dev/null && echo woke-up", timeout=240)
        after = api.get(f"/sessions/{session_id}").json()
        check("a command to the paused sandbox wakes it through the gateway (no /resume call)",
              out.exit_code == 0 and "woke-up" in out.stdout and after.get("status") == "running"
              and after.get("url") == ws._runtime_url, (out, after))
        metrics = api.get("/metrics").text
        resumes = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                      if line.startswith("runtime_api_http_requests_total") and 'route="/resume"' in line)
        check("nobody called /resume on this instance", resumes == 0, resumes)
    except Exception:
        check("the SDK flow raised", False, traceback.format_exc())
    finally:
        api.close()
        ws.cleanup()
    print(f"{'FAILED' if failed else 'OK'}: {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
