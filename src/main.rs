//! `runtime-api`: parse the configuration, set up logging, run the server.

use std::process::ExitCode;

use runtime_api::config::{Config, LoadError};
use runtime_api::{server, telemetry};

fn main() -> ExitCode {
    let config = match Config::load(std::env::args_os()) {
        Ok(config) => config,
        Err(LoadError::Display(help)) => help.exit(),
        Err(LoadError::Invalid(lines)) => {
            for line in lines {
                eprintln!("runtime-api: {line}");
            }
            return ExitCode::from(2);
        }
    };
    telemetry::init_tracing(config.http.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime-api: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runtime-api: {e}");
            ExitCode::FAILURE
        }
    }
}
