//! Sweeps through the real binary: sharding (and thread counts), resume after SIGKILL, failures,
//! merge, job files. Signals, write faults and non-finite points: reliability.rs.

use std::path::Path;
use std::process::Command;

pub(crate) fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rankcollapse"))
}

pub(crate) const SPEC: &str = include_str!("../data/sweep_small.toml");

/// The small sweep with slower points (about 0.2 s each on one thread), so that a kill or a
/// signal lands while a point is computed.
pub(crate) fn slow_spec() -> String {
    SPEC.replace("tokens = 8", "tokens = 48")
        .replace("sequences = 3", "sequences = 24")
        .replace("depth = [2, 3]", "depth = [6, 9]")
        .replace("depth = 3\n", "depth = 9\n")
}

fn write_spec(dir: &Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("spec.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn records(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("points"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "json"))
        .count()
}

#[test]
fn shards_in_separate_processes_merge_to_the_single_process_result() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write_spec(tmp.path(), SPEC);
    let single = tmp.path().join("single");
    ok(bin().args(["sweep", "run"]).arg(&spec).arg("--out").arg(&single));
    let sharded = tmp.path().join("sharded");
    // Each shard on another thread count: the results depend on neither (bitwise).
    for i in 0..3 {
        ok(bin().args(["sweep", "run"]).arg(&spec).arg("--out").arg(&sharded).args([
            "--shard",
            &format!("{i}/3"),
            "--threads",
            &(i + 1).to_string(),
        ]));
    }
    // Slurm's environment picks the shard when --shard is absent (already done: nothing to run).
    let out = bin()
        .args(["sweep", "run"])
        .arg(&spec)
        .arg("--out")
        .arg(&sharded)
        .env("SLURM_ARRAY_TASK_ID", "12")
        .env("SLURM_ARRAY_TASK_COUNT", "3")
        .env("SLURM_ARRAY_TASK_MIN", "10")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("shard 2/3 has 3, 3 already done, 0 to run"));
    ok(bin().args(["sweep", "merge"]).arg(&sharded));
    let a = std::fs::read(single.join("merged.csv")).unwrap();
    let b = std::fs::read(sharded.join("merged.csv")).unwrap();
    assert_eq!(a, b, "merged results differ");
    let text = String::from_utf8(a).unwrap();
    assert!(
        text.starts_with("point_id,repeat,depth,mask,layer,metric,mean,std,median,p05,p95,count,nonfinite\n")
    );
    let ids: std::collections::BTreeSet<&str> =
        text.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(ids.len(), 10);
    assert_eq!(records(&sharded), 10);
    let status = ok(bin().args(["sweep", "status"]).arg(&sharded));
    assert!(status.contains("10 done, 0 failed, 0 missing"), "{status}");
}

#[test]
fn a_killed_sweep_resumes_without_losing_or_duplicating_points() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write_spec(tmp.path(), &slow_spec());
    let reference = tmp.path().join("reference");
    ok(bin().args(["sweep", "run"]).arg(&spec).arg("--out").arg(&reference));
    let out = tmp.path().join("killed");
    let mut child = bin()
        .args(["sweep", "run"])
        .arg(&spec)
        .arg("--out")
        .arg(&out)
        .args(["--threads", "1"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    loop {
        let n = std::fs::read_dir(out.join("points")).map(|d| d.count()).unwrap_or(0);
        if n >= 2 || start.elapsed().as_secs() > 120 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = records(&out);
    assert!(before < 10, "the sweep finished before the kill ({before} points); make the points slower");
    let status = bin().args(["sweep", "status"]).arg(&out).output().unwrap();
    assert_eq!(status.status.code(), Some(1), "an incomplete sweep must not report success");
    let merge = bin().args(["sweep", "merge"]).arg(&out).output().unwrap();
    assert_eq!(merge.status.code(), Some(1), "merging an incomplete sweep must fail without --allow-partial");
    let log = String::from_utf8_lossy(
        &bin().args(["sweep", "run"]).arg(&spec).arg("--out").arg(&out).output().unwrap().stderr,
    )
    .into_owned();
    assert!(log.contains(&format!("{} already done", before.min(10))) || before == 0, "{log}");
    assert_eq!(records(&out), 10);
    assert_eq!(
        std::fs::read(reference.join("merged.csv")).unwrap(),
        std::fs::read(out.join("merged.csv")).unwrap(),
        "the resumed sweep differs from an uninterrupted one"
    );
}

#[test]
fn a_failed_point_is_recorded_and_the_sweep_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write_spec(tmp.path(), SPEC);
    let out = tmp.path().join("out");
    // Find a point id from the plan of a first, complete run elsewhere.
    let probe = tmp.path().join("probe");
    ok(bin().args(["sweep", "run"]).arg(&spec).arg("--out").arg(&probe));
    let victim = std::fs::read_dir(probe.join("points")).unwrap().next().unwrap().unwrap().path();
    let victim = victim.file_stem().unwrap().to_string_lossy().into_owned();
    let run = bin()
        .args(["sweep", "run"])
        .arg(&spec)
        .arg("--out")
        .arg(&out)
        .env("RANKCOLLAPSE_TEST_FAIL_POINT", &victim)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    let status = bin().args(["sweep", "status"]).arg(&out).output().unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("9 done, 1 failed, 0 missing")
            && text.contains(&victim)
            && text.contains("injected failure"),
        "{text}"
    );
    assert_eq!(bin().args(["sweep", "merge"]).arg(&out).output().unwrap().status.code(), Some(1));
    let partial = ok(bin().args(["sweep", "merge", "--allow-partial"]).arg(&out));
    assert!(partial.contains("merged 9 of 10"), "{partial}");
    // A rerun retries the failed point only.
    let log = bin().args(["sweep", "run"]).arg(&spec).arg("--out").arg(&out).output().unwrap();
    assert!(log.status.success());
    assert!(String::from_utf8_lossy(&log.stderr).contains("9 already done, 1 to run"));
    assert_eq!(
        std::fs::read(probe.join("merged.csv")).unwrap(),
        std::fs::read(out.join("merged.csv")).unwrap()
    );
}

#[test]
fn plan_emits_slurm_and_kubernetes_jobs_and_overrides_apply() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write_spec(tmp.path(), SPEC);
    let out = tmp.path().join("out");
    let plan = ok(bin()
        .args(["sweep", "plan"])
        .arg(&spec)
        .args(["--shards", "4", "--emit", "slurm", "--out"])
        .arg(&out));
    assert!(
        plan.contains("10 points")
            && plan.lines().filter(|l| l.trim_start().starts_with(char::is_numeric)).count() >= 4,
        "{plan}"
    );
    let sbatch = std::fs::read_to_string(out.join("sweep.sbatch")).unwrap();
    assert!(
        sbatch.contains("#SBATCH --array=0-3")
            && sbatch.contains("sweep run")
            && sbatch.contains("sweep.toml"),
        "{sbatch}"
    );
    ok(bin().args(["sweep", "plan"]).arg(&spec).args(["--shards", "4", "--emit", "k8s", "--out"]).arg(&out));
    let job = std::fs::read_to_string(out.join("sweep-job.yaml")).unwrap();
    for needle in ["completionMode: Indexed", "completions: 4", "RANKCOLLAPSE_SHARD_COUNT", "value: \"4\""] {
        assert!(job.contains(needle), "{needle} missing:\n{job}");
    }
    // --set fixes a swept field: 1 depth x 3 masks x 2 repeats.
    let plan = ok(bin().args(["sweep", "plan"]).arg(&spec).args(["--set", "depth=2"]));
    assert!(plan.contains("6 points"), "{plan}");
    let bad = bin().args(["sweep", "plan"]).arg(&spec).args(["--set", "dpth=2"]).output().unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("dpth"));
    // A different sweep cannot silently reuse a results directory.
    let other_dir = tmp.path().join("other");
    std::fs::create_dir(&other_dir).unwrap();
    let other = write_spec(&other_dir, &SPEC.replace("seed = 7", "seed = 8"));
    let clash = bin().args(["sweep", "run"]).arg(&other).arg("--out").arg(&out).output().unwrap();
    assert!(!clash.status.success() && String::from_utf8_lossy(&clash.stderr).contains("different sweep"));
}

/// `--devices cpu|gpu` sends the points whose engine is auto to that engine (the records say
/// which ran); a point that asks for the other engine is refused before anything runs, and an
/// unknown value is an error naming it.
#[test]
fn devices_picks_the_engine_of_auto_points() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write_spec(tmp.path(), SPEC);
    let engines = |out: &Path| -> Vec<String> {
        let set: std::collections::BTreeSet<String> = std::fs::read_dir(out.join("points"))
            .unwrap()
            .map(|e| {
                let v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap();
                v["engine"].as_str().unwrap().to_string()
            })
            .collect();
        set.into_iter().collect()
    };
    let out = tmp.path().join("cpu");
    ok(bin().args(["sweep", "run"]).arg(&spec).arg("--out").arg(&out).args(["--devices", "cpu"]));
    assert_eq!(engines(&out), ["cpu-f64"]);
    // On the software adapter `auto` would pick the CPU engine: --devices gpu overrides that.
    if super::gpu::context().is_some() {
        let out = tmp.path().join("gpu");
        ok(bin().args(["sweep", "run"]).arg(&spec).arg("--out").arg(&out).args(["--devices", "gpu"]));
        assert_eq!(engines(&out), ["gpu-f32"]);
    }
    let cpu_spec = write_spec(tmp.path(), &SPEC.replace("[fixed]\n", "[fixed]\nengine = \"cpu\"\n"));
    let o = bin()
        .args(["sweep", "run"])
        .arg(&cpu_spec)
        .arg("--out")
        .arg(tmp.path().join("refused"))
        .args(["--devices", "gpu"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{log}");
    assert!(log.contains("--devices gpu contradicts point") && log.contains("whose engine is cpu"), "{log}");
    assert!(!tmp.path().join("refused").join("points").read_dir().is_ok_and(|mut d| d.next().is_some()));
    let o = bin()
        .args(["sweep", "run"])
        .arg(&spec)
        .arg("--out")
        .arg(&out)
        .args(["--devices", "tpu"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{log}");
    assert!(log.contains("--devices \"tpu\" is invalid"), "{log}");
}
