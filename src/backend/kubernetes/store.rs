//! The watch-fed cache every read is served from: records, secrets and sandbox pods of this
//! service in its namespace, kept current by kube-rs reflectors. The API server sees watches and
//! writes, never a request per read.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store as Reader};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::manifests::{COMPONENT_RECORD, COMPONENT_SANDBOX, LABEL_COMPONENT, MANAGED_BY};
use crate::runtime::Readiness;

/// Health of one watch: synced once the initial list is in, healthy while the last event was not an error.
#[derive(Default)]
struct WatchHealth {
    synced: AtomicBool,
    failing: AtomicBool,
}

#[derive(Clone)]
pub struct Store {
    pub records: Reader<ConfigMap>,
    pub secrets: Reader<Secret>,
    pub pods: Reader<Pod>,
    namespace: String,
    health: Arc<[(&'static str, WatchHealth); 3]>,
}

impl Store {
    /// Starts the three watches in the background; reads are possible at once, complete once synced.
    pub fn start(client: Client, namespace: &str) -> Store {
        let health: Arc<[(&'static str, WatchHealth); 3]> = Arc::new([
            ("records", WatchHealth::default()),
            ("secrets", WatchHealth::default()),
            ("pods", WatchHealth::default()),
        ]);
        let selector = |component: &str| format!("{}={},{LABEL_COMPONENT}={component}", MANAGED_BY.0, MANAGED_BY.1);
        let records = spawn_reflector::<ConfigMap>(
            Api::namespaced(client.clone(), namespace),
            selector(COMPONENT_RECORD),
            health.clone(),
            0,
        );
        let secrets = spawn_reflector::<Secret>(
            Api::namespaced(client.clone(), namespace),
            selector("secret"),
            health.clone(),
            1,
        );
        let pods = spawn_reflector::<Pod>(
            Api::namespaced(client, namespace),
            selector(COMPONENT_SANDBOX),
            health.clone(),
            2,
        );
        Store { records, secrets, pods, namespace: namespace.to_string(), health }
    }

    pub fn record(&self, name: &str) -> Option<Arc<ConfigMap>> {
        self.records.get(&ObjectRef::new(name).within(&self.namespace))
    }

    pub fn secret(&self, name: &str) -> Option<Arc<Secret>> {
        self.secrets.get(&ObjectRef::new(name).within(&self.namespace))
    }

    pub fn pod(&self, name: &str) -> Option<Arc<Pod>> {
        self.pods.get(&ObjectRef::new(name).within(&self.namespace))
    }

    /// Ready once every watch has listed, and not while a watch is failing (API server unreachable).
    pub fn readiness(&self) -> Readiness {
        for (name, h) in self.health.iter() {
            if !h.synced.load(Ordering::Relaxed) {
                return Readiness::NotReady(format!("the {name} cache has not synced with the Kubernetes API yet"));
            }
            if h.failing.load(Ordering::Relaxed) {
                return Readiness::NotReady(format!("the {name} watch is failing: the Kubernetes API is unreachable"));
            }
        }
        Readiness::Ready
    }

    pub fn is_synced(&self) -> bool {
        self.health.iter().all(|(_, h)| h.synced.load(Ordering::Relaxed))
    }
}

fn spawn_reflector<K>(api: Api<K>, selector: String, health: Arc<[(&'static str, WatchHealth); 3]>, slot: usize) -> Reader<K>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store::<K>();
    let config = watcher::Config::default().labels(&selector);
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
            // managedFields are large and never read: dropping them keeps the cache small.
            .modify(|obj| obj.managed_fields_mut().clear())
            .reflect(writer)
            .for_each(|event| {
                match event {
                    Ok(_) => {
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

/// Whether `cached` reflects at least `written` (resourceVersions are etcd revisions, comparable
/// within one cluster although clients are told to treat them as opaque).
pub fn caught_up<K: Resource>(cached: Option<&Arc<K>>, written: &K) -> bool {
    match (cached.and_then(|c| version_of(c.as_ref())), version_of(written)) {
        (Some(c), Some(w)) => c >= w,
        _ => false,
    }
}

pub fn name_of<K: Resource>(obj: &K) -> String {
    obj.name_any()
}
