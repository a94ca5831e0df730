#!/usr/bin/env python3
"""Benchmark of runtime-api's process backend with the real openhands-agent-server.

  eval "$(scripts/python.sh)" && python bench/process_backend.py [--runs 5] [--runtimes 20]

Measures
  1. agent server cold start measured directly: spawn `openhands-agent-server --host 127.0.0.1
     --port P` (SESSION_API_KEY set) and time until GET /alive answers (median of --runs);
  2. POST /start -> GET {url}/alive answering through the service (sequential, --runs), and the
     ratio of the medians (service overhead on top of the agent server's own start);
  3. VmRSS of the runtime-api process with 0 and with --runtimes runtimes running.
Prints a summary and writes bench/results/process_backend.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

from runtime_api_support.service import (
    REPO_ROOT, Service, become_subreaper, binary_path, free_port, kill_tree, new_state_dir,
    rss_kib, start_payload, url_answers, url_refuses, venv_bin, wait_for,
)

HERE = Path(__file__).resolve().parent
POLL = 0.02  # seconds between /alive polls


def _repo_relative(path) -> str:
    """The binary's path relative to the repository when inside it (no machine paths in results)."""
    root = Path(__file__).resolve().parent.parent
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return str(path)

def poll_alive(url: str, deadline_s: float, proc: subprocess.Popen | None = None) -> float:
    """Seconds (perf_counter) at which url/alive first answered 200."""
    end = time.perf_counter() + deadline_s
    with httpx.Client(timeout=2.0) as c:
        while time.perf_counter() < end:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"agent server exited with {proc.returncode}")
            try:
                if c.get(url + "/alive").status_code == 200:
                    return time.perf_counter()
            except httpx.HTTPError:
                pass
            time.sleep(POLL)
    raise TimeoutError(f"{url}/alive did not answer within {deadline_s}s")


def agent_exe() -> str:
    exe = shutil.which("openhands-agent-server", path=f"{venv_bin()}{os.pathsep}{os.environ['PATH']}")
    if not exe:
        raise SystemExit("openhands-agent-server not on PATH (eval \"$(scripts/python.sh)\")")
    return exe


def direct_cold_start(runs: int, label: int = 0) -> list[float]:
    exe = agent_exe()
    times = []
    for i in range(label, label + runs):
        port = free_port()
        work = Path(tempfile.mkdtemp(prefix="agent-direct-"))
        env = dict(os.environ, SESSION_API_KEY=secrets.token_urlsafe(32))
        log = open(work / "agent.log", "wb")
        t0 = time.perf_counter()
        proc = subprocess.Popen([exe, "--host", "127.0.0.1", "--port", str(port)], cwd=work, env=env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            t1 = poll_alive(f"http://127.0.0.1:{port}", 120, proc)
            times.append(t1 - t0)
            print(f"  direct run {i + 1}: {t1 - t0:.2f} s", file=sys.stderr)
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
            shutil.rmtree(work, ignore_errors=True)
    return times


def service_start_to_alive(svc: Service, runs: int, label: int = 0) -> list[dict]:
    out = []
    with svc.client() as api:
        for i in range(label, label + runs):
            sid = f"bench-{secrets.token_hex(8)}"
            t0 = time.perf_counter()
            r = api.post("/start", json=start_payload(sid))
            t_resp = time.perf_counter()
            r.raise_for_status()
            body = r.json()
            t1 = poll_alive(body["url"], 120)
            # and when the service itself reports running/ready
            wait_for(lambda: api.get(f"/sessions/{sid}").json()["status"].lower() == "running", 60,
                     interval=POLL, desc="status running")
            t2 = time.perf_counter()
            out.append({"start_to_alive_s": t1 - t0, "start_response_s": t_resp - t0,
                        "start_to_status_running_s": t2 - t0, "loadavg_1m": os.getloadavg()[0]})
            print(f"  service run {i + 1}: /start->/alive {t1 - t0:.2f} s (response {t_resp - t0:.3f} s, "
                  f"status running {t2 - t0:.2f} s)", file=sys.stderr)
            api.post("/stop", json={"runtime_id": body["runtime_id"]}).raise_for_status()
            wait_for(lambda: url_refuses(body["url"]), 30, desc="agent gone after stop")
    return out


def memory_with_runtimes(svc: Service, n: int) -> dict:
    pid = svc.proc.pid
    time.sleep(1)
    idle = rss_kib(pid)
    runtime_ids, urls = [], []
    t0 = time.perf_counter()
    with svc.client(timeout=120) as api:
        for i in range(n):
            r = api.post("/start", json=start_payload(f"bench-mem-{i}-{secrets.token_hex(4)}"))
            r.raise_for_status()
            runtime_ids.append(r.json()["runtime_id"])
            urls.append(r.json()["url"])
        wait_for(lambda: all(url_answers(u) for u in urls), 600, interval=1,
                 desc=f"{n} agent servers answering /alive")
        t_all = time.perf_counter() - t0
        wait_for(lambda: sum(rt["status"].lower() == "running" for rt in api.get("/list").json()["runtimes"]) >= n,
                 120, interval=0.5, desc=f"{n} runtimes running in /list")
        time.sleep(2)
        loaded = rss_kib(pid)
        agents = svc.note_agents()
        agent_rss = sum(rss_kib(p) for p in agents if os.path.exists(f"/proc/{p}"))
        for rid in runtime_ids:
            api.post("/stop", json={"runtime_id": rid}).raise_for_status()
        wait_for(lambda: all(url_refuses(u) for u in urls), 60, interval=0.5, desc="all agents gone")
        time.sleep(1)
        after = rss_kib(pid)
    return {"runtimes": n, "rss_kib_0_runtimes": idle, f"rss_kib_{n}_runtimes": loaded,
            "rss_kib_after_stopping_all": after, "seconds_until_all_alive": round(t_all, 2),
            "agent_servers_total_rss_kib": agent_rss, "agent_server_processes_seen": len(agents)}


def machine_info() -> dict:
    mem = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        k, v = line.split(":", 1)
        if k in ("MemTotal", "MemAvailable"):
            mem[k] = int(v.split()[0])
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    try:
        from importlib.metadata import version
        agent_version = version("openhands-agent-server")
    except Exception:  # noqa: BLE001
        agent_version = None
    try:
        commit = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip() or None
    except OSError:
        commit = None
    return {"cores": os.cpu_count(), "cpu_model": model,
            "mem_total_gib": round(mem.get("MemTotal", 0) / 1048576, 1),
            "mem_available_gib": round(mem.get("MemAvailable", 0) / 1048576, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "openhands_agent_server": agent_version, "runtime_api_bin": _repo_relative(binary_path()),
            "git_commit": commit, "loadavg_at_start": os.getloadavg()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--runtimes", type=int, default=20)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "process_backend.json")
    args = ap.parse_args()
    become_subreaper()

    result = {"benchmark": "process_backend", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": machine_info(),
              "method": "sequential runs, direct and via-service interleaved; /alive polled every 20 ms"}
    agent_exe()
    svc = Service(state_dir=new_state_dir("runtime-api-bench-"))
    svc.start()
    direct: list[float] = []
    via: list[dict] = []
    try:
        rss_fresh = rss_kib(svc.proc.pid)
        # Interleaved (direct, service, direct, ...) so that load from other work on the machine
        # hits both series alike.
        print("agent server cold start direct vs POST /start -> /alive through runtime-api, interleaved:",
              file=sys.stderr)
        for i in range(args.runs):
            direct += direct_cold_start(1, label=i)
            via += service_start_to_alive(svc, 1, label=i)
        print(f"memory with 0 and {args.runtimes} runtimes:", file=sys.stderr)
        mem = memory_with_runtimes(svc, args.runtimes)
        mem["rss_kib_fresh_service"] = rss_fresh
    finally:
        svc.stop()
        left = svc.leftover_agents()
        kill_tree([p for p, _ in left])
        shutil.rmtree(svc.state_dir.parent, ignore_errors=True)

    via_times = [r["start_to_alive_s"] for r in via]
    med_direct, med_via = statistics.median(direct), statistics.median(via_times)
    result.update({
        "agent_cold_start_direct_s": {"median": round(med_direct, 3), "runs": [round(t, 3) for t in direct]},
        "service_start_to_alive_s": {"median": round(med_via, 3), "runs": [round(t, 3) for t in via_times],
                                     "detail": [{k: round(v, 3) for k, v in r.items()} for r in via]},
        "ratio_service_over_direct": round(med_via / med_direct, 3),
        "memory": mem,
        "loadavg_at_end": os.getloadavg(),
        "leftover_agent_processes_after_service_stop": len(left),
    })
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    m = result["machine"]
    print(f"machine: {m['cores']} cores ({m['cpu_model']}), {m['mem_total_gib']} GiB RAM, "
          f"kernel {m['kernel']}, agent server {m['openhands_agent_server']}")
    print(f"agent server cold start (direct)     median {med_direct:6.2f} s  runs "
          + " ".join(f"{t:.2f}" for t in direct))
    print(f"POST /start -> /alive (runtime-api)  median {med_via:6.2f} s  runs "
          + " ".join(f"{t:.2f}" for t in via_times))
    print(f"ratio service/direct                 {result['ratio_service_over_direct']:.3f}")
    print(f"runtime-api VmRSS: fresh {mem['rss_kib_fresh_service'] / 1024:.1f} MiB, 0 runtimes "
          f"{mem['rss_kib_0_runtimes'] / 1024:.1f} MiB, {args.runtimes} runtimes "
          f"{mem[f'rss_kib_{args.runtimes}_runtimes'] / 1024:.1f} MiB, after stopping all "
          f"{mem['rss_kib_after_stopping_all'] / 1024:.1f} MiB")
    print(f"{args.runtimes} agent servers: {mem['agent_servers_total_rss_kib'] / 1024:.0f} MiB RSS in all, "
          f"all alive {mem['seconds_until_all_alive']:.1f} s after the first /start")
    if left:
        print(f"WARNING: {len(left)} agent processes left after runtime-api stopped: {left}")
    print(f"wrote {args.out}")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
