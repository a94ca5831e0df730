//! `runtime-api`: parse the configuration, set up logging, run the server.

use std::process::ExitCode;

use clap::error::ErrorKind;
use runtime_api::config::Config;
use runtime_api::{server, telemetry};

fn main() -> ExitCode {
    let config = match Config::from_args(std::env::args_os()) {
        Ok(config) => config,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => {
            let rendered = e.render().to_string();
            eprintln!("runtime-api: {}", rendered.lines().next().unwrap_or("invalid arguments"));
            return ExitCode::from(2);
        }
    };
    if let Err(e) = config.validate() {
        eprintln!("runtime-api: {e}");
        return ExitCode::from(2);
    }
    telemetry::init_tracing(config.log_format);
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
