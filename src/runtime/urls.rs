//! Where clients reach a runtime: the `url`, `vscode_url` and `work_hosts` of the runtime object,
//! from the routing settings alone. Pure, shared by both backends and by the gateway, which must
//! accept exactly the shapes handed out here.

use std::collections::BTreeMap;

use super::env::SandboxPorts;

/// The shape of runtime URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlStyle {
    /// The backend's own addresses (the process backend's loopback ports).
    Direct,
    /// `{scheme}://{id}.{base}`, `vscode-{id}.`, `work-1-{id}.`, `work-2-{id}.{base}`.
    Subdomain { scheme: String, base_domain: String },
    /// `{base}/{id}`, with `/vscode`, `/work-1`, `/work-2` below it.
    Prefix { base: String },
    /// The original service's `{base}/sandbox/{id}`, with `/vscode`, `/worker1`, `/worker2`.
    Sandbox { base: String },
    /// `http://{SERVICE_PREFIX}{id}.{namespace}.svc.cluster.local:{port}`: the sandbox's own
    /// Service, each port its own URL, for clients inside the cluster.
    ClusterService { namespace: String },
}

/// A Kubernetes runtime's Service is named `{SERVICE_PREFIX}{runtime_id}` (the backend's record
/// module checks that it names them so).
pub const SERVICE_PREFIX: &str = "oh-rt-";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Urls {
    pub url: String,
    pub vscode_url: String,
    pub work_hosts: BTreeMap<String, u16>,
}

/// The URLs of one runtime, or `None` for [`UrlStyle::Direct`] (the backend knows them).
pub fn urls(style: &UrlStyle, runtime_id: &str, ports: SandboxPorts) -> Option<Urls> {
    let at = |suffix: &str| -> Option<String> {
        Some(match style {
            UrlStyle::Direct => return None,
            UrlStyle::ClusterService { namespace } => {
                let port = match suffix {
                    "vscode" => ports.vscode,
                    "work-1" => ports.worker_1,
                    "work-2" => ports.worker_2,
                    _ => ports.agent,
                };
                format!("http://{SERVICE_PREFIX}{runtime_id}.{namespace}.svc.cluster.local:{port}")
            }
            UrlStyle::Subdomain { scheme, base_domain } if suffix.is_empty() => {
                format!("{scheme}://{runtime_id}.{base_domain}")
            }
            UrlStyle::Subdomain { scheme, base_domain } => {
                format!("{scheme}://{suffix}-{runtime_id}.{base_domain}")
            }
            UrlStyle::Prefix { base } | UrlStyle::Sandbox { base } => {
                let base = base.trim_end_matches('/');
                let root = match style {
                    UrlStyle::Sandbox { .. } => format!("{base}/sandbox/{runtime_id}"),
                    _ => format!("{base}/{runtime_id}"),
                };
                let suffix = match (style, suffix) {
                    (UrlStyle::Sandbox { .. }, "work-1") => "worker1",
                    (UrlStyle::Sandbox { .. }, "work-2") => "worker2",
                    (_, s) => s,
                };
                if suffix.is_empty() { root } else { format!("{root}/{suffix}") }
            }
        })
    };
    Some(Urls {
        url: at("")?,
        vscode_url: at("vscode")?,
        work_hosts: [(at("work-1")?, ports.worker_1), (at("work-2")?, ports.worker_2)]
            .into_iter()
            .collect(),
    })
}

/// Where VS Code serves when its URL has a path: the agent server sets it up from
/// `OH_VSCODE_BASE_PATH`.
pub fn vscode_base_path(style: &UrlStyle, runtime_id: &str) -> Option<String> {
    match style {
        UrlStyle::Prefix { .. } => Some(format!("/{runtime_id}/vscode")),
        UrlStyle::Sandbox { .. } => Some(format!("/sandbox/{runtime_id}/vscode")),
        UrlStyle::Direct | UrlStyle::Subdomain { .. } | UrlStyle::ClusterService { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORTS: SandboxPorts = SandboxPorts { agent: 1, vscode: 2, worker_1: 3, worker_2: 4 };

    #[test]
    fn each_style_has_its_shape() {
        assert_eq!(urls(&UrlStyle::Direct, "abc", PORTS), None);
        let sub = UrlStyle::Subdomain { scheme: "https".into(), base_domain: "s.example".into() };
        let u = urls(&sub, "abc", PORTS).unwrap();
        assert_eq!(u.url, "https://abc.s.example");
        assert_eq!(u.vscode_url, "https://vscode-abc.s.example");
        assert_eq!(u.work_hosts["https://work-2-abc.s.example"], 4);
        let prefix = UrlStyle::Prefix { base: "http://127.0.0.1:8081/".into() };
        let u = urls(&prefix, "abc", PORTS).unwrap();
        assert_eq!(u.url, "http://127.0.0.1:8081/abc");
        assert_eq!(u.vscode_url, "http://127.0.0.1:8081/abc/vscode");
        assert_eq!(u.work_hosts["http://127.0.0.1:8081/abc/work-1"], 3);
        let sandbox = UrlStyle::Sandbox { base: "https://api.example".into() };
        let u = urls(&sandbox, "abc", PORTS).unwrap();
        assert_eq!(u.url, "https://api.example/sandbox/abc");
        assert_eq!(u.vscode_url, "https://api.example/sandbox/abc/vscode");
        assert_eq!(u.work_hosts["https://api.example/sandbox/abc/worker2"], 4);
        assert_eq!(vscode_base_path(&sandbox, "abc").as_deref(), Some("/sandbox/abc/vscode"));
        assert_eq!(vscode_base_path(&sub, "abc"), None);
        let service = UrlStyle::ClusterService { namespace: "sb".into() };
        let u = urls(&service, "abc", PORTS).unwrap();
        assert_eq!(u.url, "http://oh-rt-abc.sb.svc.cluster.local:1");
        assert_eq!(u.vscode_url, "http://oh-rt-abc.sb.svc.cluster.local:2");
        assert_eq!(u.work_hosts["http://oh-rt-abc.sb.svc.cluster.local:4"], 4);
        assert_eq!(vscode_base_path(&service, "abc"), None);
    }
}
