//! Late binding: what a dormant agent server is started with, and the `/api/init` request that
//! turns it into a user's runtime. The contract is the agent server's `init_router.py`
//! (`openhands-agent-server` with `OH_DEFERRED_INIT=true`): `POST /api/init` with the header
//! `X-Init-API-Key` (checked against the dormant server's `OH_SECRET_KEY`) and a body of
//! per-user settings, `GET /api/init` -> `{"state": "dormant" | "initializing" | "ready"}`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::runtime::env::{Injected, SandboxPorts, sandbox_environment};

/// The header `POST /api/init` authenticates with.
pub const INIT_KEY_HEADER: &str = "X-Init-API-Key";
/// How long a claim waits for `POST /api/init` (it took ~30 ms on the process backend).
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The environment of a dormant member: deferred init, its init key, and the ports and VS Code
/// path it serves on (those are fixed when it starts). No session key, no caller variables.
pub fn dormant_environment(
    init_key: &str,
    ports: SandboxPorts,
    vscode_base_path: Option<&str>,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("OH_DEFERRED_INIT".to_string(), "true".to_string()),
        ("OH_SECRET_KEY".to_string(), init_key.to_string()),
        ("OH_VSCODE_PORT".to_string(), ports.vscode.to_string()),
        ("WORKER_1".to_string(), ports.worker_1.to_string()),
        ("WORKER_2".to_string(), ports.worker_2.to_string()),
    ];
    if let Some(path) = vscode_base_path {
        env.push(("OH_VSCODE_BASE_PATH".to_string(), path.to_string()));
    }
    env
}

/// The `POST /api/init` body that gives a dormant server what a cold start would have had in its
/// environment: the session key (also as the secret key, the agent server's default), the
/// caller's variables and the injected ones (so commands see the same environment), the webhook
/// to `APP_SERVER_URL` and CORS for `APP_SERVER_PUBLIC_URL`. The init key is replaced by the
/// session key (`OH_SECRET_KEY`), so nothing inside the sandbox holds it afterwards.
pub fn init_body(caller: &BTreeMap<String, String>, injected: &Injected<'_>) -> serde_json::Value {
    let mut env: BTreeMap<String, String> =
        sandbox_environment(caller, injected).into_iter().collect();
    env.insert("OH_SECRET_KEY".into(), injected.session_key.into());
    env.insert("OH_DEFERRED_INIT".into(), "false".into());
    let mut body = json!({
        "session_api_keys": [injected.session_key],
        "secret_key": injected.session_key,
        "env": env,
    });
    if let Some(url) = injected.app_server_url {
        body["webhooks"] =
            json!([{ "base_url": format!("{}/api/v1/webhooks", url.trim_end_matches('/')) }]);
    }
    if let Some(origin) = injected.app_server_public_url {
        body["allow_cors_origins"] = json!([origin]);
    }
    body
}

/// `GET /api/init`'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitState {
    Dormant,
    Initializing,
    Ready,
}

#[derive(Deserialize)]
struct InitStatus {
    state: InitState,
}

/// Talks to dormant agent servers. Errors never carry the request body (it holds secrets).
#[derive(Clone)]
pub struct InitClient {
    client: reqwest::Client,
}

impl InitClient {
    pub fn new() -> reqwest::Result<InitClient> {
        let client = reqwest::Client::builder().no_proxy().timeout(INIT_TIMEOUT).build()?;
        Ok(InitClient { client })
    }

    /// The member's state, or `None` when it does not answer (still booting, or gone).
    pub async fn state(&self, agent_url: &str) -> Option<InitState> {
        let url = format!("{}/api/init", agent_url.trim_end_matches('/'));
        let resp = self.client.get(url).timeout(Duration::from_secs(2)).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json::<InitStatus>().await.ok().map(|s| s.state)
    }

    /// Delivers `body`; `Ok` once the server says `ready`.
    pub async fn initialize(
        &self,
        agent_url: &str,
        init_key: &str,
        body: &serde_json::Value,
    ) -> Result<(), String> {
        let url = format!("{}/api/init", agent_url.trim_end_matches('/'));
        let resp = self
            .client
            .post(url)
            .header(INIT_KEY_HEADER, init_key)
            .json(body)
            .send()
            .await
            .map_err(|e| format!("POST /api/init failed: {}", e.without_url()))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("POST /api/init answered {status}"));
        }
        match resp.json::<InitStatus>().await {
            Ok(InitStatus { state: InitState::Ready }) => Ok(()),
            Ok(InitStatus { state }) => Err(format!("POST /api/init left the server {state:?}")),
            Err(e) => {
                Err(format!("POST /api/init answered an unreadable body: {}", e.without_url()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORTS: SandboxPorts = SandboxPorts { agent: 1, vscode: 2, worker_1: 3, worker_2: 4 };

    #[test]
    fn the_init_body_carries_what_a_cold_start_sets() {
        let caller: BTreeMap<String, String> =
            [("GITHUB_TOKEN".to_string(), "gh".to_string())].into_iter().collect();
        let inj = Injected {
            session_key: "sk",
            app_server_url: Some("http://app/"),
            app_server_public_url: Some("https://ui"),
            ports: PORTS,
            vscode_base_path: None,
        };
        let body = init_body(&caller, &inj);
        assert_eq!(body["session_api_keys"], json!(["sk"]));
        assert_eq!(body["secret_key"], "sk");
        assert_eq!(body["env"]["GITHUB_TOKEN"], "gh");
        assert_eq!(body["env"]["SESSION_API_KEY"], "sk");
        assert_eq!(body["env"]["OH_SECRET_KEY"], "sk");
        assert_eq!(body["env"]["OH_DEFERRED_INIT"], "false");
        assert_eq!(body["webhooks"], json!([{ "base_url": "http://app/api/v1/webhooks" }]));
        assert_eq!(body["allow_cors_origins"], json!(["https://ui"]));
        let bare = init_body(
            &BTreeMap::new(),
            &Injected { app_server_url: None, app_server_public_url: None, ..inj },
        );
        assert!(bare.get("webhooks").is_none() && bare.get("allow_cors_origins").is_none());
    }

    #[test]
    fn a_dormant_member_holds_its_init_key_and_no_session_key() {
        let env: BTreeMap<_, _> =
            dormant_environment("ik", PORTS, Some("/rt/vscode")).into_iter().collect();
        assert_eq!(env["OH_DEFERRED_INIT"], "true");
        assert_eq!(env["OH_SECRET_KEY"], "ik");
        assert_eq!(env["OH_VSCODE_PORT"], "2");
        assert_eq!(env["OH_VSCODE_BASE_PATH"], "/rt/vscode");
        assert!(!env.contains_key("SESSION_API_KEY") && !env.contains_key("OH_SESSION_API_KEYS_0"));
    }

    #[test]
    fn init_states_parse() {
        let s: InitStatus = serde_json::from_str(r#"{"state":"dormant","error":null}"#).unwrap();
        assert_eq!(s.state, InitState::Dormant);
        let s: InitStatus = serde_json::from_str(r#"{"state":"ready"}"#).unwrap();
        assert_eq!(s.state, InitState::Ready);
    }
}
