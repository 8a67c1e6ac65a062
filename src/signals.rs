//! SIGINT/SIGTERM as a stop request: `run` and `sweep run` install it, the engine's stoppable
//! entry point and the sweep's loop read it, and the commands turn it into the conventional
//! exit status. A second signal exits at once.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// The stop request SIGINT and SIGTERM set: the signal's number (0 while none came). The first
/// signal only sets it (the work checks it and stops cleanly); a second one exits at once with
/// 128 + its number (signal-hook's conditional shutdown, registered first so that it sees the
/// flag before the first signal arms it). Only `run` and `sweep run` install it; every other
/// command keeps the default action (end at once).
pub fn stop_on_signals() -> anyhow::Result<Arc<AtomicUsize>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicUsize::new(0));
    let armed = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        let installed =
            signal_hook::flag::register_conditional_shutdown(signal, 128 + signal, Arc::clone(&armed))
                .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&armed)))
                .and_then(|_| signal_hook::flag::register_usize(signal, Arc::clone(&stop), signal as usize));
        installed
            .map_err(|e| anyhow::anyhow!("installing the {} handler: {e}", signal_name(signal as usize)))?;
    }
    Ok(stop)
}

/// The signal that asked to stop, if one did.
pub fn stop_requested(stop: &AtomicUsize) -> Option<usize> {
    match stop.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// The conventional exit status after a signal: 128 + its number (130 SIGINT, 143 SIGTERM).
pub fn signal_exit(signal: usize) -> i32 {
    128 + signal as i32
}

pub fn signal_name(signal: usize) -> String {
    signal_hook::low_level::signal_name(signal as i32)
        .map_or_else(|| format!("signal {signal}"), str::to_string)
}
