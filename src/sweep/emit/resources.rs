//! What one task of an emitted job asks the scheduler for: GPUs, CPUs, memory and a time limit
//! (both Slurm and Kubernetes), the flag values they are parsed from, the defaults a sweep's
//! points imply, and the Kubernetes placement (node selector, tolerations). Sizes are read in one
//! syntax (binary units) and written in each format's own: `--mem=4G` for Slurm, `4Gi` for
//! Kubernetes.

use crate::config::{Config, Engine, Precision};
use crate::engine::gpu::fit;
use crate::sweep::spec::Point;
use std::fmt;
use std::str::FromStr;

/// The most GPUs one task may ask for (a node with more is rare; a typo like 80 is caught).
pub const MAX_GPUS: usize = 16;
/// CPUs asked for when a point's `threads` is 0 (all cores): the run then uses every CPU the
/// task is given (the affinity or cgroup quota the scheduler sets), and 4 fits most nodes.
pub const CPUS_FOR_ALL_CORES: usize = 4;
/// The memory estimate's fixed part: the binary, its runtime and a GPU driver's host side.
const BASE_MIB: u64 = 512;
/// The most memory one task may ask for, MiB (64 TiB).
pub const MAX_MIB: u64 = 64 << 20;
/// The longest time limit, seconds (365 days).
pub const MAX_SECONDS: u64 = 365 * 86_400;

/// A memory size in MiB, read as a whole number with a binary unit (M/Mi, G/Gi, T/Ti).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Memory(pub u64);

impl FromStr for Memory {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let err = || {
            "expected a whole number with a binary unit: M or Mi (MiB), G or Gi (GiB), T or Ti (TiB), \
             e.g. 4G; from 1M to 64T"
                .to_string()
        };
        let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let shift = match &s[digits.len()..] {
            "M" | "Mi" => 0,
            "G" | "Gi" => 10,
            "T" | "Ti" => 20,
            _ => return Err(err()),
        };
        let n: u64 = digits.parse().map_err(|_| err())?;
        let mib = n.checked_mul(1 << shift).filter(|m| (1..=MAX_MIB).contains(m)).ok_or_else(err)?;
        Ok(Memory(mib))
    }
}

impl Memory {
    /// Slurm's spelling: `4G` when whole GiB, else `1536M` (Slurm's units are binary).
    pub fn slurm(self) -> String {
        if self.0 % 1024 == 0 {
            format!("{}G", self.0 / 1024)
        } else {
            format!("{}M", self.0)
        }
    }
    /// A Kubernetes quantity: `4Gi` or `1536Mi`.
    pub fn kubernetes(self) -> String {
        format!("{}i", self.slurm())
    }
}

/// A time limit in seconds, read in Slurm's forms: MINUTES, MINUTES:SECONDS, HOURS:MINUTES:SECONDS,
/// DAYS-HOURS, DAYS-HOURS:MINUTES, DAYS-HOURS:MINUTES:SECONDS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeLimit(pub u64);

impl FromStr for TimeLimit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let err = || {
            "expected a time limit as Slurm writes it: MINUTES, MINUTES:SECONDS, HOURS:MINUTES:SECONDS, \
             DAYS-HOURS, DAYS-HOURS:MINUTES or DAYS-HOURS:MINUTES:SECONDS (e.g. 90, 1:30:00, 2-00:00:00); \
             from 1 second to 365 days"
                .to_string()
        };
        let (days, rest) = match s.split_once('-') {
            Some((d, r)) => (Some(d.parse::<u64>().map_err(|_| err())?), r),
            None => (None, s),
        };
        let parts: Vec<u64> = rest
            .split(':')
            .map(|p| (!p.is_empty() && p.len() <= 12).then(|| p.parse().ok()).flatten())
            .collect::<Option<_>>()
            .ok_or_else(err)?;
        // Every field after the leading one is bounded, as on a clock: (h, m, s, h below, m below).
        let (h, m, sec, h_below, m_below) = match (days, &parts[..]) {
            (None, &[m]) => (0, m, 0, u64::MAX, u64::MAX),
            (None, &[m, s]) => (0, m, s, u64::MAX, u64::MAX),
            (None, &[h, m, s]) => (h, m, s, u64::MAX, 60),
            (Some(_), &[h]) => (h, 0, 0, 24, 60),
            (Some(_), &[h, m]) => (h, m, 0, 24, 60),
            (Some(_), &[h, m, s]) => (h, m, s, 24, 60),
            _ => return Err(err()),
        };
        if h >= h_below || m >= m_below || sec >= 60 {
            return Err(err());
        }
        let total = days
            .unwrap_or(0)
            .checked_mul(86_400)
            .and_then(|d| d.checked_add(h.checked_mul(3600)?))
            .and_then(|t| t.checked_add(m.checked_mul(60)?))
            .and_then(|t| t.checked_add(sec))
            .filter(|t| (1..=MAX_SECONDS).contains(t))
            .ok_or_else(err)?;
        Ok(TimeLimit(total))
    }
}

impl TimeLimit {
    /// Slurm's `D-HH:MM:SS` (`HH:MM:SS` under a day).
    pub fn slurm(self) -> String {
        let (d, rest) = (self.0 / 86_400, self.0 % 86_400);
        let hms = format!("{:02}:{:02}:{:02}", rest / 3600, rest % 3600 / 60, rest % 60);
        if d > 0 {
            format!("{d}-{hms}")
        } else {
            hms
        }
    }
}

/// How the sbatch script asks for GPUs; sites differ in which they configure.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GpuStyle {
    /// `--gres=gpu:N` (every Slurm with a gpu GRES).
    #[default]
    Gres,
    /// `--gpus-per-task=N` (Slurm 19.05+ with select/cons_tres).
    GpusPerTask,
}

/// Whether `s` is a DNS-1123 subdomain (claim names, the prefix of label keys).
pub fn is_dns_subdomain(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    s.len() <= 253
        && s.starts_with(alnum)
        && s.ends_with(alnum)
        && s.chars().all(|c| alnum(c) || "-.".contains(c))
}

/// A label name or value: at most 63 characters from A-Z a-z 0-9 - _ ., starting and ending
/// with a letter or digit (a value may be empty).
fn is_label_name(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    s.len() <= 63
        && s.starts_with(alnum)
        && s.ends_with(alnum)
        && s.chars().all(|c| alnum(c) || "-_.".contains(c))
}

/// A label key: `[PREFIX/]NAME`, the prefix a DNS subdomain.
fn is_label_key(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name),
        None => is_label_name(s),
    }
}

const LABEL_RULES: &str =
    "a key is [PREFIX/]NAME (NAME: 1 to 63 characters from A-Z a-z 0-9 - _ ., starting \
     and ending with a letter or digit; PREFIX: a DNS subdomain), a value 0 to 63 such characters";

/// One `--node-selector KEY=VALUE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeLabel {
    pub key: String,
    pub value: String,
}

impl FromStr for NodeLabel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('=') {
            Some((k, v)) if is_label_key(k) && (v.is_empty() || is_label_name(v)) => {
                Ok(NodeLabel { key: k.into(), value: v.into() })
            }
            _ => Err(format!("expected KEY=VALUE, a node label: {LABEL_RULES}")),
        }
    }
}

/// The taint effects a toleration may name.
const EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// One `--toleration KEY=VALUE:EFFECT` (operator Equal) or `KEY:EFFECT` (operator Exists).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Toleration {
    pub key: String,
    pub value: Option<String>,
    pub effect: String,
}

impl FromStr for Toleration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let err = || {
            format!(
                "expected KEY=VALUE:EFFECT (tolerates that taint) or KEY:EFFECT (any value of KEY), EFFECT one \
                 of {}; {LABEL_RULES}",
                EFFECTS.join(", ")
            )
        };
        let (kv, effect) = s.rsplit_once(':').ok_or_else(err)?;
        if !EFFECTS.contains(&effect) {
            return Err(err());
        }
        let (key, value) = match kv.split_once('=') {
            Some((k, v)) if v.is_empty() || is_label_name(v) => (k, Some(v.to_string())),
            Some(_) => return Err(err()),
            None => (kv, None),
        };
        if !is_label_key(key) {
            return Err(err());
        }
        Ok(Toleration { key: key.into(), value, effect: effect.into() })
    }
}

/// The resources of one task, and for each one whether it was given or how it was chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resources {
    pub gpus: usize,
    pub cpus: usize,
    pub memory: Memory,
    pub time: Option<TimeLimit>,
    /// One line per resource that the points chose (not given by a flag): why that value.
    pub defaults: Vec<String>,
}

/// What the flags gave; the rest comes from the points.
#[derive(Clone, Copy, Debug, Default)]
pub struct Given {
    pub gpus: Option<usize>,
    pub cpus: Option<usize>,
    pub memory: Option<Memory>,
    pub time: Option<TimeLimit>,
}

/// Whether this point would run on the GPU engine: it asks for it, or asks for `auto` and the
/// GPU engine can run it (on a node with a GPU, `auto` takes it).
fn wants_gpu(cfg: &Config) -> bool {
    match cfg.engine {
        Engine::Gpu => true,
        Engine::Auto => fit::unsupported(cfg).is_none(),
        Engine::Cpu => false,
    }
}

/// The memory estimate of one point, MiB: the sequences' states (the CPU engine holds every
/// sequence of a layer at once; `bytes_per_sequence` counts f32 words, doubled for f64), twice
/// over for the temporaries, plus the fixed part; a multiple of 256 MiB.
pub fn estimated_memory(cfg: &Config) -> Memory {
    let per_seq =
        fit::bytes_per_sequence(cfg).0 as u128 * if cfg.precision == Precision::F64 { 2 } else { 1 };
    let states = 2 * per_seq * cfg.sequences as u128;
    let mib = u128::from(BASE_MIB) + states.div_ceil(1 << 20);
    let rounded = mib.div_ceil(256) * 256;
    Memory(u64::try_from(rounded).unwrap_or(MAX_MIB).min(MAX_MIB))
}

impl Resources {
    /// The given values, and defaults that fit the points for the rest: a GPU when any point
    /// would run on the GPU engine, the CPUs of the largest `threads`, the largest memory estimate.
    pub fn for_points(points: &[Point], given: Given) -> Resources {
        let mut defaults = Vec::new();
        let gpus = given.gpus.unwrap_or_else(|| {
            let on_gpu = points.iter().filter(|p| wants_gpu(&p.config)).count();
            defaults.push(if on_gpu > 0 {
                format!(
                    "1 GPU: {on_gpu} of {} points run on the GPU engine (engine = gpu, or auto and the GPU \
                     engine can run them); --gpus-per-task 0 keeps them on CPU nodes",
                    points.len()
                )
            } else {
                "no GPU: every point runs on the CPU engine".to_string()
            });
            usize::from(on_gpu > 0)
        });
        let cpus = given.cpus.unwrap_or_else(|| {
            let all_cores = points.iter().any(|p| p.config.threads == 0);
            let most = points.iter().map(|p| p.config.threads).max().unwrap_or(0);
            let cpus = if all_cores { CPUS_FOR_ALL_CORES.max(most) } else { most.max(1) };
            defaults.push(if all_cores {
                format!(
                    "{cpus} CPUs: points with threads = 0 use every CPU the task is given, and \
                     {CPUS_FOR_ALL_CORES} fits most nodes"
                )
            } else {
                format!("{cpus} CPUs: the points' largest threads")
            });
            cpus
        });
        let memory = given.memory.unwrap_or_else(|| {
            let m = points.iter().map(|p| estimated_memory(&p.config)).max().unwrap_or(Memory(BASE_MIB));
            defaults.push(format!(
                "{} memory: the largest point's estimate ({BASE_MIB} MiB + twice its sequences' states)",
                m.slurm()
            ));
            m
        });
        Resources { gpus, cpus, memory, time: given.time, defaults }
    }
}

impl fmt::Display for Resources {
    /// One line of what each task asks for, then the reasons for the defaults.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let time =
            self.time.map_or_else(|| "no time limit".to_string(), |t| format!("time limit {}", t.slurm()));
        writeln!(
            f,
            "requested per task: {} GPU{}, {} CPU{}, {} memory, {time}",
            self.gpus,
            if self.gpus == 1 { "" } else { "s" },
            self.cpus,
            if self.cpus == 1 { "" } else { "s" },
            self.memory.slurm()
        )?;
        for d in &self.defaults {
            writeln!(f, "  default {d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_reads_binary_units_and_writes_each_format() {
        for (s, mib) in [("1M", 1), ("1536Mi", 1536), ("4G", 4096), ("4Gi", 4096), ("2T", 2 << 20)] {
            assert_eq!(s.parse::<Memory>(), Ok(Memory(mib)), "{s}");
        }
        for s in ["", "4", "0G", "4g", "4GB", "4.5G", "-1G", "65T", "4 G", "G", "99999999999999999999M"] {
            assert!(s.parse::<Memory>().is_err(), "{s} accepted");
        }
        assert_eq!((Memory(4096).slurm(), Memory(4096).kubernetes()), ("4G".into(), "4Gi".into()));
        assert_eq!((Memory(1536).slurm(), Memory(1536).kubernetes()), ("1536M".into(), "1536Mi".into()));
    }

    #[test]
    fn time_limits_read_slurm_forms() {
        for (s, secs) in [
            ("90", 5400),
            ("5:30", 330),
            ("1:30:00", 5400),
            ("2-0", 172_800),
            ("1-02:03", 93_780),
            ("1-02:03:04", 93_784),
            ("365-0", MAX_SECONDS),
        ] {
            assert_eq!(s.parse::<TimeLimit>(), Ok(TimeLimit(secs)), "{s}");
        }
        for s in ["", "0", "1:60", "1:61:00", "1-24", "1-2:60", "366-0", "1:2:3:4", "x", "-5", "1-", "1h"] {
            assert!(s.parse::<TimeLimit>().is_err(), "{s} accepted");
        }
        assert_eq!(TimeLimit(5400).slurm(), "01:30:00");
        assert_eq!(TimeLimit(93_784).slurm(), "1-02:03:04");
    }

    #[test]
    fn labels_and_tolerations_follow_kubernetes_syntax() {
        let l: NodeLabel = "cloud.google.com/gke-accelerator=nvidia-h100-80gb".parse().unwrap();
        assert_eq!(
            (l.key.as_str(), l.value.as_str()),
            ("cloud.google.com/gke-accelerator", "nvidia-h100-80gb")
        );
        for s in
            ["novalue", "=v", "a b=c", "k=v w", "Bad_Prefix/k=v", "k=-v", &format!("{}=v", "k".repeat(64))]
        {
            assert!(s.parse::<NodeLabel>().is_err(), "{s} accepted");
        }
        let t: Toleration = "nvidia.com/gpu=present:NoSchedule".parse().unwrap();
        assert_eq!(
            t,
            Toleration {
                key: "nvidia.com/gpu".into(),
                value: Some("present".into()),
                effect: "NoSchedule".into()
            }
        );
        let t: Toleration = "dedicated:NoExecute".parse().unwrap();
        assert_eq!((t.value, t.effect.as_str()), (None, "NoExecute"));
        for s in ["k=v", "k:Never", "k=v:noschedule", ":NoSchedule", "k=a b:NoSchedule"] {
            assert!(s.parse::<Toleration>().is_err(), "{s} accepted");
        }
    }
}
