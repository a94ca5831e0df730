"""The real OpenHands SDK client, run in a pod of the test cluster the way OpenHands' app server
runs when it is installed beside runtime-api: it reaches the service and the sandboxes by their
in-cluster Service names (ROUTING_MODE=service), no Ingress, no gateway.

Run by tests/cluster/in-cluster.sh inside the agent-server image (which carries the pinned
openhands-workspace). Prints one `PASS`/`FAIL` line per check and exits 1 if any failed.

Environment: RUNTIME_API_URL, RUNTIME_API_KEY, AGENT_IMAGE, EXPECTED_MEMORY_MAX (bytes the
sandbox's cgroup must allow at RESOURCE_FACTOR), RESOURCE_FACTOR, E2E_MARKER (forwarded into
the sandbox), SANDBOX_UID.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
from openhands.workspace import APIRemoteWorkspace

API = os.environ["RUNTIME_API_URL"]
KEY = os.environ["RUNTIME_API_KEY"]
IMAGE = os.environ["AGENT_IMAGE"]
FACTOR = int(os.environ.get("RESOURCE_FACTOR", "1"))  # the SDK takes whole factors
MEMORY_MAX = os.environ["EXPECTED_MEMORY_MAX"]
UID = os.environ.get("SANDBOX_UID", "10001")

failed = 0


def check(description: str, ok: bool, detail: object = "") -> None:
    global failed
    if ok:
        print(f"PASS  {description}", flush=True)
    else:
        failed += 1
        print(f"FAIL  {description}\n      {detail}", flush=True)


def workspace(session_id: str, **kw) -> APIRemoteWorkspace:
    return APIRemoteWorkspace(
        runtime_api_url=API,
        runtime_api_key=KEY,
        server_image=IMAGE,
        session_id=session_id,
        working_dir="/workspace",
        forward_env=["E2E_MARKER"],
        init_timeout=180.0,
        startup_wait_timeout=300.0,
        api_timeout=60.0,
        **kw,
    )


def run(ws: APIRemoteWorkspace, command: str) -> tuple[int, str]:
    result = ws.execute_command(command, timeout=60)
    return result.exit_code, (result.stdout or "").strip()


def api() -> httpx.Client:
    return httpx.Client(base_url=API, headers={"X-API-Key": KEY}, timeout=30)


def one_sandbox_end_to_end() -> None:
    session_id = f"in-cluster-{uuid.uuid4()}"
    ws = workspace(session_id, resource_factor=FACTOR)
    runtime_id, url = ws._runtime_id, ws._runtime_url
    check(
        "the sandbox URL is its in-cluster Service name",
        url.startswith(f"http://oh-rt-{runtime_id}.") and ".svc.cluster.local:" in url,
        url,
    )

    code, out = run(ws, "echo hello-from-a-real-pod")
    check("execute_command runs in the sandbox pod", (code, out) == (0, "hello-from-a-real-pod"), (code, out))

    # What the pod spec promises, seen from inside.
    code, out = run(ws, "id -u; id -g")
    check(f"the agent runs as uid/gid {UID}", out.split() == [UID, UID], out)
    code, out = run(ws, "grep NoNewPrivs /proc/self/status")
    check("no privilege escalation (NoNewPrivs: 1)", out.split() == ["NoNewPrivs:", "1"], out)
    code, out = run(ws, "ls /var/run/secrets/kubernetes.io/serviceaccount 2>&1; echo rc=$?")
    check("no service-account token is mounted", "rc=0" not in out, out)
    code, out = run(ws, "cat /sys/fs/cgroup/memory.max")
    check(f"the cgroup memory limit is the configured one scaled by {FACTOR}", out == MEMORY_MAX,
          f"memory.max={out}, want {MEMORY_MAX}")
    code, out = run(ws, "tr '\\0' ' ' </proc/1/cmdline")
    check("PID 1 in the sandbox is the pod's pause process (it reaps orphans, as tini would)",
          out == "/pause", out)
    code, out = run(ws, "printenv E2E_MARKER")
    check("the caller's environment reaches the sandbox", out == os.environ["E2E_MARKER"], out)
    code, out = run(ws, "env")
    check("the service's API key is nowhere in the sandbox's environment",
          KEY not in out and "API_KEY=" not in out.replace("SESSION_API_KEY=", ""), "found")
    r = httpx.get(f"{url}/api/conversations/search", timeout=30)
    check("the agent server wants the session key (401 without it)", r.status_code == 401,
          f"{r.status_code} {r.text[:200]}")

    # Files: upload, download, then a file written before pause is there after resume.
    payload = os.urandom(256 * 1024)
    up = ws.file_upload(payload, "/workspace/upload.bin")
    check("upload", up.success, up)
    down = ws.file_download("/workspace/upload.bin", "/tmp/download.bin")
    with open("/tmp/download.bin", "rb") as f:
        check("download returns the uploaded bytes", down.success and f.read() == payload, down)
    code, _ = run(ws, "echo kept-across-pause > /workspace/kept.txt")
    check("write a file in the workspace volume", code == 0)

    ws.pause()
    with api() as a:
        status = a.get(f"/runtime/{runtime_id}").json().get("status")
    check("pause: the runtime is paused", status == "paused", status)
    ws.resume()
    check("resume keeps the URL", ws._runtime_url == url, (ws._runtime_url, url))
    code, out = run(ws, "cat /workspace/kept.txt")
    check("resume: the file written before pause is there (WORKSPACE_STORAGE_SIZE volume)",
          out == "kept-across-pause", (code, out))

    ws.cleanup()
    with api() as a:
        r = a.get(f"/runtime/{runtime_id}")
    check("stop: the runtime is gone", r.status_code == 404 or r.json().get("status") == "stopped",
          f"{r.status_code} {r.text[:200]}")
    print(f"RUNTIME {runtime_id}", flush=True)


def list_commands() -> None:
    """The list forms of `command` meet the image's entrypoint as the clients expect."""
    forms = {
        "a list starting with the program (the V1 app server's form) replaces the entrypoint":
            ["/usr/local/bin/openhands-agent-server", "--port", "60000"],
        "a list of options is arguments to the image's entrypoint (docker run IMAGE --port ...)":
            ["--port", "60000"],
    }
    with api() as a:
        for description, command in forms.items():
            body = {"image": IMAGE, "command": command, "session_id": f"in-cluster-list-{uuid.uuid4()}",
                    "working_dir": "/workspace", "run_as_user": 10001, "run_as_group": 10001,
                    "fs_group": 10001}
            r = a.post("/start", json=body, timeout=120)
            if r.status_code != 200:
                check(description, False, f"/start: {r.status_code} {r.text[:300]}")
                continue
            runtime = r.json()
            print(f"RUNTIME {runtime['runtime_id']}", flush=True)
            deadline, status = time.monotonic() + 300, None
            while time.monotonic() < deadline:
                status = a.get(f"/runtime/{runtime['runtime_id']}").json()
                if status.get("status") in ("running", "error"):
                    break
                time.sleep(2)
            alive = httpx.get(f"{runtime['url']}/alive", timeout=10).status_code if status.get("status") == "running" else None
            check(description, alive == 200, status)
            a.post("/stop", json={"runtime_id": runtime["runtime_id"]})


def three_at_once() -> None:
    def one(i: int) -> str:
        ws = workspace(f"in-cluster-three-{i}-{uuid.uuid4()}")
        try:
            code, out = run(ws, f"echo sandbox-{i}")
            return f"{ws._runtime_id}:{code}:{out}"
        finally:
            ws.cleanup()

    t0 = time.monotonic()
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(one, range(3)))
    ids = {r.split(":")[0] for r in results}
    outs = sorted(r.split(":", 1)[1] for r in results)
    check(f"three sandboxes at once: three runtimes, each ran its command ({time.monotonic() - t0:.0f}s)",
          len(ids) == 3 and outs == [f"0:sandbox-{i}" for i in range(3)], results)
    for runtime_id in ids:
        print(f"RUNTIME {runtime_id}", flush=True)


def main() -> int:
    for step in (one_sandbox_end_to_end, list_commands, three_at_once):
        try:
            step()
        except Exception:
            check(f"{step.__name__} raised", False, traceback.format_exc())
    print(f"{'FAILED' if failed else 'OK'}: {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
