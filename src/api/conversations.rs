//! `POST /sessions/batch-conversations`: the conversations of many sandboxes in one call (the
//! original service's endpoint, used to list conversations without one proxied call per
//! sandbox). Each running sandbox's agent server is asked `GET /api/conversations?ids=...` with
//! its session key, a few at a time and each within [`CALL_TIMEOUT`]; its JSON is passed through.
//! A sandbox that is unknown, not running (a paused one is never woken) or does not answer
//! gets `[]`.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::Instrument;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::types::ApiJson;
use crate::runtime::spec::{validate_runtime_id, validate_session_id};
use crate::runtime::{AgentEndpoint, Backend, BackendResult};

/// Longest wait for one agent server.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Agent servers asked at once.
pub const CONCURRENCY: usize = 16;
/// Sandboxes in one request (the app server asks for one page of conversations).
pub const MAX_SANDBOXES: usize = 1000;
/// Conversation ids per sandbox: the agent server answers at most 99 at a time.
pub const MAX_CONVERSATIONS: usize = 99;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct BatchConversationsRequest {
    /// Runtime id -> what to ask its agent server.
    pub sandboxes: BTreeMap<String, SandboxConversations>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SandboxConversations {
    /// Used to find the runtime when the runtime id is unknown.
    #[serde(default)]
    pub session_id: String,
    #[serde(default)]
    pub conversation_ids: Vec<String>,
}

/// `{runtime_id: <the agent server's answer, or []>}` for every sandbox asked about.
#[utoipa::path(post, path = "/sessions/batch-conversations", tag = "sessions",
    request_body = BatchConversationsRequest,
    responses(
        (status = 200, description = "Runtime id -> the agent server's `GET /api/conversations?ids=...` answer, or `[]` for a sandbox that is unknown, not running (never woken) or silent", body = Object),
        (status = 400, description = "Invalid request (too many sandboxes or conversation ids)", body = ErrorBody),
        (status = 401, description = "Missing or wrong X-API-Key", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 500, description = "Internal failure", body = ErrorBody),
        (status = 503, description = "The backend cannot be reached, or its caches are not complete yet", body = ErrorBody),
    ))]
pub async fn batch_conversations(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<BatchConversationsRequest>,
) -> Result<Json<BTreeMap<String, Value>>, ApiError> {
    if req.sandboxes.len() > MAX_SANDBOXES {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_SANDBOXES} sandboxes per request, got {}",
            req.sandboxes.len()
        )));
    }
    if let Some((id, s)) =
        req.sandboxes.iter().find(|(_, s)| s.conversation_ids.len() > MAX_CONVERSATIONS)
    {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_CONVERSATIONS} conversation_ids per sandbox, got {} for {id}",
            s.conversation_ids.len()
        )));
    }
    let http = agent_client()?;
    let answers = futures::stream::iter(req.sandboxes)
        .map(|(runtime_id, sandbox)| {
            let backend = &*state.backend;
            async move {
                let endpoint = find(backend, &runtime_id, &sandbox.session_id).await?;
                let answer = match endpoint {
                    Some(agent) if !sandbox.conversation_ids.is_empty() => {
                        let span = tracing::info_span!(
                            "agent conversations",
                            otel.kind = "client",
                            runtime_id = %agent.runtime_id,
                        );
                        conversations(http, &agent, &sandbox.conversation_ids)
                            .instrument(span)
                            .await
                    }
                    _ => json!([]),
                };
                Ok::<_, ApiError>((runtime_id, answer))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    Ok(Json(answers.into_iter().collect::<Result<_, _>>()?))
}

/// The agent server of a running runtime, by runtime id, else by session id (as the original
/// looks them up). Ids that cannot exist are unknown runtimes, not errors.
async fn find(
    backend: &dyn Backend,
    runtime_id: &str,
    session_id: &str,
) -> BackendResult<Option<AgentEndpoint>> {
    if validate_runtime_id(runtime_id).is_ok() && backend.get(runtime_id).await?.is_some() {
        return backend.agent_endpoint(runtime_id).await;
    }
    if session_id.is_empty() || validate_session_id(session_id).is_err() {
        return Ok(None);
    }
    match backend.get_by_session(session_id).await? {
        Some(runtime) => backend.agent_endpoint(&runtime.runtime_id).await,
        None => Ok(None),
    }
}

/// `GET {agent}/api/conversations?ids=a&ids=b` with the session key and the trace context;
/// anything but a JSON 200 within [`CALL_TIMEOUT`] is `[]`.
async fn conversations(http: &reqwest::Client, agent: &AgentEndpoint, ids: &[String]) -> Value {
    let url = format!("{}/api/conversations", agent.url.trim_end_matches('/'));
    let query: Vec<(&str, &str)> = ids.iter().map(|id| ("ids", id.as_str())).collect();
    let request = http
        .get(url)
        .query(&query)
        .headers(crate::telemetry::agent_headers(&agent.runtime_id, &agent.session_id))
        .header("X-Session-API-Key", &agent.session_api_key);
    let answer = async {
        let response = request.send().await?.error_for_status()?;
        response.json::<Value>().await
    };
    match answer.await {
        Ok(value) => value,
        Err(e) => {
            tracing::debug!(runtime_id = %agent.runtime_id, error = %e, "no conversations from the agent server");
            json!([])
        }
    }
}

/// One client for every agent server: no proxy (agent servers are on loopback or inside the
/// cluster), each call bounded by [`CALL_TIMEOUT`].
fn agent_client() -> Result<&'static reqwest::Client, ApiError> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(client) = CLIENT.get() {
        return Ok(client);
    }
    let client =
        reqwest::Client::builder().no_proxy().timeout(CALL_TIMEOUT).build().map_err(|e| {
            let message = format!("cannot build the agent HTTP client: {e}");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
        })?;
    Ok(CLIENT.get_or_init(|| client))
}
