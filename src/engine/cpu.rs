//! The CPU engine: the tracked-precision model on ndarray, generic over f32/f64, threaded over
//! sequences with rayon. Layers are the outer loop so shared weights are drawn once per layer.

use super::RunOutput;
use crate::config::{Config, Precision};
use crate::metrics::{layer_metrics, LayerMetrics};
use crate::model::{apply_layer, input_tokens, layer_weights, Real, Tracked};
use rayon::prelude::*;
use std::time::Instant;

pub fn run(cfg: &Config, reason: String) -> anyhow::Result<RunOutput> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(cfg.threads).build()?;
    let threads = pool.current_num_threads();
    let start = Instant::now();
    let per_sequence = pool.install(|| match cfg.precision {
        Precision::F32 => simulate::<f32>(cfg),
        Precision::F64 => simulate::<f64>(cfg),
    });
    Ok(RunOutput {
        per_sequence,
        engine: format!("cpu-{}", cfg.precision),
        engine_reason: reason,
        compute_seconds: start.elapsed().as_secs_f64(),
        threads,
    })
}

/// Metrics of every sequence at every layer, in the float type `T`.
pub fn simulate<T: Real>(cfg: &Config) -> Vec<Vec<LayerMetrics>> {
    let mut states: Vec<(Tracked<T>, Vec<LayerMetrics>)> = (0..cfg.sequences)
        .into_par_iter()
        .map(|s| {
            let x = Tracked::from_matrix(input_tokens(cfg, s).mapv(T::c));
            let m = layer_metrics(&x, None);
            let mut history = Vec::with_capacity(cfg.depth + 1);
            history.push(m);
            (x, history)
        })
        .collect();
    for layer in 0..cfg.depth {
        let shared = (!cfg.per_sequence_weights).then(|| layer_weights::<T>(cfg, layer, 0));
        let spectrum = cfg.spectrum_at(layer + 1);
        states.par_iter_mut().enumerate().for_each(|(s, (x, history))| {
            let own;
            let w = match &shared {
                Some(w) => w,
                None => {
                    own = layer_weights::<T>(cfg, layer, s);
                    &own
                }
            };
            let (y, stats) = apply_layer(cfg, w, x, spectrum);
            history.push(layer_metrics(&y, Some(&stats)));
            *x = y;
        });
    }
    states.into_iter().map(|(_, h)| h).collect()
}
