#!/usr/bin/env python3
"""Warm pool vs cold start on the Kubernetes backend, against kwok nodes.

  eval "$(CLUSTER_REAL_NODE=0 CLUSTER_POD_CIDR=127.1.0.1/16 scripts/cluster.sh up)"
  eval "$(scripts/python.sh)" && python bench/kpool.py [--runs 20] [--pool 2]

kwok pods run nothing, so this measures the control plane's part only: POST /start -> GET
/runtime/{id} says `running` (polled every 10 ms). Warm runs use the SDK shape of the pool (each
waits until the pool is full again first, so it measures the claim, not the refill): the claim's
patch, the init Secret read, POST /api/init, the record, Secret, owner and Service writes. Cold
runs send the same request with resource_factor 2 (no pool): the five objects' creation and kwok
marking the pod Ready. The pods' addresses must be loopback (the CLUSTER_POD_CIDR above): a
stand-in here, on 0.0.0.0:<agent port>, answers every member's /api/init at once. What neither
includes is the agent server's own start, which a warm member has already done: the real node's
figure (bench/real_node.py). Warm and cold alternate. Prints p50/p95, writes results/kpool.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stats import summary  # noqa: E402

from runtime_api_support.service import (  # noqa: E402
    Service, new_state_dir, start_payload, wait_for,
)

HERE = Path(__file__).resolve().parent
IMAGE = "ghcr.io/openhands/agent-server:1.58.2-python"


class InitStandIn(BaseHTTPRequestHandler):
    """Every member's /api/init: the local address of a connection is the pod IP dialled."""

    initialised: set[str] = set()

    def log_message(self, *args) -> None:  # quiet
        pass

    def answer(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        ip = self.connection.getsockname()[0]
        self.answer({"state": "ready" if ip in self.initialised else "dormant"})

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.initialised.add(self.connection.getsockname()[0])
        self.answer({"state": "ready"})


def pool_ready(base_url: str) -> float:
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("runtime_api_pool_ready{") and 'pool="default"' in line)


def one_run(api: httpx.Client, warm: bool) -> tuple[float, float]:
    body = start_payload(f"bench-kpool-{uuid.uuid4().hex[:12]}", image=IMAGE,
                         environment={"BENCH_VAR": "x"})
    if not warm:
        body["resource_factor"] = 2
    t0 = time.perf_counter()
    r = api.post("/start", json=body)
    t_resp = time.perf_counter() - t0
    r.raise_for_status()
    rid = r.json()["runtime_id"]
    while api.get(f"/runtime/{rid}").json().get("status") != "running":
        time.sleep(0.01)
    t_running = time.perf_counter() - t0
    api.post("/stop", json={"runtime_id": rid}).raise_for_status()
    return t_resp, t_running


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--pool", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "kpool.json"))
    args = ap.parse_args()
    if not os.environ.get("KUBECONFIG"):
        sys.exit("KUBECONFIG is not set: bring up a cluster as the docstring says")

    server = ThreadingHTTPServer(("0.0.0.0", 0), InitStandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    agent_port = server.server_address[1]
    namespace = f"bench-kpool-{uuid.uuid4().hex[:8]}"
    subprocess.run(["kubectl", "create", "namespace", namespace], check=True, capture_output=True)
    state_dir = new_state_dir("kpool")
    svc = Service(state_dir, extra_env={
        "BACKEND": "kubernetes", "NAMESPACE": namespace, "BASE_DOMAIN": "sandbox.test",
        "DEFAULT_IMAGE": IMAGE, "WARM_POOL_SIZE": str(args.pool),
        "AGENT_SERVER_PORT": str(agent_port), "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }, log_path=state_dir / "service.log")
    try:
        svc.start()
        headers = {"X-API-Key": svc.api_key}
        with httpx.Client(base_url=svc.base_url, headers=headers, timeout=60) as api:
            wait_for(lambda: api.get("/readyz").status_code == 200, 60, desc="the service ready")
            results: dict[str, dict[str, list[float]]] = {
                "warm": {"response": [], "running": []}, "cold": {"response": [], "running": []}}
            for i in range(args.runs * 2):
                warm = i % 2 == 0
                if warm:
                    wait_for(lambda: pool_ready(svc.base_url) >= args.pool, 120, interval=0.05,
                             desc="the pool full")
                resp, running = one_run(api, warm)
                kind = "warm" if warm else "cold"
                results[kind]["response"].append(resp)
                results[kind]["running"].append(running)
            text = httpx.get(f"{svc.base_url}/metrics", timeout=10).text
            hits = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("runtime_api_pool_claims_total{") and 'outcome="hit"' in line)
            if hits != args.runs:
                raise SystemExit(f"{hits} warm claims for {args.runs} warm runs:\n{svc.log_tail()}")
    finally:
        svc.stop()
        subprocess.run(["kubectl", "delete", "namespace", namespace, "--wait=false"], capture_output=True)
        server.shutdown()
        shutil.rmtree(state_dir.parent, ignore_errors=True)

    report = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "what": "POST /start response and -> status running, kwok nodes, warm (pool) vs cold",
        "runs": args.runs, "pool": args.pool,
        **{kind: {k: summary(v) for k, v in r.items()} for kind, r in results.items()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    for kind in ("warm", "cold"):
        for k in ("response", "running"):
            s = report[kind][k]
            print(f"{kind:4} /start -> {k:8}: p50 {s['p50'] * 1000:7.1f} ms  p95 {s['p95'] * 1000:7.1f} ms  (n={s['n']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
