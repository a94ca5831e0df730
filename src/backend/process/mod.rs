//! The process backend: each runtime is a local child process running the OpenHands agent server.
//!
//! It exists so the service can be tried on one machine and so the contract can be proven end to
//! end with the real client and agent server. Records are persisted under `STATE_DIR`; processes
//! run in their own process groups and outlive a service restart, which re-adopts them.

mod launch;
mod pool;
mod record;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::watch;

use self::launch::Prober;
use self::record::{ProcessId, Record, RuntimeDir};
use super::locks::KeyedLocks;
use crate::pool::{InitClient, Pools, Shape};
use crate::runtime::env::{Injected, sandbox_environment};
use crate::runtime::plan::{Known, ResumePlan, StartPlan, plan_resume, plan_start};
use crate::runtime::urls::{self, UrlStyle, Urls};
use crate::runtime::{
    Backend, BackendError, BackendResult, Candidate, ImageCheck, ListFilter, PodStatus, Readiness,
    RouteTarget, Runtime, RuntimeSpec, Status, ids,
};
use crate::telemetry::Metrics;

/// How long a stopping agent server gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Probe cadence while waiting for a new agent server, and once it is up.
const PROBE_FAST: Duration = Duration::from_millis(100);
const PROBE_STEADY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct ProcessSettings {
    pub state_dir: PathBuf,
    /// Shell command template (see `PROCESS_AGENT_COMMAND`).
    pub agent_command: String,
    pub app_server_url: Option<String>,
    pub app_server_public_url: Option<String>,
    pub rotate_key_on_resume: bool,
    /// Shape of the URLs handed to clients ([`UrlStyle::Direct`]: the loopback ports).
    pub url_style: UrlStyle,
    /// Warm pools of dormant agent servers (empty: every start is cold).
    pub pools: Pools,
}

#[derive(Clone)]
pub struct ProcessBackend {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ProcessSettings,
    state: Mutex<State>,
    /// Serialises `/start` per session so concurrent duplicates create one runtime.
    start_locks: KeyedLocks,
    prober: Prober,
    metrics: Metrics,
    /// Delivers sessions to pool members.
    init: InitClient,
    /// Wakes the pool refill loop (a member was claimed or died).
    refill: tokio::sync::Notify,
    stop_refill: watch::Sender<bool>,
    refill_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Holds the advisory lock on `STATE_DIR` for the life of the service.
    _lock_file: std::fs::File,
}

#[derive(Default)]
struct State {
    runtimes: HashMap<String, Entry>,
    /// session id -> runtime id of the session's current runtime.
    sessions: HashMap<String, String>,
    /// Dormant agent servers of the warm pools, not runtimes (yet).
    members: Vec<pool::Member>,
}

struct Entry {
    record: Record,
    dir: RuntimeDir,
    /// Bumped at every launch, pause and stop, so tasks watching an older process stand down.
    generation: u64,
    running: Option<Running>,
    ready: bool,
    failure: Option<String>,
    /// Serialises pause/resume/stop of this runtime.
    op_lock: Arc<tokio::sync::Mutex<()>>,
    launched_at: Instant,
    /// The record on disk could not be read: only `/stop` applies (it removes the files).
    unreadable: bool,
    /// The gateway's last request to it (one service owns the state directory: memory is enough).
    last_activity: Option<jiff::Timestamp>,
}

struct Running {
    pid: u32,
    exited: watch::Receiver<bool>,
}

impl Entry {
    fn new(record: Record, dir: RuntimeDir) -> Self {
        Entry {
            record,
            dir,
            generation: 0,
            running: None,
            ready: false,
            failure: None,
            op_lock: Arc::default(),
            launched_at: Instant::now(),
            unreadable: false,
            last_activity: None,
        }
    }

    /// A runtime directory whose record cannot be read: shown in `error` so it can be seen and
    /// stopped, never silently skipped (its agent server, if any, was stopped at start-up).
    fn unreadable(dir: RuntimeDir, runtime_id: String, error: &std::io::Error) -> Self {
        let record = Record {
            runtime_id,
            spec: RuntimeSpec::new("", ""),
            session_api_key: String::new(),
            ports: crate::runtime::env::SandboxPorts {
                agent: 0,
                vscode: 0,
                worker_1: 0,
                worker_2: 0,
            },
            created_at: String::new(),
            paused: false,
            paused_at: None,
            pause_reason: None,
            process: None,
        };
        let mut entry = Entry::new(record, dir);
        entry.unreadable = true;
        entry.failure = Some(format!(
            "the runtime record is unreadable ({error}); its agent server was stopped; stop the runtime to remove its files"
        ));
        entry
    }

    /// Pause and resume need a readable record.
    fn check_readable(&self) -> BackendResult<()> {
        if self.unreadable {
            return Err(BackendError::conflict(format!(
                "runtime {} has an unreadable record: stop it",
                self.record.runtime_id
            )));
        }
        Ok(())
    }

    /// What the lifecycle plans need: a process record always holds its key, and a stopped
    /// runtime is removed at once.
    fn known(&self) -> Known {
        let view = self.view();
        Known {
            being_removed: false,
            has_credentials: true,
            paused: self.record.paused,
            status: view.status,
            pod_status: view.pod_status,
        }
    }

    fn view(&self) -> Runtime {
        self.view_with(&UrlStyle::Direct)
    }

    /// What clients see, with URLs in `style` (the agent's own address when `Direct`).
    fn view_with(&self, style: &UrlStyle) -> Runtime {
        let (status, pod_status, mut status_detail) = derive_status(
            self.record.paused,
            self.failure.as_deref(),
            self.running.is_some(),
            self.ready,
        );
        if self.record.paused {
            status_detail = self.record.pause_reason.clone();
        }
        let ports = self.record.ports;
        let url = |port: u16| format!("http://127.0.0.1:{port}");
        let urls = urls::urls(style, &self.record.runtime_id, ports).unwrap_or_else(|| Urls {
            url: url(ports.agent),
            vscode_url: url(ports.vscode),
            work_hosts: [
                (url(ports.worker_1), ports.worker_1),
                (url(ports.worker_2), ports.worker_2),
            ]
            .into_iter()
            .collect(),
        });
        Runtime {
            runtime_id: self.record.runtime_id.clone(),
            session_id: self.record.spec.session_id.clone(),
            url: urls.url,
            session_api_key: self.record.session_api_key.clone(),
            status,
            pod_status,
            work_hosts: urls.work_hosts,
            vscode_url: Some(urls.vscode_url),
            restart_count: 0,
            restart_reasons: Vec::new(),
            status_detail,
            created_at: self.record.created_at.clone(),
            image: self.record.spec.image.clone(),
            resource_factor: self.record.spec.resource_factor,
        }
    }
}

/// The contract's two status fields and a detail, from what the backend knows of a process.
fn derive_status(
    paused: bool,
    failure: Option<&str>,
    running: bool,
    ready: bool,
) -> (Status, PodStatus, Option<String>) {
    match (paused, failure, running, ready) {
        (true, _, _, _) => (Status::Paused, PodStatus::NotFound, None),
        (false, Some(detail), _, _) => (Status::Error, PodStatus::Failed, Some(detail.to_string())),
        (false, None, true, true) => (Status::Running, PodStatus::Ready, None),
        (false, None, true, false) => (Status::Starting, PodStatus::Pending, None),
        (false, None, false, _) => {
            (Status::Error, PodStatus::Unknown, Some("agent server is not running".into()))
        }
    }
}

fn internal(context: &str) -> impl Fn(std::io::Error) -> BackendError + '_ {
    move |e| BackendError::internal(format!("{context}: {e}")).with_source(e)
}

impl ProcessBackend {
    /// Opens `STATE_DIR`, loads every record and re-adopts agent servers that are still running.
    /// Must run inside a Tokio runtime.
    pub fn open(mut settings: ProcessSettings, metrics: Metrics) -> std::io::Result<Self> {
        record::private_dir(&settings.state_dir)?;
        // Absolute, so the marker in each agent's environment names one directory.
        settings.state_dir = settings.state_dir.canonicalize()?;
        let runtimes_dir = settings.state_dir.join("runtimes");
        record::private_dir(&runtimes_dir)?;
        let lock_file = lock_state_dir(&settings.state_dir)?;
        let trash = settings.state_dir.join("trash");
        if trash.exists() {
            std::fs::remove_dir_all(&trash)?;
        }
        let prober = Prober::new().map_err(std::io::Error::other)?;
        let init = InitClient::new().map_err(std::io::Error::other)?;
        let inner = Arc::new(Inner {
            settings,
            state: Mutex::default(),
            start_locks: KeyedLocks::default(),
            prober,
            metrics,
            init,
            refill: tokio::sync::Notify::new(),
            stop_refill: watch::channel(false).0,
            refill_task: Mutex::default(),
            _lock_file: lock_file,
        });
        let mut entries = Vec::new();
        for dir_entry in std::fs::read_dir(&runtimes_dir)? {
            let dir = RuntimeDir(dir_entry?.path());
            if let Some(entry) = load_runtime(dir)? {
                entries.push(entry);
            }
        }
        let marked = record::marked_processes(&runtimes_dir);
        let mut state = inner.lock();
        for mut entry in entries {
            let id = entry.record.runtime_id.clone();
            if !entry.record.paused && !entry.unreadable {
                // The record may predate the spawn (a crash in between): the marker is the truth.
                let leader = marked.iter().find(|m| m.runtime_id == id && m.is_leader());
                let process = leader
                    .map(record::Marked::id)
                    .or(entry.record.process.filter(|p| record::is_alive(*p)));
                match process {
                    Some(process) => {
                        if entry.record.process != Some(process) {
                            entry.record.process = Some(process);
                            if let Err(e) = Inner::persist(&entry) {
                                tracing::warn!(runtime_id = %id, error = %e.chain(), "could not record the re-adopted process");
                            }
                        }
                        inner.adopt(&mut entry, process);
                    }
                    None => {
                        entry.failure = Some(
                            "agent server is not running: it exited while the service was down; resume the runtime to start it again"
                                .into(),
                        )
                    }
                }
            }
            tracing::info!(runtime_id = %id, session_id = %entry.record.spec.session_id, status = entry.view().status.as_str(), "loaded runtime");
            if !entry.unreadable {
                state.sessions.insert(entry.record.spec.session_id.clone(), id.clone());
            }
            state.runtimes.insert(id, entry);
        }
        // Everything else of this state directory runs unaccounted for: stop it.
        for m in &marked {
            let adopted = state
                .runtimes
                .get(&m.runtime_id)
                .and_then(|e| e.running.as_ref())
                .is_some_and(|r| r.pid == m.stat.pgid);
            if !adopted {
                tracing::warn!(runtime_id = %m.runtime_id, pid = m.pid, "stopping an agent process no runnable runtime accounts for");
                launch::signal_group(m.stat.pgid, libc::SIGKILL);
                launch::signal_group(m.pid, libc::SIGKILL);
            }
        }
        drop(state);
        if !inner.settings.pools.is_empty() {
            let task = tokio::spawn(inner.clone().refill_loop(inner.stop_refill.subscribe()));
            *inner.refill_task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        }
        Ok(ProcessBackend { inner })
    }

    fn op_lock(&self, runtime_id: &str) -> BackendResult<Arc<tokio::sync::Mutex<()>>> {
        self.inner
            .lock()
            .runtimes
            .get(runtime_id)
            .map(|e| e.op_lock.clone())
            .ok_or_else(|| BackendError::runtime_not_found(runtime_id))
    }
}

/// One runtime directory at start-up: its entry, or `None` when a crash during its first record
/// write left only a temporary file (nothing was spawned: the record is written first).
fn load_runtime(dir: RuntimeDir) -> std::io::Result<Option<Entry>> {
    match std::fs::remove_file(dir.0.join(record::TEMP_RECORD_FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let runtime_id =
        dir.0.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    match record::load(&dir.record()) {
        Ok(record) => {
            tighten(&dir)?;
            Ok(Some(Entry::new(record, dir)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(path = %dir.0.display(), "removing a runtime directory without a record (a start interrupted before its first write)");
            std::fs::remove_dir_all(&dir.0)?;
            Ok(None)
        }
        Err(e) => {
            tracing::error!(runtime_id, path = %dir.0.display(), error = %e, "unreadable runtime record");
            tighten(&dir)?;
            Ok(Some(Entry::unreadable(dir, runtime_id, &e)))
        }
    }
}

/// Owner-only permissions on a runtime's directory, record and log (older versions left 0644).
fn tighten(dir: &RuntimeDir) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    record::private_dir(&dir.0)?;
    for file in [dir.record(), dir.log()] {
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(record::FILE_MODE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Kills every process started for `runtime_id` that still runs, whatever the record says
/// (an agent spawned just before a crash, or what an agent left in another process group).
fn kill_marked(runtimes_dir: &std::path::Path, runtime_id: &str) {
    for m in record::marked_processes(runtimes_dir).iter().filter(|m| m.runtime_id == runtime_id) {
        tracing::warn!(
            runtime_id,
            pid = m.pid,
            "stopping an agent process the record did not account for"
        );
        launch::signal_group(m.stat.pgid, libc::SIGKILL);
        launch::signal_group(m.pid, libc::SIGKILL);
    }
}

/// One service per `STATE_DIR`: two would fight over the same processes and files.
fn lock_state_dir(state_dir: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(state_dir.join("lock"))?;
    // SAFETY: flock(2) on a descriptor we own; no memory is shared with the kernel.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(std::io::Error::other(format!(
            "STATE_DIR {} is in use by another runtime-api process",
            state_dir.display()
        )));
    }
    Ok(file)
}

impl Inner {
    fn runtimes_dir(&self) -> PathBuf {
        self.settings.state_dir.join("runtimes")
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a panic elsewhere; the state itself is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the entry's agent server. Failures become the entry's `failure`, not an error:
    /// the runtime exists and reports why it is not running.
    fn launch(self: &Arc<Self>, entry: &mut Entry) {
        entry.generation += 1;
        entry.ready = false;
        entry.failure = None;
        entry.running = None;
        entry.record.process = None;
        entry.launched_at = Instant::now();
        let ports = entry.record.ports;
        if let Some(port) = launch::port_in_use(ports) {
            entry.failure =
                Some(format!("port {port} of this runtime is in use by another process"));
            return;
        }
        let base_path = urls::vscode_base_path(&self.settings.url_style, &entry.record.runtime_id);
        let injected = Injected {
            session_key: &entry.record.session_api_key,
            app_server_url: self.settings.app_server_url.as_deref(),
            app_server_public_url: self.settings.app_server_public_url.as_deref(),
            ports,
            vscode_base_path: base_path.as_deref(),
        };
        let sandbox_env = sandbox_environment(&entry.record.spec.environment, &injected);
        let env = launch::process_environment(
            |name| std::env::var(name).ok(),
            &entry.dir.home(),
            &sandbox_env,
        );
        let command = launch::render_command(
            &self.settings.agent_command,
            ports,
            &entry.record.runtime_id,
            &entry.dir.workspace(),
        );
        let child = match launch::spawn(&command, &entry.dir, &env) {
            Ok(child) => child,
            Err(e) => {
                entry.failure = Some(format!("could not start the agent server: {e}"));
                return;
            }
        };
        let Some(pid) = child.id() else {
            entry.failure = Some("the agent server exited before it could be tracked".into());
            return;
        };
        let process =
            ProcessId { pid, start_ticks: record::process_start_ticks(pid).unwrap_or_default() };
        entry.record.process = Some(process);
        let (exited_tx, exited_rx) = watch::channel(false);
        entry.running = Some(Running { pid, exited: exited_rx });
        let id = entry.record.runtime_id.clone();
        tracing::info!(runtime_id = %id, session_id = %entry.record.spec.session_id, pid, port = ports.agent, "agent server launched");
        tokio::spawn(self.clone().watch_child(id.clone(), entry.generation, child, exited_tx));
        tokio::spawn(self.clone().probe(id, entry.generation, ports.agent));
    }

    /// Takes over an agent server started by an earlier instance of the service.
    fn adopt(self: &Arc<Self>, entry: &mut Entry, process: ProcessId) {
        entry.generation += 1;
        let (exited_tx, exited_rx) = watch::channel(false);
        entry.running = Some(Running { pid: process.pid, exited: exited_rx });
        let id = entry.record.runtime_id.clone();
        tracing::info!(runtime_id = %id, pid = process.pid, "re-adopted running agent server");
        tokio::spawn(self.clone().watch_adopted(id.clone(), entry.generation, process, exited_tx));
        tokio::spawn(self.clone().probe(id, entry.generation, entry.record.ports.agent));
    }

    async fn watch_child(
        self: Arc<Self>,
        id: String,
        generation: u64,
        mut child: tokio::process::Child,
        exited: watch::Sender<bool>,
    ) {
        let detail = match child.wait().await {
            Ok(status) => {
                match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
                    (Some(code), _) => format!("agent server exited with code {code}"),
                    (None, Some(signal)) => format!("agent server was killed by signal {signal}"),
                    (None, None) => "agent server exited".to_string(),
                }
            }
            Err(e) => format!("agent server could not be waited for: {e}"),
        };
        self.on_exit(&id, generation, detail);
        let _ = exited.send(true);
    }

    /// An adopted process is not our child: poll `/proc` until it is gone.
    async fn watch_adopted(
        self: Arc<Self>,
        id: String,
        generation: u64,
        process: ProcessId,
        exited: watch::Sender<bool>,
    ) {
        while record::is_alive(process) {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        self.on_exit(&id, generation, "agent server exited (exit code unknown: it was started by an earlier instance of the service)".into());
        let _ = exited.send(true);
    }

    fn on_exit(&self, id: &str, generation: u64, detail: String) {
        let mut state = self.lock();
        let Some(entry) = state.runtimes.get_mut(id) else {
            self.on_member_exit(&mut state, id, &detail);
            return;
        };
        if entry.generation != generation {
            return; // paused, stopped or relaunched on purpose
        }
        let tail = record::log_tail(&entry.dir.log(), 15, 4096);
        tracing::warn!(runtime_id = %id, session_id = %entry.record.spec.session_id, %detail, "agent server exited unexpectedly");
        entry.running = None;
        entry.ready = false;
        entry.failure =
            Some(if tail.is_empty() { detail } else { format!("{detail}; last output:\n{tail}") });
    }

    /// Readiness: polls `/alive` quickly until the agent server answers, then at a steady pace.
    async fn probe(self: Arc<Self>, id: String, generation: u64, port: u16) {
        let mut ready = false;
        loop {
            tokio::time::sleep(if ready { PROBE_STEADY } else { PROBE_FAST }).await;
            let current = |state: &State| {
                state
                    .runtimes
                    .get(&id)
                    .is_some_and(|e| e.generation == generation && e.running.is_some())
            };
            if !current(&self.lock()) {
                return;
            }
            let alive = self.prober.alive(port).await;
            let mut state = self.lock();
            if !current(&state) {
                return;
            }
            let entry = state.runtimes.get_mut(&id).expect("checked above");
            if alive && !entry.ready {
                let elapsed = entry.launched_at.elapsed();
                self.metrics.start_to_running.observe(elapsed.as_secs_f64());
                tracing::info!(runtime_id = %id, seconds = elapsed.as_secs_f64(), "agent server is ready");
            }
            entry.ready = alive;
            ready = alive;
        }
    }

    fn persist(entry: &Entry) -> BackendResult<()> {
        record::save(&entry.dir, &entry.record)
            .map_err(internal("could not save the runtime record"))
    }
}

/// SIGTERM to the process group, SIGKILL after the grace period; returns once the leader is gone.
async fn terminate(running: Running) {
    let Running { pid, mut exited } = running;
    launch::signal_group(pid, libc::SIGTERM);
    if tokio::time::timeout(STOP_GRACE, exited.wait_for(|done| *done)).await.is_err() {
        tracing::warn!(pid, "agent server ignored SIGTERM; killing it");
        launch::signal_group(pid, libc::SIGKILL);
        let _ = tokio::time::timeout(STOP_GRACE, exited.wait_for(|done| *done)).await;
    }
    // Whatever the agent left behind in its group (shells, tools) goes too.
    launch::signal_group(pid, libc::SIGKILL);
}

#[async_trait]
impl Backend for ProcessBackend {
    async fn start(&self, spec: RuntimeSpec) -> BackendResult<Runtime> {
        let _serialised = self.inner.start_locks.lock(&spec.session_id).await;
        let style = &self.inner.settings.url_style;
        let existing = {
            let state = self.inner.lock();
            let id = state.sessions.get(&spec.session_id);
            id.and_then(|id| state.runtimes.get(id)).map(|e| (e.known(), e.view_with(style)))
        };
        match (plan_start(existing.as_ref().map(|(known, _)| known)), existing) {
            (StartPlan::Create, _) | (_, None) => {}
            (StartPlan::Resume, Some((_, current))) => {
                return self.resume(&current.runtime_id).await;
            }
            // Removal is immediate and the key is in the record, so only these two remain.
            (
                StartPlan::Return
                | StartPlan::CompleteObjects
                | StartPlan::CompleteCreation
                | StartPlan::AwaitRemovalThenCreate,
                Some((_, current)),
            ) => return Ok(current),
        }
        let started = Instant::now();
        if let Some(pool) = self.inner.settings.pools.for_shape(&Shape::of(&spec)) {
            let pool_metrics = &self.inner.metrics.pool;
            match self.inner.take_member(&pool.name) {
                Some(member) => {
                    let member_id = member.runtime_id.clone();
                    match self.inner.claim(member, spec.clone()).await {
                        Ok(view) => {
                            pool_metrics.claim(&pool.name, "hit");
                            pool_metrics.started(true, started.elapsed().as_secs_f64());
                            self.inner.refill.notify_one();
                            tracing::info!(runtime_id = %view.runtime_id, session_id = %view.session_id, pool = %pool.name, "runtime created from a warm pool member");
                            return Ok(view);
                        }
                        Err(e) => {
                            pool_metrics.claim(&pool.name, "init_failure");
                            tracing::warn!(pool = %pool.name, runtime_id = %member_id, error = %e, "pool member could not be initialised; starting cold");
                        }
                    }
                }
                None => pool_metrics.claim(&pool.name, "miss"),
            }
            self.inner.refill.notify_one();
        }
        let runtime_id = ids::new_runtime_id();
        let mut state = self.inner.lock();
        let taken = Inner::taken_ports(&state);
        let ports = launch::free_ports(&taken).map_err(internal("could not allocate ports"))?;
        let dir = RuntimeDir(self.inner.runtimes_dir().join(&runtime_id));
        record::private_dir(&dir.0).map_err(internal("could not create the runtime directory"))?;
        let record = Record {
            runtime_id: runtime_id.clone(),
            spec,
            session_api_key: ids::new_session_key(),
            ports,
            created_at: jiff::Timestamp::now().to_string(),
            paused: false,
            paused_at: None,
            pause_reason: None,
            process: None,
        };
        let mut entry = Entry::new(record, dir);
        // Record first: a crash between here and the launch leaves a runtime that reports itself.
        Inner::persist(&entry)?;
        self.inner.launch(&mut entry);
        Inner::persist(&entry)?;
        let view = entry.view_with(&self.inner.settings.url_style);
        tracing::info!(runtime_id = %runtime_id, session_id = %view.session_id, "runtime created");
        state.sessions.insert(view.session_id.clone(), runtime_id.clone());
        state.runtimes.insert(runtime_id, entry);
        self.inner.metrics.pool.started(false, started.elapsed().as_secs_f64());
        Ok(view)
    }

    async fn get(&self, runtime_id: &str) -> BackendResult<Option<Runtime>> {
        Ok(self
            .inner
            .lock()
            .runtimes
            .get(runtime_id)
            .map(|e| e.view_with(&self.inner.settings.url_style)))
    }

    async fn get_by_session(&self, session_id: &str) -> BackendResult<Option<Runtime>> {
        let state = self.inner.lock();
        Ok(state
            .sessions
            .get(session_id)
            .and_then(|id| state.runtimes.get(id))
            .map(|e| e.view_with(&self.inner.settings.url_style)))
    }

    async fn list(&self, filter: &ListFilter) -> BackendResult<Vec<Runtime>> {
        Ok(self
            .inner
            .lock()
            .runtimes
            .values()
            .map(|e| e.view_with(&self.inner.settings.url_style))
            .filter(|r| filter.matches(r.status))
            .collect())
    }

    async fn pause(&self, runtime_id: &str, reason: Option<&str>) -> BackendResult<Runtime> {
        let op = self.op_lock(runtime_id)?;
        let _serialised = op.lock().await;
        let (running, view) = {
            let mut state = self.inner.lock();
            let entry = state
                .runtimes
                .get_mut(runtime_id)
                .ok_or_else(|| BackendError::runtime_not_found(runtime_id))?;
            entry.check_readable()?;
            if entry.record.paused {
                return Ok(entry.view_with(&self.inner.settings.url_style));
            }
            entry.record.paused = true;
            entry.record.paused_at = Some(jiff::Timestamp::now().to_string());
            entry.record.pause_reason = reason.map(String::from);
            entry.record.process = None;
            entry.generation += 1;
            entry.ready = false;
            entry.failure = None;
            Inner::persist(entry)?;
            (entry.running.take(), entry.view_with(&self.inner.settings.url_style))
        };
        if let Some(running) = running {
            terminate(running).await;
        }
        kill_marked(&self.inner.runtimes_dir(), runtime_id);
        tracing::info!(runtime_id, session_id = %view.session_id, "runtime paused");
        Ok(view)
    }

    async fn resume(&self, runtime_id: &str) -> BackendResult<Runtime> {
        let op = self.op_lock(runtime_id)?;
        let _serialised = op.lock().await;
        let mut state = self.inner.lock();
        let entry = state
            .runtimes
            .get_mut(runtime_id)
            .ok_or_else(|| BackendError::runtime_not_found(runtime_id))?;
        entry.check_readable()?;
        match plan_resume(&entry.known()) {
            ResumePlan::AlreadyRunning => {
                return Ok(entry.view_with(&self.inner.settings.url_style));
            }
            ResumePlan::CredentialsLost => {
                return Err(BackendError::internal(format!(
                    "runtime {runtime_id} has no session key"
                )));
            }
            ResumePlan::Relaunch => {}
        }
        if self.inner.settings.rotate_key_on_resume {
            entry.record.session_api_key = ids::new_session_key();
        }
        entry.record.paused = false;
        entry.record.paused_at = None;
        entry.record.pause_reason = None;
        self.inner.launch(entry);
        Inner::persist(entry)?;
        tracing::info!(runtime_id, session_id = %entry.record.spec.session_id, "runtime resumed");
        Ok(entry.view_with(&self.inner.settings.url_style))
    }

    async fn stop(&self, runtime_id: &str) -> BackendResult<Runtime> {
        let op = self.op_lock(runtime_id)?;
        let _serialised = op.lock().await;
        let mut entry = {
            let mut state = self.inner.lock();
            let entry = state
                .runtimes
                .remove(runtime_id)
                .ok_or_else(|| BackendError::runtime_not_found(runtime_id))?;
            if state.sessions.get(&entry.record.spec.session_id).is_some_and(|id| id == runtime_id)
            {
                state.sessions.remove(&entry.record.spec.session_id);
            }
            entry
        };
        // Move the files out of `runtimes/` first, so a crash from here on cannot resurrect the runtime.
        let trash = self.inner.settings.state_dir.join("trash");
        let doomed = trash.join(runtime_id);
        let moved =
            std::fs::create_dir_all(&trash).and_then(|_| std::fs::rename(&entry.dir.0, &doomed));
        if let Some(running) = entry.running.take() {
            terminate(running).await;
        }
        kill_marked(&self.inner.runtimes_dir(), runtime_id);
        let removal = match moved {
            Ok(()) => tokio::fs::remove_dir_all(&doomed).await,
            Err(_) => tokio::fs::remove_dir_all(&entry.dir.0).await,
        };
        removal.map_err(internal("runtime stopped, but its files could not be removed"))?;
        let view = entry.view_with(&self.inner.settings.url_style).stopped();
        tracing::info!(runtime_id, session_id = %view.session_id, "runtime stopped");
        Ok(view)
    }

    async fn image_exists(&self, _image: &str) -> BackendResult<ImageCheck> {
        // Images cannot run here; what matters is whether the local agent command can.
        let path = std::env::var("PATH").ok();
        Ok(if launch::command_exists(&self.inner.settings.agent_command, path.as_deref()) {
            ImageCheck::Exists
        } else {
            ImageCheck::Missing
        })
    }

    fn readiness(&self) -> Readiness {
        Readiness::Ready
    }

    /// Stops the pool members (runtimes keep running: the next service re-adopts them).
    async fn shutdown(&self) {
        self.inner.stop_refill.send_replace(true);
        let task = self.inner.refill_task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    fn route(&self, runtime_id: &str) -> Option<RouteTarget> {
        let state = self.inner.lock();
        let entry = state.runtimes.get(runtime_id)?;
        let view = entry.view();
        Some(RouteTarget {
            status: view.status,
            status_detail: view.status_detail,
            address: Some(std::net::Ipv4Addr::LOCALHOST.into()),
            ports: entry.record.ports,
        })
    }

    async fn record_activity(&self, runtime_id: &str, at: jiff::Timestamp) -> BackendResult<()> {
        if let Some(entry) = self.inner.lock().runtimes.get_mut(runtime_id) {
            entry.last_activity = Some(at);
        }
        Ok(())
    }

    async fn candidates(&self) -> BackendResult<Vec<Candidate>> {
        let now = jiff::Timestamp::now();
        Ok(self
            .inner
            .lock()
            .runtimes
            .values()
            .filter(|e| !e.unreadable)
            .map(|e| {
                let view = e.view();
                let paused_for = e
                    .record
                    .paused_at
                    .as_deref()
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .map(|t| now.duration_since(t).unsigned_abs());
                let agent_url = format!("http://127.0.0.1:{}", e.record.ports.agent);
                let mut candidate = Candidate::from_view(view, paused_for, agent_url);
                candidate.last_activity = e.last_activity;
                candidate
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_the_process() {
        assert_eq!(derive_status(true, Some("x"), true, true).0, Status::Paused);
        let (s, p, d) = derive_status(false, Some("exited with code 3"), false, false);
        assert_eq!(
            (s, p, d.as_deref()),
            (Status::Error, PodStatus::Failed, Some("exited with code 3"))
        );
        assert_eq!(derive_status(false, None, true, false).0, Status::Starting);
        let (s, p, _) = derive_status(false, None, true, true);
        assert_eq!((s, p), (Status::Running, PodStatus::Ready));
        assert_eq!(derive_status(false, None, false, false).0, Status::Error);
    }
}
