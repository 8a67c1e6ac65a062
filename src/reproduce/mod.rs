//! `rankcollapse reproduce`: one preset per paper (Dong 2021, Wu 2024, Naderi 2024, Amsel 2024)
//! that runs the experiments, draws the figures and writes a markdown report putting each
//! measured quantity beside what the paper states. The checks the tests assert are functions of
//! their setting, so a test can also run them against a wrong setting and see them fail.

pub mod amsel;
pub mod dong;
pub mod figure;
pub mod naderi;
pub mod wu;

use crate::config::{Config, Engine};
use crate::metrics::{Metric, Summary};
use crate::{engine, output};
use anyhow::{anyhow, Context};
use figure::Figure;
use std::fmt::Write as _;
use std::path::Path;
use std::str::FromStr;
use std::time::Instant;

/// The papers a preset reproduces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paper {
    Dong2021,
    Wu2024,
    Naderi2024,
    Amsel2024,
}

impl Paper {
    pub const ALL: [Paper; 4] = [Paper::Dong2021, Paper::Wu2024, Paper::Naderi2024, Paper::Amsel2024];

    pub fn name(self) -> &'static str {
        match self {
            Paper::Dong2021 => "dong2021",
            Paper::Wu2024 => "wu2024",
            Paper::Naderi2024 => "naderi2024",
            Paper::Amsel2024 => "amsel2024",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Paper::Dong2021 => {
                "Dong, Cordonnier, Loukas 2021: pure attention loses rank doubly exponentially (arXiv 2103.03404)"
            }
            Paper::Wu2024 => {
                "Wu, Ajorlou, Wang, Jegelka, Jadbabaie 2024: attention masks and LayerNorm (arXiv 2405.18781)"
            }
            Paper::Naderi2024 => "Naderi, Nait Saada, Tanner 2024: Mind the gap (arXiv 2410.07799)",
            Paper::Amsel2024 => "Amsel, Yehudai, Bruna 2024: the benefits of rank in attention layers (arXiv 2407.16153)",
        }
    }
}

const PAPERS_ALLOWED: &str = "one of dong2021, wu2024, naderi2024, amsel2024, all";

/// "all" or one paper's name.
pub fn parse_papers(s: &str) -> anyhow::Result<Vec<Paper>> {
    if s == "all" {
        return Ok(Paper::ALL.to_vec());
    }
    Paper::from_str(s).map(|p| vec![p])
}

impl FromStr for Paper {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Paper::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| anyhow!("paper {s:?} is unknown: {PAPERS_ALLOWED}"))
    }
}

/// How a preset runs.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Small sizes that run in a couple of minutes on a 2-core CPU.
    pub quick: bool,
    /// Seed of every draw (the engine's `seed`; the Amsel experiment's own generator).
    pub seed: u64,
    /// CPU threads (0: all cores).
    pub threads: usize,
    /// The engine of the presets' `engine::run` calls (`auto`: the GPU engine on a hardware
    /// adapter when it supports the configuration). Runs that drive `model` directly (Dong's deep
    /// run, Wu's constructed equilibria) and the Amsel experiment are CPU f64 whatever this says.
    pub engine: Engine,
}

/// One measured quantity beside the paper's statement.
pub struct Claim {
    pub quantity: String,
    pub paper: String,
    pub measured: String,
    /// Whether the measurement agrees with the statement (None: informational).
    pub agrees: Option<bool>,
}

impl Claim {
    pub fn new(
        quantity: impl Into<String>,
        paper: impl Into<String>,
        measured: impl Into<String>,
        agrees: Option<bool>,
    ) -> Self {
        Claim { quantity: quantity.into(), paper: paper.into(), measured: measured.into(), agrees }
    }
}

/// What a preset found: the setup in words, the claims, the figures (caption, PNG file name).
pub struct Report {
    pub paper: Paper,
    pub setup: Vec<String>,
    pub claims: Vec<Claim>,
    pub figures: Vec<(String, String)>,
    pub seconds: f64,
    pub quick: bool,
    pub seed: u64,
    pub engine: Engine,
}

impl Report {
    fn new(paper: Paper, opts: &Options) -> Self {
        Report {
            paper,
            setup: Vec::new(),
            claims: Vec::new(),
            figures: Vec::new(),
            seconds: 0.0,
            quick: opts.quick,
            seed: opts.seed,
            engine: opts.engine,
        }
    }

    /// Draws `figure` as `<dir>/<name>.svg` and `.png` and lists it under `caption`.
    pub fn figure(
        &mut self,
        dir: &Path,
        name: &str,
        caption: impl Into<String>,
        figure: Figure,
    ) -> anyhow::Result<()> {
        let file = figure.save(dir, name)?;
        self.figures.push((caption.into(), file));
        Ok(())
    }

    /// The report as markdown; figure links are `<prefix><file>`.
    pub fn markdown(&self, prefix: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "## {}\n", self.paper.title());
        let _ = writeln!(
            s,
            "Command: `rankcollapse reproduce {} --out DIR{} --seed {} --engine {}` ({:.1} s).\n",
            self.paper.name(),
            if self.quick { " --quick" } else { "" },
            self.seed,
            self.engine,
            self.seconds
        );
        for p in &self.setup {
            let _ = writeln!(s, "{p}\n");
        }
        let _ = writeln!(s, "| quantity | the paper | measured here | agrees |\n|---|---|---|---|");
        for c in &self.claims {
            let agrees = match c.agrees {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "-",
            };
            let _ = writeln!(s, "| {} | {} | {} | {agrees} |", c.quantity, c.paper, c.measured);
        }
        s.push('\n');
        for (caption, file) in &self.figures {
            let _ = writeln!(s, "![{caption}]({prefix}{file})\n\n*{caption}*\n");
        }
        s
    }
}

/// Runs the presets of `papers`, writing `<out>/<paper>/` (figures, report.md) and
/// `<out>/README.md` (every report in `out`, figure links relative to `out`).
pub fn reproduce(papers: &[Paper], out: &Path, opts: &Options) -> anyhow::Result<Vec<Report>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating --out {}", out.display()))?;
    let probe = out.join(".rankcollapse-write-test");
    std::fs::write(&probe, b"").with_context(|| format!("--out {} is not writable", out.display()))?;
    let _ = std::fs::remove_file(&probe);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(opts.threads).build()?;
    let mut reports = Vec::new();
    for &paper in papers {
        let dir = out.join(paper.name());
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let started = Instant::now();
        eprintln!("[rankcollapse] reproduce {}{}", paper.name(), if opts.quick { " (quick)" } else { "" });
        let mut report = Report::new(paper, opts);
        // The engine runs build their own pools of `threads`; this one serves the presets' own
        // parallel loops (Amsel's samples, Dong's deep run).
        pool.install(|| match paper {
            Paper::Dong2021 => dong::reproduce(&dir, opts, &mut report),
            Paper::Wu2024 => wu::reproduce(&dir, opts, &mut report),
            Paper::Naderi2024 => naderi::reproduce(&dir, opts, &mut report),
            Paper::Amsel2024 => amsel::reproduce(&dir, opts, &mut report),
        })
        .with_context(|| format!("reproducing {}", paper.name()))?;
        report.seconds = started.elapsed().as_secs_f64();
        output::write_atomic(&dir.join("report.md"), report.markdown("").as_bytes())?;
        eprintln!(
            "[rankcollapse] {} done in {:.1} s: {}",
            paper.name(),
            report.seconds,
            dir.join("report.md").display()
        );
        reports.push(report);
    }
    output::write_atomic(&out.join("README.md"), index(out)?.as_bytes())?;
    Ok(reports)
}

/// `<out>/README.md`: every paper's report found in `out` (this run's and earlier ones), in the
/// order of [`Paper::ALL`], with figure links made relative to `out`.
fn index(out: &Path) -> anyhow::Result<String> {
    let mut index = String::from("# Reproductions\n\n");
    for paper in Paper::ALL {
        let path = out.join(paper.name()).join("report.md");
        if !path.exists() {
            continue;
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        for line in text.lines() {
            match line.strip_prefix("![").and_then(|l| l.split_once("](")) {
                Some((caption, link)) => {
                    let _ = writeln!(index, "![{caption}]({}/{link}", paper.name());
                }
                None => {
                    let _ = writeln!(index, "{line}");
                }
            }
        }
    }
    Ok(index)
}

/// The configuration every preset starts from: the defaults with the preset's seed and threads,
/// the engine of `opts` (f64 on the CPU).
pub fn base_config(opts: &Options) -> Config {
    Config {
        seed: opts.seed,
        threads: opts.threads,
        engine: opts.engine,
        spectrum_every: 0,
        ..Config::default()
    }
}

/// Per-layer means over sequences of each of `metrics` (layer 0 = input), from one engine run.
pub fn layer_means(cfg: &Config, metrics: &[Metric]) -> anyhow::Result<Vec<Vec<f64>>> {
    layer_stats(cfg, metrics, |s| s.mean)
}

/// Per-layer statistics over sequences (`pick`: mean, median, ...) of each of `metrics`.
pub fn layer_stats(
    cfg: &Config,
    metrics: &[Metric],
    pick: fn(&Summary) -> f64,
) -> anyhow::Result<Vec<Vec<f64>>> {
    cfg.validate()?;
    let out = engine::run(cfg)?;
    let stats = output::summaries(&out);
    Ok(metrics
        .iter()
        .map(|m| {
            stats
                .iter()
                .map(|layer| layer.iter().find(|(n, _)| n == m).map_or(f64::NAN, |(_, s)| pick(s)))
                .collect()
        })
        .collect())
}

/// The per-layer mean of one metric.
pub fn layer_mean(cfg: &Config, metric: Metric) -> anyhow::Result<Vec<f64>> {
    Ok(layer_means(cfg, &[metric])?.remove(0))
}

/// Least-squares slope of y against x over the finite points.
pub fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let pts: Vec<(f64, f64)> =
        xs.iter().zip(ys).map(|(&x, &y)| (x, y)).filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
    let k = pts.len() as f64;
    let (mx, my) = (pts.iter().map(|p| p.0).sum::<f64>() / k, pts.iter().map(|p| p.1).sum::<f64>() / k);
    let sxy: f64 = pts.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = pts.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    sxy / sxx
}

/// (0, y0), (1, y1), ...: a per-layer curve as chart points.
pub fn by_layer(ys: &[f64]) -> Vec<(f64, f64)> {
    ys.iter().enumerate().map(|(l, &y)| (l as f64, y)).collect()
}

/// Numbers for a report, comma separated.
pub fn fmt_list(xs: &[f64]) -> String {
    xs.iter().map(|x| fmt(*x)).collect::<Vec<_>>().join(", ")
}

/// A number for a report: 3 significant digits, scientific when very large or small.
pub fn fmt(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    let a = x.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        format!("{x:.2e}")
    } else {
        let s = format!("{x:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}
