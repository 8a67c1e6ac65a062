//! `sweep run --devices gpu:all|gpu:I,J`: several GPU workers in one process, through the real
//! binary on a real adapter (lavapipe in CI; skipped without one unless RANKCOLLAPSE_REQUIRE_GPU
//! is set). Two workers on one adapter (an index given twice) must merge to the bytes of one
//! worker; a worker that loses its device hands its point back; bad specs are refused.

use crate::gpu::context;
use rankcollapse::engine::gpu::LOSE_DEVICE_HOOK;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Six tiny GPU points (about a second each on lavapipe, mostly device setup).
const SPEC: &str = "[sweep]\nname = \"workers\"\nseed = 3\n[fixed]\ntokens = 8\nwidth = 4\nsequences = 2\n\
                    spectrum_every = 0\n[grid]\ndepth = [1, 2]\nmask = [\"full\", \"causal\", \"window:2\"]\n";
const POINTS: usize = 6;

fn spec_file(dir: &Path) -> PathBuf {
    let p = dir.join("spec.toml");
    std::fs::write(&p, SPEC).unwrap();
    p
}

fn sweep(dir: &Path, out: &str, devices: &str, hook: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rankcollapse"));
    cmd.args(["sweep", "run"])
        .arg(spec_file(dir))
        .arg("--out")
        .arg(dir.join(out))
        .args(["--devices", devices]);
    cmd.env_remove(LOSE_DEVICE_HOOK).env_remove("RANKCOLLAPSE_TEST_FAIL_POINT");
    if let Some(k) = hook {
        cmd.env(LOSE_DEVICE_HOOK, k);
    }
    cmd.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// merged.csv of the sweep on one worker (`--devices gpu`, today's path), computed once.
fn one_worker() -> &'static [u8] {
    static MERGED: OnceLock<Vec<u8>> = OnceLock::new();
    MERGED.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let o = sweep(tmp.path(), "one", "gpu", None);
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::read(tmp.path().join("one/merged.csv")).unwrap()
    })
}

/// The per-point log lines (`[k/N] point ID (...) done in ...`), one per point ended.
fn point_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains("] point ") && l.contains(" done in ")).collect()
}

#[test]
fn two_workers_on_one_adapter_merge_to_the_bytes_of_one_worker() {
    let Some(_ctx) = context() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let o = sweep(tmp.path(), "two", "gpu:0,0", None);
    let log = stderr(&o);
    assert!(o.status.success(), "{log}");
    assert!(log.contains("GPU workers (2): worker 1 (adapter 0 "), "{log}");
    let lines = point_lines(&log);
    assert_eq!(lines.len(), POINTS, "{log}");
    for worker in ["on worker 1 (adapter 0 ", "on worker 2 (adapter 0 "] {
        assert!(lines.iter().any(|l| l.contains(worker)), "no point ran {worker}:\n{log}");
    }
    let merged = std::fs::read(tmp.path().join("two/merged.csv")).unwrap();
    assert!(merged == one_worker(), "two workers' merged.csv differs from one worker's");
}

/// `gpu:all` takes every hardware adapter of the first backend that has one, else adapter 0 (a
/// software one): here the rule is written out from docs/sweeps.md, not taken from the code.
#[test]
fn gpu_all_runs_one_worker_per_gpu_and_merges_like_one_worker() {
    let Some(_ctx) = context() else { return };
    let list = rankcollapse::engine::gpu::adapters();
    let hardware: Vec<&rankcollapse::engine::gpu::AdapterSummary> =
        list.iter().filter(|a| rankcollapse::engine::gpu::is_hardware(&a.info)).collect();
    let expected: Vec<usize> = match hardware.first() {
        Some(first) => {
            hardware.iter().filter(|a| a.info.backend == first.info.backend).map(|a| a.index).collect()
        }
        None => vec![0],
    };
    let tmp = tempfile::tempdir().unwrap();
    let o = sweep(tmp.path(), "all", "gpu:all", None);
    let log = stderr(&o);
    assert!(o.status.success(), "{log}");
    assert!(log.contains(&format!("GPU workers ({}): ", expected.len())), "{log}");
    for (n, i) in expected.iter().enumerate() {
        assert!(log.contains(&format!("worker {} (adapter {i} ", n + 1)), "{log}");
    }
    assert_eq!(point_lines(&log).len(), POINTS, "{log}");
    // Bitwise only where the workers' adapters are the one `--devices gpu` picks (lavapipe).
    if expected == [0] {
        let merged = std::fs::read(tmp.path().join("all/merged.csv")).unwrap();
        assert!(merged == one_worker(), "gpu:all's merged.csv differs from one worker's");
    }
}

/// The device of the second device created (by either worker) is destroyed mid-chunk: that worker
/// stops and hands its point back; the other finishes every point, nothing is recorded as failed,
/// and the merged result is the one worker's.
#[test]
fn a_worker_that_loses_its_device_hands_its_point_to_the_other() {
    let Some(_ctx) = context() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let o = sweep(tmp.path(), "lost", "gpu:0,0", Some("2"));
    let log = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{log}");
    let stops: Vec<&str> = log.lines().filter(|l| l.contains(" stops: ")).collect();
    assert_eq!(stops.len(), 1, "exactly one worker must lose its device:\n{log}");
    assert!(stops[0].contains("was lost") && stops[0].contains("goes back to the queue"), "{log}");
    // The point handed back is run (by the other worker) and counted once.
    let handed = stops[0].split("point ").last().unwrap().split_whitespace().next().unwrap();
    let lines = point_lines(&log);
    assert_eq!(lines.len(), POINTS, "{log}");
    assert_eq!(lines.iter().filter(|l| l.contains(&format!("point {handed} "))).count(), 1, "{log}");
    let status = Command::new(env!("CARGO_BIN_EXE_rankcollapse"))
        .args(["sweep", "status"])
        .arg(tmp.path().join("lost"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&status.stdout);
    assert!(report.contains(&format!("{POINTS} points: {POINTS} done, 0 failed, 0 missing")), "{report}");
    let merged = std::fs::read(tmp.path().join("lost/merged.csv")).unwrap();
    assert!(merged == one_worker(), "the merged result after a lost device differs from one worker's");
}

/// With one worker whose device is lost, no worker is left: the points are reported not done
/// (exit 1, nothing recorded, nothing merged) and a rerun completes them.
#[test]
fn when_every_worker_loses_its_device_the_points_are_reported_not_done() {
    let Some(_ctx) = context() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let o = sweep(tmp.path(), "gone", "gpu:0", Some("1"));
    let log = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(log.contains("error: every GPU worker lost its device (worker 1 (adapter 0 "), "{log}");
    assert!(log.contains(&format!("{POINTS} points of this shard not done")), "{log}");
    let records = std::fs::read_dir(tmp.path().join("gone/points")).unwrap().count();
    assert_eq!(records, 0, "a point handed back must not be recorded:\n{log}");
    assert!(!tmp.path().join("gone/merged.csv").exists());
    let o = sweep(tmp.path(), "gone", "gpu:0", None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read(tmp.path().join("gone/merged.csv")).unwrap() == one_worker());
}

/// Each bad `--devices` is refused before anything runs (exit 2, no results directory), naming
/// the value and what is allowed.
#[test]
fn bad_device_specs_are_refused_naming_the_value_and_what_is_allowed() {
    let adapters = rankcollapse::engine::gpu::adapters().len();
    let out_of_range = format!("gpu:{adapters}");
    let range = match adapters {
        0 => "there is no GPU adapter".to_string(),
        n => format!("allowed indices are 0 to {}", n - 1),
    };
    let cases: Vec<(&str, Option<&str>, Vec<String>)> = vec![
        ("gpu:", None, vec![r#""" is not an adapter index"#.into(), "gpu:all".into(), "gpu:I,J".into()]),
        ("gpu:x", None, vec![r#""x" is not an adapter index"#.into(), "e.g. gpu:0,2".into()]),
        ("gpu:0,,1", None, vec![r#""" is not an adapter index"#.into()]),
        ("gpus", None, vec!["allowed are all".into(), "cpu or gpu".into(), "gpu:all".into()]),
        (&out_of_range, None, vec![format!("no GPU adapter has index {adapters}"), range]),
        // A backend this platform does not have: wgpu lists no adapter.
        ("gpu:all", Some("dx12"), vec!["no GPU adapter found".into(), "--devices cpu".into()]),
    ];
    let tmp = tempfile::tempdir().unwrap();
    for (devices, backend, wants) in cases {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rankcollapse"));
        cmd.args(["sweep", "run"]).arg(spec_file(tmp.path())).arg("--out").arg(tmp.path().join("never"));
        cmd.args(["--devices", devices]);
        if let Some(b) = backend {
            cmd.env("WGPU_BACKEND", b);
        }
        let o = cmd.output().unwrap();
        let log = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "--devices {devices}: {log}");
        assert!(
            log.contains(&format!("--devices {devices:?}")),
            "the error does not name {devices:?}: {log}"
        );
        for want in wants {
            assert!(log.contains(&want), "--devices {devices}: no {want:?} in {log}");
        }
        assert!(!log.contains("panicked"), "{log}");
        assert!(!tmp.path().join("never").exists(), "--devices {devices} wrote results");
    }
}

/// SIGTERM stops both workers: the points in flight are abandoned (not recorded), the records
/// written are whole, nothing is merged, exit 143; the resume merges to one worker's bytes.
#[test]
fn sigterm_stops_every_worker_and_the_resume_matches_one_worker() {
    use crate::reliability::{send, wait_until};
    let Some(_ctx) = context() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("term");
    let recorded = || std::fs::read_dir(out.join("points")).map_or(0, |d| d.count());
    let child = Command::new(env!("CARGO_BIN_EXE_rankcollapse"))
        .args(["sweep", "run"])
        .arg(spec_file(tmp.path()))
        .arg("--out")
        .arg(&out)
        .args(["--devices", "gpu:0,0"])
        .env_remove(LOSE_DEVICE_HOOK)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(|| recorded() >= 1);
    send(&child, "TERM");
    let o = child.wait_with_output().unwrap();
    let log = stderr(&o);
    let now = recorded();
    assert!(now < POINTS, "the sweep finished before the signal; make the points slower:\n{log}");
    assert_eq!(o.status.code(), Some(143), "{log}");
    assert!(
        log.contains(&format!("interrupted by SIGTERM: {now} of {POINTS} points of this shard done, ")),
        "{log}"
    );
    for entry in std::fs::read_dir(out.join("points")).unwrap() {
        let rec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(entry.unwrap().path()).unwrap()).unwrap();
        assert_eq!(rec["status"], "done", "{log}");
    }
    // Every abandoned point (named in the message) is unrecorded.
    let tail = log.lines().find(|l| l.contains("interrupted by SIGTERM")).unwrap();
    for id in tail.split_whitespace().filter(|w| w.len() == 16 && w.chars().all(|c| c.is_ascii_hexdigit())) {
        assert!(!out.join("points").join(format!("{id}.json")).exists(), "abandoned point {id} was recorded");
    }
    assert!(!out.join("merged.csv").exists(), "an interrupted sweep must not merge");
    let o = sweep(tmp.path(), "term", "gpu:0,0", None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read(out.join("merged.csv")).unwrap() == one_worker());
}
