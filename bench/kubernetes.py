#!/usr/bin/env python3
"""Benchmark of runtime-api's Kubernetes backend against the test control plane (kwok pods).

  bench/run.sh [--full|--smoke]            (brings up a private cluster, then calls this)
  python bench/kubernetes.py --mode smoke  (needs KUBECONFIG of a running scripts/cluster.sh)

Every figure is measured in this run, next to its limit measured in the same run:

  1. POST /start response latency, sequential and at concurrency C, next to creating the same five
     objects (record ConfigMap, Secret, Service, Ingress, Pod; the service's order)
     directly with the API, sequentially per runtime, through the same kind of client (httpx,
     admin client certificate). The shapes are copied from a runtime the service made
     (GET of each object, server-set fields stripped, ids substituted).
  2. POST /start -> GET /runtime/{id} says `running` (polled every 10 ms) once kwok made the pod
     ready, next to a bare pod of the same shape: POST -> a watch event with Ready=True.
  3. GET /list?status=all and GET /sessions/batch (100 ids) latency with N runtimes, and the API
     server's GET/LIST request count for configmaps/secrets/pods (apiserver_request_total, all
     clients) over each batch of reads, also over an idle window of the same length.
  4. VmRSS of the service (/proc/<pid>/status) with 0 and N runtimes.
  5. /stop of N runtimes at concurrency C: time until the last /stop answered and until no object
     labelled app.kubernetes.io/managed-by=runtime-api remains in the namespace (configmaps,
     secrets, pods, services, ingresses, per-sandbox networkpolicies).
  7. The V1 pattern at `v1_at` runtimes: GET /list, then POST /start, sequentially.
  8. Idle API-server traffic (apiserver_request_total, every verb and resource, all clients)
     over a window without the service and one with the service idle at 0 runtimes.
  9. At the last step: /start again (sequential), the idle traffic window, a restart of the
     service (time to ready after the re-list, VmRSS of a fresh cache, one maintenance round's
     duration and API requests from its metrics), and /stop of all.

Writes one JSON file (--out) and prints a short log on stderr. Any failed check raises: the exit
status is non-zero and the service's log tail is printed.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import multiprocessing
import os
import random
import re
import secrets
import shutil
import ssl
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

from lean import Lean
from runtime_api_support.service import REPO_ROOT, Service, binary_path, rss_kib, wait_for
from stats import summary

HERE = Path(__file__).resolve().parent

IMAGE = "ghcr.io/openhands/agent-server:1.58.2-python"
COMMAND = "/usr/local/bin/openhands-agent-server --port 60000"
MANAGED_BY = "app.kubernetes.io/managed-by=runtime-api"
LABEL_RUNTIME_ID = "runtime-api.openhands.dev/runtime-id"
LABEL_SESSION_HASH = "runtime-api.openhands.dev/session-hash"

# kind -> (API path prefix, plural); the order is the service's creation order (ensure_objects).
# Sandboxes share one NetworkPolicy (oh-sandboxes), made once: not part of a runtime.
KINDS = {
    "ConfigMap": ("/api/v1", "configmaps"),
    "Secret": ("/api/v1", "secrets"),
    "Service": ("/api/v1", "services"),
    "Ingress": ("/apis/networking.k8s.io/v1", "ingresses"),
    "Pod": ("/api/v1", "pods"),
}
POLICY = ("/apis/networking.k8s.io/v1", "networkpolicies")
SHARED_POLICY = "oh-sandboxes"

MODES = {
    # steps: runtime counts at which reads and memory are measured; the /start block runs after
    # the first step, the /stop measurement at `stop_at` (it stops every runtime, the later steps
    # start from 0 again); the V1 pattern (/list then /start) at `v1_at`; at the last step also
    # /start again, the idle API traffic, a restart (re-list, one maintenance round) and /stop of all.
    "full": dict(seq_starts=200, conc_starts=200, concurrency=20, ready_runs=30, steps=[100, 1000, 5000, 20000],
                 stop_at=1000, v1_at=5000, v1_runs=100, top_starts=50, idle_window=60, reads=200,
                 batch_ids=100, fill_timeout=3600),
    "smoke": dict(seq_starts=20, conc_starts=20, concurrency=20, ready_runs=3, steps=[10, 50, 80],
                  stop_at=50, v1_at=80, v1_runs=10, top_starts=10, idle_window=10, reads=40, batch_ids=100,
                  fill_timeout=300),
}
# A read batch whose API-server GET/LIST count on configmaps/secrets/pods exceeds this per read
# means reads are not served from the cache: the run fails.
MAX_API_REQUESTS_PER_READ = 0.5


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    pass


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise BenchError(msg)


# --- the Kubernetes API, directly ------------------------------------------------------------

def ssl_context(files: dict[str, str]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=files["ca.crt"])
    ctx.load_cert_chain(files["client.crt"], files["client.key"])
    return ctx


def kubeconfig_client(path: str, pool: int) -> tuple[httpx.Client, str, dict[str, str]]:
    """An httpx client with the kubeconfig's server, CA and client certificate (admin)."""
    text = Path(path).read_text()

    def field(name: str) -> str:
        m = re.search(rf"^\s*{name}:\s*(\S+)\s*$", text, re.M)
        if not m:
            raise BenchError(f"{name} not found in {path}")
        return m.group(1).strip("'\"")

    server = field("server")
    tmp = Path(tempfile.mkdtemp(prefix="bench-kube-"))
    files = {}
    for key, name in (("certificate-authority-data", "ca.crt"), ("client-certificate-data", "client.crt"),
                      ("client-key-data", "client.key")):
        f = tmp / name
        f.write_bytes(base64.b64decode(field(key)))
        f.chmod(0o600)
        files[name] = str(f)
    limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
    client = httpx.Client(base_url=server, verify=ssl_context(files), timeout=60.0, limits=limits)
    client.cert_dir = str(tmp)  # removed by Bench.close
    return client, server, files


def ok(r: httpx.Response, what: str) -> httpx.Response:
    if r.status_code >= 300:
        raise BenchError(f"{what}: HTTP {r.status_code}: {r.text[:400]}")
    return r


def obj_path(kind: str, ns: str, name: str | None = None) -> str:
    prefix, plural = KINDS[kind]
    p = f"{prefix}/namespaces/{ns}/{plural}"
    return f"{p}/{name}" if name else p


SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation", "selfLink",
                 "deletionTimestamp", "deletionGracePeriodSeconds", "namespace", "ownerReferences")


def strip(obj: dict) -> dict:
    """What the client sent, as far as it can be told: server-set fields removed."""
    obj = copy.deepcopy(obj)
    obj.pop("status", None)
    for k in SERVER_FIELDS:
        obj["metadata"].pop(k, None)
    ann = obj["metadata"].get("annotations") or {}
    ann.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    if obj["kind"] == "Pod":
        obj["spec"].pop("nodeName", None)
    if obj["kind"] == "Service" and obj["spec"].get("clusterIP") != "None":
        obj["spec"].pop("clusterIP", None)  # an allocated one; a headless Service stays headless
        obj["spec"].pop("clusterIPs", None)
    return obj


class Shapes:
    """The five objects of one runtime the service made, as JSON text with the ids as placeholders."""

    def __init__(self, kube: httpx.Client, ns: str, runtime_id: str, session_id: str):
        self.session_id = session_id
        self.runtime_id = runtime_id
        self.session_hash = hashlib.sha256(session_id.encode()).hexdigest()[:40]
        self.templates: dict[str, str] = {}
        names = {k: f"oh-rt-{runtime_id}" for k in KINDS}
        names["ConfigMap"] = f"oh-session-{self.session_hash}"
        names["Pod"] = f"oh-rt-{runtime_id}-1"
        self.sizes = {}
        for kind, name in names.items():
            obj = ok(kube.get(obj_path(kind, ns, name)), f"reading the {kind} {name} the service made").json()
            check(obj["metadata"].get("labels", {}).get(LABEL_RUNTIME_ID) == runtime_id,
                  f"{kind} {name} lacks the runtime-id label")
            if kind != "ConfigMap":
                refs = obj["metadata"].get("ownerReferences") or []
                check(len(refs) == 1 and refs[0]["kind"] == "ConfigMap", f"{kind} {name} is not owned by the record")
            text = json.dumps(strip(obj))
            check(runtime_id in text or kind == "ConfigMap", f"runtime id not found in the {kind}")
            text = text.replace(runtime_id, "@@RID@@").replace(self.session_hash, "@@HASH@@").replace(
                session_id, "@@SID@@")
            self.templates[kind] = text
            self.sizes[kind] = len(text)

    def build(self, kind: str, runtime_id: str, session_id: str, owner: dict | None) -> dict:
        h = hashlib.sha256(session_id.encode()).hexdigest()[:40]
        obj = json.loads(self.templates[kind].replace("@@RID@@", runtime_id).replace("@@HASH@@", h)
                         .replace("@@SID@@", session_id))
        if owner is not None:
            obj["metadata"]["ownerReferences"] = [owner]
        return obj


def direct_create(kube: Lean, shapes: Shapes, ns: str) -> tuple[float, float]:
    """Creates one runtime's five objects sequentially, like the service: record first, then the
    others owned by it. Returns the seconds it took and the driver's CPU seconds meanwhile."""
    rid = secrets.token_hex(16)
    sid = f"direct-{secrets.token_hex(8)}"
    c0 = time.thread_time()
    t0 = time.perf_counter()
    rec = ok(kube.post(obj_path("ConfigMap", ns), json=shapes.build("ConfigMap", rid, sid, None)),
             "direct: creating the record").json()
    owner = {"apiVersion": "v1", "kind": "ConfigMap", "name": rec["metadata"]["name"],
             "uid": rec["metadata"]["uid"], "controller": True}
    for kind in ("Secret", "Service", "Ingress", "Pod"):
        ok(kube.post(obj_path(kind, ns), json=shapes.build(kind, rid, sid, owner)), f"direct: creating the {kind}")
    return time.perf_counter() - t0, time.thread_time() - c0


def bare_pod_ready(kube: Lean, watch_client: httpx.Client, shapes: Shapes, ns: str,
                   timeout: float = 60) -> float:
    """POST a bare pod (the sandbox pod's shape, no owner, no other object) and watch it until
    its Ready condition is True. Returns the seconds from just before the POST."""
    rid = secrets.token_hex(16)
    pod = shapes.build("Pod", rid, f"bare-{rid[:8]}", None)
    name = pod["metadata"]["name"]
    params = {"watch": "1", "fieldSelector": f"metadata.name={name}", "timeoutSeconds": str(int(timeout))}
    with watch_client.stream("GET", obj_path("Pod", ns), params=params, timeout=timeout + 5) as w:
        ok(w, "watching the bare pod")  # headers are in: the watch is registered before the POST
        t0 = time.perf_counter()
        ok(kube.post(obj_path("Pod", ns), json=pod), "creating the bare pod")
        for line in w.iter_lines():
            if not line:
                continue
            ev = json.loads(line)
            conds = (ev.get("object", {}).get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds):
                return time.perf_counter() - t0
    raise BenchError(f"bare pod {name} not Ready within {timeout}s")


def apiserver_read_counts(kube: httpx.Client) -> dict[str, float]:
    """apiserver_request_total summed per verb/resource/scope for GET and LIST of configmaps,
    secrets and pods (every client of the API server)."""
    text = ok(kube.get("/metrics"), "reading the API server's /metrics").text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line[: line.rindex("}")]))
        if labels.get("verb") in ("GET", "LIST") and labels.get("resource") in ("configmaps", "secrets", "pods") \
                and not labels.get("subresource"):
            key = f"{labels['verb']} {labels['resource']} ({labels['scope']})"
            out[key] = out.get(key, 0) + float(line.rsplit(" ", 1)[1])
    check(bool(out), "no apiserver_request_total series for configmaps/secrets/pods in /metrics")
    return out


def apiserver_all_counts(kube: httpx.Client) -> dict[str, float]:
    """apiserver_request_total summed per verb and resource (every client, every verb but WATCH
    streams still open: a watch counts when it ends)."""
    text = ok(kube.get("/metrics"), "reading the API server's /metrics").text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line[: line.rindex("}")]))
        key = f"{labels.get('verb')} {labels.get('resource')}"
        out[key] = out.get(key, 0) + float(line.rsplit(" ", 1)[1])
    return out


def traffic_window(kube: httpx.Client, seconds: float) -> tuple[dict[str, int], float]:
    """API-server requests per verb/resource over an idle window, and the window's length."""
    t0 = time.perf_counter()
    before = apiserver_all_counts(kube)
    time.sleep(seconds)
    after = apiserver_all_counts(kube)
    return delta(before, after), time.perf_counter() - t0


def service_metric(api: Lean, name: str) -> float:
    """The sum of a metric's series on the service's /metrics (0 when absent)."""
    text = ok(api.get("/metrics"), "GET /metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def delta(a: dict[str, float], b: dict[str, float]) -> dict[str, int]:
    return {k: int(b.get(k, 0) - a.get(k, 0)) for k in sorted(set(a) | set(b)) if b.get(k, 0) - a.get(k, 0)}


def owned_objects_left(kube: httpx.Client, ns: str, count: bool = False) -> dict[str, int]:
    """Objects labelled managed-by=runtime-api per kind (only whether any is left, with limit=1,
    unless `count`)."""
    left = {}
    for kind in KINDS:
        params = {"labelSelector": MANAGED_BY}
        if not count:
            params["limit"] = "1"
        n = len(ok(kube.get(obj_path(kind, ns), params=params), f"listing {kind}").json().get("items", []))
        if n:
            left[kind] = n
    # per-sandbox NetworkPolicies (the shared one carries no runtime id and stays)
    params = {"labelSelector": f"{MANAGED_BY},{LABEL_RUNTIME_ID}"}
    n = len(ok(kube.get(f"{POLICY[0]}/namespaces/{ns}/{POLICY[1]}", params=params), "listing policies")
            .json().get("items", []))
    if n:
        left["NetworkPolicy (per sandbox)"] = n
    return left


def meter_self_test(kube: httpx.Client, ns: str) -> dict[str, int]:
    """Proves the API-server request meter sees requests: 3 GETs of a ConfigMap and 2 LISTs of
    pods must show up in the counts."""
    before = apiserver_read_counts(kube)
    for _ in range(3):
        kube.get(obj_path("ConfigMap", ns, "kube-root-ca.crt"))
    for _ in range(2):
        ok(kube.get(obj_path("Pod", ns), params={"limit": "1"}), "listing pods")
    d = delta(before, apiserver_read_counts(kube))
    check(d.get("GET configmaps (resource)", 0) >= 3 and d.get("LIST pods (namespace)", 0) >= 2,
          f"the API-server request meter did not see 3 GETs and 2 LISTs: {d}")
    return d


def ensure_namespace(kube: httpx.Client, ns: str) -> None:
    r = kube.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    check(r.status_code in (201, 409), f"creating namespace {ns}: HTTP {r.status_code} {r.text[:200]}")
    wait_for(lambda: kube.get(f"/api/v1/namespaces/{ns}/serviceaccounts/default").status_code == 200, 60,
             desc=f"the default ServiceAccount of {ns}")


def delete_namespace(kube: httpx.Client, ns: str, timeout: float) -> float:
    t0 = time.perf_counter()
    r = kube.delete(f"/api/v1/namespaces/{ns}")
    check(r.status_code in (200, 202, 404), f"deleting namespace {ns}: HTTP {r.status_code}")
    wait_for(lambda: kube.get(f"/api/v1/namespaces/{ns}").status_code == 404, timeout, interval=1,
             desc=f"namespace {ns} gone")
    return time.perf_counter() - t0


# --- concurrent requests: one process per in-flight request -----------------------------------
# Threads would share the GIL: with 20 of them a response waits for the interpreter and the
# slower side (six requests per direct creation) is penalised most. Each worker process has its
# own single kept-alive connection to the service and to the API server.

_W: dict = {}


def _worker_init(svc_url: str, api_key: str, kube_server: str, cert_files: dict, shapes: "Shapes",
                 direct_ns: str, barrier) -> None:
    _W.update(api=Lean(svc_url, 1, headers={"X-API-Key": api_key}),
              kube=Lean(kube_server, 1, context=ssl_context(cert_files)),
              shapes=shapes, direct_ns=direct_ns, barrier=barrier)


def _worker_task(task: tuple[str, str | None]):
    op, arg = task
    api, kube = _W["api"], _W["kube"]
    if op == "warm":
        api.warm("/health")
        kube.warm("/version")
        _W["barrier"].wait(120)  # every worker takes exactly one warm task
        return os.getpid()
    if op == "start":
        c0, t0 = time.thread_time(), time.perf_counter()
        r = api.post("/start", json={"image": IMAGE, "session_id": arg, "command": COMMAND})
        dt, cpu = time.perf_counter() - t0, time.thread_time() - c0
        body = ok(r, f"POST /start {arg}").json()
        check(body.get("status") in ("starting", "running") and body.get("runtime_id"), f"/start answered {body}")
        return dt, cpu, body["runtime_id"]
    if op == "direct":
        return direct_create(kube, _W["shapes"], _W["direct_ns"])
    if op == "stop":
        t0 = time.perf_counter()
        r = api.post("/stop", json={"runtime_id": arg})
        dt = time.perf_counter() - t0
        check(ok(r, f"POST /stop {arg}").json().get("status") == "stopped", f"/stop answered {r.text[:200]}")
        return dt
    raise ValueError(op)


class Workers:
    def __init__(self, n: int, *init_args):
        ctx = multiprocessing.get_context("fork")
        self.n = n
        self.barrier = ctx.Barrier(n)
        self.pool = ctx.Pool(n, initializer=_worker_init, initargs=(*init_args, self.barrier))

    def warm(self) -> None:
        pids = self.pool.map(_worker_task, [("warm", None)] * self.n, chunksize=1)
        check(len(set(pids)) == self.n, f"warm-up reached {len(set(pids))} of {self.n} workers")

    def map(self, tasks: list) -> list:
        return self.pool.map(_worker_task, tasks, chunksize=1)  # re-raises a worker's failure

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()


# --- the service ----------------------------------------------------------------------------

class Bench:
    def __init__(self, args: argparse.Namespace, cfg: dict):
        self.args = args
        self.cfg = cfg
        self.ns = args.namespace
        self.direct_ns = args.namespace + "-direct"
        # httpx for what is not timed, Lean (one kind of client for both sides) for what is
        self.kube, self.server, self.cert_files = kubeconfig_client(os.environ["KUBECONFIG"], 8)
        self.watch_client, _, _ = kubeconfig_client(os.environ["KUBECONFIG"], 2)
        self.kl = Lean(self.server, 2, context=ssl_context(self.cert_files))
        self.workers = None  # Workers, once the shapes are known
        self.svc: Service | None = None
        self.api: Lean | None = None
        self.population: list[tuple[str, str]] = []  # (runtime_id, session_id) of live runtimes
        self.pop_lock = threading.Lock()
        self.result: dict = {}

    # service
    def start_service(self, maintenance_interval: str = "86400") -> None:
        env = {
            "BACKEND": "kubernetes", "NAMESPACE": self.ns, "KUBECONFIG": os.environ["KUBECONFIG"],
            "SANDBOX_CPU_REQUEST": "10m", "SANDBOX_MEMORY_REQUEST": "16Mi",
            "SANDBOX_CPU_LIMIT": "100m", "SANDBOX_MEMORY_LIMIT": "64Mi",
            "RUNTIME_IDLE_SECONDS": "0", "RUNTIME_DEAD_SECONDS": "0", "RUNTIME_FAILED_SECONDS": "0",
            # no maintenance round (its orphan sweep lists services/ingresses/policies) during the
            # run, but in the restart at the last step, which measures one
            "MAINTENANCE_INTERVAL_SECONDS": maintenance_interval,
            "RUST_LOG": os.environ.get("RUST_LOG", "warn"),
        }
        state = Path(tempfile.mkdtemp(prefix="bench-k8s-")) / "state"
        self.svc = Service(state_dir=state, extra_env=env)
        self.svc.start()
        self.api = Lean(self.svc.base_url, 2, headers={"X-API-Key": self.svc.api_key})
        wait_for(lambda: self.api.get("/readyz").status_code == 200, 60, interval=0.1, desc="/readyz 200")

    def warm(self) -> None:
        """Fresh kept-alive connections on both sides before a timed block."""
        self.api.warm("/health")
        self.kl.warm("/version")

    def rss(self) -> int:
        return rss_kib(self.svc.proc.pid)

    def start_one(self, sid: str, cpu: list | None = None) -> tuple[float, dict]:
        c0 = time.thread_time()
        t0 = time.perf_counter()
        r = self.api.post("/start", json={"image": IMAGE, "session_id": sid, "command": COMMAND})
        dt = time.perf_counter() - t0
        if cpu is not None:
            cpu.append(time.thread_time() - c0)
        ok(r, f"POST /start {sid}")
        body = r.json()
        check(body.get("status") in ("starting", "running") and body.get("runtime_id"), f"/start answered {body}")
        with self.pop_lock:
            self.population.append((body["runtime_id"], sid))
        return dt, body

    def start_many(self, sids: list[str], cpu: list | None = None) -> list[float]:
        """Concurrent /start through the worker processes; returns the latencies."""
        out = self.workers.map([("start", sid) for sid in sids])
        with self.pop_lock:
            self.population += [(rid, sid) for (_, _, rid), sid in zip(out, sids)]
        if cpu is not None:
            cpu += [c for _, c, _ in out]
        return [d for d, _, _ in out]

    def list_all(self) -> dict:
        return ok(self.api.get("/list", params={"status": "all"}), "GET /list?status=all").json()

    def wait_all_running(self, n: int, timeout: float) -> float:
        t0 = time.perf_counter()

        def done():
            body = self.list_all()
            running = sum(r["status"] == "running" for r in body["runtimes"])
            if body["total"] != n:
                raise BenchError(f"/list total {body['total']}, expected {n}")
            return running == n or None

        wait_for(done, timeout, interval=1, desc=f"{n} runtimes running")
        return time.perf_counter() - t0

    def fill_to(self, n: int) -> dict:
        have = len(self.population)
        check(n >= have, f"population {have} already above step {n}")
        if n > have:
            log(f"starting {n - have} runtimes (concurrency {self.cfg['concurrency']}) to reach {n}")
        t0 = time.perf_counter()
        self.start_many([f"bench-fill-{n}-{i}-{secrets.token_hex(6)}" for i in range(n - have)])
        t_started = time.perf_counter() - t0
        t_running = self.wait_all_running(n, self.cfg["fill_timeout"])
        return {"started": n - have, "seconds_starting": round(t_started, 2),
                "seconds_until_all_running_after": round(t_running, 2)}

    # measurements
    def measure_ready(self, shapes: Shapes) -> dict:
        runs = self.cfg["ready_runs"]
        log(f"start -> running vs bare pod Ready, {runs} interleaved runs")
        self.warm()
        svc_t, resp_t, bare_t = [], [], []
        for i in range(runs):
            sid = f"bench-ready-{i}-{secrets.token_hex(6)}"
            t0 = time.perf_counter()
            r = self.api.post("/start", json={"image": IMAGE, "session_id": sid, "command": COMMAND})
            t_resp = time.perf_counter() - t0
            ok(r, "POST /start")
            rid = r.json()["runtime_id"]
            with self.pop_lock:
                self.population.append((rid, sid))
            end = t0 + 60
            while True:
                g = ok(self.api.get(f"/runtime/{rid}"), f"GET /runtime/{rid}").json()
                if g["status"] == "running":
                    break
                check(g["status"] == "starting", f"runtime {rid} went {g['status']}: {g.get('status_detail')}")
                check(time.perf_counter() < end, f"runtime {rid} not running within 60 s")
                time.sleep(0.01)
            svc_t.append(time.perf_counter() - t0)
            resp_t.append(t_resp)
            bare_t.append(bare_pod_ready(self.kl, self.watch_client, shapes, self.direct_ns))
        return {"runs": runs, "service_start_to_running_s": summary(svc_t),
                "service_start_response_s": summary(resp_t), "bare_pod_create_to_ready_s": summary(bare_t),
                "ratio_p50": round(summary(svc_t)["p50"] / summary(bare_t)["p50"], 3),
                "method": "service: POST /start until GET /runtime/{id} says running, polled every 10 ms; "
                          "bare pod: POST of the sandbox pod's shape until a watch event shows Ready=True; "
                          "interleaved"}

    def measure_starts(self, shapes: Shapes) -> dict:
        c = self.cfg
        out = {}
        self.warm()
        reconnects0 = self.api.reconnects + self.kl.reconnects
        log(f"/start vs direct creation: {c['seq_starts']} sequential each, interleaved")
        svc_seq, dir_seq, svc_cpu, dir_cpu = [], [], [], []
        for i in range(c["seq_starts"]):
            svc_seq.append(self.start_one(f"bench-seq-{i}-{secrets.token_hex(6)}", svc_cpu)[0])
            d, cpu = direct_create(self.kl, shapes, self.direct_ns)
            dir_seq.append(d)
            dir_cpu.append(cpu)
        out["sequential"] = {"n": c["seq_starts"], "service_start_s": summary(svc_seq),
                             "direct_create_s": summary(dir_seq)}
        conc = c["concurrency"]
        log(f"/start vs direct creation: {c['conc_starts']} each at concurrency {conc}, in alternating rounds")
        rounds = 4 if c["conc_starts"] >= 4 * conc else 1
        per_round = c["conc_starts"] // rounds
        svc_conc, dir_conc, svc_wall, dir_wall = [], [], 0.0, 0.0
        for rnd in range(rounds):
            self.workers.warm()
            t0 = time.perf_counter()
            svc_conc += self.start_many([f"bench-conc-{rnd}-{i}-{secrets.token_hex(6)}" for i in range(per_round)],
                                        svc_cpu)
            svc_wall += time.perf_counter() - t0
            self.workers.warm()
            t0 = time.perf_counter()
            res = self.workers.map([("direct", None)] * per_round)
            dir_wall += time.perf_counter() - t0
            dir_conc += [d for d, _ in res]
            dir_cpu += [cpu for _, cpu in res]
        n = rounds * per_round
        out["concurrent"] = {"n": n, "concurrency": conc, "rounds": rounds,
                             "service_start_s": summary(svc_conc), "direct_create_s": summary(dir_conc),
                             "service_starts_per_s": round(n / svc_wall, 1),
                             "direct_creates_per_s": round(n / dir_wall, 1)}
        for k in ("sequential", "concurrent"):
            out[k]["ratio_p50"] = round(out[k]["service_start_s"]["p50"] / out[k]["direct_create_s"]["p50"], 3)
            out[k]["ratio_p99"] = round(out[k]["service_start_s"]["p99"] / out[k]["direct_create_s"]["p99"], 3)
        out["driver_cpu_ms_per_op"] = {"service_start": round(sum(svc_cpu) / len(svc_cpu) * 1e3, 3),
                                       "direct_create": round(sum(dir_cpu) / len(dir_cpu) * 1e3, 3)}
        out["client_reconnects_during_sequential_requests"] = self.api.reconnects + self.kl.reconnects - reconnects0
        out["object_json_bytes"] = shapes.sizes
        out["method"] = ("direct: record ConfigMap, Secret, Service, Ingress, Pod (the shared NetworkPolicy is not per runtime) created one after "
                         "the other (the service's order), children owned by the record, shapes copied from a "
                         "runtime the service made; both sides through the same lean keep-alive client "
                         "(bench/lean.py, connections opened before each block); concurrent requests from "
                         "one worker process each; service and direct interleaved (sequential) or in "
                         "alternating rounds (concurrent)")
        return out

    def measure_reads(self, n: int) -> dict:
        reads = self.cfg["reads"]
        k = min(self.cfg["batch_ids"], len(self.population))
        sids = [s for _, s in self.population]
        rng = random.Random(n)
        batches = [rng.sample(sids, k) for _ in range(reads)]
        # warm-up (not counted)
        self.warm()
        ok(self.api.get("/list", params={"status": "all"}), "warm-up /list")
        time.sleep(1)
        out = {"runtimes": n, "reads": reads, "batch_ids": k}
        ids = [rng.choice(self.population)[0] for _ in range(reads)]
        for name in ("list", "batch", "get"):
            before = apiserver_read_counts(self.kube)
            lat = []
            t_begin = time.perf_counter()
            for i in range(reads):
                t0 = time.perf_counter()
                if name == "list":
                    r = self.api.get("/list", params={"status": "all"})
                    lat.append(time.perf_counter() - t0)
                    ok(r, "GET /list?status=all")
                    total = r.json()["total"]
                    check(total == n, f"/list?status=all total {total}, expected {n}")
                elif name == "get":
                    r = self.api.get(f"/runtime/{ids[i]}")
                    lat.append(time.perf_counter() - t0)
                    ok(r, "GET /runtime/{id}")
                else:
                    r = self.api.get("/sessions/batch", params=[("ids", s) for s in batches[i]])
                    lat.append(time.perf_counter() - t0)
                    ok(r, "GET /sessions/batch")
                    got = len(r.json())
                    check(got == k, f"/sessions/batch returned {got} of {k} runtimes")
            window = time.perf_counter() - t_begin
            after = apiserver_read_counts(self.kube)
            # control: the same window with no reads, to see what other clients did meanwhile
            time.sleep(min(window, 10.0))
            idle_after = apiserver_read_counts(self.kube)
            d, idle = delta(before, after), delta(after, idle_after)
            per_read = sum(d.values()) / reads
            out[name] = {"latency_s": summary(lat), "seconds": round(window, 2),
                         "bytes_last_response": len(r.content),
                         "apiserver_get_list_during_reads": d,
                         "apiserver_get_list_idle_window": idle,
                         "idle_window_s": round(min(window, 10.0), 2),
                         "apiserver_requests_per_read": round(per_read, 4)}
            check(per_read <= MAX_API_REQUESTS_PER_READ,
                  f"{name}: {per_read:.2f} API-server GET/LIST requests per read ({d}): reads are not cached")
        scrapes = []
        for _ in range(10):
            t0 = time.perf_counter()
            ok(self.api.get("/metrics"), "GET /metrics")
            scrapes.append(time.perf_counter() - t0)
        out["metrics_scrape_s"] = summary(scrapes)
        log(f"  N={n}: /list p50 {out['list']['latency_s']['p50'] * 1e3:.1f} ms, "
            f"/runtime/{{id}} p50 {out['get']['latency_s']['p50'] * 1e3:.2f} ms, "
            f"/metrics p50 {out['metrics_scrape_s']['p50'] * 1e3:.1f} ms, "
            f"/sessions/batch p50 {out['batch']['latency_s']['p50'] * 1e3:.1f} ms, "
            f"API requests/read {out['list']['apiserver_requests_per_read']}/{out['batch']['apiserver_requests_per_read']}")
        return out

    def measure_stop(self) -> dict:
        ids = [rid for rid, _ in self.population]
        n = len(ids)
        check(n > 0, "nothing to stop")
        before = owned_objects_left(self.kube, self.ns, count=True)
        log(f"/stop of {n} runtimes at concurrency {self.cfg['concurrency']}; objects before: {before}")
        self.workers.warm()
        t0 = time.perf_counter()
        lat = self.workers.map([("stop", rid) for rid in ids])
        t_answered = time.perf_counter() - t0
        with self.pop_lock:
            self.population.clear()
        polls = 0
        deadline = time.perf_counter() + max(300, n)
        while True:
            left = owned_objects_left(self.kube, self.ns)
            polls += 1
            if not left:
                break
            check(time.perf_counter() < deadline,
                  f"objects left {max(300, n)} s after /stop: {owned_objects_left(self.kube, self.ns, count=True)}")
            time.sleep(0.25)
        t_gone = time.perf_counter() - t0
        total = self.list_all()["total"]
        check(total == 0, f"/list?status=all still shows {total} runtimes after stopping all")
        return {"runtimes": n, "concurrency": self.cfg["concurrency"], "objects_before": before,
                "stop_latency_s": summary(lat), "seconds_until_all_stop_answered": round(t_answered, 2),
                "seconds_until_no_owned_object": round(t_gone, 2), "polls_after_answers": polls,
                "method": "all /stop calls, then the five kinds (and per-sandbox policies) listed with labelSelector "
                          f"{MANAGED_BY} (limit=1) every 0.25 s until none is left; from the first /stop"}

    def measure_v1(self, n: int) -> dict:
        """OpenHands V1's app server calls /list before every start: /list then /start, in a row."""
        runs = self.cfg["v1_runs"]
        log(f"V1 pattern at {n} runtimes: GET /list then POST /start, {runs} times")
        self.warm()
        lists, starts, pairs = [], [], []
        for i in range(runs):
            t0 = time.perf_counter()
            r = self.api.get("/list")
            t1 = time.perf_counter()
            ok(r, "GET /list")
            starts.append(self.start_one(f"bench-v1-{i}-{secrets.token_hex(6)}")[0])
            lists.append(t1 - t0)
            pairs.append(time.perf_counter() - t0)
        return {"runtimes_before": n, "runs": runs, "list_s": summary(lists), "start_s": summary(starts),
                "list_then_start_s": summary(pairs), "bytes_of_list": len(r.content),
                "method": "GET /list (default filter: runtimes holding compute), then POST /start of a new "
                          "session, sequentially"}

    def measure_top(self, n: int) -> dict:
        """At the last step: /start again, the idle API traffic, a restart (re-list, one
        maintenance round), /stop of everything."""
        c = self.cfg
        out = {"runtimes": n}
        self.warm()
        # The limit at this moment, interleaved as in part 1: the control plane is busier with N
        # (the controller manager's work grows with the namespace), whatever the service does.
        ensure_namespace(self.kube, self.direct_ns)
        lat, direct = [], []
        for i in range(c["top_starts"]):
            lat.append(self.start_one(f"bench-top-{i}-{secrets.token_hex(6)}")[0])
            direct.append(direct_create(self.kl, self.shapes, self.direct_ns)[0])
        out["start_sequential_s"] = summary(lat)
        out["direct_create_s"] = summary(direct)
        self.wait_all_running(len(self.population), c["fill_timeout"])
        log(f"  /start p50 at {n}: {out['start_sequential_s']['p50'] * 1e3:.1f} ms (five creates directly: "
            f"{out['direct_create_s']['p50'] * 1e3:.1f} ms); idle traffic window")
        d, secs = traffic_window(self.kube, c["idle_window"])
        out["idle_traffic"] = {"apiserver_requests": d, "seconds": round(secs, 1)}
        # A restart on the same namespace: time to ready (re-list), memory of a fresh cache, and
        # maintenance rounds every 10 s (the first one sweeps fully).
        log("restarting the service with MAINTENANCE_INTERVAL_SECONDS=10")
        self.svc.stop()
        t0 = time.perf_counter()
        self.start_service(maintenance_interval="10")
        out["restart_seconds_to_ready"] = round(time.perf_counter() - t0, 2)
        self.workers.close()  # they talk to the old service's port
        self.workers = Workers(c["concurrency"], self.svc.base_url, self.svc.api_key, self.server,
                               self.cert_files, self.shapes, self.direct_ns)
        self.workers.warm()
        kube0 = service_metric(self.api, "runtime_api_kube_requests_total")
        wait_for(lambda: service_metric(self.api, "runtime_api_maintenance_round_duration_seconds_count") >= 1,
                 120, interval=0.5, desc="one maintenance round")
        out["maintenance_round_seconds"] = round(
            service_metric(self.api, "runtime_api_maintenance_round_duration_seconds_sum"), 3)
        out["maintenance_round_kube_requests"] = int(
            service_metric(self.api, "runtime_api_kube_requests_total") - kube0)
        time.sleep(2)
        out["memory_kib_after_restart"] = self.rss()
        log(f"  restart: ready in {out['restart_seconds_to_ready']} s, VmRSS {out['memory_kib_after_restart']} KiB; "
            f"maintenance round {out['maintenance_round_seconds']} s, "
            f"{out['maintenance_round_kube_requests']} API requests")
        return out

    def checkpoint(self) -> None:
        """The results so far, so that an interrupted run still leaves its figures."""
        self.args.out.parent.mkdir(parents=True, exist_ok=True)
        partial = self.args.out.with_suffix(".partial.json")
        partial.write_text(json.dumps(self.result, indent=2) + "\n")

    def run(self) -> dict:
        c = self.cfg
        r = self.result
        ensure_namespace(self.kube, self.ns)
        ensure_namespace(self.kube, self.direct_ns)
        r["meter_self_test"] = meter_self_test(self.kube, self.ns)
        log(f"API traffic without the service, {c['idle_window']} s")
        base, base_s = traffic_window(self.kube, c["idle_window"])
        self.start_service()
        time.sleep(2)
        r["memory_kib"] = {"0": self.rss()}
        log(f"service ready; VmRSS {r['memory_kib']['0']} KiB with 0 runtimes; its idle API traffic, "
            f"{c['idle_window']} s")
        with_svc, with_s = traffic_window(self.kube, c["idle_window"])
        r["idle_traffic_0"] = {"without_service": base, "without_seconds": round(base_s, 1),
                               "with_service": with_svc, "with_seconds": round(with_s, 1)}
        self.checkpoint()

        # shapes of one runtime the service made
        _, tmpl = self.start_one(f"bench-template-{secrets.token_hex(6)}")
        self.wait_all_running(1, 60)
        shapes = Shapes(self.kube, self.ns, tmpl["runtime_id"], self.population[0][1])
        self.shapes = shapes
        self.workers = Workers(c["concurrency"], self.svc.base_url, self.svc.api_key, self.server, self.cert_files,
                               shapes, self.direct_ns)
        self.workers.warm()

        r["start_to_running"] = self.measure_ready(shapes)
        r["reads"] = []
        r["fills"] = {}
        for step_i, n in enumerate(c["steps"]):
            r["fills"][str(n)] = self.fill_to(n)
            time.sleep(2)
            r["memory_kib"][str(n)] = self.rss()
            r["reads"].append(self.measure_reads(n))
            self.checkpoint()
            if n == c["v1_at"]:
                r["v1_pattern"] = self.measure_v1(n)
            if step_i == len(c["steps"]) - 1:
                r["top"] = self.measure_top(len(self.population))
                self.checkpoint()
                r["stop_all"] = self.measure_stop()
                r["top"]["direct_namespace_delete_s"] = round(delete_namespace(self.kube, self.direct_ns, 600), 2)
                self.checkpoint()
                continue
            if step_i == 0:
                r["start_latency"] = self.measure_starts(shapes)
                log("removing the directly created objects (namespace deletion)")
                r["direct_namespace_delete_s"] = round(delete_namespace(self.kube, self.direct_ns, 600), 2)
                self.wait_all_running(len(self.population), c["fill_timeout"])
            if n == c["stop_at"]:
                check(len(self.population) == n, f"population {len(self.population)} != {n} before /stop")
                r["stop"] = self.measure_stop()
                time.sleep(2)
                r["memory_kib"][f"after_stopping_{n}"] = self.rss()
            self.checkpoint()
        check("start_latency" in r and "stop" in r, "configuration skipped a measurement")
        return r

    def close(self, failed: bool) -> None:
        if self.workers is not None:
            self.workers.close()
        for c in (self.kube, self.watch_client):
            shutil.rmtree(c.cert_dir, ignore_errors=True)
        if self.svc is not None:
            if failed:
                print(f"---- runtime-api log tail ({self.svc.log_path}) ----\n{self.svc.log_tail(80)}", file=sys.stderr)
            code = self.svc.stop()
            if code not in (0, None):
                log(f"runtime-api exited with {code}")
            if failed:
                log(f"service log kept in {self.svc.log_path}")
            else:
                shutil.rmtree(self.svc.state_dir.parent, ignore_errors=True)


def cluster_info(kube: httpx.Client) -> dict:
    version = ok(kube.get("/version"), "/version").json().get("gitVersion")
    nodes = ok(kube.get("/api/v1/nodes"), "nodes").json()["items"]
    cap = nodes[0]["status"]["capacity"] if nodes else {}
    kwok = None
    gomod = REPO_ROOT / "cluster" / "kwok-tool" / "go.mod"
    if gomod.exists():
        m = re.search(r"sigs\.k8s\.io/kwok (v\S+)", gomod.read_text())
        kwok = m.group(1) if m else None
    off = [c for c in os.environ.get("CLUSTER_CONTROLLERS_OFF", "").split(",") if c]
    return {"kubernetes": version, "kwok": kwok, "nodes": len(nodes), "node_capacity": cap,
            "controllers_off": off}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=sorted(MODES), default="smoke")
    ap.add_argument("--namespace", default="bench")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if "KUBECONFIG" not in os.environ:
        raise SystemExit("KUBECONFIG is not set (eval \"$(scripts/cluster.sh up)\")")
    cfg = MODES[args.mode]
    if os.environ.get("BENCH_STEPS"):  # e.g. 100,1000,5000 on a machine that cannot hold 20,000
        steps = sorted(int(n) for n in os.environ["BENCH_STEPS"].split(","))
        cfg = dict(cfg, steps=steps)
    if os.environ.get("RUNTIME_API_BIN"):
        os.environ["RUNTIME_API_BIN"] = os.path.abspath(os.environ["RUNTIME_API_BIN"])
    from process_backend import machine_info  # same machine description as the process benchmark
    t0 = time.perf_counter()
    bench = Bench(args, cfg)
    result = {"benchmark": "kubernetes", "mode": args.mode,
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": machine_info(), "cluster": cluster_info(bench.kube), "config": cfg,
              "service_env": "SANDBOX_CPU_REQUEST=10m SANDBOX_MEMORY_REQUEST=16Mi SANDBOX_CPU_LIMIT=100m "
                             "SANDBOX_MEMORY_LIMIT=64Mi RUNTIME_IDLE_SECONDS=0 RUNTIME_DEAD_SECONDS=0 "
                             "RUNTIME_FAILED_SECONDS=0 MAINTENANCE_INTERVAL_SECONDS=86400 RUST_LOG=warn"}
    failed = True
    try:
        result["results"] = bench.run()
        failed = False
    finally:
        bench.close(failed)
    result["seconds_total"] = round(time.perf_counter() - t0, 1)
    result["loadavg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {args.out} ({result['seconds_total']} s)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BenchError, TimeoutError, httpx.HTTPError) as e:
        print(f"BENCH FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
