//! Balanced shards through the real binary: `sweep plan` on a depth x width grid whose cost
//! grows along both axes (where index mod N was 2.4x off), and changing the shard count of a
//! half-done sweep, which must neither repeat nor lose a point.

use super::sweep::{bin, SPEC};
use rankcollapse::sweep::{estimated_flops, spec::Spec};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

/// depth [8, 16, 32] x width [32, 64] x 2 masks x 2 repeats = 24 points.
const GRID: &str = r#"
[sweep]
name = "grid"
repeats = 2
[fixed]
tokens = 256
[grid]
depth = [8, 16, 32]
width = [32, 64]
mask = ["full", "causal"]
"#;

fn run_ok(cmd: &mut Command) -> (String, String) {
    let out = cmd.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{stdout}\n{stderr}");
    (stdout, stderr)
}

#[test]
fn plan_balances_a_depth_by_width_grid_within_ten_percent() {
    let tmp = tempfile::tempdir().unwrap();
    let spec_file = tmp.path().join("grid.toml");
    std::fs::write(&spec_file, GRID).unwrap();
    let (plan, _) = run_ok(bin().args(["sweep", "plan"]).arg(&spec_file).args(["--shards", "4"]));
    // The rows "shard points FLOP", as printed.
    let rows: Vec<(usize, usize, f64)> = plan
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f[..] {
                [s, n, flop] => Some((s.parse().ok()?, n.parse().ok()?, flop.parse().ok()?)),
                _ => None,
            }
        })
        .collect();
    assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), [0, 1, 2, 3], "{plan}");
    assert_eq!(rows.iter().map(|r| r.1).sum::<usize>(), 24, "{plan}");

    // The cost of every point, from the estimate itself: the printed loads must add up to it.
    let points = Spec::parse(GRID).unwrap().expand().unwrap();
    let costs: Vec<f64> = points.iter().map(|p| estimated_flops(&p.config)).collect();
    let total: f64 = costs.iter().sum();
    let printed: f64 = rows.iter().map(|r| r.2).sum();
    assert!((printed / total - 1.0).abs() < 1e-3, "printed {printed:e}, points add up to {total:e}\n{plan}");

    let mean = total / 4.0;
    let largest = rows.iter().map(|r| r.2).fold(0.0, f64::max);
    assert!(largest / mean <= 1.10, "largest shard {largest:e} vs mean {mean:e}\n{plan}");
    let ratio_line = format!("largest shard: {:.3} x the mean", largest / mean);
    assert!(plan.contains(&ratio_line), "expected {ratio_line:?} in\n{plan}");

    // The same grid by index mod 4, for contrast: this is the imbalance the new rule removes.
    let mut by_index = [0.0; 4];
    for (i, c) in costs.iter().enumerate() {
        by_index[i % 4] += c;
    }
    let old = by_index.iter().copied().fold(0.0, f64::max) / mean;
    assert!(old > 1.3, "the grid should be one that mod N splits badly: {by_index:?}");
}

/// (inode, size) of each point record: a record written again gets a new inode (the atomic
/// write renames a new file over it).
fn records(dir: &Path) -> BTreeMap<String, (u64, u64)> {
    std::fs::read_dir(dir.join("points"))
        .map(|entries| {
            entries
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .map(|p| {
                    let m = std::fs::metadata(&p).unwrap();
                    (p.file_stem().unwrap().to_string_lossy().into_owned(), (m.ino(), m.size()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// "shard I/N has H, D already done, R to run" from a run's log: (H, D, R).
fn shard_line(log: &str, shard: &str) -> (usize, usize, usize) {
    let rest = log
        .split(&format!("shard {shard} has "))
        .nth(1)
        .unwrap_or_else(|| panic!("no line for shard {shard} in\n{log}"));
    let nums: Vec<usize> =
        rest.lines().next().unwrap().split([',', ' ']).filter_map(|w| w.parse().ok()).take(3).collect();
    (nums[0], nums[1], nums[2])
}

#[test]
fn changing_the_shard_count_of_a_half_done_sweep_repeats_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("spec.toml");
    std::fs::write(&spec, SPEC).unwrap();
    let sweep = |out: &Path, shard: Option<&str>| {
        let mut cmd = bin();
        cmd.args(["sweep", "run"]).arg(&spec).arg("--out").arg(out).args(["--devices", "cpu"]);
        if let Some(s) = shard {
            cmd.args(["--shard", s]);
        }
        run_ok(&mut cmd).1
    };
    let single = tmp.path().join("single");
    sweep(&single, None);
    let all_ids: Vec<String> = records(&single).into_keys().collect();
    assert_eq!(all_ids.len(), 10);

    let out = tmp.path().join("resharded");
    let log = sweep(&out, Some("0/2"));
    let (half, done, to_run) = shard_line(&log, "0/2");
    assert_eq!((done, to_run), (0, half), "{log}");
    assert!(half > 0 && half < 10, "{log}");
    let mut before = records(&out);
    assert_eq!(before.len(), half);
    assert!(!out.join("merged.csv").exists(), "half a sweep is not merged");

    let mut computed = half;
    for i in 0..3 {
        let shard = format!("{i}/3");
        let log = sweep(&out, Some(&shard));
        let (has, done, to_run) = shard_line(&log, &shard);
        let after = records(&out);
        // Records of earlier runs are untouched, and exactly this run's "to run" are new.
        for (id, file) in &before {
            assert_eq!(after.get(id), Some(file), "shard {shard} rewrote point {id}");
        }
        assert_eq!(after.len() - before.len(), to_run, "shard {shard}: {log}");
        assert_eq!(has, done + to_run, "{log}");
        computed += to_run;
        before = after;
    }
    assert_eq!(computed, 10, "every point computed once");
    assert_eq!(before.into_keys().collect::<Vec<_>>(), all_ids, "the same points as one process");
    let a = std::fs::read(single.join("merged.csv")).unwrap();
    let b = std::fs::read(out.join("merged.csv")).expect("the last shard merges the complete sweep");
    assert_eq!(a, b, "merged results differ from the single-process run");
}
