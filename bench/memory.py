#!/usr/bin/env python3
"""Resident memory of the Kubernetes backend: the instance that made N runtimes, and a fresh one.

  eval "$(CLUSTER_REAL_NODE=0 CLUSTER_NODES=3 CLUSTER_NODE_PODS=2500 scripts/cluster.sh up)"
  eval "$(scripts/python.sh)"
  RUNTIME_API_BIN=target/release/runtime-api python bench/memory.py fill 1000,5000
  RUNTIME_API_BIN=target/release/runtime-api python bench/memory.py fresh

`fill` starts one service instance (default maintenance interval, so its rounds run) and starts
runtimes through `POST /start` (20 at a time) up to each count in turn; at each count it reads
the instance's VmRSS and VmHWM (`/proc/<pid>/status`) after 20 `GET /list?status=all`, and again
after `--settle` seconds. `fresh` starts a new instance on the same namespace and reads the same
after its cache is ready. The figures vary from run to run by several MiB (the allocator's
fragmentation depends on the order of the fill's requests and watch events): compare runs, not
single figures. Prints one JSON object per measurement.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))

from kubernetes import COMMAND, IMAGE  # noqa: E402
from lean import Lean  # noqa: E402
from runtime_api_support.service import Service  # noqa: E402


def memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":")[0]
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(line.split()[1]) / 1024, 1)
    return out


def start(namespace: str) -> tuple[Service, Lean, float]:
    env = {
        "BACKEND": "kubernetes", "NAMESPACE": namespace, "KUBECONFIG": os.environ["KUBECONFIG"],
        "SANDBOX_CPU_REQUEST": "10m", "SANDBOX_MEMORY_REQUEST": "16Mi",
        "SANDBOX_CPU_LIMIT": "100m", "SANDBOX_MEMORY_LIMIT": "64Mi",
        "RUNTIME_IDLE_SECONDS": "0", "RUNTIME_DEAD_SECONDS": "0", "RUNTIME_FAILED_SECONDS": "0",
        "RUST_LOG": "warn",
    }
    svc = Service(state_dir=Path(tempfile.mkdtemp(prefix="bench-memory-")) / "state", extra_env=env)
    svc.start()
    api = Lean(svc.base_url, 20, headers={"X-API-Key": svc.api_key})
    t0 = time.perf_counter()
    while api.get("/readyz").status_code != 200:
        time.sleep(0.1)
    return svc, api, time.perf_counter() - t0


def total(api: Lean) -> int:
    return api.get("/list?status=all&limit=1").json()["total"]


def read_and_settle(svc: Service, api: Lean, settle: float) -> dict:
    for _ in range(20):
        api.get("/list?status=all")
    after_reads = memory(svc.proc.pid)
    time.sleep(settle)
    return {"after_reads": after_reads, "after_settle": memory(svc.proc.pid)}


def fill(args: argparse.Namespace) -> None:
    svc, api, _ = start(args.namespace)
    try:
        def one(i: int) -> None:
            body = {"image": IMAGE, "session_id": f"memory-{i}-{secrets.token_hex(4)}", "command": COMMAND}
            r = api.post("/start", json=body)
            if r.status_code not in (200, 201):
                raise RuntimeError(f"/start answered {r.status_code}: {r.text}")

        print(json.dumps({"runtimes": 0, "memory": memory(svc.proc.pid)}), flush=True)
        for count in map(int, args.counts.split(",")):
            have = total(api)
            t0 = time.perf_counter()
            with cf.ThreadPoolExecutor(20) as pool:
                list(pool.map(one, range(have, count)))
            seconds = round(time.perf_counter() - t0, 1)
            figures = read_and_settle(svc, api, args.settle)
            print(json.dumps({"runtimes": total(api), "fill_seconds": seconds, **figures}), flush=True)
    finally:
        svc.stop()


def fresh(args: argparse.Namespace) -> None:
    svc, api, ready = start(args.namespace)
    try:
        figures = read_and_settle(svc, api, args.settle)
        print(json.dumps({"fresh": True, "runtimes": total(api), "ready_seconds": round(ready, 1), **figures}))
    finally:
        svc.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["fill", "fresh"])
    p.add_argument("counts", nargs="?", default="1000,5000", help="fill: runtime counts, ascending")
    p.add_argument("--namespace", default="bench-memory", help="created if missing")
    p.add_argument("--settle", type=float, default=40.0, help="seconds to wait before the second read")
    args = p.parse_args()
    kube = Path(os.environ["KUBECONFIG"])
    if not kube.exists():
        sys.exit(f"KUBECONFIG {kube} does not exist: bring a cluster up first (see the module doc)")
    if subprocess.run(["kubectl", "get", "namespace", args.namespace], capture_output=True).returncode:
        subprocess.run(["kubectl", "create", "namespace", args.namespace], check=True, capture_output=True)
    if args.mode == "fill":
        fill(args)
    else:
        fresh(args)


if __name__ == "__main__":
    main()
