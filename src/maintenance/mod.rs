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

use crate::runtime::{Backend, Candidate, Status};
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
/// event WebSocket, is activity the agent's own clock does not see). Without an answer from the
/// agent: unknown, so no idle pause.
pub fn idle_for(
    agent_idle: Option<Duration>,
    last_activity: Option<jiff::Timestamp>,
    now: jiff::Timestamp,
) -> Option<Duration> {
    let agent_idle = agent_idle?;
    let since_traffic = last_activity.map(|t| now.duration_since(t).unsigned_abs());
    Some(since_traffic.map_or(agent_idle, |t| t.min(agent_idle)))
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
    let mut failing_since: HashMap<String, Instant> = HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(settings.interval) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        metrics.leader.set(i64::from(*leader.borrow()));
        if !*leader.borrow() {
            failing_since.clear();
            continue;
        }
        let started = Instant::now();
        round(&*backend, &settings, &metrics, &http, &leader, &mut failing_since).await;
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
        if !*leader.borrow() {
            continue;
        }
        if let Err(e) = backend.keep_pools().await {
            tracing::warn!(error = %e.chain(), "warm pools: refill round failed");
        }
    }
}

/// One pass over every runtime, then the orphan sweep.
pub async fn round(
    backend: &dyn Backend,
    settings: &MaintenanceSettings,
    metrics: &Metrics,
    http: &reqwest::Client,
    leader: &watch::Receiver<bool>,
    failing_since: &mut HashMap<String, Instant>,
) {
    let candidates = match backend.candidates().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "maintenance: cannot list runtimes");
            return;
        }
    };
    let now = Instant::now();
    failing_since.retain(|id, _| {
        candidates.iter().any(|c| &c.runtime_id == id && c.status == Status::Error)
    });
    for c in candidates.iter().filter(|c| c.status == Status::Error) {
        failing_since.entry(c.runtime_id.clone()).or_insert(now);
    }
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
        let failing_for = failing_since.get(&c.runtime_id).map(|t| t.elapsed());
        let idle =
            idle_for(idle.get(&c.runtime_id).copied(), c.last_activity, jiff::Timestamp::now());
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
        assert_eq!(idle_for(minutes(30), recent, now), minutes(1));
        assert_eq!(idle_for(minutes(30), None, now), minutes(30));
        assert_eq!(
            idle_for(Some(Duration::from_secs(5)), recent, now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(idle_for(None, recent, now), None, "no answer from the agent: unknown");
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
