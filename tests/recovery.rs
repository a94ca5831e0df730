//! The service when the API server goes away and comes back: clear 503s while it is gone,
//! `/readyz` failing, and recovery by itself, with the watch caches resynced, once it is back.
//!
//! It restarts the test cluster's kube-apiserver, so it runs alone, after the other Kubernetes
//! tests: `cargo test --test recovery -- --ignored` with the cluster of `scripts/cluster.sh up`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::apiserver::ApiServer;
use common::{Service, StateDir};
use serde_json::json;

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
