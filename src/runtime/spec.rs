//! What a caller asked for when starting a runtime, kept in full so resume recreates it exactly.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Longest session id accepted; real ids are 22 (V1 base62) to 50 (`agent-server-<uuid>`) chars.
pub const MAX_SESSION_ID_LEN: usize = 256;
/// Longest runtime id accepted in paths and bodies (ours are 32 hex chars).
pub const MAX_RUNTIME_ID_LEN: usize = 256;
/// Longest image reference: a 255-character repository, a registry host, a tag or a digest.
pub const MAX_IMAGE_LEN: usize = 512;
pub const MAX_ENV_VARS: usize = 1024;
pub const MAX_RESOURCE_FACTOR: f64 = 64.0;
/// Smallest `resource_factor`: a quarter of the configured requests (at the defaults 250m CPU
/// and 512 MiB), below which an agent server cannot start.
pub const MIN_RESOURCE_FACTOR: f64 = 0.25;
/// Largest uid/gid Kubernetes accepts (`int32`); the process backend keeps the same rule.
pub const MAX_ID: i64 = i32::MAX as i64;

/// How much environment a backend can hand to a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvLimits {
    /// `NAME=value` bytes of all caller variables together.
    pub total_bytes: usize,
    /// `NAME=value` bytes of one variable (execve rejects longer strings: `MAX_ARG_STRLEN`).
    pub one_variable_bytes: usize,
}

impl EnvLimits {
    /// What execve(2) takes on Linux with room to spare: 2 MiB for arguments and environment
    /// together, 128 KiB per string.
    pub const EXEC: EnvLimits =
        EnvLimits { total_bytes: 1 << 20, one_variable_bytes: 128 * 1024 - 1 };
}

/// Why a variable name is refused: the dynamic loader's variables (`LD_PRELOAD`,
/// `LD_LIBRARY_PATH`, `LD_AUDIT`, ...) change what code runs inside the agent server itself,
/// which holds the session key; no OpenHands client sets them.
fn is_reserved_env_name(key: &str) -> bool {
    key.starts_with("LD_")
}

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
    /// A spec with only a session and an image, everything else at its default.
    pub fn new(session_id: impl Into<String>, image: impl Into<String>) -> RuntimeSpec {
        RuntimeSpec {
            session_id: session_id.into(),
            image: image.into(),
            command: Command::ImageDefault,
            working_dir: None,
            environment: BTreeMap::new(),
            resource_factor: 1.0,
            runtime_class: None,
            run_as_user: None,
            run_as_group: None,
            fs_group: None,
            image_pull_policy: None,
        }
    }

    /// Checks every field against the limits above; the message names the offending field.
    pub fn validate(&self) -> Result<(), SpecError> {
        validate_session_id(&self.session_id)?;
        validate_image(&self.image)?;
        if !self.resource_factor.is_finite()
            || self.resource_factor < MIN_RESOURCE_FACTOR
            || self.resource_factor > MAX_RESOURCE_FACTOR
        {
            return Err(SpecError(format!(
                "resource_factor must be between {MIN_RESOURCE_FACTOR} and {MAX_RESOURCE_FACTOR}, got {}",
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
            if is_reserved_env_name(key) {
                return Err(SpecError(format!(
                    "environment variable {key} is not allowed: the dynamic loader's LD_* variables cannot be set for a sandbox"
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
                if !(0..=MAX_ID).contains(&id) {
                    return Err(SpecError(format!(
                        "{name} must be between 0 and {MAX_ID}, got {id}"
                    )));
                }
            }
        }
        let nul = match &self.command {
            Command::ImageDefault => false,
            Command::Shell(line) => line.contains('\0'),
            Command::Exec(args) => args.iter().any(|a| a.contains('\0')),
        };
        if nul {
            // No exec(2) can take it, and a pod spec with it would only fail later.
            return Err(SpecError("command contains a NUL byte".into()));
        }
        Ok(())
    }
}

impl RuntimeSpec {
    /// Checks the caller's environment against what the backend can pass on (`environment` is
    /// named in the message, with the offending variable).
    pub fn validate_environment_size(&self, limits: EnvLimits) -> Result<(), SpecError> {
        let mut total = 0;
        for (key, value) in &self.environment {
            let size = key.len() + 1 + value.len();
            if size > limits.one_variable_bytes {
                return Err(SpecError(format!(
                    "environment variable {key} is {size} bytes, at most {} are allowed",
                    limits.one_variable_bytes
                )));
            }
            total += size;
        }
        if total > limits.total_bytes {
            return Err(SpecError(format!(
                "environment is {total} bytes, at most {} are allowed",
                limits.total_bytes
            )));
        }
        Ok(())
    }
}

/// An image reference a registry could serve, by the distribution reference grammar
/// (lower-case repository, valid tag or digest), with no surrounding whitespace.
pub fn validate_image(image: &str) -> Result<(), SpecError> {
    if image.len() > MAX_IMAGE_LEN {
        return Err(SpecError(format!("image is longer than {MAX_IMAGE_LEN} bytes")));
    }
    oci_spec::distribution::Reference::try_from(image)
        .map(|_| ())
        .map_err(|e| SpecError(format!("image {image:?} is not a valid image reference: {e}")))
}

pub fn validate_session_id(id: &str) -> Result<(), SpecError> {
    validate_id("session_id", id, MAX_SESSION_ID_LEN)
}

pub fn validate_runtime_id(id: &str) -> Result<(), SpecError> {
    validate_id("runtime_id", id, MAX_RUNTIME_ID_LEN)
}

fn validate_id(field: &str, id: &str, max: usize) -> Result<(), SpecError> {
    if id.trim().is_empty() {
        return Err(SpecError(format!("{field} must not be empty or blank")));
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
        for bad in [0.0, -1.0, 1e-9, 0.2, 64.5, f64::NAN, f64::INFINITY] {
            let s = RuntimeSpec { resource_factor: bad, ..spec() };
            assert!(s.validate().is_err(), "{bad} accepted");
        }
        for good in [MIN_RESOURCE_FACTOR, 1.0, 64.0] {
            let s = RuntimeSpec { resource_factor: good, ..spec() };
            assert_eq!(s.validate(), Ok(()));
        }
    }

    #[test]
    fn image_references_follow_the_registry_grammar() {
        let digest = format!("sha256:{}", "a".repeat(64));
        for good in [
            "ubuntu".to_string(),
            "ubuntu:22.04".to_string(),
            "ghcr.io/openhands/agent-server:1.58.2-python".to_string(),
            "localhost:5000/a/b_c__d-e.f:Tag_1.x".to_string(),
            "127.0.0.1:5000/rt:latest".to_string(),
            format!("ghcr.io/openhands/runtime@{digest}"),
            format!("ghcr.io/openhands/runtime:v1@{digest}"),
            format!("r.io/{}", "a".repeat(200)),
        ] {
            assert_eq!(validate_image(&good), Ok(()), "{good}");
        }
        for bad in [
            String::new(),
            " ".to_string(),
            " ubuntu".to_string(),
            "ubuntu ".to_string(),
            "ubu ntu".to_string(),
            "Ubuntu".to_string(),
            "ghcr.io/OpenHands/runtime".to_string(),
            "ghcr.io/a/../b".to_string(),
            "ghcr.io/a..b".to_string(),
            "ubuntu:".to_string(),
            "ubuntu:-x".to_string(),
            format!("ubuntu:{}", "t".repeat(129)),
            "ubuntu@sha256:abc".to_string(),
            "ubuntu@md5:0123456789abcdef0123456789abcdef".to_string(),
            "ghcr.io/a/".to_string(),
            "/a".to_string(),
            "a//b".to_string(),
            "a\nb".to_string(),
            format!("r.io/{}", "a".repeat(300)),
            "x".repeat(MAX_IMAGE_LEN + 1),
        ] {
            let e = validate_image(&bad).expect_err(&bad);
            assert!(e.0.starts_with("image "), "{e}");
            let s = RuntimeSpec { image: bad.clone(), ..spec() };
            assert!(s.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn user_and_group_ids_fit_in_an_int32() {
        for (field, set) in [
            (
                "run_as_user",
                (|s: &mut RuntimeSpec, v| s.run_as_user = v) as fn(&mut RuntimeSpec, Option<i64>),
            ),
            ("run_as_group", |s, v| s.run_as_group = v),
            ("fs_group", |s, v| s.fs_group = v),
        ] {
            for good in [0, 10001, MAX_ID] {
                let mut s = spec();
                set(&mut s, Some(good));
                assert_eq!(s.validate(), Ok(()), "{field}={good}");
            }
            for bad in [-1, MAX_ID + 1, i64::from(u32::MAX), i64::MAX] {
                let mut s = spec();
                set(&mut s, Some(bad));
                assert!(s.validate().unwrap_err().0.starts_with(field), "{field}={bad}");
            }
        }
    }

    #[test]
    fn loader_variables_are_refused_and_path_is_allowed() {
        for name in ["LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT"] {
            let mut s = spec();
            s.environment.insert(name.into(), "/tmp/x.so".into());
            assert!(s.validate().unwrap_err().0.contains(name), "{name}");
        }
        let mut s = spec();
        s.environment.insert("PATH".into(), "/opt/venv/bin:/usr/bin".into());
        s.environment.insert("OLD_VALUE".into(), "x".into());
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn environment_size_is_bounded_per_variable_and_in_total() {
        let limits = EnvLimits { total_bytes: 100, one_variable_bytes: 40 };
        let mut s = spec();
        s.environment.insert("A".into(), "x".repeat(38)); // "A=" + 38 = 40 bytes
        assert_eq!(s.validate_environment_size(limits), Ok(()));
        s.environment.insert("B".into(), "x".repeat(39));
        assert!(s.validate_environment_size(limits).unwrap_err().0.contains("variable B"));
        s.environment.insert("B".into(), "x".repeat(38));
        s.environment.insert("C".into(), "x".repeat(38));
        assert!(
            s.validate_environment_size(limits).unwrap_err().0.starts_with("environment is 120")
        );
    }

    #[test]
    fn rejects_oversized_or_empty_session_ids() {
        let s = RuntimeSpec { session_id: "x".repeat(MAX_SESSION_ID_LEN + 1), ..spec() };
        assert!(s.validate().unwrap_err().0.contains("session_id"));
        for blank in ["", " ", "\t \u{3000}"] {
            let s = RuntimeSpec { session_id: blank.into(), ..spec() };
            assert!(s.validate().unwrap_err().0.contains("session_id"), "{blank:?}");
        }
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
