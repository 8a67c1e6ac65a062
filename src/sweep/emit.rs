//! Job files for existing distributed engines: a Slurm job array (`sbatch`) and a Kubernetes
//! Indexed Job. Each array task / completion index runs one shard; the shard is read from the
//! task's environment by `sweep run`. Each task asks for the `Resources` of `resources`.

pub mod resources;

pub use resources::{Given, GpuStyle, Memory, NodeLabel, Resources, TimeLimit, Toleration};
use std::path::Path;

/// The Slurm-only settings of the sbatch script.
#[derive(Clone, Debug, Default)]
pub struct SlurmOptions {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub gpu_style: GpuStyle,
}

/// The `#SBATCH` lines of the resources, in a fixed order (the tests compare them whole).
pub fn slurm_resource_lines(res: &Resources, opts: &SlurmOptions) -> Vec<String> {
    let mut lines = vec![format!("--cpus-per-task={}", res.cpus), format!("--mem={}", res.memory.slurm())];
    if res.gpus > 0 {
        lines.push(match opts.gpu_style {
            GpuStyle::Gres => format!("--gres=gpu:{}", res.gpus),
            GpuStyle::GpusPerTask => format!("--gpus-per-task={}", res.gpus),
        });
    }
    if let Some(t) = res.time {
        lines.push(format!("--time={}", t.slurm()));
    }
    if let Some(p) = &opts.partition {
        lines.push(format!("--partition={p}"));
    }
    if let Some(a) = &opts.account {
        lines.push(format!("--account={a}"));
    }
    lines.into_iter().map(|l| format!("#SBATCH {l}")).collect()
}

/// An sbatch script running `shards` array tasks of `sweep run SPEC --out OUT`.
pub fn slurm(
    name: &str,
    exe: &Path,
    spec: &Path,
    out: &Path,
    shards: usize,
    res: &Resources,
    opts: &SlurmOptions,
) -> String {
    let resources: String = slurm_resource_lines(res, opts).iter().map(|l| format!("{l}\n")).collect();
    format!(
        "#!/bin/bash\n\
         #SBATCH --job-name=rankcollapse-{name}\n\
         #SBATCH --array=0-{last}\n\
         #SBATCH --output={out}/slurm-%A_%a.log\n\
         #SBATCH --ntasks=1\n\
         {resources}\
         # One shard per array task: rankcollapse reads SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT\n\
         # and SLURM_ARRAY_TASK_MIN. Finished points are skipped, so resubmitting resumes.\n\
         set -euo pipefail\n\
         exec {exe} sweep run {spec} --out {out}\n",
        last = shards - 1,
        exe = shell_quote(exe),
        spec = shell_quote(spec),
        out = shell_quote(out),
    )
}

/// The Kubernetes-only settings of the Job.
#[derive(Clone, Debug, Default)]
pub struct KubernetesOptions {
    pub image: String,
    pub pvc: String,
    /// CPU limit (default: none, so a task may use idle CPUs beyond its request).
    pub cpu_limit: Option<usize>,
    /// Memory limit (default: the request, so the estimate is also the ceiling).
    pub memory_limit: Option<Memory>,
    pub node_selector: Vec<NodeLabel>,
    pub tolerations: Vec<Toleration>,
}

/// The container's `resources:` block, indented for the Job below. GPUs are an extended
/// resource: Kubernetes wants them in limits, and requests equal to them.
fn kubernetes_resources(res: &Resources, opts: &KubernetesOptions) -> String {
    let gpu =
        if res.gpus > 0 { format!("            nvidia.com/gpu: \"{}\"\n", res.gpus) } else { String::new() };
    let cpu_limit = opts.cpu_limit.map(|c| format!("            cpu: \"{c}\"\n")).unwrap_or_default();
    let memory_limit = opts.memory_limit.unwrap_or(res.memory).kubernetes();
    format!(
        "        resources:\n\
         \x20         requests:\n\
         \x20           cpu: \"{cpus}\"\n\
         \x20           memory: \"{memory}\"\n\
         {gpu}\
         \x20         limits:\n\
         {cpu_limit}\
         \x20           memory: \"{memory_limit}\"\n\
         {gpu}",
        cpus = res.cpus,
        memory = res.memory.kubernetes(),
    )
}

/// The pod's placement: the time limit of each pod, the node selector and the tolerations.
fn kubernetes_placement(res: &Resources, opts: &KubernetesOptions) -> String {
    let mut s = String::new();
    if let Some(t) = res.time {
        // The pod's own deadline (not the Job's): each completion index gets the time limit.
        s += &format!("      activeDeadlineSeconds: {}\n", t.0);
    }
    if !opts.node_selector.is_empty() {
        s += "      nodeSelector:\n";
        for l in &opts.node_selector {
            // Quoted: a value such as "true" or "1" must stay a string.
            s += &format!("        \"{}\": \"{}\"\n", l.key, l.value);
        }
    }
    if !opts.tolerations.is_empty() {
        s += "      tolerations:\n";
        for t in &opts.tolerations {
            s += &format!("      - key: \"{}\"\n", t.key);
            match &t.value {
                Some(v) => s += &format!("        operator: Equal\n        value: \"{v}\"\n"),
                None => s += "        operator: Exists\n",
            }
            s += &format!("        effect: {}\n", t.effect);
        }
    }
    s
}

/// A Kubernetes Indexed Job with `shards` completions; results go to a PersistentVolumeClaim
/// mounted at /sweep, which must hold the spec as /sweep/sweep.toml.
pub fn kubernetes(name: &str, shards: usize, res: &Resources, opts: &KubernetesOptions) -> String {
    let job =
        format!("rankcollapse-{}", name.to_lowercase().replace(|c: char| !c.is_ascii_alphanumeric(), "-"));
    let (image, pvc) = (&opts.image, &opts.pvc);
    let placement = kubernetes_placement(res, opts);
    let resources = kubernetes_resources(res, opts);
    format!(
        "# One shard per completion index: rankcollapse reads JOB_COMPLETION_INDEX and\n\
         # RANKCOLLAPSE_SHARD_COUNT. Copy sweep.toml into the volume before applying.\n\
         apiVersion: batch/v1\n\
         kind: Job\n\
         metadata:\n\
         \x20 name: {job}\n\
         spec:\n\
         \x20 completionMode: Indexed\n\
         \x20 completions: {shards}\n\
         \x20 parallelism: {shards}\n\
         \x20 backoffLimitPerIndex: 2\n\
         \x20 template:\n\
         \x20   spec:\n\
         \x20     restartPolicy: Never\n\
         \x20     # The image runs as uid/gid 10001 (Dockerfile): a volume whose driver applies\n\
         \x20     # fsGroup makes it writable for the image.\n\
         \x20     securityContext:\n\
         \x20       fsGroup: 10001\n\
         {placement}\
         \x20     containers:\n\
         \x20     - name: sweep\n\
         \x20       image: {image}\n\
         \x20       command: [\"rankcollapse\", \"sweep\", \"run\", \"/sweep/sweep.toml\", \"--out\", \"/sweep\"]\n\
         \x20       env:\n\
         \x20       - name: RANKCOLLAPSE_SHARD_COUNT\n\
         \x20         value: \"{shards}\"\n\
         {resources}\
         \x20       volumeMounts:\n\
         \x20       - name: results\n\
         \x20         mountPath: /sweep\n\
         \x20     volumes:\n\
         \x20     - name: results\n\
         \x20       persistentVolumeClaim:\n\
         \x20         claimName: {pvc}\n"
    )
}

fn shell_quote(p: &Path) -> String {
    let s = p.display().to_string();
    if s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+:=@".contains(c)) {
        s
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}
