//! The Kubernetes backend: each runtime is a set of objects in one namespace, owned by a record.
//!
//! The cluster is the only source of truth: any replica answers for every runtime, paused ones
//! included, from its watch-fed cache ([`store`]); writes go straight to the API server and wait
//! for the cache to catch up, so a client reads its own writes.

pub mod manifests;
pub mod quantity;
pub mod settings;
pub mod status;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use self::manifests::{
    ANNOTATION_GENERATION, ANNOTATION_PAUSE_REASON, ANNOTATION_PAUSED, ANNOTATION_PAUSED_AT,
    ANNOTATION_SESSION_ID, DATA_CREATED_AT, DATA_SPEC, Identity, LABEL_RUNTIME_ID,
    LABEL_SESSION_HASH,
};
pub use self::settings::KubeSettings;
use self::store::Store;
use crate::registry::{self, Credentials, RegistryClient, docker_config_credentials};
use crate::runtime::{
    Backend, BackendError, BackendResult, Candidate, ImageCheck, ListFilter, PodStatus, Readiness,
    Runtime, RuntimeSpec, Status, SweepReport, ids,
};
use crate::telemetry::Metrics;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

/// How long a write waits for the cache to show it before answering anyway.
const CACHE_CATCH_UP: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct KubernetesBackend {
    inner: Arc<Inner>,
}

struct Inner {
    settings: KubeSettings,
    client: Client,
    store: Store,
    registry: RegistryClient,
    metrics: Metrics,
    recorder: Recorder,
    /// Serialises `/start` per session within this replica; across replicas the record's
    /// deterministic name does the same job.
    session_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Maps Kubernetes API failures to the service's error kinds.
fn kube_error(context: &str, e: kube::Error) -> BackendError {
    match &e {
        kube::Error::Api(status) => {
            let message = format!("{context}: {} ({})", status.message, status.reason);
            match status.code {
                403 => {
                    BackendError::Forbidden(format!("{message}; check the service account's Role"))
                }
                404 => BackendError::NotFound(message),
                409 => BackendError::Conflict(message),
                400 | 422 => BackendError::Invalid(message),
                429 | 500..=599 => BackendError::Unavailable(message),
                _ => BackendError::Internal(message),
            }
        }
        _ => {
            BackendError::Unavailable(format!("{context}: the Kubernetes API is unreachable: {e}"))
        }
    }
}

fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// A record this service cannot read: written by something else, or by an incompatible version.
fn malformed() -> BackendError {
    BackendError::Internal("malformed runtime record".into())
}

fn not_found(runtime_id: &str) -> BackendError {
    BackendError::NotFound(format!("runtime {runtime_id} not found"))
}

/// What a record says about its runtime.
struct RecordInfo {
    runtime_id: String,
    session_id: String,
    session_hash: String,
    paused: bool,
    generation: u32,
    spec: RuntimeSpec,
    created_at: String,
    paused_at: Option<jiff::Timestamp>,
    pause_reason: Option<String>,
}

fn record_info(record: &ConfigMap) -> Option<RecordInfo> {
    let labels = record.metadata.labels.as_ref()?;
    let annotations = record.metadata.annotations.as_ref()?;
    let data = record.data.as_ref()?;
    Some(RecordInfo {
        runtime_id: labels.get(LABEL_RUNTIME_ID)?.clone(),
        session_hash: labels.get(LABEL_SESSION_HASH)?.clone(),
        session_id: annotations.get(ANNOTATION_SESSION_ID)?.clone(),
        paused: annotations.get(ANNOTATION_PAUSED).map(|v| v == "true").unwrap_or(false),
        generation: annotations
            .get(ANNOTATION_GENERATION)
            .and_then(|g| g.parse().ok())
            .unwrap_or(1),
        spec: serde_json::from_str(data.get(DATA_SPEC)?).ok()?,
        created_at: data.get(DATA_CREATED_AT).cloned().unwrap_or_default(),
        paused_at: annotations.get(ANNOTATION_PAUSED_AT).and_then(|t| t.parse().ok()),
        pause_reason: annotations.get(ANNOTATION_PAUSE_REASON).cloned(),
    })
}

/// What the children of a record need: its contents and the owner reference pointing at it.
fn owned_by(
    record: &ConfigMap,
) -> BackendResult<(RecordInfo, k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference)> {
    let info = record_info(record).ok_or_else(malformed)?;
    let owner = manifests::owner_reference(record)
        .ok_or_else(|| BackendError::Internal("the runtime record has no uid".into()))?;
    Ok((info, owner))
}

fn record_reference(record: &ConfigMap) -> Option<k8s_openapi::api::core::v1::ObjectReference> {
    record.metadata.uid.as_ref()?;
    Some(record.object_ref(&()))
}

/// Whether an object is older than `grace` (younger ones may belong to a start in flight).
fn older_than(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    grace: Duration,
) -> bool {
    meta.creation_timestamp
        .as_ref()
        .is_some_and(|t| jiff::Timestamp::now().duration_since(t.0).unsigned_abs() > grace)
}

fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

impl KubernetesBackend {
    /// Connects with the ambient configuration (in-cluster service account or KUBECONFIG) and
    /// starts the watches. Fails only when no configuration can be found at all.
    pub async fn connect(
        settings: KubeSettings,
        metrics: Metrics,
        identity: &str,
    ) -> Result<Self, String> {
        let client = Client::try_default()
            .await
            .map_err(|e| format!("cannot configure the Kubernetes client: {e}"))?;
        Self::with_client(client, settings, metrics, identity)
    }

    pub fn with_client(
        client: Client,
        settings: KubeSettings,
        metrics: Metrics,
        identity: &str,
    ) -> Result<Self, String> {
        let registry = RegistryClient::new(settings.insecure_registries.clone())?;
        let store = Store::start(client.clone(), &settings.namespace, metrics.clone());
        let recorder = Recorder::new(
            client.clone(),
            Reporter { controller: "runtime-api".into(), instance: Some(identity.to_string()) },
        );
        Ok(KubernetesBackend {
            inner: Arc::new(Inner {
                settings,
                client,
                store,
                registry,
                metrics,
                recorder,
                session_locks: Mutex::default(),
            }),
        })
    }

    pub fn client(&self) -> Client {
        self.inner.client.clone()
    }

    pub fn namespace(&self) -> &str {
        &self.inner.settings.namespace
    }

    /// Records a Kubernetes Event on the runtime's record, in the background (events are for
    /// humans; they must not slow requests down or fail them).
    fn event(&self, record: &ConfigMap, warning: bool, reason: &str, note: String) {
        let Some(reference) = record_reference(record) else { return };
        let recorder = self.inner.recorder.clone();
        let event = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.to_string(),
            note: Some(note),
            action: reason.to_string(),
            secondary: None,
        };
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::debug!(error = %e, "could not record an event");
            }
        });
    }

    /// Registry credentials from the configured image pull secrets (read when asked: rare).
    async fn pull_credentials(&self) -> BackendResult<HashMap<String, Credentials>> {
        let mut all = HashMap::new();
        for name in &self.inner.settings.image_pull_secrets {
            let secret = match self.api::<Secret>().get_opt(name).await {
                Ok(Some(secret)) => secret,
                Ok(None) => continue,
                Err(e) => return Err(kube_error(&format!("reading the pull secret {name}"), e)),
            };
            if let Some(config) = secret.data.as_ref().and_then(|d| d.get(".dockerconfigjson")) {
                all.extend(docker_config_credentials(&config.0));
            }
        }
        Ok(all)
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.inner.client.clone(), &self.inner.settings.namespace)
    }

    fn session_lock(&self, session_hash: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.inner.session_locks.lock().unwrap_or_else(|p| p.into_inner());
        // Drop locks nobody holds, so the map does not grow with every session ever seen.
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(session_hash.to_string()).or_default().clone()
    }

    /// The runtime object as clients see it, from a record and the cache.
    fn view(&self, record: &ConfigMap) -> Option<Runtime> {
        let info = record_info(record)?;
        let s = &self.inner.settings;
        let secret = self.inner.store.secret(&manifests::object_name(&info.runtime_id));
        let session_api_key =
            secret.as_deref().and_then(|s| secret_value(s, "SESSION_API_KEY")).unwrap_or_default();
        let pod = self.inner.store.pod(&manifests::pod_name(&info.runtime_id, info.generation));
        let mut observed = status::observe(info.paused, pod.as_deref());
        if info.paused {
            observed.detail = info.pause_reason.clone();
        }
        if record.metadata.deletion_timestamp.is_some() {
            observed.status = Status::Stopped;
            observed.pod_status = PodStatus::NotFound;
            observed.detail = Some("the runtime is being stopped".into());
        }
        let urls = manifests::urls(s, &info.runtime_id);
        Some(Runtime {
            runtime_id: info.runtime_id,
            session_id: info.session_id,
            url: urls.url,
            session_api_key,
            status: observed.status,
            pod_status: observed.pod_status,
            work_hosts: urls.work_hosts,
            vscode_url: Some(urls.vscode_url),
            restart_count: observed.restart_count,
            restart_reasons: observed.restart_reasons,
            status_detail: observed.detail,
            created_at: info.created_at,
            image: info.spec.image,
            resource_factor: info.spec.resource_factor,
        })
    }

    /// Every cached record.
    fn records(&self) -> Vec<Arc<ConfigMap>> {
        self.inner.store.records.state()
    }

    /// The cached record of a runtime id (a scan: runtime ids are not part of record names).
    fn find_record(&self, runtime_id: &str) -> Option<Arc<ConfigMap>> {
        self.inner
            .store
            .records
            .find(|r| r.labels().get(LABEL_RUNTIME_ID).is_some_and(|id| id == runtime_id))
    }

    fn live_record(&self, runtime_id: &str) -> BackendResult<Arc<ConfigMap>> {
        self.find_record(runtime_id)
            .filter(|r| r.metadata.deletion_timestamp.is_none())
            .ok_or_else(|| not_found(runtime_id))
    }

    /// Creates an object, treating AlreadyExists as success (completing a half-created runtime).
    async fn create<K>(&self, what: &str, obj: &K) -> BackendResult<()>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Serialize
            + std::fmt::Debug,
        <K as Resource>::DynamicType: Default,
    {
        let result = self.api::<K>().create(&PostParams::default(), obj).await;
        self.count("create", what, &result);
        match result {
            Ok(_) => Ok(()),
            Err(e) if api_code(&e) == Some(409) => Ok(()),
            Err(e) => Err(kube_error(&format!("creating the {what}"), e)),
        }
    }

    async fn delete<K>(&self, what: &str, name: &str) -> BackendResult<()>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
        <K as Resource>::DynamicType: Default,
    {
        let result = self.api::<K>().delete(name, &DeleteParams::background()).await;
        self.count("delete", what, &result);
        match result {
            Ok(_) => Ok(()),
            Err(e) if api_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(kube_error(&format!("deleting the {what}"), e)),
        }
    }

    fn count<T>(&self, verb: &str, what: &str, result: &Result<T, kube::Error>) {
        let outcome = match result {
            Ok(_) => "ok".to_string(),
            Err(e) => api_code(e).map_or_else(|| "unreachable".to_string(), |c| c.to_string()),
        };
        self.inner.metrics.kube_request(verb, what, &outcome);
    }

    async fn delete_pods(&self, runtime_id: &str) -> BackendResult<()> {
        let params = ListParams::default().labels(&manifests::runtime_selector(runtime_id));
        let result =
            self.api::<Pod>().delete_collection(&DeleteParams::background(), &params).await;
        self.count("deletecollection", "sandbox pod", &result);
        result.map(|_| ()).map_err(|e| kube_error("deleting the sandbox pods", e))
    }

    /// Creates every object of a runtime that its record implies; existing ones are left alone.
    async fn ensure_objects(
        &self,
        record: &ConfigMap,
        secret: Option<&Secret>,
        create_secret: Option<(&str, &BTreeMap<String, String>)>,
    ) -> BackendResult<()> {
        let (info, owner) = owned_by(record)?;
        let s = &self.inner.settings;
        let id = Identity { runtime_id: &info.runtime_id, session_hash: &info.session_hash, owner };
        if let Some((key, env)) = create_secret {
            self.create("secret", &manifests::secret(s, &id, key, env)).await?;
        } else if secret.is_none() {
            return Err(BackendError::Internal("the runtime's secret is missing".into()));
        }
        if let Some(claim) = manifests::workspace_claim(s, &id) {
            self.create::<PersistentVolumeClaim>("workspace claim", &claim).await?;
        }
        self.create::<Service>("service", &manifests::service(s, &id)).await?;
        self.create::<NetworkPolicy>("network policy", &manifests::network_policy(s, &id)).await?;
        self.create::<Ingress>("ingress", &manifests::ingress(s, &id)).await?;
        if !info.paused {
            self.create_pod(&info, id).await?;
        }
        Ok(())
    }

    /// The sandbox pod of the record's current generation.
    async fn create_pod(&self, info: &RecordInfo, id: Identity<'_>) -> BackendResult<()> {
        let s = &self.inner.settings;
        let class = manifests::runtime_class(s, &info.spec).map_err(BackendError::Invalid)?;
        let created_at = jiff::Timestamp::now().to_string();
        let pod = manifests::pod(s, &id, &info.spec, class, info.generation, &created_at);
        self.create::<Pod>("sandbox pod", &pod).await
    }

    /// Waits until the cache holds `record` at least as new as written, and its Secret.
    async fn await_cached(&self, written: &ConfigMap) {
        let name = written.name_any();
        let secret_name =
            written.labels().get(LABEL_RUNTIME_ID).map(|id| manifests::object_name(id));
        let store = &self.inner.store;
        let caught_up = store::wait_until(CACHE_CATCH_UP, || {
            store::caught_up(store.record(&name).as_ref(), written)
                && secret_name.as_ref().is_none_or(|s| store.secret(s).is_some())
        })
        .await;
        if !caught_up {
            tracing::warn!(record = %name, "the cache did not catch up with a write in time");
        }
    }

    async fn create_runtime(
        &self,
        spec: RuntimeSpec,
        session_hash: &str,
    ) -> BackendResult<Runtime> {
        let s = &self.inner.settings;
        let runtime_id = ids::new_runtime_id();
        let session_key = ids::new_session_key();
        let created_at = jiff::Timestamp::now().to_string();
        let record = manifests::record(&s.namespace, &runtime_id, session_hash, &spec, &created_at);
        let result = self.api::<ConfigMap>().create(&PostParams::default(), &record).await;
        self.count("create", "runtime record", &result);
        let created = match result {
            Ok(created) => created,
            Err(e) if api_code(&e) == Some(409) => {
                return self.existing_after_conflict(&record).await;
            }
            Err(e) => return Err(kube_error("creating the runtime record", e)),
        };
        tracing::info!(runtime_id = %runtime_id, session_id = %spec.session_id, "runtime record created");
        self.ensure_objects(&created, None, Some((&session_key, &spec.environment))).await?;
        self.event(
            &created,
            false,
            "Started",
            format!("runtime {runtime_id} created for image {}", spec.image),
        );
        self.await_cached(&created).await;
        self.view(&created).ok_or_else(malformed)
    }

    /// Another replica (or request) created this session's record first: return its runtime once
    /// its Secret exists, so the response carries the session key.
    async fn existing_after_conflict(&self, record: &ConfigMap) -> BackendResult<Runtime> {
        let name = record.name_any();
        let existing = self
            .api::<ConfigMap>()
            .get(&name)
            .await
            .map_err(|e| kube_error("reading the runtime record", e))?;
        self.await_cached(&existing).await;
        self.view(&existing).ok_or_else(malformed)
    }

    async fn patch_record(
        &self,
        name: &str,
        annotations: serde_json::Value,
    ) -> BackendResult<ConfigMap> {
        let result = self
            .api::<ConfigMap>()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": annotations}})),
            )
            .await;
        self.count("patch", "runtime record", &result);
        result.map_err(|e| kube_error("updating the runtime record", e))
    }
}

#[async_trait]
impl Backend for KubernetesBackend {
    async fn start(&self, spec: RuntimeSpec) -> BackendResult<Runtime> {
        manifests::runtime_class(&self.inner.settings, &spec).map_err(BackendError::Invalid)?;
        let session_hash = ids::session_hash(&spec.session_id);
        let lock = self.session_lock(&session_hash);
        let _serialised = lock.lock().await;
        let name = manifests::record_name(&session_hash);
        if let Some(record) = self.inner.store.record(&name) {
            let info = record_info(&record).ok_or_else(malformed)?;
            if record.metadata.deletion_timestamp.is_some() {
                // Being stopped: wait for it to go, then start afresh.
                store::wait_until(CACHE_CATCH_UP, || self.inner.store.record(&name).is_none())
                    .await;
                return self.create_runtime(spec, &session_hash).await;
            }
            let secret = self.inner.store.secret(&manifests::object_name(&info.runtime_id));
            if secret.is_none() {
                // A record without its Secret: its creator crashed, or is still at work (here or on
                // another replica). Completing it is safe either way: whoever creates the Secret
                // first wins, the other gets AlreadyExists, and both answer with the stored key.
                tracing::info!(runtime_id = %info.runtime_id, "completing a runtime whose creation was interrupted");
                let key = ids::new_session_key();
                self.ensure_objects(&record, None, Some((&key, &spec.environment))).await?;
                self.await_cached(&record).await;
                return self.view(&record).ok_or_else(malformed);
            }
            let current = self.view(&record).ok_or_else(malformed)?;
            return match current.status {
                Status::Paused | Status::Error => self.resume(&info.runtime_id).await,
                _ => {
                    if current.pod_status == PodStatus::NotFound {
                        // Complete a runtime whose creation was interrupted.
                        self.ensure_objects(&record, secret.as_deref(), None).await?;
                    }
                    Ok(current)
                }
            };
        }
        self.create_runtime(spec, &session_hash).await
    }

    async fn get(&self, runtime_id: &str) -> BackendResult<Option<Runtime>> {
        Ok(self.find_record(runtime_id).and_then(|r| self.view(&r)))
    }

    async fn get_by_session(&self, session_id: &str) -> BackendResult<Option<Runtime>> {
        let name = manifests::record_name(&ids::session_hash(session_id));
        Ok(self.inner.store.record(&name).and_then(|r| self.view(&r)))
    }

    async fn list(&self, filter: &ListFilter) -> BackendResult<Vec<Runtime>> {
        Ok(self
            .records()
            .iter()
            .filter_map(|r| self.view(r))
            .filter(|r| filter.matches(r.status))
            .collect())
    }

    async fn pause(&self, runtime_id: &str, reason: Option<&str>) -> BackendResult<Runtime> {
        let record = self.live_record(runtime_id)?;
        let info = record_info(&record).ok_or_else(malformed)?;
        let patched = if info.paused {
            (*record).clone()
        } else {
            let patched = self
                .patch_record(
                    &record.name_any(),
                    json!({
                        ANNOTATION_PAUSED: "true",
                        ANNOTATION_PAUSED_AT: jiff::Timestamp::now().to_string(),
                        ANNOTATION_PAUSE_REASON: reason,
                    }),
                )
                .await?;
            self.event(
                &patched,
                false,
                "Paused",
                reason.unwrap_or("paused by a client").to_string(),
            );
            patched
        };
        self.delete_pods(runtime_id).await?;
        self.await_cached(&patched).await;
        tracing::info!(runtime_id, session_id = %info.session_id, "runtime paused");
        self.view(&patched).ok_or_else(|| not_found(runtime_id))
    }

    async fn resume(&self, runtime_id: &str) -> BackendResult<Runtime> {
        let record = self.live_record(runtime_id)?;
        let info = record_info(&record).ok_or_else(malformed)?;
        let current = self.view(&record).ok_or_else(|| not_found(runtime_id))?;
        if !info.paused
            && matches!(current.status, Status::Starting | Status::Running)
            && current.pod_status != PodStatus::NotFound
        {
            return Ok(current);
        }
        let secret_name = manifests::object_name(runtime_id);
        if self.inner.store.secret(&secret_name).is_none() {
            return Err(BackendError::Internal(format!(
                "runtime {runtime_id} has lost its secret; stop it and start a new one"
            )));
        }
        let rotated = if self.inner.settings.rotate_key_on_resume {
            let key = ids::new_session_key();
            let encoded: BTreeMap<&str, String> = crate::runtime::env::SESSION_KEY_VARS
                .iter()
                .map(|k| {
                    (*k, base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &key))
                })
                .collect();
            let result = self
                .api::<Secret>()
                .patch(
                    &secret_name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "data": encoded })),
                )
                .await;
            self.count("patch", "secret", &result);
            Some(result.map_err(|e| kube_error("rotating the session key", e))?)
        } else {
            None
        };
        // A new pod generation: the old pod may still be terminating under its own name.
        self.delete_pods(runtime_id).await?;
        let generation = info.generation + 1;
        let patched = self
            .patch_record(
                &record.name_any(),
                json!({
                    ANNOTATION_PAUSED: "false",
                    ANNOTATION_GENERATION: generation.to_string(),
                    ANNOTATION_PAUSED_AT: null,
                    ANNOTATION_PAUSE_REASON: null,
                }),
            )
            .await?;
        self.event(&patched, false, "Resumed", format!("sandbox pod generation {generation}"));
        // Only the pod was gone; anything else missing is the orphan sweep's to repair.
        let (patched_info, owner) = owned_by(&patched)?;
        let id = Identity {
            runtime_id: &patched_info.runtime_id,
            session_hash: &patched_info.session_hash,
            owner,
        };
        self.create_pod(&patched_info, id).await?;
        if let Some(written) = rotated {
            store::wait_until(CACHE_CATCH_UP, || {
                store::caught_up(self.inner.store.secret(&secret_name).as_ref(), &written)
            })
            .await;
        }
        self.await_cached(&patched).await;
        tracing::info!(runtime_id, session_id = %info.session_id, generation, "runtime resumed");
        self.view(&patched).ok_or_else(|| not_found(runtime_id))
    }

    async fn stop(&self, runtime_id: &str) -> BackendResult<Runtime> {
        let record = self.find_record(runtime_id).ok_or_else(|| not_found(runtime_id))?;
        let mut last = self.view(&record).ok_or_else(|| not_found(runtime_id))?;
        let name = record.name_any();
        // The record first: from now on this session starts afresh; then everything it owned,
        // explicitly (garbage collection would get there too, but later and not when it is off).
        self.delete::<ConfigMap>("runtime record", &name).await?;
        self.event(&record, false, "Stopped", format!("runtime {runtime_id} stopped"));
        let object = manifests::object_name(runtime_id);
        self.delete_pods(runtime_id).await?;
        self.delete::<Ingress>("ingress", &object).await?;
        self.delete::<NetworkPolicy>("network policy", &object).await?;
        self.delete::<Service>("service", &object).await?;
        self.delete::<Secret>("secret", &object).await?;
        if self.inner.settings.workspace_storage_size.is_some() {
            self.delete::<PersistentVolumeClaim>(
                "workspace claim",
                &manifests::claim_name(runtime_id),
            )
            .await?;
        }
        let uid = record.metadata.uid.clone();
        store::wait_until(CACHE_CATCH_UP, || {
            self.inner.store.record(&name).is_none_or(|r| r.metadata.uid != uid)
        })
        .await;
        tracing::info!(runtime_id, session_id = %last.session_id, "runtime stopped");
        last.status = Status::Stopped;
        last.pod_status = PodStatus::NotFound;
        last.status_detail = None;
        Ok(last)
    }

    async fn image_exists(&self, image: &str) -> BackendResult<ImageCheck> {
        let credentials = self.pull_credentials().await?;
        let host = registry::parse_image(image).map(|i| i.registry).unwrap_or_default();
        Ok(self.inner.registry.check(image, credentials.get(&host)).await)
    }

    fn readiness(&self) -> Readiness {
        self.inner.store.readiness()
    }

    fn cache_sizes(&self) -> Vec<(&'static str, usize)> {
        self.inner.store.sizes().to_vec()
    }

    async fn candidates(&self) -> BackendResult<Vec<Candidate>> {
        let s = &self.inner.settings;
        let now = jiff::Timestamp::now();
        Ok(self
            .records()
            .iter()
            .filter(|r| r.metadata.deletion_timestamp.is_none())
            .filter_map(|r| {
                let info = record_info(r)?;
                // Reached through the runtime's Service, inside the cluster.
                let agent_url = format!(
                    "http://{}.{}.svc:{}",
                    manifests::object_name(&info.runtime_id),
                    s.namespace,
                    s.ports.agent
                );
                let paused_for = info.paused_at.map(|t| now.duration_since(t).unsigned_abs());
                Some(Candidate::from_view(self.view(r)?, paused_for, agent_url))
            })
            .collect())
    }

    /// Deletes labelled objects whose runtime has no record, removes records whose Secret is
    /// gone (the key cannot be recovered), and recreates missing objects of the others.
    async fn sweep(&self) -> BackendResult<SweepReport> {
        let s = &self.inner.settings;
        let grace = s.orphan_grace;
        let store = &self.inner.store;
        let records = self.records();
        let known: std::collections::HashSet<String> =
            records.iter().filter_map(|r| r.labels().get(LABEL_RUNTIME_ID).cloned()).collect();
        let lp = ListParams::default().labels(&format!(
            "{}={}",
            manifests::MANAGED_BY.0,
            manifests::MANAGED_BY.1
        ));
        let list_err = |what: &'static str| move |e| kube_error(&format!("listing {what}"), e);
        let services = self.api::<Service>().list(&lp).await.map_err(list_err("services"))?.items;
        let ingresses = self.api::<Ingress>().list(&lp).await.map_err(list_err("ingresses"))?.items;
        let policies = self
            .api::<NetworkPolicy>()
            .list(&lp)
            .await
            .map_err(list_err("network policies"))?
            .items;
        let claims = if s.workspace_storage_size.is_some() {
            self.api::<PersistentVolumeClaim>().list(&lp).await.map_err(list_err("claims"))?.items
        } else {
            Vec::new()
        };
        let mut report = SweepReport::default();
        let orphan = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            meta.deletion_timestamp.is_none()
                && older_than(meta, grace)
                && meta
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_RUNTIME_ID))
                    .is_some_and(|id| !known.contains(id))
        };
        macro_rules! sweep_kind {
            ($kind:ty, $what:expr, $items:expr) => {
                for obj in $items.iter().filter(|o| orphan(&o.metadata)) {
                    tracing::info!(kind = $what, name = %obj.name_any(), "deleting an orphaned object");
                    self.delete::<$kind>($what, &obj.name_any()).await?;
                    report.orphans_deleted += 1;
                }
            };
        }
        sweep_kind!(Secret, "secret", store.secrets.state());
        sweep_kind!(Pod, "sandbox pod", store.pods.state());
        sweep_kind!(Service, "service", services);
        sweep_kind!(Ingress, "ingress", ingresses);
        sweep_kind!(NetworkPolicy, "network policy", policies);
        sweep_kind!(PersistentVolumeClaim, "workspace claim", claims);

        for record in records
            .iter()
            .filter(|r| r.metadata.deletion_timestamp.is_none() && older_than(&r.metadata, grace))
        {
            let Some(info) = record_info(record) else { continue };
            let object = manifests::object_name(&info.runtime_id);
            let Some(secret) = store.secret(&object) else {
                tracing::warn!(runtime_id = %info.runtime_id, "removing a runtime whose secret is gone");
                self.stop(&info.runtime_id).await?;
                report.orphans_deleted += 1;
                continue;
            };
            let named = |names: Vec<String>, name: &str| names.iter().any(|n| n == name);
            let missing = (!info.paused
                && store.pod(&manifests::pod_name(&info.runtime_id, info.generation)).is_none())
                || !named(services.iter().map(|o| o.name_any()).collect(), &object)
                || !named(ingresses.iter().map(|o| o.name_any()).collect(), &object)
                || !named(policies.iter().map(|o| o.name_any()).collect(), &object)
                || (s.workspace_storage_size.is_some()
                    && !named(
                        claims.iter().map(|o| o.name_any()).collect(),
                        &manifests::claim_name(&info.runtime_id),
                    ));
            if missing {
                tracing::info!(runtime_id = %info.runtime_id, "recreating missing objects of a runtime");
                self.ensure_objects(record, Some(&secret), None).await?;
                self.event(record, true, "Repaired", "recreated missing objects".into());
                report.repaired += 1;
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_decode() {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "s"},
            "data": {"SESSION_API_KEY": "a2V5", "DEBUG": "dHJ1ZQ=="}
        }))
        .unwrap();
        assert_eq!(secret_value(&secret, "SESSION_API_KEY").as_deref(), Some("key"));
        assert_eq!(secret_value(&secret, "MISSING"), None);
    }

    #[test]
    fn record_info_round_trips_the_builder() {
        let spec = RuntimeSpec {
            session_id: "MixedCase".into(),
            image: "img".into(),
            command: crate::runtime::Command::Shell("run".into()),
            working_dir: None,
            environment: [("SECRET".to_string(), "v".to_string())].into_iter().collect(),
            resource_factor: 2.0,
            runtime_class: None,
            run_as_user: Some(10001),
            run_as_group: None,
            fs_group: None,
            image_pull_policy: None,
        };
        let record = manifests::record("ns", "rid", "hash", &spec, "2026-01-01T00:00:00Z");
        let info = record_info(&record).unwrap();
        assert_eq!((info.runtime_id.as_str(), info.session_id.as_str()), ("rid", "MixedCase"));
        assert!(!info.paused);
        assert_eq!(info.generation, 1);
        assert!(info.spec.environment.is_empty(), "environment values belong in the Secret");
        assert_eq!(info.spec, RuntimeSpec { environment: BTreeMap::new(), ..spec });
    }
}
