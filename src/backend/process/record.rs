//! What the process backend persists per runtime, under `STATE_DIR/runtimes/{id}/`, so that a
//! restarted service knows every runtime it had, paused ones included.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::runtime::RuntimeSpec;
use crate::runtime::env::SandboxPorts;

pub const RECORD_FILE: &str = "record.json";
pub const LOG_FILE: &str = "agent.log";
pub const WORKSPACE_DIR: &str = "workspace";
pub const HOME_DIR: &str = "home";
pub const TEMP_RECORD_FILE: &str = ".record.json.tmp";
/// Set in every agent server's environment to its runtime directory: how a restarted service
/// finds each agent process of its state directory, whatever the records say.
pub const MARKER_VAR: &str = "RUNTIME_API_RUNTIME_DIR";
/// Records hold the session key and the caller's environment: owner only.
pub const FILE_MODE: u32 = 0o600;
pub const DIR_MODE: u32 = 0o700;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub runtime_id: String,
    pub spec: RuntimeSpec,
    pub session_api_key: String,
    pub ports: SandboxPorts,
    pub created_at: String,
    pub paused: bool,
    /// When and why it was paused (RFC 3339; the reason only when maintenance paused it).
    #[serde(default)]
    pub paused_at: Option<String>,
    #[serde(default)]
    pub pause_reason: Option<String>,
    /// The agent server's pid and its start time in clock ticks since boot: together they identify
    /// the process even if the pid is later reused.
    pub process: Option<ProcessId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: u32,
    pub start_ticks: u64,
}

/// Paths of one runtime's files.
#[derive(Debug, Clone)]
pub struct RuntimeDir(pub PathBuf);

impl RuntimeDir {
    pub fn record(&self) -> PathBuf {
        self.0.join(RECORD_FILE)
    }
    pub fn log(&self) -> PathBuf {
        self.0.join(LOG_FILE)
    }
    pub fn workspace(&self) -> PathBuf {
        self.0.join(WORKSPACE_DIR)
    }
    pub fn home(&self) -> PathBuf {
        self.0.join(HOME_DIR)
    }
}

/// Writes the record atomically (temporary file, fsync, rename): a crash leaves the old or the new
/// record, never half of one (and at worst a temporary file, removed at the next start).
pub fn save(dir: &RuntimeDir, record: &Record) -> std::io::Result<()> {
    let tmp = dir.0.join(TEMP_RECORD_FILE);
    let mut file = private_file(&tmp, true)?;
    file.write_all(&serde_json::to_vec_pretty(record)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.record())
}

/// Opens a file only its owner can read (`truncate`: to rewrite it, else to append to it).
pub fn private_file(path: &Path, truncate: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.create(true).write(true).mode(FILE_MODE);
    if truncate {
        options.truncate(true)
    } else {
        options.append(true)
    };
    let file = options.open(path)?;
    // `mode` applies only to new files; older installations wrote 0644.
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(FILE_MODE))?;
    Ok(file)
}

/// Creates a directory (and its parents) only its owner can enter, or tightens an existing one.
pub fn private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(DIR_MODE))
}

pub fn load(path: &Path) -> std::io::Result<Record> {
    let bytes = std::fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(std::io::Error::other)
}

/// The start time (field 22 of `/proc/{pid}/stat`) of a live process, or `None` if it is gone.
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    live_stat(pid).map(|s| s.start_ticks)
}

/// What `/proc/{pid}/stat` says of a live (not zombie) process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub pgid: u32,
    pub start_ticks: u64,
}

fn live_stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Fields after the command name (which may contain spaces and parentheses) start at field 3.
fn parse_stat(stat: &str) -> Option<Stat> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // fields[0] is the state (field 3); zombies count as gone.
    if fields.first() == Some(&"Z") {
        return None;
    }
    Some(Stat {
        pgid: fields.get(5 - 3)?.parse().ok()?,
        start_ticks: fields.get(22 - 3)?.parse().ok()?,
    })
}

/// The runtime directory named by [`MARKER_VAR`] in a process environment (`/proc/{pid}/environ`).
pub fn marker_in(environ: &[u8]) -> Option<&Path> {
    let prefix = format!("{MARKER_VAR}=");
    environ.split(|b| *b == 0).find_map(|entry| {
        let value = entry.strip_prefix(prefix.as_bytes())?;
        Some(Path::new(std::str::from_utf8(value).ok()?))
    })
}

/// A live process started for a runtime of this state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marked {
    pub runtime_id: String,
    pub pid: u32,
    pub stat: Stat,
}

impl Marked {
    /// Whether it leads its process group: the agent server itself, not something it spawned.
    pub fn is_leader(&self) -> bool {
        self.pid == self.stat.pgid
    }

    pub fn id(&self) -> ProcessId {
        ProcessId { pid: self.pid, start_ticks: self.stat.start_ticks }
    }
}

/// Every live process whose marker names a directory directly under `runtimes_dir`.
pub fn marked_processes(runtimes_dir: &Path) -> Vec<Marked> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            let dir = marker_in(&environ)?;
            if dir.parent() != Some(runtimes_dir) {
                return None;
            }
            let runtime_id = dir.file_name()?.to_str()?.to_string();
            Some(Marked { runtime_id, pid, stat: live_stat(pid)? })
        })
        .collect()
}

/// Whether the process recorded in `id` is still the same live process.
pub fn is_alive(id: ProcessId) -> bool {
    process_start_ticks(id.pid) == Some(id.start_ticks)
}

/// The end of a log file, for error details: at most `max_lines` lines and `max_bytes` bytes.
pub fn log_tail(path: &Path, max_lines: usize, max_bytes: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else { return String::new() };
    let start = bytes.len().saturating_sub(max_bytes);
    let text = String::from_utf8_lossy(&bytes[start..]);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(max_lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_start_ticks_even_with_odd_command_names() {
        let stat = "1234 (agent (server) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 98765 1000 10";
        assert_eq!(parse_stat(stat), Some(Stat { pgid: 1234, start_ticks: 98765 }));
        let zombie =
            "1234 (sh) Z 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 98765 1000 10";
        assert_eq!(parse_stat(zombie), None);
    }

    #[test]
    fn the_marker_is_found_among_environment_entries() {
        let environ = b"PATH=/bin\0RUNTIME_API_RUNTIME_DIR=/s/runtimes/abc\0HOME=/h\0";
        assert_eq!(marker_in(environ), Some(Path::new("/s/runtimes/abc")));
        assert_eq!(marker_in(b"PATH=/bin\0XRUNTIME_API_RUNTIME_DIR=/x\0"), None);
        assert_eq!(marker_in(b""), None);
    }

    #[test]
    fn records_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let runtime = RuntimeDir(dir.path().join("runtimes/r1"));
        private_dir(&runtime.0).unwrap();
        std::fs::write(runtime.log(), "old").unwrap(); // 0644 as older versions left it
        private_file(&runtime.log(), false).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&runtime.0), 0o700);
        assert_eq!(mode(&runtime.log()), 0o600);
        assert_eq!(std::fs::read_to_string(runtime.log()).unwrap(), "old");
    }

    #[test]
    fn own_process_is_alive() {
        let pid = std::process::id();
        let ticks = process_start_ticks(pid).expect("own stat readable");
        assert!(is_alive(ProcessId { pid, start_ticks: ticks }));
        assert!(!is_alive(ProcessId { pid, start_ticks: ticks + 1 }));
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "a\nb\n\nc\nd\n").unwrap();
        assert_eq!(log_tail(&path, 2, 1000), "c\nd");
        assert_eq!(log_tail(&dir.path().join("missing"), 2, 1000), "");
    }
}
