//! The environment every sandbox gets: the caller's variables plus what the runtime injects
//! (session key, webhooks, CORS, ports). One pure function, shared by every backend.

use std::collections::BTreeMap;

/// Ports the agent server and its helpers listen on inside the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SandboxPorts {
    pub agent: u16,
    pub vscode: u16,
    pub worker_1: u16,
    pub worker_2: u16,
}

/// What the runtime adds on top of the caller's environment.
#[derive(Debug, Clone, Copy)]
pub struct Injected<'a> {
    pub session_key: &'a str,
    pub app_server_url: Option<&'a str>,
    pub app_server_public_url: Option<&'a str>,
    pub ports: SandboxPorts,
    /// Set in path routing mode so VS Code serves under the runtime's path prefix.
    pub vscode_base_path: Option<&'a str>,
}

/// Names whose values are secrets wherever they appear.
pub const SESSION_KEY_VARS: [&str; 2] = ["SESSION_API_KEY", "OH_SESSION_API_KEYS_0"];

/// Runtime-owned variables, in a fixed order. The caller cannot override them: a caller-supplied
/// `SESSION_API_KEY` would otherwise replace the key the runtime returned to the client.
pub fn injected_environment(inj: &Injected<'_>) -> Vec<(String, String)> {
    let mut env = vec![
        ("SESSION_API_KEY".to_string(), inj.session_key.to_string()),
        ("OH_SESSION_API_KEYS_0".to_string(), inj.session_key.to_string()),
        ("OH_VSCODE_PORT".to_string(), inj.ports.vscode.to_string()),
        ("WORKER_1".to_string(), inj.ports.worker_1.to_string()),
        ("WORKER_2".to_string(), inj.ports.worker_2.to_string()),
    ];
    if let Some(url) = inj.app_server_url {
        env.push((
            "OH_WEBHOOKS_0_BASE_URL".to_string(),
            format!("{}/api/v1/webhooks", url.trim_end_matches('/')),
        ));
    }
    if let Some(origin) = inj.app_server_public_url {
        env.push(("OH_ALLOW_CORS_ORIGINS_0".to_string(), origin.to_string()));
    }
    if let Some(path) = inj.vscode_base_path {
        env.push(("OH_VSCODE_BASE_PATH".to_string(), path.to_string()));
    }
    env
}

/// The full environment: the caller's variables (sorted by name), then the injected ones, with no
/// name twice.
pub fn sandbox_environment(
    caller: &BTreeMap<String, String>,
    inj: &Injected<'_>,
) -> Vec<(String, String)> {
    let injected = injected_environment(inj);
    let mut env: Vec<(String, String)> = caller
        .iter()
        .filter(|(k, _)| !injected.iter().any(|(ik, _)| ik == *k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.extend(injected);
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inj(key: &str) -> Injected<'_> {
        Injected {
            session_key: key,
            app_server_url: Some("https://app.example.com/"),
            app_server_public_url: Some("https://openhands.example.com"),
            ports: SandboxPorts { agent: 60000, vscode: 60001, worker_1: 12000, worker_2: 12001 },
            vscode_base_path: None,
        }
    }

    #[test]
    fn injects_key_webhooks_cors_and_ports() {
        let env: BTreeMap<_, _> =
            sandbox_environment(&BTreeMap::new(), &inj("k")).into_iter().collect();
        assert_eq!(env["SESSION_API_KEY"], "k");
        assert_eq!(env["OH_SESSION_API_KEYS_0"], "k");
        assert_eq!(env["OH_WEBHOOKS_0_BASE_URL"], "https://app.example.com/api/v1/webhooks");
        assert_eq!(env["OH_ALLOW_CORS_ORIGINS_0"], "https://openhands.example.com");
        assert_eq!(env["OH_VSCODE_PORT"], "60001");
        assert_eq!(env["WORKER_1"], "12000");
        assert_eq!(env["WORKER_2"], "12001");
        assert!(!env.contains_key("OH_VSCODE_BASE_PATH"));
    }

    #[test]
    fn caller_cannot_override_the_session_key_and_order_is_deterministic() {
        let caller: BTreeMap<String, String> =
            [("SESSION_API_KEY", "evil"), ("ZED", "1"), ("ALPHA", "2")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let env = sandbox_environment(&caller, &inj("good"));
        let names: Vec<_> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(&names[..3], ["ALPHA", "ZED", "SESSION_API_KEY"]);
        assert_eq!(env.iter().filter(|(k, _)| k == "SESSION_API_KEY").count(), 1);
        assert!(env.contains(&("SESSION_API_KEY".into(), "good".into())));
    }
}
