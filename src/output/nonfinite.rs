//! Where a run's non-finite values are, per layer and metric, split into values withheld below
//! the resolution floor of the engine that produced them and numerical faults; the one message
//! that says so (after `run`, in `sweep run`, `status` and `merge`).

use crate::engine::RunOutput;
use crate::metrics::{Metric, Summary};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Where the non-finite values of a run are: counts per layer and metric (non-zero only), split
/// into withheld values and numerical faults. The engine marks both as NaN, so the split is by
/// metric ([`Metric::withheld_below_floor`]), corrected by the sequences' recorded faults
/// ([`Nonfinite::with_faults`]): a faulted sequence's values are faults in every metric.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Nonfinite {
    /// All non-finite values, per layer and metric.
    pub by_layer: BTreeMap<usize, BTreeMap<String, usize>>,
    /// The withheld part of `by_layer`.
    withheld_by_layer: BTreeMap<usize, BTreeMap<String, usize>>,
    pub withheld: usize,
    pub faults: usize,
}

impl Nonfinite {
    pub fn of_stats(stats: &[Vec<(Metric, Summary)>]) -> Nonfinite {
        let mut n = Nonfinite::default();
        for (layer, ms) in stats.iter().enumerate() {
            for (metric, s) in ms {
                n.add(layer, metric.name(), s.nonfinite);
            }
        }
        n
    }

    /// The non-finite values of a run: its statistics', with its sequences' faults.
    pub fn of_run(out: &RunOutput, stats: &[Vec<(Metric, Summary)>]) -> Nonfinite {
        Nonfinite::of_stats(stats).with_faults(out.faults.iter().map(|f| f.layer))
    }

    pub fn add(&mut self, layer: usize, metric: &str, count: usize) {
        if count == 0 {
            return;
        }
        *self.by_layer.entry(layer).or_default().entry(metric.to_string()).or_default() += count;
        if Metric::from_name(metric).is_some_and(Metric::withheld_below_floor) {
            *self.withheld_by_layer.entry(layer).or_default().entry(metric.to_string()).or_default() += count;
            self.withheld += count;
        } else {
            self.faults += count;
        }
    }

    /// Counts as faults the values of the sequences that met a numerical fault (one per fault,
    /// given by its layer): from that layer on, such a sequence has one NaN in every metric, which
    /// in a withheld metric is not a withheld value.
    pub fn with_faults(mut self, fault_layers: impl IntoIterator<Item = usize>) -> Nonfinite {
        for first in fault_layers {
            for (_, metrics) in self.withheld_by_layer.range_mut(first..) {
                for count in metrics.values_mut().filter(|c| **c > 0) {
                    *count -= 1;
                    self.withheld -= 1;
                    self.faults += 1;
                }
            }
        }
        self
    }

    pub fn total(&self) -> usize {
        self.withheld + self.faults
    }

    /// `{ "<layer>": { "<metric>": count } }`, only where the count is not zero.
    pub fn by_layer_json(&self) -> Value {
        json!(self.by_layer.iter().map(|(l, ms)| (l.to_string(), ms)).collect::<BTreeMap<_, _>>())
    }

    /// The counts of several runs added up (a sweep's points), without where the values are.
    pub fn totals(withheld: usize, faults: usize) -> Nonfinite {
        Nonfinite { withheld, faults, ..Nonfinite::default() }
    }

    /// The one wording of the non-finite values left out of the statistics, for the warning of
    /// `run` and the reports of `sweep run`, `status` and `merge`: "4 withheld values (below
    /// 1.2e-7 of the sigma_1 they are resolved against; not a fault): sigma_ratio 4 (layers 3-5);
    /// 2 numerical faults: res_fro 2 (layers 2-3)". `floor` is the resolution floor of
    /// sigma_ratio where one floor holds for every value (a sweep's points may differ: None). A
    /// run's values say where they are and leave out an empty part; [`Nonfinite::totals`] say
    /// both counts.
    pub fn message(&self, floor: Option<f64>) -> String {
        let why = match floor {
            Some(floor) => format!("below {floor:.1e} of the sigma_1 they are resolved against"),
            None => "sigma_ratio below its resolution floor".to_string(),
        };
        let withheld = format!("{} withheld values ({why}; not a fault)", self.withheld);
        let faults = format!("{} numerical faults", self.faults);
        if self.by_layer.is_empty() {
            return format!("{withheld}; {faults}");
        }
        let mut parts = Vec::new();
        if self.withheld > 0 {
            parts.push(format!("{withheld}: {}", self.describe(true)));
        }
        if self.faults > 0 {
            parts.push(format!("{faults}: {}", self.describe(false)));
        }
        parts.join("; ")
    }

    /// "sigma_ratio 4 (layers 3-5), log10_sigma_ratio 4 (layers 3-5)": the counts per metric and
    /// the layers where they occur, of the withheld values or of the faults, for warnings and
    /// `sweep status`.
    pub fn describe(&self, withheld: bool) -> String {
        let mut per_metric: BTreeMap<&str, (usize, Vec<usize>)> = BTreeMap::new();
        for (l, ms) in &self.by_layer {
            for (m, total) in ms {
                let held = self.withheld_by_layer.get(l).and_then(|w| w.get(m)).copied().unwrap_or(0);
                let k = if withheld { held } else { total - held };
                if k > 0 {
                    let e = per_metric.entry(m.as_str()).or_default();
                    e.0 += k;
                    e.1.push(*l);
                }
            }
        }
        let order = |m: &str| Metric::from_name(m).map_or(usize::MAX, |m| m as usize);
        let mut metrics: Vec<_> = per_metric.into_iter().collect();
        metrics.sort_by_key(|(m, _)| order(m));
        metrics
            .iter()
            .map(|(m, (k, layers))| format!("{m} {k} (layers {})", ranges(layers)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// "0-2, 5": sorted layer numbers as ranges.
fn ranges(xs: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < xs.len() {
        let mut j = i;
        while j + 1 < xs.len() && xs[j + 1] == xs[j] + 1 {
            j += 1;
        }
        out.push(if i == j { xs[i].to_string() } else { format!("{}-{}", xs[i], xs[j]) });
        i = j + 1;
    }
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two sequences at depth 3, sequence 1 faulted at layer 2: its NaN in sigma_ratio at layers
    /// 2 and 3 are faults, and sequence 0's withheld sigma_ratio at layer 3 stays withheld.
    #[test]
    fn faulted_sequences_count_as_faults_in_withheld_metrics_too() {
        let mut n = Nonfinite::default();
        n.add(2, "sigma_ratio", 1);
        n.add(2, "res_fro", 1);
        n.add(3, "sigma_ratio", 2);
        n.add(3, "res_fro", 1);
        assert_eq!((n.withheld, n.faults), (3, 2), "by metric alone");
        let n = n.with_faults([2]);
        assert_eq!((n.withheld, n.faults), (1, 4));
        assert_eq!(n.total(), 5);
        assert_eq!(n.describe(true), "sigma_ratio 1 (layers 3)");
        assert_eq!(n.describe(false), "res_fro 2 (layers 2-3), sigma_ratio 2 (layers 2-3)");
        // The per-layer map (the manifest's) still holds every value.
        assert_eq!(n.by_layer[&3]["sigma_ratio"], 2);
        // A fault never turns more values into faults than there are.
        let mut m = Nonfinite::default();
        m.add(1, "log10_sigma_ratio", 1);
        let m = m.with_faults([1, 1, 1]);
        assert_eq!((m.withheld, m.faults), (0, 1));
    }

    /// A run's values say where they are and leave out an empty part; a sweep's totals say both
    /// counts (`sweep status` lists "0 withheld values" of a point that only faulted).
    #[test]
    fn the_nonfinite_message_of_a_run_and_of_totals() {
        let mut n = Nonfinite::default();
        n.add(3, "sigma_ratio", 4);
        assert_eq!(
            n.message(Some(1.5e-5)),
            "4 withheld values (below 1.5e-5 of the sigma_1 they are resolved against; not a fault): \
             sigma_ratio 4 (layers 3)"
        );
        assert_eq!(
            Nonfinite::totals(0, 64).message(None),
            "0 withheld values (sigma_ratio below its resolution floor; not a fault); 64 numerical faults"
        );
    }
}
