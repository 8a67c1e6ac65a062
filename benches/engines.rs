//! Both engines end to end on the same small configurations: sequence-layers per second.
//! `cargo bench --bench engines` (the GPU group runs on the adapter `WGPU_ADAPTER_NAME` names,
//! else the first hardware adapter, else the first; it is skipped, loudly, without one).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rankcollapse::config::{Config, Precision};
use rankcollapse::engine::cpu::simulate;
use rankcollapse::engine::gpu::engine::{simulate_with, Kernels};
use rankcollapse::engine::gpu::GpuContext;

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
    vec![
        ("pure_attention_f64", base.clone()),
        ("pure_attention_f32", Config { precision: Precision::F32, ..base.clone() }),
        ("causal_postln_mlp_f64", Config { mask: "causal".parse().unwrap(), ..block }),
    ]
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("cpu_engine");
    group.sample_size(10);
    for (name, cfg) in configs() {
        cfg.validate().unwrap();
        group.throughput(Throughput::Elements((cfg.depth * cfg.sequences) as u64));
        group.bench_function(name, |b| {
            b.iter(|| match cfg.precision {
                Precision::F32 => simulate::<f32>(&cfg).len(),
                Precision::F64 => simulate::<f64>(&cfg).len(),
            })
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
        if cfg.precision == Precision::F64 && name.starts_with("pure_attention") {
            continue;
        }
        group.throughput(Throughput::Elements((cfg.depth * cfg.sequences) as u64));
        group.bench_function(name.trim_end_matches("_f64").trim_end_matches("_f32"), |b| {
            b.iter(|| simulate_with(&ctx, &kernels, &cfg, cfg.sequences).unwrap().len())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
