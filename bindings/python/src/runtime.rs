//! The process-wide tokio runtime every blocking call runs on, and
//! [`wait`], which runs a future on it with the GIL released while still
//! answering Ctrl-C.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use pyo3::prelude::*;
use tokio::runtime::Runtime;

use crate::error::{Error, McpError};

/// How often a waiting call looks for a pending signal (Ctrl-C).
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

/// The runtime and the process it was made in. A child made by `fork` has
/// a copy of the memory but none of the runtime's threads, so it gets a
/// runtime of its own (the parent's copy is leaked, never dropped). That
/// runtime shares no state with the parent's: tokio is built without
/// parking_lot, whose process-wide table of parked threads the fork may
/// have copied in the middle of a change by one of the parent's threads.
static RUNTIME: Mutex<Option<(u32, &'static Runtime)>> = Mutex::new(None);

/// The runtime of this process, made on first use.
pub(crate) fn runtime() -> PyResult<&'static Runtime> {
    let pid = std::process::id();
    let mut slot = RUNTIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((owner, rt)) = *slot
        && owner == pid
    {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("metacircular-mcp")
        .enable_all()
        .build()
        .map_err(|e| McpError::new_err(format!("cannot start the I/O runtime: {e}")))?;
    let rt: &'static Runtime = Box::leak(Box::new(rt));
    *slot = Some((pid, rt));
    Ok(rt)
}

/// Runs `fut` to completion on the runtime with the GIL released, so
/// other Python threads run meanwhile. Every [`SIGNAL_CHECK`] it takes the
/// GIL briefly to run pending signal handlers: when one raises (Ctrl-C
/// raises `KeyboardInterrupt`), `fut` is dropped, which cancels the call,
/// and the exception propagates.
pub(crate) fn wait<T, F>(py: Python<'_>, fut: F) -> PyResult<T>
where
    T: Send,
    F: Future<Output = Result<T, Error>> + Send,
{
    let rt = runtime()?;
    py.detach(|| {
        rt.block_on(async move {
            let mut fut = std::pin::pin!(fut);
            let start = tokio::time::Instant::now() + SIGNAL_CHECK;
            let mut tick = tokio::time::interval_at(start, SIGNAL_CHECK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    out = &mut fut => return out.map_err(PyErr::from),
                    _ = tick.tick() => Python::attach(|py| py.check_signals())?,
                }
            }
        })
    })
}
