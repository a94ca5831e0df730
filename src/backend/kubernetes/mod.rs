//! The Kubernetes backend: each runtime is a set of objects in one namespace, owned by a record.
//!
//! The cluster is the only source of truth: any replica answers for every runtime, paused ones
//! included, from its watch-fed cache ([`store`]); writes go straight to the API server
//! ([`writes`]) and wait for the cache to catch up, so a client reads its own writes. One file per
//! job: the record schema and names ([`record`]), the objects built from it ([`manifests`]),
//! status from pods ([`status`]), the `Backend` operations ([`lifecycle`]), the orphan sweep
//! ([`sweep`]), the warm pools of dormant pods ([`pool`]).

pub mod cached;
mod lifecycle;
pub mod manifests;
pub mod pool;
pub mod quantity;
pub mod record;
pub mod settings;
pub mod status;
pub mod store;
mod sweep;
pub mod views;
pub mod writes;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use kube::Client;

pub use self::settings::KubeSettings;
use self::store::Store;
use self::writes::Writer;
use super::locks::KeyedLocks;
use crate::pool::InitClient;
use crate::registry::RegistryClient;
use crate::runtime::{BackendError, BackendResult};
use crate::telemetry::Metrics;

#[derive(Clone)]
pub struct KubernetesBackend {
    inner: Arc<Inner>,
}

struct Inner {
    settings: KubeSettings,
    client: Client,
    store: Store,
    writer: Writer,
    registry: RegistryClient,
    /// Serialises `/start` per session within this replica; across replicas the record's
    /// deterministic name does the same job.
    session_locks: KeyedLocks,
    /// Whether this replica has seen the sandboxes' shared NetworkPolicy in place (a start
    /// creates it first otherwise, so no sandbox runs unprotected before the leader's sweep).
    policy_in_place: AtomicBool,
    /// When this replica's last complete sweep started (see [`sweep`]: idle rounds skip it).
    last_sweep: std::sync::Mutex<Option<std::time::Instant>>,
    metrics: Metrics,
    /// This replica's identity (the lease holder's name): who claimed a pool member.
    identity: String,
    /// Delivers sessions to claimed pool members.
    init: InitClient,
}

impl KubernetesBackend {
    /// Connects with the ambient configuration (in-cluster service account or KUBECONFIG) and
    /// starts the watches. Fails only when no configuration can be found at all.
    pub async fn connect(
        settings: KubeSettings,
        metrics: Metrics,
        identity: &str,
    ) -> BackendResult<Self> {
        let client = Client::try_default().await.map_err(|e| {
            let message = format!("cannot configure the Kubernetes client: {e}");
            BackendError::unavailable(message).with_source(e)
        })?;
        Self::with_client(client, settings, metrics, identity)
    }

    pub fn with_client(
        client: Client,
        settings: KubeSettings,
        metrics: Metrics,
        identity: &str,
    ) -> BackendResult<Self> {
        let registry = RegistryClient::new(settings.insecure_registries.clone()).map_err(|e| {
            let message = format!("cannot build the registry HTTP client: {e}");
            BackendError::internal(message).with_source(e)
        })?;
        let init = InitClient::new().map_err(|e| {
            let message = format!("cannot build the pool's HTTP client: {e}");
            BackendError::internal(message).with_source(e)
        })?;
        let store = Store::start(client.clone(), &settings.namespace, metrics.clone());
        let writer = Writer::new(
            client.clone(),
            &settings.namespace,
            metrics.clone(),
            identity,
            settings.timeouts,
        );
        let session_locks = KeyedLocks::default();
        Ok(KubernetesBackend {
            inner: Arc::new(Inner {
                settings,
                client,
                store,
                writer,
                registry,
                session_locks,
                policy_in_place: AtomicBool::new(false),
                last_sweep: Default::default(),
                metrics,
                identity: identity.to_string(),
                init,
            }),
        })
    }

    pub fn client(&self) -> Client {
        self.inner.client.clone()
    }

    pub fn namespace(&self) -> &str {
        &self.inner.settings.namespace
    }
}
