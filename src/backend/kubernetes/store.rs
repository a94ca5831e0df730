//! The watch-fed cache every read is served from: records, secrets and sandbox pods of this
//! service in its namespace, kept current by kube-rs reflectors. The API server sees watches and
//! writes, never a request per read. Every lookup is by key: records by session hash (their name)
//! or by runtime id (an index kept by the records' watch), secrets and pods by name. Secrets and
//! pods are cached as the few facts reads use ([`super::cached`]), and each event marks its
//! runtime's view for a rebuild ([`Views`]).

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::Api;
use kube::runtime::reflector::{self, Lookup, ObjectRef, Store as Reader};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::cached::{CachedPod, CachedRecord, CachedSecret};
use super::record::{
    ANNOTATION_CREATED_AT, COMPONENT_RECORD, COMPONENT_SANDBOX, COMPONENT_SECRET, managed_selector,
    record_name, runtime_id_of,
};
use super::views::{State as ViewState, Views};
use crate::runtime::Readiness;
use crate::telemetry::Metrics;

/// Objects per list request when a watch (re-)lists.
const LIST_PAGE_SIZE: u32 = 100;

/// Health of one watch: synced once the initial list is in, healthy while the last event was not an error.
#[derive(Default)]
struct WatchHealth {
    synced: AtomicBool,
    failing: AtomicBool,
}

/// Runtime id -> record name, kept by the records' watch. A re-list (after a watch restart) builds
/// a fresh map and swaps it in when the list is complete, as the reflector does with its store.
#[derive(Debug, Default)]
pub struct RecordIndex {
    by_runtime: HashMap<String, String>,
    relisting: Option<HashMap<String, String>>,
}

impl RecordIndex {
    pub fn apply(&mut self, event: &watcher::Event<ConfigMap>) {
        let entry = |record: &ConfigMap| {
            let id = runtime_id_of(&record.metadata)?;
            Some((id.to_string(), record.metadata.name.clone()?))
        };
        match event {
            watcher::Event::Apply(record) => {
                if let Some((id, name)) = entry(record) {
                    self.by_runtime.insert(id, name);
                }
            }
            watcher::Event::Delete(record) => {
                if let Some((id, name)) = entry(record) {
                    if self.by_runtime.get(&id) == Some(&name) {
                        self.by_runtime.remove(&id);
                    }
                }
            }
            watcher::Event::Init => self.relisting = Some(HashMap::new()),
            watcher::Event::InitApply(record) => {
                if let (Some(fresh), Some((id, name))) = (self.relisting.as_mut(), entry(record)) {
                    fresh.insert(id, name);
                }
            }
            watcher::Event::InitDone => {
                if let Some(fresh) = self.relisting.take() {
                    self.by_runtime = fresh;
                }
            }
        }
    }

    pub fn record_name(&self, runtime_id: &str) -> Option<&str> {
        self.by_runtime.get(runtime_id).map(String::as_str)
    }
}

#[derive(Clone)]
pub struct Store {
    records: Reader<CachedRecord>,
    secrets: Reader<CachedSecret>,
    pods: Reader<CachedPod>,
    index: Arc<RwLock<RecordIndex>>,
    views: Arc<Views>,
    /// When a watch last delivered a change (for the sweep: nothing changed, nothing to sweep).
    changed_at: Arc<Mutex<Instant>>,
    health: Arc<[(&'static str, WatchHealth); 3]>,
}

impl Store {
    /// Starts the three watches in the background; reads are possible at once, complete once synced.
    pub fn start(client: Client, namespace: &str, metrics: Metrics) -> Store {
        let health: Arc<[(&'static str, WatchHealth); 3]> = Arc::new([
            ("records", WatchHealth::default()),
            ("secrets", WatchHealth::default()),
            ("pods", WatchHealth::default()),
        ]);
        let selector = |component: &str| managed_selector(Some(component));
        let index: Arc<RwLock<RecordIndex>> = Arc::default();
        let views: Arc<Views> = Arc::default();
        let changed_at = Arc::new(Mutex::new(Instant::now()));
        let indexer = index.clone();
        let records = spawn_reflector::<ConfigMap, _>(
            Api::namespaced(client.clone(), namespace),
            selector(COMPONENT_RECORD),
            (health.clone(), 0),
            (views.clone(), changed_at.clone()),
            CachedRecord::of,
            move |views, event| {
                indexer.write().unwrap_or_else(|p| p.into_inner()).apply(event);
                mark_runtimes(views, event);
            },
        );
        let secrets = spawn_reflector::<Secret, _>(
            Api::namespaced(client.clone(), namespace),
            selector(COMPONENT_SECRET),
            (health.clone(), 1),
            (views.clone(), changed_at.clone()),
            CachedSecret::of,
            mark_runtimes,
        );
        let mut readiness = observe_readiness(metrics);
        let pods = spawn_reflector::<Pod, _>(
            Api::namespaced(client, namespace),
            selector(COMPONENT_SANDBOX),
            (health.clone(), 2),
            (views.clone(), changed_at.clone()),
            CachedPod::of,
            move |views, event| {
                readiness(event);
                mark_runtimes(views, event);
            },
        );
        Store { records, secrets, pods, index, views, changed_at, health }
    }

    /// The per-runtime views `/list` and the gauges read (see [`Views`]).
    pub fn views(&self) -> &Views {
        &self.views
    }

    /// When a watch last delivered a change to a record, Secret or pod.
    pub fn changed_at(&self) -> Instant {
        *self.changed_at.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The runtime id of every cached record (for a full rebuild of the views).
    pub fn runtime_ids(&self) -> Vec<String> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        index.by_runtime.keys().cloned().collect()
    }

    /// A record by its name.
    pub fn record(&self, name: &str) -> Option<Arc<CachedRecord>> {
        self.records.get(&ObjectRef::new(name))
    }

    /// The record of a session (records are named after the session hash).
    pub fn record_for_session(&self, session_hash: &str) -> Option<Arc<CachedRecord>> {
        self.record(&record_name(session_hash))
    }

    /// The record of a runtime id, through the index.
    pub fn record_for_runtime(&self, runtime_id: &str) -> Option<Arc<CachedRecord>> {
        let name = self
            .index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .record_name(runtime_id)?
            .to_string();
        self.record(&name).filter(|r| r.meta.runtime_id.as_deref() == Some(runtime_id))
    }

    /// Every cached record, secret and pod (for maintenance).
    pub fn records(&self) -> Vec<Arc<CachedRecord>> {
        self.records.state()
    }

    pub fn secrets(&self) -> Vec<Arc<CachedSecret>> {
        self.secrets.state()
    }

    pub fn pods(&self) -> Vec<Arc<CachedPod>> {
        self.pods.state()
    }

    /// A Secret by name (the caches are keyed by name alone: see [`super::cached`]).
    pub fn secret(&self, name: &str) -> Option<Arc<CachedSecret>> {
        self.secrets.get(&ObjectRef::new(name))
    }

    pub fn pod(&self, name: &str) -> Option<Arc<CachedPod>> {
        self.pods.get(&ObjectRef::new(name))
    }

    /// Complete once every watch has listed: before that a read would see some runtimes, or
    /// runtimes without their pods. (A failing watch later keeps the last complete view.)
    pub fn synced(&self) -> Readiness {
        match self.health.iter().find(|(_, h)| !h.synced.load(Ordering::Relaxed)) {
            Some((name, _)) => Readiness::NotReady(format!(
                "the {name} cache has not synced with the Kubernetes API yet"
            )),
            None => Readiness::Ready,
        }
    }

    /// Ready once every watch has listed, and not while a watch is failing (API server unreachable).
    pub fn readiness(&self) -> Readiness {
        if let Readiness::NotReady(reason) = self.synced() {
            return Readiness::NotReady(reason);
        }
        for (name, h) in self.health.iter() {
            if h.failing.load(Ordering::Relaxed) {
                return Readiness::NotReady(format!(
                    "the {name} watch is failing: the Kubernetes API is unreachable"
                ));
            }
        }
        Readiness::Ready
    }

    /// Objects per cached kind, for the cache-size metric.
    pub fn sizes(&self) -> [(&'static str, usize); 3] {
        [
            ("records", self.records.len()),
            ("secrets", self.secrets.len()),
            ("pods", self.pods.len()),
        ]
    }
}

/// Marks the runtime an event touched; a completed re-list may have changed any of them.
fn mark_runtimes<K: Resource>(views: &mut ViewState, event: &watcher::Event<K>) {
    match event {
        watcher::Event::Apply(obj) | watcher::Event::Delete(obj) => {
            if let Some(id) = runtime_id_of(obj.meta()) {
                views.mark(id);
            }
        }
        watcher::Event::InitDone => views.mark_all(),
        watcher::Event::Init | watcher::Event::InitApply(_) => {}
    }
}

/// Watches one kind into a cache of what `keep` takes of each object. Each event is applied to
/// the cache and handed to `applied` (as it came) under the views' lock, so a view refreshed
/// after a read of the cache is never older than it.
fn spawn_reflector<K, C>(
    api: Api<K>,
    selector: String,
    (health, slot): (Arc<[(&'static str, WatchHealth); 3]>, usize),
    (views, changed_at): (Arc<Views>, Arc<Mutex<Instant>>),
    keep: fn(&K) -> C,
    mut applied: impl FnMut(&mut ViewState, &watcher::Event<K>) + Send + 'static,
) -> Reader<C>
where
    K: Resource<Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
    C: Lookup + Clone + Send + Sync + 'static,
    C::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (reader, mut writer) = reflector::store::<C>();
    // A (re-)list arrives in pages, each deserialised whole (managedFields included) before the
    // cache takes its few fields: pages of 100 instead of client-go's 500 keep that transient
    // memory at a fifth (the heap's peak at 5,000 runtimes went from 40 to 20 MB), for 50 list
    // requests per kind instead of 10 when a replica starts at 5,000.
    let config = watcher::Config::default().labels(&selector).page_size(LIST_PAGE_SIZE);
    let ready = reader.clone();
    let sync_health = health.clone();
    tokio::spawn(async move {
        if ready.wait_until_ready().await.is_ok() {
            sync_health[slot].1.synced.store(true, Ordering::Relaxed);
        }
    });
    tokio::spawn(async move {
        let name = health[slot].0;
        watcher(api, config)
            .default_backoff()
            .map_ok(move |event| {
                let kept = kept(&event, keep);
                let mut state = views.lock();
                writer.apply_watcher_event(&kept);
                applied(&mut state, &event);
                if !matches!(event, watcher::Event::Init | watcher::Event::InitApply(_)) {
                    *changed_at.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
                }
            })
            .for_each(|event| {
                match event {
                    Ok(()) => {
                        if health[slot].1.failing.swap(false, Ordering::Relaxed) {
                            tracing::info!(watch = name, "watch recovered");
                        }
                    }
                    Err(e) => {
                        if !health[slot].1.failing.swap(true, Ordering::Relaxed) {
                            tracing::warn!(watch = name, error = %e, "watch failing; retrying with backoff");
                        }
                    }
                }
                futures::future::ready(())
            })
            .await;
    });
    reader
}

/// What the cache keeps of an event.
fn kept<K, C>(event: &watcher::Event<K>, keep: fn(&K) -> C) -> watcher::Event<C> {
    match event {
        watcher::Event::Apply(obj) => watcher::Event::Apply(keep(obj)),
        watcher::Event::Delete(obj) => watcher::Event::Delete(keep(obj)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(obj) => watcher::Event::InitApply(keep(obj)),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// Observes, once per pod, the time from its creation by this service (the `created-at`
/// annotation, with sub-second precision) to the moment the watch shows it Ready.
fn observe_readiness(metrics: Metrics) -> impl FnMut(&watcher::Event<Pod>) + Send + 'static {
    let mut seen: HashSet<String> = HashSet::new();
    move |event| {
        let (pod, live) = match event {
            watcher::Event::Apply(pod) => (pod, true),
            // Pods already there when the watch (re)started: remember them, do not time them.
            watcher::Event::InitApply(pod) => (pod, false),
            watcher::Event::Delete(pod) => {
                if let Some(uid) = &pod.metadata.uid {
                    seen.remove(uid);
                }
                return;
            }
            _ => return,
        };
        let ready = super::status::is_ready(pod);
        // Pool members: ready long before any start claims them, so not timed.
        if pod.labels().contains_key(super::pool::LABEL_POOL_STATE) {
            return;
        }
        let Some(uid) = pod.metadata.uid.clone() else { return };
        if !ready || !seen.insert(uid) || !live {
            return;
        }
        let created = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_CREATED_AT))
            .and_then(|t| t.parse::<jiff::Timestamp>().ok());
        if let Some(created) = created {
            let seconds = jiff::Timestamp::now().duration_since(created).as_secs_f64();
            metrics.start_to_running.observe(seconds.max(0.0));
        }
    }
}

/// Polls the cache until `ready` holds: used so a write is visible to reads before its response.
pub async fn wait_until(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The resourceVersion of a cached object, for "has the cache caught up with my write" checks.
pub fn version_of<K: Resource>(obj: &K) -> Option<u64> {
    obj.meta().resource_version.as_deref()?.parse().ok()
}

/// Whether the cached resourceVersion reflects at least `written` (resourceVersions are etcd
/// revisions, comparable within one cluster although clients are told to treat them as opaque).
pub fn caught_up(cached: Option<u64>, written: Option<u64>) -> bool {
    match (cached, written) {
        (Some(c), Some(w)) => c >= w,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::kubernetes::record::LABEL_RUNTIME_ID;

    fn record(name: &str, runtime_id: &str) -> ConfigMap {
        let mut record = ConfigMap::default();
        record.metadata.name = Some(name.into());
        record.metadata.labels =
            Some([(LABEL_RUNTIME_ID.to_string(), runtime_id.to_string())].into());
        record
    }

    #[test]
    fn the_index_follows_applies_and_deletes() {
        let mut index = RecordIndex::default();
        index.apply(&watcher::Event::Apply(record("oh-session-a", "r1")));
        assert_eq!(index.record_name("r1"), Some("oh-session-a"));
        // The session starts afresh after a stop: same record name, new runtime id.
        index.apply(&watcher::Event::Delete(record("oh-session-a", "r1")));
        index.apply(&watcher::Event::Apply(record("oh-session-a", "r2")));
        assert_eq!(
            (index.record_name("r1"), index.record_name("r2")),
            (None, Some("oh-session-a"))
        );
        // A delete naming another record leaves the entry alone.
        index.apply(&watcher::Event::Delete(record("oh-session-b", "r2")));
        assert_eq!(index.record_name("r2"), Some("oh-session-a"));
        // A record without a runtime id label is not indexed.
        index.apply(&watcher::Event::Apply(ConfigMap::default()));
        assert_eq!(index.by_runtime.len(), 1);
    }

    #[test]
    fn a_relist_replaces_the_index_once_complete() {
        let mut index = RecordIndex::default();
        index.apply(&watcher::Event::Apply(record("oh-session-a", "gone-while-disconnected")));
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(record("oh-session-b", "r2")));
        // Until the list is complete, lookups answer from the previous index.
        assert_eq!(index.record_name("gone-while-disconnected"), Some("oh-session-a"));
        assert_eq!(index.record_name("r2"), None);
        index.apply(&watcher::Event::InitDone);
        assert_eq!(index.record_name("gone-while-disconnected"), None);
        assert_eq!(index.record_name("r2"), Some("oh-session-b"));
    }
}
