//! GPU kernels on a real adapter (lavapipe in CI) against their CPU twins. Without an adapter
//! these tests fail when RANKCOLLAPSE_REQUIRE_GPU is set (CI sets it) and skip loudly otherwise.

use rankcollapse::engine::gpu::GpuContext;
use rankcollapse::metrics::Metric;
use rankcollapse::model::state::Tracked;
use rankcollapse::rng::{philox4x32_10, Purpose, Stream};

pub(crate) fn context() -> Option<GpuContext> {
    match GpuContext::new(None) {
        Ok(c) => Some(c),
        Err(e) if std::env::var_os("RANKCOLLAPSE_REQUIRE_GPU").is_some() => {
            panic!("RANKCOLLAPSE_REQUIRE_GPU is set but there is no GPU adapter: {e:#}")
        }
        Err(e) => {
            eprintln!(
                "SKIPPED: no GPU adapter ({e:#}); set RANKCOLLAPSE_REQUIRE_GPU=1 to make this a failure"
            );
            None
        }
    }
}

#[test]
fn philox_on_the_gpu_matches_the_cpu_generator() {
    let Some(ctx) = context() else { return };
    println!("adapter: {} ({:?})", ctx.info.name, ctx.info.backend);
    let cases = [
        (0u64, Stream::new(Purpose::Input, 0, 0).0, 0u32, 1u32),
        (12345, Stream::new(Purpose::Query, 3, 1).0, 7, 63),
        (u64::MAX, Stream::new(Purpose::Markov, 1023, 255).0, u32::MAX, 65),
        (0x243f_6a88_85a3_08d3, 0xdead_beef, 42, 1000),
    ];
    for (seed, stream, sequence, count) in cases {
        let gpu = ctx.philox_blocks(seed, stream, sequence, count).unwrap();
        assert_eq!(gpu.len(), count as usize);
        for (q, words) in gpu.iter().enumerate() {
            let cpu = philox4x32_10([q as u32, 0, sequence, stream], [seed as u32, (seed >> 32) as u32]);
            assert_eq!(*words, cpu, "seed {seed} stream {stream:#x} sequence {sequence} block {q}");
        }
    }
}

#[test]
fn devices_lists_the_adapter() {
    let Some(ctx) = context() else { return };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rankcollapse")).arg("devices").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("[0]") && text.contains(&ctx.info.name) && text.contains("max storage binding"),
        "{text}"
    );
}

/// The GPU engine (f32 kernels) against the f64 CPU engine on the random configurations of the
/// precision test (every mask, attention kind, norm, skip, MLP, weight and input family), by
/// metric, with the f32 tolerance of that test: 2e-5 * 3^layer relative (at most 1e-2) for
/// values, the same absolutely or 2e-4 relative for logs. sigma_ratio is compared where both
/// engines resolve it (the GPU's floor is 1e-2, the CPU's 1.5e-5).
#[test]
fn gpu_engine_tracks_the_f64_cpu_engine() {
    let Some(ctx) = context() else { return };
    let mut tally = crate::precision::Tally::new();
    // GPU_TEST_SEEDS=A..B widens the sweep (the default is the precision test's range).
    let seeds = std::env::var("GPU_TEST_SEEDS").ok().and_then(|v| {
        let (a, b) = v.split_once("..")?;
        Some(a.parse::<u64>().ok()?..b.parse::<u64>().ok()?)
    });
    let report_only = std::env::var_os("GPU_TEST_REPORT").is_some();
    for seed in seeds.unwrap_or(100..124) {
        // The precision test's configurations ask for the attention spectrum at every layer.
        let c = crate::precision::random_config(seed);
        let gpu = rankcollapse::engine::gpu::run::simulate(&ctx, &c, 2).unwrap();
        let cpu = rankcollapse::engine::cpu::simulate::<f64>(&c);
        tally.compare(seed, &c, "gpu", &gpu, &cpu, true, report_only);
    }
    tally.finish();
}

/// Per-sequence results do not depend on the chunk size (bitwise).
#[test]
fn gpu_results_do_not_depend_on_the_chunk_size() {
    let Some(ctx) = context() else { return };
    let c = rankcollapse::config::Config {
        depth: 4,
        tokens: 24,
        width: 16,
        heads: 2,
        sequences: 5,
        mask: "causal".parse().unwrap(),
        norm: "post-ln".parse().unwrap(),
        skip: "standard".parse().unwrap(),
        mlp: "gelu:2".parse().unwrap(),
        spectrum_every: 0,
        seed: 7,
        ..Default::default()
    };
    let one = rankcollapse::engine::gpu::run::simulate(&ctx, &c, 1).unwrap();
    let three = rankcollapse::engine::gpu::run::simulate(&ctx, &c, 3).unwrap();
    let five = rankcollapse::engine::gpu::run::simulate(&ctx, &c, 5).unwrap();
    let bits = |r: &Vec<Vec<rankcollapse::metrics::LayerMetrics>>| -> Vec<u64> {
        r.iter().flatten().flat_map(|m| m.iter().map(|(_, v)| v.map_or(1, f64::to_bits))).collect()
    };
    assert_eq!(bits(&one), bits(&three), "chunk 1 vs chunk 3 (seed 7)");
    assert_eq!(bits(&one), bits(&five), "chunk 1 vs chunk 5 (seed 7)");
}

/// Distance between a GPU result and its CPU twin: the log scales absolutely (relative beyond
/// magnitude 1), the mean absolutely (|m| <= 1) and R relative to |R|_F.
fn state_error(gpu: &Tracked<f64>, cpu: &Tracked<f64>) -> f64 {
    let log_err = |a: f64, b: f64| {
        if a == b {
            0.0
        } else {
            (a - b).abs() / b.abs().max(1.0)
        }
    };
    let fro = |m: ndarray::ArrayView2<f64>| m.iter().map(|v| v * v).sum::<f64>().sqrt();
    let r_err = if cpu.log_res == f64::NEG_INFINITY && gpu.log_res == f64::NEG_INFINITY {
        0.0
    } else {
        fro((&gpu.res - &cpu.res).view()) / fro(cpu.res.view()).max(f64::MIN_POSITIVE)
    };
    let m_err = (&gpu.mean - &cpu.mean).iter().fold(0.0f64, |a, v| a.max(v.abs()));
    log_err(gpu.log_scale, cpu.log_scale).max(log_err(gpu.log_res, cpu.log_res)).max(r_err).max(m_err)
}

/// Each kernel family (attention, norm, MLP, skip, metrics) against its CPU twin, applied once to
/// the same states: the states a CPU f64 run of the precision test's random configurations passes
/// through (every mask, attention kind, norm, MLP; residuals from O(1) to far below f32 epsilon).
/// One application may differ by f32 rounding (3e-6 of each part of the state), the metrics by
/// the f32 tolerance of layer 0.
#[test]
fn each_kernel_family_matches_its_cpu_twin() {
    use rankcollapse::engine::gpu::chunk::Kernels;
    use rankcollapse::engine::gpu::twin::{apply_part, metrics_of, Part};
    use rankcollapse::model::{self, attention, mlp, norm};
    let Some(ctx) = context() else { return };
    let k = Kernels::new(&ctx).unwrap();
    let mut worst = (0.0f64, String::new());
    let mut checked = [0usize; 5];
    for seed in 100..116u64 {
        let mut c = crate::precision::random_config(seed);
        c.spectrum_every = 0;
        let mut xs: Vec<Tracked<f64>> =
            (0..c.sequences).map(|s| Tracked::from_matrix(model::input_tokens(&c, s))).collect();
        for layer in 0..c.depth {
            let w = model::layer_weights::<f64>(&c, layer, 0);
            let mut report = |part: &str, family: usize, gpu: &[Tracked<f64>], cpu: &[Tracked<f64>]| {
                checked[family] += gpu.len();
                for (s, (a, b)) in gpu.iter().zip(cpu).enumerate() {
                    let e = state_error(a, b);
                    let what = format!(
                        "seed {seed} layer {layer} seq {s} {part}: error {e:.2e} (l {} vs {})",
                        a.log_res, b.log_res
                    );
                    assert!(e <= 3e-6, "{what}");
                    if e > worst.0 {
                        worst = (e, what);
                    }
                }
            };
            let gpu = apply_part(&ctx, &k, &c, layer, Part::Attention, &xs).unwrap();
            let att: Vec<_> = xs.iter().map(|x| attention::attention_layer(&c, &w, x, false).0).collect();
            report("attention", 0, &gpu, &att);
            if c.norm != rankcollapse::config::Norm::None {
                let gpu = apply_part(&ctx, &k, &c, layer, Part::Norm, &xs).unwrap();
                let cpu: Vec<_> = xs.iter().map(|x| norm::normalise(&c, x)).collect();
                report("norm", 1, &gpu, &cpu);
            }
            if let Some(wm) = &w.mlp {
                let gpu = apply_part(&ctx, &k, &c, layer, Part::Mlp, &xs).unwrap();
                let cpu: Vec<_> = xs.iter().map(|x| mlp::mlp(&c, wm, x)).collect();
                report("mlp", 2, &gpu, &cpu);
            }
            let (a, b) = c.skip.coefficients();
            if (a, b) != (0.0, 1.0) {
                let gpu = apply_part(&ctx, &k, &c, layer, Part::Skip(&att), &xs).unwrap();
                let cpu: Vec<_> = xs.iter().zip(&att).map(|(x, f)| Tracked::affine_sum(a, x, b, f)).collect();
                report("skip", 3, &gpu, &cpu);
            }
            let gpu = metrics_of(&ctx, &k, &c, &xs).unwrap();
            for (s, (mg, x)) in gpu.iter().zip(&xs).enumerate() {
                let mc = rankcollapse::metrics::layer_metrics(x, None);
                checked[4] += 1;
                for name in Metric::ALL {
                    let (Some(a), Some(b)) = (mg.get(name), mc.get(name)) else { continue };
                    if a == b || (name.withheld_below_floor() && (a.is_nan() || b.is_nan())) {
                        continue;
                    }
                    // A token far shorter than the mean has no f32 direction: its cosines are not
                    // resolved by an f32 state (the CPU f32 engine shares this).
                    if name == Metric::MeanAbsCos
                        && x.dense()
                            .rows()
                            .into_iter()
                            .any(|r| r.dot(&r).sqrt() < 1e-4 * x.mean.dot(&x.mean).sqrt())
                    {
                        continue;
                    }
                    let score = if name.withheld_below_floor() {
                        // sigma_2^2 is resolved to a few f32 ulps of the squared scale it is
                        // computed against (|X|_F^2, or s^2 |R|_F^2 when the mean dominates).
                        // In logs: s^2 underflows f64 deep in the collapse.
                        let nf = x.tokens() as f64;
                        let (m2, s2) = (x.mean.dot(&x.mean), (2.0 * x.log_res).exp());
                        let ln_lam1 = (nf * (m2 + s2) / mc.get(Metric::StableRank).unwrap()).ln();
                        let ln_sig2_sq =
                            2.0 * mc.get(Metric::Log10SigmaRatio).unwrap() * std::f64::consts::LN_10
                                + ln_lam1;
                        let ln_scale =
                            if s2 > m2 / 4.0 { (nf * (m2 + s2)).ln() } else { nf.ln() + 2.0 * x.log_res };
                        // The GPU keeps l in f32: e^l carries a relative error |l| eps_f32.
                        let eps = f64::from(f32::EPSILON);
                        let tol =
                            2e-5 + 8.0 * eps * (ln_scale - ln_sig2_sq).exp() + 2.0 * eps * x.log_res.abs();
                        let rel = if name.is_log() {
                            (a - b).abs() * std::f64::consts::LN_10
                        } else {
                            (a - b).abs() / b
                        };
                        rel / tol
                    } else {
                        crate::precision::f32_score(name.name(), 0, a, b)
                    };
                    assert!(score <= 1.0, "seed {seed} layer {layer} seq {s} metric {name}: gpu {a} vs cpu {b} ({score:.2} of the tolerance)");
                }
            }
            // The next layer's input: the CPU engine's own state.
            xs = xs.iter().map(|x| model::apply_layer(&c, &w, x, false).0).collect();
        }
    }
    println!("states checked (attention, norm, mlp, skip, metrics): {checked:?}");
    println!("worst state error: {:.2e} at {}", worst.0, worst.1);
    assert!(checked.iter().all(|&k| k > 0), "some kernel family was never exercised: {checked:?}");
}

/// Long context on the GPU: n = 16384 tokens at tiny batch and depth, streamed (no n x n buffer:
/// the chunk's memory grows linearly in n), against the f64 CPU engine. llvmpipe stops every
/// shader loop after 65535 header passes per invocation and returns wrong numbers; there a run at
/// this length must be refused with an error that says why (compose's four passes over the rows
/// alone exceed the limit), and the streamed softmax runs at the longest length within the limit
/// at width 1 (n = 8192).
#[test]
fn long_context_runs_on_the_gpu_in_linear_memory() {
    use rankcollapse::config::Config;
    use rankcollapse::engine::gpu::fit::{bytes_per_sequence, loop_iterations, LLVMPIPE_LOOP_LIMIT};
    use rankcollapse::engine::gpu::run::simulate;
    let Some(ctx) = context() else { return };
    let softmax = Config {
        depth: 2,
        tokens: 16384,
        width: 8,
        heads: 1,
        sequences: 1,
        spectrum_every: 0,
        seed: 3,
        ..Default::default()
    };
    let half = Config { tokens: 8192, ..softmax.clone() };
    let (big, small) = (bytes_per_sequence(&softmax).0, bytes_per_sequence(&half).0);
    println!("device bytes per sequence: n = 8192: {small}, n = 16384: {big}");
    assert!((big as f64) < 2.01 * small as f64, "memory is not linear in n: {small} -> {big}");
    let runs = if ctx.info.name.contains("llvmpipe") {
        let text = format!("{:#}", simulate(&ctx, &softmax, 1).unwrap_err());
        assert!(text.contains("65535") && text.contains("16384"), "{text}");
        let short = Config { width: 1, tokens: 8192, mask: "causal".parse().unwrap(), ..softmax };
        assert!(loop_iterations(&short) <= LLVMPIPE_LOOP_LIMIT, "{short:?}");
        vec![short]
    } else {
        vec![softmax]
    };
    for c in runs {
        let gpu = simulate(&ctx, &c, 1).unwrap();
        let cpu = rankcollapse::engine::cpu::simulate::<f64>(&c);
        for layer in 0..=c.depth {
            for name in [
                Metric::Log10ResFro,
                Metric::Log10Mu,
                Metric::StableRank,
                Metric::MeanAbsCos,
                Metric::AttnEntropy,
            ] {
                let (Some(a), Some(b)) = (gpu[0][layer].get(name), cpu[0][layer].get(name)) else { continue };
                println!(
                    "seed 3, n = {}, {}, layer {layer} {name}: gpu {a} cpu-f64 {b}",
                    c.tokens, c.attention
                );
                let score = crate::precision::f32_score(name.name(), layer, a, b);
                assert!(score <= 1.0, "n = {} layer {layer} {name}: gpu {a} vs cpu-f64 {b}", c.tokens);
            }
        }
    }
}

fn binary() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_rankcollapse"))
}

/// A chunk that does not fit the device is retried in halves, and the results are the same,
/// bit for bit, as a run that fitted at once. Out of memory cannot be produced on purpose on a
/// shared machine, so the engine's hook (RANKCOLLAPSE_TEST_GPU_OOM_ABOVE) fails every chunk of
/// more than one sequence inside the real retry path.
#[test]
fn a_chunk_that_does_not_fit_is_retried_smaller_with_identical_results() {
    use rankcollapse::engine::gpu::run::OOM_HOOK;
    let Some(_ctx) = context() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let run = |dir: &str, chunk: &str, hook: Option<&str>| {
        let out = tmp.path().join(dir);
        let mut cmd = binary();
        cmd.args(["run", "--engine", "gpu", "--sequences", "5", "--depth", "3", "--tokens", "12"])
            .args(["--width", "6", "--seed", "4", "--sequences-csv", "--chunk", chunk, "--out"])
            .arg(&out);
        if let Some(h) = hook {
            cmd.env(OOM_HOOK, h);
        }
        let o = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(o.status.success(), "{stderr}");
        let csv = std::fs::read_to_string(out.join("sequences.csv")).unwrap();
        let manifest = std::fs::read_to_string(out.join("manifest.json")).unwrap();
        (csv, manifest, stderr)
    };
    let (fitted, _, _) = run("fitted", "1", None);
    let (retried, manifest, stderr) = run("retried", "5", Some("1"));
    assert_eq!(fitted, retried, "a retried run differs from one that fitted");
    assert!(stderr.contains("a chunk of 5 sequences (from sequence 0) failed"), "{stderr}");
    assert!(stderr.contains("out of device memory"), "{stderr}");
    assert!(manifest.contains("chunk 5, reduced to 1 after 2 failed chunks"), "{manifest}");
}

/// A lost device (destroyed for real by the engine's test hook in the middle of a chunk) fails
/// that point with the reason; the next point gets a new device and the sweep goes on. A resume
/// then completes the sweep.
#[test]
fn a_lost_device_fails_its_point_and_the_sweep_goes_on() {
    use rankcollapse::engine::gpu::LOSE_DEVICE_HOOK;
    let Some(_ctx) = context() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("spec.toml");
    std::fs::write(
        &spec,
        "[sweep]\nname = \"lost\"\nseed = 1\n[fixed]\nengine = \"gpu\"\ntokens = 8\nwidth = 4\n\
         sequences = 2\nspectrum_every = 0\n[grid]\ndepth = [1, 2, 3]\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    let sweep = |hook: Option<&str>| {
        let mut cmd = binary();
        cmd.args(["sweep", "run"]).arg(&spec).arg("--out").arg(&out);
        if let Some(h) = hook {
            cmd.env(LOSE_DEVICE_HOOK, h);
        }
        cmd.output().unwrap()
    };
    let o = sweep(Some("2"));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    let status = binary().args(["sweep", "status"]).arg(&out).output().unwrap();
    let report = String::from_utf8_lossy(&status.stdout);
    assert!(report.contains("3 points: 2 done, 1 failed, 0 missing"), "{report}");
    let failed: Vec<&str> = report.lines().filter(|l| l.starts_with("failed")).collect();
    assert_eq!(failed.len(), 1, "{report}");
    assert!(failed[0].contains("was lost"), "the failure does not say the device was lost: {report}");
    let o = sweep(None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.join("merged.csv").exists());
}

/// `--profile` prints a per-kernel table from timestamp queries: every kernel that ran, with as
/// many passes as the engine dispatched (metrics once per layer and the input; attention once
/// per head and layer), and times that add up to the total line.
#[test]
fn profile_prints_a_per_kernel_table() {
    let Some(ctx) = context() else { return };
    if !ctx.device.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
        eprintln!("SKIPPED: {} has no timestamp queries", ctx.info.name);
        return;
    }
    let o = binary()
        .args(["run", "--engine", "gpu", "--profile", "--depth", "3", "--heads", "2", "--tokens", "16"])
        .args(["--width", "8", "--sequences", "3", "--spectrum-every", "0", "--chunk", "3"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let row = |kernel: &str| -> (u64, f64) {
        let line = stderr
            .lines()
            .find(|l| l.split_whitespace().next() == Some(kernel))
            .unwrap_or_else(|| panic!("no row for {kernel} in the profile:\n{stderr}"));
        let f: Vec<&str> = line.split_whitespace().collect();
        (f[1].parse().unwrap(), f[2].parse().unwrap())
    };
    assert_eq!(row("metrics.metrics").0, 4, "{stderr}");
    assert_eq!(row("attention.attend").0, 6, "{stderr}");
    assert_eq!(row("generate.inputs").0, 1, "{stderr}");
    assert!(row("check.check").0 > 0, "{stderr}");
    let kernels: Vec<(u64, f64)> = stderr
        .lines()
        .skip_while(|l| !l.starts_with("kernel "))
        .skip(1)
        .take_while(|l| !l.starts_with("all kernels"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[1].parse().unwrap(), f[2].parse().unwrap())
        })
        .collect();
    let total = stderr.lines().find(|l| l.starts_with("all kernels")).expect("a total line");
    let total: Vec<&str> = total.split_whitespace().collect();
    let passes: u64 = kernels.iter().map(|k| k.0).sum();
    let ms: f64 = kernels.iter().map(|k| k.1).sum();
    assert_eq!(total[2].parse::<u64>().unwrap(), passes, "{stderr}");
    assert!((total[3].parse::<f64>().unwrap() - ms).abs() < 1e-3 * kernels.len() as f64, "{stderr}");
    assert!(ms > 0.0, "no time measured: {stderr}");
}

/// A value scale of 1e300 does not fit f32: the check kernel finds the non-finite state after
/// the first layer's attention, names sequence, layer and part, and every metric of the faulted
/// layers is a fault in the manifest (none withheld, none averaged), with exit status 1.
#[test]
fn a_numerical_fault_on_the_gpu_is_named_and_counted() {
    let Some(_ctx) = context() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = binary()
        .args(["run", "--engine", "gpu", "--value", "scaled-identity:1e300", "--depth", "3", "--tokens", "8"])
        .args(["--width", "8", "--sequences", "2", "--spectrum-every", "1", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    for s in 0..2 {
        assert!(stderr.contains(&format!("error: sequence {s} layer 1 attention: ")), "{stderr}");
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["faults"].as_array().map(Vec::len), Some(2), "{manifest}");
    assert_eq!(manifest["nonfinite_faults"], 16 * 2 * 3, "{manifest}");
    assert_eq!(manifest["nonfinite_withheld"], 0, "{manifest}");
}

/// A metrics kernel whose loops the driver cut short (llvmpipe past 65535 loop passes) is
/// reported as a `metrics` fault of that layer, never as numbers. The real cut cannot be produced
/// on purpose (the reductions no longer loop), so the engine's hook makes the kernel's canary
/// report it at layer 2; layers 0 and 1 stay numbers, equal to an unhooked run's.
#[test]
fn a_metrics_kernel_cut_short_is_a_fault_not_a_number() {
    use rankcollapse::engine::gpu::run::CUT_HOOK;
    let Some(_ctx) = context() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let args =
        ["run", "--engine", "gpu", "--depth", "3", "--tokens", "8", "--width", "8", "--sequences", "2"];
    let clean = tmp.path().join("clean");
    let o = binary().args(args).arg("--sequences-csv").arg("--out").arg(&clean).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cut = tmp.path().join("cut");
    let o = binary()
        .args(args)
        .arg("--sequences-csv")
        .arg("--out")
        .arg(&cut)
        .env(CUT_HOOK, "2")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    for s in 0..2 {
        assert!(stderr.contains(&format!("error: sequence {s} layer 2 metrics: ")), "{stderr}");
    }
    assert!(stderr.contains("stopped the metrics kernel's loops short"), "{stderr}");
    let rows = |dir: &std::path::Path| -> Vec<Vec<String>> {
        std::fs::read_to_string(dir.join("sequences.csv"))
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| l.split(',').map(String::from).collect())
            .collect()
    };
    let (clean, cut) = (rows(&clean), rows(&cut));
    assert_eq!(clean.len(), cut.len());
    for (a, b) in clean.iter().zip(&cut) {
        let layer: usize = a[1].parse().unwrap();
        if layer < 2 {
            assert_eq!(a, b, "layers before the cut are the same numbers");
        } else {
            assert!(b[2..].iter().all(|v| v.is_empty() || v.parse::<f64>().unwrap().is_nan()), "{b:?}");
        }
    }
}

/// The warning about withheld sigma ratios names the resolution floor of the engine and float type
/// that produced them (the GPU's f32 Lanczos resolves 1e-2, the CPU f64 engine 1.5e-5), not one
/// taken from `--precision`, which the GPU engine ignores.
#[test]
fn the_withheld_warning_names_the_floor_of_the_engine_that_ran() {
    let Some(_ctx) = context() else { return };
    // --remove-outlier drives X to a rank-one c v^T that is not collapsed: sigma_2 / sigma_1 falls
    // below every engine's floor (seed 0).
    let config =
        ["--depth", "12", "--tokens", "8", "--width", "8", "--remove-outlier", "--value", "gaussian:1"];
    for (engine, floor) in [
        (&["--engine", "gpu", "--precision", "f64"][..], "below 1.0e-2 of the sigma_1"),
        (&["--engine", "cpu", "--precision", "f64"][..], "below 1.5e-5 of the sigma_1"),
        (&["--engine", "cpu", "--precision", "f32"][..], "below 1.2e-4 of the sigma_1"),
    ] {
        let run = binary().arg("run").args(config).args(engine).args(["--sequences", "2"]).output().unwrap();
        let log = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{engine:?}: {log}");
        assert!(log.contains(floor), "{engine:?} should warn '{floor}': {log}");
    }
}
