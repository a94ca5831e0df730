//! From a pod as the cluster reports it to the contract's `status`, `pod_status`, restarts and a
//! detail a human can act on. Pure, so every case is a unit test.

use k8s_openapi::api::core::v1::{ContainerStateTerminated, ContainerStatus, Pod};

use crate::runtime::{PodStatus, Status};

#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub status: Status,
    pub pod_status: PodStatus,
    pub detail: Option<String>,
    pub restart_count: u32,
    pub restart_reasons: Vec<String>,
}

impl Observed {
    fn new(status: Status, pod_status: PodStatus, detail: Option<String>) -> Self {
        Observed { status, pod_status, detail, restart_count: 0, restart_reasons: Vec::new() }
    }
}

/// Waiting reasons that will not fix themselves: the runtime is in error and the SDK should stop waiting.
const FATAL_WAITING: [&str; 5] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

fn crash_loop(c: &ContainerStatus, exit: Option<&ContainerStateTerminated>) -> Observed {
    let detail = match exit {
        Some(t) => format!(
            "CrashLoopBackOff: the agent server exited with code {} ({}), restarted {} times",
            t.exit_code,
            t.reason.as_deref().unwrap_or("Error"),
            c.restart_count
        ),
        None => format!("CrashLoopBackOff: restarted {} times", c.restart_count),
    };
    Observed::new(Status::Error, PodStatus::CrashLoopBackOff, Some(detail))
}

/// What clients see of a runtime: paused, its pod's status, or a pod still to be created.
pub fn observe(paused: bool, pod: Option<&Observed>) -> Observed {
    if paused {
        return Observed::new(Status::Paused, PodStatus::NotFound, None);
    }
    match pod {
        Some(observed) => observed.clone(),
        None => Observed::new(
            Status::Starting,
            PodStatus::NotFound,
            Some("the sandbox pod is being created".into()),
        ),
    }
}

/// A pod's status as clients see it, restarts included.
pub fn observe_pod(pod: &Pod) -> Observed {
    let status = pod.status.as_ref();
    let containers: &[ContainerStatus] =
        status.and_then(|s| s.container_statuses.as_deref()).unwrap_or_default();
    let restart_count = containers.iter().map(|c| c.restart_count.max(0) as u32).sum();
    let restart_reasons = containers
        .iter()
        .filter_map(|c| c.last_state.as_ref()?.terminated.as_ref())
        .map(|t| {
            format!("{} (exit code {})", t.reason.as_deref().unwrap_or("Terminated"), t.exit_code)
        })
        .collect();
    let mut observed = classify(pod, containers);
    observed.restart_count = restart_count;
    observed.restart_reasons = restart_reasons;
    observed
}

/// The pod's Ready condition is True (its agent server answers its readiness probe).
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn classify(pod: &Pod, containers: &[ContainerStatus]) -> Observed {
    if pod.metadata.deletion_timestamp.is_some() {
        return Observed::new(
            Status::Starting,
            PodStatus::Pending,
            Some("the sandbox pod is terminating".into()),
        );
    }
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    let waiting = containers.iter().find_map(|c| {
        let w = c.state.as_ref()?.waiting.as_ref()?;
        Some((c, w.reason.as_deref().unwrap_or(""), w.message.as_deref().unwrap_or("")))
    });

    if let Some((c, "CrashLoopBackOff", _)) = waiting {
        let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
        return crash_loop(c, last);
    }
    // Between two restarts a real kubelet (1.36) mostly reports the container's last `terminated`
    // state instead of `waiting: CrashLoopBackOff`: it requeues the pod for the end of the
    // back-off. Exited after at least one restart is a crash loop all the same.
    let exited_again = containers.iter().find_map(|c| {
        let t = c.state.as_ref()?.terminated.as_ref()?;
        (c.restart_count > 0).then_some((c, t))
    });
    if let Some((c, t)) = exited_again {
        return crash_loop(c, Some(t));
    }
    if let Some((_, reason, message)) = waiting.filter(|(_, r, _)| FATAL_WAITING.contains(r)) {
        let detail =
            if message.is_empty() { reason.to_string() } else { format!("{reason}: {message}") };
        return Observed::new(Status::Error, PodStatus::Failed, Some(detail));
    }
    let condition = |kind: &str| {
        status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == kind))
    };
    match phase {
        "Pending" => match condition("PodScheduled") {
            Some(c) if c.status == "False" && c.reason.as_deref() == Some("Unschedulable") => {
                Observed::new(
                    Status::Error,
                    PodStatus::Pending,
                    Some(format!(
                        "Unschedulable: {}",
                        c.message.as_deref().unwrap_or("no node fits the sandbox")
                    )),
                )
            }
            _ => {
                let detail = waiting
                    .map(|(_, reason, _)| reason)
                    .filter(|r| !r.is_empty())
                    .map(|r| format!("waiting: {r}"));
                Observed::new(Status::Starting, PodStatus::Pending, detail)
            }
        },
        "Running" => match condition("Ready") {
            Some(c) if c.status == "True" => Observed::new(Status::Running, PodStatus::Ready, None),
            _ => Observed::new(
                Status::Starting,
                PodStatus::Running,
                Some("the agent server is not ready yet".into()),
            ),
        },
        "Succeeded" => {
            Observed::new(Status::Error, PodStatus::Failed, Some("the agent server exited".into()))
        }
        "Failed" => {
            let reason = status.and_then(|s| s.reason.as_deref()).unwrap_or("Failed");
            let message =
                status.and_then(|s| s.message.as_deref()).unwrap_or("the sandbox pod failed");
            Observed::new(Status::Error, PodStatus::Failed, Some(format!("{reason}: {message}")))
        }
        _ => Observed::new(Status::Error, PodStatus::Unknown, Some(format!("pod phase {phase}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).unwrap()
    }

    #[test]
    fn paused_and_missing_pods() {
        assert_eq!(observe(true, None).status, Status::Paused);
        let o = observe(false, None);
        assert_eq!((o.status, o.pod_status), (Status::Starting, PodStatus::NotFound));
        let running = Observed::new(Status::Running, PodStatus::Ready, None);
        assert_eq!(observe(true, Some(&running)).status, Status::Paused);
        assert_eq!(observe(false, Some(&running)), running);
    }

    #[test]
    fn ready_pod_is_running() {
        let p = pod(
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "a", "image": "i", "imageID": "", "ready": true, "restartCount": 0, "state": {"running": {}}}]}),
        );
        let o = observe_pod(&p);
        assert_eq!((o.status, o.pod_status, o.detail), (Status::Running, PodStatus::Ready, None));
    }

    #[test]
    fn running_but_not_ready_is_starting() {
        let p =
            pod(json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}));
        let o = observe_pod(&p);
        assert_eq!((o.status, o.pod_status), (Status::Starting, PodStatus::Running));
    }

    #[test]
    fn crash_loop_reports_exit_code_and_restarts() {
        let p = pod(
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "a", "image": "i", "imageID": "", "ready": false, "restartCount": 4,
              "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
              "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}),
        );
        let o = observe_pod(&p);
        assert_eq!((o.status, o.pod_status), (Status::Error, PodStatus::CrashLoopBackOff));
        let detail = o.detail.unwrap();
        assert!(
            detail.contains("code 137")
                && detail.contains("OOMKilled")
                && detail.contains("4 times"),
            "{detail}"
        );
        assert_eq!(o.restart_count, 4);
        assert_eq!(o.restart_reasons, ["OOMKilled (exit code 137)"]);
    }

    /// What kubelet 1.36 on the test cluster's real node reports for a container that exits 3 at
    /// every start: during each back-off the state stays `terminated` (the kubelet requeues the
    /// pod for the end of the back-off), so `waiting: CrashLoopBackOff` is rarely seen.
    #[test]
    fn crash_loop_seen_as_terminated_between_restarts_is_an_error() {
        let p = pod(
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "a", "image": "i", "imageID": "", "ready": false, "restartCount": 3,
              "started": false,
              "state": {"terminated": {"exitCode": 3, "reason": "Error",
                "startedAt": "2026-11-29T23:33:26Z", "finishedAt": "2026-11-29T23:33:26Z"}},
              "lastState": {"terminated": {"exitCode": 3, "reason": "Error"}}}]}),
        );
        let o = observe_pod(&p);
        assert_eq!((o.status, o.pod_status), (Status::Error, PodStatus::CrashLoopBackOff));
        let detail = o.detail.unwrap();
        assert!(detail.contains("code 3") && detail.contains("3 times"), "{detail}");
    }

    #[test]
    fn a_first_exit_before_any_restart_is_still_starting() {
        let p = pod(
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "a", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
              "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}),
        );
        let o = observe_pod(&p);
        assert_eq!((o.status, o.pod_status), (Status::Starting, PodStatus::Running));
    }

    #[test]
    fn image_pull_failures_and_config_errors_are_errors() {
        for reason in ["ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError"] {
            let p = pod(
                json!({"phase": "Pending", "containerStatuses": [{"name": "a", "image": "i", "imageID": "",
                "ready": false, "restartCount": 0, "state": {"waiting": {"reason": reason, "message": "details here"}}}]}),
            );
            let o = observe_pod(&p);
            assert_eq!((o.status, o.pod_status), (Status::Error, PodStatus::Failed), "{reason}");
            assert_eq!(o.detail.unwrap(), format!("{reason}: details here"));
        }
    }

    #[test]
    fn unschedulable_carries_the_scheduler_message() {
        let p = pod(
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient memory."}]}),
        );
        let o = observe_pod(&p);
        assert_eq!((o.status, o.pod_status), (Status::Error, PodStatus::Pending));
        assert_eq!(
            o.detail.unwrap(),
            "Unschedulable: 0/3 nodes are available: 3 Insufficient memory."
        );
    }

    #[test]
    fn pending_pulling_is_starting() {
        let p = pod(
            json!({"phase": "Pending", "containerStatuses": [{"name": "a", "image": "i", "imageID": "",
            "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
        );
        let o = observe_pod(&p);
        assert_eq!((o.status, o.pod_status), (Status::Starting, PodStatus::Pending));
        assert_eq!(o.detail.as_deref(), Some("waiting: ContainerCreating"));
    }

    #[test]
    fn failed_pod_is_an_error() {
        let p =
            pod(json!({"phase": "Failed", "reason": "Evicted", "message": "node ran out of disk"}));
        let o = observe_pod(&p);
        assert_eq!((o.status, o.pod_status), (Status::Error, PodStatus::Failed));
        assert_eq!(o.detail.unwrap(), "Evicted: node ran out of disk");
    }
}
