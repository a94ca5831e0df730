#!/usr/bin/env python3
"""Warm pool vs cold start on the process backend, with the real openhands-agent-server.

  eval "$(scripts/python.sh)" && python bench/pool.py [--runs 20] [--pool 2]

One service with WARM_POOL_SIZE=--pool of the SDK shape. Each run measures POST /start -> the
first command (POST {url}/api/bash/execute_bash_command with the session key) succeeding, polled
every 10 ms: warm runs use the pooled shape (each waits until the pool is full again first, so it
measures the claim, not the refill), cold runs the same request with resource_factor 2 (no pool).
Warm and cold alternate so machine load hits both alike. Prints p50/p95 and writes
bench/results/pool.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stats import summary  # noqa: E402

from runtime_api_support.service import (  # noqa: E402
    Service, become_subreaper, kill_tree, new_state_dir, start_payload, wait_for,
)

HERE = Path(__file__).resolve().parent
IMAGE = "ghcr.io/openhands/agent-server:1.58.2-python"
AGENT = "env LITELLM_LOCAL_MODEL_COST_MAP=True openhands-agent-server --host 127.0.0.1 --port {port}"


def pool_ready(base_url: str) -> float:
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("runtime_api_pool_ready{") and 'pool="default"' in line)


def one_run(api: httpx.Client, warm: bool) -> dict:
    body = start_payload(f"bench-pool-{uuid.uuid4().hex[:12]}", image=IMAGE,
                         environment={"BENCH_VAR": "x"})
    if not warm:
        body["resource_factor"] = 2
    t0 = time.perf_counter()
    r = api.post("/start", json=body)
    t_resp = time.perf_counter()
    r.raise_for_status()
    rt = r.json()
    headers = {"X-Session-API-Key": rt["session_api_key"]}
    with httpx.Client(timeout=10) as agent:
        while True:
            try:
                out = agent.post(f"{rt['url']}/api/bash/execute_bash_command",
                                 json={"command": "echo $BENCH_VAR"}, headers=headers)
                if out.status_code == 200 and out.json().get("stdout", "").strip() == "x":
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - t0 > 300:
                raise TimeoutError("first command did not succeed within 300 s")
            time.sleep(0.01)
    t1 = time.perf_counter()
    api.post("/stop", json={"runtime_id": rt["runtime_id"]}).raise_for_status()
    return {"start_to_first_command_s": t1 - t0, "start_response_s": t_resp - t0,
            "status_at_response": rt["status"], "loadavg_1m": os.getloadavg()[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--pool", type=int, default=2)
    ap.add_argument("--cold-runs", type=int, default=None,
                    help="cold runs (default: --runs); the first ones alternate with warm runs")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "pool.json")
    args = ap.parse_args()
    become_subreaper()
    svc = Service(state_dir=new_state_dir("runtime-api-bench-pool-"),
                  extra_env={"WARM_POOL_SIZE": str(args.pool), "DEFAULT_IMAGE": IMAGE,
                             "PROCESS_AGENT_COMMAND": AGENT, "RUST_LOG": "warn"})
    svc.start()
    warm: list[dict] = []
    cold: list[dict] = []
    try:
        with svc.client(timeout=120) as api:
            cold_runs = args.runs if args.cold_runs is None else args.cold_runs
            for i in range(args.runs):
                wait_for(lambda: pool_ready(svc.base_url) >= args.pool, 600, interval=0.2,
                         desc="the pool to be full")
                w = one_run(api, warm=True)
                warm.append(w)
                line = (f"  run {i + 1}: warm {w['start_to_first_command_s'] * 1000:7.1f} ms "
                        f"(response {w['start_response_s'] * 1000:.1f} ms, {w['status_at_response']})")
                if i < cold_runs:
                    c = one_run(api, warm=False)
                    cold.append(c)
                    line += f"  cold {c['start_to_first_command_s']:6.2f} s"
                print(line, file=sys.stderr)
    finally:
        svc.stop()
        left = svc.leftover_agents()
        kill_tree([p for p, _ in left])
        shutil.rmtree(svc.state_dir.parent, ignore_errors=True)
    w_s = summary([r["start_to_first_command_s"] for r in warm])
    c_s = summary([r["start_to_first_command_s"] for r in cold])
    result = {"benchmark": "pool", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "cores": os.cpu_count(), "pool_size": args.pool,
              "method": "POST /start -> first command through url, warm (pooled shape, pool full) and cold "
                        "(resource_factor 2) alternating, polled every 10 ms",
              "warm_start_to_first_command_s": w_s, "cold_start_to_first_command_s": c_s,
              "warm_runs": warm, "cold_runs": cold, "leftover_agent_processes": len(left)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"warm: p50 {w_s['p50'] * 1000:.0f} ms, p95 {w_s['p95'] * 1000:.0f} ms (n={w_s['n']})")
    print(f"cold: p50 {c_s['p50']:.2f} s, p95 {c_s['p95']:.2f} s (n={c_s['n']})")
    print(f"agent processes left after the service stopped: {len(left)}")
    return 0 if not left else 1


if __name__ == "__main__":
    sys.exit(main())
