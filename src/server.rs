//! Wiring: builds the backend from the configuration and serves the API until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;

use crate::api::{self, AppState};
use crate::backend::kubernetes::{KubeSettings, KubernetesBackend};
use crate::backend::process::{ProcessBackend, ProcessSettings};
use crate::config::{BackendKind, Config};
use crate::gateway::{Gateway, GatewaySettings};
use crate::maintenance::lease::{self, LeaseSettings};
use crate::maintenance::{self, MaintenanceSettings};
use crate::memory;
use crate::runtime::{Backend, BackendError};
use crate::telemetry::Metrics;

/// Why the service could not start or stopped abnormally; printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("process backend (STATE_DIR {dir}): {source}")]
    Process { dir: String, source: std::io::Error },
    #[error(transparent)]
    Kubernetes(#[from] BackendError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// The backend and, for Kubernetes, what leader election needs.
pub struct Built {
    pub backend: Arc<dyn Backend>,
    pub lease_api: Option<kube::Api<k8s_openapi::api::coordination::v1::Lease>>,
}

pub async fn build_backend(
    config: &Config,
    metrics: Metrics,
    identity: &str,
) -> Result<Built, ServeError> {
    match config.backend {
        BackendKind::Process => {
            let settings = ProcessSettings {
                state_dir: config.process.state_dir(),
                agent_command: config.process.process_agent_command.clone(),
                app_server_url: config.sandbox.app_server_url.clone(),
                app_server_public_url: config.sandbox.app_server_public_url.clone(),
                rotate_key_on_resume: config.sandbox.rotate_session_key_on_resume,
                url_style: config.url_style(),
                pools: config.pools(),
            };
            let dir = settings.state_dir.display().to_string();
            let backend = ProcessBackend::open(settings, metrics)
                .map_err(|source| ServeError::Process { dir, source })?;
            Ok(Built { backend: Arc::new(backend), lease_api: None })
        }
        BackendKind::Kubernetes => {
            let settings = KubeSettings::from_config(config);
            let backend = KubernetesBackend::connect(settings, metrics, identity).await?;
            let lease_api = kube::Api::namespaced(backend.client(), backend.namespace());
            Ok(Built { backend: Arc::new(backend), lease_api: Some(lease_api) })
        }
    }
}

/// Runs the service: binds, serves, and on a shutdown signal stops accepting, gives in-flight
/// requests `SHUTDOWN_TIMEOUT_SECONDS` to finish, then returns.
pub async fn run(config: Config) -> Result<(), ServeError> {
    // kube and reqwest use rustls; pick its crypto provider once for the whole process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = Metrics::new();
    let identity = config.maintenance.identity();
    let Built { backend, lease_api } = build_backend(&config, metrics.clone(), &identity).await?;
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let (leader_tx, leader_rx) = tokio::sync::watch::channel(false);
    let mut background = Vec::new();
    match lease_api {
        Some(api) => {
            let lease = LeaseSettings {
                name: config.maintenance.lease_name.clone(),
                identity: identity.clone(),
                duration: Duration::from_secs(config.maintenance.lease_duration_seconds),
                retry: Duration::from_secs((config.maintenance.lease_duration_seconds / 5).max(1)),
                renew: Duration::from_secs((config.maintenance.lease_duration_seconds / 3).max(1)),
            };
            background.push(tokio::spawn(lease::run(api, lease, leader_tx, shutdown_rx.clone())));
        }
        // One process owns its STATE_DIR (it is locked): it is always the leader.
        None => {
            leader_tx.send_replace(true);
        }
    }
    let maintenance_settings = MaintenanceSettings {
        interval: Duration::from_secs(config.maintenance.maintenance_interval_seconds),
        idle: Duration::from_secs(config.maintenance.runtime_idle_seconds),
        dead: Duration::from_secs(config.maintenance.runtime_dead_seconds),
        failed: Duration::from_secs(config.maintenance.runtime_failed_seconds),
        failed_action: config.maintenance.runtime_failed_action,
    };
    background.push(tokio::spawn(maintenance::keep_pools(
        backend.clone(),
        leader_rx.clone(),
        shutdown_rx.clone(),
    )));
    background.push(tokio::spawn(memory::keep_trimmed(memory::TRIM_INTERVAL, shutdown_rx.clone())));
    background.push(tokio::spawn(maintenance::run(
        backend.clone(),
        maintenance_settings,
        metrics.clone(),
        leader_rx,
        shutdown_rx,
    )));
    let g = &config.gateway;
    let gateway_port = g.enabled(config.kubernetes.routing_mode).then_some(g.gateway_port);
    let gateway = (gateway_port.is_some() || g.proxy_base_url.is_some()).then(|| {
        let settings = GatewaySettings {
            base_domain: g.routing_domain(&config.kubernetes.base_domain),
            api_key: config.http.api_key.as_str().to_string(),
            wake_timeout: Duration::from_secs(g.gateway_wake_timeout_seconds),
            upstream_timeout: Duration::from_secs(g.gateway_upstream_timeout_seconds),
            max_connections_per_runtime: g.gateway_max_connections_per_runtime as usize,
            activity_interval: Duration::from_secs(g.gateway_activity_interval_seconds),
        };
        Gateway::new(backend.clone(), metrics.gateway.clone(), settings)
    });
    let mut state = AppState::new(
        backend.clone(),
        metrics,
        config.http.api_key.as_str(),
        &config.http.registry_prefix,
        &config.http.default_image,
    );
    if let (Some(gateway), Some(_)) = (&gateway, &g.proxy_base_url) {
        state = state.with_sandbox_proxy(gateway.clone());
    }
    let app = api::router(state, config.http.max_body_bytes);
    let addr = SocketAddr::new(config.http.bind_address, config.http.server_port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    tracing::info!(%addr, backend = ?config.backend, "runtime API listening");

    let (signalled_tx, mut signalled_rx) = tokio::sync::watch::channel(false);
    if let Some(gateway) = &gateway {
        background.push(gateway.spawn_activity(signalled_rx.clone()));
    }
    if let (Some(gateway), Some(port)) = (gateway, gateway_port) {
        let addr = SocketAddr::new(config.http.bind_address, port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        tracing::info!(%addr, "sandbox gateway listening");
        // Streamed responses are written as head, then body chunks: without TCP_NODELAY the
        // second write waits for the client's delayed ACK (40 ms per small request).
        let listener = listener.tap_io(no_delay);
        let app = gateway.router().into_make_service_with_connect_info::<SocketAddr>();
        let mut signalled = signalled_rx.clone();
        background.push(tokio::spawn(async move {
            let stopped = signalled.clone();
            let served = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = signalled.wait_for(|s| *s).await;
            });
            if let Err(e) = served.await {
                tracing::error!(error = %e, "the sandbox gateway stopped");
            }
            drop(stopped);
        }));
    }
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    // The same for the API port: it also streams sandbox responses with PROXY_BASE_URL.
    let listener = listener.tap_io(no_delay);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown_signal().await;
        tracing::info!("shutdown signal received; finishing in-flight requests");
        let _ = signalled_tx.send(true);
    });
    let grace = Duration::from_secs(config.http.shutdown_timeout_seconds);
    let server = tokio::spawn(async move { server.await });
    tokio::select! {
        result = server => result.map_err(|e| std::io::Error::other(e.to_string()))??,
        _ = async {
            let _ = signalled_rx.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!("in-flight requests did not finish within {grace:?}; exiting anyway"),
    }
    // Stop background work and release the lease before exiting.
    shutdown_tx.send_replace(true);
    for task in background {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    backend.shutdown().await;
    tracing::info!("runtime API stopped");
    Ok(())
}

fn no_delay(tcp: &mut tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail on Unix");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
