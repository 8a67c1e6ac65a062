//! Raw command-line flags (clap). `RunArgs::to_config` turns them into a validated `Config`;
//! every model flag is optional and overrides `--config FILE` and then the defaults.

use crate::config::{
    Attention, Config, Engine, Input, Mask, Mlp, Norm, Precision, Skip, Weights, MAX_THREADS,
};
use crate::sweep::emit::resources::{is_dns_subdomain, MAX_GPUS};
use crate::sweep::emit::{GpuStyle, Memory, NodeLabel, TimeLimit, Toleration};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

// Value parsers: clap names the flag and the value, these say what is allowed. Ranges that depend
// on other fields are checked by `Config::validate`.

fn whole(s: &str) -> Result<usize, String> {
    s.trim().parse().map_err(|_| format!("expected a whole number from 0 to {}", usize::MAX))
}

fn seed(s: &str) -> Result<u64, String> {
    s.trim().parse().map_err(|_| format!("expected a whole number from 0 to {}", u64::MAX))
}

fn finite(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite())
        .ok_or_else(|| "expected a finite number".to_string())
}

fn thread_count(s: &str) -> Result<usize, String> {
    whole(s)
        .ok()
        .filter(|&t| t <= MAX_THREADS)
        .ok_or_else(|| format!("expected 0 (all cores) to {MAX_THREADS}"))
}

/// The Kubernetes limit on the completions of an Indexed Job.
pub const MAX_SHARDS: usize = 100_000;

fn shard_count(s: &str) -> Result<usize, String> {
    whole(s)
        .ok()
        .filter(|n| (1..=MAX_SHARDS).contains(n))
        .ok_or_else(|| format!("expected 1 to {MAX_SHARDS} (the Kubernetes Indexed Job limit)"))
}

/// A container image reference as it may appear unquoted in the Job's YAML.
fn image_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 255
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c));
    ok.then(|| s.to_string()).ok_or_else(|| {
        "expected an image reference of 1 to 255 characters from A-Z a-z 0-9 . _ - / : @".into()
    })
}

/// A PersistentVolumeClaim name: a DNS-1123 subdomain.
fn claim_name(s: &str) -> Result<String, String> {
    is_dns_subdomain(s)
        .then(|| s.to_string())
        .ok_or_else(|| "expected a DNS-1123 name: 1 to 253 characters from a-z 0-9 - ., starting and ending with a letter or digit".into())
}

fn gpu_count(s: &str) -> Result<usize, String> {
    whole(s).ok().filter(|&n| n <= MAX_GPUS).ok_or_else(|| format!("expected 0 (no GPU) to {MAX_GPUS}"))
}

fn cpu_count(s: &str) -> Result<usize, String> {
    whole(s)
        .ok()
        .filter(|n| (1..=MAX_THREADS).contains(n))
        .ok_or_else(|| format!("expected 1 to {MAX_THREADS}"))
}

/// A Slurm partition or account name as it may appear in an `#SBATCH` line.
fn slurm_name(s: &str) -> Result<String, String> {
    let ok =
        !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    ok.then(|| s.to_string()).ok_or_else(|| "expected 1 to 64 characters from A-Z a-z 0-9 . _ -".into())
}

#[derive(Parser, Debug)]
#[command(
    name = "rankcollapse",
    version,
    about = "Simulate deep stacks of random attention layers and measure rank collapse"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Sweep's variant is large since `sweep plan` has the job flags; the value is built once per
// process, and unboxed it keeps the plain `SweepCommand::Plan(SweepPlanArgs { .. })` patterns.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one configuration and report per-layer collapse metrics.
    Run(Box<RunArgs>),
    /// Grids of configurations: run (resumable, sharded), plan, status, merge.
    #[command(subcommand)]
    Sweep(SweepCommand),
    /// Draw a metric against layer from a run or a merged sweep (SVG and PNG).
    Plot(PlotArgs),
    /// List the GPU adapters (index, name, backend, type, driver, limits); WGPU_BACKEND applies.
    Devices,
    /// Reproduce a paper's results: run its preset experiments, write figures and a report.
    Reproduce(ReproduceArgs),
}

#[derive(clap::Args, Debug)]
pub struct ReproduceArgs {
    /// dong2021 | wu2024 | naderi2024 | amsel2024 | all.
    pub paper: String,
    /// Results directory: <paper>/report.md, <paper>/*.svg and *.png, README.md (all reports).
    #[arg(long)]
    pub out: PathBuf,
    /// Small sizes that run in a couple of minutes on a CPU.
    #[arg(long)]
    pub quick: bool,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = seed)]
    pub seed: u64,
    /// CPU worker threads, 0 = all cores.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = thread_count)]
    pub threads: usize,
    /// auto | cpu | gpu: the engine of the presets' runs (constructed-weight runs are CPU f64).
    #[arg(long, default_value = "auto", value_parser = |s: &str| s.parse::<Engine>())]
    pub engine: Engine,
}

#[derive(Subcommand, Debug)]
pub enum SweepCommand {
    /// Run this process's shard of a sweep spec; finished points are skipped.
    Run(SweepRunArgs),
    /// Print points, shards and estimated cost; --emit writes a Slurm or Kubernetes job file.
    Plan(SweepPlanArgs),
    /// Count done / failed / missing points of a sweep directory (exit status 1 unless complete).
    Status {
        /// The sweep's --out directory.
        dir: PathBuf,
    },
    /// Join all points into one tidy CSV (exit status 1 when incomplete, unless --allow-partial).
    Merge(SweepMergeArgs),
}

#[derive(clap::Args, Debug)]
pub struct SweepRunArgs {
    /// The sweep spec (TOML: [sweep], [fixed], [grid], [[exclude]]).
    pub spec: PathBuf,
    /// Results directory (points/<id>.json, sweep.toml, merged.csv when complete).
    #[arg(long)]
    pub out: PathBuf,
    /// Override a field for every point, KEY=VALUE (repeatable); a swept field becomes fixed.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Recompute finished points (and replace a different sweep in --out).
    #[arg(long)]
    pub force: bool,
    /// Run shard I of N (0-based); default: from SLURM_ARRAY_TASK_ID/COUNT/MIN or
    /// JOB_COMPLETION_INDEX with RANKCOLLAPSE_SHARD_COUNT, else the whole sweep.
    #[arg(long, allow_hyphen_values = true, value_parser = |s: &str| s.parse::<crate::sweep::spec::Shard>().map_err(|e| e.to_string()))]
    pub shard: Option<crate::sweep::spec::Shard>,
    /// CPU threads per point (default: the spec's, 0 = all cores).
    #[arg(long, allow_negative_numbers = true, value_parser = thread_count)]
    pub threads: Option<usize>,
    /// all: each point runs on the engine its configuration picks (auto: a hardware GPU if any);
    /// cpu | gpu: points whose engine is auto run on that engine; these run one point at a time.
    /// gpu:all: one worker per GPU (every hardware adapter of the first backend with one, else
    /// adapter 0); gpu:I,J,...: one worker per listed adapter index of `rankcollapse devices`
    /// (repeat an index for two workers on one adapter). Workers share the shard's points.
    #[arg(long, default_value = "all")]
    pub devices: String,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emit {
    Slurm,
    K8s,
}

#[derive(clap::Args, Debug)]
pub struct SweepPlanArgs {
    pub spec: PathBuf,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Number of shards (array tasks / completion indexes).
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = shard_count)]
    pub shards: usize,
    /// Write a job file: slurm (DIR/sweep.sbatch) or k8s (DIR/sweep-job.yaml); needs --out.
    #[arg(long, value_enum, requires = "out")]
    pub emit: Option<Emit>,
    /// The sweep's results directory (the job file and the effective spec go there).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Container image of the Kubernetes Job.
    #[arg(long, default_value = "rankcollapse:latest", value_parser = image_name)]
    pub image: String,
    /// PersistentVolumeClaim of the Kubernetes Job (mounted at /sweep).
    #[arg(long, default_value = "rankcollapse-sweep", value_parser = claim_name)]
    pub pvc: String,
    /// GPUs per task, 0 to 16 [default: 1 when a point runs on the GPU engine, else 0].
    #[arg(long, allow_negative_numbers = true, value_parser = gpu_count)]
    pub gpus_per_task: Option<usize>,
    /// CPUs per task [default: the points' largest threads; 4 when threads = 0 (all cores)].
    #[arg(long, allow_negative_numbers = true, value_parser = cpu_count)]
    pub cpus_per_task: Option<usize>,
    /// Memory per task: N with M/Mi, G/Gi or T/Ti (binary units) [default: an estimate from the points].
    #[arg(long, allow_negative_numbers = true, value_parser = |s: &str| s.parse::<Memory>())]
    pub mem: Option<Memory>,
    /// Time limit per task, as Slurm writes it (MINUTES, H:MM:SS, D-HH:MM:SS, ...) [default: none].
    #[arg(long, allow_negative_numbers = true, value_parser = |s: &str| s.parse::<TimeLimit>())]
    pub time: Option<TimeLimit>,
    /// Slurm: how to ask for GPUs, gres (--gres=gpu:N) or gpus-per-task (--gpus-per-task=N)
    /// [default: gres].
    #[arg(long, value_enum)]
    pub gpu_request: Option<GpuStyle>,
    /// Slurm partition [default: the cluster's default].
    #[arg(long, value_parser = slurm_name)]
    pub partition: Option<String>,
    /// Slurm account [default: the user's default].
    #[arg(long, value_parser = slurm_name)]
    pub account: Option<String>,
    /// Kubernetes CPU limit per task, at least --cpus-per-task [default: none].
    #[arg(long, allow_negative_numbers = true, value_parser = cpu_count)]
    pub cpu_limit: Option<usize>,
    /// Kubernetes memory limit per task, at least --mem [default: the memory request].
    #[arg(long, allow_negative_numbers = true, value_parser = |s: &str| s.parse::<Memory>())]
    pub mem_limit: Option<Memory>,
    /// Kubernetes node selector KEY=VALUE (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = |s: &str| s.parse::<NodeLabel>())]
    pub node_selector: Vec<NodeLabel>,
    /// Kubernetes toleration KEY=VALUE:EFFECT or KEY:EFFECT (repeatable).
    #[arg(long, value_name = "KEY[=VALUE]:EFFECT", value_parser = |s: &str| s.parse::<Toleration>())]
    pub toleration: Vec<Toleration>,
}

#[derive(clap::Args, Debug)]
pub struct SweepMergeArgs {
    pub dir: PathBuf,
    /// Output file [default: DIR/merged.csv].
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Merge what is there even if points are missing or failed (they are listed).
    #[arg(long)]
    pub allow_partial: bool,
}

#[derive(clap::Args, Debug)]
pub struct PlotArgs {
    /// A run's --out directory or layers.csv, or a sweep directory or merged CSV.
    pub input: PathBuf,
    /// The metric to draw.
    #[arg(long, default_value = "log10_res_fro")]
    pub metric: String,
    /// For a sweep: one line per value of this swept parameter (default: the first that varies).
    #[arg(long)]
    pub by: Option<String>,
    /// Output path without extension [default: next to the input, plot-<metric>].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// TOML file with a configuration (field names = flag names with '_'); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Number of layers [default: 8].
    #[arg(long, allow_negative_numbers = true, value_parser = whole)]
    pub depth: Option<usize>,
    /// Tokens per sequence (n) [default: 32].
    #[arg(long, allow_negative_numbers = true, value_parser = whole)]
    pub tokens: Option<usize>,
    /// Model width (d) [default: 32].
    #[arg(long, allow_negative_numbers = true, value_parser = whole)]
    pub width: Option<usize>,
    /// Attention heads (H) [default: 1].
    #[arg(long, allow_negative_numbers = true, value_parser = whole)]
    pub heads: Option<usize>,
    /// Rank r of W_Q, W_K per head [default: width / heads].
    #[arg(long, allow_negative_numbers = true, value_parser = whole)]
    pub head_rank: Option<usize>,
    /// Value dimension per head [default: width / heads].
    #[arg(long, allow_negative_numbers = true, value_parser = whole)]
    pub value_dim: Option<usize>,
    /// full | causal | window:W (|i-j| < W) | causal-window:W (i-W < j <= i) [default: full].
    #[arg(long, value_parser = |s: &str| s.parse::<Mask>())]
    pub mask: Option<Mask>,
    /// softmax | markov (input-independent random Markov) | uniform | identity [default: softmax].
    #[arg(long, value_parser = |s: &str| s.parse::<Attention>())]
    pub attention: Option<Attention>,
    /// Use A - 11^T/n instead of A (the Mind-the-Gap fix).
    #[arg(long)]
    pub remove_outlier: bool,
    /// Score temperature tau [default: 1/sqrt(head_rank)].
    #[arg(long, allow_negative_numbers = true, value_parser = finite)]
    pub temperature: Option<f64>,
    /// none | pre-ln | post-ln | rms | pre-rms | post-rms | sphere | pre-sphere | post-sphere [default: none].
    #[arg(long, value_parser = |s: &str| s.parse::<Norm>())]
    pub norm: Option<Norm>,
    /// Epsilon of LayerNorm / RMSNorm [default: 1e-5].
    #[arg(long, allow_negative_numbers = true, value_parser = finite)]
    pub norm_eps: Option<f64>,
    /// Gain of the normalisation (same for every feature) [default: 1].
    #[arg(long, allow_negative_numbers = true, value_parser = finite)]
    pub norm_gain: Option<f64>,
    /// Bias of the normalisation (same for every feature) [default: 0].
    #[arg(long, allow_negative_numbers = true, value_parser = finite)]
    pub norm_bias: Option<f64>,
    /// none | standard (X + f(X)) | scaled:A,B (A X + B f(X)) [default: none].
    #[arg(long, value_parser = |s: &str| s.parse::<Skip>())]
    pub skip: Option<Skip>,
    /// none | relu:K | gelu:K (hidden width K x width) [default: none].
    #[arg(long, value_parser = |s: &str| s.parse::<Mlp>())]
    pub mlp: Option<Mlp>,
    /// Weights of both MLP matrices: gaussian (std 1/sqrt(fan-in)) | gaussian:STD | orthogonal | identity | scaled-identity:C [default: gaussian].
    #[arg(long, value_parser = |s: &str| s.parse::<Weights>())]
    pub mlp_weights: Option<Weights>,
    /// W_V: gaussian | gaussian:STD | orthogonal | identity | scaled-identity:C [default: gaussian].
    #[arg(long, value_parser = |s: &str| s.parse::<Weights>())]
    pub value: Option<Weights>,
    /// W_Q and W_K: gaussian | gaussian:STD | orthogonal | identity | scaled-identity:C (square ones need head_rank = width) [default: gaussian, std 1/sqrt(width)].
    #[arg(long, value_parser = |s: &str| s.parse::<Weights>())]
    pub qk: Option<Weights>,
    /// W_O: gaussian | gaussian:STD | orthogonal | identity | none [default: identity].
    #[arg(long, value_parser = |s: &str| s.parse::<Weights>())]
    pub out_proj: Option<Weights>,
    /// gaussian | orthonormal | sphere | shared:RHO (token correlation RHO) [default: gaussian].
    #[arg(long, value_parser = |s: &str| s.parse::<Input>())]
    pub input: Option<Input>,
    /// The same weights in every layer.
    #[arg(long)]
    pub share_layers: bool,
    /// A fresh network for every sequence (default: one network for all sequences).
    #[arg(long)]
    pub per_sequence_weights: bool,
    /// Independent sequences (the statistics are over these) [default: 16].
    #[arg(long, allow_negative_numbers = true, value_parser = whole)]
    pub sequences: Option<usize>,
    /// Seed of every random draw [default: 0].
    #[arg(long, allow_negative_numbers = true, value_parser = seed)]
    pub seed: Option<u64>,
    /// auto | cpu | gpu [default: auto].
    #[arg(long, value_parser = |s: &str| s.parse::<Engine>())]
    pub engine: Option<Engine>,
    /// Float type of the CPU engine: f32 | f64 [default: f64].
    #[arg(long, value_parser = |s: &str| s.parse::<Precision>())]
    pub precision: Option<Precision>,
    /// Attention spectrum (sigma_1, sigma_2 of A and A - 11^T/n) every K-th layer, 0 = never.
    /// It forms each n x n attention matrix and runs Lanczos on it: O(n^2) memory and several
    /// n^2 products per head [default: 1].
    #[arg(long, allow_negative_numbers = true, value_parser = whole)]
    pub spectrum_every: Option<usize>,
    /// CPU worker threads, 0 = all cores [default: 0].
    #[arg(long, allow_negative_numbers = true, value_parser = thread_count)]
    pub threads: Option<usize>,
    /// GPU adapter: index or name substring from `rankcollapse devices` [default: WGPU_ADAPTER_NAME,
    /// else the first hardware adapter, else the first].
    #[arg(long)]
    pub adapter: Option<String>,
    /// Device memory the GPU engine may use per chunk of sequences, MiB [default: 1024].
    #[arg(long, allow_negative_numbers = true, value_parser = whole)]
    pub gpu_memory_mb: Option<usize>,
    /// Sequences per GPU chunk, 0 = as many as fit the memory budget and binding limit [default: 0].
    /// Results do not depend on it.
    #[arg(long, allow_negative_numbers = true, value_parser = whole)]
    pub chunk: Option<usize>,
    /// Print a per-kernel GPU timing table (timestamp queries) to stderr; GPU engine only.
    #[arg(long)]
    pub profile: bool,
    /// Directory for layers.csv and manifest.json (created if missing).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write sequences.csv (every sequence x layer) into --out.
    #[arg(long)]
    pub sequences_csv: bool,
    /// What to print: a table, or the whole result as JSON.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

impl RunArgs {
    /// The configuration these flags describe: defaults, then `--config`, then the flags. An
    /// invalid field is reported with where its value came from (a flag, the file, the default).
    pub fn to_config(&self) -> anyhow::Result<Config> {
        let (mut c, file_keys) = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("reading --config {}: {e}", path.display()))?;
                let c = Config::from_toml(&text)
                    .map_err(|e| anyhow::anyhow!("in --config {}: {e}", path.display()))?;
                let keys: Vec<String> = text.parse::<toml::Table>()?.keys().cloned().collect();
                (c, keys)
            }
            None => (Config::default(), Vec::new()),
        };
        let mut from_flags: Vec<&'static str> = Vec::new();
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { c.$f = v; from_flags.push(stringify!($f)); } )* };
        }
        macro_rules! set_option {
            ($($f:ident),*) => { $( if self.$f.is_some() { c.$f.clone_from(&self.$f); from_flags.push(stringify!($f)); } )* };
        }
        macro_rules! set_switch {
            ($($f:ident),*) => { $( if self.$f { c.$f = true; from_flags.push(stringify!($f)); } )* };
        }
        set!(
            depth,
            tokens,
            width,
            heads,
            mask,
            attention,
            norm,
            norm_eps,
            norm_gain,
            norm_bias,
            skip,
            mlp,
            mlp_weights,
            value,
            qk,
            out_proj,
            input,
            sequences,
            seed,
            engine,
            precision,
            spectrum_every,
            threads,
            gpu_memory_mb,
            chunk
        );
        set_option!(adapter, head_rank, value_dim, temperature);
        set_switch!(remove_outlier, share_layers, per_sequence_weights, profile);
        if let Err(e) = c.validate() {
            let source = if from_flags.contains(&e.field) {
                format!("set by --{}", e.field.replace('_', "-"))
            } else if let (Some(path), true) = (&self.config, file_keys.iter().any(|k| k == e.field)) {
                format!("set in --config {}", path.display())
            } else {
                "the default".to_string()
            };
            anyhow::bail!("{e} ({source})");
        }
        if self.sequences_csv && self.out.is_none() {
            anyhow::bail!("--sequences-csv is invalid without --out DIR (sequences.csv is written there)");
        }
        Ok(c)
    }
}
