//! The HTTP layer in-process: the real router over a fake backend, driven with `oneshot`, so every
//! status code, error shape and query form is checked in milliseconds without a socket, a process
//! or an agent server. What needs a real backend is in `tests/api.rs` and `tests/e2e`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{AppState, router};
use crate::runtime::{
    Backend, BackendError, BackendResult, Candidate, ErrorKind, ImageCheck, ListFilter, PodStatus,
    Readiness, Runtime, RuntimeSpec, Status,
};
use crate::telemetry::Metrics;

const KEY: &str = "in-process-test-key";

/// Runtimes in a map; `fail_with` makes every operation on a runtime fail with that kind.
#[derive(Default)]
struct FakeBackend {
    runtimes: Mutex<BTreeMap<String, Runtime>>,
    fail_with: Mutex<Option<ErrorKind>>,
    image: Mutex<Option<ImageCheck>>,
    readiness: Mutex<Option<String>>,
    /// Why reads are not complete yet (caches still listing), if so.
    incomplete: Mutex<Option<String>>,
}

fn runtime(runtime_id: &str, session_id: &str, status: Status, created_at: &str) -> Runtime {
    Runtime {
        runtime_id: runtime_id.into(),
        session_id: session_id.into(),
        url: format!("http://{runtime_id}.example"),
        session_api_key: "session-key".into(),
        status,
        pod_status: if status == Status::Running { PodStatus::Ready } else { PodStatus::NotFound },
        work_hosts: BTreeMap::new(),
        vscode_url: None,
        restart_count: 0,
        restart_reasons: Vec::new(),
        status_detail: None,
        created_at: created_at.into(),
        image: "img".into(),
        resource_factor: 1.0,
    }
}

impl FakeBackend {
    fn with(runtimes: &[Runtime]) -> Arc<FakeBackend> {
        let fake = FakeBackend::default();
        let map = runtimes.iter().map(|r| (r.runtime_id.clone(), r.clone())).collect();
        *fake.runtimes.lock().unwrap() = map;
        Arc::new(fake)
    }

    fn failure(&self) -> BackendResult<()> {
        match *self.fail_with.lock().unwrap() {
            Some(kind) => Err(BackendError::new(kind, format!("injected {kind:?}"))),
            None => Ok(()),
        }
    }

    fn find(&self, runtime_id: &str) -> BackendResult<Runtime> {
        self.failure()?;
        let runtimes = self.runtimes.lock().unwrap();
        runtimes.get(runtime_id).cloned().ok_or_else(|| BackendError::runtime_not_found(runtime_id))
    }
}

#[async_trait]
impl Backend for FakeBackend {
    async fn start(&self, spec: RuntimeSpec) -> BackendResult<Runtime> {
        self.failure()?;
        let id = format!("rt-{}", spec.session_id);
        let started = runtime(&id, &spec.session_id, Status::Starting, "2026-01-01T00:00:00Z");
        self.runtimes.lock().unwrap().insert(id, started.clone());
        Ok(started)
    }

    async fn get(&self, runtime_id: &str) -> BackendResult<Option<Runtime>> {
        Ok(self.runtimes.lock().unwrap().get(runtime_id).cloned())
    }

    async fn get_by_session(&self, session_id: &str) -> BackendResult<Option<Runtime>> {
        let runtimes = self.runtimes.lock().unwrap();
        Ok(runtimes.values().find(|r| r.session_id == session_id).cloned())
    }

    async fn list(&self, filter: &ListFilter) -> BackendResult<Vec<Runtime>> {
        let runtimes = self.runtimes.lock().unwrap();
        Ok(runtimes.values().filter(|r| filter.matches(r.status)).cloned().collect())
    }

    async fn pause(&self, runtime_id: &str, _reason: Option<&str>) -> BackendResult<Runtime> {
        Ok(Runtime { status: Status::Paused, ..self.find(runtime_id)? })
    }

    async fn resume(&self, runtime_id: &str) -> BackendResult<Runtime> {
        Ok(Runtime { status: Status::Starting, ..self.find(runtime_id)? })
    }

    async fn stop(&self, runtime_id: &str) -> BackendResult<Runtime> {
        let last = self.find(runtime_id)?;
        self.runtimes.lock().unwrap().remove(runtime_id);
        Ok(last.stopped())
    }

    async fn image_exists(&self, _image: &str) -> BackendResult<ImageCheck> {
        Ok(self.image.lock().unwrap().clone().unwrap_or(ImageCheck::Exists))
    }

    fn readiness(&self) -> Readiness {
        match self.readiness.lock().unwrap().clone() {
            Some(reason) => Readiness::NotReady(reason),
            None => Readiness::Ready,
        }
    }

    fn reads_complete(&self) -> Readiness {
        match self.incomplete.lock().unwrap().clone() {
            Some(reason) => Readiness::NotReady(reason),
            None => Readiness::Ready,
        }
    }

    async fn candidates(&self) -> BackendResult<Vec<Candidate>> {
        Ok(Vec::new())
    }
}

fn app(backend: Arc<FakeBackend>, max_body_bytes: usize) -> Router {
    let state = AppState::new(backend, Metrics::new(), KEY, "registry.example/oh", "default:img");
    router(state, max_body_bytes)
}

/// One request through the router: status and JSON body.
async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(key) = key {
        req = req.header("x-api-key", key);
    }
    let req = match body {
        Some(body) => {
            req.header("content-type", "application/json").body(Body::from(body.to_string()))
        }
        None => req.body(Body::empty()),
    };
    let resp = app.clone().oneshot(req.unwrap()).await.unwrap();
    let status = resp.status();
    let content_type = resp.headers().get("content-type").cloned();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if uri != "/metrics" {
        let content_type = content_type.map(|v| v.to_str().unwrap().to_string());
        assert_eq!(content_type.as_deref(), Some("application/json"), "{uri}: {status}");
    }
    (status, json)
}

async fn get(app: &Router, uri: &str) -> (StatusCode, Value) {
    call(app, Method::GET, uri, Some(KEY), None).await
}

async fn post(app: &Router, uri: &str, body: Value) -> (StatusCode, Value) {
    call(app, Method::POST, uri, Some(KEY), Some(&body.to_string())).await
}

#[tokio::test]
async fn protected_endpoints_need_the_key_and_public_ones_do_not() {
    let app = app(FakeBackend::with(&[]), 1 << 20);
    let protected = [
        (Method::POST, "/start"),
        (Method::POST, "/stop"),
        (Method::POST, "/pause"),
        (Method::POST, "/resume"),
        (Method::GET, "/list"),
        (Method::GET, "/runtime/x"),
        (Method::GET, "/sessions/x"),
        (Method::GET, "/sessions/batch?ids=x"),
        (Method::GET, "/registry_prefix"),
        (Method::GET, "/image_exists?image=x"),
        (Method::POST, "/build"),
        (Method::GET, "/build_status"),
    ];
    for (method, uri) in protected {
        for key in [None, Some(""), Some("wrong-key"), Some("in-process-test-key ")] {
            let (status, body) = call(&app, method.clone(), uri, key, Some("{}")).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri} with {key:?}");
            assert_eq!(body["error"], "unauthorized");
        }
    }
    for uri in ["/health", "/livez", "/readyz"] {
        let (status, body) = call(&app, Method::GET, uri, None, None).await;
        assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})), "{uri}");
    }
    // The sandbox's header is no credential for the runtime API, and does not get in the way.
    let req = Request::get("/list").header("x-api-key", KEY).header("x-session-api-key", "other");
    let resp = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn unknown_endpoints_methods_and_ids_are_json_errors() {
    let app = app(FakeBackend::with(&[]), 1 << 20);
    let (status, body) = get(&app, "/nope").await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let (status, body) = get(&app, "/start").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );
    for uri in ["/runtime/unknown", "/sessions/unknown"] {
        assert_eq!(get(&app, uri).await.0, StatusCode::NOT_FOUND, "{uri}");
    }
    for uri in ["/stop", "/pause", "/resume"] {
        let (status, body) = post(&app, uri, json!({"runtime_id": "unknown"})).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found")),
            "{uri}"
        );
        assert_eq!(body["message"], "runtime unknown not found");
    }
    let (status, body) = post(&app, "/build", json!({})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_IMPLEMENTED, Some("not_implemented"))
    );
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_and_bad_bodies_400() {
    let app = app(FakeBackend::with(&[]), 2048);
    let big = json!({"session_id": "s", "image": "x".repeat(4096)});
    let (status, body) = post(&app, "/start", big).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
    let cases = [
        (r#"{"session_id": " "}"#, "session_id"),
        (r#"{"session_id": "s", "image": " ghcr.io/a/b:1"}"#, "image"),
        (r#"{"session_id": "s", "image": "ghcr.io/A/b:1"}"#, "image"),
        (r#"{"session_id": "s", "image": "a/../b"}"#, "image"),
        (r#"{"session_id": "s", "image": "a:"}"#, "image"),
        (r#"{"session_id": "s", "run_as_user": 2147483648}"#, "run_as_user"),
        (r#"{"session_id": "s", "fs_group": 4294967295}"#, "fs_group"),
        (r#"{"session_id": "s", "run_as_group": -1}"#, "run_as_group"),
        (r#"{"session_id": "s", "resource_factor": 0.001}"#, "resource_factor"),
        (r#"{"session_id": "s", "environment": {"LD_PRELOAD": "/x.so"}}"#, "LD_PRELOAD"),
        ("{not json", "malformed JSON"),
        (r#"["session_id"]"#, "expected a JSON object"),
        (r#"{"image": "x"}"#, "session_id"),
        (r#"{"session_id": "s", "resource_factor": 0}"#, "resource_factor"),
        (r#"{"session_id": "s", "resource_factor": -1}"#, "resource_factor"),
        (r#"{"session_id": "s", "image_pull_policy": "Sometimes"}"#, "image_pull_policy"),
    ];
    for (raw, needle) in cases {
        let (status, body) = call(&app, Method::POST, "/start", Some(KEY), Some(raw)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("bad_request")),
            "{raw}"
        );
        assert!(body["message"].as_str().unwrap().contains(needle), "{needle:?} not in {body}");
    }
    // The backend's environment limit (execve's 128 KiB per string by default).
    let app = super::router(
        AppState::new(FakeBackend::with(&[]), Metrics::new(), KEY, "r", "default:img"),
        1 << 20,
    );
    let big = json!({"session_id": "s", "environment": {"BIG": "x".repeat(200_000)}});
    let (status, body) = post(&app, "/start", big).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().unwrap().contains("environment variable BIG"), "{body}");
    // A valid start reaches the backend, with the default image filled in.
    let (status, body) = post(&app, "/start", json!({"session_id": "s", "unknown": [1]})).await;
    assert_eq!((status, body["runtime_id"].as_str()), (StatusCode::OK, Some("rt-s")));
}

#[tokio::test]
async fn batch_is_a_bare_array_in_request_order_without_unknown_ids() {
    let runtimes = [
        runtime("r1", "a", Status::Running, "2026-01-01T00:00:01Z"),
        runtime("r2", "B", Status::Paused, "2026-01-01T00:00:02Z"),
    ];
    let app = app(FakeBackend::with(&runtimes), 1 << 20);
    for query in ["ids=B&ids=a&ids=unknown", "ids=B,a,unknown", "ids=B,a&ids=B", "ids=B%2Ca"] {
        let (status, body) = get(&app, &format!("/sessions/batch?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}");
        let ids: Vec<&str> =
            body.as_array().unwrap().iter().map(|r| r["runtime_id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["r2", "r1"], "{query}");
    }
    assert_eq!(get(&app, "/sessions/batch").await, (StatusCode::OK, json!([])));
    let too_many = (0..1001).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    assert_eq!(
        get(&app, &format!("/sessions/batch?ids={too_many}")).await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn list_filters_sorts_oldest_first_and_pages() {
    let runtimes = [
        runtime("new", "s1", Status::Running, "2026-01-03T00:00:00Z"),
        runtime("old", "s2", Status::Error, "2026-01-01T00:00:00Z"),
        runtime("mid", "s3", Status::Starting, "2026-01-02T00:00:00Z"),
        runtime("sleeping", "s4", Status::Paused, "2026-01-01T12:00:00Z"),
    ];
    let app = app(FakeBackend::with(&runtimes), 1 << 20);
    let ids = |body: &Value| -> Vec<String> {
        body["runtimes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["runtime_id"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, body) = get(&app, "/list").await;
    assert_eq!(
        (ids(&body), body["total"].as_u64()),
        (vec!["old".into(), "mid".into(), "new".into()], Some(3))
    );
    let (_, body) = get(&app, "/list?status=all").await;
    assert_eq!(ids(&body), ["old", "sleeping", "mid", "new"]);
    let (_, body) = get(&app, "/list?status=paused,ERROR").await;
    assert_eq!(ids(&body), ["old", "sleeping"]);
    let (_, body) = get(&app, "/list?status=all&limit=2&offset=1").await;
    assert_eq!(
        (ids(&body), body["total"].as_u64()),
        (vec!["sleeping".into(), "mid".into()], Some(4))
    );
    for bad in ["status=bogus", "limit=x", "offset=-1"] {
        assert_eq!(get(&app, &format!("/list?{bad}")).await.0, StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn backend_failures_map_to_their_status_codes() {
    let fake = FakeBackend::with(&[runtime("r", "s", Status::Running, "t")]);
    let app = app(fake.clone(), 1 << 20);
    let cases = [
        (ErrorKind::NotFound, StatusCode::NOT_FOUND, "not_found"),
        (ErrorKind::Invalid, StatusCode::BAD_REQUEST, "bad_request"),
        (ErrorKind::Conflict, StatusCode::CONFLICT, "conflict"),
        (ErrorKind::Forbidden, StatusCode::FORBIDDEN, "forbidden"),
        (ErrorKind::Unavailable, StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        (ErrorKind::Internal, StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    ];
    for (kind, status, code) in cases {
        *fake.fail_with.lock().unwrap() = Some(kind);
        for (uri, body) in
            [("/stop", json!({"runtime_id": "r"})), ("/start", json!({"session_id": "s"}))]
        {
            let (got, body) = post(&app, uri, body).await;
            assert_eq!((got, body["error"].as_str()), (status, Some(code)), "{kind:?} {uri}");
            assert_eq!(body["message"], format!("injected {kind:?}"));
        }
    }
    *fake.fail_with.lock().unwrap() = None;
    *fake.image.lock().unwrap() = Some(ImageCheck::Unknown("registry unreachable".into()));
    let (status, body) = get(&app, "/image_exists?image=img").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("unknown"))
    );
    *fake.image.lock().unwrap() = Some(ImageCheck::Missing);
    assert_eq!(
        get(&app, "/image_exists?image=img").await.1,
        json!({"exists": false, "image": "img"})
    );
    *fake.readiness.lock().unwrap() = Some("caches not synced".into());
    let (status, body) = call(&app, Method::GET, "/readyz", None, None).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("caches not synced"))
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_runtimes_by_status() {
    let app = app(FakeBackend::with(&[runtime("r", "s", Status::Running, "t")]), 1 << 20);
    get(&app, "/runtime/r").await;
    get(&app, "/runtime/other").await;
    let req = Request::get("/metrics").body(Body::empty()).unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let text = String::from_utf8(
        axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec(),
    )
    .unwrap();
    let line = "runtime_api_http_requests_total{method=\"GET\",route=\"/runtime/{runtime_id}\",code=\"200\"} 1";
    assert!(text.contains(line), "{text}");
    assert!(text.contains("route=\"/runtime/{runtime_id}\",code=\"404\"} 1"), "{text}");
    assert!(text.contains("runtime_api_runtimes{status=\"running\"} 1"), "{text}");
    assert!(text.contains("runtime_api_runtimes{status=\"paused\"} 0"), "{text}");
}

async fn metrics_page(app: &Router) -> String {
    let req = Request::get("/metrics").body(Body::empty()).unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Odd methods and paths, each one different: what a hostile client sends to mint label values.
async fn odd_requests(app: &Router, range: std::ops::Range<usize>) {
    for i in range {
        let method = Method::from_bytes(format!("M{i}X").as_bytes()).unwrap();
        let (method, uri) = match i % 4 {
            0 => (method, "/health".to_string()),
            1 => (method, format!("/nope/{i}")),
            2 => (Method::GET, format!("/runtime/{i}%FF")),
            _ => (Method::GET, format!("/x{i}?q={i}")),
        };
        let req = Request::builder().method(method).uri(uri).header("x-api-key", KEY);
        app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    }
}

#[tokio::test]
async fn odd_methods_and_paths_do_not_grow_the_metrics_page() {
    let app = app(FakeBackend::with(&[]), 1 << 20);
    odd_requests(&app, 0..100).await;
    let series = |page: &str| -> Vec<String> {
        let mut all: Vec<String> =
            page.lines().filter_map(|l| l.rsplit_once(' ')).map(|(s, _)| s.into()).collect();
        all.sort();
        all
    };
    metrics_page(&app).await; // the scrape itself is counted from the second one on
    let early = metrics_page(&app).await;
    odd_requests(&app, 100..10_000).await;
    let page = metrics_page(&app).await;
    eprintln!(
        "metrics page: {} bytes after 100 odd requests, {} after 10,000",
        early.len(),
        page.len()
    );
    // Only counter values grow, never the set of series.
    assert_eq!(series(&early), series(&page));
    assert!(page.len() < 16 * 1024, "{} bytes:\n{page}", page.len());
    assert!(page.contains("method=\"other\",route=\"/health\",code=\"405\""), "{page}");
    assert!(page.contains("method=\"other\",route=\"other\",code=\"404\""), "{page}");
    assert!(!page.contains("M99X") && !page.contains("/x9"), "{page}");
}

#[test]
fn labels_come_from_fixed_sets() {
    use super::{method_label, route_label};
    assert_eq!(method_label(&Method::GET), "GET");
    assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    assert_eq!(route_label(Some("/runtime/{runtime_id}")), "/runtime/{runtime_id}");
    assert_eq!(route_label(Some("/not/ours")), "other");
    assert_eq!(route_label(None), "other");
}

#[tokio::test]
async fn the_frameworks_own_rejections_are_json_errors() {
    let app = app(FakeBackend::with(&[]), 1 << 20);
    // Invalid UTF-8 and invalid percent-encoding in a path segment.
    for uri in ["/runtime/%FF", "/sessions/%C3%28", "/runtime/a%FFb"] {
        let (status, body) = get(&app, uri).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("bad_request"))
        );
        assert!(body["message"].as_str().unwrap().contains("path parameter"), "{uri}: {body}");
    }
    let long = format!("/list?x={}", "a".repeat(super::MAX_URI_BYTES));
    let (status, body) = get(&app, &long).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::URI_TOO_LONG, Some("uri_too_long")));
    // Also on unknown routes, and before authentication.
    let (status, _) = call(&app, Method::GET, &format!("/nope{long}"), None, None).await;
    assert_eq!(status, StatusCode::URI_TOO_LONG);
    let mut req = Request::get("/health");
    for i in 0..40 {
        req = req.header(format!("x-filler-{i}"), "v".repeat(1024));
    }
    let resp = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let (status, body) = call(&app, Method::DELETE, "/health", None, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );
}

#[tokio::test]
async fn reads_wait_for_complete_caches_then_answer_503_with_retry_after() {
    let fake = FakeBackend::with(&[runtime("r", "s", Status::Running, "t")]);
    *fake.incomplete.lock().unwrap() = Some("the pods cache has not synced".into());
    let state = AppState::new(fake.clone(), Metrics::new(), KEY, "r", "d:i")
        .with_sync_wait(std::time::Duration::from_millis(300));
    let app = router(state, 1 << 20);
    for uri in ["/list", "/runtime/r", "/sessions/s", "/sessions/batch?ids=s"] {
        let req = Request::get(uri).header("x-api-key", KEY).body(Body::empty()).unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert_eq!(resp.headers()["retry-after"], "1", "{uri}");
        let body: Value = serde_json::from_slice(
            &axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap(),
        )
        .unwrap();
        assert_eq!(body["error"], "not_ready", "{uri}");
    }
    let (status, body) = post(&app, "/stop", json!({"runtime_id": "r"})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("not_ready"))
    );
    // Health endpoints do not wait, nor does /start (the API server decides).
    assert_eq!(call(&app, Method::GET, "/health", None, None).await.0, StatusCode::OK);
    assert_eq!(post(&app, "/start", json!({"session_id": "new"})).await.0, StatusCode::OK);
    fake.runtimes.lock().unwrap().remove("rt-new");
    // A cache that completes while the request waits: the request is answered in full.
    let completing = fake.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        *completing.incomplete.lock().unwrap() = None;
    });
    let (status, body) = get(&app, "/list").await;
    assert_eq!((status, body["total"].as_u64()), (StatusCode::OK, Some(1)));
}

/// Methods the router serves on a route template: those whose answer is neither the 405 of a
/// known path nor the fallback's 404 for an unknown one.
async fn served_methods(app: &Router, template: &str) -> BTreeSet<String> {
    let uri = template.replace("{runtime_id}", "x").replace("{session_id}", "x");
    let mut served = BTreeSet::new();
    for method in [Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        let (status, body) = call(app, method.clone(), &uri, Some(KEY), Some("{}")).await;
        let unrouted = status == StatusCode::METHOD_NOT_ALLOWED
            || (status == StatusCode::NOT_FOUND && body["message"] == "no such endpoint");
        if !unrouted {
            served.insert(method.as_str().to_lowercase());
        }
    }
    served
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_method_the_router_serves() {
    let app = app(FakeBackend::with(&[]), 1 << 20);
    let (status, doc) = call(&app, Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK, "the document needs no key");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().unwrap();
    let documented: BTreeMap<String, BTreeSet<String>> = paths
        .iter()
        .map(|(p, item)| (p.clone(), item.as_object().unwrap().keys().cloned().collect()))
        .collect();
    // Every template the router knows (the metrics' fixed set) and every documented path.
    let templates: BTreeSet<&str> =
        super::ROUTES.iter().copied().chain(paths.keys().map(String::as_str)).collect();
    let mut served = BTreeMap::new();
    for template in templates {
        let methods = served_methods(&app, template).await;
        // The original service's `/sandbox/{id}` proxy is mounted only with PROXY_BASE_URL (it
        // is sandbox traffic, not this API): a template served by no method here is not a route.
        if !methods.is_empty() || paths.contains_key(template) {
            served.insert(template.to_string(), methods);
        }
    }
    assert_eq!(documented, served);
}

#[tokio::test]
async fn the_openapi_document_names_the_key_and_the_error_shape() {
    let doc = serde_json::to_value(super::openapi::document()).unwrap();
    let scheme = &doc["components"]["securitySchemes"][super::openapi::API_KEY_SCHEME];
    assert_eq!((scheme["type"].as_str(), scheme["in"].as_str()), (Some("apiKey"), Some("header")));
    assert_eq!(scheme["name"], "X-API-Key");
    let public = ["/health", "/livez", "/readyz", "/metrics", "/openapi.json"];
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let at = format!("{method} {path}");
            // Public operations override the document's default requirement with none.
            let security = op.get("security").unwrap_or(&doc["security"]);
            let needs_key = security.as_array().unwrap().iter().any(|s| s.get("api_key").is_some());
            assert_eq!(needs_key, !public.contains(&path.as_str()), "{at}: {security}");
            let responses = op["responses"].as_object().unwrap();
            assert!(responses.contains_key("431") && responses.contains_key("414"), "{at}");
            for (code, response) in responses {
                let schema = &response["content"]["application/json"]["schema"]["$ref"];
                if !code.starts_with('2') {
                    assert_eq!(schema, "#/components/schemas/ErrorBody", "{at} {code}");
                }
            }
            if needs_key {
                assert!(responses.contains_key("401"), "{at} does not document 401");
            }
        }
    }
    let error = &doc["components"]["schemas"]["ErrorBody"];
    assert_eq!(error["required"], json!(["error", "message"]));
    // The documented bounds are the validators' (schemathesis generates from them).
    use crate::runtime::spec::{
        MAX_ID, MAX_RESOURCE_FACTOR, MAX_SESSION_ID_LEN, MIN_RESOURCE_FACTOR,
    };
    let start = &doc["components"]["schemas"]["StartRequest"]["properties"];
    assert_eq!(start["resource_factor"]["minimum"].as_f64(), Some(MIN_RESOURCE_FACTOR));
    assert_eq!(start["resource_factor"]["maximum"].as_f64(), Some(MAX_RESOURCE_FACTOR));
    assert_eq!(start["session_id"]["maxLength"], json!(MAX_SESSION_ID_LEN));
    for field in ["run_as_user", "run_as_group", "fs_group"] {
        assert_eq!(start[field]["maximum"], json!(MAX_ID), "{field}");
    }
}
