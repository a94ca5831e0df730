#!/usr/bin/env python3
"""A sandbox's start on the real node, phase by phase, beside the same pod created directly.

  eval "$(scripts/cluster.sh up)"; eval "$(scripts/python.sh)"
  python bench/real_node.py [--runs 10]

The service (the binary of `binary_path()`) runs on this machine with BACKEND=kubernetes,
ROUTING_MODE=gateway and sandboxes on the real node, from the agent-server image built by
scripts/images.sh. Each of --runs rounds measures, from the moment the request is sent:

  1. `/start` -> agent ready: the request answered, the pod scheduled, its container started
     (both from a pod watch, timed when the event arrives here), `/alive` answering through the
     runtime's URL, and the first command (`POST /api/bash/execute_bash_command` with the session
     key, what the SDK's execute_command does) succeeding;
  2. `/pause`, then `/resume` -> agent ready, in the same phases;
  3. *limit*: the same pod created directly (its spec and Secret copied from a pod the service
     made, in another namespace; one POST with the kubeconfig's admin certificate): scheduled,
     started, `/alive` and the first command on the pod's own address.
and in each round the process backend: `/start` -> `/alive` -> first command, with the real
agent server on this machine. One warm-up round (image pull, page cache) is not counted.

With --warm-runs N, then N rounds of `/start` -> agent ready from a warm pool (a second instance
with WARM_POOL_SIZE=--pool of the same request's shape, DEFAULT_IMAGE the agent image): each
round waits for the pool to be full with no member booting (--warm-wait full: the claim alone,
as bench/pool.py measures it) or for one ready member (--warm-wait one: claims while the refill's
agent servers boot on the same cores), checks the start was a claim (the pool's hit counter
moved), and stops the runtime.
`--runs 0 --warm-runs N` measures only the warm starts.

Prints p50/p95 per phase and writes bench/results/real_node.json. The 2-core machine's load
average is recorded beside: an agent server's start is CPU-bound, so other work on the machine
slows every phase after "container started".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import httpx

from kubernetes import kubeconfig_client  # bench/kubernetes.py (this directory comes first)
from runtime_api_support.service import Service, become_subreaper, free_port, new_state_dir, start_payload
from stats import summary

HERE = Path(__file__).resolve().parent
RUNTIME_LABEL = "runtime-api.openhands.dev/runtime-id"
POLL = 0.05
PHASES = ("answered", "scheduled", "container_started", "alive", "first_command")


class PodWatch:
    """`kubectl get pods -w` on one namespace: when each pod was first seen scheduled and with its
    container running, by the clock of this process (the API's timestamps are whole seconds)."""

    def __init__(self, ns: str):
        template = ("{.metadata.name} {.metadata.labels.runtime-api\\.openhands\\.dev/runtime-id} "
                    "{.spec.nodeName} {.status.containerStatuses[0].state.running.startedAt}{\"\\n\"}")
        self.proc = subprocess.Popen(
            ["kubectl", "get", "pods", "-n", ns, "-w", "-o", f"jsonpath={template}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.seen: dict[str, dict[str, float]] = {}  # pod name -> {"scheduled": t, "started": t}
        self.runtime_of: dict[str, str] = {}
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            now = time.perf_counter()
            parts = line.split()
            if not parts:
                continue
            name = parts[0]
            with self.lock:
                times = self.seen.setdefault(name, {})
                if len(parts) > 1 and not parts[1].startswith("real-node"):
                    self.runtime_of[name] = parts[1]
                if any(p.startswith("real-node") for p in parts[1:]):
                    times.setdefault("scheduled", now)
                if parts[-1].endswith("Z"):  # a startedAt timestamp
                    times.setdefault("started", now)

    def pods(self) -> set[str]:
        with self.lock:
            return set(self.seen)

    def wait_new_pod(self, before: set[str], runtime_id: str | None, timeout: float) -> dict[str, float]:
        """The scheduled/started times of the first pod not in `before` (of `runtime_id`)."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            with self.lock:
                for name, times in self.seen.items():
                    if name in before or (runtime_id and self.runtime_of.get(name) != runtime_id):
                        continue
                    if "scheduled" in times and "started" in times:
                        return dict(times)
            time.sleep(0.02)
        raise TimeoutError(f"no new pod of {runtime_id} started within {timeout}s")

    def close(self) -> None:
        self.proc.kill()


def kubectl(*args: str, stdin: str | None = None) -> str:
    return subprocess.run(["kubectl", *args], check=True, capture_output=True, text=True,
                          input=stdin).stdout


def until_alive(base: str, timeout: float) -> float:
    deadline = time.perf_counter() + timeout
    with httpx.Client(timeout=5) as c:
        while time.perf_counter() < deadline:
            try:
                if c.get(f"{base}/alive").status_code == 200:
                    return time.perf_counter()
            except httpx.HTTPError:
                pass
            time.sleep(POLL)
    raise TimeoutError(f"{base}/alive did not answer within {timeout}s")


def until_command(base: str, key: str, timeout: float) -> float:
    """Time at which a command first ran (its output seen); retried as a client would."""
    deadline = time.perf_counter() + timeout
    marker = f"ready-{uuid.uuid4().hex[:8]}"
    last = ""
    with httpx.Client(timeout=30, headers={"X-Session-API-Key": key}) as c:
        while time.perf_counter() < deadline:
            try:
                r = c.post(f"{base}/api/bash/execute_bash_command", json={"command": f"echo {marker}"})
                if r.status_code == 200 and marker in r.text:
                    return time.perf_counter()
                last = f"{r.status_code} {r.text[:200]}"
            except httpx.HTTPError as e:
                last = repr(e)
            time.sleep(POLL)
    raise TimeoutError(f"no command ran at {base} within {timeout}s: {last}")


def timed_start(api: httpx.Client, body: dict, timeout: float) -> tuple[dict, dict]:
    """POST /start, then until `/alive` and a first command answer through the runtime's URL:
    the runtime and its phases (the pod's, if any, are the caller's to add)."""
    t0 = time.perf_counter()
    r = api.post("/start", json=body)
    answered = time.perf_counter()
    r.raise_for_status()
    rt = r.json()
    alive = until_alive(rt["url"], timeout)
    cmd = until_command(rt["url"], rt["session_api_key"], timeout)
    return rt, {"t0": t0, "answered": answered, "alive": alive, "cmd": cmd}


def phases(t0: float, answered: float, pod: dict[str, float] | None, alive: float, cmd: float) -> dict:
    out = {"answered": answered - t0, "alive": alive - t0, "first_command": cmd - t0}
    if pod:
        out["scheduled"] = pod["scheduled"] - t0
        out["container_started"] = pod["started"] - t0
    return {k: round(v, 4) for k, v in out.items()}


def wait_gone(ns: str, selector: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not kubectl("get", "pods", "-n", ns, "-l", selector, "-o", "name").strip():
            return
        time.sleep(0.25)
    raise TimeoutError(f"pods {selector} in {ns} still there after {timeout}s")


class RealNode:
    def __init__(self, args: argparse.Namespace, pool: int = 0):
        self.image = os.environ["RUNTIME_API_AGENT_IMAGE"]
        node = os.environ["RUNTIME_API_REAL_NODE"]
        taint = os.environ.get("RUNTIME_API_REAL_NODE_TAINT", "runtime-api.test/real-node")
        self.ns = f"bench-real-{os.getpid()}{'-warm' if pool else ''}"
        self.direct_ns = f"{self.ns}-direct"
        for ns in (self.ns, self.direct_ns):
            kubectl("create", "namespace", ns)
        self.gw = free_port()
        self.svc = Service(state_dir=new_state_dir("runtime-api-bench-real-"), extra_env={
            "BACKEND": "kubernetes", "NAMESPACE": self.ns, "ROUTING_MODE": "gateway",
            "GATEWAY_PORT": str(self.gw), "GATEWAY_URL": f"http://127.0.0.1:{self.gw}",
            "POD_NAME": "bench-real", "RUNTIME_IDLE_SECONDS": "0", "RUST_LOG": "warn",
            "SANDBOX_NODE_SELECTOR": f"kubernetes.io/hostname={node}",
            "SANDBOX_TOLERATIONS": f"{taint}:NoSchedule", "SANDBOX_CPU_REQUEST": "100m",
            "SANDBOX_MEMORY_REQUEST": "256Mi", "SANDBOX_MEMORY_LIMIT": "1Gi",
            **({"WARM_POOL_SIZE": str(pool), "DEFAULT_IMAGE": self.image} if pool else {}),
        }).start()
        self.api = self.svc.client(timeout=120)
        deadline = time.monotonic() + 30
        while self.api.get("/readyz").status_code != 200:
            if time.monotonic() > deadline:
                raise TimeoutError("the service's /readyz did not turn 200")
            time.sleep(0.2)
        self.watch = PodWatch(self.ns)
        self.direct_watch = PodWatch(self.direct_ns)
        self.timeout = args.timeout
        self.kube, _, _ = kubeconfig_client(os.environ["KUBECONFIG"], 4)
        self.template: dict | None = None
        self.session_key = ""

    def start(self) -> tuple[dict, str, str]:
        before = self.watch.pods()
        body = start_payload(f"bench-real-{uuid.uuid4().hex[:10]}", image=self.image,
                             environment={"LITELLM_LOCAL_MODEL_COST_MAP": "True"})
        rt, t = timed_start(self.api, body, self.timeout)
        rid = rt["runtime_id"]
        pod = self.watch.wait_new_pod(before, rid, 10)
        return phases(t["t0"], t["answered"], pod, t["alive"], t["cmd"]), rid, rt["session_api_key"]

    def pool_metric(self, name: str, *labels: str) -> float:
        """The default pool's sample of metric `name` with `labels` (0 when absent)."""
        for line in self.api.get("/metrics").text.splitlines():
            if line.startswith(name + "{") and all(l in line for l in ('pool="default"', *labels)):
                return float(line.split()[-1])
        return 0.0

    def warm_start(self, full: bool) -> dict:
        """`/start` of the pool's shape once a member is ready (`full`: once the pool is full and
        no member boots, so the claim has the node to itself): a claim, timed as `start` is."""
        deadline = time.monotonic() + self.timeout

        def waiting() -> bool:
            ready = self.pool_metric("runtime_api_pool_ready")
            if not full:
                return ready < 1
            target = self.pool_metric("runtime_api_pool_target")
            return ready < target or self.pool_metric("runtime_api_pool_starting") > 0

        # The pool gauges are the leader's refill tick's (1 s): let them see the last claim.
        time.sleep(2)
        while waiting():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no warm member ready within {self.timeout}s")
            time.sleep(0.2)
        hits = self.pool_metric("runtime_api_pool_claims_total", 'outcome="hit"')
        body = start_payload(f"bench-warm-{uuid.uuid4().hex[:10]}", image=self.image,
                             environment={"LITELLM_LOCAL_MODEL_COST_MAP": "True"})
        rt, t = timed_start(self.api, body, self.timeout)
        claimed = self.pool_metric("runtime_api_pool_claims_total", 'outcome="hit"') > hits
        self.stop(rt["runtime_id"])
        if not claimed:
            raise RuntimeError(f"{rt['runtime_id']} was not a warm start (no claim counted)")
        return phases(t["t0"], t["answered"], None, t["alive"], t["cmd"])

    def pause_resume(self, rid: str, key: str) -> dict:
        self.api.post("/pause", json={"runtime_id": rid}).raise_for_status()
        wait_gone(self.ns, f"{RUNTIME_LABEL}={rid}")
        before = self.watch.pods()
        t0 = time.perf_counter()
        r = self.api.post("/resume", json={"runtime_id": rid})
        answered = time.perf_counter()
        r.raise_for_status()
        url = self.api.get(f"/runtime/{rid}").json()["url"]
        alive = until_alive(url, self.timeout)
        cmd = until_command(url, key, self.timeout)
        pod = self.watch.wait_new_pod(before, rid, 10)
        return phases(t0, answered, pod, alive, cmd)

    def stop(self, rid: str) -> None:
        self.api.post("/stop", json={"runtime_id": rid}).raise_for_status()
        wait_gone(self.ns, f"{RUNTIME_LABEL}={rid}")

    def capture_template(self, rid: str, key: str) -> None:
        """The service's pod for `rid` and the Secrets it reads, made ready to create directly."""
        pod = json.loads(kubectl("get", "pods", "-n", self.ns, "-l", f"{RUNTIME_LABEL}={rid}", "-o", "json"))["items"][0]
        secrets = set()
        for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", []):
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    secrets.add(ref["name"])
            for e in c.get("envFrom", []):
                if "secretRef" in e:
                    secrets.add(e["secretRef"]["name"])
        for name in secrets:
            s = json.loads(kubectl("get", "secret", name, "-n", self.ns, "-o", "json"))
            s["metadata"] = {"name": name, "namespace": self.direct_ns}
            kubectl("apply", "-f", "-", stdin=json.dumps(s))
        spec = pod["spec"]
        for field in ("nodeName",):
            spec.pop(field, None)
        self.template = {"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"labels": {"bench": "direct"}, "namespace": self.direct_ns},
                         "spec": spec}
        self.session_key = key

    def direct(self, i: int) -> dict:
        pod = json.loads(json.dumps(self.template))
        pod["metadata"]["name"] = f"direct-{i}"
        before = self.direct_watch.pods()
        t0 = time.perf_counter()
        r = self.kube.post(f"/api/v1/namespaces/{self.direct_ns}/pods", json=pod)
        answered = time.perf_counter()
        r.raise_for_status()
        times = self.direct_watch.wait_new_pod(before, None, self.timeout)
        ip = ""
        while not ip:
            ip = kubectl("get", "pod", f"direct-{i}", "-n", self.direct_ns, "-o", "jsonpath={.status.podIP}")
            time.sleep(0.05)
        base = f"http://{ip}:60000"
        alive = until_alive(base, self.timeout)
        cmd = until_command(base, self.session_key, self.timeout)
        result = phases(t0, answered, times, alive, cmd)
        kubectl("delete", "pod", f"direct-{i}", "-n", self.direct_ns, "--wait=false")
        wait_gone(self.direct_ns, "bench=direct")
        return result

    def close(self) -> None:
        try:
            for rt in self.api.get("/list", params={"status": "all"}).json().get("runtimes", []):
                self.api.post("/stop", json={"runtime_id": rt["runtime_id"]})
        except httpx.HTTPError:
            pass
        self.watch.close()
        self.direct_watch.close()
        self.api.close()
        self.kube.close()
        self.svc.stop()
        for ns in (self.ns, self.direct_ns):
            subprocess.run(["kubectl", "delete", "namespace", ns, "--wait=false"], capture_output=True)


class ProcessBackend:
    """The process backend beside it, in the same rounds: `/start` -> `/alive` -> first command
    with the real agent server on this machine."""

    def __init__(self, timeout: float):
        self.svc = Service(state_dir=new_state_dir("runtime-api-bench-real-proc-"),
                           extra_env={"RUNTIME_IDLE_SECONDS": "0", "RUST_LOG": "warn"}).start()
        self.api = self.svc.client(timeout=120)
        self.timeout = timeout

    def start(self) -> dict:
        body = start_payload(f"bench-proc-{uuid.uuid4().hex[:10]}",
                             environment={"LITELLM_LOCAL_MODEL_COST_MAP": "True"})
        rt, t = timed_start(self.api, body, self.timeout)
        self.api.post("/stop", json={"runtime_id": rt["runtime_id"]}).raise_for_status()
        return phases(t["t0"], t["answered"], None, t["alive"], t["cmd"])

    def close(self) -> None:
        self.api.close()
        self.svc.stop()


def summarise(samples: list[dict]) -> dict:
    return {phase: summary([s[phase] for s in samples]) for phase in PHASES if samples and phase in samples[0]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds for one agent to be ready")
    p.add_argument("--warm-runs", type=int, default=0, help="rounds of warm starts after the others")
    p.add_argument("--pool", type=int, default=3, help="warm pool size for --warm-runs")
    p.add_argument("--warm-wait", choices=("full", "one"), default="full",
                   help="before each warm start, wait for a full pool with no member booting "
                        "(the claim alone), or for one ready member (claims while the refill boots)")
    p.add_argument("--out", default=str(HERE / "results" / "real_node.json"))
    args = p.parse_args()
    for var in ("KUBECONFIG", "RUNTIME_API_REAL_NODE", "RUNTIME_API_AGENT_IMAGE"):
        if not os.environ.get(var):
            sys.exit(f"{var} is not set: eval \"$(scripts/cluster.sh up)\" first (with its real node)")
    become_subreaper()
    results: dict = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "runs": args.runs,
                     "agent_image": os.environ["RUNTIME_API_AGENT_IMAGE"],
                     "loadavg_1m_start": os.getloadavg()[0]}
    samples: dict[str, list[dict]] = {"start": [], "resume": [], "direct_pod": []}
    samples["process_backend"] = []
    bench = RealNode(args)
    local = ProcessBackend(args.timeout)
    try:
        print("warm-up round (not counted)", file=sys.stderr, flush=True)
        _, rid, key = bench.start()
        bench.capture_template(rid, key)
        bench.stop(rid)
        bench.direct(0)
        local.start()
        for i in range(1, args.runs + 1):
            start, rid, key = bench.start()
            resume = bench.pause_resume(rid, key)
            bench.stop(rid)
            direct = bench.direct(i)
            process = local.start()
            for name, s in (("start", start), ("resume", resume), ("direct_pod", direct),
                            ("process_backend", process)):
                samples[name].append(s)
            print(f"  round {i}: start {start}\n           resume {resume}\n           direct {direct}"
                  f"\n           process {process}", file=sys.stderr, flush=True)
        if args.warm_runs:
            bench.close()
            bench = None
            bench = RealNode(args, pool=args.pool)
            samples["warm_start"] = []
            for i in range(1, args.warm_runs + 1):
                warm = bench.warm_start(full=args.warm_wait == "full")
                samples["warm_start"].append(warm)
                print(f"  warm round {i}: {warm}", file=sys.stderr, flush=True)
    finally:
        if bench:
            bench.close()
        local.close()
    samples = {name: s for name, s in samples.items() if s}
    results["loadavg_1m_end"] = os.getloadavg()[0]
    results["samples"] = samples
    results["summary"] = {name: summarise(s) for name, s in samples.items()}
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")

    runs = ", ".join(f"{name} {len(s)}" for name, s in samples.items())
    print(f"\nruns: {runs}; seconds from the request, p50 / p95 "
          f"(load average {results['loadavg_1m_start']:.1f} -> {results['loadavg_1m_end']:.1f})")
    print(f"| {'phase':<18} | " + " | ".join(f"{n:>17}" for n in samples) + " |")
    print(f"|{'-' * 20}|" + "|".join("-" * 19 for _ in samples) + "|")
    for phase in PHASES:
        cells = []
        for name in samples:
            s = results["summary"][name].get(phase)
            cells.append(f"{s['p50']:7.2f} / {s['p95']:7.2f}" if s else f"{'-':>17}")
        print(f"| {phase:<18} | " + " | ".join(cells) + " |")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
