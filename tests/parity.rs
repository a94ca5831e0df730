//! What the original Go service offers, over a real socket: its settings under their own names
//! (the binary's warnings and refusals), and `POST /sessions/batch-conversations` against
//! stand-in agent servers on the process backend (the e2e tests use the real agent server).

mod common;

use common::{Service, StateDir};
use reqwest::Method;
use serde_json::{Value, json};

const CALLER_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn run_binary(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_runtime-api"))
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test]
async fn original_settings_warn_one_line_each_and_a_bad_one_stops_startup() {
    let state = StateDir::new();
    let svc = Service::start(
        &state,
        &[
            ("NODE_SCORING_ENABLED", "true"),
            ("NODE_SCORING_CPU_THRESHOLD", "70"),
            ("CLEANUP_RESTART_THRESHOLD", "5"),
            ("DD_AGENT_HOST", "datadog-agent"),
            ("SANDBOX_INGRESS_ANNOTATIONS", "a=original"),
            ("INGRESS_ANNOTATIONS", "a=ours"),
            ("IDLE_TIMEOUT_HOURS", "72"),
            ("CLEANUP_INTERVAL_MINUTES", "5"),
        ],
    )
    .await;
    let log = svc.log_text();
    let warnings: Vec<&str> =
        log.lines().filter(|l| l.starts_with("runtime-api: warning: ")).collect();
    let expected = [
        "SANDBOX_INGRESS_ANNOTATIONS ignored: INGRESS_ANNOTATIONS is set",
        "CLEANUP_RESTART_THRESHOLD is not implemented",
        "NODE_SCORING_ENABLED is not implemented and is ignored: the Kubernetes scheduler",
        "NODE_SCORING_CPU_THRESHOLD is not implemented",
        "DD_AGENT_HOST is not implemented and is ignored: traces are exported over OTLP",
    ];
    assert_eq!(warnings.len(), expected.len(), "{log}");
    for (line, start) in warnings.iter().zip(expected) {
        assert!(line.contains(start), "{start:?} not in {line:?}");
    }

    // A malformed value under the original's name is refused, naming it, like ours.
    for (name, value) in [
        ("SHUTDOWN_TIMEOUT", "30"),
        ("REAPER_CHECK_INTERVAL", "soon"),
        ("CLEANUP_ENABLED", "yes"),
        ("IDLE_TIMEOUT_HOURS", "-1"),
        ("K8S_OPERATION_TIMEOUT", "1m-"),
        ("LOG_LEVEL", "verbose"),
        ("SANDBOX_INGRESS_ANNOTATIONS", "novalue"),
    ] {
        let (code, stderr) = run_binary(&[("API_KEY", "k"), (name, value)]);
        assert_eq!(code, Some(2), "{name}={value}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        let flag = name.to_lowercase().replace('_', "-");
        assert!(stderr.contains(&flag) || stderr.contains(name), "{name} not named: {stderr}");
    }
}

#[tokio::test]
async fn batch_conversations_ask_running_agents_only_with_their_key_and_the_trace() {
    let state = StateDir::new();
    let svc = Service::start(&state, &[]).await;
    let running = svc.start_session("conv-running").await;
    let paused = svc.start_session("conv-paused").await;
    let (running_id, paused_id) =
        (running["runtime_id"].as_str().unwrap(), paused["runtime_id"].as_str().unwrap());
    svc.wait_running(running_id).await;
    svc.wait_running(paused_id).await;
    let (code, _) = svc.post("/pause", json!({"runtime_id": paused_id})).await;
    assert_eq!(code, 200);

    let body = json!({"sandboxes": {
        running_id: {"session_id": "conv-running", "conversation_ids": ["c1", "c2"]},
        paused_id: {"session_id": "conv-paused", "conversation_ids": ["c3"]},
        "0123456789abcdef0123456789abcdef": {"session_id": "nobody", "conversation_ids": ["c4"]},
        // An unknown runtime id is looked up by its session, as the original does.
        "stale-runtime-id": {"session_id": "conv-running", "conversation_ids": ["c5"]},
    }});
    let request = svc
        .request(Method::POST, "/sessions/batch-conversations")
        .header("traceparent", format!("00-{CALLER_TRACE_ID}-00f067aa0ba902b7-01"))
        .header("baggage", "tenant=acme")
        .json(&body);
    let (code, answer) = Service::send(request).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer[running_id], json!([{"id": "c1"}, {"id": "c2"}]));
    assert_eq!(answer[paused_id], json!([]));
    assert_eq!(answer["0123456789abcdef0123456789abcdef"], json!([]));
    assert_eq!(answer["stale-runtime-id"], json!([{"id": "c5"}]));
    assert_eq!(answer.as_object().unwrap().len(), 4);

    // The paused runtime was not woken.
    let (_, view) = svc.get(&format!("/runtime/{paused_id}")).await;
    assert_eq!(view["status"], "paused", "{view}");

    // The agent server got the caller's trace and baggage, plus runtime_id and session_id.
    let url = format!("{}/last-trace-headers", running["url"].as_str().unwrap());
    let seen: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    let traceparent = seen["traceparent"].as_str().expect("traceparent propagated");
    assert_eq!(traceparent.split('-').nth(1), Some(CALLER_TRACE_ID), "{seen}");
    assert!(!traceparent.contains("00f067aa0ba902b7"), "a span of ours is the parent: {seen}");
    let baggage = seen["baggage"].as_str().expect("baggage propagated");
    for entry in ["tenant=acme", &format!("runtime_id={running_id}"), "session_id=conv-running"] {
        assert!(baggage.split(',').any(|e| e.trim() == entry), "{entry} not in {baggage}");
    }

    // Bad input: a clear 400; an empty batch: an empty map.
    let many: Vec<String> = (0..100).map(|i| format!("c{i}")).collect();
    let too_many =
        json!({"sandboxes": {running_id: {"session_id": "x", "conversation_ids": many}}});
    let (code, error) = svc.post("/sessions/batch-conversations", too_many).await;
    assert_eq!((code, error["error"].as_str()), (400, Some("bad_request")), "{error}");
    let (code, error) = svc.post("/sessions/batch-conversations", json!({"sandbox": {}})).await;
    assert_eq!(code, 400, "{error}");
    let (code, empty) = svc.post("/sessions/batch-conversations", json!({"sandboxes": {}})).await;
    assert_eq!((code, empty), (200, json!({})));
    let (code, _) = Service::send(
        reqwest::Client::new()
            .post(format!("{}/sessions/batch-conversations", svc.base))
            .json(&json!({"sandboxes": {}})),
    )
    .await;
    assert_eq!(code, 401);
}
