//! The service when the API server goes away and comes back: clear 503s while it is gone,
//! `/readyz` failing, and recovery by itself, with the watch caches resynced, once it is back.
//!
//! It restarts the test cluster's kube-apiserver, so it runs alone, after the other Kubernetes
//! tests: `cargo test --test recovery -- --ignored` with the cluster of `scripts/cluster.sh up`.

mod common;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Service, StateDir};
use serde_json::json;

/// The running kube-apiserver of the test cluster: its pid file and command line.
struct ApiServer {
    pid_file: PathBuf,
    argv: Vec<String>,
    log: PathBuf,
}

impl ApiServer {
    fn find() -> ApiServer {
        let dir = PathBuf::from(
            std::env::var("RUNTIME_API_CLUSTER_DIR")
                .expect("needs the cluster of scripts/cluster.sh up"),
        );
        let pid_file = dir.join("pids/kube-apiserver.pid");
        let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_string();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let argv = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        ApiServer { pid_file, argv, log: dir.join("logs/kube-apiserver.log") }
    }

    fn pid(&self) -> i32 {
        std::fs::read_to_string(&self.pid_file).unwrap().trim().parse().unwrap()
    }

    fn kill(&self) {
        let pid = self.pid();
        // SIGKILL: a crash, and no waiting for its graceful shutdown (which drains watches for long).
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while common::pid_alive(i64::from(pid)) {
            assert!(Instant::now() < deadline, "kube-apiserver did not stop");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts it again with the same arguments, detached, and records its pid for `cluster.sh down`.
    fn start(&self) {
        let log = std::fs::OpenOptions::new().append(true).open(&self.log).unwrap();
        let child = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        std::fs::write(&self.pid_file, child.id().to_string()).unwrap();
        std::mem::forget(child);
    }
}

#[tokio::test]
#[ignore = "restarts the test cluster's API server: run by scripts/test.sh after the other tests"]
async fn the_service_answers_503_while_the_api_server_is_gone_and_recovers_by_itself() {
    let apiserver = ApiServer::find();
    let state = StateDir::new();
    let namespace = format!("recovery-{}", &runtime_api::runtime::ids::new_runtime_id()[..8]);
    let kubectl = |args: &[&str]| {
        let out = Command::new("kubectl").args(args).output().unwrap();
        assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    kubectl(&["create", "namespace", &namespace]);
    let kubeconfig = std::env::var("KUBECONFIG").expect("KUBECONFIG of the test cluster");
    let svc = Service::start(
        &state,
        &[
            ("BACKEND", "kubernetes"),
            ("NAMESPACE", namespace.as_str()),
            ("KUBECONFIG", kubeconfig.as_str()),
        ],
    )
    .await;
    svc.wait_ready().await;
    let before = svc.start_session("before-outage").await;

    apiserver.kill();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, _) = Service::send(client.get(format!("{}/readyz", svc.base))).await;
        if code == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "/readyz still 200 with the API server gone");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, body) =
        svc.post("/start", json!({"image": "img", "session_id": "during-outage"})).await;
    assert_eq!((code, body["error"].as_str()), (503, Some("unavailable")), "{body}");
    // Reads still answer from the cache, and the service stays alive.
    assert_eq!(svc.get("/sessions/before-outage").await.1["runtime_id"], before["runtime_id"]);
    assert_eq!(Service::send(client.get(format!("{}/livez", svc.base))).await.0, 200);

    apiserver.start();
    svc.wait_ready().await;
    let after = svc.start_session("after-outage").await;
    svc.wait_running(after["runtime_id"].as_str().unwrap()).await;
    let (code, _) = svc.post("/stop", json!({"runtime_id": before["runtime_id"]})).await;
    assert_eq!(code, 200);
    kubectl(&["delete", "namespace", &namespace, "--wait=false"]);
}
