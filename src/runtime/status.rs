//! The two status vocabularies of the contract: `status` (V1 clients) and `pod_status` (SDK, V0).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Objects exist, the agent server does not answer yet.
    Starting,
    /// The agent server answers its readiness probe.
    Running,
    Paused,
    Stopped,
    Error,
}

impl Status {
    pub const ALL: [Status; 5] =
        [Status::Starting, Status::Running, Status::Paused, Status::Stopped, Status::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Starting => "starting",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
            Status::Error => "error",
        }
    }

    /// Case-insensitive, as clients compare it.
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str().eq_ignore_ascii_case(s.trim()))
    }

    /// Starting, running and failed runtimes hold (or try to hold) compute; `/list` shows them by default.
    pub fn holds_compute(self) -> bool {
        matches!(self, Status::Starting | Status::Running | Status::Error)
    }
}

/// `pod_status` as the SDK reads it: it waits on pending/running/not found, succeeds on ready,
/// and gives up at once on failed/unknown/crashloopbackoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum PodStatus {
    #[serde(rename = "pending")]
    Pending,
    /// Up but not ready.
    #[serde(rename = "running")]
    Running,
    #[serde(rename = "ready")]
    Ready,
    #[serde(rename = "failed")]
    Failed,
    #[serde(rename = "unknown")]
    Unknown,
    #[serde(rename = "crashloopbackoff")]
    CrashLoopBackOff,
    #[serde(rename = "not found")]
    NotFound,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_parses_case_insensitively() {
        assert_eq!(Status::parse("PAUSED"), Some(Status::Paused));
        assert_eq!(Status::parse(" running "), Some(Status::Running));
        assert_eq!(Status::parse("ready"), None);
    }

    #[test]
    fn only_compute_holding_states_are_listed_by_default() {
        let listed: Vec<_> = Status::ALL.into_iter().filter(|s| s.holds_compute()).collect();
        assert_eq!(listed, vec![Status::Starting, Status::Running, Status::Error]);
    }

    #[test]
    fn pod_status_serialises_like_the_sdk_expects() {
        assert_eq!(serde_json::to_string(&PodStatus::NotFound).unwrap(), "\"not found\"");
        assert_eq!(
            serde_json::to_string(&PodStatus::CrashLoopBackOff).unwrap(),
            "\"crashloopbackoff\""
        );
    }
}
