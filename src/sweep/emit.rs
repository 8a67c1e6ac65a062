//! Job files for existing distributed engines: a Slurm job array (`sbatch`) and a Kubernetes
//! Indexed Job. Each array task / completion index runs one shard; the shard is read from the
//! task's environment by `sweep run`.

use std::path::Path;

/// An sbatch script running `shards` array tasks of `sweep run SPEC --out OUT`.
pub fn slurm(name: &str, exe: &Path, spec: &Path, out: &Path, shards: usize) -> String {
    format!(
        "#!/bin/bash\n\
         #SBATCH --job-name=rankcollapse-{name}\n\
         #SBATCH --array=0-{last}\n\
         #SBATCH --output={out}/slurm-%A_%a.log\n\
         #SBATCH --ntasks=1\n\
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

/// A Kubernetes Indexed Job with `shards` completions; results go to a PersistentVolumeClaim
/// mounted at /sweep, which must hold the spec as /sweep/sweep.toml.
pub fn kubernetes(name: &str, image: &str, pvc: &str, shards: usize) -> String {
    let job =
        format!("rankcollapse-{}", name.to_lowercase().replace(|c: char| !c.is_ascii_alphanumeric(), "-"));
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
         \x20     containers:\n\
         \x20     - name: sweep\n\
         \x20       image: {image}\n\
         \x20       command: [\"rankcollapse\", \"sweep\", \"run\", \"/sweep/sweep.toml\", \"--out\", \"/sweep\"]\n\
         \x20       env:\n\
         \x20       - name: RANKCOLLAPSE_SHARD_COUNT\n\
         \x20         value: \"{shards}\"\n\
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
