//! Warm pools with late binding. Dormant agent servers (deferred init) are kept ready per
//! [`Shape`]; a `/start` of that shape claims one and delivers its session through `/api/init`
//! instead of paying a cold start. Anything that goes wrong falls back to the cold start. The
//! backend-specific parts (members, claims, refill) live beside each backend.

pub mod init;
pub mod metrics;
pub mod shape;

pub use init::{InitClient, InitState};
pub use metrics::PoolMetrics;
pub use shape::{PoolList, PoolSpec, Pools, Shape, parse_pool_list, parse_pools};
