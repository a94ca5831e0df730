#!/usr/bin/env python3
"""Figures of issue 11 (hardening), on the process backend with the cheap stand-in agent
(tests/support/stand_in_agent.py):

  1. the /metrics page size before and after --odd-requests requests with odd methods and
     paths (label values come from fixed sets, so it must not grow with them), and the status
     classes those requests got;
  2. VmRSS of the runtime-api process at start and after each of --cycles cycles of
     --concurrency concurrent /start (until every runtime runs) then as many concurrent /stop.

  eval "$(scripts/python.sh)" && cargo build && python bench/hardening.py [--cycles 6] [--concurrency 200]

Prints a summary and writes bench/results/hardening.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import httpx

from runtime_api_support.service import REPO_ROOT, Service, become_subreaper, new_state_dir, rss_kib

HERE = Path(__file__).resolve().parent
STAND_IN = REPO_ROOT / "tests" / "support" / "stand_in_agent.py"


def odd_request(rng: random.Random) -> tuple[str, str]:
    """A method token and a path no client of the API would send."""
    token = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ!#$%&'*+-.^_`|~0123456789") for _ in range(rng.randint(1, 12)))
    method = rng.choice([token, "GET", "POST", "DELETE", "PROPFIND"])
    path = rng.choice([
        f"/health/{rng.getrandbits(64):x}",
        f"/{rng.getrandbits(32):x}/{rng.getrandbits(32):x}",
        f"/runtime/{rng.getrandbits(128):x}",
        "/health",
        f"/sessions/%{rng.getrandbits(8):02x}%ff",
    ])
    return method, path


async def metrics_size(client: httpx.AsyncClient) -> int:
    return len((await client.get("/metrics")).content)


async def odd_requests(base: str, key: str, count: int) -> dict:
    rng = random.Random(11)
    classes: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        before = await metrics_size(client)
        sem = asyncio.Semaphore(50)

        async def one() -> None:
            method, path = odd_request(rng)
            async with sem:
                try:
                    r = await client.request(method, path, headers={"X-API-Key": key})
                    classes[f"{r.status_code // 100}xx"] += 1
                except httpx.HTTPError as e:
                    classes[type(e).__name__] += 1

        await asyncio.gather(*(one() for _ in range(count)))
        after = await metrics_size(client)
    return {"requests": count, "metrics_bytes_before": before, "metrics_bytes_after": after,
            "status_classes": dict(sorted(classes.items()))}


async def cycle(base: str, key: str, concurrency: int, index: int) -> float:
    """Starts `concurrency` runtimes at once, waits until all run, stops them all at once."""
    headers = {"X-API-Key": key}
    limits = httpx.Limits(max_connections=concurrency)
    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=base, timeout=120, headers=headers, limits=limits) as client:
        starts = await asyncio.gather(*(
            client.post("/start", json={"image": "ghcr.io/openhands/agent-server:bench",
                                        "session_id": f"hardening-{index}-{i}"})
            for i in range(concurrency)))
        bad = [r.text for r in starts if r.status_code != 200]
        if bad:
            raise RuntimeError(f"{len(bad)} starts failed, e.g. {bad[0]}")
        ids = [r.json()["runtime_id"] for r in starts]
        deadline = time.monotonic() + 300
        while True:
            listed = (await client.get("/list", params={"status": "all"})).json()["runtimes"]
            running = sum(1 for r in listed if r["status"] == "running")
            if running == concurrency:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {running} of {concurrency} runtimes ran")
            await asyncio.sleep(0.5)
        stops = await asyncio.gather(*(client.post("/stop", json={"runtime_id": i}) for i in ids))
        bad = [r.text for r in stops if r.status_code != 200]
        if bad:
            raise RuntimeError(f"{len(bad)} stops failed, e.g. {bad[0]}")
        left = (await client.get("/list", params={"status": "all"})).json()["total"]
        if left:
            raise RuntimeError(f"{left} runtimes listed after stopping them all")
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--odd-requests", type=int, default=10_000)
    args = parser.parse_args()
    become_subreaper()
    state = new_state_dir("runtime-api-hardening-")
    svc = Service(state_dir=state, extra_env={
        "PROCESS_AGENT_COMMAND": f"{sys.executable} {STAND_IN} --port {{port}}",
        "RUST_LOG": "warn",
    }).start()
    base, key = svc
    try:
        metrics = asyncio.run(odd_requests(base, key, args.odd_requests))
        print(f"/metrics: {metrics['metrics_bytes_before']} bytes before, "
              f"{metrics['metrics_bytes_after']} after {args.odd_requests} odd requests "
              f"(status classes {metrics['status_classes']})")
        rss = [rss_kib(svc.proc.pid)]
        print(f"RSS at start (after the odd requests): {rss[0]} KiB")
        seconds = []
        for i in range(args.cycles):
            seconds.append(asyncio.run(cycle(base, key, args.concurrency, i)))
            time.sleep(1)
            rss.append(rss_kib(svc.proc.pid))
            print(f"cycle {i + 1}: {args.concurrency} starts + stops in {seconds[-1]:.1f} s, RSS {rss[-1]} KiB")
    finally:
        code = svc.stop()
        shutil.rmtree(state.parent, ignore_errors=True)
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": f"python bench/hardening.py --cycles {args.cycles} --concurrency {args.concurrency} "
                   f"--odd-requests {args.odd_requests}",
        "metrics": metrics,
        "rss_kib": {"start": rss[0], "after_each_cycle": rss[1:]},
        "cycle_seconds": [round(s, 1) for s in seconds],
        "service_exit_code": code,
    }
    out = HERE / "results" / "hardening.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
