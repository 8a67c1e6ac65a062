//! The `rankcollapse` binary: parse, dispatch, print the error chain, set the exit code.

use clap::Parser;
use rankcollapse::cli::{Cli, Command, Emit, Format, RunArgs, SweepCommand};
use rankcollapse::sweep;
use rankcollapse::{engine, output};
use std::time::Instant;

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(&args),
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
        let per_metric: Vec<String> = rankcollapse::metrics::METRICS
            .iter()
            .filter_map(|name| {
                let k: usize =
                    stats.iter().flatten().filter(|(n, _)| n == name).map(|(_, s)| s.nonfinite).sum();
                (k > 0).then(|| format!("{name} {k}"))
            })
            .collect();
        eprintln!(
            "warning: {bad} values are not in the statistics (the nonfinite column): {}. sigma_ratio is \
             withheld where it lies below {:.1e} of the sigma_1 it is resolved against; any other metric \
             here is a numerical fault.",
            per_metric.join(", "),
            match cfg.precision {
                rankcollapse::config::Precision::F32 => rankcollapse::metrics::sigma_ratio_floor::<f32>(),
                rankcollapse::config::Precision::F64 => rankcollapse::metrics::sigma_ratio_floor::<f64>(),
            }
        );
        return Ok(1);
    }
    Ok(0)
}

fn sweep_command(cmd: SweepCommand) -> anyhow::Result<i32> {
    match cmd {
        SweepCommand::Run(a) => {
            sweep::parse_devices(&a.devices)?;
            let spec = sweep::load(&a.spec, &a.set)?;
            let code = sweep::run(
                &spec,
                &sweep::RunOptions { out: &a.out, force: a.force, shard: a.shard, threads: a.threads },
            )?;
            if code == 0 && a.out.join("merged.csv").exists() {
                default_plot(&a.out);
            }
            Ok(code)
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
