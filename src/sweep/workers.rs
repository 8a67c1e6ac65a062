//! `sweep run`'s workers: `--devices` parsed into the devices a shard runs on, and the pool that
//! runs the shard's unfinished points on them. `all`, `cpu` and `gpu` are one worker (points one
//! at a time, as always); `gpu:all` and `gpu:I,J,...` are one worker thread per GPU adapter, each
//! claiming the next unfinished point from a shared queue. Every point goes through the same
//! entry point (`engine::run_until_stopped`) and the same record (`store::record`) whichever
//! worker runs it, so a point's result depends only on its configuration and its adapter.

use super::spec::Point;
use super::store;
use crate::config::Engine;
use crate::engine::gpu::{self, AdapterSummary};
use crate::engine::{run_until_stopped, Computed};
use crate::signals::stop_requested;
use std::collections::VecDeque;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What `--devices` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Devices {
    /// `all`, `cpu`, `gpu`: one worker; the engine for the points whose engine is auto (None:
    /// each point picks as `run` does).
    One(Option<Engine>),
    /// `gpu:all`, `gpu:I,J,...`: one worker per adapter index of `rankcollapse devices` (an
    /// index given twice opens that adapter twice), every point on the GPU engine.
    Gpus(Vec<usize>),
}

impl Devices {
    /// The engine the points whose engine is auto run on (None: each picks).
    pub fn engine(&self) -> Option<Engine> {
        match self {
            Devices::One(e) => *e,
            Devices::Gpus(_) => Some(Engine::Gpu),
        }
    }
}

impl std::fmt::Display for Devices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Devices::One(None) => f.write_str("all"),
            Devices::One(Some(e)) => write!(f, "{e}"),
            Devices::Gpus(list) => {
                let list: Vec<String> = list.iter().map(usize::to_string).collect();
                write!(f, "gpu:{}", list.join(","))
            }
        }
    }
}

const ALLOWED: &str = "allowed are all (each point's engine = \"auto\" picks), cpu or gpu (points with \
                       engine = \"auto\" run on that engine, one at a time), gpu:all (one worker per GPU) or \
                       gpu:I,J,... (one worker per listed adapter index of `rankcollapse devices`)";

/// `--devices`. `adapters` is asked only for `gpu:...` (enumerating adapters takes a while and
/// is pointless for the CPU).
pub fn parse_devices(s: &str, adapters: impl FnOnce() -> Vec<AdapterSummary>) -> anyhow::Result<Devices> {
    match s {
        "all" => return Ok(Devices::One(None)),
        "cpu" => return Ok(Devices::One(Some(Engine::Cpu))),
        "gpu" => return Ok(Devices::One(Some(Engine::Gpu))),
        _ => {}
    }
    let Some(list) = s.strip_prefix("gpu:") else {
        anyhow::bail!("--devices {s:?} is invalid: {ALLOWED}");
    };
    if list == "all" {
        let all = adapters();
        let chosen = every_gpu(&all);
        if chosen.is_empty() {
            anyhow::bail!(
                "--devices {s:?}: no GPU adapter found (`rankcollapse devices` lists none); use --devices cpu, \
                 or install a GPU driver (mesa-vulkan-drivers for the software one)"
            );
        }
        return Ok(Devices::Gpus(chosen));
    }
    let mut indices = Vec::new();
    for item in list.split(',') {
        let index = item.trim().parse::<usize>().map_err(|_| {
            anyhow::anyhow!(
                "--devices {s:?} is invalid: {item:?} is not an adapter index (gpu: takes all or adapter indices \
                 separated by commas, e.g. gpu:0,2); {ALLOWED}"
            )
        })?;
        indices.push(index);
    }
    let all = adapters();
    if let Some(bad) = indices.iter().find(|&&i| i >= all.len()) {
        let seen: Vec<String> =
            all.iter().map(|a| format!("[{}] {} ({:?})", a.index, a.info.name, a.info.backend)).collect();
        let allowed = match all.len() {
            0 => "there is no GPU adapter (use --devices cpu)".to_string(),
            n => format!("allowed indices are 0 to {} ({})", n - 1, seen.join(", ")),
        };
        anyhow::bail!("--devices {s:?}: no GPU adapter has index {bad}; {allowed}");
    }
    Ok(Devices::Gpus(indices))
}

/// The adapters of `gpu:all`: every hardware adapter of one backend, the first backend wgpu lists
/// with one (a GPU that Vulkan and GL both expose is used once); without a hardware adapter, the
/// first adapter (a software one, as the GPU engine's own choice takes), so that `gpu:all` runs
/// (slowly) anywhere the GPU engine does.
fn every_gpu(all: &[AdapterSummary]) -> Vec<usize> {
    match all.iter().find(|a| gpu::is_hardware(&a.info)) {
        Some(first) => all
            .iter()
            .filter(|a| gpu::is_hardware(&a.info) && a.info.backend == first.info.backend)
            .map(|a| a.index)
            .collect(),
        None => all.first().map(|a| a.index).into_iter().collect(),
    }
}

/// What the workers did with the points given to them.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Points recorded as failed.
    pub failed: usize,
    /// The signal that stopped the workers, and the points they abandoned (id and parameters).
    pub interrupted: Option<(usize, Vec<String>)>,
    /// Why each worker that lost its device stopped.
    pub lost: Vec<String>,
    /// Points no worker finished because every worker lost its device (not recorded).
    pub unfinished: Vec<String>,
}

/// How the points of one process are run: where the records go, and what to change in each
/// point's configuration.
pub struct Job<'a> {
    pub out: &'a Path,
    pub threads: Option<usize>,
    pub devices: &'a Devices,
    pub stop: &'a AtomicUsize,
}

/// One worker: the adapter it runs its points on (None: the point's own engine choice), and its
/// name in the log ("worker 2 (adapter 0 NAME)"; empty for the single worker of all|cpu|gpu).
struct Worker {
    adapter: Option<usize>,
    name: String,
}

/// How one worker ended.
enum End {
    /// No point left.
    Drained,
    /// A stop was requested; the point it abandoned, if one was in flight.
    Stopped(usize, Option<String>),
    /// Its device was lost: it handed its point back.
    Lost(String),
}

/// Runs `todo` (in order) on the workers `--devices` asks for; returns `Err` only when a record
/// cannot be written (the other workers then finish their point and stop).
pub fn run_points(todo: Vec<&Point>, skipped: usize, job: &Job) -> anyhow::Result<Outcome> {
    let workers: Vec<Worker> = match job.devices {
        Devices::One(_) => vec![Worker { adapter: None, name: String::new() }],
        Devices::Gpus(indices) => {
            let list = gpu::adapters();
            let workers: Vec<Worker> = indices
                .iter()
                .enumerate()
                .map(|(n, &i)| {
                    let adapter = list.get(i).map_or_else(String::new, |a| format!(" {}", a.info.name));
                    Worker { adapter: Some(i), name: format!("worker {} (adapter {i}{adapter})", n + 1) }
                })
                .collect();
            let names: Vec<&str> = workers.iter().map(|w| w.name.as_str()).collect();
            super::log(&format!("GPU workers ({}): {}", workers.len(), names.join(", ")));
            workers
        }
    };
    let queue = Queue::new(todo);
    let progress = Progress::new(queue.len() as u64, skipped);
    let failed = AtomicUsize::new(0);
    let ends: Vec<anyhow::Result<End>> = std::thread::scope(|s| {
        let handles: Vec<_> = workers
            .iter()
            .map(|w| {
                let (queue, progress, failed) = (&queue, &progress, &failed);
                s.spawn(move || {
                    let end = work(w, queue, progress, failed, job);
                    if end.is_err() {
                        queue.halt();
                    }
                    end
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| anyhow::bail!("a sweep worker panicked")))
            .collect()
    });
    progress.finish();
    let mut outcome = Outcome { failed: failed.load(Ordering::SeqCst), ..Outcome::default() };
    let mut abandoned = Vec::new();
    let mut signal = None;
    for end in ends {
        match end? {
            End::Drained => {}
            End::Stopped(s, point) => {
                signal = Some(s);
                abandoned.extend(point);
            }
            End::Lost(why) => outcome.lost.push(why),
        }
    }
    outcome.interrupted = signal.map(|s| (s, abandoned));
    if outcome.interrupted.is_none() {
        outcome.unfinished = queue.left().iter().map(|p| p.id.clone()).collect();
    }
    Ok(outcome)
}

/// One worker's loop: claim a point, run it, record it, until none is left, a stop is requested
/// or its device is lost.
fn work(
    w: &Worker,
    queue: &Queue,
    progress: &Progress,
    failed: &AtomicUsize,
    job: &Job,
) -> anyhow::Result<End> {
    loop {
        let p = match queue.claim(job.stop) {
            Claim::Point(p) => p,
            Claim::Empty => return Ok(End::Drained),
            Claim::Stopped(signal) => return Ok(End::Stopped(signal, None)),
        };
        let mut cfg = p.config.clone();
        if let Some(t) = job.threads {
            cfg.threads = t;
        }
        if let (Some(e), Engine::Auto) = (job.devices.engine(), cfg.engine) {
            cfg.engine = e;
        }
        if let Some(i) = w.adapter {
            cfg.adapter = Some(i.to_string());
        }
        let started = Instant::now();
        // Test hook: RANKCOLLAPSE_TEST_FAIL_POINT=<id> makes that point fail, to exercise the
        // failure path without a real fault.
        let injected = std::env::var("RANKCOLLAPSE_TEST_FAIL_POINT").is_ok_and(|v| v == p.id);
        let outcome = if injected {
            Err(anyhow::anyhow!("injected failure (RANKCOLLAPSE_TEST_FAIL_POINT)"))
        } else {
            match run_until_stopped(&cfg, job.stop) {
                Computed::Finished(r) => r,
                Computed::Abandoned(signal) => {
                    queue.done();
                    return Ok(End::Stopped(signal, Some(format!("{} ({})", p.id, super::describe(p)))));
                }
            }
        };
        // A worker of its own adapter stops when that device is lost, and the point goes to the
        // others: the point did nothing wrong. (With one worker and no adapter of its own, the
        // next point opens a new device, so the point fails as any other.)
        if let (Some(_), Err(why)) = (w.adapter, &outcome) {
            if gpu::is_device_lost(why) {
                queue.hand_back(p);
                super::log(&format!(
                    "{} stops: {why:#}; point {} goes back to the queue for the other workers",
                    w.name, p.id
                ));
                return Ok(End::Lost(format!("{}: {why:#}", w.name)));
            }
        }
        let outcome = outcome
            .map(|out| {
                let stats = crate::output::summaries(&out);
                let layers = store::layers_json(&stats);
                (out, layers)
            })
            .map_err(|e| format!("{e:#}"));
        if outcome.is_err() {
            failed.fetch_add(1, Ordering::SeqCst);
        }
        let status = if outcome.is_ok() { "done" } else { "failed" };
        let rec = store::record(p, outcome);
        let written = crate::output::write_atomic(
            &store::point_path(job.out, &p.id),
            serde_json::to_string(&rec)?.as_bytes(),
        );
        queue.done();
        written?;
        progress.point(&format!(
            "point {} ({}) {status} in {:.2}s{}",
            p.id,
            super::describe(p),
            started.elapsed().as_secs_f64(),
            if w.name.is_empty() { String::new() } else { format!(" on {}", w.name) }
        ));
    }
}

/// The shard's unfinished points, claimed one at a time by the workers; a point handed back (its
/// worker lost its device) goes to the front, and a worker that finds the queue empty waits while
/// others still hold points, since one of those may come back.
struct Queue<'p> {
    state: Mutex<QueueState<'p>>,
    changed: Condvar,
}

struct QueueState<'p> {
    pending: VecDeque<&'p Point>,
    in_flight: usize,
    halted: bool,
}

enum Claim<'p> {
    Point(&'p Point),
    Empty,
    Stopped(usize),
}

impl<'p> Queue<'p> {
    fn new(points: Vec<&'p Point>) -> Queue<'p> {
        let state = QueueState { pending: points.into(), in_flight: 0, halted: false };
        Queue { state: Mutex::new(state), changed: Condvar::new() }
    }
    fn lock(&self) -> MutexGuard<'_, QueueState<'p>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn len(&self) -> usize {
        self.lock().pending.len()
    }
    fn claim(&self, stop: &AtomicUsize) -> Claim<'p> {
        let mut s = self.lock();
        loop {
            if let Some(signal) = stop_requested(stop) {
                return Claim::Stopped(signal);
            }
            if s.halted {
                return Claim::Empty;
            }
            if let Some(p) = s.pending.pop_front() {
                s.in_flight += 1;
                return Claim::Point(p);
            }
            if s.in_flight == 0 {
                return Claim::Empty;
            }
            // Woken when a point ends; the timeout is for the stop request.
            s = self.changed.wait_timeout(s, Duration::from_millis(50)).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
    fn done(&self) {
        self.lock().in_flight -= 1;
        self.changed.notify_all();
    }
    fn hand_back(&self, p: &'p Point) {
        let mut s = self.lock();
        s.pending.push_front(p);
        s.in_flight -= 1;
        drop(s);
        self.changed.notify_all();
    }
    /// No new claims (a record could not be written).
    fn halt(&self) {
        self.lock().halted = true;
        self.changed.notify_all();
    }
    fn left(&self) -> Vec<&'p Point> {
        self.lock().pending.iter().copied().collect()
    }
}

/// A bar with points done, rate and ETA on a terminal; plain log lines otherwise (Slurm logs),
/// numbered in the order the points end whichever worker ran them.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    done: Mutex<u64>,
}

impl Progress {
    fn new(total: u64, skipped: usize) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} points  {per_sec}  ETA {eta}  {msg}",
                )
                .expect("valid template"),
            );
            if skipped > 0 {
                bar.set_message(format!("({skipped} already done)"));
            }
            bar
        });
        Progress { bar, total, done: Mutex::new(0) }
    }
    fn point(&self, line: &str) {
        // Held while logging, so that the numbers appear in order.
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        *done += 1;
        match &self.bar {
            Some(bar) => bar.inc(1),
            None => super::log(&format!("[{}/{}] {line}", *done, self.total)),
        }
    }
    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}
