//! The domain of the service: what a runtime is, independent of HTTP and of where it runs.
//!
//! The HTTP layer turns requests into a [`RuntimeSpec`] and hands it to a [`Backend`]; backends
//! answer with [`Runtime`] views. Nothing here knows about axum or Kubernetes.

pub mod env;
pub mod error;
pub mod ids;
pub mod plan;
pub mod spec;
pub mod status;
pub mod urls;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

pub use error::{BackendError, BackendResult, ErrorKind};
pub use spec::{Command, PullPolicy, RuntimeSpec, SpecError};
pub use status::{PodStatus, Status};

/// What clients see of one runtime: the "runtime object" of the contract, every field always present.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Runtime {
    pub runtime_id: String,
    pub session_id: String,
    pub url: String,
    pub session_api_key: String,
    pub status: Status,
    pub pod_status: PodStatus,
    /// URL -> container port for the two worker ports.
    pub work_hosts: BTreeMap<String, u16>,
    pub vscode_url: Option<String>,
    pub restart_count: u32,
    pub restart_reasons: Vec<String>,
    /// Human-readable reason whenever the runtime is not healthy.
    pub status_detail: Option<String>,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub image: String,
    pub resource_factor: f64,
}

impl Runtime {
    /// The last view of a runtime that has just been stopped, as `/stop` answers with it.
    pub fn stopped(self) -> Runtime {
        Runtime {
            status: Status::Stopped,
            pod_status: PodStatus::NotFound,
            status_detail: None,
            ..self
        }
    }
}

/// Which runtimes `/list` returns. The default holds compute (see the contract: V1 treats every
/// listed runtime as running).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListFilter {
    Active,
    All,
    Only(Vec<Status>),
}

impl ListFilter {
    pub fn matches(&self, status: Status) -> bool {
        match self {
            ListFilter::Active => status.holds_compute(),
            ListFilter::All => true,
            ListFilter::Only(wanted) => wanted.contains(&status),
        }
    }
}

/// One page of a listing: the JSON of each runtime on it, and how many the filter selects.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListPage {
    pub runtimes: Vec<Arc<str>>,
    pub total: usize,
}

/// The answer of `/image_exists`: backends say when they cannot tell instead of guessing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageCheck {
    Exists,
    Missing,
    Unknown(String),
}

/// A runtime as background maintenance sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub runtime_id: String,
    pub session_id: String,
    pub status: Status,
    pub status_detail: Option<String>,
    /// How long it has been paused, from the record (so it survives restarts and leader changes).
    pub paused_for: Option<std::time::Duration>,
    /// Where this service can reach the agent server (for `/server_info`).
    pub agent_url: Option<String>,
    pub session_api_key: String,
    /// The last request the gateway forwarded to it (shared across replicas by the record).
    pub last_activity: Option<jiff::Timestamp>,
}

impl Candidate {
    /// A candidate from what clients see of the runtime, plus what only maintenance needs.
    pub fn from_view(
        view: Runtime,
        paused_for: Option<std::time::Duration>,
        agent_url: String,
    ) -> Candidate {
        Candidate {
            runtime_id: view.runtime_id,
            session_id: view.session_id,
            status: view.status,
            status_detail: view.status_detail,
            paused_for,
            agent_url: Some(agent_url),
            session_api_key: view.session_api_key,
            last_activity: None,
        }
    }
}

/// Where this service reaches a running runtime's agent server, and the key it answers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentEndpoint {
    pub runtime_id: String,
    pub session_id: String,
    /// Base URL of the agent server as seen from this service.
    pub url: String,
    pub session_api_key: String,
}

/// What the gateway needs to forward to a runtime, from the backend's memory or cache (no
/// API-server request per forwarded request).
#[derive(Debug, Clone, PartialEq)]
pub struct RouteTarget {
    pub status: Status,
    pub status_detail: Option<String>,
    /// Where its ports listen: the pod IP, or loopback. `None` until the pod has an address.
    pub address: Option<std::net::IpAddr>,
    pub ports: env::SandboxPorts,
}

/// What an orphan sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub orphans_deleted: usize,
    pub repaired: usize,
}

/// Whether the backend can serve requests now (drives `/readyz`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    NotReady(String),
}

/// A runtime's JSON as the API sends it.
fn serialised(runtime: &Runtime) -> BackendResult<Arc<str>> {
    serde_json::to_string(runtime)
        .map(Arc::from)
        .map_err(|e| BackendError::internal(format!("cannot serialise a runtime: {e}")))
}

/// Where runtimes live. Both implementations keep the contract's semantics: `start` is idempotent
/// per session, pause keeps everything needed to resume exactly, stop removes everything.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Starts a runtime for `spec.session_id`, or returns the live one that session already has.
    async fn start(&self, spec: RuntimeSpec) -> BackendResult<Runtime>;
    async fn get(&self, runtime_id: &str) -> BackendResult<Option<Runtime>>;
    async fn get_by_session(&self, session_id: &str) -> BackendResult<Option<Runtime>>;
    async fn list(&self, filter: &ListFilter) -> BackendResult<Vec<Runtime>>;
    /// One page of `/list`, oldest first, each runtime already serialised. By default from
    /// [`Backend::list`]; a backend with many runtimes keeps them serialised instead.
    async fn list_page(
        &self,
        filter: &ListFilter,
        offset: usize,
        limit: Option<usize>,
    ) -> BackendResult<ListPage> {
        let mut runtimes = self.list(filter).await?;
        runtimes.sort_by(|a, b| {
            a.created_at.cmp(&b.created_at).then_with(|| a.runtime_id.cmp(&b.runtime_id))
        });
        let total = runtimes.len();
        let runtimes = runtimes
            .iter()
            .skip(offset)
            .take(limit.unwrap_or(usize::MAX))
            .map(serialised)
            .collect::<BackendResult<_>>()?;
        Ok(ListPage { runtimes, total })
    }
    /// `/sessions/batch`: the runtimes of the sessions that have one, in the order asked, each
    /// serialised. By default from [`Backend::get_by_session`]; a backend that keeps its views
    /// serialised answers from those.
    async fn sessions_page(&self, session_ids: &[String]) -> BackendResult<Vec<Arc<str>>> {
        let mut found = Vec::with_capacity(session_ids.len());
        for id in session_ids {
            if let Some(runtime) = self.get_by_session(id).await? {
                found.push(serialised(&runtime)?);
            }
        }
        Ok(found)
    }
    /// How many runtimes are in `status`, for the gauges (by default counted from a listing).
    async fn status_counts(&self) -> BackendResult<Vec<(Status, usize)>> {
        let all = self.list(&ListFilter::All).await?;
        Ok(Status::ALL.map(|s| (s, all.iter().filter(|r| r.status == s).count())).to_vec())
    }
    /// Stops the sandbox's compute, keeping everything needed to resume. `reason` (set by
    /// maintenance) is shown in `status_detail` while paused.
    async fn pause(&self, runtime_id: &str, reason: Option<&str>) -> BackendResult<Runtime>;
    /// Brings a paused (or failed) runtime back with the spec, key, and URLs it was started with.
    async fn resume(&self, runtime_id: &str) -> BackendResult<Runtime>;
    /// Removes the runtime and everything it owns; returns its last view with status `stopped`.
    async fn stop(&self, runtime_id: &str) -> BackendResult<Runtime>;
    async fn image_exists(&self, image: &str) -> BackendResult<ImageCheck>;
    fn readiness(&self) -> Readiness;
    /// Whether reads would see every runtime (the Kubernetes caches have listed once).
    fn reads_complete(&self) -> Readiness {
        Readiness::Ready
    }
    /// How much caller environment this backend can pass to a sandbox.
    fn environment_limits(&self) -> spec::EnvLimits {
        spec::EnvLimits::EXEC
    }
    /// Objects held in memory by kind, for the cache-size metric.
    fn cache_sizes(&self) -> Vec<(&'static str, usize)> {
        Vec::new()
    }
    /// The agent server of a running runtime; `None` for an unknown runtime or one in any other
    /// state (asking never wakes a paused runtime). By default the runtime's own `url`, which
    /// is where this service reaches it on a single machine.
    async fn agent_endpoint(&self, runtime_id: &str) -> BackendResult<Option<AgentEndpoint>> {
        Ok(self.get(runtime_id).await?.filter(|r| r.status == Status::Running).map(|r| {
            AgentEndpoint {
                runtime_id: r.runtime_id,
                session_id: r.session_id,
                url: r.url,
                session_api_key: r.session_api_key,
            }
        }))
    }
    /// Every runtime, for maintenance decisions.
    async fn candidates(&self) -> BackendResult<Vec<Candidate>>;
    /// Deletes objects no runtime owns and completes runtimes missing objects.
    async fn sweep(&self) -> BackendResult<SweepReport> {
        Ok(SweepReport::default())
    }
    /// One round of keeping the warm pools at their size, on the leader (backends whose pools
    /// are per process keep them themselves).
    async fn keep_pools(&self) -> BackendResult<()> {
        Ok(())
    }
    /// Releases background resources before the process exits.
    async fn shutdown(&self) {}
    /// Where the gateway reaches a runtime; `None` when there is no such runtime.
    fn route(&self, _runtime_id: &str) -> Option<RouteTarget> {
        None
    }
    /// Notes the gateway's last request to a runtime, for idle pause on whichever replica leads.
    async fn record_activity(&self, _runtime_id: &str, _at: jiff::Timestamp) -> BackendResult<()> {
        Ok(())
    }
}
