#!/usr/bin/env python3
"""Figures of the sandbox gateway (ROUTING_MODE=gateway), each next to its reference in the same run.

  eval "$(scripts/python.sh)" && python bench/gateway.py [--requests 1000] [--wakes 3] [--kube]

  1. small request (GET /alive of the stand-in agent, keep-alive client): p50/p99 direct to the
     agent's port and through the gateway, interleaved;
  2. 100 MB download: throughput direct and through the gateway (median of 3);
  3. WebSocket message round trip (32 bytes, the stand-in's echo): p50/p99 direct and through;
  4. wake latency on the process backend with the real openhands-agent-server: pause, then one
     GET through the gateway until it answers (median of --wakes), next to the agent's cold start
     measured directly;
  5. with --kube (KUBECONFIG of a test cluster, e.g. `eval "$(scripts/cluster.sh up)"`): objects
     created per /start in gateway mode and in subdomain (Ingress) mode, counted in the cluster.
Prints a summary and writes bench/results/gateway.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
from websockets.sync.client import connect as ws_connect

from runtime_api_support.service import (
    REPO_ROOT, Service, become_subreaper, free_port, new_state_dir, start_payload, wait_for,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from process_backend import direct_cold_start  # noqa: E402

HERE = Path(__file__).resolve().parent
STAND_IN = REPO_ROOT / "tests" / "support" / "stand_in_agent.py"
MB100 = 100 * 1024 * 1024


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def gateway_service(agent_command: str | None) -> tuple[Service, int]:
    port = free_port()
    env = {"ROUTING_MODE": "gateway", "GATEWAY_PORT": str(port),
           "GATEWAY_URL": f"http://127.0.0.1:{port}", "RUNTIME_IDLE_SECONDS": "0"}
    if agent_command:
        env["PROCESS_AGENT_COMMAND"] = agent_command
    return Service(state_dir=new_state_dir("runtime-api-bench-gw-"), extra_env=env).start(), port


def stop_all(svc: Service) -> None:
    """Stops every runtime of `svc` (agent servers outlive the service on purpose)."""
    try:
        with svc.client(timeout=60) as api:
            for rt in api.get("/list", params={"status": "all"}).json()["runtimes"]:
                api.post("/stop", json={"runtime_id": rt["runtime_id"]})
    finally:
        svc.stop()


def started(svc: Service, api: httpx.Client) -> tuple[str, int]:
    """A running runtime's id and its agent's own port (from its record)."""
    body = api.post("/start", json=start_payload(f"bench-gw-{time.time_ns()}")).json()
    rid = body["runtime_id"]
    wait_for(lambda: api.get(f"/runtime/{rid}").json()["status"] == "running", 180, desc="running")
    record = json.loads((svc.state_dir / "runtimes" / rid / "record.json").read_text())
    return rid, record["ports"]["agent"]


def latency(urls: dict[str, str], n: int) -> dict:
    times: dict[str, list[float]] = {k: [] for k in urls}
    with httpx.Client(timeout=30) as c:
        for url in urls.values():
            for _ in range(20):
                c.get(url).raise_for_status()  # warm the connections
        for _ in range(n):
            for name, url in urls.items():
                t0 = time.perf_counter()
                c.get(url).raise_for_status()
                times[name].append(time.perf_counter() - t0)
    return {k: {"p50_ms": pct(v, 0.5) * 1e3, "p99_ms": pct(v, 0.99) * 1e3} for k, v in times.items()}


def throughput(urls: dict[str, str], runs: int = 3) -> dict:
    out: dict[str, list[float]] = {k: [] for k in urls}
    with httpx.Client(timeout=120) as c:
        for _ in range(runs):
            for name, url in urls.items():
                t0 = time.perf_counter()
                got = 0
                with c.stream("GET", url) as r:
                    for chunk in r.iter_raw(1 << 20):
                        got += len(chunk)
                assert got == MB100, got
                out[name].append(MB100 / (time.perf_counter() - t0) / 1e6)
    return {k: {"median_MB_s": statistics.median(v), "runs_MB_s": v} for k, v in out.items()}


def websocket_rtt(urls: dict[str, str], n: int) -> dict:
    out = {}
    for name, url in urls.items():
        times = []
        with ws_connect(url) as ws:
            for i in range(n + 20):
                t0 = time.perf_counter()
                ws.send(f"ping-{i:027d}")
                assert ws.recv() == f"ping-{i:027d}"
                if i >= 20:
                    times.append(time.perf_counter() - t0)
        out[name] = {"p50_ms": pct(times, 0.5) * 1e3, "p99_ms": pct(times, 0.99) * 1e3}
    return out


def wake_latency(wakes: int) -> dict:
    svc, port = gateway_service(None)
    try:
        with svc.client(timeout=60) as api, httpx.Client(timeout=300) as c:
            rid, _ = started(svc, api)
            times = []
            for i in range(wakes):
                api.post("/pause", json={"runtime_id": rid}).raise_for_status()
                t0 = time.perf_counter()
                c.get(f"http://127.0.0.1:{port}/{rid}/alive").raise_for_status()
                times.append(time.perf_counter() - t0)
                print(f"  wake {i + 1}: {times[-1]:.2f} s", file=sys.stderr)
        return {"median_s": statistics.median(times), "runs_s": times}
    finally:
        stop_all(svc)


def kube_objects() -> dict:
    """Objects one /start creates, by kind, in gateway and in subdomain mode."""
    kinds = "configmaps,secrets,pods,services,ingresses.networking.k8s.io,networkpolicies.networking.k8s.io"
    out = {}
    for mode in ("subdomain", "gateway"):
        ns = f"bench-gw-{mode}-{os.getpid()}"
        subprocess.run(["kubectl", "create", "namespace", ns], check=True, capture_output=True)
        svc = Service(state_dir=new_state_dir("runtime-api-bench-gwk-"), extra_env={
            "BACKEND": "kubernetes", "NAMESPACE": ns, "ROUTING_MODE": mode,
            "GATEWAY_PORT": str(free_port()), "RUNTIME_IDLE_SECONDS": "0"}).start()
        try:
            with svc.client(timeout=60) as api:
                wait_for(lambda: api.get("/readyz").status_code == 200, 30, desc="readyz")
                rid = api.post("/start", json=start_payload(f"bench-{mode}")).json()["runtime_id"]
                listed = subprocess.run(
                    ["kubectl", "get", kinds, "-n", ns, "-l", f"runtime-api.openhands.dev/runtime-id={rid}",
                     "-o", "jsonpath={range .items[*]}{.kind}{\"\\n\"}{end}"],
                    check=True, capture_output=True, text=True).stdout.split()
                out[mode] = {"objects": len(listed), "kinds": sorted(listed)}
        finally:
            stop_all(svc)
            subprocess.run(["kubectl", "delete", "namespace", ns, "--wait=false"], capture_output=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--wakes", type=int, default=3)
    p.add_argument("--kube", action="store_true")
    args = p.parse_args()
    become_subreaper()
    results: dict = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "loadavg_1m_start": os.getloadavg()[0]}
    svc, port = gateway_service(f"python3 {STAND_IN} --port {{port}}")
    try:
        with svc.client(timeout=60) as api:
            rid, agent_port = started(svc, api)
            direct, through = f"127.0.0.1:{agent_port}", f"127.0.0.1:{port}/{rid}"
            print("small requests...", file=sys.stderr)
            results["small_request"] = latency(
                {"direct": f"http://{direct}/alive", "gateway": f"http://{through}/alive"}, args.requests)
            print("100 MB downloads...", file=sys.stderr)
            results["download_100MB"] = throughput(
                {"direct": f"http://{direct}/bytes?n={MB100}", "gateway": f"http://{through}/bytes?n={MB100}"})
            print("WebSocket round trips...", file=sys.stderr)
            results["websocket_rtt"] = websocket_rtt(
                {"direct": f"ws://{direct}/ws", "gateway": f"ws://{through}/ws"}, args.requests)
    finally:
        stop_all(svc)
    print("wake latency (real agent server)...", file=sys.stderr)
    results["wake_process_backend"] = wake_latency(args.wakes)
    results["agent_cold_start_direct"] = {"median_s": statistics.median(direct_cold_start(args.wakes))}
    if args.kube:
        results["objects_per_start"] = kube_objects()
    results["loadavg_1m_end"] = os.getloadavg()[0]
    out = HERE / "results" / "gateway.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    s, d, w = results["small_request"], results["download_100MB"], results["websocket_rtt"]
    print(f"small request p50/p99: direct {s['direct']['p50_ms']:.2f}/{s['direct']['p99_ms']:.2f} ms, "
          f"gateway {s['gateway']['p50_ms']:.2f}/{s['gateway']['p99_ms']:.2f} ms")
    print(f"100 MB download: direct {d['direct']['median_MB_s']:.0f} MB/s, gateway {d['gateway']['median_MB_s']:.0f} MB/s")
    print(f"WebSocket RTT p50/p99: direct {w['direct']['p50_ms']:.3f}/{w['direct']['p99_ms']:.3f} ms, "
          f"gateway {w['gateway']['p50_ms']:.3f}/{w['gateway']['p99_ms']:.3f} ms")
    print(f"wake (paused -> first answer): {results['wake_process_backend']['median_s']:.2f} s; "
          f"agent cold start direct: {results['agent_cold_start_direct']['median_s']:.2f} s")
    if "objects_per_start" in results:
        o = results["objects_per_start"]
        print(f"objects per /start: subdomain {o['subdomain']['objects']}, gateway {o['gateway']['objects']}")
    print(f"written to {out.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
