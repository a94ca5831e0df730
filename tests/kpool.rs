//! The Kubernetes backend's warm pools against a real kube-apiserver with kwok nodes, two service
//! replicas where it matters. kwok pods run nothing, so the cluster must give pods loopback
//! addresses (`CLUSTER_POD_CIDR=127.1.0.1/16 scripts/cluster.sh up`: all of 127/8 is loopback on
//! Linux) and this test answers `/api/init` for every member: one listener on 0.0.0.0, the
//! agent port, where the local address of a connection is the pod IP it was made to. It checks
//! the init key against the member's Secret in the API server (a wrong key gets 401, so a start
//! that delivered it would not be warm) and records which member got which session.
//!
//! `eval "$(CLUSTER_POD_CIDR=127.1.0.1/16 scripts/cluster.sh up)" && cargo test --test kpool -- --ignored`

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::serve::IncomingStream;
use axum::{Json, Router};
use common::namespace::TestNamespace;
use common::{Service, StateDir};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service as KubeService};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::{Value, json};
use tokio::net::TcpListener;

const IMAGE: &str = "ghcr.io/openhands/agent-server:1.58.2-python";
const POOL_LABEL: &str = "runtime-api.openhands.dev/pool";
const STATE_LABEL: &str = "runtime-api.openhands.dev/pool-state";
const RUNTIME_ID_LABEL: &str = "runtime-api.openhands.dev/runtime-id";
const WARM_ANNOTATION: &str = "runtime-api.openhands.dev/warm-pool";

/// Where a connection was accepted: the pod IP the service dialled.
#[derive(Clone, Copy, Debug)]
struct LocalAddr(SocketAddr);

impl Connected<IncomingStream<'_, TcpListener>> for LocalAddr {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        LocalAddr(stream.io().local_addr().unwrap())
    }
}

#[derive(Default)]
struct Seen {
    /// Pod IP -> the session keys delivered to it.
    inits: BTreeMap<IpAddr, Vec<String>>,
    /// Pod IP -> the environment delivered with the session.
    envs: BTreeMap<IpAddr, Value>,
    refused: usize,
}

/// The `/api/init` of every member.
struct InitStandIn {
    admin: kube::Client,
    namespace: String,
    seen: Mutex<Seen>,
    fail: std::sync::atomic::AtomicBool,
    delay: Mutex<Duration>,
    arrived: tokio::sync::mpsc::UnboundedSender<IpAddr>,
}

impl InitStandIn {
    async fn start(
        ns: &TestNamespace,
    ) -> (Arc<InitStandIn>, u16, tokio::sync::mpsc::UnboundedReceiver<IpAddr>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let stand_in = Arc::new(InitStandIn {
            admin: ns.admin.clone(),
            namespace: ns.name.clone(),
            seen: Mutex::default(),
            fail: Default::default(),
            delay: Mutex::new(Duration::ZERO),
            arrived: tx,
        });
        let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = Router::new()
            .route("/api/init", get(init_state).post(init))
            .route("/alive", get(|| async { "ok" }))
            .with_state(stand_in.clone());
        tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<LocalAddr>())
                .await
                .unwrap()
        });
        (stand_in, port, rx)
    }

    /// The init key of the member pod at `ip`, from its Secret in the API server.
    async fn init_key_of(&self, ip: IpAddr) -> Option<String> {
        let pods: Api<Pod> = Api::namespaced(self.admin.clone(), &self.namespace);
        let pod = pods.list(&ListParams::default()).await.ok()?.items.into_iter().find(|p| {
            p.status.as_ref().and_then(|s| s.pod_ip.as_deref()) == Some(&ip.to_string())
                && p.metadata.deletion_timestamp.is_none()
        })?;
        let id = pod.labels().get(RUNTIME_ID_LABEL)?.clone();
        let secrets: Api<Secret> = Api::namespaced(self.admin.clone(), &self.namespace);
        let secret = secrets.get(&format!("oh-rt-{id}")).await.ok()?;
        String::from_utf8(secret.data?.get("OH_SECRET_KEY")?.0.clone()).ok()
    }

    fn inits(&self) -> BTreeMap<IpAddr, Vec<String>> {
        self.seen.lock().unwrap().inits.clone()
    }
}

async fn init_state(
    State(s): State<Arc<InitStandIn>>,
    ConnectInfo(LocalAddr(local)): ConnectInfo<LocalAddr>,
) -> Json<Value> {
    let ready = s.seen.lock().unwrap().inits.contains_key(&local.ip());
    Json(json!({"state": if ready { "ready" } else { "dormant" }}))
}

async fn init(
    State(s): State<Arc<InitStandIn>>,
    ConnectInfo(LocalAddr(local)): ConnectInfo<LocalAddr>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let ip = local.ip();
    let _ = s.arrived.send(ip);
    // Read before any delay: the test may delete the pod meanwhile.
    let expected = s.init_key_of(ip).await;
    let delay = *s.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    let given = headers.get("X-Init-API-Key").and_then(|v| v.to_str().ok());
    if expected.is_none() || given != expected.as_deref() {
        s.seen.lock().unwrap().refused += 1;
        return (StatusCode::UNAUTHORIZED, Json(json!({"detail": "bad init key"})));
    }
    if s.fail.load(std::sync::atomic::Ordering::SeqCst) {
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"detail": "told to fail"})));
    }
    let key = body["session_api_keys"][0].as_str().unwrap_or_default().to_string();
    let mut seen = s.seen.lock().unwrap();
    seen.inits.entry(ip).or_default().push(key);
    seen.envs.insert(ip, body["env"].clone());
    (StatusCode::OK, Json(json!({"state": "ready"})))
}

async fn service(
    ns: &TestNamespace,
    state: &StateDir,
    port: u16,
    extra: &[(&str, &str)],
) -> Service {
    let kubeconfig = ns.service_account_kubeconfig();
    let port = port.to_string();
    let mut env = vec![
        ("BACKEND", "kubernetes"),
        ("NAMESPACE", ns.name.as_str()),
        ("KUBECONFIG", kubeconfig.to_str().unwrap()),
        ("BASE_DOMAIN", "sandbox.test"),
        ("DEFAULT_IMAGE", IMAGE),
        ("AGENT_SERVER_PORT", port.as_str()),
        ("APP_SERVER_URL", "http://app.test"),
        ("LEASE_DURATION_SECONDS", "3"),
        ("MAINTENANCE_INTERVAL_SECONDS", "1"),
    ];
    env.extend_from_slice(extra);
    let svc = Service::start(state, &env).await;
    svc.wait_ready().await;
    svc
}

/// A start shaped like the SDK's, so the default pool serves it.
fn sdk_start(session: &str) -> Value {
    json!({
        "image": IMAGE,
        "command": "/usr/local/bin/openhands-agent-server --port 60000",
        "working_dir": "/", "run_as_user": 10001, "fs_group": 10001,
        "session_id": session,
        "environment": {"PER_SESSION": session},
    })
}

fn api<K>(ns: &TestNamespace) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    Api::namespaced(ns.admin.clone(), &ns.name)
}

/// Dormant members (not being deleted): (all, Ready).
async fn dormant(ns: &TestNamespace) -> (Vec<Pod>, usize) {
    let lp = ListParams::default().labels(&format!("{STATE_LABEL}=dormant"));
    let pods: Vec<Pod> = api::<Pod>(ns)
        .list(&lp)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let ready = pods
        .iter()
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count();
    (pods, ready)
}

async fn wait_pool(ns: &TestNamespace, size: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (all, ready) = dormant(ns).await;
        if all.len() == size && ready == size {
            return;
        }
        assert!(all.len() <= size, "more members than the pool's size: {}", all.len());
        assert!(Instant::now() < deadline, "pool at {} ({ready} ready), want {size}", all.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The pool stays at exactly `size` for a while (no surplus from a late refill).
async fn stays_at(ns: &TestNamespace, size: usize, for_: Duration) {
    let until = Instant::now() + for_;
    while Instant::now() < until {
        let (all, _) = dormant(ns).await;
        assert_eq!(all.len(), size, "the pool left its size");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Records of runtimes a pool member served.
async fn warm_records(ns: &TestNamespace) -> Vec<ConfigMap> {
    let lp = ListParams::default().labels("runtime-api.openhands.dev/component=record");
    api::<ConfigMap>(ns)
        .list(&lp)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|r| r.annotations().contains_key(WARM_ANNOTATION))
        .collect()
}

async fn metric(svc: &Service, name: &str, labels: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", svc.base)).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn objects_of(ns: &TestNamespace, runtime_id: &str) -> BTreeSet<String> {
    let lp = ListParams::default().labels(&format!("{RUNTIME_ID_LABEL}={runtime_id}"));
    let mut found = BTreeSet::new();
    for p in api::<Pod>(ns).list(&lp).await.unwrap() {
        found.insert(format!("pod/{}", p.name_any()));
    }
    for s in api::<Secret>(ns).list(&lp).await.unwrap() {
        found.insert(format!("secret/{}", s.name_any()));
    }
    for s in api::<KubeService>(ns).list(&lp).await.unwrap() {
        found.insert(format!("service/{}", s.name_any()));
    }
    for c in api::<ConfigMap>(ns).list(&lp).await.unwrap() {
        found.insert(format!("configmap/{}", c.name_any()));
    }
    found
}

async fn wait_gone(ns: &TestNamespace, runtime_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = objects_of(ns, runtime_id).await;
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "left behind: {left:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server with loopback pod IPs: see the module doc"]
async fn fifty_starts_over_two_replicas_claim_each_member_once_and_the_pool_refills() {
    let ns = TestNamespace::new("kpool-race").await;
    let (stand_in, port, _arrivals) = InitStandIn::start(&ns).await;
    let (state_a, state_b) = (StateDir::new(), StateDir::new());
    let pool = [("WARM_POOL_SIZE", "10")];
    let a = service(&ns, &state_a, port, &[&pool[..], &[("POD_NAME", "replica-a")]].concat()).await;
    let b = service(&ns, &state_b, port, &[&pool[..], &[("POD_NAME", "replica-b")]].concat()).await;
    wait_pool(&ns, 10).await;
    let members: BTreeSet<String> =
        dormant(&ns).await.0.iter().map(|p| p.labels()[RUNTIME_ID_LABEL].clone()).collect();

    let starts = (0..50).map(|i| {
        let svc = if i % 2 == 0 { &a } else { &b };
        svc.post("/start", sdk_start(&format!("race-{i}")))
    });
    let answers = futures::future::join_all(starts).await;
    let mut ids = BTreeSet::new();
    for (code, body) in &answers {
        assert_eq!(*code, 200, "{body}");
        ids.insert(body["runtime_id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 50);

    // Every member served one start at most: the stand-in saw each pod IP initialised once.
    let inits = stand_in.inits();
    assert!(
        inits.values().all(|keys| keys.len() == 1),
        "a member was initialised twice: {inits:?}"
    );
    let warm = warm_records(&ns).await;
    let warm_ids: BTreeSet<String> =
        warm.iter().map(|r| r.labels()[RUNTIME_ID_LABEL].clone()).collect();
    assert_eq!(warm.len(), inits.len(), "one initialised member per warm runtime");
    // The ten members ready before the burst were all claimed (a refill during the burst may
    // have added a few more; those were claimed once too).
    assert!(members.is_subset(&warm_ids), "members {members:?} not all claimed: {warm_ids:?}");
    assert!(warm_ids.is_subset(&ids));
    let cold = 50 - warm.len();
    eprintln!("50 starts: {} warm, {cold} cold", warm.len());
    assert!(cold >= 30, "{cold} cold starts");
    assert_eq!(stand_in.seen.lock().unwrap().refused, 0);
    // A warm runtime answers with the key its member got, and is running at once.
    for (code, body) in &answers {
        let id = body["runtime_id"].as_str().unwrap();
        if warm_ids.contains(id) {
            let key = body["session_api_key"].as_str().unwrap();
            assert!(inits.values().any(|k| k[0] == key), "{body}");
            assert_eq!((*code, body["status"].as_str()), (200, Some("running")), "{body}");
        }
    }
    let hits = metric(&a, "runtime_api_pool_claims", "outcome=\"hit\"").await
        + metric(&b, "runtime_api_pool_claims", "outcome=\"hit\"").await;
    assert_eq!(hits as usize, warm.len());

    // The pool refills to its size, exactly, and /list shows the 50 runtimes only.
    wait_pool(&ns, 10).await;
    stays_at(&ns, 10, Duration::from_secs(3)).await;
    let (code, list) = a.get("/list").await;
    assert_eq!((code, list["runtimes"].as_array().map(Vec::len)), (200, Some(50)), "{list}");
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server with loopback pod IPs: see the module doc"]
async fn a_new_leader_finishes_the_refill_without_surplus() {
    let ns = TestNamespace::new("kpool-leader").await;
    let (_stand_in, port, _arrivals) = InitStandIn::start(&ns).await;
    let (state_a, state_b) = (StateDir::new(), StateDir::new());
    let pool = [("WARM_POOL_SIZE", "10")];
    let mut a =
        service(&ns, &state_a, port, &[&pool[..], &[("POD_NAME", "replica-a")]].concat()).await;
    // The leader dies as soon as its refill is under way.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (all, _) = dormant(&ns).await;
        if !all.is_empty() {
            assert!(all.len() < 10, "the refill finished before the leader could be killed");
            break;
        }
        assert!(Instant::now() < deadline, "the leader never started the refill");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.kill();
    let before = dormant(&ns).await.0.len();
    let b = service(&ns, &state_b, port, &[&pool[..], &[("POD_NAME", "replica-b")]].concat()).await;
    wait_pool(&ns, 10).await;
    stays_at(&ns, 10, Duration::from_secs(4)).await;
    eprintln!("the leader died with {before} members created; the new one completed the pool");
    assert_eq!(metric(&b, "runtime_api_pool_ready", "pool=\"default\"").await, 10.0);
    assert_eq!(metric(&b, "runtime_api_pool_target", "pool=\"default\"").await, 10.0);
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server with loopback pod IPs: see the module doc"]
async fn a_member_deleted_or_failing_during_its_claim_gives_a_cold_start_and_no_leftover() {
    let ns = TestNamespace::new("kpool-fail").await;
    let (stand_in, port, mut arrivals) = InitStandIn::start(&ns).await;
    let state = StateDir::new();
    let svc = service(&ns, &state, port, &[("WARM_POOL_SIZE", "1")]).await;
    wait_pool(&ns, 1).await;
    let member = dormant(&ns).await.0.remove(0);
    let member_id = member.labels()[RUNTIME_ID_LABEL].clone();

    // The pod is deleted while its init is under way.
    *stand_in.delay.lock().unwrap() = Duration::from_secs(2);
    let start = svc.post("/start", sdk_start("deleted-meanwhile"));
    let deleter = async {
        let ip = arrivals.recv().await.unwrap();
        assert_eq!(Some(ip.to_string()), member.status.as_ref().unwrap().pod_ip);
        api::<Pod>(&ns).delete(&member.name_any(), &DeleteParams::default()).await.unwrap();
    };
    let ((code, started), ()) = tokio::join!(start, deleter);
    assert_eq!(code, 200, "{started}");
    let id = started["runtime_id"].as_str().unwrap().to_string();
    assert_ne!(id, member_id, "the deleted member is not the runtime");
    assert!(warm_records(&ns).await.is_empty(), "the start went cold");
    wait_gone(&ns, &member_id).await;
    assert_eq!(metric(&svc, "runtime_api_pool_claims", "outcome=\"init_failure\"").await, 1.0);
    svc.wait_running(&id).await;

    // A member whose init fails is deleted too, and the start goes cold.
    *stand_in.delay.lock().unwrap() = Duration::ZERO;
    wait_pool(&ns, 1).await;
    let failing = dormant(&ns).await.0.remove(0).labels()[RUNTIME_ID_LABEL].clone();
    stand_in.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let (code, started) = svc.post("/start", sdk_start("init-fails")).await;
    assert_eq!(code, 200, "{started}");
    assert_ne!(started["runtime_id"].as_str().unwrap(), failing);
    wait_gone(&ns, &failing).await;
    assert_eq!(metric(&svc, "runtime_api_pool_claims", "outcome=\"init_failure\"").await, 2.0);
    assert!(warm_records(&ns).await.is_empty());
    stand_in.fail.store(false, std::sync::atomic::Ordering::SeqCst);
    wait_pool(&ns, 1).await;
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server with loopback pod IPs: see the module doc"]
async fn members_are_not_runtimes_and_a_warm_runtime_lives_like_a_cold_one() {
    let ns = TestNamespace::new("kpool-life").await;
    let (stand_in, port, _arrivals) = InitStandIn::start(&ns).await;
    let state = StateDir::new();
    let svc =
        service(&ns, &state, port, &[("WARM_POOL_SIZE", "2"), ("ORPHAN_GRACE_SECONDS", "1")]).await;
    wait_pool(&ns, 2).await;
    let members: BTreeSet<String> = dormant(&ns).await.0.iter().map(|p| p.name_any()).collect();

    // Members are in no view, and the sweep (every second, grace 1 s) leaves them alone.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let now: BTreeSet<String> = dormant(&ns).await.0.iter().map(|p| p.name_any()).collect();
    assert_eq!(now, members, "the sweep or the refill replaced members");
    let (_, list) = svc.get("/list").await;
    assert_eq!(list["runtimes"], json!([]), "{list}");
    assert_eq!(metric(&svc, "runtime_api_runtimes", "").await, 0.0);

    // A warm start: its member's pod, the session delivered through init, the usual objects.
    let (code, started) = svc.post("/start", sdk_start("warm-life")).await;
    assert_eq!((code, started["status"].as_str()), (200, Some("running")), "{started}");
    let id = started["runtime_id"].as_str().unwrap().to_string();
    let key = started["session_api_key"].as_str().unwrap().to_string();
    let pod = api::<Pod>(&ns).get(&format!("oh-rt-{id}-1")).await.unwrap();
    assert!(members.contains(&pod.name_any()), "served by a member");
    let ip: IpAddr = pod.status.as_ref().unwrap().pod_ip.as_ref().unwrap().parse().unwrap();
    assert_eq!(stand_in.inits()[&ip], vec![key.clone()]);
    assert_eq!(stand_in.seen.lock().unwrap().envs[&ip]["PER_SESSION"], "warm-life");
    let owner = &pod.owner_references()[0];
    assert_eq!((owner.kind.as_str(), owner.controller), ("ConfigMap", Some(true)));
    let secret = api::<Secret>(&ns).get(&format!("oh-rt-{id}")).await.unwrap();
    let data = secret.data.clone().unwrap();
    assert_eq!(data["SESSION_API_KEY"].0, key.as_bytes());
    assert_eq!(data["PER_SESSION"].0, b"warm-life");
    assert!(!data.contains_key("OH_SECRET_KEY"), "the init key is gone");
    assert!(!secret.labels().contains_key(POOL_LABEL));
    assert_eq!(secret.owner_references().len(), 1);
    api::<KubeService>(&ns).get(&format!("oh-rt-{id}")).await.unwrap();
    let (code, by_session) = svc.get("/sessions/warm-life").await;
    assert_eq!((code, by_session["runtime_id"].as_str()), (200, Some(id.as_str())));
    let (_, list) = svc.get("/list").await;
    assert_eq!(list["runtimes"].as_array().unwrap().len(), 1, "{list}");
    // The sweep keeps it (its record owns it) once the claim is older than the grace.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, after) = svc.get(&format!("/runtime/{id}")).await;
    assert_eq!(after["status"], "running", "{after}\n{}", svc.log_text());

    // Pause and resume: a cold pod of the next generation from the record and its Secret.
    let (code, _) = svc.post("/pause", json!({"runtime_id": id})).await;
    assert_eq!(code, 200);
    let (code, resumed) = svc.post("/resume", json!({"runtime_id": id})).await;
    assert_eq!(code, 200, "{resumed}");
    let running = svc.wait_running(&id).await;
    assert_eq!(running["session_api_key"], key.as_str());
    let pod2 = api::<Pod>(&ns).get(&format!("oh-rt-{id}-2")).await.unwrap();
    assert!(!pod2.labels().contains_key(STATE_LABEL), "the resumed pod is a cold one");

    // Stop removes everything, the member's objects included; the pool is full again.
    let (code, _) = svc.post("/stop", json!({"runtime_id": id})).await;
    assert_eq!(code, 200);
    wait_gone(&ns, &id).await;
    wait_pool(&ns, 2).await;
}
