//! Leader election with a `coordination.k8s.io` Lease, so background work runs on one replica.
//!
//! Expiry is judged on this replica's own clock: a lease is free when its holder has not renewed
//! it (its record has not changed) for a whole lease duration since we first saw it, which
//! tolerates clock skew between replicas. A leader that cannot renew in time steps down before
//! anyone else may take over.
//!
//! Idle cost: the leader renews with one write every `renew` (at the version of its last write,
//! no read first), followers read once every `retry`; a failed attempt is retried within a second,
//! so a leader gets several chances before it must step down.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub name: String,
    pub identity: String,
    pub duration: Duration,
    /// How often a follower reads the lease (and how soon it sees a released one).
    pub retry: Duration,
    /// How often the leader renews it.
    pub renew: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it.
    Acquire,
    /// Someone else holds it.
    Follow(String),
}

/// What to do with a lease whose holder is `holder`, unchanged for `unchanged_for`.
pub fn decide(
    holder: Option<&str>,
    me: &str,
    unchanged_for: Duration,
    duration: Duration,
) -> Decision {
    match holder.filter(|h| !h.is_empty()) {
        None => Decision::Acquire,
        Some(h) if h == me => Decision::Renew,
        Some(_) if unchanged_for > duration => Decision::Acquire,
        Some(h) => Decision::Follow(h.to_string()),
    }
}

/// Runs the election until `shutdown` is set; `leader` says whether this replica leads. On
/// shutdown a leader releases the lease so another replica takes over at once.
pub async fn run(
    api: Api<Lease>,
    s: LeaseSettings,
    leader: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut observed: Option<(String, Instant)> = None;
    let mut last_renewal: Option<Instant> = None;
    // The lease as we last wrote it, while we hold it: the next renewal is a write at its version.
    let mut held: Option<Lease> = None;
    loop {
        let result = match held.take() {
            Some(lease) => match renew(&api, lease).await {
                Ok(None) => attempt(&api, &s, &mut observed).await,
                renewed => renewed,
            },
            None => attempt(&api, &s, &mut observed).await,
        };
        let failed = result.is_err();
        match result.map(|written| {
            held = written;
            held.is_some()
        }) {
            Ok(true) => {
                last_renewal = Some(Instant::now());
                if !*leader.borrow() {
                    tracing::info!(lease = %s.name, identity = %s.identity, "became the leader");
                }
                leader.send_replace(true);
            }
            Ok(false) => {
                if *leader.borrow() {
                    tracing::warn!(lease = %s.name, "lost the lease to another replica; stopping background work");
                }
                leader.send_replace(false);
            }
            Err(e) => {
                // Step down well before others may consider the lease expired.
                let stale = last_renewal.is_none_or(|t| t.elapsed() > s.duration * 2 / 3);
                if *leader.borrow() && stale {
                    tracing::warn!(lease = %s.name, error = %e, "cannot renew the lease; stepping down");
                    leader.send_replace(false);
                } else {
                    tracing::debug!(lease = %s.name, error = %e, "lease attempt failed");
                }
            }
        }
        let pause = match (failed, held.is_some()) {
            (true, _) => s.retry.min(Duration::from_secs(1)),
            (false, true) => s.renew,
            (false, false) => s.retry,
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    if *leader.borrow() {
        leader.send_replace(false);
        match release(&api, &s).await {
            Ok(()) => tracing::info!(lease = %s.name, "released the lease"),
            Err(e) => tracing::warn!(lease = %s.name, error = %e, "could not release the lease"),
        }
    }
}

fn now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

/// A renewal of the lease we hold, in one request: a write at the version we last wrote. A
/// conflict (someone else wrote it since) means we do not hold it for sure: read and decide again.
async fn renew(api: &Api<Lease>, mut lease: Lease) -> kube::Result<Option<Lease>> {
    let name = lease.metadata.name.clone().unwrap_or_default();
    lease.spec.get_or_insert_with(Default::default).renew_time = Some(now());
    match api.replace(&name, &PostParams::default(), &lease).await {
        Ok(written) => Ok(Some(written)),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
        Err(e) => Err(e),
    }
}

/// One round of reading the lease and deciding: returns the lease as written when we hold it
/// afterwards.
async fn attempt(
    api: &Api<Lease>,
    s: &LeaseSettings,
    observed: &mut Option<(String, Instant)>,
) -> kube::Result<Option<Lease>> {
    let Some(current) = api.get_opt(&s.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta { name: Some(s.name.clone()), ..Default::default() },
            spec: Some(LeaseSpec {
                holder_identity: Some(s.identity.clone()),
                lease_duration_seconds: Some(s.duration.as_secs() as i32),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(written) => Ok(Some(written)),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
            Err(e) => Err(e),
        };
    };
    let spec = current.spec.clone().unwrap_or_default();
    // The lease "record": it changes at every renewal of whoever holds it.
    let record = format!(
        "{}/{}",
        spec.holder_identity.clone().unwrap_or_default(),
        spec.renew_time.as_ref().map(|t| t.0.to_string()).unwrap_or_default()
    );
    let since = match observed {
        Some((seen, at)) if *seen == record => *at,
        _ => {
            *observed = Some((record, Instant::now()));
            Instant::now()
        }
    };
    let duration = spec
        .lease_duration_seconds
        .map(|d| Duration::from_secs(d.max(1) as u64))
        .unwrap_or(s.duration);
    let decision = decide(spec.holder_identity.as_deref(), &s.identity, since.elapsed(), duration);
    let mut next = current.clone();
    let next_spec = next.spec.get_or_insert_with(Default::default);
    match decision {
        Decision::Follow(_) => return Ok(None),
        Decision::Renew => next_spec.renew_time = Some(now()),
        Decision::Acquire => {
            next_spec.holder_identity = Some(s.identity.clone());
            next_spec.lease_duration_seconds = Some(s.duration.as_secs() as i32);
            next_spec.acquire_time = Some(now());
            next_spec.renew_time = Some(now());
            next_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
    }
    // `replace` carries the resourceVersion we read: a concurrent change makes it fail with 409.
    match api.replace(&s.name, &PostParams::default(), &next).await {
        Ok(written) => Ok(Some(written)),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
        Err(e) => Err(e),
    }
}

async fn release(api: &Api<Lease>, s: &LeaseSettings) -> kube::Result<()> {
    let Some(mut lease) = api.get_opt(&s.name).await? else { return Ok(()) };
    let spec = lease.spec.get_or_insert_with(Default::default);
    if spec.holder_identity.as_deref() != Some(s.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.renew_time = Some(now());
    spec.lease_duration_seconds = Some(1);
    api.replace(&s.name, &PostParams::default(), &lease).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(15);

    #[test]
    fn decisions() {
        assert_eq!(decide(None, "a", Duration::ZERO, D), Decision::Acquire);
        assert_eq!(decide(Some(""), "a", Duration::ZERO, D), Decision::Acquire, "released");
        assert_eq!(decide(Some("a"), "a", Duration::from_secs(100), D), Decision::Renew);
        assert_eq!(decide(Some("b"), "a", Duration::from_secs(3), D), Decision::Follow("b".into()));
        assert_eq!(
            decide(Some("b"), "a", Duration::from_secs(16), D),
            Decision::Acquire,
            "expired"
        );
    }
}
