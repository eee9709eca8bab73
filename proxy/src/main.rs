use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = proxy::args::Args::parse();
    proxy::app::init_tracing(&args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(proxy::app::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %error, "switchyard-proxy stopped");
            ExitCode::from(error.exit_code())
        }
    }
}
