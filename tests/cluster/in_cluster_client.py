"""The real OpenHands SDK client against runtime-api installed by its Helm chart, two ways:

- in a pod of the test cluster, the way OpenHands' app server runs when it is installed beside
  runtime-api: it reaches the service and the sandboxes by their in-cluster Service names
  (ROUTING_MODE=service), no Ingress, no gateway (the default);
- from this machine (CLIENT_MODE=gateway), through the service's gateway exposed by
  `kubectl port-forward` on GATEWAY_PORT: runtime URLs are http://{id}.localhost:GATEWAY_PORT
  (`*.localhost` names are loopback, RFC 6761, which this process resolves itself since the
  machine's resolver does not). The flows that need the client's pod (the Lease, the kubelet
  failures, idle pause) run only in the pod.

Run by tests/cluster/in-cluster.sh, in the pod inside the agent-server image (which carries the
pinned openhands-workspace). Prints one `PASS`/`FAIL` line per check and exits 1 if any failed.

Environment: RUNTIME_API_URL, RUNTIME_API_KEY, AGENT_IMAGE, EXPECTED_MEMORY_MAX (bytes the
sandbox's cgroup must allow at RESOURCE_FACTOR), RESOURCE_FACTOR, E2E_MARKER (forwarded into
the sandbox), SANDBOX_UID, IDLE_SECONDS and FAILED_SECONDS (the service's RUNTIME_IDLE_SECONDS
and RUNTIME_FAILED_SECONDS), NAMESPACE and
LEASE_NAME (the client's service account may read the Lease and delete the service's pods).
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
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
FAILED_SECONDS = float(os.environ.get("FAILED_SECONDS", "0"))
GATEWAY = os.environ.get("CLIENT_MODE") == "gateway"
GATEWAY_PORT = int(os.environ.get("GATEWAY_PORT", "0"))

if GATEWAY:
    _getaddrinfo = socket.getaddrinfo

    def _loopback_localhost(host, *args, **kwargs):
        if isinstance(host, str) and host.endswith(".localhost"):
            host = "127.0.0.1"
        return _getaddrinfo(host, *args, **kwargs)

    socket.getaddrinfo = _loopback_localhost

failed = 0


def check(description: str, ok: bool, detail: object = "") -> None:
    global failed
    if ok:
        print(f"PASS  {description}", flush=True)
    else:
        failed += 1
        indented = "\n".join(f"    > {line}" for line in str(detail).splitlines() or [""])
        print(f"FAIL  {description}\n{indented}", flush=True)


def alive(url: str, seconds: float = 60) -> int | None:
    """GET {url}/alive until it answers 200, as the SDK polls it: a runtime reported running may
    still be a moment away from its Service's endpoints (kube-proxy) on a loaded node."""
    deadline, code = time.monotonic() + seconds, None
    while time.monotonic() < deadline:
        try:
            code = httpx.get(f"{url}/alive", timeout=10).status_code
            if code == 200:
                break
        except httpx.HTTPError as e:
            code = repr(e)
        time.sleep(2)
    return code


def workspace(session_id: str, **kw) -> APIRemoteWorkspace:
    return APIRemoteWorkspace(
        runtime_api_url=API,
        runtime_api_key=KEY,
        server_image=IMAGE,
        session_id=session_id,
        runtime_class=None,  # the SDK asks for sysbox-runc by default
        working_dir="/workspace",
        forward_env=["E2E_MARKER"],
        init_timeout=180.0,
        startup_wait_timeout=300.0,
        api_timeout=180.0,
        **kw,
    )


def run(ws: APIRemoteWorkspace, command: str) -> tuple[int, str]:
    result = ws.execute_command(command, timeout=60)
    return result.exit_code, (result.stdout or "").strip()


def api() -> httpx.Client:
    # Connection failures are retried (with back-off), as OpenHands' app server retries: the
    # cluster's DNS once answered "Temporary failure in name resolution" for the release's
    # Service right after the failover step, and that single lookup failed the run.
    return httpx.Client(base_url=API, headers={"X-API-Key": KEY}, timeout=30,
                        transport=httpx.HTTPTransport(retries=5))


def one_sandbox_end_to_end() -> None:
    session_id = f"in-cluster-{uuid.uuid4()}"
    t0 = time.monotonic()
    ws = workspace(session_id, resource_factor=FACTOR)
    runtime_id, url = ws._runtime_id, ws._runtime_url
    code, out = run(ws, "echo hello-from-a-real-pod")
    print(f"TIMING the SDK's start -> first command: {time.monotonic() - t0:.2f}s", flush=True)
    if GATEWAY:
        check("the sandbox URL is the gateway's host for it ({id}.localhost:GATEWAY_PORT)",
              url == f"http://{runtime_id}.localhost:{GATEWAY_PORT}", url)
    else:
        check(
            "the sandbox URL is its in-cluster Service name",
            url.startswith(f"http://oh-rt-{runtime_id}.") and ".svc.cluster.local:" in url,
            url,
        )

    check("execute_command runs in the sandbox pod", (code, out) == (0, "hello-from-a-real-pod"), (code, out))

    # What the pod spec promises, seen from inside.
    code, out = run(ws, "id -u; id -g")
    check(f"the agent runs as uid/gid {UID}", out.split() == [UID, UID], out)
    code, out = run(ws, "grep NoNewPrivs /proc/self/status")
    check("no privilege escalation (NoNewPrivs: 1)", out.split() == ["NoNewPrivs:", "1"], out)
    code, out = run(ws, "ls /var/run/secrets/kubernetes.io/serviceaccount 2>&1; echo rc=$?")
    check("no service-account token is mounted", "rc=0" not in out, out)
    # cgroup v2 (memory.max) or v1 (this machine's: memory/memory.limit_in_bytes).
    code, out = run(ws, "cat /sys/fs/cgroup/memory.max 2>/dev/null"
                        " || cat /sys/fs/cgroup/memory/memory.limit_in_bytes")
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
    with tempfile.TemporaryDirectory() as tmp:
        down = ws.file_download("/workspace/upload.bin", f"{tmp}/download.bin")
        with open(f"{tmp}/download.bin", "rb") as f:
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
            try:
                code = alive(runtime["url"]) if status.get("status") == "running" else None
                check(description, code == 200, f"/alive: {code}, runtime: {status}")
            finally:
                a.post("/stop", json={"runtime_id": runtime["runtime_id"]})


def wait_status(a: httpx.Client, runtime_id: str, wanted: set[str], seconds: float) -> dict:
    deadline, body = time.monotonic() + seconds, {}
    while time.monotonic() < deadline:
        r = a.get(f"/runtime/{runtime_id}")
        body = r.json() if r.status_code == 200 else {"status": f"HTTP {r.status_code}"}
        if body.get("status") in wanted:
            break
        time.sleep(2)
    return body


def idle_pause() -> None:
    """The leader reaches the agent's /server_info through the Service name and pauses it."""
    idle = float(os.environ["IDLE_SECONDS"])
    ws = workspace(f"in-cluster-idle-{uuid.uuid4()}")
    runtime_id, url = ws._runtime_id, ws._runtime_url
    print(f"RUNTIME {runtime_id}", flush=True)
    code, _ = run(ws, "echo before-idle > /workspace/idle.txt")
    t0 = time.monotonic()
    with api() as a:
        body = wait_status(a, runtime_id, {"paused"}, idle + 120)
    check(f"a sandbox idle for RUNTIME_IDLE_SECONDS={idle:.0f} is paused by the leader "
          f"(after {time.monotonic() - t0:.0f}s)", body.get("status") == "paused", body)
    ws.resume()
    code, out = run(ws, "cat /workspace/idle.txt")
    check("resume after idle pause: same URL, same key, the workspace is kept",
          ws._runtime_url == url and out == "before-idle", (ws._runtime_url, code, out))
    ws.cleanup()


def failures() -> None:
    """Failures as the real kubelet and scheduler report them, with a detail a human can act on."""
    cases = {
        "an image that does not exist: error, ImagePullBackOff": (
            {"image": IMAGE.rsplit(":", 1)[0] + "-missing:1"}, ("ImagePull",)),
        "a command that exits: error, CrashLoopBackOff with its exit code": (
            {"command": "echo giving-up; exit 3"}, ("CrashLoopBackOff", "code 3")),
        "a resource_factor too big for the node: error, Unschedulable with the scheduler's message": (
            {"resource_factor": 64}, ("Unschedulable", "Insufficient cpu")),
    }
    with api() as a:
        for description, (fields, wanted) in cases.items():
            body = {"image": IMAGE, "command": "/usr/local/bin/openhands-agent-server --port 60000",
                    "session_id": f"in-cluster-fail-{uuid.uuid4()}", "run_as_user": 10001,
                    "run_as_group": 10001, "fs_group": 10001, **fields}
            r = a.post("/start", json=body, timeout=120)
            if r.status_code != 200:
                check(description, False, f"/start: {r.status_code} {r.text[:300]}")
                continue
            runtime_id = r.json()["runtime_id"]
            print(f"RUNTIME {runtime_id}", flush=True)
            deadline, seen = time.monotonic() + 180, {}
            while time.monotonic() < deadline:
                seen = a.get(f"/runtime/{runtime_id}").json()
                detail = seen.get("status_detail") or ""
                if seen.get("status") == "error" and all(w in detail for w in wanted):
                    break
                time.sleep(2)
            check(description, seen.get("status") == "error"
                  and all(w in (seen.get("status_detail") or "") for w in wanted), seen)
            # The failure cleanup (RUNTIME_FAILED_SECONDS, action pause): the leader pauses it,
            # which deletes its pod and keeps its record for a resume once the cause is fixed.
            t0 = time.monotonic()
            try:
                after = wait_status(a, runtime_id, {"paused"}, FAILED_SECONDS + 90)
                check(f"  ... and the failure cleanup paused it after RUNTIME_FAILED_SECONDS="
                      f"{FAILED_SECONDS:.0f} ({time.monotonic() - t0:.0f}s after the error was seen)",
                      after.get("status") == "paused", after)
            finally:
                a.post("/stop", json={"runtime_id": runtime_id})


def leader_dies_during_starts() -> None:
    """Ten concurrent SDK starts while the leader's pod is deleted: every session ends with
    exactly one running sandbox, and the other replica takes over maintenance."""
    ns, lease = os.environ["NAMESPACE"], os.environ["LEASE_NAME"]
    sa = "/var/run/secrets/kubernetes.io/serviceaccount"
    with open(f"{sa}/token") as f:
        token = f.read()
    # Connection failures retried as in api(): a DNS lookup of the API server's name failed once
    # ("Temporary failure in name resolution") after this step's checks had passed.
    kube = httpx.Client(base_url="https://kubernetes.default.svc",
                        headers={"Authorization": f"Bearer {token}"}, timeout=30,
                        transport=httpx.HTTPTransport(verify=f"{sa}/ca.crt", retries=5))
    lease_path = f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{lease}"
    leader = kube.get(lease_path).json()["spec"]["holderIdentity"]
    sessions = [f"in-cluster-failover-{i}-{uuid.uuid4()}" for i in range(10)]

    def start(session_id: str) -> str:
        last: Exception | None = None
        for _ in range(6):  # a client with retries, as OpenHands' app server has
            try:
                ws = workspace(session_id, keep_alive=True)
                runtime_id = ws._runtime_id
                code, _ = run(ws, "true")
                ws.cleanup()  # keep_alive: leaves the runtime running
                return f"{runtime_id}:{code}"
            except Exception as e:  # noqa: BLE001 - retried, reported below
                last = e
                time.sleep(3)
        return f"failed:{last!r}"

    with ThreadPoolExecutor(10) as pool:
        futures = [pool.submit(start, s) for s in sessions]
        time.sleep(2)
        r = kube.delete(f"/api/v1/namespaces/{ns}/pods/{leader}")
        check(f"delete the leader's pod {leader} while the starts run", r.status_code in (200, 202),
              f"{r.status_code} {r.text[:200]}")
        results = [f.result() for f in futures]
    check("every start succeeded through the failover (with client retries)",
          all(not r.startswith("failed") and r.endswith(":0") for r in results), results)
    with api() as a:
        listed = a.get("/list").json()["runtimes"]
        listed += a.get("/list", params={"status": "paused"}).json()["runtimes"]
        for s in sessions:
            # Running, or paused by idle maintenance while the slowest starts finished.
            mine = [r for r in listed if r.get("session_id") == s]
            if len(mine) != 1 or mine[0].get("status") not in ("running", "paused"):
                check(f"session {s}: exactly one live sandbox", False, mine)
                break
        else:
            check("every session has exactly one live sandbox, nothing duplicated", True)
        ids = {r.split(":")[0] for r in results if not r.startswith("failed")}
        for runtime_id in ids:
            print(f"RUNTIME {runtime_id}", flush=True)
            a.post("/stop", json={"runtime_id": runtime_id})
    deadline, holder = time.monotonic() + 60, leader
    while time.monotonic() < deadline and holder in (leader, None, ""):
        holder = kube.get(lease_path).json()["spec"].get("holderIdentity")
        time.sleep(2)
    check("the other replica took over maintenance (the Lease)", holder not in (leader, None, ""),
          holder)


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


def nothing_left_behind() -> None:
    """Every flow stops what it started, even when it fails; a runtime still listed here is a
    check failure, and is stopped so that the checks after the client judge the service's /stop
    rather than an earlier failure."""
    def listed(a: httpx.Client) -> list[dict]:
        return [r for r in a.get("/list", params={"status": "all"}).json()["runtimes"]
                if r.get("session_id", "").startswith("in-cluster-") and r.get("status") != "stopped"]

    with api() as a:
        # The other replica's cache may be a moment behind a /stop the first one just answered.
        deadline, left = time.monotonic() + 15, listed(a)
        while left and time.monotonic() < deadline:
            time.sleep(1)
            left = listed(a)
        check("every flow stopped the runtimes it started", not left,
              [(r["runtime_id"], r["session_id"], r.get("status")) for r in left])
        for r in left:
            a.post("/stop", json={"runtime_id": r["runtime_id"]})


def main() -> int:
    def guarded(step) -> None:
        try:
            step()
        except Exception:
            check(f"{step.__name__} raised", False, traceback.format_exc())

    def in_turn(*steps):
        return lambda: [guarded(step) for step in steps]

    if GATEWAY:
        for step in (one_sandbox_end_to_end, three_at_once, nothing_left_behind):
            guarded(step)
        print(f"{'FAILED' if failed else 'OK'}: {failed} failed", flush=True)
        return 1 if failed else 0
    # An agent server's start is CPU-bound (tens of CPU seconds on this 2-core node), and the
    # kubelet restarts one that is not up within its startup probe's 5 minutes: so flows that
    # start agents go one after the other, beside the ones that mostly wait (kubelet failures,
    # then idle pause). The failover goes last and alone, since it takes a replica away.
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda f: f(), (in_turn(one_sandbox_end_to_end, list_commands, three_at_once),
                                      in_turn(failures, idle_pause))))
    guarded(leader_dies_during_starts)
    guarded(nothing_left_behind)
    print(f"{'FAILED' if failed else 'OK'}: {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
