//! OpenHands Remote Runtime API: a service that gives OpenHands isolated, pausable, resumable
//! agent sandboxes, as local processes or as Kubernetes objects.

pub mod api;
pub mod backend;
pub mod config;
pub mod gateway;
pub mod maintenance;
pub mod memory;
pub mod pool;
pub mod registry;
pub mod runtime;
pub mod server;
pub mod telemetry;
