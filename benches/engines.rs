//! Both engines end to end on the same small configurations: sequence-layers per second
//! (criterion's throughput), and the achieved GFLOP/s printed after each benchmark.
//! `cargo bench --bench engines` (the GPU group runs on the adapter `WGPU_ADAPTER_NAME` names,
//! else the first hardware adapter, else the first; it is skipped, loudly, without one).
//!
//! FLOP count: `rankcollapse::sweep::estimated_flops` (the planning estimate of `sweep plan`):
//! per sequence and layer, the score and weighted-sum products 2 n^2 (r + d_v) per head, the
//! projections 2 n d (2 r + d_v) per head, the output projection 2 n H d_v d and the MLP 4 n d h.
//! It counts the model's products only: the per-layer metrics (mean |cos| alone is n^2 d) and the
//! exact-arithmetic work of the tracked representation come on top, so the GFLOP/s printed is
//! the rate of useful model work, comparable with a plain simulation of the same model.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rankcollapse::config::{Config, Precision};
use rankcollapse::engine::cpu::simulate;
use rankcollapse::engine::gpu::chunk::Kernels;
use rankcollapse::engine::gpu::run::simulate_with;
use rankcollapse::engine::gpu::GpuContext;
use rankcollapse::sweep::estimated_flops;
use std::cell::Cell;
use std::time::{Duration, Instant};

fn configs() -> Vec<(&'static str, Config)> {
    let base = Config {
        depth: 8,
        tokens: 64,
        width: 64,
        heads: 4,
        sequences: 8,
        spectrum_every: 0,
        ..Config::default()
    };
    let block = Config {
        norm: "post-ln".parse().unwrap(),
        skip: "standard".parse().unwrap(),
        mlp: "gelu:4".parse().unwrap(),
        out_proj: "gaussian".parse().unwrap(),
        ..base.clone()
    };
    // The small configuration (post-LN + skip, n = 256, d = 64, 4 heads) at 8 sequences
    // and depth 4, so that a sample stays around a second on two cores.
    let small = Config {
        depth: 4,
        tokens: 256,
        width: 64,
        heads: 4,
        sequences: 8,
        spectrum_every: 0,
        norm: "post-ln".parse().unwrap(),
        skip: "standard".parse().unwrap(),
        ..Config::default()
    };
    vec![
        ("pure_attention_f64", base.clone()),
        ("pure_attention_f32", Config { precision: Precision::F32, ..base.clone() }),
        ("causal_postln_mlp_f64", Config { mask: "causal".parse().unwrap(), ..block }),
        ("small_postln_skip_f32", Config { precision: Precision::F32, ..small.clone() }),
        ("small_postln_skip_f64", small),
    ]
}

/// Runs `work` under criterion (sequence-layers per second) and prints the GFLOP/s of the
/// iterations criterion timed.
fn bench_with_flops(
    group: &mut criterion::BenchmarkGroup<criterion::measurement::WallTime>,
    name: &str,
    cfg: &Config,
    mut work: impl FnMut() -> usize,
) {
    let (spent, iters) = (Cell::new(Duration::ZERO), Cell::new(0u64));
    group.throughput(Throughput::Elements((cfg.depth * cfg.sequences) as u64));
    group.bench_function(name, |b| {
        b.iter_custom(|n| {
            let start = Instant::now();
            for _ in 0..n {
                std::hint::black_box(work());
            }
            let t = start.elapsed();
            spent.set(spent.get() + t);
            iters.set(iters.get() + n);
            t
        })
    });
    if iters.get() == 0 {
        return; // filtered out on the command line: nothing was timed
    }
    let per_iter = spent.get().as_secs_f64() / iters.get() as f64;
    let flops = estimated_flops(cfg);
    println!(
        "{name}: {:.3e} FLOP per run (sweep::estimated_flops), {:.3} s per run, {:.2} GFLOP/s",
        flops,
        per_iter,
        flops / per_iter / 1e9
    );
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("cpu_engine");
    group.sample_size(10);
    for (name, cfg) in configs() {
        cfg.validate().unwrap();
        bench_with_flops(&mut group, name, &cfg, || match cfg.precision {
            Precision::F32 => simulate::<f32>(&cfg).len(),
            Precision::F64 => simulate::<f64>(&cfg).len(),
        });
    }
    group.finish();

    let ctx = match GpuContext::new(None) {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("SKIPPED the gpu_engine group: no GPU adapter ({e:#})");
            return;
        }
    };
    let kernels = Kernels::new(&ctx).unwrap();
    let mut group = c.benchmark_group(format!("gpu_engine ({})", ctx.info.name));
    group.sample_size(10);
    for (name, cfg) in configs() {
        // The GPU engine is f32 whatever the CPU precision says: one f32 entry is enough.
        if cfg.precision == Precision::F64
            && (name.starts_with("pure_attention") || name.starts_with("small"))
        {
            continue;
        }
        let short = name.trim_end_matches("_f64").trim_end_matches("_f32");
        bench_with_flops(&mut group, short, &cfg, || {
            simulate_with(&ctx, &kernels, &cfg, cfg.sequences).unwrap().len()
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
