//! Background work that keeps sandboxes from costing money or piling up: idle pause, dead
//! cleanup, failure cleanup, orphan sweep. It runs only on the leader (see [`lease`]), and paused
//! runtimes are never removed by any rule but dead cleanup.

pub mod lease;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::watch;
use tracing::Instrument;

use crate::runtime::{Backend, Candidate, Readiness, Status};
use crate::telemetry::Metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailedAction {
    Pause,
    Stop,
}

#[derive(Debug, Clone)]
pub struct MaintenanceSettings {
    pub interval: Duration,
    /// Pause running runtimes idle longer than this (zero disables).
    pub idle: Duration,
    /// Stop runtimes paused longer than this (zero disables).
    pub dead: Duration,
    /// Act on runtimes in error longer than this (zero disables).
    pub failed: Duration,
    pub failed_action: FailedAction,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Pause { kind: &'static str, reason: String },
    Stop { kind: &'static str, reason: String },
}

/// The rule that applies to one runtime, if any. `failing_for` is how long this leader has seen
/// it in error; `idle_for` what its agent server reported.
pub fn decide(
    c: &Candidate,
    failing_for: Option<Duration>,
    idle_for: Option<Duration>,
    s: &MaintenanceSettings,
) -> Option<Action> {
    let enabled = |d: Duration| !d.is_zero();
    match c.status {
        Status::Paused => {
            c.paused_for.filter(|p| enabled(s.dead) && *p > s.dead).map(|p| Action::Stop {
                kind: "dead_stop",
                reason: format!("paused for {}s (limit {}s)", p.as_secs(), s.dead.as_secs()),
            })
        }
        Status::Error => failing_for.filter(|f| enabled(s.failed) && *f > s.failed).map(|f| {
            let reason = format!(
                "failing for {}s (limit {}s): {}",
                f.as_secs(),
                s.failed.as_secs(),
                c.status_detail.as_deref().unwrap_or("error")
            );
            match s.failed_action {
                FailedAction::Pause => Action::Pause { kind: "failed_pause", reason },
                FailedAction::Stop => Action::Stop { kind: "failed_stop", reason },
            }
        }),
        Status::Running => {
            idle_for.filter(|i| enabled(s.idle) && *i > s.idle).map(|i| Action::Pause {
                kind: "idle_pause",
                reason: format!("idle for {}s (limit {}s)", i.as_secs(), s.idle.as_secs()),
            })
        }
        Status::Starting | Status::Stopped => None,
    }
}

/// How long a runtime has been idle: what its agent server reports, but never longer than since
/// the gateway last forwarded something to it (traffic to VS Code or the workers, or an open
/// event WebSocket, is activity the agent's own clock does not see), nor than since it was seen
/// running (the agent's clock starts with its process, so a boot slower than the idle limit
/// would otherwise count as idleness, and the runtime be paused before its client's first
/// command). Without an answer from the agent: unknown, so no idle pause.
pub fn idle_for(
    agent_idle: Option<Duration>,
    last_activity: Option<jiff::Timestamp>,
    running_for: Option<Duration>,
    now: jiff::Timestamp,
) -> Option<Duration> {
    let since_traffic = last_activity.map(|t| now.duration_since(t).unsigned_abs());
    Some([since_traffic, running_for].into_iter().flatten().fold(agent_idle?, Duration::min))
}

/// When this leader first saw each runtime in error (the failure cleanup's clock) and running
/// (the bound on its idle time). Kept across rounds, forgotten when the state changes or the
/// leadership is lost: a new leader counts afresh, which delays a rule, never hastens it.
#[derive(Debug, Default)]
pub struct Seen {
    error: HashMap<String, Instant>,
    running: HashMap<String, Instant>,
}

impl Seen {
    /// Keeps the first sighting of each runtime's current state and forgets the rest.
    pub fn observe(&mut self, candidates: &[Candidate], now: Instant) {
        let status: HashMap<&str, Status> =
            candidates.iter().map(|c| (c.runtime_id.as_str(), c.status)).collect();
        for (since, wanted) in
            [(&mut self.error, Status::Error), (&mut self.running, Status::Running)]
        {
            since.retain(|id, _| status.get(id.as_str()) == Some(&wanted));
            for c in candidates.iter().filter(|c| c.status == wanted) {
                since.entry(c.runtime_id.clone()).or_insert(now);
            }
        }
    }

    pub fn failing_for(&self, runtime_id: &str) -> Option<Duration> {
        self.error.get(runtime_id).map(Instant::elapsed)
    }

    pub fn running_for(&self, runtime_id: &str) -> Option<Duration> {
        self.running.get(runtime_id).map(Instant::elapsed)
    }

    fn clear(&mut self) {
        self.error.clear();
        self.running.clear();
    }
}

/// Asks an agent server how long it has been idle (`GET /server_info` -> `idle_time` seconds).
/// The call carries the trace context and `runtime_id`/`session_id` baggage.
async fn idle_time(http: reqwest::Client, c: Candidate) -> Option<Duration> {
    let url = format!("{}/server_info", c.agent_url?.trim_end_matches('/'));
    let headers = crate::telemetry::agent_headers(&c.runtime_id, &c.session_id);
    let request = http.get(url).headers(headers).header("X-Session-API-Key", c.session_api_key);
    let resp = request.send().await.ok()?;
    let info: serde_json::Value = resp.error_for_status().ok()?.json().await.ok()?;
    let seconds = info.get("idle_time")?.as_f64()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

/// Runs maintenance rounds every `interval` while this replica leads, until `shutdown`.
pub async fn run(
    backend: Arc<dyn Backend>,
    settings: MaintenanceSettings,
    metrics: Metrics,
    leader: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let http = match reqwest::Client::builder().timeout(Duration::from_secs(3)).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "maintenance disabled: cannot build its HTTP client");
            return;
        }
    };
    let mut seen = Seen::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(settings.interval) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        metrics.leader.set(i64::from(*leader.borrow()));
        if !*leader.borrow() {
            seen.clear();
            continue;
        }
        let started = Instant::now();
        round(&*backend, &settings, &metrics, &http, &leader, &mut seen).await;
        metrics.maintenance_round.observe(started.elapsed().as_secs_f64());
    }
}

/// How often the leader looks at the warm pools: a claim is replaced within about this long.
pub const POOL_TICK: Duration = Duration::from_secs(1);

/// Keeps the warm pools at their size while this replica leads, until `shutdown`: more often
/// than maintenance rounds, since a claimed member should be replaced within seconds.
pub async fn keep_pools(
    backend: Arc<dyn Backend>,
    leader: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POOL_TICK) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        if !*leader.borrow() || !caches_complete(&*backend) {
            continue;
        }
        if let Err(e) = backend.keep_pools().await {
            tracing::warn!(error = %e.chain(), "warm pools: refill round failed");
        }
    }
}

/// Whether the backend's caches have listed everything once. Until then a replica that has just
/// started sees some runtimes, or runtimes without their Secrets or pods: the sweep would take
/// their objects for orphans (and delete them) or their pods for missing (and recreate them), the
/// pools their members for missing. So no round and no pool refill decides anything before.
fn caches_complete(backend: &dyn Backend) -> bool {
    match backend.reads_complete() {
        Readiness::Ready => true,
        Readiness::NotReady(reason) => {
            tracing::debug!(%reason, "maintenance waits for the caches");
            false
        }
    }
}

/// One pass over every runtime, then the orphan sweep; nothing while the caches are incomplete.
pub async fn round(
    backend: &dyn Backend,
    settings: &MaintenanceSettings,
    metrics: &Metrics,
    http: &reqwest::Client,
    leader: &watch::Receiver<bool>,
    seen: &mut Seen,
) {
    if !caches_complete(backend) {
        metrics.maintenance("round", "waiting_for_caches");
        return;
    }
    let candidates = match backend.candidates().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "maintenance: cannot list runtimes");
            return;
        }
    };
    seen.observe(&candidates, Instant::now());
    // Ask running agent servers for their idle time, a few at a time.
    let idle: HashMap<String, Duration> = if settings.idle.is_zero() {
        HashMap::new()
    } else {
        let running: Vec<Candidate> =
            candidates.iter().filter(|c| c.status == Status::Running).cloned().collect();
        futures::stream::iter(running)
            .map(|c| {
                let http = http.clone();
                let id = c.runtime_id.clone();
                let span = tracing::info_span!(
                    "agent server_info",
                    otel.kind = "client",
                    runtime_id = %c.runtime_id,
                );
                async move { idle_time(http, c).await.map(|d| (id, d)) }.instrument(span)
            })
            .buffer_unordered(16)
            .filter_map(futures::future::ready)
            .collect()
            .await
    };
    for c in &candidates {
        if !*leader.borrow() {
            tracing::info!("maintenance: no longer the leader; stopping this round");
            return;
        }
        let failing_for = seen.failing_for(&c.runtime_id);
        let idle = idle_for(
            idle.get(&c.runtime_id).copied(),
            c.last_activity,
            seen.running_for(&c.runtime_id),
            jiff::Timestamp::now(),
        );
        let Some(action) = decide(c, failing_for, idle, settings) else {
            continue;
        };
        let (kind, result) = match &action {
            Action::Pause { kind, reason } => {
                tracing::info!(runtime_id = %c.runtime_id, session_id = %c.session_id, kind, %reason, "maintenance: pausing runtime");
                (
                    *kind,
                    backend
                        .pause(&c.runtime_id, Some(&format!("paused by maintenance: {reason}")))
                        .await
                        .map(|_| ()),
                )
            }
            Action::Stop { kind, reason } => {
                tracing::info!(runtime_id = %c.runtime_id, session_id = %c.session_id, kind, %reason, "maintenance: stopping runtime");
                (*kind, backend.stop(&c.runtime_id).await.map(|_| ()))
            }
        };
        match result {
            Ok(()) => metrics.maintenance(kind, "ok"),
            Err(e) => {
                metrics.maintenance(kind, "error");
                tracing::warn!(runtime_id = %c.runtime_id, kind, error = %e, "maintenance action failed");
            }
        }
    }
    match backend.sweep().await {
        Ok(report) => {
            for _ in 0..report.orphans_deleted {
                metrics.maintenance("orphan_delete", "ok");
            }
            for _ in 0..report.repaired {
                metrics.maintenance("repair", "ok");
            }
            if report.orphans_deleted + report.repaired > 0 {
                tracing::info!(
                    orphans_deleted = report.orphans_deleted,
                    repaired = report.repaired,
                    "maintenance: sweep"
                );
            }
        }
        Err(e) => {
            metrics.maintenance("sweep", "error");
            tracing::warn!(error = %e, "maintenance: sweep failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> MaintenanceSettings {
        MaintenanceSettings {
            interval: Duration::from_secs(1),
            idle: Duration::from_secs(60),
            dead: Duration::from_secs(3600),
            failed: Duration::from_secs(300),
            failed_action: FailedAction::Pause,
        }
    }

    fn candidate(status: Status) -> Candidate {
        Candidate {
            runtime_id: "r".into(),
            session_id: "s".into(),
            status,
            status_detail: Some("CrashLoopBackOff: exited with code 1".into()),
            paused_for: None,
            agent_url: Some("http://127.0.0.1:1".into()),
            session_api_key: "k".into(),
            last_activity: None,
        }
    }

    #[test]
    fn gateway_traffic_shortens_the_idle_time() {
        let now: jiff::Timestamp = "2026-01-01T00:10:00Z".parse().unwrap();
        let recent = Some("2026-01-01T00:09:00Z".parse().unwrap());
        let minutes = |m: u64| Some(Duration::from_secs(60 * m));
        assert_eq!(idle_for(minutes(30), recent, None, now), minutes(1));
        assert_eq!(idle_for(minutes(30), None, None, now), minutes(30));
        assert_eq!(
            idle_for(Some(Duration::from_secs(5)), recent, None, now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            idle_for(None, recent, minutes(1), now),
            None,
            "no answer from the agent: unknown"
        );
    }

    /// Regression: on a loaded node an agent server took over a minute to boot, reported that
    /// minute as its idle time when first asked, and the leader paused it (RUNTIME_IDLE_SECONDS
    /// 60) before its client's first command; the client's retries resumed it into the same fate.
    #[test]
    fn a_slow_boot_is_not_idleness() {
        let now: jiff::Timestamp = "2026-01-01T00:10:00Z".parse().unwrap();
        let secs = |s: u64| Some(Duration::from_secs(s));
        assert_eq!(idle_for(secs(66), None, secs(4), now), secs(4));
        assert_eq!(idle_for(secs(66), None, secs(600), now), secs(66));
        let s = settings();
        let c = candidate(Status::Running);
        assert_eq!(decide(&c, None, idle_for(secs(66), None, secs(4), now), &s), None);
    }

    #[test]
    fn the_clocks_start_when_a_state_is_first_seen_and_reset_when_it_changes() {
        let mut seen = Seen::default();
        let t0 = Instant::now();
        let earlier = t0.checked_sub(Duration::from_secs(100)).unwrap();
        seen.observe(&[candidate(Status::Running)], earlier);
        seen.observe(&[candidate(Status::Running)], t0);
        assert!(seen.running_for("r").unwrap() >= Duration::from_secs(100), "first sighting kept");
        assert_eq!(seen.failing_for("r"), None);
        seen.observe(&[candidate(Status::Paused)], t0);
        assert_eq!(seen.running_for("r"), None);
        seen.observe(&[candidate(Status::Running)], t0);
        assert!(
            seen.running_for("r").unwrap() < Duration::from_secs(100),
            "a new run, a new clock"
        );
        seen.observe(&[candidate(Status::Error)], t0);
        assert!(seen.failing_for("r").is_some() && seen.running_for("r").is_none());
        seen.observe(&[], t0);
        assert_eq!(seen.failing_for("r"), None);
    }

    #[test]
    fn idle_running_runtimes_are_paused_never_stopped() {
        let s = settings();
        let c = candidate(Status::Running);
        assert_eq!(decide(&c, None, Some(Duration::from_secs(30)), &s), None);
        assert!(matches!(
            decide(&c, None, Some(Duration::from_secs(61)), &s),
            Some(Action::Pause { kind: "idle_pause", .. })
        ));
        assert_eq!(decide(&c, None, None, &s), None, "no answer from the agent: no action");
        let off = MaintenanceSettings { idle: Duration::ZERO, ..s };
        assert_eq!(decide(&c, None, Some(Duration::from_secs(10_000)), &off), None);
    }

    #[test]
    fn only_dead_cleanup_removes_paused_runtimes() {
        let s = settings();
        let mut c = candidate(Status::Paused);
        c.paused_for = Some(Duration::from_secs(3599));
        assert_eq!(
            decide(&c, Some(Duration::from_secs(10_000)), Some(Duration::from_secs(10_000)), &s),
            None
        );
        c.paused_for = Some(Duration::from_secs(3601));
        assert!(matches!(decide(&c, None, None, &s), Some(Action::Stop { kind: "dead_stop", .. })));
        let off = MaintenanceSettings { dead: Duration::ZERO, ..s };
        assert_eq!(decide(&c, None, None, &off), None);
    }

    /// A regression: a replica that had just started could sweep with caches that had not listed
    /// yet (the first round comes one interval after the start; at 20,000 runtimes the initial
    /// lists took 17 s), and runtimes missing from them look orphaned. Here the caches never list
    /// (nothing answers at that address), so a sweep would fail: a round must not get that far.
    #[tokio::test]
    async fn no_round_and_no_sweep_before_the_caches_are_complete() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap();
        let metrics = Metrics::new();
        let kube_settings = crate::backend::kubernetes::settings::tests::settings("subdomain");
        let backend = crate::backend::kubernetes::KubernetesBackend::with_client(
            client,
            kube_settings,
            metrics.clone(),
            "test",
        )
        .unwrap();
        let (_leader_tx, leader) = watch::channel(true);
        let http = reqwest::Client::new();
        round(&backend, &settings(), &metrics, &http, &leader, &mut Seen::default()).await;
        let text = metrics.encode();
        assert!(text.contains(r#"operation="round",outcome="waiting_for_caches""#), "{text}");
        assert!(!text.contains(r#"operation="sweep""#), "{text}");
    }

    #[test]
    fn failures_are_paused_or_stopped_as_configured_with_the_reason() {
        let s = settings();
        let c = candidate(Status::Error);
        assert_eq!(decide(&c, Some(Duration::from_secs(299)), None, &s), None);
        match decide(&c, Some(Duration::from_secs(301)), None, &s) {
            Some(Action::Pause { kind: "failed_pause", reason }) => {
                assert!(reason.contains("CrashLoopBackOff"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        let stop = MaintenanceSettings { failed_action: FailedAction::Stop, ..s };
        assert!(matches!(
            decide(&c, Some(Duration::from_secs(301)), None, &stop),
            Some(Action::Stop { kind: "failed_stop", .. })
        ));
        assert_eq!(
            decide(&candidate(Status::Starting), Some(Duration::from_secs(10_000)), None, &stop),
            None
        );
    }
}
