//! The `rankcollapse` binary: parse, dispatch, print the error chain, set the exit code.

use clap::Parser;
use rankcollapse::cli::{Cli, Command, Format, RunArgs};
use rankcollapse::{engine, output};
use std::time::Instant;

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(&args),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}

/// `rankcollapse run`; returns the exit code (1 when some values were non-finite).
fn run(args: &RunArgs) -> anyhow::Result<i32> {
    let started = Instant::now();
    let cfg = args.to_config()?;
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("creating --out {}: {e}", dir.display()))?;
    }
    let out = engine::run(&cfg)?;
    let stats = output::summaries(&out);
    let manifest = output::manifest(&cfg, &out, &stats, started.elapsed().as_secs_f64());
    if let Some(dir) = &args.out {
        output::write_atomic(&dir.join("layers.csv"), &output::layers_csv(&stats)?)?;
        if args.sequences_csv {
            output::write_atomic(&dir.join("sequences.csv"), &output::sequences_csv(&out)?)?;
        }
        output::write_atomic(
            &dir.join("manifest.json"),
            serde_json::to_string_pretty(&manifest)?.as_bytes(),
        )?;
    }
    let bad = output::total_nonfinite(&stats);
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&output::result_json(manifest, &stats))?),
        Format::Table => {
            eprintln!(
                "rankcollapse {} | engine {} ({}) | {} sequences x {} layers in {:.2}s",
                env!("CARGO_PKG_VERSION"),
                out.engine,
                out.engine_reason,
                cfg.sequences,
                cfg.depth,
                out.compute_seconds
            );
            print!("{}", output::table(&stats));
        }
    }
    if bad > 0 {
        eprintln!(
            "warning: {bad} non-finite values were excluded from the statistics (see the nonfinite column)"
        );
        return Ok(1);
    }
    Ok(0)
}
