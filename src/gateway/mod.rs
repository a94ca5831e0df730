//! The sandbox gateway: one route for every sandbox. Requests name a runtime by host or path
//! ([`route`]); the gateway finds its address in the backend's cache, wakes it if it is paused
//! (one resume however many requests wait), and forwards over a keep-alive pool with streamed
//! bodies and WebSocket upgrades (hyper does all the HTTP; bytes after an upgrade are copied
//! as they are). It serves its own port in `ROUTING_MODE=gateway`, and the original service's
//! `/sandbox/{id}/...` on the API port when `PROXY_BASE_URL` is set.

pub mod activity;
pub mod headers;
pub mod route;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

use self::activity::{Activity, Open};
use self::route::{Destination, PathStyle, Refusal};
use crate::api::error::ApiError;
use crate::backend::locks::KeyedLocks;
use crate::runtime::env::SandboxPorts;
use crate::runtime::{Backend, Status};
use crate::telemetry::{DirectionLabels, GatewayLabels, GatewayMetrics, OutcomeLabels};

/// How often a waiting request looks at the runtime again.
const POLL: Duration = Duration::from_millis(50);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Seconds a client is told to wait after a wake took too long.
const WAKE_RETRY_AFTER: &str = "5";

#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub base_domain: String,
    /// The service's own key: never forwarded.
    pub api_key: String,
    pub wake_timeout: Duration,
    pub upstream_timeout: Duration,
    pub max_connections_per_runtime: usize,
    pub activity_interval: Duration,
}

#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<dyn Backend>,
    metrics: GatewayMetrics,
    settings: GatewaySettings,
    client: Client<HttpConnector, Body>,
    wake_locks: KeyedLocks,
    activity: Arc<Activity>,
}

/// A refusal as the client sees it: the API's JSON error, maybe with `Retry-After`.
fn refuse(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    ApiError::new(status, code, message).into_response()
}

impl Gateway {
    pub fn new(
        backend: Arc<dyn Backend>,
        metrics: GatewayMetrics,
        settings: GatewaySettings,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(32)
            .build(connector);
        let activity = Activity::new(
            backend.clone(),
            settings.activity_interval,
            settings.max_connections_per_runtime,
        );
        Gateway {
            inner: Arc::new(Inner {
                backend,
                metrics,
                settings,
                client,
                wake_locks: KeyedLocks::default(),
                activity,
            }),
        }
    }

    /// The gateway port: every request is a sandbox's, named by host or by path prefix.
    pub fn router(self) -> Router {
        Router::new()
            .fallback(serve_gateway)
            .layer(axum::middleware::from_fn(crate::api::limit_request_head))
            .with_state(self)
    }

    /// Keeps the shared activity of runtimes with open requests fresh until `shutdown`.
    pub fn spawn_activity(
        &self,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.inner.activity.clone().run(shutdown))
    }

    /// Forwards a request that names its runtime by path (`style`).
    pub async fn serve_path(&self, req: Request, style: PathStyle) -> Response {
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
        match route::by_path(&target, style) {
            Ok(dest) => self.forward(dest, req).await,
            Err(refusal) => self.refused(refusal),
        }
    }

    fn refused(&self, refusal: Refusal) -> Response {
        let response = match refusal {
            Refusal::NotFound(m) => refuse(StatusCode::NOT_FOUND, "not_found", m),
            Refusal::BadRequest(m) => refuse(StatusCode::BAD_REQUEST, "bad_request", m),
        };
        self.count("none", response.status());
        response
    }

    fn count(&self, port: &'static str, code: StatusCode) {
        let labels = GatewayLabels { port, code: code.as_u16() };
        self.inner.metrics.requests.get_or_create(&labels).inc();
    }

    async fn forward(&self, dest: Destination, req: Request) -> Response {
        let port = dest.port.label();
        let response = match self.try_forward(dest, req).await {
            Ok(response) | Err(response) => response,
        };
        self.count(port, response.status());
        response
    }

    async fn try_forward(&self, dest: Destination, mut req: Request) -> Result<Response, Response> {
        let (address, ports) = self.ready(&dest.runtime_id).await?;
        let open = self.inner.activity.begin(&dest.runtime_id).ok_or_else(|| {
            refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_connections",
                format!(
                    "runtime {} has {} requests open through the gateway",
                    dest.runtime_id, self.inner.settings.max_connections_per_runtime
                ),
            )
        })?;
        let upstream = SocketAddr::new(address, dest.port.number(ports));
        let client_ip = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let upgrade = headers::is_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let uri: Uri =
            format!("http://{upstream}{}", dest.path_and_query).parse().map_err(|_| {
                refuse(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "the request target cannot be forwarded",
                )
            })?;
        let mut forwarded = http::Request::builder()
            .method(parts.method)
            .uri(uri)
            .version(Version::HTTP_11)
            .body(Body::new(self.counted(body, "request", None)))
            .map_err(|_| {
                refuse(StatusCode::BAD_REQUEST, "bad_request", "the request cannot be forwarded")
            })?;
        *forwarded.headers_mut() = headers::upstream_request(
            &parts.headers,
            client_ip,
            self.inner.settings.api_key.as_bytes(),
            upgrade,
        );
        let sent = Instant::now();
        let answer = tokio::time::timeout(
            self.inner.settings.upstream_timeout,
            self.inner.client.request(forwarded),
        )
        .await;
        self.inner.metrics.upstream_latency.observe(sent.elapsed().as_secs_f64());
        let mut response = match answer {
            Err(_) => {
                return Err(refuse(
                    StatusCode::GATEWAY_TIMEOUT,
                    "gateway_timeout",
                    format!(
                        "runtime {} did not answer within {}s",
                        dest.runtime_id,
                        self.inner.settings.upstream_timeout.as_secs()
                    ),
                ));
            }
            Ok(Err(e)) => {
                tracing::warn!(runtime_id = %dest.runtime_id, error = %e, connect = e.is_connect(), "sandbox did not answer");
                let what =
                    if e.is_connect() { "refused the connection" } else { "closed the connection" };
                return Err(refuse(
                    StatusCode::BAD_GATEWAY,
                    "bad_gateway",
                    format!("runtime {} {what}", dest.runtime_id),
                ));
            }
            Ok(Ok(response)) => response,
        };
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        let headers = headers::downstream_response(response.headers(), switching && upgrade);
        if let (true, Some(client_upgrade)) = (switching, client_upgrade) {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            let gauge = self.inner.metrics.open_websockets.clone();
            let id = dest.runtime_id.clone();
            tokio::spawn(async move {
                let _open = open;
                let (client, upstream) = match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok(both) => both,
                    Err(e) => {
                        tracing::debug!(runtime_id = %id, error = %e, "upgrade failed");
                        return;
                    }
                };
                gauge.inc();
                let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                let copied = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                gauge.dec();
                if let Err(e) = copied {
                    tracing::debug!(runtime_id = %id, error = %e, "WebSocket tunnel ended");
                }
            });
            let mut out = Response::new(Body::empty());
            *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            *out.headers_mut() = headers;
            return Ok(out);
        }
        let (mut parts, body) = response.into_parts();
        parts.headers = headers;
        Ok(Response::from_parts(parts, Body::new(self.counted(body, "response", Some(open)))))
    }

    /// A body that counts its bytes as it streams, holding `open` until it is dropped.
    fn counted<B>(
        &self,
        body: B,
        direction: &'static str,
        open: Option<Open>,
    ) -> impl http_body::Body<Data = bytes::Bytes, Error = B::Error> + Send + 'static
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    {
        let counter =
            self.inner.metrics.bytes.get_or_create(&DirectionLabels { direction }).clone();
        body.map_frame(move |frame| {
            let _held = &open;
            if let Some(data) = frame.data_ref() {
                counter.inc_by(data.len() as u64);
            }
            frame
        })
    }

    /// Waits until the runtime's agent answers, waking it if it is paused; the refusal otherwise.
    async fn ready(&self, runtime_id: &str) -> Result<(IpAddr, SandboxPorts), Response> {
        let started = Instant::now();
        let deadline = started + self.inner.settings.wake_timeout;
        let mut woke = false;
        loop {
            let Some(target) = self.inner.backend.route(runtime_id) else {
                return Err(refuse(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("runtime {runtime_id} not found"),
                ));
            };
            match target.status {
                Status::Running => {
                    if let Some(address) = target.address {
                        if woke {
                            self.inner
                                .metrics
                                .wake_duration
                                .observe(started.elapsed().as_secs_f64());
                        }
                        return Ok((address, target.ports));
                    }
                }
                Status::Stopped => {
                    return Err(refuse(
                        StatusCode::NOT_FOUND,
                        "not_found",
                        format!("runtime {runtime_id} is stopped"),
                    ));
                }
                Status::Error => {
                    let detail =
                        target.status_detail.unwrap_or_else(|| "the runtime failed".into());
                    return Err(refuse(
                        StatusCode::BAD_GATEWAY,
                        "bad_gateway",
                        format!("runtime {runtime_id} is in error: {detail}"),
                    ));
                }
                Status::Paused => woke |= self.wake(runtime_id).await?,
                Status::Starting => {}
            }
            let now = Instant::now();
            if now >= deadline {
                let mut response = refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    format!(
                        "runtime {runtime_id} is still starting after {}s; retry later",
                        self.inner.settings.wake_timeout.as_secs()
                    ),
                );
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static(WAKE_RETRY_AFTER));
                return Err(response);
            }
            tokio::time::sleep(POLL.min(deadline - now)).await;
        }
    }

    /// Resumes a paused runtime once: concurrent requests queue on its lock and find it resumed.
    /// Across replicas the backend's resume decides (Kubernetes: a conditional write of the
    /// record). Whether this call resumed it.
    async fn wake(&self, runtime_id: &str) -> Result<bool, Response> {
        let _one_at_a_time = self.inner.wake_locks.lock(runtime_id).await;
        let still_paused =
            self.inner.backend.route(runtime_id).is_some_and(|t| t.status == Status::Paused);
        if !still_paused {
            return Ok(false);
        }
        tracing::info!(runtime_id, "waking a paused runtime for a gateway request");
        let result = self.inner.backend.resume(runtime_id).await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.inner.metrics.wakes.get_or_create(&OutcomeLabels { outcome }).inc();
        match result {
            Ok(_) => Ok(true),
            Err(e) => Err(ApiError::from(e).into_response()),
        }
    }
}

/// The gateway port's only handler: by host when the host is a sandbox's, else by path.
async fn serve_gateway(State(gateway): State<Gateway>, req: Request) -> Response {
    let host = req
        .uri()
        .host()
        .map(str::to_string)
        .or_else(|| req.headers().get(http::header::HOST)?.to_str().ok().map(str::to_string));
    let named = host.and_then(|h| route::by_host(&h, &gateway.inner.settings.base_domain));
    match named {
        Some((runtime_id, port)) => {
            let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
            if !path_and_query.starts_with('/') || route::dot_segment(req.uri().path()) {
                let why = "the request path must start with / and have no . or .. segments";
                return gateway.refused(Refusal::BadRequest(why.into()));
            }
            gateway.forward(Destination { runtime_id, port, path_and_query }, req).await
        }
        None => gateway.serve_path(req, PathStyle::Prefix).await,
    }
}
