//! Which runtime and port a gateway request names, and the path it is forwarded with. Pure:
//! the security of the gateway rests on these few functions, so they are tested on hostile input.
//!
//! A request names a runtime by host (`{id}.{base}`, `vscode-{id}.`, `work-1-{id}.`,
//! `work-2-{id}.{base}`; DNS names are case-insensitive and may end in a dot) or by its first path
//! segment (`/{id}/...`, or `/sandbox/{id}/...` on the API port), matched byte for byte: a
//! percent-encoded or differently cased id names no runtime. Paths with dot segments are refused
//! rather than normalised, so the path a client sends is the path the sandbox gets.

use crate::runtime::env::SandboxPorts;

/// A port of the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Agent,
    Vscode,
    Worker1,
    Worker2,
}

impl Port {
    pub fn number(self, ports: SandboxPorts) -> u16 {
        match self {
            Port::Agent => ports.agent,
            Port::Vscode => ports.vscode,
            Port::Worker1 => ports.worker_1,
            Port::Worker2 => ports.worker_2,
        }
    }

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Port::Agent => "agent",
            Port::Vscode => "vscode",
            Port::Worker1 | Port::Worker2 => "worker",
        }
    }
}

/// Where a request goes: the runtime, its port, and the path and query sent to that port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub runtime_id: String,
    pub port: Port,
    pub path_and_query: String,
}

/// Why a request names no runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NotFound(String),
    BadRequest(String),
}

/// Which path shapes a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathStyle {
    /// The gateway: `/{id}`, `/{id}/vscode`, `/{id}/work-1`, `/{id}/work-2`, prefix stripped.
    Prefix,
    /// The original service's proxy on the API port: `/sandbox/{id}` and `/worker1`, `/worker2`
    /// below it, prefix stripped; `/sandbox/{id}/vscode...` forwarded whole (VS Code serves under
    /// that base path).
    Sandbox,
}

/// A runtime id as this service mints them: lower-case letters and digits only.
fn plausible_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The runtime and port a `Host` header names under `base_domain`, if it names one.
pub fn by_host(host: &str, base_domain: &str) -> Option<(String, Port)> {
    let host = host.to_ascii_lowercase();
    // Strip a port; IPv6 literals have no runtime in them.
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host.as_str(),
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    let base = base_domain.to_ascii_lowercase();
    let label = name.strip_suffix(base.trim_end_matches('.'))?.strip_suffix('.')?;
    let (id, port) = if let Some(id) = label.strip_prefix("vscode-") {
        (id, Port::Vscode)
    } else if let Some(id) = label.strip_prefix("work-1-") {
        (id, Port::Worker1)
    } else if let Some(id) = label.strip_prefix("work-2-") {
        (id, Port::Worker2)
    } else {
        (label, Port::Agent)
    };
    plausible_id(id).then(|| (id.to_string(), port))
}

/// Whether a path has `.` or `..` segments, also percent-encoded ones (`%2e`, `.%2E`...): they
/// are refused, never normalised.
pub fn dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        let lowered = segment.to_ascii_lowercase().replace("%2e", ".");
        lowered == "." || lowered == ".."
    })
}

/// The destination a request path names. `path_and_query` is the raw request target (never
/// decoded: `%2F` in an upload path reaches the sandbox as `%2F`).
pub fn by_path(path_and_query: &str, style: PathStyle) -> Result<Destination, Refusal> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    if !path.starts_with('/') {
        return Err(Refusal::BadRequest("the request path must start with /".into()));
    }
    if dot_segment(path) {
        return Err(Refusal::BadRequest(
            "the request path must not contain . or .. segments".into(),
        ));
    }
    let rest = match style {
        PathStyle::Prefix => &path[1..],
        PathStyle::Sandbox => path
            .strip_prefix("/sandbox/")
            .ok_or_else(|| Refusal::NotFound("sandbox paths start with /sandbox/".into()))?,
    };
    let (id, after) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if !plausible_id(id) {
        return Err(Refusal::NotFound(format!("no runtime is named by the path {path:?}")));
    }
    let under = |name: &str| -> Option<&str> {
        let tail = after.strip_prefix('/')?.strip_prefix(name)?;
        (tail.is_empty() || tail.starts_with('/')).then_some(tail)
    };
    let (port, forwarded) = match style {
        PathStyle::Prefix => {
            if let Some(tail) = under("vscode") {
                (Port::Vscode, tail)
            } else if let Some(tail) = under("work-1") {
                (Port::Worker1, tail)
            } else if let Some(tail) = under("work-2") {
                (Port::Worker2, tail)
            } else {
                (Port::Agent, after)
            }
        }
        PathStyle::Sandbox => {
            if under("vscode").is_some() {
                (Port::Vscode, path)
            } else if let Some(tail) = under("worker1") {
                (Port::Worker1, tail)
            } else if let Some(tail) = under("worker2") {
                (Port::Worker2, tail)
            } else {
                (Port::Agent, after)
            }
        }
    };
    let forwarded = if forwarded.is_empty() { "/" } else { forwarded };
    let path_and_query = match query {
        Some(q) => format!("{forwarded}?{q}"),
        None => forwarded.to_string(),
    };
    Ok(Destination { runtime_id: id.to_string(), port, path_and_query })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef";

    fn dest(id: &str, port: Port, path: &str) -> Result<Destination, Refusal> {
        Ok(Destination { runtime_id: id.into(), port, path_and_query: path.into() })
    }

    #[test]
    fn hosts_name_a_runtime_and_port_in_any_dns_spelling() {
        let base = "sb.example.com";
        assert_eq!(by_host(&format!("{A}.sb.example.com"), base), Some((A.into(), Port::Agent)));
        let upper = format!("{}.SB.Example.com.:8081", A.to_uppercase());
        assert_eq!(by_host(&upper, base), Some((A.into(), Port::Agent)));
        assert_eq!(by_host(&format!("vscode-{A}.{base}"), base), Some((A.into(), Port::Vscode)));
        assert_eq!(by_host(&format!("work-2-{A}.{base}"), base), Some((A.into(), Port::Worker2)));
        for hostile in [
            format!("{A}.evil.{base}"),
            format!("{A}%2e{base}"),
            format!("{A}.{base}.evil.com"),
            format!("{A}{base}"),
            format!("x{A}.sb.example.co"),
            base.to_string(),
            format!(".{base}"),
            format!("vscode-.{base}"),
            format!("{A}-.{base}"),
            format!("[::1]:{A}"),
        ] {
            assert_eq!(by_host(&hostile, base), None, "{hostile}");
        }
    }

    #[test]
    fn prefix_paths_strip_the_runtime_and_keep_encoding_and_query() {
        let p = PathStyle::Prefix;
        assert_eq!(by_path(&format!("/{A}"), p), dest(A, Port::Agent, "/"));
        assert_eq!(by_path(&format!("/{A}/"), p), dest(A, Port::Agent, "/"));
        assert_eq!(
            by_path(&format!("/{A}/api/file/upload/%2Ftmp%2Fx?a=1&b=%2F"), p),
            dest(A, Port::Agent, "/api/file/upload/%2Ftmp%2Fx?a=1&b=%2F")
        );
        assert_eq!(by_path(&format!("/{A}?x=1"), p), dest(A, Port::Agent, "/?x=1"));
        assert_eq!(
            by_path(&format!("/{A}/vscode/static/a.js"), p),
            dest(A, Port::Vscode, "/static/a.js")
        );
        assert_eq!(by_path(&format!("/{A}/work-1"), p), dest(A, Port::Worker1, "/"));
        assert_eq!(by_path(&format!("/{A}/work-10"), p), dest(A, Port::Agent, "/work-10"));
    }

    #[test]
    fn sandbox_paths_are_the_original_services() {
        let s = PathStyle::Sandbox;
        assert_eq!(by_path(&format!("/sandbox/{A}/alive"), s), dest(A, Port::Agent, "/alive"));
        assert_eq!(
            by_path(&format!("/sandbox/{A}/vscode/x?tkn=1"), s),
            dest(A, Port::Vscode, &format!("/sandbox/{A}/vscode/x?tkn=1"))
        );
        assert_eq!(by_path(&format!("/sandbox/{A}/worker2/a"), s), dest(A, Port::Worker2, "/a"));
        assert!(matches!(by_path(&format!("/{A}/alive"), s), Err(Refusal::NotFound(_))));
    }

    #[test]
    fn hostile_paths_name_no_runtime() {
        let p = PathStyle::Prefix;
        let upper = A.to_uppercase();
        let encoded = format!("%3{}{}", &A[..1], &A[1..]);
        for not_found in [
            format!("/{upper}/alive"),
            format!("/{encoded}/alive"),
            "/%30123456789abcdef0123456789abcdef/alive".to_string(),
            format!("/{A}%2Falive"),
            "/".to_string(),
            "//x".to_string(),
            format!("/{A}./alive"),
        ] {
            assert!(matches!(by_path(&not_found, p), Err(Refusal::NotFound(_))), "{not_found}");
        }
        for bad in [
            format!("/{A}/../other/alive"),
            format!("/{A}/%2e%2E/other"),
            format!("/{A}/.%2e"),
            format!("/../{A}/alive"),
            format!("/{A}/./alive"),
            "*".to_string(),
        ] {
            assert!(matches!(by_path(&bad, p), Err(Refusal::BadRequest(_))), "{bad}");
        }
    }
}
