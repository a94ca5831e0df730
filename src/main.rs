//! `runtime-api`: parse the configuration, set up logs and traces, run the server.

use std::process::ExitCode;

use runtime_api::config::{Config, LoadError};
use runtime_api::{memory, server, telemetry};

fn main() -> ExitCode {
    memory::limit_arenas();
    let config = match Config::load(std::env::args_os()) {
        Ok((config, warnings)) => {
            for line in warnings {
                eprintln!("runtime-api: warning: {line}");
            }
            config
        }
        Err(LoadError::Display(help)) => help.exit(),
        Err(LoadError::Invalid(lines)) => {
            for line in lines {
                eprintln!("runtime-api: {line}");
            }
            return ExitCode::from(2);
        }
    };
    // kube, reqwest and the trace exporter use rustls; pick its crypto provider first.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tracing = telemetry::init_tracing(config.http.log_format, config.http.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime-api: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(server::run(config));
    // Outside the async runtime: the exporter's blocking HTTP client flushes the last spans.
    drop(runtime);
    tracing.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runtime-api: {e}");
            ExitCode::FAILURE
        }
    }
}
