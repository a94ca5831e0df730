//! The warm pools' metrics: members per pool and state, claims by outcome, and `/start`
//! durations split by whether a warm member served them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClaimLabels {
    pub pool: String,
    /// `hit` (a member served the start), `miss` (none was ready), `init_failure` (the member's
    /// `/api/init` failed: it was deleted and the start went cold).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StartLabels {
    /// `warm` or `cold`.
    pub start: &'static str,
}

/// Cheap to clone: every handle is an `Arc` inside.
#[derive(Clone)]
pub struct PoolMetrics {
    pub target: Family<PoolLabels, Gauge>,
    pub ready: Family<PoolLabels, Gauge>,
    pub starting: Family<PoolLabels, Gauge>,
    pub claims: Family<ClaimLabels, Counter>,
    pub start_duration: Family<StartLabels, Histogram>,
}

impl PoolMetrics {
    pub fn register(registry: &mut Registry) -> PoolMetrics {
        let m = PoolMetrics {
            target: Family::default(),
            ready: Family::default(),
            starting: Family::default(),
            claims: Family::default(),
            start_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 14))
            }),
        };
        registry.register("pool_target", "Members each warm pool is kept at", m.target.clone());
        registry.register(
            "pool_ready",
            "Dormant members ready to be claimed, per warm pool",
            m.ready.clone(),
        );
        registry.register(
            "pool_starting",
            "Members started but not yet answering, per warm pool",
            m.starting.clone(),
        );
        registry.register(
            "pool_claims",
            "Starts of a pooled shape by outcome (hit, miss, init_failure)",
            m.claims.clone(),
        );
        registry.register(
            "start_path_duration_seconds",
            "Time for a backend to create a runtime, by warm (a pool member) or cold start",
            m.start_duration.clone(),
        );
        m
    }

    /// Sets a pool's gauges.
    pub fn members(&self, pool: &str, target: usize, ready: usize, starting: usize) {
        let labels = PoolLabels { pool: pool.to_string() };
        self.target.get_or_create(&labels).set(target as i64);
        self.ready.get_or_create(&labels).set(ready as i64);
        self.starting.get_or_create(&labels).set(starting as i64);
    }

    pub fn claim(&self, pool: &str, outcome: &'static str) {
        self.claims.get_or_create(&ClaimLabels { pool: pool.to_string(), outcome }).inc();
    }

    pub fn started(&self, warm: bool, seconds: f64) {
        let start = if warm { "warm" } else { "cold" };
        self.start_duration.get_or_create(&StartLabels { start }).observe(seconds);
    }
}
