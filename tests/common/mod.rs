//! Test harness: runs the real `runtime-api` binary on a loopback port and talks to it over HTTP.
#![allow(dead_code)]

pub mod apiserver;
pub mod namespace;
pub mod otlp;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const API_KEY: &str = "test-api-key-0123456789";

/// The stand-in agent server of the Rust tests (the e2e tests run the real one).
pub fn stand_in_agent_command() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/stand_in_agent.py");
    format!("python3 {} --port {{port}}", script.display())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A state directory whose agent processes are killed when the test ends, whatever happened.
pub struct StateDir(pub tempfile::TempDir);

impl StateDir {
    pub fn new() -> Self {
        StateDir(tempfile::tempdir().unwrap())
    }
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        // Agents whose records were tampered with by a test: found by their marker.
        let runtimes = self.path().join("runtimes");
        let runtimes = runtimes.canonicalize().unwrap_or(runtimes);
        let marker = format!("RUNTIME_API_RUNTIME_DIR={}/", runtimes.display());
        for pid in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = pid.file_name().to_string_lossy().parse::<i32>() else { continue };
            let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
            if environ.split(|b| *b == 0).any(|e| e.starts_with(marker.as_bytes())) {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let Ok(dirs) = std::fs::read_dir(self.path().join("runtimes")) else { return };
        for dir in dirs.flatten() {
            let Ok(bytes) = std::fs::read(dir.path().join("record.json")) else { continue };
            let Ok(record) = serde_json::from_slice::<Value>(&bytes) else { continue };
            if let Some(pid) = record["process"]["pid"].as_i64() {
                unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
            }
        }
    }
}

pub struct Service {
    child: Child,
    pub base: String,
    pub port: u16,
    pub log: PathBuf,
    client: reqwest::Client,
}

impl Service {
    /// Starts the binary with the process backend and waits until `/health` answers.
    pub async fn start(state: &StateDir, env: &[(&str, &str)]) -> Service {
        Self::start_on(state, free_port(), env).await
    }

    /// [`Service::start`] on a given API port (for settings that name it).
    pub async fn start_on(state: &StateDir, port: u16, env: &[(&str, &str)]) -> Service {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let log = state.path().join(format!("service-{port}.log"));
        let log_file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_runtime-api"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("API_KEY", API_KEY)
            .env("SERVER_PORT", port.to_string())
            .env("BIND_ADDRESS", "127.0.0.1")
            .env("BACKEND", "process")
            .env("STATE_DIR", state.path())
            .env("PROCESS_AGENT_COMMAND", stand_in_agent_command())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("runtime-api binary starts");
        let service = Service {
            child,
            base: format!("http://127.0.0.1:{port}"),
            port,
            log,
            client: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
        };
        service.wait_healthy().await;
        service
    }

    /// Waits for `/readyz` (the Kubernetes backend: caches synced).
    pub async fn wait_ready(&self) {
        self.wait_answering("/readyz", "ready", Duration::from_secs(30)).await;
    }

    async fn wait_healthy(&self) {
        self.wait_answering("/health", "healthy", Duration::from_secs(20)).await;
    }

    async fn wait_answering(&self, path: &str, what: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(resp) = self.client.get(format!("{}{path}", self.base)).send().await {
                if resp.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("service did not become {what}; log:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{}", self.base, path)).header("X-API-Key", API_KEY)
    }

    pub async fn send(builder: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = builder.send().await.expect("request reaches the service");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("non-JSON body ({e}): {text:?}"));
        (status, body)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        Self::send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        Self::send(self.request(reqwest::Method::POST, path).json(&body)).await
    }

    pub async fn start_session(&self, session_id: &str) -> Value {
        let (code, body) = self
            .post("/start", serde_json::json!({"image": "ghcr.io/openhands/agent-server:test", "session_id": session_id}))
            .await;
        assert_eq!(code, 200, "start failed: {body}");
        body
    }

    /// Polls the runtime until `pred` holds, returning the last view.
    pub async fn wait_for(
        &self,
        runtime_id: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (code, body) = self.get(&format!("/runtime/{runtime_id}")).await;
            if code == 200 && pred(&body) {
                return body;
            }
            if Instant::now() > deadline {
                panic!("runtime {runtime_id} never became {what}; last: {code} {body}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls until the runtime is gone (404).
    pub async fn wait_for_absent(&self, runtime_id: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.get(&format!("/runtime/{runtime_id}")).await.0 != 404 {
            assert!(Instant::now() < deadline, "runtime {runtime_id} is still visible");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_running(&self, runtime_id: &str) -> Value {
        self.wait_for(runtime_id, "running", |b| {
            b["status"] == "running" && b["pod_status"] == "ready"
        })
        .await
    }

    /// The service's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn pid_alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}
