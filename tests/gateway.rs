//! The sandbox gateway over real sockets: the real binary in `ROUTING_MODE=gateway` (and with
//! `PROXY_BASE_URL`), the process backend, the stand-in agent (which reports what it received and
//! echoes WebSocket messages).

mod common;

use std::time::{Duration, Instant};

use common::{API_KEY, Service, StateDir, free_port, stand_in_agent_command};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, Message};

const BASE: &str = "sb.test";

struct Gateway {
    svc: Service,
    url: String,
    http: reqwest::Client,
}

impl Gateway {
    async fn start(state: &StateDir, extra: &[(&str, &str)]) -> Gateway {
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let port_text = port.to_string();
        let mut env = vec![
            ("ROUTING_MODE", "gateway"),
            ("GATEWAY_PORT", port_text.as_str()),
            ("GATEWAY_URL", url.as_str()),
            ("BASE_DOMAIN", BASE),
        ];
        env.extend_from_slice(extra);
        let svc = Service::start(state, &env).await;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        Gateway { svc, url, http }
    }

    async fn running(&self, session: &str) -> String {
        let started = self.svc.start_session(session).await;
        let id = started["runtime_id"].as_str().unwrap().to_string();
        self.svc.wait_running(&id).await;
        id
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}{path}", self.url))
    }

    async fn metrics(&self) -> String {
        let url = format!("{}/metrics", self.svc.base);
        self.http.get(url).send().await.unwrap().text().await.unwrap()
    }
}

async fn json_of(builder: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = builder.send().await.expect("the gateway answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}")))
}

/// Which runtime's agent answered (the stand-in reports its runtime directory).
fn answered_by(echo: &Value) -> String {
    let dir = echo["runtime_dir"].as_str().unwrap();
    dir.trim_end_matches('/').rsplit('/').next().unwrap().to_string()
}

fn header<'a>(echo: &'a Value, name: &str) -> Vec<&'a str> {
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0] == name)
        .map(|h| h[1].as_str().unwrap())
        .collect()
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {line_start} in:\n{text}"))
}

#[tokio::test]
async fn routes_by_path_and_host_and_forwards_what_the_client_sent() {
    let state = StateDir::new();
    let gw = Gateway::start(&state, &[]).await;
    let a = gw.running("session-a").await;
    let b = gw.running("session-b").await;
    let (_, view) = gw.svc.get(&format!("/runtime/{a}")).await;
    assert_eq!(view["url"], format!("{}/{a}", gw.url));
    assert_eq!(view["vscode_url"], format!("{}/{a}/vscode", gw.url));

    // By path: the prefix goes, the rest (encoded slashes, query) arrives as sent.
    let (code, echo) = json_of(
        gw.get(&format!("/{a}/echo/upload/%2Ftmp%2Fa.txt?x=%2F&y=1"))
            .header("X-API-Key", API_KEY)
            .header("Authorization", format!("Bearer {API_KEY}"))
            .header("X-Session-API-Key", "sandbox-key"),
    )
    .await;
    assert_eq!(code, 200, "{echo}");
    assert_eq!(answered_by(&echo), a);
    assert_eq!(echo["path"], "/echo/upload/%2Ftmp%2Fa.txt?x=%2F&y=1");
    assert!(header(&echo, "x-api-key").is_empty(), "the service key was forwarded: {echo}");
    assert!(header(&echo, "authorization").is_empty(), "the service key was forwarded: {echo}");
    assert_eq!(header(&echo, "x-session-api-key"), ["sandbox-key"]);
    assert_eq!(header(&echo, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(header(&echo, "x-forwarded-proto"), ["http"]);

    // By host: the whole path goes to the runtime the host names, whatever the path says.
    let (code, echo) =
        json_of(gw.get(&format!("/{b}/echo")).header("Host", format!("{a}.{BASE}"))).await;
    assert_eq!((code, answered_by(&echo)), (200, a.clone()));
    assert_eq!(echo["path"], format!("/{b}/echo"));
    assert_eq!(header(&echo, "x-forwarded-host"), [format!("{a}.{BASE}")]);
    // DNS spelling variants of the same name reach the same runtime.
    let shouting = format!("{}.SB.TEST.:80", b.to_uppercase());
    let (code, echo) = json_of(gw.get("/echo").header("Host", shouting)).await;
    assert_eq!((code, answered_by(&echo)), (200, b.clone()));
    // VS Code has no server in the stand-in: a clear 502, not a hang.
    let (code, body) = json_of(gw.get("/").header("Host", format!("vscode-{a}.{BASE}"))).await;
    assert_eq!((code, body["error"].as_str()), (502, Some("bad_gateway")), "{body}");

    // POST with a body, kept-alive connections reused: many requests, all answered.
    for i in 0..20 {
        let (code, echo) =
            json_of(gw.http.post(format!("{}/{a}/echo", gw.url)).body(vec![b'x'; 1000 + i])).await;
        assert_eq!((code, echo["body_bytes"].as_u64()), (200, Some(1000 + i as u64)));
    }

    // URLs never change across pause and resume.
    gw.svc.post("/pause", json!({"runtime_id": a})).await;
    let (_, resumed) = gw.svc.post("/resume", json!({"runtime_id": a})).await;
    assert_eq!(resumed["url"], view["url"]);
    let metrics = gw.metrics().await;
    assert!(
        metric(&metrics, "runtime_api_gateway_requests_total{port=\"agent\",code=\"200\"}") >= 23.0
    );
    assert!(metric(&metrics, "runtime_api_gateway_bytes_total{direction=\"request\"}") >= 20_000.0);
}

/// A small request through the gateway costs about what it costs direct: nothing waits for a
/// delayed ACK (40 ms on Linux) on either of its two connections.
#[tokio::test]
async fn small_requests_are_not_held_by_delayed_acks() {
    let state = StateDir::new();
    let gw = Gateway::start(&state, &[]).await;
    let a = gw.running("latency").await;
    let record: Value = serde_json::from_slice(
        &std::fs::read(state.path().join("runtimes").join(&a).join("record.json")).unwrap(),
    )
    .unwrap();
    let direct = format!("http://127.0.0.1:{}/alive", record["ports"]["agent"]);
    let through = format!("{}/{a}/alive", gw.url);
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (mut direct_times, mut gateway_times) = (Vec::new(), Vec::new());
    for _ in 0..40 {
        for (url, times) in [(&direct, &mut direct_times), (&through, &mut gateway_times)] {
            let t0 = Instant::now();
            assert_eq!(gw.http.get(url).send().await.unwrap().status(), 200);
            times.push(t0.elapsed());
        }
    }
    let (direct, through) = (median(direct_times), median(gateway_times));
    assert!(
        through < direct + Duration::from_millis(30),
        "median through the gateway {through:?}, direct {direct:?}"
    );
}

#[tokio::test]
async fn hostile_spellings_never_reach_another_runtime() {
    let state = StateDir::new();
    let gw = Gateway::start(&state, &[]).await;
    let a = gw.running("hostile-a").await;
    let b = gw.running("hostile-b").await;
    let encoded_b = format!("%{:02X}{}", b.as_bytes()[0], &b[1..]);
    for (path, status) in [
        (format!("/{}/echo", b.to_uppercase()), 404),
        (format!("/{encoded_b}/echo"), 404),
        (format!("/{b}./echo"), 404),
        (format!("/{b}%2Fecho"), 404),
        (format!("/{a}/../{b}/echo"), 400),
        (format!("/{a}/%2e%2E/{b}/echo"), 400),
        (format!("/{a}/.%2e/{b}/echo"), 400),
        ("/0123456789abcdef0123456789abcdef/echo".to_string(), 404),
    ] {
        // reqwest would normalise `..`: send the request target as written.
        let (code, body) = raw_get(&gw.url, &path, "127.0.0.1").await;
        assert_eq!(code, status, "{path}: {body}");
        let parsed: Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: {body}"));
        assert!(parsed["error"].is_string(), "{path}: {body}");
    }
    for host in [format!("{b}.{BASE}.evil"), format!("{b}%2e{BASE}"), format!("{b}.x.{BASE}")] {
        let (code, body) = raw_get(&gw.url, "/echo", &host).await;
        assert_eq!(code, 404, "{host}: {body}");
    }
    // A dot segment after a sandbox host is refused too.
    let (code, _) = raw_get(&gw.url, "/x/../echo", &format!("{a}.{BASE}")).await;
    assert_eq!(code, 400);

    // Oversized headers: the API's JSON 431, never forwarded.
    let (code, body) =
        json_of(gw.get(&format!("/{a}/echo")).header("X-Big", "b".repeat(40 * 1024))).await;
    assert_eq!((code, body["error"].as_str()), (431, Some("headers_too_large")), "{body}");
}

/// One HTTP/1.1 request written as is (clients normalise paths; attackers do not).
async fn raw_get(base: &str, target: &str, host: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let code = answer.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}

#[tokio::test]
async fn websockets_are_tunnelled_and_refused_for_stopped_runtimes() {
    let state = StateDir::new();
    let gw = Gateway::start(&state, &[]).await;
    let a = gw.running("ws").await;
    let ws_url = format!("{}/{a}/ws", gw.url.replace("http://", "ws://"));
    let (mut socket, response) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    assert_eq!(response.status(), 101);
    for message in ["hello", "événement", &"x".repeat(100_000)] {
        socket.send(Message::text(message)).await.unwrap();
        let echoed = socket.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), message);
    }
    assert_eq!(metric(&gw.metrics().await, "runtime_api_gateway_open_websockets"), 1.0);
    socket.close(None).await.unwrap();
    drop(socket);
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&gw.metrics().await, "runtime_api_gateway_open_websockets") != 0.0 {
        assert!(Instant::now() < deadline, "the tunnel stayed open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (code, _) = gw.svc.post("/stop", json!({"runtime_id": a})).await;
    assert_eq!(code, 200);
    match tokio_tungstenite::connect_async(&ws_url).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 404);
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"], "not_found");
        }
        other => panic!("a WebSocket to a stopped runtime must get a 404, got {other:?}"),
    }
}

#[tokio::test]
async fn twenty_requests_to_a_paused_runtime_resume_it_once() {
    let state = StateDir::new();
    let gw = Gateway::start(&state, &[]).await;
    let a = gw.running("sleepy").await;
    let (_, paused) = gw.svc.post("/pause", json!({"runtime_id": a})).await;
    assert_eq!(paused["status"], "paused");
    let requests = (0..20).map(|i| {
        let request = gw.get(&format!("/{a}/echo/{i}"));
        async move { json_of(request).await }
    });
    let answers = futures::future::join_all(requests).await;
    for (i, (code, echo)) in answers.iter().enumerate() {
        assert_eq!((*code, echo["path"].as_str()), (200, Some(format!("/echo/{i}").as_str())));
    }
    let resumes = gw.svc.log_text().matches("runtime resumed").count();
    assert_eq!(resumes, 1, "{}", gw.svc.log_text());
    let metrics = gw.metrics().await;
    assert_eq!(metric(&metrics, "runtime_api_gateway_wakes_total{outcome=\"ok\"}"), 1.0);
    assert_eq!(metric(&metrics, "runtime_api_gateway_wake_duration_seconds_count"), 1.0);
    let (_, view) = gw.svc.get(&format!("/runtime/{a}")).await;
    assert_eq!(view["status"], "running");
}

#[tokio::test]
async fn stopped_unknown_errored_slow_and_busy_runtimes_get_clear_errors() {
    let state = StateDir::new();
    let gw = Gateway::start(
        &state,
        &[("GATEWAY_UPSTREAM_TIMEOUT_SECONDS", "1"), ("GATEWAY_MAX_CONNECTIONS_PER_RUNTIME", "2")],
    )
    .await;
    let a = gw.running("errors-a").await;
    let (code, body) = json_of(gw.get(&format!("/{a}/slow?seconds=3"))).await;
    assert_eq!((code, body["error"].as_str()), (504, Some("gateway_timeout")), "{body}");

    // Two slow requests hold both connections; the third is refused at once.
    let slow = || gw.get(&format!("/{a}/slow?seconds=0.9")).send();
    let (first, second) = (slow(), slow());
    let third = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        json_of(gw.get(&format!("/{a}/echo"))).await
    };
    let (first, second, (code, body)) = tokio::join!(first, second, third);
    assert_eq!((first.unwrap().status().as_u16(), second.unwrap().status().as_u16()), (200, 200));
    assert_eq!((code, body["error"].as_str()), (429, Some("too_many_connections")), "{body}");

    // An agent that died: 502 with the runtime's status detail.
    let record: Value = serde_json::from_slice(
        &std::fs::read(state.path().join("runtimes").join(&a).join("record.json")).unwrap(),
    )
    .unwrap();
    let pid = record["process"]["pid"].as_i64().unwrap() as i32;
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    gw.svc.wait_for(&a, "error", |b| b["status"] == "error").await;
    let (code, body) = json_of(gw.get(&format!("/{a}/echo"))).await;
    assert_eq!(code, 502, "{body}");
    assert!(body["message"].as_str().unwrap().contains("killed by signal 9"), "{body}");

    gw.svc.post("/stop", json!({"runtime_id": a})).await;
    for gone in [a.as_str(), "ffffffffffffffffffffffffffffffff"] {
        let (code, body) = json_of(gw.get(&format!("/{gone}/echo"))).await;
        assert_eq!((code, body["error"].as_str()), (404, Some("not_found")), "{body}");
    }
}

#[tokio::test]
async fn a_wake_that_takes_too_long_is_a_503_with_retry_after() {
    let state = StateDir::new();
    let slow_agent = format!("sh -c 'sleep 3 && exec {}'", stand_in_agent_command());
    let gw = Gateway::start(
        &state,
        &[("GATEWAY_WAKE_TIMEOUT_SECONDS", "1"), ("PROCESS_AGENT_COMMAND", &slow_agent)],
    )
    .await;
    let a = gw.running("slow-wake").await;
    gw.svc.post("/pause", json!({"runtime_id": a})).await;
    let resp = gw.get(&format!("/{a}/echo")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "5");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "unavailable");
    // The wake goes on: the runtime comes up, and the next request is served.
    gw.svc.wait_running(&a).await;
    let (code, _) = json_of(gw.get(&format!("/{a}/echo"))).await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn hundred_megabyte_bodies_stream_through_in_both_directions() {
    let state = StateDir::new();
    let gw = Gateway::start(&state, &[]).await;
    let a = gw.running("bulk").await;
    const SIZE: usize = 100 * 1024 * 1024;
    let mut resp = gw.get(&format!("/{a}/bytes?n={SIZE}")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut received = 0;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        received += chunk.len();
    }
    assert_eq!(received, SIZE);
    let chunks = futures::stream::iter((0..100).map(|_| {
        Ok::<_, std::io::Error>(http_body::Frame::data(bytes::Bytes::from(vec![b'u'; 1 << 20])))
    }));
    let (code, echo) = json_of(
        gw.http
            .post(format!("{}/{a}/echo", gw.url))
            .header("Content-Length", SIZE.to_string())
            .body(reqwest::Body::wrap(http_body_util::StreamBody::new(chunks))),
    )
    .await;
    assert_eq!((code, echo["body_bytes"].as_u64()), (200, Some(SIZE as u64)));
    // Neither body ever sat in the service's memory.
    let status = std::fs::read_to_string(format!("/proc/{}/status", gw.svc.pid())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(peak_kib < 64 * 1024, "peak resident memory {peak_kib} KiB");
}

#[tokio::test]
async fn the_original_sandbox_proxy_on_the_api_port() {
    let state = StateDir::new();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let svc = Service::start_on(&state, port, &[("PROXY_BASE_URL", &format!("{base}/"))]).await;
    let started = svc.start_session("proxied").await;
    let a = started["runtime_id"].as_str().unwrap().to_string();
    assert_eq!(started["url"], format!("{base}/sandbox/{a}"));
    assert_eq!(started["vscode_url"], format!("{base}/sandbox/{a}/vscode"));
    svc.wait_running(&a).await;
    let http = reqwest::Client::new();
    // No API key needed (the sandbox checks its own key), and the one sent is not forwarded.
    let (code, echo) = json_of(
        http.post(format!("{base}/sandbox/{a}/echo/upload/%2Fworkspace%2Ff.txt"))
            .header("X-API-Key", API_KEY)
            .body("data"),
    )
    .await;
    assert_eq!(code, 200, "{echo}");
    assert_eq!(echo["path"], "/echo/upload/%2Fworkspace%2Ff.txt");
    assert!(header(&echo, "x-api-key").is_empty());
    let (code, echo) = json_of(http.get(format!("{base}/sandbox/{a}?q=1"))).await;
    assert_eq!((code, echo["path"].as_str()), (200, Some("/?q=1")));
    // The API itself still needs its key.
    let (code, _) = json_of(http.get(format!("{base}/list"))).await;
    assert_eq!(code, 401);
}
