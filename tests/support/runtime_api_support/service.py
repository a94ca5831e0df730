"""Start and stop a real `runtime-api` process (process backend) for the e2e tests and bench.

Shared by tests/e2e/conftest.py and bench/process_backend.py. Standard library + httpx only.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import httpx

REPO_ROOT = Path(__file__).resolve().parents[3]
T = TypeVar("T")

PR_SET_CHILD_SUBREAPER = 36


def binary_path() -> Path:
    # absolute: the service runs in a directory of its own, where a relative path means nothing
    return Path(os.environ.get("RUNTIME_API_BIN") or REPO_ROOT / "target" / "debug" / "runtime-api").absolute()


def venv_bin() -> Path:
    """Directory holding this interpreter's console scripts (openhands-agent-server)."""
    return Path(sys.executable).parent  # do not resolve(): a venv's python is a symlink


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def become_subreaper() -> bool:
    """Make this process adopt orphaned descendants (Linux prctl), so agent servers that
    outlive the service can still be found as our descendants and are never lost to init."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def wait_for(predicate: Callable[[], T], timeout: float, interval: float = 0.25,
              desc: str = "condition") -> T:
    """Call predicate until it returns a truthy value; raise TimeoutError with the last
    value / exception after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = value
        except Exception as e:  # noqa: BLE001 - we report it on timeout
            last = e
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {desc}; last: {last!r}")
        time.sleep(interval)


# --- /proc helpers -------------------------------------------------------------------------------

def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def proc_stat(pid: int) -> tuple[int, str] | None:
    """(ppid, state) of pid, or None if it does not exist."""
    raw = _read(f"/proc/{pid}/stat")
    if not raw:
        return None
    rest = raw[raw.rfind(")") + 2:].split()
    return int(rest[1]), rest[0]


def cmdline(pid: int) -> str:
    return _read(f"/proc/{pid}/cmdline").replace("\0", " ").strip()


def alive(pid: int) -> bool:
    st = proc_stat(pid)
    return st is not None and st[1] not in ("Z", "X")


def descendants(root: int) -> list[int]:
    """Live (non-zombie) descendants of `root`, by walking /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = proc_stat(int(entry))
            if st is not None and st[1] not in ("Z", "X"):
                children.setdefault(st[0], []).append(int(entry))
    out, stack = [], [root]
    while stack:
        for c in children.get(stack.pop(), []):
            out.append(c)
            stack.append(c)
    return out


def agent_server_pids(root: int) -> list[int]:
    return [p for p in descendants(root) if "agent-server" in cmdline(p) or "agent_server" in cmdline(p)]


def pids_listening_on(port: int) -> list[int]:
    """Pids with a LISTEN socket on 127.0.0.1/0.0.0.0:port (from /proc/net/tcp{,6} + fds)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in _read(table).splitlines()[1:]:
            cols = line.split()
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    if not inodes:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{entry}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{entry}/fd/{fd}")
                    if link.startswith("socket:[") and link[8:-1] in inodes:
                        pids.append(int(entry))
                        break
    return pids


def rss_kib(pid: int) -> int:
    for line in _read(f"/proc/{pid}/status").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def reap_zombies(pids: list[int]) -> None:
    for p in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(p, os.WNOHANG)


def kill_tree(pids: list[int]) -> None:
    for p in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGKILL)


# --- the service -----------------------------------------------------------------------------

@dataclass
class Service:
    """A runtime-api process with the process backend, on a free local port."""

    state_dir: Path
    api_key: str = field(default_factory=lambda: "e2e-" + secrets.token_hex(16))
    port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    proc: subprocess.Popen | None = None
    # every agent-server pid seen while the service ran (for the leak check)
    seen_agent_pids: set[int] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __iter__(self) -> Iterator[str]:  # `base_url, api_key = service`
        return iter((self.base_url, self.api_key))

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{venv_bin()}{os.pathsep}{env.get('PATH', '')}"
        env.update({
            "API_KEY": self.api_key,
            "SERVER_PORT": str(self.port),
            "BIND_ADDRESS": "127.0.0.1",
            "BACKEND": "process",
            "STATE_DIR": str(self.state_dir),
            "RUST_LOG": os.environ.get("RUST_LOG", "info"),
        })
        env.update(self.extra_env)
        return env

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path or not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def start(self, health_timeout: float = 60.0) -> "Service":
        binary = binary_path()
        if not binary.is_file() or not os.access(binary, os.X_OK):
            raise FileNotFoundError(
                f"runtime-api binary not found at {binary} (build it with `cargo build`, "
                "or set RUNTIME_API_BIN)")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.log_path is None:
            self.log_path = self.state_dir.parent / f"runtime-api-{self.port}.log"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([str(binary)], env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.state_dir.parent)
        log.close()
        deadline = time.monotonic() + health_timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                raise RuntimeError(f"runtime-api exited with code {code} before /health answered; "
                                   f"log tail ({self.log_path}):\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/health", timeout=2).status_code == 200:
                    return self
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"runtime-api /health did not answer 200 within {health_timeout}s; "
                                   f"log tail ({self.log_path}):\n{self.log_tail()}")
            time.sleep(0.2)

    def note_agents(self) -> list[int]:
        """Record (and return) the agent-server processes currently under the service."""
        pids = agent_server_pids(self.proc.pid) if self.proc else []
        self.seen_agent_pids.update(pids)
        return pids

    def stop(self, grace: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds. Returns the exit code."""
        if self.proc is None:
            return None
        self.note_agents()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def leftover_agents(self, settle: float = 10.0) -> list[tuple[int, str]]:
        """Agent-server processes started under this service that are still alive after it
        stopped: seen pids still alive, plus any agent-server descendant of ours (orphans are
        re-parented to us when we are a subreaper). Waits up to `settle` seconds for them to go."""
        def still() -> list[int]:
            reap_zombies(list(self.seen_agent_pids))
            live = {p for p in self.seen_agent_pids if alive(p) and ("agent" in cmdline(p))}
            live.update(agent_server_pids(os.getpid()))
            return sorted(live)
        deadline = time.monotonic() + settle
        pids = still()
        while pids and time.monotonic() < deadline:
            time.sleep(0.25)
            pids = still()
        return [(p, cmdline(p)) for p in pids]

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers={"X-API-Key": self.api_key},
                            timeout=kw.pop("timeout", 60.0), **kw)


def new_state_dir(prefix: str = "runtime-api-e2e-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix)) / "state"


def start_payload(session_id: str, **overrides) -> dict:
    """A /start body shaped like the SDK's (APIRemoteWorkspace._start_runtime)."""
    body = {
        "image": "ghcr.io/openhands/agent-server:1.58.2-python",
        "command": "/usr/local/bin/openhands-agent-server --port 60000",
        "working_dir": "/",
        "environment": {},
        "session_id": session_id,
        "run_as_user": 10001,
        "fs_group": 10001,
        "image_pull_policy": "IfNotPresent",
    }
    body.update(overrides)
    return body


def url_answers(url: str, path: str = "/alive", timeout: float = 2.0) -> bool:
    try:
        return httpx.get(url.rstrip("/") + path, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def url_refuses(url: str, path: str = "/alive") -> bool:
    """True when nothing answers at url (connection refused / reset)."""
    try:
        httpx.get(url.rstrip("/") + path, timeout=2.0)
        return False
    except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
        return True
    except httpx.TimeoutException:
        return False
