//! Lifecycle decisions as pure functions of what a backend knows of a runtime: which way a
//! `/start` goes for a session that already has a runtime, and whether a resume has anything to
//! do. Both backends build a [`Known`] from their cache, ask here for a plan and execute it, so
//! every branch is a unit test and the two backends cannot drift apart.

use super::{PodStatus, Status};

/// What a backend knows of an existing runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    /// Its removal has begun (Kubernetes: the record carries a deletion timestamp).
    pub being_removed: bool,
    /// Its session key is stored (Kubernetes: its Secret exists; a process record always has it).
    pub has_credentials: bool,
    pub paused: bool,
    pub status: Status,
    pub pod_status: PodStatus,
}

/// What `/start` does for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPlan {
    /// The session has no runtime: create one.
    Create,
    /// The previous runtime is being stopped: wait until it is gone, then create a fresh one.
    AwaitRemovalThenCreate,
    /// Its creation was interrupted before the session key was stored (its creator crashed, or is
    /// still at work): store a new key and create what is missing. Safe either way: whoever
    /// stores the key first wins, and both answer with the stored key.
    CompleteCreation,
    /// Paused or failed: resume it.
    Resume,
    /// Live, but its sandbox was never created (an interrupted start): create what is missing
    /// and answer with it.
    CompleteObjects,
    /// Live: answer with it.
    Return,
}

/// What `/resume` does for a runtime that exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumePlan {
    /// Starting or running already: answer with it.
    AlreadyRunning,
    /// Its session key is gone: it cannot be resumed as it was started.
    CredentialsLost,
    /// Start its sandbox again with the spec and key it was started with.
    Relaunch,
}

/// Decides `/start` for a session whose current runtime is `known` (`None`: it has none).
pub fn plan_start(known: Option<&Known>) -> StartPlan {
    let Some(k) = known else { return StartPlan::Create };
    if k.being_removed {
        return StartPlan::AwaitRemovalThenCreate;
    }
    if !k.has_credentials {
        return StartPlan::CompleteCreation;
    }
    match k.status {
        Status::Paused | Status::Error => StartPlan::Resume,
        _ if k.pod_status == PodStatus::NotFound => StartPlan::CompleteObjects,
        _ => StartPlan::Return,
    }
}

/// Decides `/resume` for an existing runtime (one being removed is not found, before this).
pub fn plan_resume(k: &Known) -> ResumePlan {
    let live = matches!(k.status, Status::Starting | Status::Running);
    if !k.paused && live && k.pod_status != PodStatus::NotFound {
        return ResumePlan::AlreadyRunning;
    }
    if !k.has_credentials {
        return ResumePlan::CredentialsLost;
    }
    ResumePlan::Relaunch
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD_STATUSES: [PodStatus; 7] = [
        PodStatus::Pending,
        PodStatus::Running,
        PodStatus::Ready,
        PodStatus::Failed,
        PodStatus::Unknown,
        PodStatus::CrashLoopBackOff,
        PodStatus::NotFound,
    ];

    /// Every combination of what a backend can know.
    fn every_known() -> Vec<Known> {
        let mut all = Vec::new();
        for being_removed in [false, true] {
            for has_credentials in [false, true] {
                for paused in [false, true] {
                    for status in Status::ALL {
                        for pod_status in POD_STATUSES {
                            all.push(Known {
                                being_removed,
                                has_credentials,
                                paused,
                                status,
                                pod_status,
                            });
                        }
                    }
                }
            }
        }
        all
    }

    #[test]
    fn a_session_without_a_runtime_gets_a_new_one() {
        assert_eq!(plan_start(None), StartPlan::Create);
    }

    #[test]
    fn start_plans_for_every_known_state() {
        for k in every_known() {
            let expected = if k.being_removed {
                StartPlan::AwaitRemovalThenCreate
            } else if !k.has_credentials {
                StartPlan::CompleteCreation
            } else if matches!(k.status, Status::Paused | Status::Error) {
                StartPlan::Resume
            } else if k.pod_status == PodStatus::NotFound {
                StartPlan::CompleteObjects
            } else {
                StartPlan::Return
            };
            assert_eq!(plan_start(Some(&k)), expected, "{k:?}");
        }
    }

    #[test]
    fn start_answers_as_is_only_with_a_complete_runtime_that_needs_no_resume() {
        for k in every_known() {
            if plan_start(Some(&k)) == StartPlan::Return {
                assert!(!matches!(k.status, Status::Paused | Status::Error), "{k:?}");
                assert!(k.has_credentials && !k.being_removed, "{k:?}");
                assert_ne!(k.pod_status, PodStatus::NotFound, "{k:?}");
            }
        }
    }

    #[test]
    fn resume_plans_for_every_known_state() {
        for k in every_known() {
            let running = !k.paused
                && matches!(k.status, Status::Starting | Status::Running)
                && k.pod_status != PodStatus::NotFound;
            let expected = match (running, k.has_credentials) {
                (true, _) => ResumePlan::AlreadyRunning,
                (false, false) => ResumePlan::CredentialsLost,
                (false, true) => ResumePlan::Relaunch,
            };
            assert_eq!(plan_resume(&k), expected, "{k:?}");
        }
    }

    #[test]
    fn paused_failed_and_podless_runtimes_are_relaunched() {
        let base = Known {
            being_removed: false,
            has_credentials: true,
            paused: false,
            status: Status::Running,
            pod_status: PodStatus::Ready,
        };
        assert_eq!(plan_resume(&base), ResumePlan::AlreadyRunning);
        let paused =
            Known { paused: true, status: Status::Paused, pod_status: PodStatus::NotFound, ..base };
        assert_eq!(plan_resume(&paused), ResumePlan::Relaunch);
        let failed =
            Known { status: Status::Error, pod_status: PodStatus::CrashLoopBackOff, ..base };
        assert_eq!(plan_resume(&failed), ResumePlan::Relaunch);
        let podless = Known { status: Status::Starting, pod_status: PodStatus::NotFound, ..base };
        assert_eq!(plan_resume(&podless), ResumePlan::Relaunch);
        assert_eq!(
            plan_resume(&Known { has_credentials: false, ..paused }),
            ResumePlan::CredentialsLost
        );
    }
}
