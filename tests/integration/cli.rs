//! The real binary in a temporary directory, and configuration validation errors.

use rankcollapse::config::Config;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rankcollapse"))
}

const TINY: [&str; 8] = ["--depth", "3", "--tokens", "6", "--sequences", "3", "--seed", "5"];

#[test]
fn run_writes_tidy_layers_csv_sequences_csv_and_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("result");
    let status = bin()
        .args(["run"])
        .args(TINY)
        .args([
            "--width",
            "4",
            "--mask",
            "causal",
            "--norm",
            "post-ln",
            "--skip",
            "standard",
            "--mlp",
            "gelu:2",
            "--sequences-csv",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(status.status.success(), "stderr: {}", String::from_utf8_lossy(&status.stderr));
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(table.contains("log10 res_fro") && table.lines().count() == 5, "table:\n{table}");

    let mut layers = csv::Reader::from_path(out.join("layers.csv")).unwrap();
    let header: Vec<String> = layers.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header, ["layer", "metric", "mean", "std", "median", "p05", "p95", "count", "nonfinite"]);
    let rows: Vec<csv::StringRecord> = layers.records().map(|r| r.unwrap()).collect();
    let metrics: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.get(1).unwrap()).collect();
    for m in rankcollapse::metrics::Metric::ALL {
        assert!(metrics.contains(m.name()), "metric {m} missing from layers.csv");
    }
    for r in &rows {
        let layer: usize = r[0].parse().unwrap();
        assert!(layer <= 3);
        assert_eq!(&r[7], "3", "count in {r:?}");
        assert_eq!(&r[8], "0", "nonfinite in {r:?}");
        for k in 2..7 {
            let v: f64 = r[k].parse().unwrap_or_else(|_| panic!("not a number in {r:?}"));
            assert!(v.is_finite(), "non-finite statistic in {r:?}");
        }
    }
    // Attention metrics are absent for the input layer only.
    assert!(!rows.iter().any(|r| &r[0] == "0" && r[1].starts_with("attn_")));
    assert!(rows.iter().any(|r| &r[0] == "1" && &r[1] == "attn_sigma2"));

    let seqs = std::fs::read_to_string(out.join("sequences.csv")).unwrap();
    assert_eq!(seqs.lines().count(), 1 + 3 * 4, "{seqs}");
    assert!(seqs.starts_with("sequence,layer,res_fro,log10_res_fro"));

    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["engine"], "cpu-f64");
    assert_eq!(manifest["seed"], 5);
    assert_eq!(manifest["config"]["mask"], "causal");
    assert_eq!(manifest["config"]["head_rank"], 4);
    assert!(manifest["git_commit"].is_string() && manifest["version"].is_string());
    assert!(manifest["timings"]["compute_seconds"].as_f64().unwrap() >= 0.0);
    // The resolved configuration in the manifest reproduces the run.
    let cfg: Config = serde_json::from_value(manifest["config"].clone()).unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.mlp.to_string(), "gelu:2");
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn json_format_and_toml_config_agree_with_flags() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("run.toml");
    std::fs::write(&toml, "depth = 3\ntokens = 6\nwidth = 4\nsequences = 3\nseed = 5\nmask = \"window:2\"\n")
        .unwrap();
    let from_file = bin().args(["run", "--format", "json", "--config"]).arg(&toml).output().unwrap();
    let from_flags = bin()
        .args(["run", "--format", "json", "--mask", "window:2", "--width", "4"])
        .args(TINY)
        .output()
        .unwrap();
    assert!(from_file.status.success() && from_flags.status.success());
    let a: serde_json::Value = serde_json::from_slice(&from_file.stdout).unwrap();
    let b: serde_json::Value = serde_json::from_slice(&from_flags.stdout).unwrap();
    assert_eq!(a["layers"], b["layers"]);
    assert_eq!(a["layers"].as_array().unwrap().len(), 4);
    let v = &a["layers"][3]["metrics"]["log10_res_fro"]["mean"];
    assert!(v.as_f64().is_some_and(|x| x.is_finite() && x < 0.0), "{v}");
}

#[test]
fn exact_collapse_is_reported_as_minus_infinity_not_nan() {
    let out = bin()
        .args(["run", "--format", "json", "--attention", "uniform", "--width", "4"])
        .args(TINY)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["layers"][1]["metrics"]["log10_res_fro"]["mean"], "-inf");
    assert_eq!(doc["layers"][1]["metrics"]["res_fro"]["mean"], 0.0);
    assert!(!String::from_utf8_lossy(&out.stdout).to_lowercase().contains("nan"));
}

#[test]
fn bad_flags_fail_with_a_message_naming_the_field_and_value() {
    let cases: [(&[&str], &[&str]); 9] = [
        (&["--mask", "window:99"], &["mask", "window:99", "tokens = 6"]),
        (&["--mask", "diagonal"], &["mask", "diagonal", "causal-window:W"]),
        (&["--head-rank", "0"], &["head_rank", "0"]),
        (&["--heads", "2", "--value", "orthogonal"], &["value", "orthogonal", "square", "4 x 2"]),
        (&["--temperature", "-1"], &["temperature", "-1"]),
        (&["--input", "orthonormal", "--width", "3"], &["input", "orthonormal", "tokens (6) <= width (3)"]),
        (&["--skip", "scaled:1"], &["skip", "scaled:1"]),
        (&["--gpu-memory-mb", "0"], &["gpu_memory_mb", "0"]),
        (&["--engine", "gpu", "--adapter", "no-such-adapter"], &["adapter", "no-such-adapter"]),
    ];
    for (flags, needles) in cases {
        let mut cmd = bin();
        cmd.arg("run").args(TINY).args(flags);
        if !flags.contains(&"--width") {
            cmd.args(["--width", "4"]);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} was accepted");
        assert_ne!(out.status.code(), Some(101), "{flags:?} panicked: {err}");
        for n in needles {
            assert!(err.contains(n), "{flags:?}: error does not mention {n:?}: {err}");
        }
    }
}

#[test]
fn config_validation_rejects_each_invalid_field() {
    let ok = Config { tokens: 8, width: 8, ..Config::default() };
    ok.validate().unwrap();
    let cases: Vec<(Config, &str)> = vec![
        (Config { depth: 0, ..ok.clone() }, "depth"),
        (Config { tokens: 1, ..ok.clone() }, "tokens"),
        (Config { heads: 0, ..ok.clone() }, "heads"),
        (Config { head_rank: Some(0), ..ok.clone() }, "head_rank"),
        (Config { sequences: 0, ..ok.clone() }, "sequences"),
        (Config { mask: "causal-window:9".parse().unwrap(), ..ok.clone() }, "mask"),
        (Config { norm_eps: 0.0, ..ok.clone() }, "norm_eps"),
        (Config { norm_gain: f64::NAN, ..ok.clone() }, "norm_gain"),
        (Config { mlp: "relu:0".parse().unwrap(), ..ok.clone() }, "mlp"),
        (Config { input: "shared:1.5".parse().unwrap(), ..ok.clone() }, "input"),
        (Config { qk: "orthogonal".parse().unwrap(), head_rank: Some(3), ..ok.clone() }, "qk"),
        (Config { out_proj: "none".parse().unwrap(), heads: 3, ..ok.clone() }, "out_proj"),
        (Config { value: "none".parse().unwrap(), ..ok.clone() }, "value"),
        (Config { value: "gaussian:-1".parse().unwrap(), ..ok.clone() }, "value"),
    ];
    for (c, field) in cases {
        let e = c.validate().expect_err(field);
        assert_eq!(e.field, field, "{e}");
        assert!(e.to_string().starts_with(field), "{e}");
    }
    let e = Config::from_toml("depht = 3").unwrap_err().to_string();
    assert!(e.contains("unknown key `depht`") && e.contains("did you mean `depth`?"), "{e}");
}
