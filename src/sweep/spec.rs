//! Sweep specifications: a TOML grid over `Config` fields, expanded in a canonical order into
//! points with stable ids and derived seeds, and split into shards balanced by estimated cost.
//!
//! ```toml
//! [sweep]
//! name = "masks-vs-depth"
//! seed = 7
//! repeats = 2            # independent seeds per grid point
//! [fixed]
//! tokens = 256
//! [grid]
//! depth = [8, 32]
//! mask = ["full", "causal", "window:16"]
//! [[exclude]]
//! mask = "full"
//! depth = 32
//! ```
//!
//! Canonical order: grid keys sorted by name, each key's values in the order written, the last
//! key varying fastest, repeats innermost. A point's id is a hash of its resolved configuration
//! (derived seed included), and the seed is a hash of (sweep seed, the configuration without its
//! seed, repeat): adding values to the grid never changes the id or seed of an existing point.

use crate::config::{check_keys, field_names, Config};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// A sweep specification as written.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub name: String,
    pub seed: u64,
    pub repeats: usize,
    pub fixed: toml::Table,
    pub grid: BTreeMap<String, Vec<toml::Value>>,
    pub exclude: Vec<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    sweep: RawHeader,
    #[serde(default)]
    fixed: toml::Table,
    #[serde(default)]
    grid: toml::Table,
    #[serde(default)]
    exclude: Vec<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    name: String,
    #[serde(default)]
    seed: u64,
    #[serde(default = "one")]
    repeats: usize,
}

fn one() -> usize {
    1
}

/// One point of a sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// Position in the canonical order (breaks ties between equally costly points when the
    /// points are dealt out to shards).
    pub index: usize,
    pub repeat: usize,
    /// 16 hex digits of SHA-256 of the resolved configuration.
    pub id: String,
    /// The swept parameters' values (grid keys), as strings.
    pub params: BTreeMap<String, String>,
    pub config: Config,
}

/// Renders a TOML value the way flags spell it (strings without quotes).
pub fn value_string(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Parses a `key=value` override; the value is read as TOML, or as a string when it is not TOML.
/// The key is checked against the configuration's keys (with a "did you mean").
pub fn parse_set(s: &str) -> anyhow::Result<(String, toml::Value)> {
    let (k, v) = s.split_once('=').ok_or_else(|| {
        anyhow::anyhow!("--set {s:?} is invalid: expected KEY=VALUE with KEY a configuration key")
    })?;
    let key = k.trim().replace('-', "_");
    check_keys([&key], Config::keys(), &format!("in --set {s:?}"))?;
    let value = toml::from_str::<toml::Table>(&format!("v = {v}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(v.to_string()));
    check_value(&format!("--set {}", k.trim()), &key, &value)?;
    Ok((key, value))
}

/// Most points one sweep may expand to (each is held in memory, and hashed twice).
pub const MAX_POINTS: usize = 1_000_000;

/// Checks that `value` has the type and spelling of configuration key `key` (on its own: the
/// constraints between fields are checked per point by `Config::validate`).
fn check_value(place: &str, key: &str, value: &toml::Value) -> anyhow::Result<()> {
    let single: toml::Table = [(key.to_string(), value.clone())].into_iter().collect();
    toml::Value::Table(single)
        .try_into::<Config>()
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("{place} = {value} is invalid: {}", e.to_string().trim()))
}

/// A sweep name names Slurm and Kubernetes jobs and files: short, no spaces, no quotes.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !ok {
        anyhow::bail!(
            "[sweep] name = {name:?} is invalid: 1 to 64 characters from A-Z a-z 0-9 . _ - (it names the Slurm and Kubernetes jobs)"
        );
    }
    Ok(())
}

impl Spec {
    pub fn parse(text: &str) -> anyhow::Result<Spec> {
        let doc: toml::Table = text.parse().map_err(|e| anyhow::anyhow!("sweep spec: {e}"))?;
        check_keys(doc.keys(), field_names::<RawSpec>(), "at the top of the sweep spec")?;
        if let Some(toml::Value::Table(header)) = doc.get("sweep") {
            check_keys(header.keys(), field_names::<RawHeader>(), "in [sweep]")?;
        }
        // Deserialised from the text so that type errors keep toml's line and column.
        let raw: RawSpec = toml::from_str(text).map_err(|e| anyhow::anyhow!("sweep spec: {e}"))?;
        let mut grid = BTreeMap::new();
        for (k, v) in raw.grid {
            match v {
                toml::Value::Array(vals) if !vals.is_empty() => {
                    grid.insert(k, vals);
                }
                other => {
                    anyhow::bail!("sweep spec: [grid] {k} = {other} is invalid: must be a non-empty array")
                }
            }
        }
        let spec = Spec {
            name: raw.sweep.name,
            seed: raw.sweep.seed,
            repeats: raw.sweep.repeats,
            fixed: raw.fixed,
            grid,
            exclude: raw.exclude,
        };
        spec.check().map_err(|e| anyhow::anyhow!("sweep spec: {e}"))?;
        // An exclusion of a swept key with a value the grid does not have would silently match
        // nothing (a fixed key is left alone: `--set` may have fixed it to another value).
        for ex in &spec.exclude {
            for (key, value) in ex {
                if let Some(values) = spec.grid.get(key) {
                    if !values.iter().any(|v| same(v, value)) {
                        let listed: Vec<String> = values.iter().map(|v| v.to_string()).collect();
                        anyhow::bail!(
                            "sweep spec: [[exclude]] {key} = {value} is invalid: it matches no point; [grid] {key} has {}",
                            listed.join(", ")
                        );
                    }
                }
            }
        }
        Ok(spec)
    }

    /// The checks every spec passes, as written and after `--set`: known keys with values of
    /// the right type, seed neither fixed nor swept, exclusions over swept or fixed keys, a
    /// sensible name and number of points.
    fn check(&self) -> anyhow::Result<()> {
        check_name(&self.name)?;
        if self.repeats == 0 {
            anyhow::bail!("[sweep] repeats = 0 is invalid: must be at least 1");
        }
        self.point_count()?;
        check_keys(self.fixed.keys(), Config::keys(), "in [fixed]")?;
        check_keys(self.grid.keys(), Config::keys(), "in [grid]")?;
        for (key, value) in &self.fixed {
            check_value(&format!("[fixed] {key}"), key, value)?;
        }
        for (key, values) in &self.grid {
            for value in values {
                check_value(&format!("[grid] {key} value"), key, value)?;
            }
        }
        for key in self.fixed.keys().chain(self.grid.keys()) {
            if key == "seed" {
                anyhow::bail!("seed cannot be fixed or swept: use [sweep] seed and repeats");
            }
            if self.fixed.contains_key(key) && self.grid.contains_key(key) {
                anyhow::bail!("{key} is both fixed and swept");
            }
        }
        for ex in &self.exclude {
            check_keys(ex.keys(), Config::keys(), "in [[exclude]]")?;
            for (key, value) in ex {
                if !self.grid.contains_key(key) && !self.fixed.contains_key(key) {
                    anyhow::bail!("[[exclude]] names {key}, which is neither swept nor fixed");
                }
                check_value(&format!("[[exclude]] {key}"), key, value)?;
            }
        }
        Ok(())
    }

    /// Grid combinations times repeats (exclusions not subtracted), at most [`MAX_POINTS`].
    pub fn point_count(&self) -> anyhow::Result<usize> {
        let count = self.grid.values().fold(self.repeats as u128, |p, v| p.saturating_mul(v.len() as u128));
        if count > MAX_POINTS as u128 {
            let sizes: Vec<String> = self.grid.iter().map(|(k, v)| format!("{k} ({})", v.len())).collect();
            anyhow::bail!(
                "the sweep has {count} points ({} x repeats ({})): at most {MAX_POINTS} are allowed",
                sizes.join(" x "),
                self.repeats
            );
        }
        Ok(count as usize)
    }

    /// Applies `--set key=value` overrides: a swept key becomes fixed.
    pub fn with_overrides(mut self, sets: &[(String, toml::Value)]) -> anyhow::Result<Spec> {
        for (k, v) in sets {
            if k == "seed" {
                anyhow::bail!("--set seed: the seed of a sweep is [sweep] seed");
            }
            self.grid.remove(k);
            self.fixed.insert(k.clone(), v.clone());
        }
        self.check().map_err(|e| anyhow::anyhow!("with --set: {e}"))?;
        Ok(self)
    }

    /// The spec as TOML (the canonical copy stored with the results).
    pub fn to_toml(&self) -> String {
        let mut doc = toml::Table::new();
        let mut header = toml::Table::new();
        header.insert("name".into(), self.name.clone().into());
        header.insert("seed".into(), toml::Value::Integer(self.seed as i64));
        header.insert("repeats".into(), toml::Value::Integer(self.repeats as i64));
        doc.insert("sweep".into(), header.into());
        doc.insert("fixed".into(), self.fixed.clone().into());
        let grid: toml::Table =
            self.grid.iter().map(|(k, v)| (k.clone(), toml::Value::Array(v.clone()))).collect();
        doc.insert("grid".into(), grid.into());
        doc.insert(
            "exclude".into(),
            toml::Value::Array(self.exclude.iter().cloned().map(toml::Value::Table).collect()),
        );
        toml::to_string(&doc).expect("a TOML table serialises")
    }

    /// Every point in canonical order; fails on the first configuration that does not validate.
    pub fn expand(&self) -> anyhow::Result<Vec<Point>> {
        let keys: Vec<&String> = self.grid.keys().collect();
        let sizes: Vec<usize> = keys.iter().map(|k| self.grid[*k].len()).collect();
        let combos: usize = self.point_count()? / self.repeats.max(1);
        let mut points = Vec::new();
        for c in 0..combos {
            // Mixed-radix digits, last key fastest.
            let mut rest = c;
            let mut choice = vec![0; keys.len()];
            for (slot, size) in choice.iter_mut().zip(&sizes).rev() {
                *slot = rest % size;
                rest /= size;
            }
            let mut table = self.fixed.clone();
            let mut params = BTreeMap::new();
            for (k, &i) in keys.iter().zip(&choice) {
                let v = self.grid[*k][i].clone();
                params.insert((*k).clone(), value_string(&v));
                table.insert((*k).clone(), v);
            }
            if self.exclude.iter().any(|ex| ex.iter().all(|(k, v)| table.get(k).is_some_and(|t| same(t, v))))
            {
                continue;
            }
            let base: Config = toml::Value::Table(table.clone())
                .try_into()
                .map_err(|e| anyhow::anyhow!("sweep point {}: {e}", describe(&params)))?;
            base.validate().map_err(|e| anyhow::anyhow!("sweep point {}: {e}", describe(&params)))?;
            let base = crate::output::resolved(&base);
            for repeat in 0..self.repeats {
                let mut config = base.clone();
                config.seed = derive_seed(self.seed, &base, repeat);
                let id = config_id(&config);
                points.push(Point { index: points.len(), repeat, id, params: params.clone(), config });
            }
        }
        Ok(points)
    }
}

/// Values compare as written, except that integers and floats with the same value are equal.
fn same(a: &toml::Value, b: &toml::Value) -> bool {
    match (a, b) {
        (toml::Value::Integer(x), toml::Value::Float(y))
        | (toml::Value::Float(y), toml::Value::Integer(x)) => *x as f64 == *y,
        _ => a == b,
    }
}

fn describe(params: &BTreeMap<String, String>) -> String {
    let parts: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("({})", parts.join(", "))
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The id of a resolved configuration: 16 hex digits of SHA-256 of its canonical JSON (with
/// the execution settings, which never change a result, left out).
pub fn config_id(config: &Config) -> String {
    let c = config.without_execution_settings();
    sha256_hex(serde_json::to_string(&c).expect("Config serialises").as_bytes())[..16].to_string()
}

/// The seed of repeat `repeat` of a point: SHA-256 of (sweep seed, configuration without seed,
/// repeat), first 8 bytes.
pub fn derive_seed(sweep_seed: u64, base: &Config, repeat: usize) -> u64 {
    let c = Config { seed: 0, ..base.without_execution_settings() };
    let text = format!("rankcollapse-seed/{sweep_seed}/{repeat}/{}", serde_json::to_string(&c).unwrap());
    let digest = Sha256::digest(text.as_bytes());
    u64::from_le_bytes(digest[..8].try_into().unwrap())
}

/// A slice of a sweep: shard `index` of `count`. Which points it takes is decided by
/// [`assign_shards`] from the points alone, so every task of an array computes the same split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

/// The shard of each of `points` (by position), `count` shards: longest processing time first
/// on [`super::estimated_flops`]. The points are taken by cost, largest first (equal costs in
/// canonical order), each to the shard with the least estimated work so far (equal loads: the
/// lowest shard index). Dealing by cost instead of by index mod N matters on grids whose cost
/// grows along one axis: there every Nth point lands on the same few depths and the array waits
/// for its slowest task.
///
/// The result depends only on the points' configurations and their order, which come from the
/// spec: not on which points are done, the machine or the thread count. The loads are sums of
/// the same f64 values in the same order everywhere, so they agree to the bit.
pub fn assign_shards(points: &[Point], count: usize) -> Vec<usize> {
    let costs: Vec<f64> = points.iter().map(|p| super::estimated_flops(&p.config)).collect();
    deal_by_cost(&costs, count)
}

/// Longest processing time first over `costs` (finite, >= 0): the shard of each, as described
/// at [`assign_shards`].
fn deal_by_cost(costs: &[f64], count: usize) -> Vec<usize> {
    use std::cmp::Reverse;
    assert!(count >= 1, "a sweep has at least one shard");
    let mut order: Vec<usize> = (0..costs.len()).collect();
    order.sort_by(|&a, &b| costs[b].total_cmp(&costs[a]).then(a.cmp(&b)));
    // A min-heap of (load, shard); the loads are finite and >= 0, whose IEEE bit patterns order
    // as their values do, so they can be compared as integers.
    let mut loads: std::collections::BinaryHeap<Reverse<(u64, usize)>> =
        (0..count).map(|shard| Reverse((0f64.to_bits(), shard))).collect();
    let mut shard_of = vec![0; costs.len()];
    for i in order {
        let Reverse((load, shard)) = loads.pop().expect("count >= 1 shards");
        shard_of[i] = shard;
        loads.push(Reverse(((f64::from_bits(load) + costs[i]).to_bits(), shard)));
    }
    shard_of
}

impl std::str::FromStr for Shard {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Shard> {
        let bad = || anyhow::anyhow!("--shard {s:?} is invalid: expected I/N, whole numbers with 0 <= I < N");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) =
            (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        Shard::new(index, count).ok_or_else(bad)
    }
}

impl Shard {
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Shard `index` of `count`, if `index < count`.
    pub fn new(index: usize, count: usize) -> Option<Shard> {
        (index < count).then_some(Shard { index, count })
    }

    /// This shard's points, in canonical order.
    pub fn select<'a>(&self, points: &'a [Point]) -> Vec<&'a Point> {
        let shard_of = assign_shards(points, self.count);
        points.iter().zip(shard_of).filter(|(_, s)| *s == self.index).map(|(p, _)| p).collect()
    }

    /// The shard given by the environment of a Slurm job array (SLURM_ARRAY_TASK_ID,
    /// SLURM_ARRAY_TASK_COUNT, SLURM_ARRAY_TASK_MIN) or a Kubernetes Indexed Job
    /// (JOB_COMPLETION_INDEX with RANKCOLLAPSE_SHARD_COUNT), if any.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Shard>> {
        let num = |name: &str| -> anyhow::Result<Option<usize>> {
            env(name)
                .map(|v| {
                    v.trim()
                        .parse::<usize>()
                        .map_err(|_| anyhow::anyhow!("{name}={v:?} is invalid: expected a whole number >= 0"))
                })
                .transpose()
        };
        if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
            let count = num("SLURM_ARRAY_TASK_COUNT")?.ok_or_else(|| {
                anyhow::anyhow!("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not")
            })?;
            let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let shard = id.checked_sub(min).and_then(|index| Shard::new(index, count));
            return shard.map(Some).ok_or_else(|| {
                anyhow::anyhow!(
                    "SLURM_ARRAY_TASK_ID={id} with SLURM_ARRAY_TASK_MIN={min} and SLURM_ARRAY_TASK_COUNT={count} \
                     is not a shard: needs MIN <= ID < MIN + COUNT"
                )
            });
        }
        if let Some(id) = num("JOB_COMPLETION_INDEX")? {
            let count = num("RANKCOLLAPSE_SHARD_COUNT")?.ok_or_else(|| {
                anyhow::anyhow!("JOB_COMPLETION_INDEX is set but RANKCOLLAPSE_SHARD_COUNT is not (the emitted k8s Job sets it)")
            })?;
            return Shard::new(id, count).map(Some).ok_or_else(|| {
                anyhow::anyhow!(
                    "JOB_COMPLETION_INDEX={id} with RANKCOLLAPSE_SHARD_COUNT={count} is not a shard: needs INDEX < COUNT"
                )
            });
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = include_str!("../../tests/data/sweep_small.toml");

    #[test]
    fn expansion_is_canonical_with_exclusions_and_repeats() {
        let points = Spec::parse(SPEC).unwrap().expand().unwrap();
        assert_eq!(points.len(), 10);
        let order: Vec<(String, String, usize)> =
            points.iter().map(|p| (p.params["depth"].clone(), p.params["mask"].clone(), p.repeat)).collect();
        assert_eq!(order[0], ("2".into(), "full".into(), 0));
        assert_eq!(order[1], ("2".into(), "full".into(), 1));
        assert_eq!(order[6], ("3".into(), "causal".into(), 0));
        assert!(!order.iter().any(|(d, m, _)| d == "3" && m == "full"));
        let ids: std::collections::BTreeSet<&String> = points.iter().map(|p| &p.id).collect();
        assert_eq!(ids.len(), 10, "ids are unique");
        assert_ne!(points[0].config.seed, points[1].config.seed, "repeats get different seeds");
        assert_eq!(points, Spec::parse(SPEC).unwrap().expand().unwrap(), "deterministic");
    }

    #[test]
    fn adding_grid_values_keeps_existing_ids_and_seeds() {
        let before = Spec::parse(SPEC).unwrap().expand().unwrap();
        let after = Spec::parse(&SPEC.replace("depth = [2, 3]", "depth = [2, 3, 5]").replace(
            "mask = [\"full\", \"causal\", \"window:2\"]",
            "mask = [\"full\", \"causal-window:2\", \"causal\", \"window:2\"]",
        ))
        .unwrap()
        .expand()
        .unwrap();
        for p in &before {
            let q = after.iter().find(|q| q.id == p.id).unwrap_or_else(|| panic!("{} lost", p.id));
            assert_eq!((&q.config, &q.params), (&p.config, &p.params));
        }
    }

    #[test]
    fn shards_partition_the_sweep() {
        // 10 points, and 5 with one repeat: 1 to 12 shards include more shards than points.
        for text in [SPEC.to_string(), SPEC.replace("repeats = 2", "repeats = 1")] {
            let points = Spec::parse(&text).unwrap().expand().unwrap();
            for n in 1..=12 {
                let mut seen = vec![0; points.len()];
                for i in 0..n {
                    for p in (Shard { index: i, count: n }).select(&points) {
                        seen[p.index] += 1;
                    }
                }
                assert!(seen.iter().all(|&c| c == 1), "{} points, n = {n}: {seen:?}", points.len());
            }
        }
    }

    #[test]
    fn shards_are_dealt_by_cost_largest_first() {
        // Depth 3 costs 3/2 of depth 2 (the mask does not enter the estimate): with costs 3 for
        // points 6..=9 and 2 for points 0..=5, dealt by hand to the least-loaded of 3 shards
        // (ties to the lowest shard): 6, 7, 8 -> 0, 1, 2; 9 -> 0; 0 -> 1; 1 -> 2; 2 -> 1; 3 -> 2;
        // 4 -> 0; 5 -> 1 (loads 8, 9, 7).
        let points = Spec::parse(SPEC).unwrap().expand().unwrap();
        let d2 = crate::sweep::estimated_flops(&points[0].config);
        let d3 = crate::sweep::estimated_flops(&points[6].config);
        assert_eq!((points[0].params["depth"].as_str(), points[6].params["depth"].as_str()), ("2", "3"));
        assert_eq!(d3 / d2, 1.5);
        let indices = |i| -> Vec<usize> {
            Shard { index: i, count: 3 }.select(&points).iter().map(|p| p.index).collect()
        };
        assert_eq!(indices(0), [4, 6, 9]);
        assert_eq!(indices(1), [0, 2, 5, 7]);
        assert_eq!(indices(2), [1, 3, 8]);
        // Equal costs keep canonical order, one per shard in turn.
        assert_eq!(deal_by_cost(&[1.0; 5], 3), [0, 1, 2, 0, 1]);
    }

    proptest::proptest! {
        // A fixed seed (PROPTEST_RNG_SEED picks another), as every property test here: a failure
        // reproduces.
        #![proptest_config(proptest::test_runner::Config {
            rng_seed: match proptest::test_runner::Config::default().rng_seed {
                proptest::test_runner::RngSeed::Random => proptest::test_runner::RngSeed::Fixed(20261206),
                fixed => fixed,
            },
            ..proptest::test_runner::Config::default()
        })]
        /// Every cost goes to one shard in range, and no shard exceeds the mean by more than the
        /// largest single cost (the bound of dealing each to the least-loaded shard).
        #[test]
        fn dealing_by_cost_partitions_and_stays_near_the_mean(
            costs in proptest::collection::vec(0.0f64..1e12, 0..60),
            count in 1usize..=9,
        ) {
            let shard_of = deal_by_cost(&costs, count);
            proptest::prop_assert_eq!(shard_of.len(), costs.len());
            let mut loads = vec![0.0; count];
            for (c, &s) in costs.iter().zip(&shard_of) {
                proptest::prop_assert!(s < count);
                loads[s] += c;
            }
            let mean = costs.iter().sum::<f64>() / count as f64;
            let largest_cost = costs.iter().copied().fold(0.0, f64::max);
            let largest_load = loads.iter().copied().fold(0.0, f64::max);
            proptest::prop_assert!(largest_load <= (mean + largest_cost) * (1.0 + 1e-12), "{loads:?}");
            proptest::prop_assert_eq!(&shard_of, &deal_by_cost(&costs, count), "deterministic");
        }
    }

    #[test]
    fn shard_from_slurm_and_kubernetes_environments() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let s = Shard::from_env(env(&[
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
            ("SLURM_ARRAY_TASK_MIN", "4"),
        ]));
        assert_eq!(s.unwrap(), Some(Shard { index: 1, count: 3 }));
        let s = Shard::from_env(env(&[("JOB_COMPLETION_INDEX", "2"), ("RANKCOLLAPSE_SHARD_COUNT", "4")]));
        assert_eq!(s.unwrap(), Some(Shard { index: 2, count: 4 }));
        assert!(Shard::from_env(env(&[("SLURM_ARRAY_TASK_ID", "1")])).is_err());
        assert_eq!(Shard::from_env(env(&[])).unwrap(), None);
        assert!("3/3".parse::<Shard>().is_err() && "1/0".parse::<Shard>().is_err());
    }

    #[test]
    fn bad_specs_are_rejected_with_the_offending_name() {
        let e = Spec::parse(&SPEC.replace("width = 8", "widht = 8")).unwrap_err();
        assert!(e.to_string().contains("`widht` in [fixed]: did you mean `width`?"), "{e}");
        let e = Spec::parse(&SPEC.replace("depth = [2, 3]", "dept = [2, 3]")).unwrap_err();
        assert!(e.to_string().contains("depth"), "{e}");
        let e =
            Spec::parse(&SPEC.replace("[[exclude]]\nmask = \"full\"", "[[exclude]]\nheads = 2")).unwrap_err();
        assert!(e.to_string().contains("heads"), "{e}");
        let e = Spec::parse(&SPEC.replace("window:2", "window:99")).unwrap().expand().unwrap_err();
        assert!(e.to_string().contains("window:99"), "{e}");
        let e = Spec::parse(&SPEC.replace("repeats = 2", "repeats = 2\nfoo = 1")).unwrap_err();
        assert!(e.to_string().contains("foo"), "{e}");
    }
}
