//! The `rankcollapse` binary: parse, dispatch, print the error chain, set the exit code.
//! SIGINT/SIGTERM abandon the computation in flight of `run` and `sweep run` (exit 130/143);
//! a second signal exits at once.

use clap::Parser;
use rankcollapse::cli::{Cli, Command, Emit, Format, RunArgs, SweepCommand};
use rankcollapse::output;
use rankcollapse::output::Nonfinite;
use rankcollapse::sweep::{self, Computed};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => stop_on_signals().and_then(|stop| run(&args, &stop)),
        Command::Sweep(cmd) => sweep_command(cmd),
        Command::Plot(args) => plot(&args),
        Command::Devices => {
            print!(
                "{}",
                rankcollapse::engine::gpu::describe_adapters(&rankcollapse::engine::gpu::adapters())
            );
            Ok(0)
        }
        Command::Reproduce(args) => reproduce(&args),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}

/// The stop request SIGINT and SIGTERM set: the signal's number (0 while none came). The first
/// signal only sets it (the work checks it and stops cleanly); a second one exits at once with
/// 128 + its number (signal-hook's conditional shutdown, registered first so that it sees the
/// flag before the first signal arms it). Only `run` and `sweep run` install it; every other
/// command keeps the default action (end at once).
fn stop_on_signals() -> anyhow::Result<Arc<AtomicUsize>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicUsize::new(0));
    let armed = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        let installed =
            signal_hook::flag::register_conditional_shutdown(signal, 128 + signal, Arc::clone(&armed))
                .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&armed)))
                .and_then(|_| signal_hook::flag::register_usize(signal, Arc::clone(&stop), signal as usize));
        installed
            .map_err(|e| anyhow::anyhow!("installing the {} handler: {e}", signal_name(signal as usize)))?;
    }
    Ok(stop)
}

/// The conventional exit status after a signal: 128 + its number (130 SIGINT, 143 SIGTERM).
fn signal_exit(signal: usize) -> i32 {
    128 + signal as i32
}

fn signal_name(signal: usize) -> String {
    signal_hook::low_level::signal_name(signal as i32)
        .map_or_else(|| format!("signal {signal}"), str::to_string)
}

/// `rankcollapse run`; returns the exit code (1 when some values were non-finite, 130/143 when
/// a signal stopped it). A signal during the compute abandons it and writes nothing; the files of
/// `--out` are written only from a finished compute, `manifest.json` last (and an old one
/// removed first), so a directory with a manifest holds one run's whole results.
fn run(args: &RunArgs, stop: &AtomicUsize) -> anyhow::Result<i32> {
    let started = Instant::now();
    let cfg = args.to_config()?;
    if let Some(dir) = &args.out {
        output::probe_output_dir(dir)?;
        output::remove_stale_temps(dir, std::time::Duration::from_secs(3600));
    }
    let out = match sweep::compute(&cfg, stop) {
        Computed::Finished(r) => r.map_err(anyhow::Error::msg)?,
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
        let floor = match cfg.precision {
            rankcollapse::config::Precision::F32 => rankcollapse::metrics::sigma_ratio_floor::<f32>(),
            rankcollapse::config::Precision::F64 => rankcollapse::metrics::sigma_ratio_floor::<f64>(),
        };
        let mut parts = Vec::new();
        if nonfinite.withheld > 0 {
            parts.push(format!(
                "{} withheld (below {floor:.1e} of the sigma_1 they are resolved against; not a fault): {}",
                nonfinite.withheld,
                nonfinite.describe(true)
            ));
        }
        if nonfinite.faults > 0 {
            parts.push(format!("{} numerical faults: {}", nonfinite.faults, nonfinite.describe(false)));
        }
        eprintln!(
            "warning: {} values are not in the statistics (the nonfinite column): {}",
            nonfinite.total(),
            parts.join("; ")
        );
    }
    if let Some(signal) = sweep::stop_requested(stop) {
        eprintln!(
            "interrupted by {} after the compute finished: every file was written",
            signal_name(signal)
        );
        return Ok(signal_exit(signal));
    }
    Ok(i32::from(nonfinite.total() > 0))
}

fn sweep_command(cmd: SweepCommand) -> anyhow::Result<i32> {
    match cmd {
        SweepCommand::Run(a) => {
            let stop = stop_on_signals()?;
            let stop = &*stop;
            let engine = sweep::parse_devices(&a.devices)?;
            let spec = sweep::load(&a.spec, &a.set)?;
            let report = sweep::run(
                &spec,
                &sweep::RunOptions {
                    out: &a.out,
                    force: a.force,
                    shard: a.shard,
                    threads: a.threads,
                    engine,
                    stop,
                },
            )?;
            if report.merged {
                default_plot(&a.out);
            }
            if report.failed > 0 {
                eprintln!(
                    "error: {} points of this shard failed (recorded with the reason; `sweep status {}` lists them, a rerun retries them)",
                    report.failed,
                    a.out.display()
                );
            }
            if !report.nonfinite.is_empty() {
                let (withheld, faults) =
                    report.nonfinite.iter().fold((0, 0), |(w, f), (_, pw, pf)| (w + pw, f + pf));
                eprintln!(
                    "warning: {} done points of this shard have non-finite values left out of their statistics: {} (`sweep status {}` lists them)",
                    report.nonfinite.len(),
                    sweep::describe_nonfinite(withheld, faults),
                    a.out.display()
                );
            }
            if let Some((signal, abandoned)) = report.interrupted {
                eprintln!(
                    "interrupted by {}: {} of {} points of this shard done, {}; resume with the same command",
                    signal_name(signal),
                    report.done,
                    report.shard_points,
                    abandoned
                        .map_or_else(|| "no point in flight".to_string(), |p| format!("point {p} abandoned"))
                );
                return Ok(signal_exit(signal));
            }
            Ok(report.code())
        }
        SweepCommand::Plan(a) => {
            let spec = sweep::load(&a.spec, &a.set)?;
            print!("{}", sweep::plan(&spec, a.shards)?);
            if let Some(emit) = a.emit {
                let out = a.out.as_ref().ok_or_else(|| {
                    anyhow::anyhow!("--emit needs --out DIR (the sweep's results directory)")
                })?;
                sweep::store::init(out, &spec, false)?;
                let out = std::fs::canonicalize(out)?;
                let (file, text) = match emit {
                    Emit::Slurm => {
                        let exe = std::env::current_exe()?;
                        (
                            "sweep.sbatch",
                            sweep::emit::slurm(
                                &spec.name,
                                &exe,
                                &sweep::store::spec_path(&out),
                                &out,
                                a.shards,
                            ),
                        )
                    }
                    Emit::K8s => {
                        ("sweep-job.yaml", sweep::emit::kubernetes(&spec.name, &a.image, &a.pvc, a.shards))
                    }
                };
                let path = out.join(file);
                output::write_atomic(&path, text.as_bytes())?;
                println!("{}", path.display());
            }
            Ok(0)
        }
        SweepCommand::Status { dir } => {
            let (report, code) = sweep::status(&dir)?;
            print!("{report}");
            Ok(code)
        }
        SweepCommand::Merge(a) => {
            let (report, code) = sweep::merge(&a.dir, a.output.as_deref(), a.allow_partial)?;
            print!("{report}");
            Ok(code)
        }
    }
}

/// The plot `sweep run` leaves when a sweep completes (log10_res_fro against layer, one line per
/// value of the first swept parameter); a failure here only warns.
fn default_plot(dir: &std::path::Path) {
    let spec = rankcollapse::plot::PlotSpec { metric: "log10_res_fro".into(), by: None, title: None };
    match rankcollapse::plot::plot_file(&dir.join("merged.csv"), &spec, &dir.join("plot-log10_res_fro")) {
        Ok((svg, png)) => eprintln!("[rankcollapse] plot: {} {}", svg.display(), png.display()),
        Err(e) => eprintln!("warning: no default plot: {e:#}"),
    }
}

/// `rankcollapse reproduce`: the presets of one paper or all.
fn reproduce(args: &rankcollapse::cli::ReproduceArgs) -> anyhow::Result<i32> {
    use rankcollapse::reproduce as rp;
    let papers = rp::parse_papers(&args.paper)?;
    let opts = rp::Options { quick: args.quick, seed: args.seed, threads: args.threads, engine: args.engine };
    rp::reproduce(&papers, &args.out, &opts)?;
    println!("{}", args.out.join("README.md").display());
    Ok(0)
}

/// `rankcollapse plot`: the input may be a run or sweep directory, or a CSV file.
fn plot(args: &rankcollapse::cli::PlotArgs) -> anyhow::Result<i32> {
    let input = if args.input.is_dir() {
        ["merged.csv", "layers.csv"].iter().map(|f| args.input.join(f)).find(|p| p.exists()).ok_or_else(
            || {
                anyhow::anyhow!(
                    "{} holds neither merged.csv (a sweep) nor layers.csv (a run)",
                    args.input.display()
                )
            },
        )?
    } else {
        args.input.clone()
    };
    let stem = args.out.clone().unwrap_or_else(|| {
        input.parent().unwrap_or(std::path::Path::new(".")).join(format!("plot-{}", args.metric))
    });
    let spec = rankcollapse::plot::PlotSpec { metric: args.metric.clone(), by: args.by.clone(), title: None };
    let (svg, png) = rankcollapse::plot::plot_file(&input, &spec, &stem)?;
    println!("{}\n{}", svg.display(), png.display());
    Ok(0)
}
