//! GPU kernels on a real adapter (lavapipe in CI) against their CPU twins. Without an adapter
//! these tests fail when RANKCOLLAPSE_REQUIRE_GPU is set (CI sets it) and skip loudly otherwise.

use rankcollapse::engine::gpu::GpuContext;
use rankcollapse::rng::{philox4x32_10, Purpose, Stream};

fn context() -> Option<GpuContext> {
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
#[ignore = "known failure, issue 4: log10 residuals agree only to ~3e-3 relative on multi-head pure attention (seed 109) and sigma_ratio by up to 3x on tiny n (seed 111); run with GPU_TEST_REPORT=1 to list"]
fn gpu_engine_tracks_the_f64_cpu_engine() {
    let Some(ctx) = context() else { return };
    let mut worst = (0.0f64, String::new());
    let mut deepest = 0.0f64;
    for seed in 100..124u64 {
        let mut c = crate::precision::random_config(seed);
        c.spectrum_every = 0;
        let gpu = rankcollapse::engine::gpu::engine::simulate(&ctx, &c, 2).unwrap();
        let cpu = rankcollapse::engine::cpu::simulate::<f64>(&c);
        for (s, (hg, hc)) in gpu.iter().zip(&cpu).enumerate() {
            for (l, (mg, mc)) in hg.iter().zip(hc).enumerate() {
                for (k, name) in rankcollapse::metrics::METRICS.iter().enumerate() {
                    let (a, b) = match (mg.values[k], mc.values[k]) {
                        (Some(a), Some(b)) => (a, b),
                        (None, None) => continue,
                        other => panic!("seed {seed} seq {s} layer {l} {name}: presence differs {other:?}"),
                    };
                    if name.contains("sigma_ratio") && (a.is_nan() || b.is_nan()) {
                        continue;
                    }
                    if *name == "log10_res_fro" && b.is_finite() {
                        deepest = deepest.min(b);
                    }
                    if a == b {
                        continue;
                    }
                    let score = crate::precision::f32_score(name, l, a, b);
                    let what = format!(
                        "seed {seed} seq {s} layer {l} {name}: gpu {a} vs cpu-f64 {b} (config {c:?})"
                    );
                    if std::env::var_os("GPU_TEST_REPORT").is_some() && score > 1.0 {
                        println!("{score:.2} {what}");
                        continue;
                    }
                    assert!(score <= 1.0, "{what}");
                    if score > worst.0 {
                        worst = (score, what);
                    }
                }
            }
        }
    }
    println!("deepest log10 residual compared: {deepest:.1}");
    assert!(deepest < -30.0, "the random configurations never went below log10 residual -30");
    println!("worst error / tolerance: {:.3} at {}", worst.0, worst.1);
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
    let one = rankcollapse::engine::gpu::engine::simulate(&ctx, &c, 1).unwrap();
    let three = rankcollapse::engine::gpu::engine::simulate(&ctx, &c, 3).unwrap();
    let five = rankcollapse::engine::gpu::engine::simulate(&ctx, &c, 5).unwrap();
    let bits = |r: &Vec<Vec<rankcollapse::metrics::LayerMetrics>>| -> Vec<u64> {
        r.iter().flatten().flat_map(|m| m.values.iter().map(|v| v.map_or(1, f64::to_bits))).collect()
    };
    assert_eq!(bits(&one), bits(&three), "chunk 1 vs chunk 3 (seed 7)");
    assert_eq!(bits(&one), bits(&five), "chunk 1 vs chunk 5 (seed 7)");
}
