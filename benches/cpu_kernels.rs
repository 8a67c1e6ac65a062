//! The CPU engine's kernel families on one sequence of the small configuration
//! (n = 256, d = 64, 4 heads, post-LN + skip): attention sublayer, normalisation, MLP (gelu:4,
//! the engines bench's block) and the per-layer metrics, in f32 and f64. Throughput is tokens
//! per second; `cargo bench --bench cpu_kernels`. Where the time of a layer goes, without a
//! profiler; BENCHMARKS.md has the profile.

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rankcollapse::metrics::layer_metrics;
use rankcollapse::model::attention::attention_layer;
use rankcollapse::model::{input_tokens, layer_weights, mlp, norm, Real, Tracked};

fn family<T: Real>(c: &mut Criterion, precision: &str) {
    let cfg = common::small(1);
    cfg.validate().unwrap();
    let w = layer_weights::<T>(&cfg, 0, 0);
    let x = Tracked::from_matrix(input_tokens(&cfg, 0).mapv(T::c));
    let mut group = c.benchmark_group("cpu_kernels");
    group.sample_size(20);
    group.throughput(Throughput::Elements(cfg.tokens as u64));
    group.bench_function(BenchmarkId::new("attention", precision), |b| {
        b.iter(|| attention_layer(&cfg, &w, &x, false).0.log_res)
    });
    group.bench_function(BenchmarkId::new("norm", precision), |b| {
        b.iter(|| norm::normalise(&cfg, &x).log_res)
    });
    let mlp_w = w.mlp.as_ref().unwrap();
    group
        .bench_function(BenchmarkId::new("mlp", precision), |b| b.iter(|| mlp::mlp(&cfg, mlp_w, &x).log_res));
    group.bench_function(BenchmarkId::new("metrics", precision), |b| b.iter(|| layer_metrics(&x, None)));
    group.finish();
}

fn bench(c: &mut Criterion) {
    family::<f32>(c, "f32");
    family::<f64>(c, "f64");
}

criterion_group!(benches, bench);
criterion_main!(benches);
