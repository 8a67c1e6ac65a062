//! The resource requests of emitted job files (`sweep plan --emit slurm|k8s`): exactly the lines
//! the flags ask for, the defaults a GPU sweep and a CPU-only sweep get, and bad values refused
//! with the flag and the value named. Schema validation of the YAML: scripts/validate_jobs.sh.

use super::sweep::{bin, SPEC};
use std::path::{Path, PathBuf};

/// Runs `sweep plan SPEC ARGS --out DIR/out`; returns (success, stdout, stderr, out dir).
fn plan(dir: &Path, spec: &str, args: &[&str]) -> (bool, String, String, PathBuf) {
    let spec_path = dir.join("spec.toml");
    std::fs::write(&spec_path, spec).unwrap();
    let out = dir.join("out");
    let o = bin().args(["sweep", "plan"]).arg(&spec_path).args(args).arg("--out").arg(&out).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (o.status.success(), text(&o.stdout), text(&o.stderr), out)
}

fn emitted(args: &[&str], spec: &str, file: &str) -> (String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr, out) = plan(tmp.path(), spec, args);
    assert!(ok, "{args:?} failed:\n{stdout}\n{stderr}");
    (stdout, std::fs::read_to_string(out.join(file)).unwrap())
}

fn sbatch_lines(script: &str) -> Vec<&str> {
    script.lines().filter(|l| l.starts_with("#SBATCH")).collect()
}

/// The lines from the one starting with `from` up to (not including) the one starting with `to`.
fn block<'a>(yaml: &'a str, from: &str, to: &str) -> Vec<&'a str> {
    let lines: Vec<&str> = yaml.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.trim_start().starts_with(from))
        .unwrap_or_else(|| panic!("{from}:\n{yaml}"));
    let j = lines[i..]
        .iter()
        .position(|l| l.trim_start().starts_with(to))
        .unwrap_or_else(|| panic!("{to}:\n{yaml}"));
    lines[i..i + j].to_vec()
}

const FIXED: [&str; 4] =
    ["#SBATCH --job-name=rankcollapse-small", "#SBATCH --array=0-1", "", "#SBATCH --ntasks=1"];

fn expect_sbatch(script: &str, resources: &[&str]) {
    let got = sbatch_lines(script);
    assert_eq!(got.len(), 4 + resources.len(), "{script}");
    assert_eq!((got[0], got[1], got[3]), (FIXED[0], FIXED[1], FIXED[3]), "{script}");
    assert!(got[2].starts_with("#SBATCH --output=") && got[2].ends_with("/slurm-%A_%a.log"), "{script}");
    assert_eq!(&got[4..], resources, "{script}");
}

#[test]
fn sbatch_has_exactly_the_requested_resource_lines() {
    let (stdout, script) = emitted(
        &[
            "--shards",
            "2",
            "--emit",
            "slurm",
            "--gpus-per-task",
            "2",
            "--cpus-per-task",
            "8",
            "--mem",
            "16G",
            "--time",
            "1-12:00",
            "--partition",
            "gpu",
            "--account",
            "proj_42",
            "--gpu-request",
            "gpus-per-task",
        ],
        SPEC,
        "sweep.sbatch",
    );
    expect_sbatch(
        &script,
        &[
            "#SBATCH --cpus-per-task=8",
            "#SBATCH --mem=16G",
            "#SBATCH --gpus-per-task=2",
            "#SBATCH --time=1-12:00:00",
            "#SBATCH --partition=gpu",
            "#SBATCH --account=proj_42",
        ],
    );
    // Given values are printed without a "default" reason.
    assert!(
        stdout.contains("requested per task: 2 GPUs, 8 CPUs, 16G memory, time limit 1-12:00:00\n"),
        "{stdout}"
    );
    assert!(!stdout.contains("default"), "{stdout}");
    // The default GPU style is a gres; 1536 MiB is not whole GiB and stays in M.
    let (_, script) = emitted(
        &[
            "--shards",
            "2",
            "--emit",
            "slurm",
            "--gpus-per-task",
            "1",
            "--cpus-per-task",
            "1",
            "--mem",
            "1536Mi",
            "--time",
            "5",
        ],
        SPEC,
        "sweep.sbatch",
    );
    expect_sbatch(
        &script,
        &[
            "#SBATCH --cpus-per-task=1",
            "#SBATCH --mem=1536M",
            "#SBATCH --gres=gpu:1",
            "#SBATCH --time=00:05:00",
        ],
    );
}

#[test]
fn kubernetes_job_has_exactly_the_requested_resources_and_placement() {
    let (_, yaml) = emitted(
        &[
            "--shards",
            "2",
            "--emit",
            "k8s",
            "--gpus-per-task",
            "1",
            "--cpus-per-task",
            "4",
            "--mem",
            "1536M",
            "--cpu-limit",
            "8",
            "--mem-limit",
            "2G",
            "--time",
            "90",
            "--node-selector",
            "cloud.google.com/gke-accelerator=nvidia-l4",
            "--node-selector",
            "pool=true",
            "--toleration",
            "nvidia.com/gpu:NoSchedule",
            "--toleration",
            "dedicated=sweeps:NoExecute",
        ],
        SPEC,
        "sweep-job.yaml",
    );
    assert_eq!(
        block(&yaml, "resources:", "volumeMounts:"),
        [
            "        resources:",
            "          requests:",
            "            cpu: \"4\"",
            "            memory: \"1536Mi\"",
            "            nvidia.com/gpu: \"1\"",
            "          limits:",
            "            cpu: \"8\"",
            "            memory: \"2Gi\"",
            "            nvidia.com/gpu: \"1\"",
        ],
        "{yaml}"
    );
    assert_eq!(
        block(&yaml, "activeDeadlineSeconds:", "containers:"),
        [
            "      activeDeadlineSeconds: 5400",
            "      nodeSelector:",
            "        \"cloud.google.com/gke-accelerator\": \"nvidia-l4\"",
            "        \"pool\": \"true\"",
            "      tolerations:",
            "      - key: \"nvidia.com/gpu\"",
            "        operator: Exists",
            "        effect: NoSchedule",
            "      - key: \"dedicated\"",
            "        operator: Equal",
            "        value: \"sweeps\"",
            "        effect: NoExecute",
        ],
        "{yaml}"
    );
    // The image runs as uid/gid 10001: the pod asks for a volume it can write.
    assert_eq!(
        block(&yaml, "securityContext:", "activeDeadlineSeconds:"),
        ["      securityContext:", "        fsGroup: 10001"],
        "{yaml}"
    );
}

#[test]
fn a_gpu_sweep_asks_for_one_gpu_and_the_defaults_are_printed() {
    // The shared small sweep: engine auto, a configuration the GPU engine runs, threads 0;
    // tiny states, so the memory estimate is the 512 MiB base plus one 256 MiB step.
    let (stdout, script) = emitted(&["--shards", "2", "--emit", "slurm"], SPEC, "sweep.sbatch");
    expect_sbatch(&script, &["#SBATCH --cpus-per-task=4", "#SBATCH --mem=768M", "#SBATCH --gres=gpu:1"]);
    assert!(stdout.contains("requested per task: 1 GPU, 4 CPUs, 768M memory, no time limit\n"), "{stdout}");
    for reason in [
        "default 1 GPU: 10 of 10 points run on the GPU engine",
        "default 4 CPUs: points with threads = 0",
        "default 768M memory",
    ] {
        assert!(stdout.contains(reason), "{reason}:\n{stdout}");
    }
    let (_, yaml) = emitted(&["--shards", "2", "--emit", "k8s"], SPEC, "sweep-job.yaml");
    let resources = block(&yaml, "resources:", "volumeMounts:");
    assert_eq!(resources.iter().filter(|l| l.trim() == "nvidia.com/gpu: \"1\"").count(), 2, "{yaml}");
    assert!(resources.contains(&"            memory: \"768Mi\""), "{yaml}");
    // No time limit, selector or toleration unless asked for.
    for absent in ["activeDeadlineSeconds", "nodeSelector", "tolerations", "partition", "account"] {
        assert!(!yaml.contains(absent) && !script.contains(absent), "{absent}");
    }
}

#[test]
fn a_cpu_only_sweep_asks_for_no_gpu_and_its_threads() {
    // engine = cpu everywhere: no GPU, and the points' threads as the CPUs.
    let spec = SPEC.replace("sequences = 3", "sequences = 3\nengine = \"cpu\"\nthreads = 2");
    let (stdout, script) =
        emitted(&["--shards", "2", "--emit", "slurm", "--set", "threads=3"], &spec, "sweep.sbatch");
    expect_sbatch(&script, &["#SBATCH --cpus-per-task=3", "#SBATCH --mem=768M"]);
    assert!(stdout.contains("default no GPU: every point runs on the CPU engine"), "{stdout}");
    assert!(stdout.contains("default 3 CPUs: the points' largest threads"), "{stdout}");
    let (_, yaml) = emitted(&["--shards", "2", "--emit", "k8s"], &spec, "sweep-job.yaml");
    assert!(!yaml.contains("nvidia.com/gpu") && yaml.contains("            cpu: \"2\""), "{yaml}");
    // Markov attention with more than 65535 tokens is beyond the GPU engine: auto means CPU.
    let big = SPEC.replace("tokens = 8", "tokens = 70000\nattention = \"markov\"\nspectrum_every = 0");
    let (_, script) = emitted(
        &["--shards", "2", "--emit", "slurm", "--set", "width=1", "--set", "sequences=64"],
        &big,
        "sweep.sbatch",
    );
    assert!(!script.contains("gpu"), "{script}");
    // A bigger point gets a bigger estimate, still in 256 MiB steps.
    let mem: u64 = sbatch_lines(&script)
        .iter()
        .find_map(|l| l.strip_prefix("#SBATCH --mem=")?.strip_suffix('M').and_then(|m| m.parse().ok()))
        .unwrap_or_else(|| panic!("{script}"));
    assert!(mem > 768 && mem % 256 == 0, "{script}");
}

#[test]
fn bad_job_flags_are_refused_naming_the_flag_and_the_value() {
    let cases: &[(&[&str], &[&str])] = &[
        (&["--emit", "slurm", "--mem", "4GB"], &["--mem", "4GB", "M or Mi", "G or Gi"]),
        (&["--emit", "slurm", "--mem", "0G"], &["--mem", "0G", "from 1M to 64T"]),
        (&["--emit", "slurm", "--time", "1:61:00"], &["--time", "1:61:00", "HOURS:MINUTES:SECONDS"]),
        (&["--emit", "slurm", "--time", "0"], &["--time", "'0'", "from 1 second"]),
        (&["--emit", "slurm", "--gpus-per-task", "17"], &["--gpus-per-task", "17", "0 (no GPU) to 16"]),
        (&["--emit", "slurm", "--cpus-per-task", "0"], &["--cpus-per-task", "'0'", "1 to 4096"]),
        (&["--emit", "slurm", "--partition", "a b"], &["--partition", "a b", "A-Z a-z 0-9 . _ -"]),
        (&["--emit", "slurm", "--gpu-request", "mig"], &["--gpu-request", "mig", "gres", "gpus-per-task"]),
        (&["--emit", "k8s", "--node-selector", "novalue"], &["--node-selector", "novalue", "KEY=VALUE"]),
        (
            &["--emit", "k8s", "--toleration", "k:Never"],
            &["--toleration", "k:Never", "NoSchedule, PreferNoSchedule, NoExecute"],
        ),
        (
            &["--emit", "k8s", "--cpus-per-task", "4", "--cpu-limit", "2"],
            &["--cpu-limit 2", "CPU request of 4", "at least"],
        ),
        (&["--emit", "k8s", "--mem", "2G", "--mem-limit", "1G"], &["--mem-limit 1Gi", "2Gi", "(--mem)"]),
        (&["--emit", "k8s", "--mem-limit", "512M"], &["--mem-limit 512Mi", "768Mi", "here the estimate"]),
        (&["--emit", "k8s", "--partition", "gpu"], &["--partition", "--emit slurm only"]),
        (&["--emit", "slurm", "--toleration", "k:NoSchedule"], &["--toleration", "--emit k8s only"]),
    ];
    for (args, needles) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let (ok, stdout, stderr, out) = plan(tmp.path(), SPEC, args);
        assert!(!ok, "{args:?} was accepted:\n{stdout}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        for n in *needles {
            assert!(stderr.contains(n), "{args:?}: the error does not mention {n:?}:\n{stderr}");
        }
        // Nothing is written for a refused request.
        assert!(!out.join("sweep.sbatch").exists() && !out.join("sweep-job.yaml").exists(), "{args:?}");
    }
    // A request without a job file would be ignored: refused too.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("s.toml"), SPEC).unwrap();
    let o =
        bin().args(["sweep", "plan"]).arg(tmp.path().join("s.toml")).args(["--mem", "4G"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && stderr.contains("--mem") && stderr.contains("--emit"), "{stderr}");
}
