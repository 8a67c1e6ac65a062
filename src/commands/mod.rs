//! The commands of the `rankcollapse` binary, one module each, so that `main` only parses and
//! reports: each returns its exit code (0 ok, 1 non-finite values or failed points, 130/143
//! after SIGINT/SIGTERM) or the error the binary prints with exit code 2.

mod plot;
mod reproduce;
mod run;
mod sweep;

use crate::cli::Command;
use crate::signals::stop_on_signals;

/// Runs one command; returns its exit code.
pub fn execute(command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Run(args) => stop_on_signals().and_then(|stop| run::run(&args, &stop)),
        Command::Sweep(cmd) => sweep::execute(cmd),
        Command::Plot(args) => plot::plot(&args),
        Command::Devices => {
            print!("{}", crate::engine::gpu::describe_adapters(&crate::engine::gpu::adapters()));
            Ok(0)
        }
        Command::Reproduce(args) => reproduce::reproduce(&args),
    }
}
