use std::process::ExitCode;

use clap::Parser;

// The request path allocates many small, short-lived buffers; mimalloc
// serves them measurably faster than glibc's allocator (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = proxy::args::Args::parse();
    let _log_writer = match proxy::app::init_tracing(&args.log_format) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("switchyard-proxy: cannot start the log writer thread: {error}");
            return ExitCode::FAILURE;
        }
    };
    let threads = args
        .worker_threads
        .or_else(|| std::thread::available_parallelism().ok())
        .map_or(1, std::num::NonZeroUsize::get);
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    let runtime = match builder.enable_all().build() {
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
