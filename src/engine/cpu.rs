//! The CPU engine: the tracked-precision model on ndarray, generic over f32/f64, threaded over
//! sequences with rayon. Layers are the outer loop so shared weights are drawn once per layer.

use crate::config::{Config, Precision};
use crate::engine::result::{RunOutput, SequenceFault};
use crate::metrics::{layer_metrics, sigma_ratio_floor, LayerMetrics};
use crate::model::{apply_layer_checked, input_tokens, layer_weights, Real, Tracked};
use rayon::prelude::*;
use std::time::Instant;

pub fn run(cfg: &Config, reason: String) -> anyhow::Result<RunOutput> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(cfg.threads).build()?;
    let threads = pool.current_num_threads();
    let start = Instant::now();
    let ((per_sequence, faults), sigma_ratio_floor) = pool.install(|| match cfg.precision {
        Precision::F32 => (simulate_checked::<f32>(cfg), sigma_ratio_floor::<f32>()),
        Precision::F64 => (simulate_checked::<f64>(cfg), sigma_ratio_floor::<f64>()),
    });
    Ok(RunOutput {
        per_sequence,
        faults,
        engine: format!("cpu-{}", cfg.precision),
        engine_reason: reason,
        compute_seconds: start.elapsed().as_secs_f64(),
        sigma_ratio_floor,
        threads,
    })
}

/// Metrics of every sequence at every layer, in the float type `T` (NaN from a sequence's
/// numerical fault on, see [`simulate_checked`]).
pub fn simulate<T: Real>(cfg: &Config) -> Vec<Vec<LayerMetrics>> {
    simulate_checked::<T>(cfg).0
}

/// One sequence: its state, its metrics so far, and its fault once a layer part made the state
/// invalid (the state is not advanced after that).
struct Sequence<T: Real> {
    x: Tracked<T>,
    history: Vec<LayerMetrics>,
    fault: Option<SequenceFault>,
}

/// [`simulate`], with the numerical faults: the first layer part that left a sequence's state
/// invalid (see `model::apply_layer_checked`). That sequence's metrics from that layer on are
/// NaN, so they are counted as non-finite and never averaged into a mean.
pub fn simulate_checked<T: Real>(cfg: &Config) -> (Vec<Vec<LayerMetrics>>, Vec<SequenceFault>) {
    let mut states: Vec<Sequence<T>> = (0..cfg.sequences)
        .into_par_iter()
        .map(|s| {
            let x = Tracked::from_matrix(input_tokens(cfg, s).mapv(T::c));
            let m = layer_metrics(&x, None);
            let mut history = Vec::with_capacity(cfg.depth + 1);
            history.push(m);
            Sequence { x, history, fault: None }
        })
        .collect();
    for layer in 0..cfg.depth {
        let shared = (!cfg.per_sequence_weights).then(|| layer_weights::<T>(cfg, layer, 0));
        let spectrum = cfg.spectrum_at(layer + 1);
        states.par_iter_mut().enumerate().for_each(|(s, seq)| {
            if seq.fault.is_some() {
                seq.history.push(LayerMetrics::faulted(true, spectrum));
                return;
            }
            let own;
            let w = match &shared {
                Some(w) => w,
                None => {
                    own = layer_weights::<T>(cfg, layer, s);
                    &own
                }
            };
            let (y, stats, fault) = apply_layer_checked(cfg, w, &seq.x, spectrum);
            match fault {
                None => {
                    seq.history.push(layer_metrics(&y, Some(&stats)));
                    seq.x = y;
                }
                Some(f) => {
                    seq.history.push(LayerMetrics::faulted(true, spectrum));
                    seq.fault = Some(SequenceFault {
                        sequence: s,
                        layer: layer + 1,
                        part: f.part.to_string(),
                        what: f.what,
                    });
                }
            }
        });
    }
    let faults = states.iter().filter_map(|q| q.fault.clone()).collect();
    (states.into_iter().map(|q| q.history).collect(), faults)
}
