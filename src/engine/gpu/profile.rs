//! Per-kernel GPU timings for `--profile`: every compute pass writes a timestamp at its start and
//! end into a query set, resolved and read back at each submit, and summed per kernel
//! (`family.entry`). Only when asked for: the read-back at every submit serialises the queue.

use super::GpuContext;
use std::collections::BTreeMap;

/// A kernel: its family (shader file) and entry point.
pub type Kernel = (&'static str, &'static str);

/// Queries per query set (wgpu's largest): 2048 passes between two submits.
const QUERIES: u32 = 4096;

/// Per kernel ("family.entry"): passes and total nanoseconds on the device.
pub type KernelTimes = Vec<(String, u64, f64)>;

/// Timestamps of the passes recorded since the last submit, and the totals so far.
pub struct Profiler {
    set: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    /// The kernel of each pass recorded since the last submit.
    pending: Vec<Kernel>,
    /// Nanoseconds per timestamp tick.
    period: f64,
    /// Per kernel: passes and nanoseconds.
    totals: BTreeMap<Kernel, (u64, f64)>,
}

impl Profiler {
    /// A profiler, or why there is none (the adapter has no timestamp queries).
    pub fn new(ctx: &GpuContext) -> Result<Profiler, String> {
        if !ctx.device.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            return Err(format!("the adapter {} has no timestamp queries", ctx.info.name));
        }
        let set = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("profile"),
            ty: wgpu::QueryType::Timestamp,
            count: QUERIES,
        });
        let resolved = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile timestamps"),
            size: u64::from(QUERIES) * wgpu::QUERY_SIZE as u64,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let period = f64::from(ctx.queue.get_timestamp_period());
        Ok(Profiler { set, resolved, pending: Vec::new(), period, totals: BTreeMap::new() })
    }

    /// Whether the query set is full (the caller submits first).
    pub fn full(&self) -> bool {
        2 * self.pending.len() as u32 >= QUERIES
    }

    /// The timestamp writes of the next pass, which runs `kernel`.
    pub fn pass(&mut self, kernel: Kernel) -> wgpu::ComputePassTimestampWrites<'_> {
        let at = 2 * self.pending.len() as u32;
        self.pending.push(kernel);
        wgpu::ComputePassTimestampWrites {
            query_set: &self.set,
            beginning_of_pass_write_index: Some(at),
            end_of_pass_write_index: Some(at + 1),
        }
    }

    /// Resolves the pending timestamps into the read-back buffer (before the encoder is
    /// submitted).
    pub fn resolve(&self, enc: &mut wgpu::CommandEncoder) {
        if !self.pending.is_empty() {
            enc.resolve_query_set(&self.set, 0..2 * self.pending.len() as u32, &self.resolved, 0);
        }
    }

    /// Reads the resolved timestamps back (after the submit) and adds them to the totals.
    pub fn collect(&mut self, ctx: &GpuContext) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let bytes = (2 * self.pending.len() * wgpu::QUERY_SIZE as usize) as u64;
        let ticks = ctx.read_back::<u64>(&self.resolved, bytes)?;
        for (kernel, t) in self.pending.drain(..).zip(ticks.chunks_exact(2)) {
            let entry = self.totals.entry(kernel).or_default();
            entry.0 += 1;
            entry.1 += t[1].saturating_sub(t[0]) as f64 * self.period;
        }
        Ok(())
    }

    /// Per kernel: passes and nanoseconds, the slowest first.
    pub fn totals(&self) -> KernelTimes {
        let mut rows: Vec<_> =
            self.totals.iter().map(|((f, e), (n, ns))| (format!("{f}.{e}"), *n, *ns)).collect();
        rows.sort_by(|a, b| b.2.total_cmp(&a.2));
        rows
    }
}

/// The table `--profile` prints: per kernel, passes, total and mean time, and share of the
/// time on the device; `wall` is the run's wall-clock time for comparison.
pub fn table(rows: &[(String, u64, f64)], wall_seconds: f64) -> String {
    let device: f64 = rows.iter().map(|r| r.2).sum();
    let mut out =
        format!("{:<24} {:>8} {:>12} {:>12} {:>7}\n", "kernel", "passes", "total ms", "mean us", "share");
    for (kernel, passes, ns) in rows {
        out += &format!(
            "{:<24} {:>8} {:>12.3} {:>12.3} {:>6.1}%\n",
            kernel,
            passes,
            ns / 1e6,
            ns / 1e3 / (*passes).max(1) as f64,
            100.0 * ns / device.max(f64::MIN_POSITIVE)
        );
    }
    out += &format!(
        "{:<24} {:>8} {:>12.3}   (wall clock {:.3} ms: the rest is submission, read-back and host work)\n",
        "all kernels",
        rows.iter().map(|r| r.1).sum::<u64>(),
        device / 1e6,
        wall_seconds * 1e3
    );
    out
}
