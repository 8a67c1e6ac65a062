//! `rankcollapse run`: one configuration through the engine's stoppable entry point, then its
//! files, its table or JSON, and the warning about values left out of the statistics. A signal
//! during the compute abandons it; after it, every file is still written.

use crate::cli::{Format, RunArgs};
use crate::engine::{run_until_stopped, Computed};
use crate::output::{self, Nonfinite};
use crate::signals::{signal_exit, signal_name, stop_requested};
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

/// `rankcollapse run`; returns the exit code (1 when some values were non-finite, 130/143 when
/// a signal stopped it). A signal during the compute abandons it and writes nothing; the files of
/// `--out` are written only from a finished compute, `manifest.json` last (and an old one
/// removed first), so a directory with a manifest holds one run's whole results.
pub fn run(args: &RunArgs, stop: &AtomicUsize) -> anyhow::Result<i32> {
    let started = Instant::now();
    let cfg = args.to_config()?;
    if let Some(dir) = &args.out {
        output::probe_output_dir(dir)?;
        output::remove_stale_temps(dir, std::time::Duration::from_secs(3600));
    }
    let out = match run_until_stopped(&cfg, stop) {
        Computed::Finished(r) => r?,
        Computed::Abandoned(signal) => {
            eprintln!(
                "interrupted by {}: the run was abandoned before its compute finished; nothing was written",
                signal_name(signal)
            );
            return Ok(signal_exit(signal));
        }
    };
    let stats = output::summaries(&out);
    let manifest = output::manifest(&cfg, &out, &stats, started.elapsed().as_secs_f64());
    if let Some(dir) = &args.out {
        let manifest_path = dir.join("manifest.json");
        match std::fs::remove_file(&manifest_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                anyhow::bail!("removing the old {}: {e}", manifest_path.display())
            }
            _ => {}
        }
        output::write_atomic(&dir.join("layers.csv"), &output::layers_csv(&stats)?)?;
        if args.sequences_csv {
            output::write_atomic(&dir.join("sequences.csv"), &output::sequences_csv(&out)?)?;
        }
        output::write_atomic(&manifest_path, serde_json::to_string_pretty(&manifest)?.as_bytes())?;
    }
    let nonfinite = Nonfinite::of_run(&out, &stats);
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
    if nonfinite.total() > 0 {
        eprintln!(
            "warning: {} values are not in the statistics (the nonfinite column): {}",
            nonfinite.total(),
            nonfinite.message(Some(out.sigma_ratio_floor))
        );
    }
    if let Some(signal) = stop_requested(stop) {
        eprintln!(
            "interrupted by {} after the compute finished: every file was written",
            signal_name(signal)
        );
        return Ok(signal_exit(signal));
    }
    Ok(i32::from(nonfinite.total() > 0))
}
