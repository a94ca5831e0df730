"""Fixtures: a real runtime-api service (process backend) running real OpenHands agent servers.

Run:  eval "$(scripts/python.sh)" && pytest tests/e2e
Env:  RUNTIME_API_BIN (default target/debug/runtime-api), RUST_LOG, E2E_KEEP_STATE=1 keeps temp dirs.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from runtime_api_support.service import Service, become_subreaper, kill_tree, new_state_dir


def pytest_configure(config):
    # Orphaned agent servers (service died without killing them) get re-parented to us, so the
    # leak check at teardown finds them instead of losing them to init.
    become_subreaper()


def _start_service(extra_env: dict[str, str] | None = None) -> Service:
    svc = Service(state_dir=new_state_dir(), extra_env=extra_env or {})
    try:
        svc.start()
    except FileNotFoundError as e:
        pytest.fail(str(e), pytrace=False)
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"could not start runtime-api: {e}", pytrace=False)
    return svc


def _stop_remaining_runtimes(svc: Service) -> list[str]:
    """The service keeps agent servers running across its own restart (it re-adopts them), so
    runtimes a failed test left behind are stopped through the API before the service is."""
    left: list[str] = []
    try:
        with svc.client(timeout=30) as api:
            for rt in api.get("/list", params={"status": "all"}).json().get("runtimes", []):
                if str(rt.get("status", "")).lower() != "stopped":
                    left.append(f"{rt.get('runtime_id')} ({rt.get('session_id')}, {rt.get('status')})")
                    api.post("/stop", json={"runtime_id": rt["runtime_id"]})
    except Exception as e:  # noqa: BLE001 - the leak check below still runs
        left.append(f"(could not list/stop remaining runtimes: {e!r})")
    return left


def _stop_and_check(svc: Service) -> None:
    svc.note_agents()
    remaining = _stop_remaining_runtimes(svc)
    if remaining:
        print(f"\n[e2e] stopped runtimes left by tests on {svc.base_url}: {remaining}")
    code = svc.stop()
    leftovers = svc.leftover_agents()
    kill_tree([p for p, _ in leftovers])
    log_tail = svc.log_tail(40)
    if os.environ.get("E2E_KEEP_STATE") != "1":
        shutil.rmtree(svc.state_dir.parent, ignore_errors=True)
    assert not leftovers, (
        f"agent-server processes left running after runtime-api stopped (exit code {code}): "
        f"{leftovers}\nservice log tail:\n{log_tail}")


@pytest.fixture(scope="session")
def service():
    """The runtime-api under test. Unpacks as (base_url, api_key); also has .state_dir,
    .proc, .client(), .note_agents(). At teardown: SIGTERM (then SIGKILL), and asserts that no
    agent-server process it started is left."""
    svc = _start_service()
    yield svc
    _stop_and_check(svc)


@pytest.fixture(autouse=True)
def _track_agents(request):
    """After each test, record agent-server pids under the session service (leak check)."""
    yield
    if "service" in request.fixturenames:
        request.getfixturevalue("service").note_agents()


@pytest.fixture(scope="module")
def failing_service():
    """A second instance whose agent command exits at once with code 3."""
    # `{port}` is passed as $1 to the script and ignored, in case the service requires the placeholder.
    svc = _start_service({"PROCESS_AGENT_COMMAND": "sh -c 'exit 3' agent {port}"})
    yield svc
    _stop_and_check(svc)


@pytest.fixture
def api(service):
    with service.client() as c:
        yield c


@pytest.fixture(scope="module")
def stand_in_service():
    """An instance whose agents are the cheap stand-in of the Rust tests (tests/support), for
    tests that start many runtimes and need only the service's side of the contract."""
    stand_in = Path(__file__).resolve().parents[1] / "support" / "stand_in_agent.py"
    svc = _start_service({"PROCESS_AGENT_COMMAND": f"{sys.executable} {stand_in} --port {{port}}"})
    yield svc
    _stop_and_check(svc)
