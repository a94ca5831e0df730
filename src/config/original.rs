//! The original Go service's settings that this service names differently or does not have.
//!
//! An operator moving from the original keeps their configuration: each of its settings is
//! accepted under its own name and format, then mapped onto ours by
//! [`Config::apply_original_names`]. When both names are set, ours wins and the original's is
//! reported as ignored. Where the original's behaviour destroys work (its cleanup and reaper
//! delete sandboxes), the mapping keeps ours: idle and failed runtimes are paused, not deleted.
//! Settings with no counterpart here are accepted with a warning that says why.
//! (`PROXY_BASE_URL`, `DIRECT_ROUTING` and `DIRECT_ROUTING_CORS_ALLOW_ORIGIN` belong to the
//! gateway and are not handled here.)

use std::time::Duration;

use clap::Args;

use super::Config;
use super::parse::{self, Map};

#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Settings of the original service (mapped onto the above)")]
pub struct OriginalConfig {
    /// INGRESS_ANNOTATIONS under the original's name (`key=value,...`).
    #[arg(long, env = "SANDBOX_INGRESS_ANNOTATIONS", value_parser = parse::map)]
    pub sandbox_ingress_annotations: Option<Map>,

    /// CA_CERT_SECRET under the original's name (its key then defaults to `ca-certificates.crt`).
    #[arg(long, env = "CA_CERT_SECRET_NAME")]
    pub ca_cert_secret_name: Option<String>,

    /// SHUTDOWN_TIMEOUT_SECONDS as a Go duration (`30s`).
    #[arg(long, env = "SHUTDOWN_TIMEOUT", value_parser = parse::go_duration)]
    pub shutdown_timeout: Option<Duration>,

    /// RUNTIME_IDLE_SECONDS in hours; idle runtimes are paused, not deleted.
    #[arg(long, env = "IDLE_TIMEOUT_HOURS")]
    pub idle_timeout_hours: Option<u64>,

    /// MAINTENANCE_INTERVAL_SECONDS as a Go duration (`15m`).
    #[arg(long, env = "REAPER_CHECK_INTERVAL", value_parser = parse::go_duration)]
    pub reaper_check_interval: Option<Duration>,

    /// `false` turns off the failed-runtime rule (RUNTIME_FAILED_SECONDS 0) and ignores
    /// CLEANUP_IDLE_THRESHOLD_MINUTES.
    #[arg(long, env = "CLEANUP_ENABLED", value_parser = parse::go_bool)]
    pub cleanup_enabled: Option<bool>,

    /// MAINTENANCE_INTERVAL_SECONDS in minutes.
    #[arg(long, env = "CLEANUP_INTERVAL_MINUTES")]
    pub cleanup_interval_minutes: Option<u64>,

    /// RUNTIME_FAILED_SECONDS in minutes; failed runtimes are paused (RUNTIME_FAILED_ACTION).
    #[arg(long, env = "CLEANUP_FAILED_THRESHOLD_MINUTES")]
    pub cleanup_failed_threshold_minutes: Option<u64>,

    /// RUNTIME_IDLE_SECONDS in minutes (the shorter of this and IDLE_TIMEOUT_HOURS applies).
    #[arg(long, env = "CLEANUP_IDLE_THRESHOLD_MINUTES")]
    pub cleanup_idle_threshold_minutes: Option<u64>,

    /// Not implemented (a warning says why).
    #[arg(long, env = "CLEANUP_RESTART_THRESHOLD")]
    pub cleanup_restart_threshold: Option<String>,

    /// Not implemented (a warning says why).
    #[arg(long, env = "NODE_SCORING_ENABLED")]
    pub node_scoring_enabled: Option<String>,

    /// Not implemented (a warning says why).
    #[arg(long, env = "NODE_SCORING_CPU_THRESHOLD")]
    pub node_scoring_cpu_threshold: Option<String>,

    /// Not implemented (a warning says why).
    #[arg(long, env = "NODE_SCORING_MEM_THRESHOLD")]
    pub node_scoring_mem_threshold: Option<String>,

    /// Not implemented (a warning says why).
    #[arg(long, env = "NODE_SCORING_LABEL_SELECTOR")]
    pub node_scoring_label_selector: Option<String>,

    /// Not implemented: traces go out over OTLP (OTEL_EXPORTER_OTLP_ENDPOINT).
    #[arg(long, env = "DD_AGENT_HOST")]
    pub dd_agent_host: Option<String>,
}

/// The key of the CA bundle when the Secret is named by the original's CA_CERT_SECRET_NAME.
pub const ORIGINAL_CA_KEY: &str = "ca-certificates.crt";

/// Why the node-scoring settings are ignored.
const NODE_SCORING_WHY: &str = "the Kubernetes scheduler already places sandboxes by their \
    requests (SANDBOX_CPU_REQUEST, SANDBOX_MEMORY_REQUEST), which a point-in-time metrics hint \
    cannot improve; restrict nodes with SANDBOX_NODE_SELECTOR";

impl Config {
    /// Maps the original's settings onto ours where ours are not set (`ours_set` tells whether a
    /// setting of ours, by field name, was given). Returns one warning line per original setting
    /// that is ignored: overridden by ours, or not implemented here.
    pub fn apply_original_names(&mut self, ours_set: impl Fn(&str) -> bool) -> Vec<String> {
        let o = self.original.clone();
        let mut warnings = Vec::new();
        // Applies `value` to our setting `id` unless that is set; then the original's `names`
        // are reported as ignored.
        let mut map = |id: &str, ours: &str, names: &[&str], apply: &mut dyn FnMut()| {
            if ours_set(id) {
                let names = names.join(" and ");
                warnings.push(format!("{names} ignored: {ours} is set and takes precedence"));
            } else {
                apply();
            }
        };

        if let Some(annotations) = &o.sandbox_ingress_annotations {
            let ours = &mut self.kubernetes.ingress_annotations;
            map(
                "ingress_annotations",
                "INGRESS_ANNOTATIONS",
                &["SANDBOX_INGRESS_ANNOTATIONS"],
                &mut || *ours = annotations.clone(),
            );
        }
        if let Some(name) = &o.ca_cert_secret_name {
            let k = &mut self.kubernetes;
            map("ca_cert_secret", "CA_CERT_SECRET", &["CA_CERT_SECRET_NAME"], &mut || {
                k.ca_cert_secret = Some(name.clone());
                k.ca_cert_secret_key.get_or_insert_with(|| ORIGINAL_CA_KEY.to_string());
            });
        }
        if let Some(timeout) = o.shutdown_timeout {
            let ours = &mut self.http.shutdown_timeout_seconds;
            map(
                "shutdown_timeout_seconds",
                "SHUTDOWN_TIMEOUT_SECONDS",
                &["SHUTDOWN_TIMEOUT"],
                &mut || *ours = timeout.as_secs_f64().ceil() as u64,
            );
        }

        let m = &mut self.maintenance;
        // Idle: the original's reaper (IDLE_TIMEOUT_HOURS) and its cleanup
        // (CLEANUP_IDLE_THRESHOLD_MINUTES, when cleanup is on) both delete; the shorter applies,
        // and here it pauses.
        let cleanup_on = o.cleanup_enabled != Some(false);
        let idle_names: Vec<&str> = [
            o.idle_timeout_hours.map(|_| "IDLE_TIMEOUT_HOURS"),
            o.cleanup_idle_threshold_minutes
                .filter(|_| cleanup_on)
                .map(|_| "CLEANUP_IDLE_THRESHOLD_MINUTES"),
        ]
        .into_iter()
        .flatten()
        .collect();
        let idle = [
            o.idle_timeout_hours.map(|h| h.saturating_mul(3600)),
            o.cleanup_idle_threshold_minutes.filter(|_| cleanup_on).map(|m| m.saturating_mul(60)),
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(idle) = idle {
            map("runtime_idle_seconds", "RUNTIME_IDLE_SECONDS", &idle_names, &mut || {
                m.runtime_idle_seconds = idle
            });
        }
        // Failed: after CLEANUP_FAILED_THRESHOLD_MINUTES, or never when cleanup is off.
        let failed = match (cleanup_on, o.cleanup_failed_threshold_minutes) {
            (false, _) => Some((0, "CLEANUP_ENABLED")),
            (true, Some(minutes)) => {
                Some((minutes.saturating_mul(60), "CLEANUP_FAILED_THRESHOLD_MINUTES"))
            }
            (true, None) => None,
        };
        if let Some((seconds, name)) = failed {
            map("runtime_failed_seconds", "RUNTIME_FAILED_SECONDS", &[name], &mut || {
                m.runtime_failed_seconds = seconds
            });
        }
        // Interval: the original checks idle and failed sandboxes on two clocks; one round here
        // does both, at the shorter period.
        let interval_names: Vec<&str> = [
            o.reaper_check_interval.map(|_| "REAPER_CHECK_INTERVAL"),
            o.cleanup_interval_minutes.map(|_| "CLEANUP_INTERVAL_MINUTES"),
        ]
        .into_iter()
        .flatten()
        .collect();
        let interval = [
            o.reaper_check_interval.map(|d| d.as_secs_f64().ceil() as u64),
            o.cleanup_interval_minutes.map(|m| m.saturating_mul(60)),
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(interval) = interval {
            map(
                "maintenance_interval_seconds",
                "MAINTENANCE_INTERVAL_SECONDS",
                &interval_names,
                &mut || m.maintenance_interval_seconds = interval,
            );
        }

        let unimplemented = [
            (
                "CLEANUP_RESTART_THRESHOLD",
                o.cleanup_restart_threshold.is_some(),
                "a restart count alone is no reason to delete a sandbox that serves; one that \
                 keeps crashing is in error and handled by RUNTIME_FAILED_SECONDS and \
                 RUNTIME_FAILED_ACTION",
            ),
            ("NODE_SCORING_ENABLED", o.node_scoring_enabled.is_some(), NODE_SCORING_WHY),
            (
                "NODE_SCORING_CPU_THRESHOLD",
                o.node_scoring_cpu_threshold.is_some(),
                NODE_SCORING_WHY,
            ),
            (
                "NODE_SCORING_MEM_THRESHOLD",
                o.node_scoring_mem_threshold.is_some(),
                NODE_SCORING_WHY,
            ),
            (
                "NODE_SCORING_LABEL_SELECTOR",
                o.node_scoring_label_selector.is_some(),
                NODE_SCORING_WHY,
            ),
            (
                "DD_AGENT_HOST",
                o.dd_agent_host.is_some(),
                "traces are exported over OTLP: set OTEL_EXPORTER_OTLP_ENDPOINT (the Datadog \
                 Agent accepts OTLP)",
            ),
        ];
        for (name, set, why) in unimplemented {
            if set {
                warnings.push(format!("{name} is not implemented and is ignored: {why}"));
            }
        }
        warnings
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Parses `args` (the original's settings given as their flags, which read the same
    /// variables) and returns the configuration and its warnings.
    fn parse(args: &[&str]) -> (Config, Vec<String>) {
        let all = ["runtime-api", "--api-key", "k"].iter().chain(args);
        Config::with_warnings(all).unwrap()
    }

    #[test]
    fn every_original_setting_reads_the_originals_variable() {
        let command = Config::command();
        let env = |id: &str| {
            let arg = command.get_arguments().find(|a| a.get_id() == id).unwrap();
            arg.get_env().unwrap().to_str().unwrap().to_string()
        };
        for (id, var) in [
            ("sandbox_ingress_annotations", "SANDBOX_INGRESS_ANNOTATIONS"),
            ("ca_cert_secret_name", "CA_CERT_SECRET_NAME"),
            ("ca_cert_secret_key", "CA_CERT_SECRET_KEY"),
            ("shutdown_timeout", "SHUTDOWN_TIMEOUT"),
            ("idle_timeout_hours", "IDLE_TIMEOUT_HOURS"),
            ("reaper_check_interval", "REAPER_CHECK_INTERVAL"),
            ("cleanup_enabled", "CLEANUP_ENABLED"),
            ("cleanup_interval_minutes", "CLEANUP_INTERVAL_MINUTES"),
            ("cleanup_failed_threshold_minutes", "CLEANUP_FAILED_THRESHOLD_MINUTES"),
            ("cleanup_idle_threshold_minutes", "CLEANUP_IDLE_THRESHOLD_MINUTES"),
            ("cleanup_restart_threshold", "CLEANUP_RESTART_THRESHOLD"),
            ("node_scoring_enabled", "NODE_SCORING_ENABLED"),
            ("node_scoring_cpu_threshold", "NODE_SCORING_CPU_THRESHOLD"),
            ("node_scoring_mem_threshold", "NODE_SCORING_MEM_THRESHOLD"),
            ("node_scoring_label_selector", "NODE_SCORING_LABEL_SELECTOR"),
            ("dd_agent_host", "DD_AGENT_HOST"),
            ("image_pull_secrets", "IMAGE_PULL_SECRETS"),
            ("k8s_operation_timeout", "K8S_OPERATION_TIMEOUT"),
            ("k8s_query_timeout", "K8S_QUERY_TIMEOUT"),
            ("log_level", "LOG_LEVEL"),
        ] {
            assert_eq!(env(id), var);
        }
    }

    #[test]
    fn sandbox_ingress_annotations_become_ingress_annotations() {
        let (c, w) =
            parse(&["--sandbox-ingress-annotations", "cert-manager.io/cluster-issuer=le, a=b=c"]);
        assert_eq!(c.kubernetes.ingress_annotations.0["cert-manager.io/cluster-issuer"], "le");
        assert_eq!(c.kubernetes.ingress_annotations.0["a"], "b=c");
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn ca_cert_secret_name_uses_the_originals_default_key() {
        let (c, _) = parse(&["--ca-cert-secret-name", "corp-ca"]);
        assert_eq!(c.kubernetes.ca_cert_secret.as_deref(), Some("corp-ca"));
        assert_eq!(c.kubernetes.ca_cert_secret_key.as_deref(), Some("ca-certificates.crt"));
        let (c, _) =
            parse(&["--ca-cert-secret-name", "corp-ca", "--ca-cert-secret-key", "bundle.pem"]);
        assert_eq!(c.kubernetes.ca_cert_secret_key.as_deref(), Some("bundle.pem"));
        // Our own name keeps our default key (chosen where the Secret is mounted).
        let (c, _) = parse(&["--ca-cert-secret", "corp-ca"]);
        assert_eq!(c.kubernetes.ca_cert_secret_key, None);
    }

    #[test]
    fn shutdown_timeout_is_a_go_duration() {
        let (c, _) = parse(&["--shutdown-timeout", "1m30s"]);
        assert_eq!(c.http.shutdown_timeout_seconds, 90);
        let (c, _) = parse(&["--shutdown-timeout", "1500ms"]);
        assert_eq!(c.http.shutdown_timeout_seconds, 2, "rounded up");
        let e =
            Config::with_warnings(["runtime-api", "--api-key", "k", "--shutdown-timeout", "30"]);
        assert!(e.unwrap_err().to_string().contains("invalid duration"));
    }

    #[test]
    fn idle_settings_pause_at_the_shorter_limit() {
        let (c, _) = parse(&["--idle-timeout-hours", "72"]);
        assert_eq!(c.maintenance.runtime_idle_seconds, 72 * 3600);
        let (c, _) =
            parse(&["--idle-timeout-hours", "72", "--cleanup-idle-threshold-minutes", "1440"]);
        assert_eq!(c.maintenance.runtime_idle_seconds, 1440 * 60);
        let (c, _) = parse(&[
            "--idle-timeout-hours",
            "72",
            "--cleanup-idle-threshold-minutes",
            "60",
            "--cleanup-enabled",
            "false",
        ]);
        assert_eq!(
            c.maintenance.runtime_idle_seconds,
            72 * 3600,
            "cleanup off: its idle limit too"
        );
    }

    #[test]
    fn cleanup_failed_threshold_and_cleanup_enabled() {
        let (c, _) = parse(&["--cleanup-failed-threshold-minutes", "60"]);
        assert_eq!(c.maintenance.runtime_failed_seconds, 3600);
        assert_eq!(c.maintenance.runtime_failed_action, crate::maintenance::FailedAction::Pause);
        let (c, _) = parse(&["--cleanup-enabled", "0", "--cleanup-failed-threshold-minutes", "60"]);
        assert_eq!(
            c.maintenance.runtime_failed_seconds, 0,
            "cleanup off: failed runtimes left alone"
        );
        let (c, _) = parse(&["--cleanup-enabled", "true"]);
        assert_eq!(c.maintenance.runtime_failed_seconds, 900, "ours unchanged");
        let e =
            Config::with_warnings(["runtime-api", "--api-key", "k", "--cleanup-enabled", "yes"]);
        assert!(e.is_err());
    }

    #[test]
    fn check_intervals_take_the_shorter() {
        let (c, _) = parse(&["--reaper-check-interval", "15m"]);
        assert_eq!(c.maintenance.maintenance_interval_seconds, 900);
        let (c, _) = parse(&["--reaper-check-interval", "15m", "--cleanup-interval-minutes", "5"]);
        assert_eq!(c.maintenance.maintenance_interval_seconds, 300);
    }

    #[test]
    fn ours_take_precedence_and_the_original_is_reported_ignored() {
        let (c, w) = parse(&[
            "--sandbox-ingress-annotations",
            "a=original",
            "--ingress-annotations",
            "a=ours",
            "--idle-timeout-hours",
            "1",
            "--runtime-idle-seconds",
            "60",
            "--shutdown-timeout",
            "5s",
            "--shutdown-timeout-seconds",
            "7",
        ]);
        assert_eq!(c.kubernetes.ingress_annotations.0["a"], "ours");
        assert_eq!(c.maintenance.runtime_idle_seconds, 60);
        assert_eq!(c.http.shutdown_timeout_seconds, 7);
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(
            w[0].starts_with("SANDBOX_INGRESS_ANNOTATIONS ignored: INGRESS_ANNOTATIONS is set")
        );
        assert!(w[1].starts_with("SHUTDOWN_TIMEOUT ignored: SHUTDOWN_TIMEOUT_SECONDS is set"));
        assert!(w[2].starts_with("IDLE_TIMEOUT_HOURS ignored: RUNTIME_IDLE_SECONDS is set"));
        assert!(w.iter().all(|l| !l.contains('\n')));
    }

    #[test]
    fn unimplemented_settings_warn_once_each_with_the_reason() {
        let (_, w) = parse(&[
            "--cleanup-restart-threshold",
            "5",
            "--node-scoring-enabled",
            "true",
            "--node-scoring-label-selector",
            "pool=sandbox",
            "--dd-agent-host",
            "datadog",
        ]);
        assert_eq!(w.len(), 4, "{w:?}");
        assert!(w[0].starts_with("CLEANUP_RESTART_THRESHOLD is not implemented"));
        assert!(w[1].contains("scheduler"));
        assert!(w[2].starts_with("NODE_SCORING_LABEL_SELECTOR"));
        assert!(w[3].contains("OTEL_EXPORTER_OTLP_ENDPOINT"));
    }

    #[test]
    fn timeouts_log_level_and_pull_secrets() {
        let (c, _) = parse(&[
            "--k8s-operation-timeout",
            "2m",
            "--k8s-query-timeout",
            "5s",
            "--log-level",
            "DEBUG",
            "--image-pull-secrets",
            "regcred,other",
        ]);
        assert_eq!(c.kubernetes.k8s_operation_timeout, Duration::from_secs(120));
        assert_eq!(c.kubernetes.k8s_query_timeout, Duration::from_secs(5));
        assert_eq!(c.http.log_level, Some(crate::telemetry::LogLevel::Debug));
        assert_eq!(c.kubernetes.image_pull_secrets.0, ["regcred", "other"]);
        let (c, _) = parse(&[]);
        assert_eq!(c.kubernetes.k8s_operation_timeout, Duration::from_secs(60));
        assert_eq!(c.kubernetes.k8s_query_timeout, Duration::from_secs(10));
    }
}
