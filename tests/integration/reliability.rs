//! Reliability through the real binary: SIGINT/SIGTERM during `run` and `sweep run`, output
//! directories that cannot be written (up front) or fill up (mid-way, through the
//! RANKCOLLAPSE_TEST_FAIL_WRITE hook), non-finite values in manifests and sweeps, and results that
//! do not depend on the thread count.

use super::sweep::{bin, slow_spec, SPEC};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?} failed:\n{}\n{}", text(&out.stdout), text(&out.stderr));
    out
}

/// The slow sweep of sweep.rs (10 points) on the CPU engine.
fn write_slow_spec(dir: &Path) -> PathBuf {
    let path = dir.join("slow.toml");
    std::fs::write(&path, slow_spec().replace("[fixed]\n", "[fixed]\nengine = \"cpu\"\n")).unwrap();
    path
}

pub(crate) fn send(child: &Child, signal: &str) {
    // The shell's own kill: no extra crate, present wherever the tests run.
    let status = Command::new("sh").args(["-c", &format!("kill -{signal} {}", child.id())]).status().unwrap();
    assert!(status.success(), "kill -{signal} failed");
}

/// Polls (every 5 ms) until `done` holds; gives up after two minutes so a broken binary fails
/// the test instead of hanging it.
pub(crate) fn wait_until(mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() && start.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn records(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir.join("points"))
        .map(|d| {
            d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "json")).collect()
        })
        .unwrap_or_default()
}

/// Every file under `dir` whose name marks a temporary file of the atomic writes.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if e.file_name().to_string_lossy().contains(".tmp-") {
                found.push(p);
            }
        }
    }
    found
}

/// Every point record parses and says done (nothing half-written, nothing abandoned recorded).
fn assert_records_whole(dir: &Path) {
    for path in records(dir) {
        let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap())
            .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
        assert_eq!(rec["status"], "done", "{}", path.display());
    }
    assert_eq!(temp_files(dir), Vec::<PathBuf>::new(), "temporary files left behind");
}

/// Starts `sweep run`, waits until `after` more points are recorded, sends `signal`, and checks
/// the exit status, the message and the files. Returns the number of records.
fn interrupt_sweep(spec: &Path, out: &Path, after: usize, signal: &str, code: i32) -> usize {
    let before = records(out).len();
    let child = bin()
        .args(["sweep", "run"])
        .arg(spec)
        .arg("--out")
        .arg(out)
        .args(["--threads", "1"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(|| records(out).len() >= before + after);
    send(&child, signal);
    let run = child.wait_with_output().unwrap();
    let log = text(&run.stderr);
    let now = records(out).len();
    assert!(now < 10, "the sweep finished before the signal ({now} points); make the points slower");
    assert_eq!(run.status.code(), Some(code), "{log}");
    assert!(
        log.contains(&format!("interrupted by SIG{signal}: {now} of 10 points of this shard done, "))
            && log.contains("resume with the same command"),
        "{log}"
    );
    // The point in flight is abandoned: not recorded, so the resume computes it.
    if let Some(rest) = log.split("point ").last().filter(|_| log.contains(" abandoned")) {
        let id = rest.split_whitespace().next().unwrap();
        assert!(!out.join("points").join(format!("{id}.json")).exists(), "abandoned point {id} was recorded");
    } else {
        assert!(log.contains("no point in flight"), "{log}");
    }
    assert_records_whole(out);
    assert!(!out.join("merged.csv").exists(), "an interrupted sweep must not merge");
    now
}

#[test]
fn sigterm_and_sigint_stop_a_sweep_cleanly_and_the_resume_matches_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write_slow_spec(tmp.path());
    let reference = tmp.path().join("reference");
    ok(bin().args(["sweep", "run"]).arg(&spec).arg("--out").arg(&reference).args(["--threads", "2"]));
    let out = tmp.path().join("out");
    // Slurm's scancel and time limit send SIGTERM; Ctrl-C sends SIGINT.
    let first = interrupt_sweep(&spec, &out, 1, "TERM", 143);
    let second = interrupt_sweep(&spec, &out, 1, "INT", 130);
    assert!(second > first, "the resume recorded nothing before the second signal");
    // Stray temporary files (a SIGKILL during a write leaves one): another host's that is a day
    // old is removed when the sweep starts again, a fresh one may be a live writer's and stays.
    let stale = out.join("points").join(".x.json.tmp-otherhost-1-0");
    let fresh = out.join("points").join(".y.json.tmp-otherhost-1-0");
    for path in [&stale, &fresh] {
        std::fs::write(path, b"{\"half\": ").unwrap();
    }
    let day_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(86400);
    std::fs::File::options().write(true).open(&stale).unwrap().set_modified(day_ago).unwrap();
    let resume = ok(bin().args(["sweep", "run"]).arg(&spec).arg("--out").arg(&out));
    let log = text(&resume.stderr);
    assert!(log.contains(&format!("{second} already done")) && log.contains("removed 1 stray"), "{log}");
    assert!(!stale.exists() && fresh.exists());
    std::fs::remove_file(&fresh).unwrap();
    assert_records_whole(&out);
    assert_eq!(
        std::fs::read(reference.join("merged.csv")).unwrap(),
        std::fs::read(out.join("merged.csv")).unwrap(),
        "the interrupted and resumed sweep differs from an uninterrupted one"
    );
}

#[test]
fn sigterm_abandons_a_run_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    // About a minute of work: the signal always lands during the compute.
    let child = bin()
        .args(["run", "--engine", "cpu", "--threads", "1", "--tokens", "64", "--width", "32"])
        .args(["--depth", "64", "--sequences", "4096", "--out"])
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The output directory is probed after the handlers are installed and before the compute.
    wait_until(|| out.is_dir());
    send(&child, "TERM");
    let run = child.wait_with_output().unwrap();
    let log = text(&run.stderr);
    assert_eq!(run.status.code(), Some(143), "{log}");
    assert!(log.contains("interrupted by SIGTERM") && log.contains("nothing was written"), "{log}");
    assert!(run.stdout.is_empty(), "a table was printed: {}", text(&run.stdout));
    let left: Vec<_> = std::fs::read_dir(&out).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "files left in --out: {left:?}");
}

#[test]
fn an_output_directory_that_cannot_be_written_is_refused_before_the_compute() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a_file");
    std::fs::write(&file, b"not a directory").unwrap();
    let under_file = file.join("sub");
    // --depth 100000 would take hours: an error that comes back at all came before the compute.
    let run = bin()
        .args(["run", "--engine", "cpu", "--depth", "100000", "--out"])
        .arg(&under_file)
        .output()
        .unwrap();
    let log = text(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{log}");
    assert!(
        log.contains(&format!("output directory {} cannot be created", under_file.display()))
            && log.contains("os error"),
        "{log}"
    );
    let spec = write_slow_spec(tmp.path());
    let sweep = bin().args(["sweep", "run"]).arg(&spec).arg("--out").arg(&under_file).output().unwrap();
    let log = text(&sweep.stderr);
    assert_eq!(sweep.status.code(), Some(2), "{log}");
    assert!(log.contains(&under_file.display().to_string()) && log.contains("os error"), "{log}");

    // A directory without write permission; root writes there all the same, so the case only
    // runs where permissions hold.
    let locked = tmp.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    set_mode(&locked, 0o555);
    if std::fs::write(locked.join("probe"), b"").is_ok() {
        eprintln!("skipped the read-only directory case: this user (root?) writes through permissions");
    } else {
        for args in [
            vec!["run", "--engine", "cpu", "--depth", "100000"],
            vec!["sweep", "run", spec.to_str().unwrap()],
        ] {
            let out = bin().args(&args).arg("--out").arg(&locked).output().unwrap();
            let log = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {log}");
            assert!(log.contains(&locked.display().to_string()) && log.contains("os error 13"), "{log}");
        }
    }
    set_mode(&locked, 0o755);
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_write_that_fills_the_disk_leaves_no_half_written_result() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let args = ["run", "--engine", "cpu", "--depth", "3", "--tokens", "6", "--width", "6", "--sequences-csv"];
    ok(bin().args(args).arg("--out").arg(&out));
    let layers = std::fs::read(out.join("layers.csv")).unwrap();
    // The manifest is written last: its write fails (ENOSPC from /dev/full), the old one is gone,
    // so the directory does not pass for a whole run.
    let full = bin()
        .args(args)
        .args(["--seed", "9", "--out"])
        .arg(&out)
        .env("RANKCOLLAPSE_TEST_FAIL_WRITE", "manifest.json")
        .output()
        .unwrap();
    let log = text(&full.stderr);
    assert_eq!(full.status.code(), Some(2), "{log}");
    assert!(log.contains("manifest.json") && log.contains("os error 28"), "{log}");
    assert!(!out.join("manifest.json").exists(), "a manifest beside files of another run");
    assert_ne!(std::fs::read(out.join("layers.csv")).unwrap(), layers, "layers.csv is not the new run's");
    assert_eq!(temp_files(&out), Vec::<PathBuf>::new());

    // A sweep whose third point cannot be recorded stops with the error; what it recorded is
    // whole, and a rerun completes it to the uninterrupted result.
    let spec = tmp.path().join("small.toml");
    let small = SPEC.replace("[fixed]\n", "[fixed]\nengine = \"cpu\"\n");
    std::fs::write(&spec, small).unwrap();
    let reference = tmp.path().join("reference");
    ok(bin().args(["sweep", "run"]).arg(&spec).arg("--out").arg(&reference));
    let status = text(&bin().args(["sweep", "status"]).arg(&reference).output().unwrap().stdout);
    assert!(status.contains("10 done"), "{status}");
    let ids: Vec<String> = records(&reference)
        .iter()
        .map(|p| {
            let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
            (rec["index"].as_u64().unwrap(), rec["id"].as_str().unwrap().to_string())
        })
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_values()
        .collect();
    let sweep_out = tmp.path().join("sweep");
    let full = bin()
        .args(["sweep", "run"])
        .arg(&spec)
        .arg("--out")
        .arg(&sweep_out)
        .env("RANKCOLLAPSE_TEST_FAIL_WRITE", format!("{}.json", ids[2]))
        .output()
        .unwrap();
    let log = text(&full.stderr);
    assert_eq!(full.status.code(), Some(2), "{log}");
    assert!(log.contains(&ids[2]) && log.contains("os error 28"), "{log}");
    assert_eq!(records(&sweep_out).len(), 2);
    assert_records_whole(&sweep_out);
    ok(bin().args(["sweep", "run"]).arg(&spec).arg("--out").arg(&sweep_out));
    assert_eq!(
        std::fs::read(reference.join("merged.csv")).unwrap(),
        std::fs::read(sweep_out.join("merged.csv")).unwrap()
    );
}

#[test]
fn the_manifest_counts_nonfinite_values_per_layer_and_metric() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    // --remove-outlier drives X to a rank-one c v^T that is not collapsed: sigma_2 / sigma_1 falls
    // below its resolution floor and is withheld (a limit of the representation, not a fault).
    let run = bin()
        .args(["run", "--engine", "cpu", "--depth", "8", "--tokens", "6", "--width", "6", "--remove-outlier"])
        .args(["--sequences", "2", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let log = text(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{log}");
    assert!(log.contains("withheld") && !log.contains("numerical faults"), "{log}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    // The per-layer map agrees with the nonfinite column of layers.csv, row by row.
    let mut from_csv = std::collections::BTreeMap::new();
    let csv = std::fs::read_to_string(out.join("layers.csv")).unwrap();
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let k: u64 = f[8].parse().unwrap();
        if k > 0 {
            from_csv.insert((f[0].to_string(), f[1].to_string()), k);
        }
    }
    let mut from_manifest = std::collections::BTreeMap::new();
    for (layer, metrics) in manifest["nonfinite_by_layer"].as_object().unwrap() {
        for (metric, k) in metrics.as_object().unwrap() {
            from_manifest.insert((layer.clone(), metric.clone()), k.as_u64().unwrap());
        }
    }
    assert!(!from_csv.is_empty(), "this configuration withheld nothing; pick one below the floor");
    assert_eq!(from_manifest, from_csv);
    let total: u64 = from_csv.values().sum();
    assert_eq!(manifest["nonfinite"], total);
    assert_eq!(manifest["nonfinite_withheld"], total);
    assert_eq!(manifest["nonfinite_faults"], 0);
    assert!(from_csv.keys().all(|(_, m)| m == "sigma_ratio" || m == "log10_sigma_ratio"));
}

#[test]
fn a_sweep_point_with_nonfinite_values_is_reported_by_run_status_and_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("withheld.toml");
    std::fs::write(
        &spec,
        "[sweep]\nname = \"withheld\"\nseed = 3\nrepeats = 1\n[fixed]\ntokens = 6\nwidth = 6\n\
         sequences = 2\ndepth = 8\nengine = \"cpu\"\n[grid]\nremove_outlier = [false, true]\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    let run = bin().args(["sweep", "run"]).arg(&spec).arg("--out").arg(&out).output().unwrap();
    let log = text(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "non-finite values must not exit 0: {log}");
    assert!(
        log.contains("1 done points of this shard have non-finite values")
            && log.contains("0 numerical faults")
            && !log.contains("failed"),
        "{log}"
    );
    assert!(out.join("merged.csv").exists(), "a complete sweep merges whatever its values");
    let bad: Vec<serde_json::Value> = records(&out)
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .filter(|r: &serde_json::Value| r["params"]["remove_outlier"] == "true")
        .collect();
    assert_eq!(bad.len(), 1);
    let withheld = bad[0]["nonfinite_withheld"].as_u64().unwrap();
    assert!(withheld > 0 && bad[0]["nonfinite_faults"] == 0 && bad[0]["status"] == "done", "{}", bad[0]);
    assert!(bad[0]["nonfinite_by_layer"].as_object().is_some_and(|m| !m.is_empty()));
    let id = bad[0]["id"].as_str().unwrap();
    let status = bin().args(["sweep", "status"]).arg(&out).output().unwrap();
    let report = text(&status.stdout);
    assert_eq!(status.status.code(), Some(0), "the sweep is complete: {report}");
    assert!(
        report.contains("2 done, 0 failed, 0 missing; 1 done with non-finite values")
            && report.contains(&format!("nonfinite {id}: {withheld} withheld values")),
        "{report}"
    );
    let merge = ok(bin().args(["sweep", "merge"]).arg(&out));
    assert!(
        text(&merge.stdout).contains("1 merged points have non-finite values"),
        "{}",
        text(&merge.stdout)
    );
    // A rerun has nothing to compute but still says so (exit status 1).
    let rerun = bin().args(["sweep", "run"]).arg(&spec).arg("--out").arg(&out).output().unwrap();
    assert_eq!(rerun.status.code(), Some(1), "{}", text(&rerun.stderr));
}

#[test]
fn per_sequence_results_do_not_depend_on_the_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let files: Vec<(Vec<u8>, Vec<u8>)> = [1, 2, 3]
        .iter()
        .map(|t| {
            let out = tmp.path().join(format!("t{t}"));
            // 7 sequences: no thread count divides them evenly.
            ok(bin()
                .args(["run", "--engine", "cpu", "--depth", "6", "--tokens", "12", "--width", "8"])
                .args(["--heads", "2", "--mask", "causal", "--sequences", "7", "--sequences-csv"])
                .args(["--threads", &t.to_string(), "--out"])
                .arg(&out));
            (
                std::fs::read(out.join("sequences.csv")).unwrap(),
                std::fs::read(out.join("layers.csv")).unwrap(),
            )
        })
        .collect();
    for (t, f) in files.iter().enumerate().skip(1) {
        assert!(f.0 == files[0].0, "sequences.csv with {} threads differs from 1 thread", t + 1);
        assert!(f.1 == files[0].1, "layers.csv with {} threads differs from 1 thread", t + 1);
    }
}

/// Reads a run's manifest.
fn manifest_of(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

/// A value scale of 1e300: in f64 the first layer runs (the state absorbs the scale into its log
/// scale g = 690), and the second layer's scores, of scale e^{2g}, overflow f64; in f32 the
/// weights themselves cannot be stored. Each is named (sequence, layer, part), counted as a
/// fault in every metric from that layer on (never as withheld), left out of every mean, written
/// to the manifest, and makes the exit status 1.
#[test]
fn numerical_faults_are_named_counted_per_layer_and_never_averaged() {
    let tmp = tempfile::tempdir().unwrap();
    for (precision, layer, part, says) in
        [("f64", 2, "attention", "the attention scores overflow f64"), ("f32", 1, "weights", "value weights")]
    {
        let out = tmp.path().join(precision);
        let run = bin()
            .args(["run", "--engine", "cpu", "--precision", precision, "--value", "scaled-identity:1e300"])
            .args([
                "--depth",
                "4",
                "--tokens",
                "8",
                "--width",
                "8",
                "--sequences",
                "3",
                "--spectrum-every",
                "1",
            ])
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        let log = text(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{log}");
        for s in 0..3 {
            assert!(
                log.contains(&format!("error: sequence {s} layer {layer} {part}: ")),
                "{precision}: {log}"
            );
        }
        assert!(log.contains(says) && log.contains("numerical faults") && !log.contains("withheld"), "{log}");
        let manifest = manifest_of(&out);
        let faults = manifest["faults"].as_array().unwrap();
        assert_eq!(faults.len(), 3, "{manifest}");
        assert!(faults.iter().all(|f| f["layer"] == layer && f["part"] == part), "{manifest}");
        // 16 metrics x 3 sequences at every layer from the fault on, all faults.
        let faulted_layers = (layer..=4).count() as u64;
        assert_eq!(manifest["nonfinite_faults"], 16 * 3 * faulted_layers, "{manifest}");
        assert_eq!(manifest["nonfinite_withheld"], 0, "{manifest}");
        let csv = std::fs::read_to_string(out.join("layers.csv")).unwrap();
        for line in csv.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            let l: usize = f[0].parse().unwrap();
            let (mean, count, nonfinite): (f64, u64, u64) =
                (f[2].parse().unwrap(), f[7].parse().unwrap(), f[8].parse().unwrap());
            if l >= layer {
                assert_eq!((count, nonfinite), (0, 3), "{line}");
                assert!(mean.is_nan(), "a faulted layer has no mean: {line}");
            } else {
                assert_eq!((count, nonfinite), (3, 0), "{line}");
                assert!(!mean.is_nan(), "{line}");
            }
        }
    }
}

/// A sweep point whose sequences fault: its record names the faults, and `sweep status` counts
/// every non-finite value of the faulted sequences as a fault (none as withheld).
#[test]
fn a_sweep_point_with_numerical_faults_records_them() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("faults.toml");
    std::fs::write(
        &spec,
        "[sweep]\nname = \"faults\"\nseed = 3\nrepeats = 1\n[fixed]\ntokens = 8\nwidth = 8\n\
         sequences = 2\ndepth = 3\nengine = \"cpu\"\nspectrum_every = 1\n\
         [grid]\nvalue = [\"gaussian\", \"scaled-identity:1e300\"]\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    let run = bin().args(["sweep", "run"]).arg(&spec).arg("--out").arg(&out).output().unwrap();
    let log = text(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{log}");
    let recs: Vec<serde_json::Value> =
        records(&out).iter().map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()).collect();
    let bad: Vec<&serde_json::Value> =
        recs.iter().filter(|r| r["faults"].as_array().is_some_and(|f| !f.is_empty())).collect();
    assert_eq!(bad.len(), 1, "{recs:?}");
    let faults = bad[0]["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 2);
    assert!(faults.iter().all(|f| f["layer"] == 2 && f["part"] == "attention"), "{faults:?}");
    // Layers 2 and 3 of both sequences, 16 metrics each.
    assert_eq!(bad[0]["nonfinite_faults"], 64, "{}", bad[0]);
    assert_eq!(bad[0]["nonfinite_withheld"], 0, "{}", bad[0]);
    let status = bin().args(["sweep", "status"]).arg(&out).output().unwrap();
    let report = text(&status.stdout);
    assert!(report.contains("0 withheld values") && report.contains("64 numerical faults"), "{report}");
}
