//! The process backend's warm pools: dormant agent servers (deferred init) started ahead of any
//! request, each in the runtime directory of the runtime id it will have once claimed. A claim
//! takes a ready member out of the pool under the state lock (so no member serves two starts),
//! delivers the session through `/api/init`, and writes the record: the runtime is running at
//! once. A member without a record is not a runtime: a restarted service removes it with its
//! process, like any directory without a record.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::launch;
use super::record::{self, ProcessId, Record, RuntimeDir};
use super::{Entry, Inner, Running, State, internal, terminate};
use crate::pool::init::{dormant_environment, init_body};
use crate::pool::{InitState, PoolSpec};
use crate::runtime::env::{Injected, SandboxPorts};
use crate::runtime::urls;
use crate::runtime::{BackendError, BackendResult, Runtime, RuntimeSpec, ids};

/// How often the refill loop looks at the pools when nothing wakes it.
const REFILL_TICK: Duration = Duration::from_secs(1);
/// A member that has not come up by then is replaced.
const MEMBER_BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// Members booting at once, over every pool: on a small machine, booting all at once makes each
/// of them (and every cold start meanwhile) slower; a few at a time gets the first ones ready soon.
const MAX_BOOTING: usize = 3;
/// Probe cadence while a member boots.
const MEMBER_PROBE: Duration = Duration::from_millis(100);

/// One dormant agent server.
pub(super) struct Member {
    pub pool: String,
    /// The id it becomes once claimed: it names its directory (and the marker in its environment).
    pub runtime_id: String,
    pub dir: RuntimeDir,
    pub ports: SandboxPorts,
    /// Its `OH_SECRET_KEY`, the key `POST /api/init` must present. Never logged.
    pub init_key: String,
    pub process: ProcessId,
    pub running: Running,
    pub ready: bool,
    pub launched_at: Instant,
}

/// The generation a member's watcher runs under; a claimed runtime keeps it.
const MEMBER_GENERATION: u64 = 1;

impl Inner {
    /// Takes a ready member of `pool` out of the pool: from here it is this caller's alone.
    pub(super) fn take_member(&self, pool: &str) -> Option<Member> {
        let mut state = self.lock();
        let at = state.members.iter().position(|m| m.pool == pool && m.ready)?;
        let member = state.members.swap_remove(at);
        self.pool_gauges(&state);
        Some(member)
    }

    /// Turns `member` into the runtime of `spec`; on failure the member is gone and the caller
    /// starts cold.
    pub(super) async fn claim(
        self: &Arc<Self>,
        member: Member,
        spec: RuntimeSpec,
    ) -> Result<Runtime, String> {
        let key = ids::new_session_key();
        let base_path = urls::vscode_base_path(&self.settings.url_style, &member.runtime_id);
        let injected = Injected {
            session_key: &key,
            app_server_url: self.settings.app_server_url.as_deref(),
            app_server_public_url: self.settings.app_server_public_url.as_deref(),
            ports: member.ports,
            vscode_base_path: base_path.as_deref(),
        };
        let body = init_body(&spec.environment, &injected);
        let url = format!("http://127.0.0.1:{}", member.ports.agent);
        if let Err(e) = self.init.initialize(&url, &member.init_key, &body).await {
            self.discard(member).await;
            return Err(e);
        }
        let record = Record {
            runtime_id: member.runtime_id.clone(),
            spec,
            session_api_key: key,
            ports: member.ports,
            created_at: jiff::Timestamp::now().to_string(),
            paused: false,
            paused_at: None,
            pause_reason: None,
            process: Some(member.process),
        };
        let Member { dir, running, launched_at, .. } = member;
        let mut entry = Entry::new(record, dir);
        entry.generation = MEMBER_GENERATION;
        entry.launched_at = launched_at;
        if let Err(e) = Inner::persist(&entry) {
            terminate(running).await;
            let _ = tokio::fs::remove_dir_all(&entry.dir.0).await;
            return Err(e.to_string());
        }
        let exited = *running.exited.borrow();
        entry.running = Some(running);
        entry.ready = true;
        if exited {
            // It died between its init and now: the runtime exists and says so.
            entry.running = None;
            entry.ready = false;
            entry.failure = Some("agent server exited right after its initialisation".into());
        }
        let id = entry.record.runtime_id.clone();
        let mut state = self.lock();
        let view = entry.view_with(&self.settings.url_style);
        if !exited {
            tokio::spawn(self.clone().probe(
                id.clone(),
                entry.generation,
                entry.record.ports.agent,
            ));
        }
        state.sessions.insert(view.session_id.clone(), id.clone());
        state.runtimes.insert(id, entry);
        Ok(view)
    }

    /// Stops a member and removes its files.
    async fn discard(&self, member: Member) {
        terminate(member.running).await;
        if let Err(e) = tokio::fs::remove_dir_all(&member.dir.0).await {
            tracing::warn!(pool = %member.pool, error = %e, "could not remove a discarded pool member's files");
        }
    }

    /// Ports in use by runtimes and members.
    pub(super) fn taken_ports(state: &State) -> Vec<u16> {
        let ports = |p: SandboxPorts| [p.agent, p.vscode, p.worker_1, p.worker_2];
        state
            .runtimes
            .values()
            .flat_map(|e| ports(e.record.ports))
            .chain(state.members.iter().flat_map(|m| ports(m.ports)))
            .collect()
    }

    /// Starts one dormant member of `pool`.
    fn launch_member(self: &Arc<Self>, state: &mut State, pool: &PoolSpec) -> BackendResult<()> {
        let runtime_id = ids::new_runtime_id();
        let ports = launch::free_ports(&Inner::taken_ports(state))
            .map_err(internal("could not allocate ports"))?;
        let dir = RuntimeDir(self.runtimes_dir().join(&runtime_id));
        record::private_dir(&dir.0).map_err(internal("could not create a member directory"))?;
        let init_key = ids::new_session_key();
        let base_path = urls::vscode_base_path(&self.settings.url_style, &runtime_id);
        let env = launch::process_environment(
            |name| std::env::var(name).ok(),
            &dir.home(),
            &dormant_environment(&init_key, ports, base_path.as_deref()),
        );
        let command = launch::render_command(
            &self.settings.agent_command,
            ports,
            &runtime_id,
            &dir.workspace(),
        );
        let child = launch::spawn(&command, &dir, &env).map_err(|e| {
            let _ = std::fs::remove_dir_all(&dir.0);
            BackendError::internal(format!("could not start a pool member: {e}"))
        })?;
        let Some(pid) = child.id() else {
            let _ = std::fs::remove_dir_all(&dir.0);
            return Err(BackendError::internal("a pool member exited at once"));
        };
        let process =
            ProcessId { pid, start_ticks: record::process_start_ticks(pid).unwrap_or_default() };
        let (exited_tx, exited_rx) = watch::channel(false);
        tracing::info!(pool = %pool.name, runtime_id = %runtime_id, pid, port = ports.agent, "pool member launched");
        tokio::spawn(self.clone().watch_child(
            runtime_id.clone(),
            MEMBER_GENERATION,
            child,
            exited_tx,
        ));
        tokio::spawn(self.clone().probe_member(runtime_id.clone(), ports.agent));
        state.members.push(Member {
            pool: pool.name.clone(),
            runtime_id,
            dir,
            ports,
            init_key,
            process,
            running: Running { pid, exited: exited_rx },
            ready: false,
            launched_at: Instant::now(),
        });
        Ok(())
    }

    /// Marks a member ready once its dormant server answers `GET /api/init` with `dormant`.
    async fn probe_member(self: Arc<Self>, runtime_id: String, port: u16) {
        let url = format!("http://127.0.0.1:{port}");
        loop {
            tokio::time::sleep(MEMBER_PROBE).await;
            let in_pool = |state: &State| state.members.iter().any(|m| m.runtime_id == runtime_id);
            if !in_pool(&self.lock()) {
                return;
            }
            if self.init.state(&url).await == Some(InitState::Dormant) {
                let mut state = self.lock();
                if let Some(m) = state.members.iter_mut().find(|m| m.runtime_id == runtime_id) {
                    m.ready = true;
                    tracing::info!(pool = %m.pool, runtime_id = %runtime_id, seconds = m.launched_at.elapsed().as_secs_f64(), "pool member ready");
                }
                self.pool_gauges(&state);
                return;
            }
        }
    }

    /// A member's process exited: it leaves the pool (the refill loop replaces it).
    pub(super) fn on_member_exit(&self, state: &mut State, runtime_id: &str, detail: &str) {
        if let Some(at) = state.members.iter().position(|m| m.runtime_id == runtime_id) {
            let member = state.members.swap_remove(at);
            tracing::warn!(pool = %member.pool, runtime_id, %detail, "pool member exited");
            let _ = std::fs::remove_dir_all(&member.dir.0);
            self.pool_gauges(state);
            self.refill.notify_one();
        }
    }

    /// Brings every pool up to its size and replaces members that never came up.
    fn refill_once(self: &Arc<Self>) -> Vec<Member> {
        let mut state = self.lock();
        let (stuck, kept): (Vec<Member>, Vec<Member>) = std::mem::take(&mut state.members)
            .into_iter()
            .partition(|m| !m.ready && m.launched_at.elapsed() > MEMBER_BOOT_TIMEOUT);
        state.members = kept;
        let mut booting = state.members.iter().filter(|m| !m.ready).count();
        for pool in &self.settings.pools.0 {
            let have = state.members.iter().filter(|m| m.pool == pool.name).count();
            for _ in have..pool.size {
                if booting >= MAX_BOOTING {
                    break;
                }
                booting += 1;
                if let Err(e) = self.launch_member(&mut state, pool) {
                    tracing::warn!(pool = %pool.name, error = %e.chain(), "could not start a pool member");
                    break;
                }
            }
        }
        self.pool_gauges(&state);
        stuck
    }

    /// The pool gauges from the members in `state`.
    fn pool_gauges(&self, state: &State) {
        for pool in &self.settings.pools.0 {
            let of_pool = || state.members.iter().filter(|m| m.pool == pool.name);
            let ready = of_pool().filter(|m| m.ready).count();
            let starting = of_pool().count() - ready;
            self.metrics.pool.members(&pool.name, pool.size, ready, starting);
        }
    }

    /// Keeps the pools full until `stop` is set, then stops every member.
    pub(super) async fn refill_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                break;
            }
            for member in self.refill_once() {
                tracing::warn!(pool = %member.pool, runtime_id = %member.runtime_id, "pool member did not come up in time; replacing it");
                self.discard(member).await;
            }
            tokio::select! {
                _ = self.refill.notified() => {}
                _ = tokio::time::sleep(REFILL_TICK) => {}
                _ = stop.changed() => {}
            }
        }
        let members = std::mem::take(&mut self.lock().members);
        futures::future::join_all(members.into_iter().map(|m| self.discard(m))).await;
    }
}
