"""End-to-end: warm pool members outlive a killed service and are removed by the next one.

A module of its own: the leak check after each service counts every agent server below pytest,
so it must not run while test_pool.py's module-scoped service still has its members."""

from __future__ import annotations

from conftest import _start_service, _stop_and_check
from runtime_api_support.service import wait_for
from test_pool import AGENT, FILL_TIMEOUT, IMAGE, _is_dormant, metric


def test_a_restarted_service_removes_the_members_of_the_one_that_died():
    """Members are not runtimes: a service killed with its members running leaves them to the
    next one, which stops them, removes their directories and starts its own."""
    from runtime_api_support.service import alive, reap_zombies
    svc = _start_service({"WARM_POOL_SIZE": "1", "DEFAULT_IMAGE": IMAGE, "PROCESS_AGENT_COMMAND": AGENT})
    try:
        base_url, _ = svc
        wait_for(lambda: metric(base_url, "runtime_api_pool_ready", 'pool="default"') == 1,
                 FILL_TIMEOUT, interval=0.5, desc="one ready member")
        old = [p for p in svc.note_agents() if _is_dormant(p)]
        assert len(old) == 1, old
        member_dirs = set((svc.state_dir / "runtimes").iterdir())
        assert len(member_dirs) == 1, member_dirs
        svc.proc.kill()
        svc.proc.wait(10)
        svc.start()
        wait_for(lambda: (reap_zombies(old), not any(alive(p) for p in old))[1], 30,
                 desc="the dead service's member to be stopped")
        assert not any(d.exists() for d in member_dirs), member_dirs
        wait_for(lambda: metric(base_url, "runtime_api_pool_ready", 'pool="default"') == 1,
                 FILL_TIMEOUT, interval=0.5, desc="the new service's member")
        with svc.client() as api:
            assert api.get("/list", params={"status": "all"}).json()["runtimes"] == []
    finally:
        _stop_and_check(svc)
