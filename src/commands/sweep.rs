//! The `sweep` subcommands: `run` (this process's shard, stoppable, with the plot of a complete
//! sweep), `plan` (and the Slurm / Kubernetes job file of `--emit`), `status` and `merge`; the
//! sweep itself lives in `crate::sweep`.

use super::plot::default_plot;
use crate::cli::{Emit, SweepCommand, SweepPlanArgs, SweepRunArgs};
use crate::output::{self, Nonfinite};
use crate::signals::{signal_exit, signal_name, stop_on_signals};
use crate::sweep::emit::{self, Given, KubernetesOptions, Resources, SlurmOptions};
use crate::sweep::{self, store};

/// Runs one `sweep` subcommand; returns its exit code.
pub fn execute(cmd: SweepCommand) -> anyhow::Result<i32> {
    match cmd {
        SweepCommand::Run(a) => run(&a),
        SweepCommand::Plan(a) => plan(&a),
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

/// `sweep run`: 1 when a point failed or has non-finite values, 130/143 when a signal stopped it.
fn run(a: &SweepRunArgs) -> anyhow::Result<i32> {
    let stop = stop_on_signals()?;
    let stop = &*stop;
    let devices = sweep::parse_devices(&a.devices, crate::engine::gpu::adapters)?;
    let spec = sweep::load(&a.spec, &a.set)?;
    let report = sweep::run(
        &spec,
        &sweep::RunOptions { out: &a.out, force: a.force, shard: a.shard, threads: a.threads, devices, stop },
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
        let (withheld, faults) = report.nonfinite.iter().fold((0, 0), |(w, f), (_, pw, pf)| (w + pw, f + pf));
        eprintln!(
            "warning: {} done points of this shard have non-finite values left out of their statistics: {} (`sweep status {}` lists them)",
            report.nonfinite.len(),
            Nonfinite::totals(withheld, faults).message(None),
            a.out.display()
        );
    }
    if !report.unfinished.is_empty() {
        let (shown, more) = report.unfinished.split_at(report.unfinished.len().min(10));
        let more = if more.is_empty() { String::new() } else { format!(" and {} more", more.len()) };
        eprintln!(
            "error: every GPU worker lost its device ({}); {} points of this shard not done (not recorded; a rerun \
             computes them): {}{more}",
            report.lost.join("; "),
            report.unfinished.len(),
            shown.join(", ")
        );
    }
    if let Some((signal, abandoned)) = report.interrupted {
        eprintln!(
            "interrupted by {}: {} of {} points of this shard done, {}; resume with the same command",
            signal_name(signal),
            report.done,
            report.shard_points,
            match abandoned.as_slice() {
                [] => "no point in flight".to_string(),
                [p] => format!("point {p} abandoned"),
                many => format!("points {} abandoned", many.join(", ")),
            }
        );
        return Ok(signal_exit(signal));
    }
    Ok(report.code())
}

/// `sweep plan`: the plan on stdout; with `--emit`, the job file in the results directory (which
/// it initialises), what each task asks for, and the file's path.
fn plan(a: &SweepPlanArgs) -> anyhow::Result<i32> {
    check_job_flags(a)?;
    let spec = sweep::load(&a.spec, &a.set)?;
    print!("{}", sweep::plan(&spec, a.shards)?);
    if let Some(emit) = a.emit {
        let out = a
            .out
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("--emit needs --out DIR (the sweep's results directory)"))?;
        let given = Given { gpus: a.gpus_per_task, cpus: a.cpus_per_task, memory: a.mem, time: a.time };
        let res = Resources::for_points(&spec.expand()?, given);
        check_limits(a, &res)?;
        store::init(out, &spec, false)?;
        let out = std::fs::canonicalize(out)?;
        let (file, text) = match emit {
            Emit::Slurm => {
                let exe = std::env::current_exe()?;
                let opts = SlurmOptions {
                    partition: a.partition.clone(),
                    account: a.account.clone(),
                    gpu_style: a.gpu_request.unwrap_or_default(),
                };
                let script =
                    emit::slurm(&spec.name, &exe, &store::spec_path(&out), &out, a.shards, &res, &opts);
                ("sweep.sbatch", script)
            }
            Emit::K8s => {
                let opts = KubernetesOptions {
                    image: a.image.clone(),
                    pvc: a.pvc.clone(),
                    cpu_limit: a.cpu_limit,
                    memory_limit: a.mem_limit,
                    node_selector: a.node_selector.clone(),
                    tolerations: a.toleration.clone(),
                };
                ("sweep-job.yaml", emit::kubernetes(&spec.name, a.shards, &res, &opts))
            }
        };
        print!("{res}");
        let path = out.join(file);
        output::write_atomic(&path, text.as_bytes())?;
        println!("{}", path.display());
    }
    Ok(0)
}

/// Refuses a job flag that the chosen job file would ignore: before anything is written, so that
/// a request the user typed never silently goes missing.
fn check_job_flags(a: &SweepPlanArgs) -> anyhow::Result<()> {
    let slurm_only = [
        ("--partition", a.partition.is_some()),
        ("--account", a.account.is_some()),
        ("--gpu-request", a.gpu_request.is_some()),
    ];
    let k8s_only = [
        ("--cpu-limit", a.cpu_limit.is_some()),
        ("--mem-limit", a.mem_limit.is_some()),
        ("--node-selector", !a.node_selector.is_empty()),
        ("--toleration", !a.toleration.is_empty()),
    ];
    let both = [
        ("--gpus-per-task", a.gpus_per_task.is_some()),
        ("--cpus-per-task", a.cpus_per_task.is_some()),
        ("--mem", a.mem.is_some()),
        ("--time", a.time.is_some()),
    ];
    let given = |flags: &[(&'static str, bool)]| flags.iter().find(|(_, g)| *g).map(|(f, _)| *f);
    match a.emit {
        None => {
            if let Some(f) = given(&slurm_only).or(given(&k8s_only)).or(given(&both)) {
                anyhow::bail!(
                    "{f} is a request of the job file: it needs --emit slurm or --emit k8s (and --out DIR)"
                );
            }
        }
        Some(Emit::Slurm) => {
            if let Some(f) = given(&k8s_only) {
                anyhow::bail!("{f} applies to --emit k8s only, not to --emit slurm");
            }
        }
        Some(Emit::K8s) => {
            if let Some(f) = given(&slurm_only) {
                anyhow::bail!("{f} applies to --emit slurm only, not to --emit k8s");
            }
        }
    }
    Ok(())
}

/// A Kubernetes limit below its request is refused by the API server: say so here instead.
fn check_limits(a: &SweepPlanArgs, res: &Resources) -> anyhow::Result<()> {
    if let Some(limit) = a.cpu_limit.filter(|&l| l < res.cpus) {
        anyhow::bail!(
            "--cpu-limit {limit} is below the CPU request of {} per task (--cpus-per-task): a limit must be at least the request",
            res.cpus
        );
    }
    if let Some(limit) = a.mem_limit.filter(|&l| l < res.memory) {
        anyhow::bail!(
            "--mem-limit {} is below the memory request of {} per task (--mem{}): a limit must be at least the request",
            limit.kubernetes(),
            res.memory.kubernetes(),
            if a.mem.is_some() { "" } else { ", here the estimate" }
        );
    }
    Ok(())
}
