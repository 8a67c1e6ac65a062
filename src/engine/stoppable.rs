//! The engine's entry point for the commands (`run`, and `sweep run` per point): [`run`] on a
//! thread of its own, given up when a stop is requested, with a panic turned into an error so
//! that one bad point does not end a sweep.

use super::{run, RunOutput};
use crate::config::Config;
use crate::signals::stop_requested;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

/// How [`run_until_stopped`] ended.
pub enum Computed {
    /// The engine's result, or why it failed (its error, or the panic message).
    Finished(anyhow::Result<RunOutput>),
    /// A stop was requested (by this signal) before the engine finished.
    Abandoned(usize),
}

/// Runs `engine::run` on a thread of its own and waits for it or for a stop request in `stop`,
/// whichever comes first (checked every 50 ms). An abandoned computation is left to end with
/// the process: the engine cannot be interrupted, and nothing it computed is recorded. Used by
/// `sweep run` per point and by `rankcollapse run`.
pub fn run_until_stopped(cfg: &Config, stop: &AtomicUsize) -> Computed {
    let (tx, rx) = std::sync::mpsc::channel();
    let cfg = cfg.clone();
    let worker = std::thread::Builder::new().name("engine".into()).spawn(move || {
        let result = std::panic::catch_unwind(|| run(&cfg))
            .map_err(|e| {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
                anyhow::anyhow!("panic: {}", msg.unwrap_or_else(|| "unknown".into()))
            })
            .and_then(|r| r);
        let _ = tx.send(result);
    });
    if let Err(e) = worker {
        return Computed::Finished(Err(anyhow::anyhow!("cannot start the engine's thread: {e}")));
    }
    loop {
        if let Some(signal) = stop_requested(stop) {
            return Computed::Abandoned(signal);
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(result) => return Computed::Finished(result),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Computed::Finished(Err(anyhow::anyhow!("the engine's thread ended without a result")))
            }
        }
    }
}
