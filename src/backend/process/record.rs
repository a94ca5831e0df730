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
/// record, never half of one.
pub fn save(dir: &RuntimeDir, record: &Record) -> std::io::Result<()> {
    let tmp = dir.0.join(".record.json.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec_pretty(record)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.record())
}

pub fn load(path: &Path) -> std::io::Result<Record> {
    let bytes = std::fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(std::io::Error::other)
}

/// The start time (field 22 of `/proc/{pid}/stat`) of a live process, or `None` if it is gone.
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_ticks(&stat)
}

/// Fields after the command name (which may contain spaces and parentheses) start at field 3.
fn parse_start_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // fields[0] is the state (field 3); zombies count as gone.
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(22 - 3)?.parse().ok()
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
        assert_eq!(parse_start_ticks(stat), Some(98765));
        let zombie =
            "1234 (sh) Z 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 98765 1000 10";
        assert_eq!(parse_start_ticks(zombie), None);
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
