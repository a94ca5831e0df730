//! The HTTP contract over a real socket: the real binary, the process backend, a stand-in agent.
//! (Authentication of every route is checked in-process, in `src/api/tests.rs`.)

mod common;

use std::os::unix::process::CommandExt;
use std::time::Duration;

use common::{API_KEY, Service, StateDir, pid_alive};
use reqwest::Method;
use serde_json::{Value, json};

fn record(state: &StateDir, runtime_id: &str) -> Value {
    let bytes =
        std::fs::read(state.path().join("runtimes").join(runtime_id).join("record.json")).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn agent_pid(state: &StateDir, runtime_id: &str) -> i64 {
    record(state, runtime_id)["process"]["pid"].as_i64().expect("a running runtime has a pid")
}

async fn agent_get(runtime: &Value, path: &str) -> Value {
    let url = format!("{}{}", runtime["url"].as_str().unwrap(), path);
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

const RUNTIME_FIELDS: [&str; 13] = [
    "runtime_id",
    "session_id",
    "url",
    "session_api_key",
    "status",
    "pod_status",
    "work_hosts",
    "vscode_url",
    "restart_count",
    "restart_reasons",
    "status_detail",
    "created_at",
    "image",
];

#[tokio::test]
async fn health_readiness_and_metrics_need_no_key() {
    let state = StateDir::new();
    let svc = Service::start(&state, &[]).await;
    let client = reqwest::Client::new();
    for path in ["/health", "/livez", "/readyz"] {
        let resp = client.get(format!("{}{path}", svc.base)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.json::<Value>().await.unwrap()["status"], "ok");
    }
    svc.get("/list").await;
    let metrics =
        client.get(format!("{}/metrics", svc.base)).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(
            "runtime_api_http_requests_total{method=\"GET\",route=\"/list\",code=\"200\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("runtime_api_runtimes{status=\"running\"} 0"), "{metrics}");
}

#[tokio::test]
async fn start_returns_a_complete_runtime_that_becomes_running() {
    let state = StateDir::new();
    let svc = Service::start(
        &state,
        &[
            ("APP_SERVER_URL", "http://127.0.0.1:3000"),
            ("APP_SERVER_PUBLIC_URL", "http://localhost:3001"),
        ],
    )
    .await;
    let (code, started) = svc
        .post(
            "/start",
            json!({
                "image": "ghcr.io/openhands/agent-server:1.58.2-python",
                "command": "/usr/local/bin/openhands-agent-server --port 60000",
                "working_dir": "/workspace",
                "environment": {"DEBUG": "true", "SESSION_API_KEY": "caller-cannot-set-this"},
                "session_id": "agent-server-0d9f8a6e-1c2b-4e55-9d3a-2b7c1f0e9a11",
                "run_as_user": 10001, "fs_group": 10001, "image_pull_policy": "IfNotPresent",
                "runtime_class": "sysbox-runc", "resource_factor": 2, "an_unknown_field": [1, 2]
            }),
        )
        .await;
    assert_eq!(code, 200, "{started}");
    for field in RUNTIME_FIELDS {
        assert!(started.get(field).is_some(), "missing {field}: {started}");
    }
    assert_eq!(started["session_api_key"].as_str().unwrap().len(), 64);
    assert!(matches!(started["status"].as_str(), Some("starting" | "running")));
    assert_eq!(started["resource_factor"], 2.0);
    let id = started["runtime_id"].as_str().unwrap();

    let running = svc.wait_running(id).await;
    assert_eq!(running["url"], started["url"]);
    assert_eq!(running["status_detail"], Value::Null);
    assert_eq!(running["work_hosts"].as_object().unwrap().len(), 2);

    // The agent got the injected environment, a private working directory, and not the API key.
    let env = agent_get(&running, "/env").await;
    assert_eq!(env["SESSION_API_KEY"], started["session_api_key"]);
    assert_eq!(env["OH_SESSION_API_KEYS_0"], started["session_api_key"]);
    assert_eq!(env["DEBUG"], "true");
    assert_eq!(env["OH_WEBHOOKS_0_BASE_URL"], "http://127.0.0.1:3000/api/v1/webhooks");
    assert_eq!(env["OH_ALLOW_CORS_ORIGINS_0"], "http://localhost:3001");
    let (w1, w2) = {
        let hosts = running["work_hosts"].as_object().unwrap();
        let mut ports: Vec<u64> = hosts.values().map(|v| v.as_u64().unwrap()).collect();
        ports.sort();
        (ports[0].to_string(), ports[1].to_string())
    };
    assert!([&w1, &w2].contains(&&env["WORKER_1"].as_str().unwrap().to_string()));
    assert!([&w1, &w2].contains(&&env["WORKER_2"].as_str().unwrap().to_string()));
    assert!(env.get("API_KEY").is_none(), "the service's API key leaked into the sandbox");
    let cwd = agent_get(&running, "/cwd").await;
    assert!(cwd["cwd"].as_str().unwrap().starts_with(state.path().to_str().unwrap()));

    // Readable by runtime id and by session id, and listed.
    let (code, by_session) =
        svc.get("/sessions/agent-server-0d9f8a6e-1c2b-4e55-9d3a-2b7c1f0e9a11").await;
    assert_eq!((code, &by_session["runtime_id"]), (200, &started["runtime_id"]));
    let (_, list) = svc.get("/list").await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["runtimes"][0]["runtime_id"], started["runtime_id"]);
    svc.post("/stop", json!({"runtime_id": id})).await;
}

#[tokio::test]
async fn start_is_idempotent_per_session_even_when_concurrent() {
    let state = StateDir::new();
    let svc = std::sync::Arc::new(Service::start(&state, &[]).await);
    let first = svc.start_session("same-session").await;
    let again = svc.start_session("same-session").await;
    assert_eq!(first["runtime_id"], again["runtime_id"]);
    assert_eq!(first["session_api_key"], again["session_api_key"]);

    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move {
                svc.start_session("concurrent-session").await["runtime_id"].clone()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "20 concurrent starts created {} runtimes", ids.len());
    let (_, list) = svc.get("/list?status=all").await;
    assert_eq!(list["total"], 2);
    for r in list["runtimes"].as_array().unwrap() {
        svc.post("/stop", json!({"runtime_id": r["runtime_id"]})).await;
    }
}

#[tokio::test]
async fn session_ids_differing_only_in_case_are_different_sessions() {
    let state = StateDir::new();
    let svc = Service::start(&state, &[]).await;
    let upper = svc.start_session("4kXq9ZbT2mWc8RfJ1nLp0A").await;
    let lower = svc.start_session("4kxq9zbt2mwc8rfj1nlp0a").await;
    assert_ne!(upper["runtime_id"], lower["runtime_id"]);
    let (_, by_upper) = svc.get("/sessions/4kXq9ZbT2mWc8RfJ1nLp0A").await;
    assert_eq!(by_upper["runtime_id"], upper["runtime_id"]);
    assert_eq!(by_upper["session_id"], "4kXq9ZbT2mWc8RfJ1nLp0A");
    let (code, _) = svc.get("/sessions/4KXQ9ZBT2MWC8RFJ1NLP0A").await;
    assert_eq!(code, 404);
    for r in [upper, lower] {
        svc.post("/stop", json!({"runtime_id": r["runtime_id"]})).await;
    }
}

#[tokio::test]
async fn batch_is_a_bare_array_accepting_repeats_and_commas() {
    let state = StateDir::new();
    let svc = Service::start(&state, &[]).await;
    let a = svc.start_session("batch-a").await;
    let b = svc.start_session("batch-b").await;
    for query in [
        "ids=batch-a&ids=batch-b&ids=unknown",
        "ids=batch-a,batch-b,unknown",
        "ids=batch-a,batch-b&ids=batch-a",
    ] {
        let (code, body) = svc.get(&format!("/sessions/batch?{query}")).await;
        assert_eq!(code, 200);
        let arr = body.as_array().unwrap_or_else(|| panic!("not a bare array: {body}"));
        let ids: Vec<_> = arr.iter().map(|r| r["session_id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["batch-a", "batch-b"], "{query}");
    }
    let (code, body) = svc.get("/sessions/batch").await;
    assert_eq!((code, body), (200, json!([])));
    let too_many = (0..1001).map(|i| format!("s{i}")).collect::<Vec<_>>().join(",");
    let (code, body) = svc.get(&format!("/sessions/batch?ids={too_many}")).await;
    assert_eq!((code, body["error"].as_str()), (400, Some("bad_request")));
    for r in [a, b] {
        svc.post("/stop", json!({"runtime_id": r["runtime_id"]})).await;
    }
}

#[tokio::test]
async fn pause_resume_keep_url_key_and_files_and_stop_removes_everything() {
    let state = StateDir::new();
    let svc = Service::start(&state, &[]).await;
    let started = svc.start_session("lifecycle").await;
    let id = started["runtime_id"].as_str().unwrap().to_string();
    svc.wait_running(&id).await;
    let workspace = state.path().join("runtimes").join(&id).join("workspace");
    std::fs::write(workspace.join("keep.txt"), "still here").unwrap();
    let pid = agent_pid(&state, &id);

    let (code, paused) = svc.post("/pause", json!({"runtime_id": id})).await;
    assert_eq!((code, paused["status"].as_str()), (200, Some("paused")));
    assert!(!pid_alive(pid), "pause left the agent process running");
    // Paused runtimes are not listed by default (V1 treats every listed runtime as running).
    let (_, list) = svc.get("/list").await;
    assert_eq!(list["total"], 0);
    let (_, paused_list) = svc.get("/list?status=paused").await;
    assert_eq!(paused_list["runtimes"][0]["runtime_id"], id.as_str());
    let (_, all) = svc.get("/list?status=all").await;
    assert_eq!(all["total"], 1);
    // Pausing again is harmless.
    let (code, _) = svc.post("/pause", json!({"runtime_id": id})).await;
    assert_eq!(code, 200);

    let (code, resumed) = svc.post("/resume", json!({"runtime_id": id})).await;
    assert_eq!(code, 200, "{resumed}");
    assert_eq!(resumed["session_api_key"], started["session_api_key"]);
    assert_eq!(resumed["url"], started["url"]);
    assert_eq!(resumed["work_hosts"], started["work_hosts"]);
    assert_eq!(resumed["vscode_url"], started["vscode_url"]);
    let running = svc.wait_running(&id).await;
    assert_eq!(agent_get(&running, "/env").await["SESSION_API_KEY"], started["session_api_key"]);
    assert_eq!(std::fs::read_to_string(workspace.join("keep.txt")).unwrap(), "still here");

    // A paused runtime is resumed by /start for its session.
    svc.post("/pause", json!({"runtime_id": id})).await;
    let restarted = svc.start_session("lifecycle").await;
    assert_eq!(restarted["runtime_id"], id.as_str());
    svc.wait_running(&id).await;

    let pid = agent_pid(&state, &id);
    let (code, stopped) = svc.post("/stop", json!({"runtime_id": id})).await;
    assert_eq!((code, stopped["status"].as_str()), (200, Some("stopped")));
    assert!(!pid_alive(pid));
    assert!(!state.path().join("runtimes").join(&id).exists());
    for path in [format!("/runtime/{id}"), "/sessions/lifecycle".to_string()] {
        let (code, body) = svc.get(&path).await;
        assert_eq!((code, body["error"].as_str()), (404, Some("not_found")), "{path}");
    }
    // A new start after stop is a fresh runtime.
    let fresh = svc.start_session("lifecycle").await;
    assert_ne!(fresh["runtime_id"], id.as_str());
    assert_ne!(fresh["session_api_key"], started["session_api_key"]);
    svc.post("/stop", json!({"runtime_id": fresh["runtime_id"]})).await;
}

#[tokio::test]
async fn bad_input_gets_clear_json_errors() {
    let state = StateDir::new();
    let svc = Service::start(&state, &[("MAX_BODY_BYTES", "4096")]).await;
    let raw = |body: &'static str| {
        svc.request(Method::POST, "/start").header("content-type", "application/json").body(body)
    };
    let cases: Vec<(reqwest::RequestBuilder, u16, &str, &str)> = vec![
        (raw("{not json"), 400, "bad_request", "malformed JSON"),
        (raw(r#"{"image": "x"}"#), 400, "bad_request", "session_id"),
        (
            raw(r#"{"session_id": "s", "resource_factor": 0}"#),
            400,
            "bad_request",
            "resource_factor",
        ),
        (
            raw(r#"{"session_id": "s", "resource_factor": 65}"#),
            400,
            "bad_request",
            "resource_factor",
        ),
        (
            raw(r#"{"session_id": "s", "resource_factor": -2}"#),
            400,
            "bad_request",
            "resource_factor",
        ),
        (
            raw(r#"{"session_id": "s", "environment": {"A": 1}}"#),
            400,
            "bad_request",
            "invalid request body",
        ),
        (
            raw(r#"{"session_id": "s", "image_pull_policy": "Sometimes"}"#),
            400,
            "bad_request",
            "image_pull_policy",
        ),
        (
            raw(r#"{"session_id": "s", "runtime_class": "Not Valid"}"#),
            400,
            "bad_request",
            "runtime_class",
        ),
        (raw(r#"["session_id"]"#), 400, "bad_request", "invalid request body"),
        (
            svc.request(Method::POST, "/start").json(&json!({"session_id": "x".repeat(257)})),
            400,
            "bad_request",
            "session_id",
        ),
        (
            svc.request(Method::POST, "/start")
                .json(&json!({"session_id": "s", "image": "x".repeat(5000)})),
            413,
            "payload_too_large",
            "too large",
        ),
        (svc.request(Method::POST, "/stop").json(&json!({})), 400, "bad_request", "runtime_id"),
        (
            svc.request(Method::POST, "/pause").json(&json!({"runtime_id": ""})),
            400,
            "bad_request",
            "runtime_id",
        ),
        (
            svc.request(Method::POST, "/resume").json(&json!({"runtime_id": "r".repeat(300)})),
            400,
            "bad_request",
            "runtime_id",
        ),
        (
            svc.request(Method::GET, &format!("/runtime/{}", "r".repeat(300))),
            400,
            "bad_request",
            "runtime_id",
        ),
        (
            svc.request(Method::GET, &format!("/sessions/{}", "s".repeat(300))),
            400,
            "bad_request",
            "session_id",
        ),
        (svc.request(Method::GET, "/list?status=bogus"), 400, "bad_request", "unknown status"),
        (svc.request(Method::GET, "/list?limit=x"), 400, "bad_request", "limit"),
        (svc.request(Method::GET, "/image_exists"), 400, "bad_request", "image"),
        (svc.request(Method::GET, "/nope"), 404, "not_found", "no such endpoint"),
        (svc.request(Method::GET, "/start"), 405, "method_not_allowed", "method"),
        (svc.request(Method::POST, "/build"), 501, "not_implemented", "not supported"),
        (
            svc.request(Method::GET, "/build_status?build_id=1"),
            501,
            "not_implemented",
            "not supported",
        ),
    ];
    for (req, code, error, needle) in cases {
        let (got, body) = Service::send(req).await;
        assert_eq!(got, code, "{body}");
        assert_eq!(body["error"], error, "{body}");
        assert!(body["message"].as_str().unwrap().contains(needle), "{needle:?} not in {body}");
    }
    for (path, body) in [("/stop", "unknown"), ("/pause", "unknown"), ("/resume", "unknown")] {
        let (code, resp) = svc.post(path, json!({"runtime_id": body})).await;
        assert_eq!((code, resp["error"].as_str()), (404, Some("not_found")), "{path}");
    }
    for path in ["/runtime/unknown", "/sessions/unknown"] {
        assert_eq!(svc.get(path).await.0, 404);
    }
    // Nothing was created by any of the bad requests.
    assert_eq!(svc.get("/list?status=all").await.1["total"], 0);
}

#[tokio::test]
async fn registry_prefix_and_image_exists_answer_truthfully() {
    let state = StateDir::new();
    let svc = Service::start(&state, &[("REGISTRY_PREFIX", "registry.example.com/oh")]).await;
    assert_eq!(
        svc.get("/registry_prefix").await.1,
        json!({"registry_prefix": "registry.example.com/oh"})
    );
    let (code, body) = svc.get("/image_exists?image=ghcr.io/openhands/agent-server:1").await;
    assert_eq!((code, body["exists"].as_bool()), (200, Some(true)), "python3 is on PATH");
    drop(svc);
    let missing =
        Service::start(&state, &[("PROCESS_AGENT_COMMAND", "no-such-agent-binary --port {port}")])
            .await;
    let (code, body) = missing.get("/image_exists?image=anything").await;
    assert_eq!((code, body["exists"].as_bool()), (200, Some(false)));
}

#[tokio::test]
async fn an_agent_that_exits_is_an_error_with_its_exit_code() {
    let state = StateDir::new();
    let svc = Service::start(
        &state,
        &[("PROCESS_AGENT_COMMAND", "sh -c 'echo boom-{port} >&2; exit 3'")],
    )
    .await;
    let started = svc.start_session("crashes").await;
    let id = started["runtime_id"].as_str().unwrap();
    let failed = svc.wait_for(id, "error", |b| b["status"] == "error").await;
    assert_eq!(failed["pod_status"], "failed");
    let detail = failed["status_detail"].as_str().unwrap();
    assert!(detail.contains("exited with code 3"), "{detail}");
    assert!(detail.contains("boom-"), "log tail missing: {detail}");
    // Errors are listed by default: they hold a slot until someone stops them.
    assert_eq!(svc.get("/list").await.1["total"], 1);
    let (code, _) = svc.post("/stop", json!({"runtime_id": id})).await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn a_restarted_service_readopts_running_and_keeps_paused_runtimes() {
    let state = StateDir::new();
    let mut first = Service::start(&state, &[]).await;
    let live = first.start_session("survives-restart").await;
    let live_id = live["runtime_id"].as_str().unwrap().to_string();
    let paused = first.start_session("paused-across-restart").await;
    let paused_id = paused["runtime_id"].as_str().unwrap().to_string();
    first.wait_running(&live_id).await;
    first.wait_running(&paused_id).await;
    first.post("/pause", json!({"runtime_id": paused_id})).await;
    let pid = agent_pid(&state, &live_id);
    first.kill(); // SIGKILL: no chance to clean up
    assert!(pid_alive(pid), "agent servers outlive the service");

    // A second service on the same STATE_DIR is refused while the first holds it... (first is dead now)
    let second = Service::start(&state, &[]).await;
    let adopted = second.wait_running(&live_id).await;
    assert_eq!(adopted["session_api_key"], live["session_api_key"]);
    assert_eq!(adopted["url"], live["url"]);
    let (_, kept) = second.get(&format!("/runtime/{paused_id}")).await;
    assert_eq!(kept["status"], "paused");
    assert_eq!(second.start_session("survives-restart").await["runtime_id"], live_id.as_str());

    // The adopted process is still controlled: stop kills it.
    let (code, _) = second.post("/stop", json!({"runtime_id": live_id})).await;
    assert_eq!(code, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pid_alive(pid));
    let (code, resumed) = second.post("/resume", json!({"runtime_id": paused_id})).await;
    assert_eq!(code, 200);
    assert_eq!(resumed["session_api_key"], paused["session_api_key"]);
    second.wait_running(&paused_id).await;
    second.post("/stop", json!({"runtime_id": paused_id})).await;
}

#[tokio::test]
async fn a_dead_agent_found_at_restart_is_reported_and_resumable() {
    let state = StateDir::new();
    let mut first = Service::start(&state, &[]).await;
    let started = first.start_session("dies-while-down").await;
    let id = started["runtime_id"].as_str().unwrap().to_string();
    first.wait_running(&id).await;
    let pid = agent_pid(&state, &id);
    first.kill();
    unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
    tokio::time::sleep(Duration::from_millis(200)).await;

    let second = Service::start(&state, &[]).await;
    let (_, view) = second.get(&format!("/runtime/{id}")).await;
    assert_eq!(view["status"], "error");
    assert!(view["status_detail"].as_str().unwrap().contains("not running"), "{view}");
    let (code, _) = second.post("/resume", json!({"runtime_id": id})).await;
    assert_eq!(code, 200);
    second.wait_running(&id).await;
    second.post("/stop", json!({"runtime_id": id})).await;
}

#[tokio::test]
async fn one_state_dir_serves_one_service() {
    let state = StateDir::new();
    let _first = Service::start(&state, &[]).await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_runtime-api"))
        .env_clear()
        .env("API_KEY", API_KEY)
        .env("SERVER_PORT", common::free_port().to_string())
        .env("STATE_DIR", state.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("in use by another runtime-api process"), "{stderr}");
}

#[tokio::test]
async fn invalid_configuration_is_one_line_and_sigterm_exits_cleanly() {
    for (env, needle) in [
        (vec![], "API_KEY is required"),
        (vec![("API_KEY", "k"), ("SERVER_PORT", "70000")], "--server-port"),
        (vec![("API_KEY", "k"), ("BACKEND", "docker")], "--backend"),
        (vec![("API_KEY", "k"), ("WORKER_1_PORT", "60000")], "WORKER_1_PORT and AGENT_SERVER_PORT"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_runtime-api"))
            .env_clear()
            .envs(env)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    }
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_runtime-api"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for name in
        ["SERVER_PORT", "API_KEY", "NAMESPACE", "BASE_DOMAIN", "PROCESS_AGENT_COMMAND", "BACKEND"]
    {
        assert!(help.contains(name), "--help does not mention {name}");
    }

    let state = StateDir::new();
    let mut svc = Service::start(&state, &[]).await;
    assert_eq!(svc.terminate().code(), Some(0));
}

/// Sends raw bytes as one HTTP/1.1 request and returns the status, Content-Type and body.
async fn raw_request(port: u16, head: &str, body: &[u8]) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let content_type = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type: ").map(String::from))
        .unwrap_or_default();
    (status, content_type, body.to_string())
}

#[tokio::test]
async fn hostile_requests_over_a_socket_get_json_errors_and_the_service_lives_on() {
    let state = StateDir::new();
    let svc = Service::start(&state, &[("MAX_BODY_BYTES", "4096")]).await;
    let key = format!("X-API-Key: {API_KEY}\r\nConnection: close\r\n");
    let filler: String =
        (0..40).map(|i| format!("X-Filler-{i}: {}\r\n", "v".repeat(1024))).collect();
    let answered_by_us = [
        (format!("GET /runtime/%FF HTTP/1.1\r\nHost: x\r\n{key}\r\n"), 400),
        (format!("GET /sessions/%C3%28 HTTP/1.1\r\nHost: x\r\n{key}\r\n"), 400),
        (format!("GET /list?q={} HTTP/1.1\r\nHost: x\r\n{key}\r\n", "a".repeat(20_000)), 414),
        (format!("GET /health HTTP/1.1\r\nHost: x\r\n{key}{filler}\r\n"), 431),
        (format!("BREW /health HTTP/1.1\r\nHost: x\r\n{key}\r\n"), 405),
        (format!("GET /nope HTTP/1.1\r\nHost: x\r\n{key}\r\n"), 404),
        (format!("POST /start HTTP/1.1\r\nHost: x\r\n{key}Content-Length: 8192\r\n\r\n"), 413),
    ];
    for (head, want) in answered_by_us {
        let body = if want == 413 { vec![b'{'; 8192] } else { Vec::new() };
        let (status, content_type, text) = raw_request(svc.port, &head, &body).await;
        let line = head.lines().next().unwrap().chars().take(60).collect::<String>();
        assert_eq!(status, want, "{line}: {text}");
        assert_eq!(content_type, "application/json", "{line}");
        let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()), "{line}: {json}");
    }
    // What hyper rejects before any router sees it: a 4xx (empty body), never a crash.
    let answered_by_hyper = [
        "GARBAGE\r\n\r\n".to_string(),
        format!("POST /start HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n{key}\r\n"),
        format!("GET /{} HTTP/1.1\r\nHost: x\r\n{key}\r\n", "a".repeat(600_000)),
    ];
    for head in answered_by_hyper {
        let (status, _, _) = raw_request(svc.port, &head, b"").await;
        eprintln!("{}...: {status}", head.chars().take(20).collect::<String>());
        assert!(
            (400..500).contains(&status) || status == 0,
            "{}: {status}",
            head.chars().take(20).collect::<String>()
        );
    }
    assert_eq!(svc.get("/list").await.0, 200);
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn rewrite_record(state: &StateDir, runtime_id: &str, change: impl FnOnce(&mut Value)) {
    let mut record = record(state, runtime_id);
    change(&mut record);
    let path = state.path().join("runtimes").join(runtime_id).join("record.json");
    std::fs::write(path, serde_json::to_vec(&record).unwrap()).unwrap();
}

async fn wait_dead(pid: i64) {
    for _ in 0..100 {
        if !pid_alive(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("process {pid} still runs");
}

#[tokio::test]
async fn after_a_crash_every_agent_is_readopted_or_stopped_and_nothing_is_hidden() {
    let state = StateDir::new();
    let mut first = Service::start(&state, &[]).await;
    let mut ids = Vec::new();
    for session in ["adopt-me", "corrupt-me", "paused-on-disk"] {
        let id = first.start_session(session).await["runtime_id"].as_str().unwrap().to_string();
        first.wait_running(&id).await;
        ids.push(id);
    }
    let runtimes = state.path().join("runtimes");
    let dir = runtimes.join(&ids[0]);
    assert_eq!(
        [mode(&runtimes), mode(&dir), mode(&dir.join("record.json")), mode(&dir.join("agent.log"))],
        [0o700, 0o700, 0o600, 0o600]
    );
    let pids: Vec<i64> = ids.iter().map(|id| agent_pid(&state, id)).collect();
    first.kill();

    // What a crash at the wrong moment leaves: a record written before its spawn was recorded, a
    // truncated record, a paused record whose agent still runs, a first write cut short.
    rewrite_record(&state, &ids[0], |r| r["process"] = Value::Null);
    let corrupt = runtimes.join(&ids[1]).join("record.json");
    let bytes = std::fs::read(&corrupt).unwrap();
    std::fs::write(&corrupt, &bytes[..bytes.len() / 2]).unwrap();
    rewrite_record(&state, &ids[2], |r| {
        r["paused"] = json!(true);
        r["process"] = Value::Null;
    });
    std::fs::create_dir(runtimes.join("cut-short")).unwrap();
    std::fs::write(runtimes.join("cut-short").join(".record.json.tmp"), "{\"runt").unwrap();

    let second = Service::start(&state, &[]).await;
    // Re-adopted through the marker in its environment, and the record now says so.
    second.wait_running(&ids[0]).await;
    assert_eq!(agent_pid(&state, &ids[0]), pids[0]);
    // Unreadable: shown in error, its agent stopped, no session can reach it.
    let (code, view) = second.get(&format!("/runtime/{}", ids[1])).await;
    assert_eq!((code, view["status"].as_str()), (200, Some("error")), "{view}");
    assert!(view["status_detail"].as_str().unwrap().contains("unreadable"), "{view}");
    wait_dead(pids[1]).await;
    assert_eq!(second.get("/sessions/corrupt-me").await.0, 404);
    assert_eq!(second.post("/pause", json!({"runtime_id": ids[1]})).await.0, 409);
    // Paused on disk: its agent is stopped, as the record says.
    assert_eq!(second.get(&format!("/runtime/{}", ids[2])).await.1["status"], "paused");
    wait_dead(pids[2]).await;
    // The interrupted first write is gone; everything else is listed.
    assert!(!runtimes.join("cut-short").exists());
    assert!(!runtimes.join(&ids[0]).join(".record.json.tmp").exists());
    assert_eq!(second.get("/list?status=all").await.1["total"], 3);

    // The unreadable runtime stops and its files go; its session starts afresh.
    assert_eq!(second.post("/stop", json!({"runtime_id": ids[1]})).await.0, 200);
    assert!(!runtimes.join(&ids[1]).exists());
    let fresh = second.start_session("corrupt-me").await;
    assert_ne!(fresh["runtime_id"].as_str().unwrap(), ids[1]);
    assert_eq!(second.post("/stop", json!({"runtime_id": ids[0]})).await.0, 200);
    wait_dead(pids[0]).await;
}

#[tokio::test]
async fn stop_stops_what_runs_whatever_the_record_says() {
    let state = StateDir::new();
    let svc = Service::start(&state, &[]).await;
    let id = svc.start_session("stray").await["runtime_id"].as_str().unwrap().to_string();
    svc.wait_running(&id).await;
    // An agent process of this runtime the record does not know (spawned just before a crash).
    let dir = state.path().canonicalize().unwrap().join("runtimes").join(&id);
    let mut stray = std::process::Command::new("sleep")
        .arg("300")
        .env("RUNTIME_API_RUNTIME_DIR", &dir)
        .process_group(0)
        .spawn()
        .unwrap();
    assert_eq!(svc.post("/stop", json!({"runtime_id": id})).await.0, 200);
    let mut status = None;
    for _ in 0..100 {
        status = stray.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stray.kill();
    let status = status.expect("the stray agent process still runs after /stop");
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));
}
