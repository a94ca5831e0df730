//! What a caller asked for when starting a runtime, kept in full so resume recreates it exactly.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Longest session id accepted; real ids are 22 (V1 base62) to 50 (`agent-server-<uuid>`) chars.
pub const MAX_SESSION_ID_LEN: usize = 256;
/// Longest runtime id accepted in paths and bodies (ours are 32 hex chars).
pub const MAX_RUNTIME_ID_LEN: usize = 256;
pub const MAX_IMAGE_LEN: usize = 1024;
pub const MAX_ENV_VARS: usize = 1024;
pub const MAX_RESOURCE_FACTOR: f64 = 64.0;

/// The container command as the caller gave it: a string runs through a shell, a list runs as
/// given, and nothing keeps the image's entrypoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(untagged)]
pub enum Command {
    #[default]
    ImageDefault,
    Shell(String),
    Exec(Vec<String>),
}

impl Command {
    /// Normalises what serde saw: an empty string or list means "use the image's entrypoint".
    pub fn from_wire(value: Option<Command>) -> Command {
        match value {
            Some(Command::Shell(s)) if s.trim().is_empty() => Command::ImageDefault,
            Some(Command::Exec(v)) if v.is_empty() => Command::ImageDefault,
            Some(c) => c,
            None => Command::ImageDefault,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn parse(s: &str) -> Option<PullPolicy> {
        match s {
            "Always" => Some(PullPolicy::Always),
            "IfNotPresent" => Some(PullPolicy::IfNotPresent),
            "Never" => Some(PullPolicy::Never),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// A validated start request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeSpec {
    pub session_id: String,
    pub image: String,
    pub command: Command,
    pub working_dir: Option<String>,
    /// Sorted, so the environment reaches the sandbox in a deterministic order.
    pub environment: BTreeMap<String, String>,
    pub resource_factor: f64,
    pub runtime_class: Option<String>,
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub fs_group: Option<i64>,
    pub image_pull_policy: Option<PullPolicy>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

impl RuntimeSpec {
    /// Checks every field against the limits above; the message names the offending field.
    pub fn validate(&self) -> Result<(), SpecError> {
        validate_session_id(&self.session_id)?;
        if self.image.trim().is_empty() {
            return Err(SpecError("image must not be empty".into()));
        }
        if self.image.len() > MAX_IMAGE_LEN || self.image.chars().any(char::is_control) {
            return Err(SpecError(format!(
                "image must be at most {MAX_IMAGE_LEN} printable characters"
            )));
        }
        if !self.resource_factor.is_finite()
            || self.resource_factor <= 0.0
            || self.resource_factor > MAX_RESOURCE_FACTOR
        {
            return Err(SpecError(format!(
                "resource_factor must be greater than 0 and at most {MAX_RESOURCE_FACTOR}, got {}",
                self.resource_factor
            )));
        }
        if self.environment.len() > MAX_ENV_VARS {
            return Err(SpecError(format!(
                "environment has {} variables, at most {MAX_ENV_VARS} are allowed",
                self.environment.len()
            )));
        }
        for (key, value) in &self.environment {
            if !is_env_name(key) {
                return Err(SpecError(format!(
                    "environment variable name {key:?} is invalid (letters, digits, '_', '-', '.'; not starting with a digit)"
                )));
            }
            if value.contains('\0') {
                return Err(SpecError(format!("environment variable {key} contains a NUL byte")));
            }
        }
        if let Some(dir) = &self.working_dir {
            if dir.len() > 4096 || dir.contains('\0') {
                return Err(SpecError("working_dir is too long or contains a NUL byte".into()));
            }
        }
        if let Some(class) = &self.runtime_class {
            if class.is_empty() || class.len() > 253 || !is_dns_subdomain(class) {
                return Err(SpecError(format!("runtime_class {class:?} is not a valid name")));
            }
        }
        for (name, id) in [
            ("run_as_user", self.run_as_user),
            ("run_as_group", self.run_as_group),
            ("fs_group", self.fs_group),
        ] {
            if let Some(id) = id {
                if !(0..=i64::from(u32::MAX)).contains(&id) {
                    return Err(SpecError(format!("{name} must be between 0 and 4294967295")));
                }
            }
        }
        if let Command::Exec(args) = &self.command {
            if args.iter().any(|a| a.contains('\0')) {
                return Err(SpecError("command contains a NUL byte".into()));
            }
        }
        Ok(())
    }
}

pub fn validate_session_id(id: &str) -> Result<(), SpecError> {
    validate_id("session_id", id, MAX_SESSION_ID_LEN)
}

pub fn validate_runtime_id(id: &str) -> Result<(), SpecError> {
    validate_id("runtime_id", id, MAX_RUNTIME_ID_LEN)
}

fn validate_id(field: &str, id: &str, max: usize) -> Result<(), SpecError> {
    if id.is_empty() {
        return Err(SpecError(format!("{field} must not be empty")));
    }
    if id.len() > max {
        return Err(SpecError(format!("{field} is longer than {max} bytes")));
    }
    if id.chars().any(char::is_control) {
        return Err(SpecError(format!("{field} contains control characters")));
    }
    Ok(())
}

/// Names a process environment and a Kubernetes Secret key both accept.
fn is_env_name(key: &str) -> bool {
    let mut chars = key.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    key.len() <= 253 && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn is_dns_subdomain(s: &str) -> bool {
    s.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RuntimeSpec {
        RuntimeSpec {
            session_id: "AbC123".into(),
            image: "ghcr.io/openhands/agent-server:1.58.2".into(),
            command: Command::ImageDefault,
            working_dir: Some("/workspace".into()),
            environment: BTreeMap::new(),
            resource_factor: 1.0,
            runtime_class: None,
            run_as_user: Some(10001),
            run_as_group: None,
            fs_group: Some(10001),
            image_pull_policy: Some(PullPolicy::IfNotPresent),
        }
    }

    #[test]
    fn accepts_a_typical_sdk_request() {
        assert_eq!(spec().validate(), Ok(()));
    }

    #[test]
    fn rejects_resource_factor_out_of_range() {
        for bad in [0.0, -1.0, 64.5, f64::NAN, f64::INFINITY] {
            let s = RuntimeSpec { resource_factor: bad, ..spec() };
            assert!(s.validate().is_err(), "{bad} accepted");
        }
        let s = RuntimeSpec { resource_factor: 64.0, ..spec() };
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn rejects_oversized_or_empty_session_ids() {
        let s = RuntimeSpec { session_id: "x".repeat(MAX_SESSION_ID_LEN + 1), ..spec() };
        assert!(s.validate().unwrap_err().0.contains("session_id"));
        let s = RuntimeSpec { session_id: String::new(), ..spec() };
        assert!(s.validate().is_err());
    }

    #[test]
    fn rejects_bad_environment_names() {
        let mut s = spec();
        s.environment.insert("1BAD".into(), "v".into());
        assert!(s.validate().is_err());
        let mut s = spec();
        s.environment.insert("A=B".into(), "v".into());
        assert!(s.validate().is_err());
        let mut s = spec();
        s.environment.insert("GOOD_name-1.x".into(), "v".into());
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn command_accepts_string_list_or_nothing() {
        let c: Command = serde_json::from_str("\"/bin/agent --port 60000\"").unwrap();
        assert_eq!(c, Command::Shell("/bin/agent --port 60000".into()));
        let c: Command = serde_json::from_str("[\"/bin/agent\",\"--port\",\"60000\"]").unwrap();
        assert_eq!(c, Command::Exec(vec!["/bin/agent".into(), "--port".into(), "60000".into()]));
        assert_eq!(Command::from_wire(Some(Command::Shell("  ".into()))), Command::ImageDefault);
        assert_eq!(Command::from_wire(None), Command::ImageDefault);
    }

    #[test]
    fn runtime_class_must_be_a_dns_name() {
        let s = RuntimeSpec { runtime_class: Some("sysbox-runc".into()), ..spec() };
        assert_eq!(s.validate(), Ok(()));
        let s = RuntimeSpec { runtime_class: Some("Bad Class".into()), ..spec() };
        assert!(s.validate().is_err());
    }
}
