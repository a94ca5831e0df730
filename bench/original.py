#!/usr/bin/env python3
"""Side by side with the original Go service on the same API server (issue 16, item 2).

  # the original (github.com/zparnold/openhands-kubernetes-remote-runtime) is not served by the Go
  # module proxy: build it from a checkout of its repository, outside this one
  (cd <checkout> && go build -o /tmp/original-runtime-api ./cmd/runtime-api)
  eval "$(CLUSTER_REAL_NODE=0 CLUSTER_NODES=3 CLUSTER_NODE_PODS=600 CLUSTER_NODE_CPU=1000 \
          CLUSTER_NODE_MEMORY=4Ti scripts/cluster.sh up)"   # the original asks 1 CPU, 2 GiB per pod
  eval "$(scripts/python.sh)"
  ORIGINAL_BIN=/tmp/original-runtime-api RUNTIME_API_BIN=target/release/runtime-api \
      python bench/original.py --runtimes 1000

Each service in turn, alone on the machine, in a namespace of its own: start it, make
`--runtimes` runtimes through its `POST /start` (20 at a time), wait until the API server shows
every pod Running, then time `--reads` sequential `GET /list`, `GET /runtime/{id}` (random ids)
and `GET /sessions/batch` (100 random session ids), through the same lean keep-alive client as
bench/kubernetes.py (the timing ends when the body is read; parsing is not timed). Beside each
batch: the API server's GET/LIST requests on configmaps, secrets and pods per read (every
client's), the response's bytes; then the service's VmRSS and the API server's requests over a
60 s idle window. The service is stopped and its namespace deleted before the other one starts.
Writes the figures to `--out` and prints a table.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "support"))

from kubernetes import (COMMAND, IMAGE, apiserver_read_counts, check, delete_namespace, delta,  # noqa: E402
                        ensure_namespace, kubeconfig_client, log, ok, traffic_window)
from lean import Lean  # noqa: E402
from memory import memory, start as start_ours  # noqa: E402
from runtime_api_support.service import free_port, wait_for  # noqa: E402
from stats import summary  # noqa: E402


class Original:
    """The original service as a child process. It reads `~/.kube/config` (no KUBECONFIG), so it
    gets a HOME of its own holding a copy of the test cluster's kubeconfig."""

    def __init__(self, binary: str, namespace: str):
        self.home = Path(tempfile.mkdtemp(prefix="bench-original-"))
        (self.home / ".kube").mkdir()
        shutil.copy(os.environ["KUBECONFIG"], self.home / ".kube" / "config")
        self.api_key = secrets.token_hex(16)
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        env = {"PATH": os.environ["PATH"], "HOME": str(self.home), "SERVER_PORT": str(port),
               "API_KEY": self.api_key, "NAMESPACE": namespace, "BASE_DOMAIN": "sandbox.example.test",
               "CLEANUP_ENABLED": "false", "LOG_LEVEL": "info"}
        self.log_path = self.home / "service.log"
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen([binary], env=env, stdout=out, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.home, ignore_errors=True)


def count_entries(body) -> int:
    """Runtimes in a /list or /sessions/batch answer: ours is a list (batch) or {"runtimes": ...};
    the original's batch is {"sessions": ...}."""
    if isinstance(body, list):
        return len(body)
    return len(body.get("runtimes", body.get("sessions", [])))


def running_pods(kube, ns: str) -> int:
    items = ok(kube.get(f"/api/v1/namespaces/{ns}/pods"), "listing pods").json()["items"]
    return sum(1 for p in items if p.get("status", {}).get("phase") == "Running")


def fill(api: Lean, n: int, prefix: str) -> tuple[list[tuple[str, str]], float]:
    """`n` runtimes through POST /start, 20 at a time: (runtime id, session id) each, and seconds."""
    def one(i: int) -> tuple[str, str]:
        sid = f"{prefix}-{i}-{secrets.token_hex(3)}"
        r = api.post("/start", json={"image": IMAGE, "session_id": sid, "command": COMMAND})
        check(r.status_code in (200, 201), f"/start answered {r.status_code}: {r.text[:300]}")
        return r.json()["runtime_id"], sid

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(20) as pool:
        made = list(pool.map(one, range(n)))
    return made, time.perf_counter() - t0


def reads(api: Lean, kube, made: list[tuple[str, str]], n_reads: int, batch_ids: int) -> dict:
    rng = random.Random(len(made))
    n = len(made)
    batch_ids = min(batch_ids, n)
    out = {}
    for name in ("list", "get", "batch"):
        api.warm()
        before = apiserver_read_counts(kube)
        lat, t_begin = [], time.perf_counter()
        for _ in range(n_reads):
            if name == "list":
                path, want = "/list", n
            elif name == "get":
                path, want = f"/runtime/{rng.choice(made)[0]}", None
            else:
                ids = "&".join(f"ids={s}" for _, s in rng.sample(made, batch_ids))
                path, want = f"/sessions/batch?{ids}", batch_ids
            t0 = time.perf_counter()
            r = api.get(path)
            lat.append(time.perf_counter() - t0)
            ok(r, f"GET {path[:40]}")
            if want is not None:
                got = count_entries(r.json())
                check(got == want, f"GET {path[:40]}: {got} runtimes, expected {want}")
        window = time.perf_counter() - t_begin
        d = delta(before, apiserver_read_counts(kube))
        out[name] = {"latency_s": summary(lat), "seconds": round(window, 2), "bytes_last_response": len(r.content),
                     "apiserver_get_list_during_reads": d,
                     "apiserver_requests_per_read": round(sum(d.values()) / n_reads, 3)}
    return out


def side(name: str, args: argparse.Namespace, kube) -> dict:
    ns = "side-" + name.replace("_", "-")
    ensure_namespace(kube, ns)
    if name == "original":
        svc = Original(args.original_bin, ns)
        api = Lean(svc.base_url, 20, headers={"X-API-Key": svc.api_key})
        t0 = time.perf_counter()
        wait_for(lambda: _healthy(api), 60, desc="the original's /health")
        ready = time.perf_counter() - t0
    else:
        svc, api, ready = start_ours(ns)
    try:
        log(f"{name}: ready after {ready:.1f} s; {args.runtimes} x /start")
        made, fill_s = fill(api, args.runtimes, ns)
        wait_for(lambda: running_pods(kube, ns) == args.runtimes, 600, interval=2,
                 desc=f"{args.runtimes} Running pods in {ns}")
        time.sleep(5)  # the services' caches take the last status changes
        out = {"ready_s": round(ready, 2), "fill_s": round(fill_s, 1), "runtimes": len(made),
               **reads(api, kube, made, args.reads, args.batch_ids)}
        out["vm_mib_after_reads"] = memory(svc.proc.pid)
        idle, secs = traffic_window(kube, args.idle)
        out["idle_apiserver_requests"] = idle
        out["idle_window_s"] = round(secs, 1)
        out["idle_apiserver_requests_per_min"] = round(sum(idle.values()) * 60 / secs, 1)
        log(f"{name}: /list p50 {out['list']['latency_s']['p50'] * 1e3:.2f} ms "
            f"({out['list']['bytes_last_response']} B), /runtime/{{id}} p50 "
            f"{out['get']['latency_s']['p50'] * 1e3:.2f} ms, /sessions/batch p50 "
            f"{out['batch']['latency_s']['p50'] * 1e3:.2f} ms, VmRSS {out['vm_mib_after_reads']['VmRSS']} MiB")
        return out
    finally:
        svc.stop()
        delete_namespace(kube, ns, 900)


def _healthy(api: Lean) -> bool:
    try:
        return api.get("/health").status_code == 200
    except OSError:
        return False


def table(res: dict) -> str:
    o, u = res["original"], res["runtime_api"]

    def lat(s: dict, key: str) -> str:
        x = s[key]["latency_s"]
        return f"{x['p50'] * 1e3:.2f} / {x['p99'] * 1e3:.2f} ms"

    rows = [("`GET /list` p50 / p99", lat(o, "list"), lat(u, "list")),
            ("`GET /list` bytes", f"{o['list']['bytes_last_response']:,}", f"{u['list']['bytes_last_response']:,}"),
            ("`GET /runtime/{id}` p50 / p99", lat(o, "get"), lat(u, "get")),
            ("`GET /sessions/batch` (100 ids) p50 / p99", lat(o, "batch"), lat(u, "batch"))]
    for k in ("list", "get", "batch"):
        rows.append((f"API-server GET/LIST per `{k}` read", str(o[k]["apiserver_requests_per_read"]),
                     str(u[k]["apiserver_requests_per_read"])))
    rows += [("VmRSS after the reads", f"{o['vm_mib_after_reads']['VmRSS']} MiB", f"{u['vm_mib_after_reads']['VmRSS']} MiB"),
             ("idle API-server requests per minute (all clients)", str(o["idle_apiserver_requests_per_min"]),
              str(u["idle_apiserver_requests_per_min"])),
             (f"{res['runtimes']} x `/start` at concurrency 20", f"{o['fill_s']} s", f"{u['fill_s']} s")]
    return ("| at {:,} runtimes | original (Go) | runtime-api |\n|---|---|---|\n".format(res["runtimes"])
            + "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows) + "\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runtimes", type=int, default=1000)
    p.add_argument("--reads", type=int, default=200)
    p.add_argument("--batch-ids", type=int, default=100)
    p.add_argument("--idle", type=float, default=60.0, help="seconds of the idle traffic window")
    p.add_argument("--original-bin", default=os.environ.get("ORIGINAL_BIN"))
    p.add_argument("--out", default=str(HERE / "results" / "original.json"))
    args = p.parse_args()
    if not args.original_bin or not os.access(args.original_bin, os.X_OK):
        sys.exit("--original-bin (or ORIGINAL_BIN): the original service's binary, built as the module doc says")
    kube, _, _ = kubeconfig_client(os.environ["KUBECONFIG"], 4)
    res = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "runtimes": args.runtimes, "reads": args.reads,
           "original": side("original", args, kube), "runtime_api": side("runtime_api", args, kube)}
    res["table"] = table(res)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(res["table"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
