//! Starting, probing and stopping one agent server process. The command line and environment are
//! built by pure functions; the rest is thin glue over the OS.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use super::record::{self, RuntimeDir};
use crate::runtime::env::SandboxPorts;

/// Variables of the service's own environment a sandbox process inherits. Everything else,
/// notably the service's `API_KEY`, stays out of the sandbox.
const INHERITED_VARS: [&str; 10] = [
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TERM",
    "TMPDIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "VIRTUAL_ENV",
];

/// The shell command for one runtime: the operator's template with its placeholders filled in.
pub fn render_command(
    template: &str,
    ports: SandboxPorts,
    runtime_id: &str,
    workdir: &Path,
) -> String {
    template
        .replace("{port}", &ports.agent.to_string())
        .replace("{vscode_port}", &ports.vscode.to_string())
        .replace("{worker_1_port}", &ports.worker_1.to_string())
        .replace("{worker_2_port}", &ports.worker_2.to_string())
        .replace("{runtime_id}", runtime_id)
        .replace("{workdir}", &shell_quote(&workdir.to_string_lossy()))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The process environment: a few inherited basics, a private HOME, then the sandbox environment.
pub fn process_environment(
    inherited: impl Fn(&str) -> Option<String>,
    home: &Path,
    sandbox: &[(String, String)],
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = INHERITED_VARS
        .iter()
        .filter_map(|name| inherited(name).map(|v| (name.to_string(), v)))
        .collect();
    env.insert("HOME".into(), home.to_string_lossy().into_owned());
    env.extend(sandbox.iter().cloned());
    env
}

/// Starts the agent server in its own process group (so stopping it also stops what it spawned),
/// with output appended to the runtime's log and its runtime directory in [`record::MARKER_VAR`].
pub fn spawn(
    command: &str,
    dir: &RuntimeDir,
    env: &BTreeMap<String, String>,
) -> std::io::Result<tokio::process::Child> {
    std::fs::create_dir_all(dir.workspace())?;
    std::fs::create_dir_all(dir.home())?;
    let log = record::private_file(&dir.log(), false)?;
    tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("exec {command}"))
        .current_dir(dir.workspace())
        .env_clear()
        .envs(env)
        // Last, so the caller's environment cannot change it.
        .env(record::MARKER_VAR, &dir.0)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
}

/// Sends `signal` to the process group led by `pid`.
pub fn signal_group(pid: u32, signal: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(pid) else { return };
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid addresses the group.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// Four distinct free loopback ports, none of them in `taken`.
pub fn free_ports(taken: &[u16]) -> std::io::Result<SandboxPorts> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..64 {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let port = listener.local_addr()?.port();
        held.push(listener);
        if !taken.contains(&port) && !ports.contains(&port) {
            ports.push(port);
            if ports.len() == 4 {
                return Ok(SandboxPorts {
                    agent: ports[0],
                    vscode: ports[1],
                    worker_1: ports[2],
                    worker_2: ports[3],
                });
            }
        }
    }
    Err(std::io::Error::other("could not find four free loopback ports"))
}

/// The first of `ports` something else already listens on, if any.
pub fn port_in_use(ports: SandboxPorts) -> Option<u16> {
    [ports.agent, ports.vscode, ports.worker_1, ports.worker_2]
        .into_iter()
        .find(|p| TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, *p))).is_err())
}

/// Whether `program` (the first word of the agent command) can be executed here.
pub fn command_exists(template: &str, path_var: Option<&str>) -> bool {
    let Some(program) = template.split_whitespace().next() else { return false };
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
    };
    if program.contains('/') {
        return executable(Path::new(program));
    }
    path_var
        .unwrap_or_default()
        .split(':')
        .filter(|d| !d.is_empty())
        .any(|dir| executable(&Path::new(dir).join(program)))
}

/// Probes `GET http://127.0.0.1:{port}/alive`, the agent server's liveness endpoint.
#[derive(Clone)]
pub struct Prober {
    client: reqwest::Client,
}

impl Prober {
    /// A client for loopback probes only: no proxy from the environment, a short timeout.
    pub fn new() -> reqwest::Result<Prober> {
        let client =
            reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(2)).build()?;
        Ok(Prober { client })
    }

    pub async fn alive(&self, port: u16) -> bool {
        let url = format!("http://127.0.0.1:{port}/alive");
        matches!(self.client.get(url).send().await, Ok(resp) if resp.status().is_success())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORTS: SandboxPorts = SandboxPorts { agent: 1, vscode: 2, worker_1: 3, worker_2: 4 };

    #[test]
    fn renders_every_placeholder() {
        let cmd = render_command(
            "agent --port {port} --vs {vscode_port} {worker_1_port} {worker_2_port} {runtime_id} {workdir}",
            PORTS,
            "abc",
            Path::new("/tmp/it's"),
        );
        assert_eq!(cmd, r"agent --port 1 --vs 2 3 4 abc '/tmp/it'\''s'");
    }

    #[test]
    fn the_service_api_key_never_reaches_the_sandbox() {
        let inherited = |name: &str| match name {
            "PATH" => Some("/bin".to_string()),
            "API_KEY" => Some("service-secret".to_string()),
            _ => None,
        };
        let env = process_environment(
            inherited,
            Path::new("/h"),
            &[("SESSION_API_KEY".into(), "k".into())],
        );
        assert_eq!(env.get("PATH").map(String::as_str), Some("/bin"));
        assert_eq!(env.get("HOME").map(String::as_str), Some("/h"));
        assert_eq!(env.get("SESSION_API_KEY").map(String::as_str), Some("k"));
        assert!(!env.contains_key("API_KEY"));
    }

    #[test]
    fn free_ports_are_distinct_and_avoid_taken_ones() {
        let first = free_ports(&[]).unwrap();
        let taken = [first.agent, first.vscode, first.worker_1, first.worker_2];
        let second = free_ports(&taken).unwrap();
        for p in [second.agent, second.vscode, second.worker_1, second.worker_2] {
            assert!(!taken.contains(&p));
        }
        assert_eq!(port_in_use(second), None);
    }

    #[test]
    fn finds_commands_on_path_or_by_absolute_path() {
        assert!(command_exists("sh -c true", Some("/usr/bin:/bin")));
        assert!(command_exists("/bin/sh --port {port}", None));
        assert!(!command_exists(
            "definitely-not-a-command-xyz --port {port}",
            Some("/usr/bin:/bin")
        ));
    }
}
