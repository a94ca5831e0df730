//! Fault injection on the Kubernetes backend, against the real kube-apiserver and kwok nodes of
//! `scripts/cluster.sh`: the service is killed with SIGKILL while starts, stops, pauses and
//! resumes are in flight; the API server is killed while starts are in flight; two replicas race
//! on the same sessions, and one of them is killed mid-race. kwok pods run nothing, so the
//! invariants are about what the namespace holds and what `/list?status=all` says:
//! - every object labelled as ours (records, Secrets, pods, Services, Ingresses,
//!   NetworkPolicies, claims) belongs to a listed runtime;
//! - every listed runtime is real: one record, its Secret, Service, Ingress and
//!   claim, one pod of the record's generation when running and none when paused;
//! - no session has two runtimes, neither in `/list` nor among the objects;
//! - a retried `/start` of every session answers with one runtime, which comes to run;
//! - after `/stop` of everything, nothing labelled `app.kubernetes.io/managed-by=runtime-api` is left.
//!
//! Violations are collected rather than asserted one by one, so a failing run names them all; the
//! test prints `fault rounds: N, invariant violations: M` and fails if M > 0. It kills the API
//! server, so it runs alone, after the other Kubernetes tests (scripts/test.sh, stage "Kubernetes
//! backend integration tests"): `eval "$(scripts/cluster.sh up)" && cargo test --test kfaults -- --include-ignored`

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::apiserver::ApiServer;
use common::namespace::TestNamespace;
use common::{Service, StateDir};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, Secret, Service as KubeService,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

const MANAGED: &str = "app.kubernetes.io/managed-by=runtime-api";
const RUNTIME_ID_LABEL: &str = "runtime-api.openhands.dev/runtime-id";
const SESSION_HASH_LABEL: &str = "runtime-api.openhands.dev/session-hash";
const PAUSED_ANNOTATION: &str = "runtime-api.openhands.dev/paused";
const GENERATION_ANNOTATION: &str = "runtime-api.openhands.dev/pod-generation";

/// Sessions per round: enough for requests to overlap the kill, few enough to stay quick.
const SESSIONS: usize = 5;
/// How long after the requests go out the service is killed: while the first writes are on the
/// wire, in the middle of them, and after most requests have answered.
const KILL_DELAYS_MS: [u64; 3] = [20, 200, 1500];
/// Starts sent during the API server outage round, one every `OUTAGE_STEP`; the API server is
/// killed `OUTAGE_KILL_AFTER` after the first (a start takes about 200 ms on a quiet machine).
const OUTAGE_STARTS: u32 = 6;
const OUTAGE_STEP: Duration = Duration::from_millis(120);
const OUTAGE_KILL_AFTER: Duration = Duration::from_millis(300);
/// How long the invariants get to hold: what a crash leaves is the orphan sweep's, which runs on
/// the replica holding the lease (a killed holder's lease expires after LEASE_DURATION_SECONDS),
/// every MAINTENANCE_INTERVAL_SECONDS, on objects older than ORPHAN_GRACE_SECONDS.
const SETTLE: Duration = Duration::from_secs(20);

/// The service's settings here: maintenance as often as the service allows, so that what a
/// crash leaves is swept within seconds; workspace claims, so they are among the objects checked;
/// no idle pause (kwok pods have no agent server to ask).
const SERVICE_ENV: [(&str, &str); 6] = [
    ("BASE_DOMAIN", "sandbox.test"),
    ("WORKSPACE_STORAGE_SIZE", "1Gi"),
    ("ORPHAN_GRACE_SECONDS", "2"),
    ("MAINTENANCE_INTERVAL_SECONDS", "1"),
    ("LEASE_DURATION_SECONDS", "3"),
    ("RUNTIME_IDLE_SECONDS", "0"),
];

#[derive(Default)]
struct Tally {
    rounds: usize,
    violations: Vec<String>,
}

impl Tally {
    fn record(&mut self, round: &str, began: Instant, found: Vec<String>) {
        let took = began.elapsed().as_secs_f64();
        eprintln!("round [{round}]: {} violations ({took:.1} s)", found.len());
        for v in found {
            eprintln!("VIOLATION [{round}] {v}");
            self.violations.push(format!("[{round}] {v}"));
        }
        self.rounds += 1;
    }
}

/// One object labelled as ours, as the cluster holds it.
#[derive(Debug, Clone)]
struct Object {
    kind: &'static str,
    name: String,
    runtime_id: String,
    session_hash: String,
    deleting: bool,
    /// Records only: the paused annotation and the pod generation.
    paused: bool,
    generation: String,
}

impl Object {
    fn new(kind: &'static str, meta: &ObjectMeta) -> Object {
        let label = |k: &str| meta.labels.as_ref().and_then(|l| l.get(k)).cloned();
        let annotation = |k: &str| meta.annotations.as_ref().and_then(|a| a.get(k)).cloned();
        Object {
            kind,
            name: meta.name.clone().unwrap_or_default(),
            runtime_id: label(RUNTIME_ID_LABEL).unwrap_or_default(),
            session_hash: label(SESSION_HASH_LABEL).unwrap_or_default(),
            deleting: meta.deletion_timestamp.is_some(),
            paused: annotation(PAUSED_ANNOTATION).as_deref() == Some("true"),
            generation: annotation(GENERATION_ANNOTATION).unwrap_or_default(),
        }
    }

    fn describe(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
}

impl TestNamespace {
    /// A service instance on this namespace, ready (its caches synced).
    async fn service(&self, state: &StateDir) -> Service {
        let kubeconfig = self.service_account_kubeconfig();
        let mut env = vec![
            ("BACKEND", "kubernetes"),
            ("NAMESPACE", self.name.as_str()),
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
        ];
        env.extend_from_slice(&SERVICE_ENV);
        let svc = Service::start(state, &env).await;
        svc.wait_ready().await;
        svc
    }

    async fn list<K>(&self, kind: &'static str) -> Result<Vec<Object>, String>
    where
        K: Resource<Scope = NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        <K as Resource>::DynamicType: Default,
    {
        let api: Api<K> = Api::namespaced(self.admin.clone(), &self.name);
        let list = api.list(&ListParams::default().labels(MANAGED)).await;
        let list = list.map_err(|e| format!("listing {kind} objects: {e}"))?;
        Ok(list.items.iter().map(|o| Object::new(kind, o.meta())).collect())
    }

    /// Every object labelled as ours in the namespace, straight from the API server.
    async fn objects(&self) -> Result<Vec<Object>, String> {
        let mut all = self.list::<ConfigMap>("record").await?;
        all.extend(self.list::<Secret>("secret").await?);
        all.extend(self.list::<Pod>("pod").await?);
        all.extend(self.list::<KubeService>("service").await?);
        all.extend(self.list::<Ingress>("ingress").await?);
        all.extend(self.list::<NetworkPolicy>("networkpolicy").await?);
        all.extend(self.list::<PersistentVolumeClaim>("claim").await?);
        Ok(all)
    }
}

/// The invariants over one `/list?status=all` answer and one snapshot of the namespace, as a pure
/// function; an empty answer means they hold. Objects being deleted are on their way out and
/// count for nothing; a settled namespace has only running and paused runtimes (kwok pods become
/// ready at once), so a runtime still `starting` or in `error` is reported too.
fn violations(listed: &[Value], objects: &[Object]) -> Vec<String> {
    let live: Vec<&Object> = objects.iter().filter(|o| !o.deleting).collect();
    let mut found = Vec::new();
    let mut listed_ids = BTreeSet::new();
    let mut sessions: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for runtime in listed {
        let id = runtime["runtime_id"].as_str().unwrap_or_default();
        let status = runtime["status"].as_str().unwrap_or_default();
        listed_ids.insert(id);
        sessions.entry(runtime["session_id"].as_str().unwrap_or_default()).or_default().push(id);
        let of = |kind: &str| -> Vec<&Object> {
            live.iter().filter(|o| o.runtime_id == id && o.kind == kind).copied().collect()
        };
        let records = of("record");
        let [record] = records[..] else {
            found.push(format!("{id} is listed as {status} but has {} records", records.len()));
            continue;
        };
        if runtime["session_api_key"].as_str().is_none_or(str::is_empty) {
            found.push(format!("{id} is listed without a session key"));
        }
        for kind in ["secret", "service", "ingress", "claim"] {
            let n = of(kind).len();
            if n != 1 {
                found.push(format!("{id} is listed as {status} but has {n} {kind} objects"));
            }
        }
        let pods: Vec<String> = of("pod").iter().map(|p| p.name.clone()).collect();
        let current = format!("oh-rt-{id}-{}", record.generation);
        match status {
            "running" if pods != [current.clone()] => found.push(format!(
                "{id} is listed as running, pods {pods:?} (its generation's is {current})"
            )),
            "paused" if !pods.is_empty() => {
                found.push(format!("{id} is listed as paused but its pods {pods:?} exist"))
            }
            "running" | "paused" => {}
            other => found.push(format!(
                "{id} is still {other} ({}), pods {pods:?}",
                runtime["status_detail"].as_str().unwrap_or_default()
            )),
        }
        if record.paused != (status == "paused") {
            found.push(format!(
                "{id} is listed as {status}, its record says paused={}",
                record.paused
            ));
        }
    }
    for (session, ids) in sessions {
        if ids.len() > 1 {
            found.push(format!("session {session} is listed with {} runtimes: {ids:?}", ids.len()));
        }
    }
    // One NetworkPolicy protects every sandbox; none of a runtime's own (earlier versions').
    let shared = |o: &&&Object| o.kind == "networkpolicy" && o.runtime_id.is_empty();
    if !listed.is_empty() && !live.iter().any(|o| shared(&o) && o.name == "oh-sandboxes") {
        found.push("no shared network policy oh-sandboxes protects the sandboxes".into());
    }
    for o in live.iter().filter(|o| o.kind == "networkpolicy" && !o.runtime_id.is_empty()) {
        found.push(format!("a per-sandbox {} exists", o.describe()));
    }
    for o in live.iter().filter(|o| !shared(o)) {
        if !listed_ids.contains(o.runtime_id.as_str()) {
            found.push(format!("{} of runtime {} exists, not listed", o.describe(), o.runtime_id));
        }
    }
    let mut per_session: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for o in live.iter().filter(|o| !shared(o)) {
        per_session.entry(&o.session_hash).or_default().insert(&o.runtime_id);
    }
    for (hash, ids) in per_session {
        if ids.len() > 1 {
            found.push(format!(
                "session hash {hash} has objects of {} runtimes: {ids:?}",
                ids.len()
            ));
        }
    }
    found
}

/// Damage done to a snapshot of the namespace and a `/list` answer.
type Damage<'a> = &'a dyn Fn(&mut Vec<Object>, &mut Vec<Value>);

/// The checker itself: a sound namespace passes, and each kind of damage is named.
#[test]
fn the_invariant_checker_names_each_kind_of_violation() {
    let object = |kind, name: String, id: &str, paused| Object {
        kind,
        name,
        runtime_id: id.into(),
        session_hash: format!("hash-{id}"),
        deleting: false,
        paused,
        generation: "1".into(),
    };
    let runtime = |id: &str, paused: bool| {
        let mut all = vec![object("record", format!("oh-session-{id}"), id, paused)];
        for kind in ["secret", "service", "ingress", "claim"] {
            all.push(object(kind, format!("oh-rt-{id}"), id, false));
        }
        if !paused {
            all.push(object("pod", format!("oh-rt-{id}-1"), id, false));
        }
        all
    };
    let listed = |id: &str, session: &str, status: &str| json!({"runtime_id": id, "session_id": session, "status": status, "session_api_key": "k"});
    let policy = object("networkpolicy", "oh-sandboxes".into(), "", false);
    let sound = [runtime("a", false), runtime("b", true), vec![policy]].concat();
    let both = [listed("a", "s-a", "running"), listed("b", "s-b", "paused")];
    assert_eq!(violations(&both, &sound), Vec::<String>::new());

    let damaged = |damage: Damage<'_>| {
        let (mut objects, mut listed) = (sound.clone(), both.to_vec());
        damage(&mut objects, &mut listed);
        violations(&listed, &objects).join("; ")
    };
    let cases: [(&str, Damage<'_>); 9] = [
        ("b is listed as paused but its pods", &|o, _| {
            o.push(object("pod", "oh-rt-b-1".into(), "b", false))
        }),
        ("pod/oh-rt-c-1 of runtime c exists, not listed", &|o, _| {
            o.push(object("pod", "oh-rt-c-1".into(), "c", false))
        }),
        ("a is listed as running but has 0 secret objects", &|o, _| {
            o.retain(|x| x.name != "oh-rt-a" || x.kind != "secret")
        }),
        ("a is listed as running, pods []", &|o, _| o.retain(|x| x.kind != "pod")),
        ("session s-a is listed with 2 runtimes", &|_, l| l[1]["session_id"] = json!("s-a")),
        ("session hash hash-a has objects of 2 runtimes", &|o, _| {
            o[6].session_hash = "hash-a".into()
        }),
        ("no shared network policy oh-sandboxes", &|o, _| o.retain(|x| x.kind != "networkpolicy")),
        ("a per-sandbox networkpolicy/oh-rt-a exists", &|o, _| {
            o.push(object("networkpolicy", "oh-rt-a".into(), "a", false))
        }),
        ("a is still starting", &|_, l| l[0]["status"] = json!("starting")),
    ];
    for (expected, damage) in cases {
        let found = damaged(damage);
        assert!(found.contains(expected), "expected {expected:?}, found {found:?}");
    }
    // What is being deleted counts for nothing.
    let found = damaged(&|o, _| {
        let mut leaving = object("pod", "oh-rt-c-1".into(), "c", false);
        leaving.deleting = true;
        o.push(leaving);
    });
    assert_eq!(found, "");
}

/// A status and JSON body, or what was wrong with the answer.
type Answer = Result<(u16, Value), String>;
/// A request's label (what it was) and its answer.
type Labelled = (String, Answer);

/// Sends a request; its status and JSON body, or what was wrong with the answer.
async fn call(request: reqwest::RequestBuilder) -> Answer {
    let resp = request.send().await.map_err(|e| format!("no answer: {e}"))?;
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(|e| format!("{status} with no body: {e}"))?;
    let body = serde_json::from_str(&text).map_err(|_| format!("{status}, not JSON: {text:?}"))?;
    Ok((status, body))
}

async fn list_all(svc: &Service) -> Result<Vec<Value>, String> {
    match call(svc.request(reqwest::Method::GET, "/list?status=all")).await? {
        (200, body) => Ok(body["runtimes"].as_array().cloned().unwrap_or_default()),
        (status, body) => Err(format!("/list answered {status}: {body}")),
    }
}

/// One pass over the invariants, as every given replica sees them.
async fn check(ns: &TestNamespace, replicas: &[&Service]) -> Vec<String> {
    let mut found = Vec::new();
    for svc in replicas {
        let listed = list_all(svc).await;
        match (listed, ns.objects().await) {
            (Ok(listed), Ok(objects)) => found.extend(violations(&listed, &objects)),
            (Err(e), _) | (_, Err(e)) => found.push(e),
        }
    }
    found
}

/// The invariants, given [`SETTLE`] to hold; what still fails then is returned.
async fn settled(ns: &TestNamespace, replicas: &[&Service]) -> Vec<String> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let found = check(ns, replicas).await;
        if found.is_empty() || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Stops every listed runtime; then nothing may be listed, nor left in the namespace (but the
/// shared NetworkPolicy).
async fn stop_everything(ns: &TestNamespace, svc: &Service) -> Vec<String> {
    let mut found = Vec::new();
    for runtime in list_all(svc).await.unwrap_or_default() {
        let stop = svc.request(reqwest::Method::POST, "/stop");
        match call(stop.json(&json!({"runtime_id": runtime["runtime_id"]}))).await {
            Ok((200, _)) => {}
            other => found.push(format!("/stop of {} answered {other:?}", runtime["runtime_id"])),
        }
    }
    let deadline = Instant::now() + SETTLE;
    loop {
        let listed = list_all(svc).await.map(|l| l.len());
        // The sandboxes' shared NetworkPolicy outlives every runtime.
        let objects = ns.objects().await.map(|o| {
            let of_runtimes =
                o.iter().filter(|o| !o.runtime_id.is_empty() || o.kind != "networkpolicy");
            of_runtimes.map(Object::describe).collect::<Vec<_>>()
        });
        if listed == Ok(0) && objects.as_ref().is_ok_and(Vec::is_empty) {
            return found;
        }
        if Instant::now() > deadline {
            found.push(format!("after /stop of everything: listed {listed:?}, left {objects:?}"));
            return found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn start_body(session: &str) -> Value {
    json!({"image": "ghcr.io/openhands/agent-server:test", "session_id": session})
}

fn sessions(round: &str) -> Vec<String> {
    (0..SESSIONS).map(|i| format!("{round}-{i}")).collect()
}

async fn until_running(svc: &Service, id: &str) -> Result<(), String> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let view = call(svc.request(reqwest::Method::GET, &format!("/runtime/{id}"))).await;
        if let Ok((200, body)) = &view {
            if body["status"] == "running" && body["pod_status"] == "ready" {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("{id} never came to run: {view:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A retried `/start` of every session, twice: both answer 200 with the same runtime, which
/// comes to run (a crash must leave no session that cannot start again, nor one with two runtimes).
async fn restart_sessions(svc: &Service, sessions: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let mut ids = Vec::new();
    for session in sessions {
        let mut answers = BTreeSet::new();
        for _ in 0..2 {
            let start = svc.request(reqwest::Method::POST, "/start").json(&start_body(session));
            match call(start).await {
                Ok((200, body)) => answers.insert(body["runtime_id"].as_str().map(str::to_string)),
                other => {
                    found.push(format!("retried /start of {session} answered {other:?}"));
                    continue;
                }
            };
        }
        match answers.into_iter().collect::<Vec<_>>()[..] {
            [Some(ref id)] => ids.push(id.clone()),
            ref other => found.push(format!("retried /starts of {session} answered {other:?}")),
        }
    }
    for id in ids {
        if let Err(e) = until_running(svc, &id).await {
            found.push(e);
        }
    }
    found
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

/// Sends every request at once and hands back the pending answers, each with its label.
fn fire(
    requests: Vec<(String, reqwest::RequestBuilder)>,
) -> Vec<tokio::task::JoinHandle<Labelled>> {
    requests
        .into_iter()
        .map(|(label, request)| tokio::spawn(async move { (label, call(request).await) }))
        .collect()
}

async fn answers(pending: Vec<tokio::task::JoinHandle<Labelled>>) -> Vec<Labelled> {
    futures::future::join_all(pending).await.into_iter().map(Result::unwrap).collect()
}

/// Which operation is in flight when the service is killed.
#[derive(Debug, Clone, Copy)]
enum Operation {
    Start,
    Stop,
    Pause,
    Resume,
}

/// One round: prepare, kill the service `delay_ms` into concurrent `op`s, restart it, check the
/// invariants and that what answered 200 took effect, restart every session, stop everything.
async fn kill_round(ns: &TestNamespace, op: Operation, delay_ms: u64, tally: &mut Tally) {
    let (round, began) =
        (format!("kill -9 during {op:?} after {delay_ms} ms").to_lowercase(), Instant::now());
    let names = sessions(&format!("{op:?}-{delay_ms}").to_lowercase());
    let state = StateDir::new();
    let mut svc = ns.service(&state).await;
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
    let (path, bodies): (&str, Vec<Value>) = match op {
        Operation::Start => ("/start", names.iter().map(|s| start_body(s)).collect()),
        Operation::Stop => ("/stop", ids.iter().map(|id| json!({"runtime_id": id})).collect()),
        Operation::Pause => ("/pause", ids.iter().map(|id| json!({"runtime_id": id})).collect()),
        Operation::Resume => ("/resume", ids.iter().map(|id| json!({"runtime_id": id})).collect()),
    };
    let requests = bodies
        .iter()
        .map(|b| (b.to_string(), svc.request(reqwest::Method::POST, path).json(b)))
        .collect();
    let pending = fire(requests);
    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    svc.kill();
    // Requests the kill cut short have no answer; those that got one must be sound.
    let answered: Vec<_> = answers(pending).await.into_iter().filter(|(_, a)| a.is_ok()).collect();
    let mut found = failures(&answered);
    // Each request is labelled with its body.
    let answered: Vec<(Value, Value)> = answered
        .into_iter()
        .filter_map(|(label, answer)| match answer {
            Ok((200, response)) => Some((serde_json::from_str(&label).unwrap(), response)),
            _ => None,
        })
        .collect();
    drop(svc);

    let svc = ns.service(&state).await;
    found.extend(settled(ns, &[&svc]).await);
    // What answered 200 before the kill must have happened.
    for (body, response) in &answered {
        let path = match op {
            Operation::Start => format!("/sessions/{}", body["session_id"].as_str().unwrap()),
            _ => format!("/runtime/{}", body["runtime_id"].as_str().unwrap()),
        };
        let view = call(svc.request(reqwest::Method::GET, &path)).await;
        let ok = match (&view, op) {
            (Ok((200, v)), Operation::Start) => v["runtime_id"] == response["runtime_id"],
            (Ok((404, _)), Operation::Stop) => true,
            (Ok((200, v)), Operation::Pause) => v["status"] == "paused",
            (Ok((200, v)), Operation::Resume) => v["status"] != "paused",
            _ => false,
        };
        if !ok {
            found.push(format!("{path} of {body} answered 200, after the restart: {view:?}"));
        }
    }
    found.extend(restart_sessions(&svc, &names).await);
    found.extend(settled(ns, &[&svc]).await);
    found.extend(stop_everything(ns, &svc).await);
    eprintln!("round [{round}]: {} of {} answered before the kill", answered.len(), names.len());
    tally.record(&round, began, found);
}

/// Starts sent one every [`OUTAGE_STEP`] while the API server is killed (two runtimes already
/// run): the first answer before it goes, some are in flight when it does, the last are sent
/// while it is gone. Each answers 200 or a JSON 5xx; once it is back, the invariants hold, what
/// answered 200 exists, and every session starts.
async fn outage_round(ns: &TestNamespace, tally: &mut Tally) {
    let (round, began) = ("API server killed during starts", Instant::now());
    let names: Vec<String> =
        (0..OUTAGE_STARTS as usize + 2).map(|i| format!("outage-{i}")).collect();
    let apiserver = ApiServer::find();
    let state = StateDir::new();
    let svc = ns.service(&state).await;
    running(&svc, &names[..2]).await;
    let pending: Vec<_> = names[2..]
        .iter()
        .zip(0..)
        .map(|(session, i)| {
            let request = svc.request(reqwest::Method::POST, "/start").json(&start_body(session));
            let session = session.clone();
            tokio::spawn(async move {
                tokio::time::sleep(OUTAGE_STEP * i).await;
                (session, call(request).await)
            })
        })
        .collect();
    tokio::time::sleep(OUTAGE_KILL_AFTER).await;
    apiserver.kill();
    let mut found = Vec::new();
    let mut answered = Vec::new();
    let mut failed = 0;
    for (session, answer) in answers(pending).await {
        match answer {
            Ok((200, body)) => answered.push((session, body)),
            Ok((code, body)) if code >= 500 && body["error"].is_string() => failed += 1,
            other => found.push(format!("/start of {session} in the outage answered {other:?}")),
        }
    }
    apiserver.start();
    svc.wait_ready().await;
    found.extend(settled(ns, &[&svc]).await);
    for (session, body) in &answered {
        let view = call(svc.request(reqwest::Method::GET, &format!("/sessions/{session}"))).await;
        if !matches!(&view, Ok((200, v)) if v["runtime_id"] == body["runtime_id"]) {
            found.push(format!("/start of {session} answered {body}, after the outage {view:?}"));
        }
    }
    found.extend(restart_sessions(&svc, &names).await);
    found.extend(settled(ns, &[&svc]).await);
    found.extend(stop_everything(ns, &svc).await);
    eprintln!("round [{round}]: {} started, {failed} failed with a 5xx", answered.len());
    tally.record(round, began, found);
}

/// The JSON body of a request to a replica.
fn on(svc: &Service, method: reqwest::Method, path: &str, body: Value) -> reqwest::RequestBuilder {
    svc.request(method, path).json(&body)
}

/// What no answer may be: a 5xx or not JSON (the replicas must sort races out themselves), or a
/// runtime without its session key (a client could never reach its agent).
fn failures(answers: &[Labelled]) -> Vec<String> {
    answers
        .iter()
        .filter(|(_, a)| match a {
            Ok((200, body)) => body["session_api_key"].as_str().is_none_or(str::is_empty),
            Ok((code, _)) => *code >= 500,
            Err(_) => true,
        })
        .map(|(label, a)| format!("{label} answered {a:?}"))
        .collect()
}

/// Two replicas on one namespace racing on the same sessions: starts on both, a stop on one
/// against starts on the other, a pause on one against a resume and a start on the other, and
/// starts on both while one is killed. No session may end with two runtimes.
async fn replica_rounds(ns: &TestNamespace, tally: &mut Tally) {
    use reqwest::Method;
    let (state_a, state_b) = (StateDir::new(), StateDir::new());
    let mut a = ns.service(&state_a).await;
    let b = ns.service(&state_b).await;
    let names = sessions("race");

    let (round, began) = ("replicas racing starts", Instant::now());
    let mut requests = Vec::new();
    for session in &names {
        for (i, svc) in [&a, &b, &a, &b, &a, &b].into_iter().enumerate() {
            let label = format!("/start {i} of {session}");
            requests.push((label, on(svc, Method::POST, "/start", start_body(session))));
        }
    }
    let started = answers(fire(requests)).await;
    let mut found = failures(&started);
    let mut ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (label, answer) in &started {
        if let Ok((200, body)) = answer {
            let session = body["session_id"].as_str().unwrap_or(label).to_string();
            ids.entry(session).or_default().insert(id_of(body));
        }
    }
    for (session, ids) in &ids {
        if ids.len() != 1 {
            found.push(format!("concurrent /starts of {session} answered runtimes {ids:?}"));
        }
    }
    found.extend(settled(ns, &[&a, &b]).await);
    tally.record(round, began, found);

    let (round, began) = ("replicas racing stop and start", Instant::now());
    let mut requests = Vec::new();
    for (session, ids) in &ids {
        let id = ids.iter().next().unwrap();
        requests.push((
            format!("A /stop of {session}"),
            on(&a, Method::POST, "/stop", json!({"runtime_id": id})),
        ));
        requests.push((
            format!("B /start of {session}"),
            on(&b, Method::POST, "/start", start_body(session)),
        ));
        requests.push((
            format!("A /start of {session}"),
            on(&a, Method::POST, "/start", start_body(session)),
        ));
    }
    let mut found = failures(&answers(fire(requests)).await);
    found.extend(restart_sessions(&b, &names).await);
    found.extend(settled(ns, &[&a, &b]).await);
    tally.record(round, began, found);

    let (round, began) = ("replicas racing pause against resume and start", Instant::now());
    let mut requests = Vec::new();
    for session in &names {
        let id = match call(b.request(Method::GET, &format!("/sessions/{session}"))).await {
            Ok((200, body)) => id_of(&body),
            other => panic!("{session} has no runtime after the previous round: {other:?}"),
        };
        let runtime = json!({"runtime_id": id});
        requests
            .push((format!("A /pause of {id}"), on(&a, Method::POST, "/pause", runtime.clone())));
        requests
            .push((format!("B /resume of {id}"), on(&b, Method::POST, "/resume", runtime.clone())));
        requests.push((
            format!("B /start of {session}"),
            on(&b, Method::POST, "/start", start_body(session)),
        ));
        requests.push((format!("A /pause of {id} again"), on(&a, Method::POST, "/pause", runtime)));
    }
    let mut found = failures(&answers(fire(requests)).await);
    found.extend(settled(ns, &[&a, &b]).await);
    found.extend(restart_sessions(&a, &names).await);
    found.extend(settled(ns, &[&a, &b]).await);
    found.extend(stop_everything(ns, &b).await);
    tally.record(round, began, found);

    let (round, began) = ("one replica killed while both race starts", Instant::now());
    let names = sessions("race-kill");
    let mut requests = Vec::new();
    for session in &names {
        for (i, svc) in [&a, &b, &a, &b].into_iter().enumerate() {
            let label = format!("/start {i} of {session}");
            requests.push((label, on(svc, Method::POST, "/start", start_body(session))));
        }
    }
    let pending = fire(requests);
    tokio::time::sleep(Duration::from_millis(60)).await;
    a.kill();
    let started = answers(pending).await;
    // A's requests may die with it; B's must answer.
    let mut found: Vec<String> = failures(&started)
        .into_iter()
        .filter(|f| f.starts_with("/start 1") || f.starts_with("/start 3"))
        .collect();
    let a = ns.service(&state_a).await;
    found.extend(settled(ns, &[&a, &b]).await);
    for (_, answer) in &started {
        if let Ok((200, body)) = answer {
            let session = body["session_id"].as_str().unwrap_or_default();
            let view = call(b.request(Method::GET, &format!("/sessions/{session}"))).await;
            if !matches!(&view, Ok((200, v)) if v["runtime_id"] == body["runtime_id"]) {
                found.push(format!("/start of {session} answered {body}, after the kill {view:?}"));
            }
        }
    }
    found.extend(restart_sessions(&a, &names).await);
    found.extend(settled(ns, &[&a, &b]).await);
    found.extend(stop_everything(ns, &a).await);
    tally.record(round, began, found);
}

fn id_of(runtime: &Value) -> String {
    runtime["runtime_id"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "kills the test cluster's API server: run by scripts/test.sh after the other Kubernetes tests"]
async fn crashes_outages_and_racing_replicas_never_hide_or_duplicate_a_runtime() {
    let ns = TestNamespace::new("kfaults").await;
    let mut tally = Tally::default();
    let started = Instant::now();
    for op in [Operation::Start, Operation::Stop, Operation::Pause, Operation::Resume] {
        for delay in KILL_DELAYS_MS {
            kill_round(&ns, op, delay, &mut tally).await;
        }
    }
    replica_rounds(&ns, &mut tally).await;
    outage_round(&ns, &mut tally).await;
    println!(
        "fault rounds: {}, invariant violations: {} ({:.1} s)",
        tally.rounds,
        tally.violations.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(tally.violations.is_empty(), "invariant violations:\n{}", tally.violations.join("\n"));
}
