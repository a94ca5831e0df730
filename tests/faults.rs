//! Fault injection on the process backend: the service is killed with SIGKILL while starts, stops,
//! pauses and resumes are in flight, records are corrupted while it is down, and a second instance
//! is pointed at the same state directory. After each round the invariants are checked against
//! what really runs: every agent process is listed (with a status that accounts for it), every
//! listed runtime is real, no session has two runtimes, and nothing is left after `/stop`.
//!
//! Violations are collected rather than asserted one by one, so a failing run names them all; the
//! test prints `fault rounds: N, invariant violations: M` and fails if M > 0.
//! Run: `cargo test --test faults` (scripts/test.sh, stage "Rust: build, unit tests").

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{API_KEY, Service, StateDir};
use serde_json::{Value, json};

/// Sessions per round: enough for requests to overlap the kill, few enough to stay quick.
const SESSIONS: usize = 5;
/// How long after the requests go out the service is killed: before they arrive, while they are
/// handled, and after most have answered.
const KILL_DELAYS_MS: [u64; 3] = [5, 40, 150];
/// How long the invariants get to hold after a restart (killed processes take a moment to go).
const SETTLE: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Tally {
    rounds: usize,
    violations: Vec<String>,
}

impl Tally {
    fn record(&mut self, round: &str, found: Vec<String>) {
        for v in found {
            eprintln!("VIOLATION [{round}] {v}");
            self.violations.push(format!("[{round}] {v}"));
        }
    }
}

/// Live processes of this state directory's agents, by runtime id, found through the marker
/// the backend puts in every agent's environment (so also those no record mentions).
fn agent_processes(state: &StateDir) -> BTreeMap<String, Vec<i32>> {
    let runtimes = state.path().canonicalize().unwrap().join("runtimes");
    let prefix = format!("RUNTIME_API_RUNTIME_DIR={}/", runtimes.display());
    let mut found: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
        let marker = environ.split(|b| *b == 0).find_map(|e| e.strip_prefix(prefix.as_bytes()));
        if let Some(id) = marker.and_then(|m| std::str::from_utf8(m).ok()) {
            if common::pid_alive(i64::from(pid)) {
                found.entry(id.to_string()).or_default().push(pid);
            }
        }
    }
    found
}

/// Runtime directories on disk (not in `trash/`).
fn runtime_dirs(state: &StateDir) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(state.path().join("runtimes")) else { return Vec::new() };
    entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
}

async fn list_all(svc: &Service) -> Result<Vec<Value>, String> {
    let resp = svc
        .request(reqwest::Method::GET, "/list?status=all")
        .send()
        .await
        .map_err(|e| format!("/list failed: {e}"))?;
    let status = resp.status();
    let body: Value = resp.json().await.map_err(|e| format!("/list body: {e}"))?;
    if status != 200 {
        return Err(format!("/list answered {status}: {body}"));
    }
    Ok(body["runtimes"].as_array().cloned().unwrap_or_default())
}

async fn agent_answers(url: &str) -> bool {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
    client.get(format!("{url}/alive")).send().await.is_ok_and(|r| r.status().is_success())
}

/// One pass over the invariants; an empty answer means they hold.
async fn violations(svc: &Service, state: &StateDir) -> Vec<String> {
    let listed = match list_all(svc).await {
        Ok(listed) => listed,
        Err(e) => return vec![e],
    };
    let agents = agent_processes(state);
    let dirs = runtime_dirs(state);
    let mut found = Vec::new();
    let mut sessions: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for runtime in &listed {
        let id = runtime["runtime_id"].as_str().unwrap_or_default();
        let status = runtime["status"].as_str().unwrap_or_default();
        let session = runtime["session_id"].as_str().unwrap_or_default();
        // An unreadable record has no session to speak for (its id is unknown).
        if !session.is_empty() {
            sessions.entry(session).or_default().push(id);
        }
        let runs = agents.contains_key(id);
        match status {
            "starting" | "running" if !runs => {
                found.push(format!("{id} is listed as {status} but no agent process runs"));
            }
            "running" if !agent_answers(runtime["url"].as_str().unwrap_or_default()).await => {
                found.push(format!("{id} is listed as running but its agent does not answer"));
            }
            "paused" | "error" | "stopped" if runs => {
                found.push(format!("{id} is listed as {status} but its agent still runs"));
            }
            _ => {}
        }
        if !dirs.iter().any(|d| d == id) {
            found.push(format!("{id} is listed but has no directory on disk"));
        }
    }
    for (id, pids) in &agents {
        if !listed.iter().any(|r| r["runtime_id"] == id.as_str()) {
            found.push(format!("agent processes {pids:?} of {id} run but {id} is not listed"));
        }
    }
    for dir in &dirs {
        if !listed.iter().any(|r| r["runtime_id"] == dir.as_str()) {
            found.push(format!("directory runtimes/{dir} exists but no runtime lists it"));
        }
    }
    for (session, ids) in sessions {
        if ids.len() > 1 {
            found.push(format!("session {session} has {} runtimes: {ids:?}", ids.len()));
        }
    }
    found
}

/// The invariants, given [`SETTLE`] to hold; what still fails then is returned.
async fn settled_violations(svc: &Service, state: &StateDir) -> Vec<String> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let found = violations(svc, state).await;
        if found.is_empty() || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops every listed runtime; then nothing may be listed, run, or remain on disk.
async fn stop_everything(svc: &Service, state: &StateDir) -> Vec<String> {
    let mut found = Vec::new();
    for runtime in list_all(svc).await.unwrap_or_default() {
        let (code, body) = svc.post("/stop", json!({"runtime_id": runtime["runtime_id"]})).await;
        if code != 200 {
            found.push(format!("/stop of {} answered {code}: {body}", runtime["runtime_id"]));
        }
    }
    let deadline = Instant::now() + SETTLE;
    loop {
        let listed = list_all(svc).await.map(|l| l.len()).unwrap_or(usize::MAX);
        let agents = agent_processes(state);
        let dirs = runtime_dirs(state);
        let trash = std::fs::read_dir(state.path().join("trash")).map_or(0, |d| d.count());
        if listed == 0 && agents.is_empty() && dirs.is_empty() && trash == 0 {
            return found;
        }
        if Instant::now() > deadline {
            found.push(format!(
                "after /stop of everything: {listed} listed, agents {agents:?}, directories {dirs:?}, {trash} in trash"
            ));
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A retried `/start` of every session answers 200 and brings it to running (a crash must not
/// leave a session that cannot start again, nor one whose ports collide).
async fn restart_sessions(svc: &Service, sessions: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let mut ids = Vec::new();
    for session in sessions {
        let (code, body) = svc.post("/start", start_body(session)).await;
        match (code, body["runtime_id"].as_str()) {
            (200, Some(id)) => ids.push(id.to_string()),
            _ => found.push(format!("retried /start of {session} answered {code}: {body}")),
        }
    }
    for id in ids {
        if let Err(e) = until_status(svc, &id, "running").await {
            found.push(e);
        }
    }
    found
}

async fn until_status(svc: &Service, id: &str, want: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, body) = svc.get(&format!("/runtime/{id}")).await;
        if code == 200 && body["status"] == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{id} never became {want}: {code} {body}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn start_body(session: &str) -> Value {
    json!({"image": "ghcr.io/openhands/agent-server:test", "session_id": session})
}

fn sessions(round: &str) -> Vec<String> {
    (0..SESSIONS).map(|i| format!("{round}-{i}")).collect()
}

/// Starts every session and waits until each runs; returns their runtime ids.
async fn running(svc: &Service, sessions: &[String]) -> Vec<String> {
    let mut ids = Vec::new();
    for session in sessions {
        ids.push(svc.start_session(session).await["runtime_id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        svc.wait_running(id).await;
    }
    ids
}

/// Sends one request per body at once, kills the service `delay` later, and returns the
/// bodies whose request answered 200 before the kill.
async fn kill_during(
    svc: &mut Service,
    path: &str,
    bodies: Vec<Value>,
    delay: Duration,
) -> Vec<Value> {
    let requests: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            let request = svc.request(reqwest::Method::POST, path).json(&body);
            tokio::spawn(async move {
                let ok = request.send().await.is_ok_and(|r| r.status() == 200);
                ok.then_some(body)
            })
        })
        .collect();
    tokio::time::sleep(delay).await;
    svc.kill();
    let mut answered = Vec::new();
    for request in requests {
        if let Ok(Some(body)) = request.await {
            answered.push(body);
        }
    }
    answered
}

/// Which operation is in flight when the service is killed.
#[derive(Debug, Clone, Copy)]
enum Operation {
    Start,
    Stop,
    Pause,
    Resume,
}

/// One round: prepare, kill the service during `op`, restart it, check the invariants, check
/// that answered operations took effect, restart every session, stop everything.
async fn kill_round(state: &StateDir, op: Operation, delay_ms: u64, tally: &mut Tally) {
    let round = format!("kill-9 during {op:?} after {delay_ms} ms").to_lowercase();
    let names = sessions(&format!("{op:?}-{delay_ms}").to_lowercase());
    let mut svc = Service::start(state, &[]).await;
    let ids = match op {
        Operation::Start => Vec::new(),
        _ => running(&svc, &names).await,
    };
    if let Operation::Resume = op {
        for id in &ids {
            let (code, body) = svc.post("/pause", json!({"runtime_id": id})).await;
            assert_eq!(code, 200, "{body}");
        }
    }
    let bodies: Vec<Value> = match op {
        Operation::Start => names.iter().map(|s| start_body(s)).collect(),
        _ => ids.iter().map(|id| json!({"runtime_id": id})).collect(),
    };
    let path = match op {
        Operation::Start => "/start",
        Operation::Stop => "/stop",
        Operation::Pause => "/pause",
        Operation::Resume => "/resume",
    };
    let answered = kill_during(&mut svc, path, bodies, Duration::from_millis(delay_ms)).await;
    drop(svc);

    let svc = Service::start(state, &[]).await;
    let mut found = settled_violations(&svc, state).await;
    // What answered 200 before the kill must have happened.
    for body in &answered {
        let (code, view) = match op {
            Operation::Start => {
                svc.get(&format!("/sessions/{}", body["session_id"].as_str().unwrap())).await
            }
            _ => svc.get(&format!("/runtime/{}", body["runtime_id"].as_str().unwrap())).await,
        };
        let ok = match op {
            Operation::Start => code == 200,
            Operation::Stop => code == 404,
            Operation::Pause => code == 200 && view["status"] == "paused",
            Operation::Resume => code == 200 && view["status"] != "paused",
        };
        if !ok {
            found.push(format!(
                "{path} of {body} answered 200, but after the restart: {code} {view}"
            ));
        }
    }
    found.extend(restart_sessions(&svc, &names).await);
    found.extend(settled_violations(&svc, state).await);
    found.extend(stop_everything(&svc, state).await);
    eprintln!("round [{round}]: {} of {} answered before the kill", answered.len(), names.len());
    tally.rounds += 1;
    tally.record(&round, found);
}

/// One way of damaging a record file.
type Damage<'a> = Box<dyn Fn(&Path) + 'a>;

/// Records damaged while the service is down: each runtime of the round gets another kind of
/// damage. Unreadable ones must show as `error` with their agent stopped; a directory without a
/// record goes, with its agent.
async fn corrupt_round(state: &StateDir, tally: &mut Tally) {
    let round = "corrupt and truncated records";
    let names = sessions("corrupt");
    let mut svc = Service::start(state, &[]).await;
    let ids = running(&svc, &names).await;
    svc.kill();
    let dir = |id: &str| state.path().join("runtimes").join(id);
    let record = |id: &str| dir(id).join("record.json");
    let whole = std::fs::read(record(&ids[0])).unwrap();
    let damage: [(&str, Damage<'_>); SESSIONS] = [
        ("truncated", Box::new(|p| std::fs::write(p, &whole[..whole.len() / 3]).unwrap())),
        ("empty", Box::new(|p| std::fs::write(p, b"").unwrap())),
        ("garbage", Box::new(|p| std::fs::write(p, [0xff, 0x00, 0x7b, 0x22]).unwrap())),
        ("wrong shape", Box::new(|p| std::fs::write(p, b"{\"runtime_id\": 7}").unwrap())),
        ("removed", Box::new(|p| std::fs::remove_file(p).unwrap())),
    ];
    for ((kind, damage), id) in damage.iter().zip(&ids) {
        damage(&record(id));
        eprintln!("round [{round}]: {id}: {kind}");
    }
    // And a temporary file, as a crash during a rewrite leaves.
    std::fs::write(dir(&ids[0]).join(".record.json.tmp"), b"{\"runt").unwrap();
    drop(svc);

    let svc = Service::start(state, &[]).await;
    let mut found = settled_violations(&svc, state).await;
    for (i, id) in ids.iter().enumerate() {
        let (code, view) = svc.get(&format!("/runtime/{id}")).await;
        let want_error = i < SESSIONS - 1;
        let ok = if want_error {
            code == 200 && view["status"] == "error"
        } else {
            code == 404 && !dir(id).exists()
        };
        if !ok {
            found.push(format!("damaged record of {id}: {code} {view}"));
        }
    }
    found.extend(restart_sessions(&svc, &names).await);
    found.extend(settled_violations(&svc, state).await);
    found.extend(stop_everything(&svc, state).await);
    tally.rounds += 1;
    tally.record(round, found);
}

/// A second service on the same state directory must refuse to run and touch nothing.
async fn second_instance_round(state: &StateDir, tally: &mut Tally) {
    let round = "second instance on the same state directory";
    let names = sessions("second");
    let svc = Service::start(state, &[]).await;
    let ids = running(&svc, &names).await;
    let before = agent_processes(state);
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_runtime-api"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("API_KEY", API_KEY)
        .env("BIND_ADDRESS", "127.0.0.1")
        .env("SERVER_PORT", common::free_port().to_string())
        .env("BACKEND", "process")
        .env("STATE_DIR", state.path())
        .env("PROCESS_AGENT_COMMAND", common::stand_in_agent_command())
        .output();
    let output = tokio::time::timeout(Duration::from_secs(20), output).await;
    let mut found = Vec::new();
    match output {
        Ok(Ok(out)) if !out.status.success() => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if !stderr.contains("in use by another runtime-api process") {
                found.push(format!("the second instance failed without saying why: {stderr}"));
            }
        }
        other => found.push(format!("the second instance did not refuse to run: {other:?}")),
    }
    if agent_processes(state) != before {
        found.push("the second instance changed the running agents".into());
    }
    for id in &ids {
        if let Err(e) = until_status(&svc, id, "running").await {
            found.push(e);
        }
    }
    found.extend(settled_violations(&svc, state).await);
    found.extend(stop_everything(&svc, state).await);
    tally.rounds += 1;
    tally.record(round, found);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_and_damaged_state_never_hide_or_duplicate_an_agent() {
    let state = StateDir::new();
    let mut tally = Tally::default();
    let started = Instant::now();
    for op in [Operation::Start, Operation::Stop, Operation::Pause, Operation::Resume] {
        for delay in KILL_DELAYS_MS {
            kill_round(&state, op, delay, &mut tally).await;
        }
    }
    corrupt_round(&state, &mut tally).await;
    second_instance_round(&state, &mut tally).await;
    println!(
        "fault rounds: {}, invariant violations: {} ({:.1} s)",
        tally.rounds,
        tally.violations.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(tally.violations.is_empty(), "invariant violations:\n{}", tally.violations.join("\n"));
}
