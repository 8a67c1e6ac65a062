//! The `rankcollapse` binary: parse, dispatch, print the error chain, set the exit code. The
//! commands live in the library (`commands`), SIGINT/SIGTERM handling in `signals`.

use clap::Parser;
use rankcollapse::cli::Cli;

fn main() {
    let cli = Cli::parse();
    match rankcollapse::commands::execute(cli.command) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}
