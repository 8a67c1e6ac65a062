//! CPU engine end to end on small configurations: sequence-layers per second.
//! `cargo bench --bench cpu_engine`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rankcollapse::config::{Config, Precision};
use rankcollapse::engine::cpu::simulate;

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
}

criterion_group!(benches, bench);
criterion_main!(benches);
