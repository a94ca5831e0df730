//! The Kubernetes backend against a real kube-apiserver (etcd, controller-manager, scheduler, kwok
//! nodes) started by `scripts/cluster.sh`. The service runs as the namespace-scoped ServiceAccount
//! of `deploy/rbac.yaml`, so a missing permission fails a test.
//!
//! Run through `scripts/test.sh`, or by hand:
//! `eval "$(scripts/cluster.sh up)" && cargo test --test kubernetes -- --ignored`

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::namespace::{TestNamespace, kubectl};
use common::{Service, StateDir};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, Secret, Service as KubeService,
};
use k8s_openapi::api::flowcontrol::v1::FlowSchema;
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const RUNTIME_ID_LABEL: &str = "runtime-api.openhands.dev/runtime-id";
const SESSION_HASH_LABEL: &str = "runtime-api.openhands.dev/session-hash";

impl TestNamespace {
    async fn service(&self, state: &StateDir, extra: &[(&str, &str)]) -> Service {
        let kubeconfig = self.service_account_kubeconfig();
        let mut env = vec![
            ("BACKEND", "kubernetes"),
            ("NAMESPACE", self.name.as_str()),
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("BASE_DOMAIN", "sandbox.test"),
        ];
        env.extend_from_slice(extra);
        let svc = Service::start(state, &env).await;
        svc.wait_ready().await;
        svc
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.admin.clone(), &self.name)
    }

    /// Every object carrying `selector`, as `kind/name`.
    async fn objects(&self, selector: &str) -> BTreeSet<String> {
        let lp = ListParams::default().labels(selector);
        let mut found = BTreeSet::new();
        macro_rules! collect {
            ($kind:ty, $label:expr) => {
                for o in self.api::<$kind>().list(&lp).await.unwrap() {
                    found.insert(format!("{}/{}", $label, o.name_any()));
                }
            };
        }
        collect!(ConfigMap, "configmap");
        collect!(Secret, "secret");
        collect!(Pod, "pod");
        collect!(KubeService, "service");
        collect!(Ingress, "ingress");
        collect!(NetworkPolicy, "networkpolicy");
        collect!(PersistentVolumeClaim, "persistentvolumeclaim");
        found
    }

    async fn wait_no_objects(&self, selector: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = self.objects(selector).await;
            if left.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "objects left behind: {left:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn pods_of(&self, runtime_id: &str) -> Vec<Pod> {
        let lp = ListParams::default().labels(&format!("{RUNTIME_ID_LABEL}={runtime_id}"));
        self.api::<Pod>()
            .list(&lp)
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect()
    }
}

fn id_of(runtime: &Value) -> String {
    runtime["runtime_id"].as_str().unwrap().to_string()
}

fn selector_of(runtime_id: &str) -> String {
    format!("{RUNTIME_ID_LABEL}={runtime_id}")
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: run scripts/test.sh"]
async fn full_lifecycle_creates_owned_objects_and_stop_leaves_nothing() {
    let ns = TestNamespace::new("lifecycle").await;
    let state = StateDir::new();
    let svc = ns
        .service(
            &state,
            &[("APP_SERVER_URL", "https://app.test"), ("WORKSPACE_STORAGE_SIZE", "5Gi")],
        )
        .await;
    let (code, started) = svc
        .post("/start", json!({
            "image": "ghcr.io/openhands/agent-server:1.58.2-python",
            "command": "/usr/local/bin/openhands-agent-server --port 60000",
            "working_dir": "/workspace", "session_id": "lifecycle-1",
            "environment": {"GITHUB_TOKEN": "ghp-secret-value", "DEBUG": "1"},
            "run_as_user": 10001, "fs_group": 10001, "resource_factor": 2, "image_pull_policy": "IfNotPresent"
        }))
        .await;
    assert_eq!(code, 200, "{started}");
    let id = id_of(&started);
    assert_eq!(started["url"], format!("https://{id}.sandbox.test"));
    assert_eq!(started["vscode_url"], format!("https://vscode-{id}.sandbox.test"));
    assert_eq!(started["work_hosts"][format!("https://work-1-{id}.sandbox.test")], 12000);
    // Readable at once, from the cache.
    let (code, by_session) = svc.get("/sessions/lifecycle-1").await;
    assert_eq!((code, &by_session["runtime_id"]), (200, &started["runtime_id"]));

    let running = svc.wait_running(&id).await;
    assert_eq!(running["session_api_key"], started["session_api_key"]);
    let key = started["session_api_key"].as_str().unwrap().to_string();

    // Every object is labelled, owned by the record, and named safely.
    let objects = ns.objects(&selector_of(&id)).await;
    let hash = runtime_api::runtime::ids::session_hash("lifecycle-1");
    let expected: BTreeSet<String> = [
        format!("configmap/oh-session-{hash}"),
        format!("secret/oh-rt-{id}"),
        format!("pod/oh-rt-{id}-1"),
        format!("service/oh-rt-{id}"),
        format!("ingress/oh-rt-{id}"),
        format!("persistentvolumeclaim/oh-rt-{id}-workspace"),
    ]
    .into_iter()
    .collect();
    assert_eq!(objects, expected);
    let record = ns.api::<ConfigMap>().get(&format!("oh-session-{hash}")).await.unwrap();
    let uid = record.metadata.uid.clone().unwrap();
    let pod = ns.api::<Pod>().get(&format!("oh-rt-{id}-1")).await.unwrap();
    // One NetworkPolicy for every sandbox, selecting this one by its labels.
    let shared = ns.api::<NetworkPolicy>().get("oh-sandboxes").await.unwrap();
    let selector = shared.spec.unwrap().pod_selector.unwrap().match_labels.unwrap();
    let pod_labels = pod.metadata.labels.clone().unwrap();
    assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)), "{selector:?}");
    assert_eq!(pod.owner_references()[0].uid, uid);
    assert_eq!(
        ns.api::<Secret>().get(&format!("oh-rt-{id}")).await.unwrap().owner_references()[0].uid,
        uid
    );
    assert_eq!(pod.labels()[SESSION_HASH_LABEL], hash);

    // Secrets live in the Secret, never in the pod spec.
    let pod_json = serde_json::to_string(&pod.spec).unwrap();
    assert!(!pod_json.contains(&key), "session key in plain pod spec");
    assert!(!pod_json.contains("ghp-secret-value"), "caller secret in plain pod spec");
    let secret = ns.api::<Secret>().get(&format!("oh-rt-{id}")).await.unwrap();
    let data = secret.data.unwrap();
    assert_eq!(data["SESSION_API_KEY"].0, key.as_bytes());
    assert_eq!(data["GITHUB_TOKEN"].0, b"ghp-secret-value");
    let spec = pod.spec.clone().unwrap();
    assert_eq!(spec.automount_service_account_token, Some(false));
    let container = &spec.containers[0];
    assert_eq!(container.command.as_ref().unwrap()[..2], ["/bin/sh".to_string(), "-c".to_string()]);
    assert_eq!(container.resources.as_ref().unwrap().requests.as_ref().unwrap()["cpu"].0, "2");
    assert_eq!(container.resources.as_ref().unwrap().limits.as_ref().unwrap()["memory"].0, "8Gi");
    assert_eq!(spec.security_context.as_ref().unwrap().run_as_user, Some(10001));
    assert_eq!(container.volume_mounts.as_ref().unwrap()[0].mount_path, "/workspace");

    // Pause: the pod goes, everything else stays.
    let (code, paused) = svc.post("/pause", json!({"runtime_id": id})).await;
    assert_eq!((code, paused["status"].as_str()), (200, Some("paused")));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ns.pods_of(&id).await.is_empty() {
        assert!(Instant::now() < deadline, "paused runtime still has a pod");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after_pause = ns.objects(&selector_of(&id)).await;
    assert!(
        after_pause.contains(&format!("persistentvolumeclaim/oh-rt-{id}-workspace")),
        "pause removed the workspace"
    );
    assert!(after_pause.contains(&format!("secret/oh-rt-{id}")));
    assert_eq!(svc.get("/list").await.1["total"], 0, "paused runtimes are not listed by default");
    assert_eq!(svc.get("/list?status=paused").await.1["total"], 1);

    // Resume: same pod spec (image, command, env, resources), same key and URL.
    let (code, resumed) = svc.post("/resume", json!({"runtime_id": id})).await;
    assert_eq!(code, 200, "{resumed}");
    assert_eq!(resumed["session_api_key"], key.as_str());
    assert_eq!(resumed["url"], started["url"]);
    svc.wait_running(&id).await;
    let new_pod = ns.api::<Pod>().get(&format!("oh-rt-{id}-2")).await.unwrap();
    let (a, b) = (&spec.containers[0], &new_pod.spec.as_ref().unwrap().containers[0]);
    assert_eq!(
        (&a.image, &a.command, &a.env, &a.env_from, &a.resources, &a.working_dir),
        (&b.image, &b.command, &b.env, &b.env_from, &b.resources, &b.working_dir)
    );
    assert_eq!(spec.security_context, new_pod.spec.as_ref().unwrap().security_context);
    let secret_after = ns.api::<Secret>().get(&format!("oh-rt-{id}")).await.unwrap();
    assert_eq!(secret_after.data.unwrap(), data, "resume must keep the key and environment");

    // Stop: nothing with the runtime's label remains.
    let (code, stopped) = svc.post("/stop", json!({"runtime_id": id})).await;
    assert_eq!((code, stopped["status"].as_str()), (200, Some("stopped")));
    assert_eq!(svc.get(&format!("/runtime/{id}")).await.0, 404);
    assert_eq!(svc.get("/sessions/lifecycle-1").await.0, 404);
    ns.wait_no_objects(&selector_of(&id)).await;
    // And a new start for the session is a new runtime.
    let fresh = svc.start_session("lifecycle-1").await;
    assert_ne!(id_of(&fresh), id);
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: run scripts/test.sh"]
async fn mixed_case_session_ids_are_distinct_and_names_are_safe() {
    let ns = TestNamespace::new("mixedcase").await;
    let state = StateDir::new();
    let svc = ns.service(&state, &[]).await;
    let upper = svc.start_session("7HfK2pQx9LmN4rTz1VbC3w").await;
    let lower = svc.start_session("7hfk2pqx9lmn4rtz1vbc3w").await;
    assert_ne!(upper["runtime_id"], lower["runtime_id"]);
    assert_eq!(
        svc.get("/sessions/7HfK2pQx9LmN4rTz1VbC3w").await.1["runtime_id"],
        upper["runtime_id"]
    );
    assert_eq!(
        svc.get("/sessions/7hfk2pqx9lmn4rtz1vbc3w").await.1["runtime_id"],
        lower["runtime_id"]
    );
    let weird = svc.start_session("Ünïcode/with spaces & symbols!").await;
    assert_eq!(weird["session_id"], "Ünïcode/with spaces & symbols!");
    let (_, batch) =
        svc.get("/sessions/batch?ids=7HfK2pQx9LmN4rTz1VbC3w,7hfk2pqx9lmn4rtz1vbc3w").await;
    assert_eq!(batch.as_array().unwrap().len(), 2);
}

/// The batch answers from the kept views: each entry must be what `/sessions/{id}` says, in the
/// order asked, unknown sessions left out, and a pause must show at once.
#[tokio::test]
#[ignore = "needs a Kubernetes API server: run scripts/test.sh"]
async fn sessions_batch_answers_the_current_views_in_request_order() {
    let ns = TestNamespace::new("batch").await;
    let state = StateDir::new();
    let svc = ns.service(&state, &[]).await;
    let first = svc.start_session("batch-first").await;
    let second = svc.start_session("batch-second").await;
    async fn batch(svc: &Service) -> Value {
        let (code, body) = svc.get("/sessions/batch?ids=batch-second,nobody&ids=batch-first").await;
        assert_eq!(code, 200, "{body}");
        body
    }
    async fn one(svc: &Service, session_id: &str) -> Value {
        svc.get(&format!("/sessions/{session_id}")).await.1
    }
    for r in [&first, &second] {
        svc.wait_running(r["runtime_id"].as_str().unwrap()).await; // no status change in between
    }
    let expected = json!([one(&svc, "batch-second").await, one(&svc, "batch-first").await]);
    assert_eq!(batch(&svc).await, expected);
    assert_eq!(expected[1]["runtime_id"], first["runtime_id"]);
    assert_eq!(expected[0]["runtime_id"], second["runtime_id"]);

    let (code, paused) = svc.post("/pause", json!({"runtime_id": first["runtime_id"]})).await;
    assert_eq!(code, 200, "{paused}");
    let answer = batch(&svc).await;
    assert_eq!(answer[1]["status"], "paused", "{answer}");
    assert_eq!(answer, json!([one(&svc, "batch-second").await, one(&svc, "batch-first").await]));
    for r in [&first, &second] {
        svc.post("/stop", json!({"runtime_id": r["runtime_id"]})).await;
    }
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: run scripts/test.sh"]
async fn twenty_concurrent_starts_for_one_session_create_one_runtime() {
    let ns = TestNamespace::new("concurrent").await;
    let state = StateDir::new();
    let a = Arc::new(ns.service(&state, &[]).await);
    let b = Arc::new(ns.service(&state, &[]).await);
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let svc = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { svc.start_session("one-session").await })
        })
        .collect();
    let mut ids = BTreeSet::new();
    let mut keys = BTreeSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        ids.insert(id_of(&r));
        keys.insert(r["session_api_key"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(keys.len(), 1, "every caller must get the same, non-empty key: {keys:?}");
    assert!(!keys.iter().next().unwrap().is_empty());
    let hash = runtime_api::runtime::ids::session_hash("one-session");
    let objects = ns.objects(&format!("{SESSION_HASH_LABEL}={hash}")).await;
    assert_eq!(objects.iter().filter(|o| o.starts_with("pod/")).count(), 1, "{objects:?}");
    assert_eq!(objects.iter().filter(|o| o.starts_with("configmap/")).count(), 1, "{objects:?}");
}

/// Resume is decided by the record: whichever replica writes the next pod generation first wins
/// (a write conditional on the record's resourceVersion), the others find it resumed. The
/// gateway's wake relies on it across replicas.
#[tokio::test]
#[ignore = "needs a Kubernetes API server: run scripts/test.sh"]
async fn twenty_concurrent_resumes_over_two_instances_resume_once() {
    let ns = TestNamespace::new("resume-once").await;
    let state = StateDir::new();
    let a = Arc::new(ns.service(&state, &[]).await);
    let b = Arc::new(ns.service(&state, &[]).await);
    let id = id_of(&a.start_session("resume-once").await);
    a.wait_running(&id).await;
    a.post("/pause", json!({"runtime_id": id})).await;
    for svc in [&a, &b] {
        svc.wait_for(&id, "paused", |r| r["status"] == "paused").await;
    }
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let svc = if i % 2 == 0 { a.clone() } else { b.clone() };
            let id = id.clone();
            tokio::spawn(async move { svc.post("/resume", json!({"runtime_id": id})).await })
        })
        .collect();
    for t in tasks {
        let (code, body) = t.await.unwrap();
        assert_eq!(code, 200, "{body}");
    }
    let records = kubectl(&[
        "get",
        "configmaps",
        "-n",
        &ns.name,
        "-l",
        &format!("runtime-api.openhands.dev/runtime-id={id}"),
        "-o",
        "jsonpath={.items[0].metadata.annotations.runtime-api\\.openhands\\.dev/pod-generation}",
    ]);
    assert_eq!(records.trim(), "2", "one resume: generation 1 -> 2");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = kubectl(&[
            "get",
            "events",
            "-n",
            &ns.name,
            "--field-selector",
            "reason=Resumed",
            "-o",
            "name",
        ]);
        let count = events.lines().count();
        assert!(count <= 1, "more than one resume: {events}");
        if count == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no Resumed event");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    a.wait_running(&id).await;
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: run scripts/test.sh"]
async fn two_instances_share_the_cluster_as_the_only_truth() {
    let ns = TestNamespace::new("replicas").await;
    let state_a = StateDir::new();
    let state_b = StateDir::new();
    let mut a = ns.service(&state_a, &[]).await;
    let b = ns.service(&state_b, &[]).await;
    let started = a.start_session("shared").await;
    let id = id_of(&started);
    b.wait_running(&id).await;
    let (code, paused) = b.post("/pause", json!({"runtime_id": id})).await;
    assert_eq!((code, paused["status"].as_str()), (200, Some("paused")));
    a.wait_for(&id, "paused", |r| r["status"] == "paused").await;

    // Restart A: it knows the paused runtime from the cluster alone.
    a.kill();
    let a = ns.service(&state_a, &[]).await;
    let (_, view) = a.get(&format!("/runtime/{id}")).await;
    assert_eq!(view["status"], "paused");
    assert_eq!(a.get("/list?status=paused").await.1["total"], 1);
    let (code, resumed) = a.post("/resume", json!({"runtime_id": id})).await;
    assert_eq!(code, 200);
    assert_eq!(resumed["session_api_key"], started["session_api_key"]);
    a.wait_running(&id).await;
    // A second /start on the other replica returns the same runtime.
    assert_eq!(id_of(&b.start_session("shared").await), id);

    let (code, _) = b.post("/stop", json!({"runtime_id": id})).await;
    assert_eq!(code, 200);
    ns.wait_no_objects(&selector_of(&id)).await;
    a.wait_for_absent(&id).await;
}

/// Fires `/start` of `session` at `svc` and SIGKILLs it as soon as the session's record exists,
/// before the start finishes; returns the record as it was then.
async fn crash_during_start(ns: &TestNamespace, svc: &mut Service, session: &str) -> ConfigMap {
    let record_name = format!("oh-session-{}", runtime_api::runtime::ids::session_hash(session));
    let request = svc
        .request(reqwest::Method::POST, "/start")
        .json(&json!({"image": "img", "session_id": session}));
    let pending = tokio::spawn(async move { request.send().await });
    let records = ns.api::<ConfigMap>();
    let deadline = Instant::now() + Duration::from_secs(20);
    let seen = loop {
        if let Some(record) = records.get_opt(&record_name).await.unwrap() {
            break record;
        }
        assert!(Instant::now() < deadline, "record never appeared");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    svc.kill();
    let _ = pending.await;
    seen
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: run scripts/test.sh"]
async fn a_start_interrupted_by_a_crash_ends_complete() {
    let ns = TestNamespace::new("crash").await;
    let state = StateDir::new();
    let mut first = ns.service(&state, &[]).await;
    let hash = runtime_api::runtime::ids::session_hash("crash-session");
    crash_during_start(&ns, &mut first, "crash-session").await;

    // The client retries against a fresh instance: the runtime ends complete, with one of each object.
    let second = ns.service(&state, &[]).await;
    let runtime = second.start_session("crash-session").await;
    let id = id_of(&runtime);
    second.wait_running(&id).await;
    assert_eq!(runtime["session_api_key"].as_str().unwrap().len(), 64);
    let objects = ns.objects(&format!("{SESSION_HASH_LABEL}={hash}")).await;
    for kind in ["configmap/", "secret/", "pod/", "service/", "ingress/"] {
        assert_eq!(
            objects.iter().filter(|o| o.starts_with(kind)).count(),
            1,
            "{kind} in {objects:?}"
        );
    }
    let (code, _) = second.post("/stop", json!({"runtime_id": id})).await;
    assert_eq!(code, 200);
    ns.wait_no_objects(&format!("{SESSION_HASH_LABEL}={hash}")).await;
}

/// Regression (a kfaults round: "never came to run: 404"): a sweep that saw a crashed start's
/// record without its Secret removed the runtime a retried `/start` had completed and handed out
/// meanwhile. The sweep now removes such a record only while it is as the sweep saw it (a delete
/// with its resourceVersion as precondition), and a completing start touches the record first.
#[tokio::test]
#[ignore = "needs a Kubernetes API server: run scripts/test.sh"]
async fn a_sweep_that_saw_a_start_incomplete_never_removes_it_once_completed() {
    let ns = TestNamespace::new("complete").await;
    let state = StateDir::new();
    let mut first = ns.service(&state, &[]).await;
    let hash = runtime_api::runtime::ids::session_hash("complete-session");
    let seen = crash_during_start(&ns, &mut first, "complete-session").await;
    let (records, record_name) = (ns.api::<ConfigMap>(), seen.name_any());
    // What a sweep would see: the record, and no Secret (the creator died before writing it).
    let id = seen.labels()[RUNTIME_ID_LABEL].clone();
    let _ = ns.api::<Secret>().delete(&format!("oh-rt-{id}"), &Default::default()).await;
    let snapshot = seen.resource_version().unwrap();

    let second = ns.service(&state, &[]).await;
    let runtime = second.start_session("complete-session").await;
    assert_eq!(id_of(&runtime), id);
    // The sweep acts on its snapshot: the record changed since, so it is spared.
    let params = kube::api::DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            resource_version: Some(snapshot),
            uid: None,
        }),
        ..Default::default()
    };
    match records.delete(&record_name, &params).await {
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        other => panic!("the completed runtime's record was not protected: {other:?}"),
    }
    second.wait_running(&id).await;
    let (code, _) = second.post("/stop", json!({"runtime_id": id})).await;
    assert_eq!(code, 200);
    ns.wait_no_objects(&format!("{SESSION_HASH_LABEL}={hash}")).await;
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: run scripts/test.sh"]
async fn kwok_failure_stages_surface_with_the_right_detail() {
    let ns = TestNamespace::new("failures").await;
    let cases: [(&str, &str, &str, &str); 3] = [
        ("crashloop", "error", "crashloopbackoff", "exited with code"),
        ("image-pull-error", "error", "failed", "ImagePull"),
        ("never-ready", "starting", "running", "not ready"),
    ];
    for (stage, status, pod_status, needle) in cases {
        let state = StateDir::new();
        let label = format!("kwok.runtime-api/stage={stage}");
        let svc = ns.service(&state, &[("SANDBOX_POD_LABELS", label.as_str())]).await;
        let started = svc.start_session(&format!("stage-{stage}")).await;
        let id = id_of(&started);
        let seen = svc
            .wait_for(&id, stage, |r| {
                r["status"] == status
                    && r["pod_status"] == pod_status
                    && r["status_detail"].as_str().is_some_and(|d| d.contains(needle))
            })
            .await;
        if stage == "crashloop" {
            let seen =
                svc.wait_for(&id, "restarting", |r| r["restart_count"].as_u64() > Some(0)).await;
            assert!(!seen["restart_reasons"].as_array().unwrap().is_empty(), "{seen}");
            // Errors stay listed: they hold resources until stopped.
            assert_eq!(svc.get("/list").await.1["total"].as_u64(), Some(1));
        }
        assert_ne!(seen["status"], "running");
        svc.post("/stop", json!({"runtime_id": id})).await;
    }
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: run scripts/test.sh"]
async fn reads_never_reach_the_api_server() {
    let ns = TestNamespace::new("reads").await;
    let schema = ns.count_service_reads().await;
    let state = StateDir::new();
    let svc = ns.service(&state, &[]).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(id_of(&svc.start_session(&format!("reader-{i}")).await));
    }
    svc.wait_running(&ids[4]).await;
    let before = dispatched(&ns.admin, &schema).await;
    // The schema sees the service: its caches' first LISTs counted.
    assert!(before >= 3.0, "the FlowSchema counted {before} of the service's requests");
    let reads = 300;
    for i in 0..reads / 3 {
        svc.get("/list?status=all").await;
        svc.get(&format!("/sessions/reader-{}", i % 5)).await;
        svc.get(&format!("/runtime/{}", ids[i % 5])).await;
    }
    let after = dispatched(&ns.admin, &schema).await;
    Api::<FlowSchema>::all(ns.admin.clone()).delete(&schema, &Default::default()).await.unwrap();
    // The count is the service's own (no other client shares its FlowSchema); a request per
    // read would add at least `reads / 3`, a background re-list one or two.
    assert!(after - before < 3.0, "{reads} reads caused {} GET/LIST requests", after - before);
}

impl TestNamespace {
    /// Makes the API server count the GET and LIST requests of this namespace's ServiceAccount
    /// (the service's identity in these tests) for the kinds the service caches, apart from any
    /// other client's: a FlowSchema of their own, whose dispatches the API server counts in
    /// `apiserver_flowcontrol_dispatched_requests_total`. Cluster-wide request counters
    /// (`apiserver_request_total`) mixed in the polling of the tests running beside it.
    async fn count_service_reads(&self) -> String {
        let schema: FlowSchema = serde_json::from_value(json!({
            "metadata": {"name": format!("reads-{}", self.name)},
            "spec": {
                "priorityLevelConfiguration": {"name": "global-default"},
                "matchingPrecedence": 500,
                "distinguisherMethod": {"type": "ByUser"},
                "rules": [{
                    "subjects": [{"kind": "ServiceAccount",
                                  "serviceAccount": {"name": "runtime-api", "namespace": self.name}}],
                    "resourceRules": [{"verbs": ["get", "list"], "apiGroups": [""],
                                       "resources": ["pods", "secrets", "configmaps"],
                                       "namespaces": [self.name]}],
                }],
            },
        }))
        .unwrap();
        let api = Api::<FlowSchema>::all(self.admin.clone());
        api.create(&PostParams::default(), &schema).await.unwrap().name_any()
    }
}

/// Requests the API server dispatched under FlowSchema `schema` (0 before the first).
async fn dispatched(admin: &Client, schema: &str) -> f64 {
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = admin.request_text(req).await.unwrap();
    let label = format!("flow_schema=\"{schema}\"");
    text.lines()
        .filter(|l| l.starts_with("apiserver_flowcontrol_dispatched_requests_total{"))
        .filter(|l| l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: run scripts/test.sh"]
async fn kubernetes_failures_map_to_clear_http_errors() {
    // No RBAC in this namespace for the service account of another one: 403 and not ready.
    let ns = TestNamespace::new("rbac").await;
    let other = TestNamespace::new("norbac").await;
    let kubeconfig = ns.service_account_kubeconfig();
    let state = StateDir::new();
    let svc = Service::start(
        &state,
        &[
            ("BACKEND", "kubernetes"),
            ("NAMESPACE", other.name.as_str()),
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
        ],
    )
    .await;
    let (code, body) =
        Service::send(reqwest::Client::new().get(format!("{}/readyz", svc.base))).await;
    assert_eq!(code, 503, "{body}");
    let (code, body) = svc.post("/start", json!({"image": "img", "session_id": "forbidden"})).await;
    assert_eq!((code, body["error"].as_str()), (403, Some("forbidden")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("Role"), "{body}");

    // An unreachable API server: 503, and /readyz says why.
    let dead = ns.dir.path().join("dead.kubeconfig");
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "dead", "cluster": {"server": format!("https://127.0.0.1:{}", common::free_port()), "insecure-skip-tls-verify": true}}],
        "users": [{"name": "u", "user": {"token": "x"}}],
        "contexts": [{"name": "dead", "context": {"cluster": "dead", "user": "u"}}],
        "current-context": "dead"
    });
    std::fs::write(&dead, serde_json::to_vec(&config).unwrap()).unwrap();
    let state = StateDir::new();
    let svc = Service::start(
        &state,
        &[("BACKEND", "kubernetes"), ("NAMESPACE", "any"), ("KUBECONFIG", dead.to_str().unwrap())],
    )
    .await;
    let (code, body) =
        svc.post("/start", json!({"image": "img", "session_id": "unreachable"})).await;
    assert_eq!((code, body["error"].as_str()), (503, Some("unavailable")), "{body}");
    let (code, _) = Service::send(reqwest::Client::new().get(format!("{}/readyz", svc.base))).await;
    assert_eq!(code, 503);
    // Bad input is still a 400, whatever the cluster does.
    let (code, _) = svc
        .post("/start", json!({"image": "img", "session_id": "s", "resource_factor": 100}))
        .await;
    assert_eq!(code, 400);
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: run scripts/test.sh"]
async fn runtime_classes_are_checked_against_the_allowlist() {
    let ns = TestNamespace::new("classes").await;
    let state = StateDir::new();
    let class: k8s_openapi::api::node::v1::RuntimeClass =
        serde_json::from_value(json!({"metadata": {"name": "gvisor"}, "handler": "runsc"}))
            .unwrap();
    match Api::all(ns.admin.clone()).create(&PostParams::default(), &class).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("creating the RuntimeClass: {e}"),
    }
    let svc = ns.service(&state, &[("RUNTIME_CLASSES", "gvisor")]).await;
    let (code, body) = svc
        .post("/start", json!({"image": "img", "session_id": "c1", "runtime_class": "sysbox-runc"}))
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("not allowed"));
    let ok = svc
        .post("/start", json!({"image": "img", "session_id": "c2", "runtime_class": "gvisor"}))
        .await;
    assert_eq!(ok.0, 200, "{}", ok.1);
    let pod = ns.api::<Pod>().get(&format!("oh-rt-{}-1", id_of(&ok.1))).await.unwrap();
    assert_eq!(pod.spec.unwrap().runtime_class_name.as_deref(), Some("gvisor"));
}

/// A CNCF distribution registry (Debian's `docker-registry`) on loopback, with one pushed image.
struct Registry {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    async fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = common::free_port();
        let config = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .args(["serve", config_path.to_str().unwrap()])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect(
                "docker-registry (Debian package docker-registry; scripts/test.sh installs it)",
            );
        let registry = Registry { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while reqwest::get(registry.url("/v2/")).await.is_err() {
            assert!(Instant::now() < deadline, "registry did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        registry
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        use sha2::Digest;
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)));
        let client = reqwest::Client::new();
        let started =
            client.post(self.url(&format!("/v2/{repo}/blobs/uploads/"))).send().await.unwrap();
        assert_eq!(started.status(), 202);
        let location = started.headers()["location"].to_str().unwrap().to_string();
        let location = if location.starts_with("http") { location } else { self.url(&location) };
        let sep = if location.contains('?') { '&' } else { '?' };
        let done = client
            .put(format!("{location}{sep}digest={digest}"))
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(done.status(), 201, "{}", done.text().await.unwrap());
        digest
    }

    /// Pushes a minimal image manifest (one config blob, one layer) as `repo:tag`.
    async fn push_image(&self, repo: &str, tag: &str) {
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let layer = b"not really a tarball";
        let config_digest = self.push_blob(repo, config).await;
        let layer_digest = self.push_blob(repo, layer).await;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": config.len(), "digest": config_digest},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": layer.len(), "digest": layer_digest}]
        });
        let resp = reqwest::Client::new()
            .put(self.url(&format!("/v2/{repo}/manifests/{tag}")))
            .header("content-type", "application/vnd.docker.distribution.manifest.v2+json")
            .body(serde_json::to_vec(&manifest).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    }
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: run scripts/test.sh"]
async fn image_exists_asks_the_registry() {
    let registry = Registry::start().await;
    registry.push_image("openhands/agent-server", "1.58.2").await;
    let host = format!("127.0.0.1:{}", registry.port);
    let ns = TestNamespace::new("registry").await;
    let state = StateDir::new();
    let svc = ns.service(&state, &[("INSECURE_REGISTRIES", host.as_str())]).await;
    let (code, body) =
        svc.get(&format!("/image_exists?image={host}/openhands/agent-server:1.58.2")).await;
    assert_eq!((code, body["exists"].as_bool()), (200, Some(true)), "{body}");
    let (code, body) =
        svc.get(&format!("/image_exists?image={host}/openhands/agent-server:0.0.0")).await;
    assert_eq!((code, body["exists"].as_bool()), (200, Some(false)), "{body}");
    let (code, body) = svc.get(&format!("/image_exists?image={host}/openhands/nothing-here")).await;
    assert_eq!((code, body["exists"].as_bool()), (200, Some(false)), "{body}");
    // A registry that cannot be reached: the service says it cannot tell.
    drop(registry);
    let (code, body) =
        svc.get(&format!("/image_exists?image={host}/openhands/agent-server:1.58.2")).await;
    assert_eq!((code, body["error"].as_str()), (503, Some("unknown")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("cannot tell"), "{body}");
}

async fn lease_holder(ns: &TestNamespace) -> Option<String> {
    let lease =
        Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(ns.admin.clone(), &ns.name)
            .get_opt("runtime-api-leader")
            .await
            .unwrap()?;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

async fn wait_lease_holder(ns: &TestNamespace, want: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let holder = lease_holder(ns).await;
        if holder.as_deref() == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "lease held by {holder:?}, expected {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn metric(svc: &Service, name: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", svc.base)).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && (l.len() == name.len() || matches!(l.as_bytes()[name.len()], b' ' | b'{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: run scripts/test.sh"]
async fn the_lease_moves_to_a_survivor_and_work_continues_there() {
    let ns = TestNamespace::new("lease").await;
    let (state_a, state_b) = (StateDir::new(), StateDir::new());
    let common = [("LEASE_DURATION_SECONDS", "3"), ("MAINTENANCE_INTERVAL_SECONDS", "1")];
    // A leads but has dead cleanup off; B would stop paused runtimes after 2 s.
    let mut a_env = common.to_vec();
    a_env.extend([("POD_NAME", "replica-a"), ("RUNTIME_DEAD_SECONDS", "0")]);
    let mut a = ns.service(&state_a, &a_env).await;
    wait_lease_holder(&ns, "replica-a", Duration::from_secs(10)).await;
    let mut b_env = common.to_vec();
    b_env.extend([("POD_NAME", "replica-b"), ("RUNTIME_DEAD_SECONDS", "2")]);
    let b = ns.service(&state_b, &b_env).await;

    let started = b.start_session("lease-session").await;
    let id = id_of(&started);
    b.post("/pause", json!({"runtime_id": id})).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // The follower did nothing: the runtime is still paused.
    assert_eq!(b.get(&format!("/runtime/{id}")).await.1["status"], "paused");
    assert_eq!(metric(&a, "runtime_api_leader").await, 1.0);
    assert_eq!(metric(&b, "runtime_api_leader").await, 0.0);

    // The leader dies without releasing: B takes over within the lease duration and does the work.
    a.kill();
    wait_lease_holder(&ns, "replica-b", Duration::from_secs(10)).await;
    b.wait_for_absent(&id).await;
    ns.wait_no_objects(&selector_of(&id)).await;
    assert!(metric(&b, "runtime_api_maintenance_actions_total").await >= 1.0);
    assert_eq!(metric(&b, "runtime_api_leader").await, 1.0);
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: run scripts/test.sh"]
async fn sigterm_releases_the_lease_and_finishes_a_start_in_flight() {
    let ns = TestNamespace::new("sigterm").await;
    let (state_a, state_b) = (StateDir::new(), StateDir::new());
    let mut a =
        ns.service(&state_a, &[("POD_NAME", "graceful-a"), ("LEASE_DURATION_SECONDS", "30")]).await;
    wait_lease_holder(&ns, "graceful-a", Duration::from_secs(10)).await;
    let b =
        ns.service(&state_b, &[("POD_NAME", "graceful-b"), ("LEASE_DURATION_SECONDS", "30")]).await;

    let request = a
        .request(reqwest::Method::POST, "/start")
        .json(&json!({"image": "img", "session_id": "sigterm-session"}));
    let pending = tokio::spawn(async move { request.send().await });
    tokio::time::sleep(Duration::from_millis(5)).await;
    let status = a.terminate();
    assert_eq!(status.code(), Some(0), "graceful exit; log:\n{}", a.log_text());
    // Either the start finished before the listener closed (then it is complete) or it never began.
    let hash = runtime_api::runtime::ids::session_hash("sigterm-session");
    let objects = ns.objects(&format!("{SESSION_HASH_LABEL}={hash}")).await;
    match pending.await.unwrap() {
        Ok(resp) if resp.status() == 200 => {
            for kind in ["configmap/", "secret/", "pod/", "service/", "ingress/"] {
                assert_eq!(
                    objects.iter().filter(|o| o.starts_with(kind)).count(),
                    1,
                    "{kind} in {objects:?}"
                );
            }
        }
        other => assert!(objects.is_empty(), "a refused start left {objects:?} ({other:?})"),
    }
    // The lease was released: B leads long before the 30 s lease would have expired.
    wait_lease_holder(&ns, "graceful-b", Duration::from_secs(8)).await;
    drop(b);
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: run scripts/test.sh"]
async fn failing_runtimes_are_paused_or_stopped_after_the_threshold() {
    let ns = TestNamespace::new("failclean").await;
    for (action, expect_gone) in [("pause", false), ("stop", true)] {
        let state = StateDir::new();
        let svc = ns
            .service(
                &state,
                &[
                    ("SANDBOX_POD_LABELS", "kwok.runtime-api/stage=crashloop"),
                    ("RUNTIME_FAILED_SECONDS", "2"),
                    ("RUNTIME_FAILED_ACTION", action),
                    ("MAINTENANCE_INTERVAL_SECONDS", "1"),
                    ("LEASE_DURATION_SECONDS", "3"),
                ],
            )
            .await;
        let id = id_of(&svc.start_session(&format!("failing-{action}")).await);
        svc.wait_for(&id, "crash looping", |r| r["pod_status"] == "crashloopbackoff").await;
        if expect_gone {
            svc.wait_for_absent(&id).await;
            ns.wait_no_objects(&selector_of(&id)).await;
        } else {
            let paused = svc.wait_for(&id, "paused", |r| r["status"] == "paused").await;
            let detail = paused["status_detail"].as_str().unwrap_or_default();
            assert!(
                detail.contains("paused by maintenance") && detail.contains("CrashLoopBackOff"),
                "{paused}"
            );
            // Paused, not deleted: everything but the pod is still there.
            assert!(ns.objects(&selector_of(&id)).await.contains(&format!("secret/oh-rt-{id}")));
            svc.post("/stop", json!({"runtime_id": id})).await;
        }
        // The lease of this instance must not block the next one.
        drop(svc);
        tokio::time::sleep(Duration::from_secs(4)).await;
    }
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: run scripts/test.sh"]
async fn the_sweep_deletes_orphans_and_repairs_runtimes() {
    let ns = TestNamespace::new("sweep").await;
    let state = StateDir::new();
    let svc = ns
        .service(
            &state,
            &[
                ("ORPHAN_GRACE_SECONDS", "0"),
                ("MAINTENANCE_INTERVAL_SECONDS", "1"),
                ("LEASE_DURATION_SECONDS", "3"),
            ],
        )
        .await;
    let id = id_of(&svc.start_session("sweep-session").await);
    svc.wait_running(&id).await;
    // An orphan: labelled like ours, but no runtime owns it.
    let orphan: KubeService = serde_json::from_value(json!({
        "metadata": {"name": "oh-rt-orphan", "labels": {
            "app.kubernetes.io/managed-by": "runtime-api", RUNTIME_ID_LABEL: "0000000000000000ffffffffffffffff"}},
        "spec": {"ports": [{"port": 60000}]}
    }))
    .unwrap();
    ns.api::<KubeService>().create(&PostParams::default(), &orphan).await.unwrap();
    // A runtime that lost an object.
    ns.api::<KubeService>().delete(&format!("oh-rt-{id}"), &Default::default()).await.unwrap();
    // The sandboxes' shared policy, deleted, and a per-sandbox policy an earlier version made.
    let policies = ns.api::<NetworkPolicy>();
    policies.delete("oh-sandboxes", &Default::default()).await.unwrap();
    let legacy: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": format!("oh-rt-{id}"), "labels": {
            "app.kubernetes.io/managed-by": "runtime-api", RUNTIME_ID_LABEL: id}},
        "spec": {"podSelector": {"matchLabels": {RUNTIME_ID_LABEL: id}}}
    }))
    .unwrap();
    policies.create(&PostParams::default(), &legacy).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let objects = ns.objects("app.kubernetes.io/managed-by=runtime-api").await;
        let repaired = objects.contains(&format!("service/oh-rt-{id}"))
            && objects.contains("networkpolicy/oh-sandboxes")
            && !objects.contains(&format!("networkpolicy/oh-rt-{id}"));
        let swept = !objects.contains("service/oh-rt-orphan");
        if repaired && swept {
            break;
        }
        assert!(Instant::now() < deadline, "sweep incomplete: {objects:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(metric(&svc, "runtime_api_maintenance_actions_total").await >= 2.0);
    // The runtime itself was left alone.
    assert_eq!(svc.get(&format!("/runtime/{id}")).await.1["status"], "running");
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: run scripts/test.sh"]
async fn metrics_and_events_follow_operations() {
    let ns = TestNamespace::new("metrics").await;
    let state = StateDir::new();
    let svc = ns.service(&state, &[]).await;
    let before = metric(&svc, "runtime_api_operations_total").await;
    let id = id_of(&svc.start_session("metrics-session").await);
    svc.wait_running(&id).await;
    svc.post("/pause", json!({"runtime_id": id})).await;
    assert_eq!(metric(&svc, "runtime_api_operations_total").await, before + 2.0);
    assert!(metric(&svc, "runtime_api_start_duration_seconds_count").await >= 1.0);
    assert_eq!(
        metric(&svc, "runtime_api_start_to_running_seconds_count").await,
        1.0,
        "one pod became ready"
    );
    assert!(metric(&svc, "runtime_api_cache_objects{kind=\"records\"}").await >= 1.0);
    assert_eq!(metric(&svc, "runtime_api_runtimes{status=\"paused\"}").await, 1.0);
    assert!(metric(&svc, "runtime_api_kube_requests_total").await >= 6.0);
    // Events on the record, for humans running `kubectl describe`.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = kubectl(&["get", "events", "-n", &ns.name, "-o", "json"]);
        if events.contains("\"Paused\"") && events.contains("\"Started\"") {
            break;
        }
        assert!(Instant::now() < deadline, "no lifecycle events: {events}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: run scripts/test.sh"]
async fn key_rotation_on_resume_is_opt_in() {
    let ns = TestNamespace::new("rotation").await;
    for (rotate, expect_new_key) in [("false", false), ("true", true)] {
        let state = StateDir::new();
        let svc = ns.service(&state, &[("ROTATE_SESSION_KEY_ON_RESUME", rotate)]).await;
        let started = svc.start_session(&format!("rotation-{rotate}")).await;
        let id = id_of(&started);
        svc.post("/pause", json!({"runtime_id": id})).await;
        let (code, resumed) = svc.post("/resume", json!({"runtime_id": id})).await;
        assert_eq!(code, 200, "{resumed}");
        let key = resumed["session_api_key"].as_str().unwrap();
        assert_eq!(
            key != started["session_api_key"].as_str().unwrap(),
            expect_new_key,
            "rotate={rotate}"
        );
        // The Secret the new pod reads holds the key the client was given.
        let secret = ns.api::<Secret>().get(&format!("oh-rt-{id}")).await.unwrap();
        assert_eq!(secret.data.unwrap()["SESSION_API_KEY"].0, key.as_bytes());
        svc.post("/stop", json!({"runtime_id": id})).await;
    }
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: run scripts/test.sh"]
async fn a_start_the_cluster_refuses_leaves_nothing_behind() {
    let ns = TestNamespace::new("refused").await;
    let state = StateDir::new();
    // Allowed here, but the cluster has no such RuntimeClass: the pod is refused at admission.
    let svc = ns.service(&state, &[("RUNTIME_CLASSES", "not-in-this-cluster")]).await;
    let (code, body) = svc
        .post(
            "/start",
            json!({"image": "img", "session_id": "refused-1", "runtime_class": "not-in-this-cluster"}),
        )
        .await;
    assert_eq!((code, body["error"].as_str()), (400, Some("bad_request")), "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("RuntimeClass \"not-in-this-cluster\""), "{body}");
    assert!(!message.contains("Role"), "{body}");

    // A quota that admits no pod: refused after the record, Secret, Service and Ingress were
    // created.
    let quota: k8s_openapi::api::core::v1::ResourceQuota = serde_json::from_value(
        json!({"metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}}),
    )
    .unwrap();
    ns.api().create(&PostParams::default(), &quota).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await; // the quota controller fills in its status
    let (code, body) = svc.post("/start", json!({"image": "img", "session_id": "refused-2"})).await;
    assert_eq!(code, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("quota"), "{body}");

    for session in ["refused-1", "refused-2"] {
        assert_eq!(svc.get(&format!("/sessions/{session}")).await.0, 404, "{session}");
    }
    let (_, listed) = svc.get("/list?status=all").await;
    assert_eq!(listed["total"], 0, "{listed}");
    // Nothing but the sandboxes' shared NetworkPolicy, which outlives every runtime.
    let runtimes = "app.kubernetes.io/managed-by=runtime-api,runtime-api.openhands.dev/component!=network-policy";
    ns.wait_no_objects(runtimes).await;
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: run scripts/test.sh"]
async fn a_restarted_service_never_answers_from_incomplete_caches() {
    const RUNTIMES: usize = 1000;
    let ns = TestNamespace::new("sync").await;
    let state = StateDir::new();
    // Pods no node can take: the pod cache has 1,000 pods to list, and the kwok nodes keep their
    // capacity for the tests running beside this one.
    let svc = ns
        .service(&state, &[("SANDBOX_NODE_SELECTOR", "runtime-api.test/no-such-node=true")])
        .await;
    let svc = Arc::new(svc);
    let mut started = 0;
    for chunk in (0..RUNTIMES).collect::<Vec<_>>().chunks(25) {
        let starts = chunk.iter().map(|i| {
            let svc = svc.clone();
            async move {
                svc.post("/start", json!({"image": "img", "session_id": format!("s-{i}")})).await.0
            }
        });
        started += futures::future::join_all(starts).await.iter().filter(|c| **c == 200).count();
    }
    assert_eq!(started, RUNTIMES);
    drop(Arc::into_inner(svc).expect("no other handle"));

    // A fresh instance: polled from the moment it accepts connections.
    let kubeconfig = ns.service_account_kubeconfig();
    let env = [
        ("BACKEND", "kubernetes"),
        ("NAMESPACE", ns.name.as_str()),
        ("KUBECONFIG", kubeconfig.to_str().unwrap()),
        ("BASE_DOMAIN", "sandbox.test"),
    ];
    let svc = Service::start(&state, &env).await;
    let mut answers = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let resp = svc.request(reqwest::Method::GET, "/list?status=all").send().await.unwrap();
        let code = resp.status().as_u16();
        let retry_after = resp.headers().get("retry-after").is_some();
        let body: Value = resp.json().await.unwrap();
        match code {
            200 => {
                assert_eq!(body["total"], RUNTIMES, "a partial answer");
                let runtimes = body["runtimes"].as_array().unwrap();
                assert!(
                    runtimes.iter().all(|r| r["pod_status"] == "pending"),
                    "pods not yet cached"
                );
                answers.insert(200);
                break;
            }
            503 => {
                assert!(retry_after && body["error"] == "not_ready", "{body}");
                answers.insert(503);
            }
            other => panic!("{other}: {body}"),
        }
        assert!(Instant::now() < deadline, "never complete");
    }
    eprintln!("answers seen after the restart: {answers:?}");
}

/// Tracing on the Kubernetes backend: the caller's trace continues through `/start` and every
/// API-server request it makes (kube's client spans), exported to a real OTLP/HTTP receiver; and
/// batch conversations there: a paused runtime gives `[]` and stays paused.
#[tokio::test]
#[ignore = "needs a Kubernetes API server: run scripts/test.sh"]
async fn kubernetes_calls_are_spans_of_the_callers_trace_and_batch_conversations_never_wake() {
    const TRACE_ID: &str = "5b8efff798038103d269b633813fc60c";
    let receiver = common::otlp::Receiver::start().await;
    let ns = TestNamespace::new("tracing").await;
    let state = StateDir::new();
    let svc = ns
        .service(
            &state,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str()),
                ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ],
        )
        .await;
    let start = svc
        .request(reqwest::Method::POST, "/start")
        .header("traceparent", format!("00-{TRACE_ID}-eee19b7ec3c1b174-01"))
        .json(&json!({"image": "ghcr.io/openhands/agent-server:1.58.2-python", "session_id": "traced-1"}));
    let (code, started) = Service::send(start).await;
    assert_eq!(code, 200, "{started}");
    let id = id_of(&started);

    let deadline = Instant::now() + Duration::from_secs(20);
    let (server, kube_calls) = loop {
        let spans: Vec<_> =
            receiver.spans().into_iter().filter(|s| s.trace_id == TRACE_ID).collect();
        let server = spans.iter().find(|s| s.name == "POST /start").cloned();
        let kube: Vec<_> = spans
            .iter()
            .filter(|s| s.kind == common::otlp::SpanKind::Client && s.name == "create")
            .cloned()
            .collect();
        // The record, Secret, Pod, Service and Ingress (and the shared NetworkPolicy, if this
        // is the instance's first start).
        if let Some(server) = server.filter(|_| kube.len() >= 5) {
            break (server, kube);
        }
        assert!(Instant::now() < deadline, "spans of the trace so far: {spans:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(server.parent_span_id, "eee19b7ec3c1b174", "{server:?}");
    assert!(kube_calls.iter().all(|s| !s.parent_span_id.is_empty()), "{kube_calls:?}");

    // Batch conversations on this backend: paused and unknown runtimes are [] and stay as they are.
    svc.wait_running(&id).await;
    let (code, _) = svc.post("/pause", json!({"runtime_id": id})).await;
    assert_eq!(code, 200);
    let (code, answer) = svc
        .post(
            "/sessions/batch-conversations",
            json!({"sandboxes": {
                &id: {"session_id": "traced-1", "conversation_ids": ["c1"]},
                "0123456789abcdef0123456789abcdef": {"session_id": "nobody", "conversation_ids": ["c1"]},
            }}),
        )
        .await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer, json!({&id: [], "0123456789abcdef0123456789abcdef": []}));
    assert!(ns.pods_of(&id).await.is_empty(), "asking woke the paused runtime");
    let (_, view) = svc.get(&format!("/runtime/{id}")).await;
    assert_eq!(view["status"], "paused");
    let (code, _) = svc.post("/stop", json!({"runtime_id": id})).await;
    assert_eq!(code, 200);
}
