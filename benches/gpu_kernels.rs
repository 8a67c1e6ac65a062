//! The GPU engine's kernel families, one layer part at a time, on a batch of 16 sequences of the
//! issue's small configuration (n = 256, d = 64, 4 heads, post-LN + skip, gelu:4): attention
//! (projections, streamed softmax, weighted sum, compose), normalisation, MLP, skip and the
//! per-layer metrics. Throughput is tokens per second (16 x 256 per iteration).
//! `cargo bench --bench gpu_kernels` on the adapter `WGPU_ADAPTER_NAME` names, else the first
//! hardware adapter, else the first; skipped, loudly, without one.
//!
//! Each iteration goes through `twin::apply_part` / `metrics_of` (the entry points of the twin
//! tests): it uploads the states, runs the family's passes and reads the result back, so it
//! includes one upload and one read-back of 16 x 257 x 64 floats. Pure kernel times, without the
//! transfers, are what `rankcollapse run --profile` prints (timestamp queries per pass).

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rankcollapse::engine::gpu::chunk::Kernels;
use rankcollapse::engine::gpu::twin::{apply_part, metrics_of, Part};
use rankcollapse::engine::gpu::GpuContext;
use rankcollapse::model::{input_tokens, Tracked};

const SEQUENCES: usize = 16;

fn bench(c: &mut Criterion) {
    let ctx = match GpuContext::new(None) {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("SKIPPED gpu_kernels: no GPU adapter ({e:#})");
            return;
        }
    };
    let kernels = Kernels::new(&ctx).unwrap();
    let cfg = common::small(SEQUENCES);
    cfg.validate().unwrap();
    let states: Vec<Tracked<f64>> =
        (0..SEQUENCES).map(|s| Tracked::from_matrix(input_tokens(&cfg, s))).collect();
    let mut group = c.benchmark_group(format!("gpu_kernels ({})", ctx.info.name));
    group.sample_size(10);
    group.throughput(Throughput::Elements((SEQUENCES * cfg.tokens) as u64));
    let parts: [(&str, Part); 4] = [
        ("attention", Part::Attention),
        ("norm", Part::Norm),
        ("mlp", Part::Mlp),
        ("skip", Part::Skip(&states)),
    ];
    for (name, part) in parts {
        group.bench_function(BenchmarkId::new(name, "f32"), |b| {
            b.iter(|| apply_part(&ctx, &kernels, &cfg, 0, part, &states).unwrap().len())
        });
    }
    group.bench_function(BenchmarkId::new("metrics", "f32"), |b| {
        b.iter(|| metrics_of(&ctx, &kernels, &cfg, &states).unwrap().len())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
