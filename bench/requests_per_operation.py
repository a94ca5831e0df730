"""Kubernetes API write requests per runtime operation, from the service's own counter
(`runtime_api_kube_requests_total`); reads are checked to cost none.

Run against a service with BACKEND=kubernetes (maintenance off, so the sweep adds nothing):
    python bench/requests_per_operation.py --base-url http://127.0.0.1:8080 --api-key "$API_KEY"
Each operation also records one Kubernetes Event, asynchronously; that request is not counted here.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request
import uuid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("-n", type=int, default=20, help="runtimes per operation")
    args = parser.parse_args()
    base = args.base_url.rstrip("/")

    def call(method: str, path: str, body: dict | None = None):
        req = urllib.request.Request(base + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"X-API-Key": args.api_key, "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read() or b"null")

    def writes() -> float:
        with urllib.request.urlopen(base + "/metrics", timeout=30) as resp:
            text = resp.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("runtime_api_kube_requests_total{"))

    prefix = f"reqs-{uuid.uuid4().hex[:8]}"
    n = args.n
    figures = {}
    before = writes()
    ids = [call("POST", "/start", {"image": "img", "session_id": f"{prefix}-{i}"})["runtime_id"] for i in range(n)]
    figures["start"] = (writes() - before) / n
    before = writes()
    reads = 0
    for i in range(3 * n):
        call("GET", "/list?status=all")
        call("GET", f"/sessions/{prefix}-{i % n}")
        call("GET", f"/runtime/{ids[i % n]}")
        reads += 3
    figures["read"] = (writes() - before) / reads
    time.sleep(1)
    for op in ("pause", "resume", "stop"):
        before = writes()
        for runtime_id in ids:
            call("POST", f"/{op}", {"runtime_id": runtime_id})
        figures[op] = (writes() - before) / n
    print(json.dumps({"kube_write_requests_per_operation": figures, "runtimes": n}, indent=2))
    if figures["read"] != 0:
        raise SystemExit(f"reads made {figures['read']} API requests each")


if __name__ == "__main__":
    main()
