"""The live service against its own OpenAPI document, with schemathesis (process backend, the
stand-in agent): every operation gets a bounded number of generated requests, valid and not,
and every response must be a non-5xx that matches the document (status, content type, headers,
body schema). Left out: `/build` and `/build_status` (501 by design) and `/openapi.json` itself
(checked against the router in src/api/tests.rs).

Run:  eval "$(scripts/python.sh)" && pytest tests/e2e/test_openapi.py
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx

# Per operation and phase; the whole run stays under a minute on two cores.
MAX_EXAMPLES = 25
LEFT_OUT = ["/build", "/build_status", "/openapi.json"]
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
]


def test_every_response_matches_the_document_and_none_is_a_server_error(stand_in_service, tmp_path):
    base, key = stand_in_service
    doc = httpx.get(f"{base}/openapi.json").json()  # no key needed
    assert doc["openapi"].startswith("3.1")
    operations = sum(len(item) for path, item in doc["paths"].items() if path not in LEFT_OUT)
    cmd = [
        str(Path(sys.executable).parent / "schemathesis"), "run", f"{base}/openapi.json",
        "--header", f"X-API-Key: {key}",
        "--checks", ",".join(CHECKS),
        "--max-examples", str(MAX_EXAMPLES),
        "--phases", "examples,coverage,fuzzing",
        "--seed", "11",
        "--workers", "1",
        "--request-timeout", "30",
    ]
    for path in LEFT_OUT:
        cmd += ["--exclude-path", path]
    # In a scratch directory: schemathesis keeps a cache (.schemathesis/) where it runs.
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    out = re.sub(r"\x1b\[[0-9;]*m", "", run.stdout + run.stderr)  # colours, if any
    print(out)
    assert run.returncode == 0, f"schemathesis found failures (exit {run.returncode}):\n{out[-8000:]}"
    # Every operation of the document was exercised (a filter or a schema error cannot hide one).
    tested = re.search(r"Tested:\s+(\d+)", out)
    assert tested and int(tested.group(1)) == operations, out[-3000:]
    # The service lived through it.
    assert httpx.get(f"{base}/health").status_code == 200
