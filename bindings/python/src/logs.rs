//! [`LogStream`]: the iterator `Client.logs` returns. Each `next()` waits
//! (GIL released, Ctrl-C honoured) for the next whole line; dropping or
//! closing it cancels the call on the agent.

use std::collections::VecDeque;
use std::sync::Mutex;

use futures::StreamExt;
use futures::stream::BoxStream;
use mcp_core::client::{ClientError, LogLines};
use mcp_core::proto as pb;
use pyo3::prelude::*;

use crate::error::Error;
use crate::runtime::wait;
use crate::types::LogLine;

/// An open `Logs` call and the lines cut from it so far.
struct Open {
    chunks: BoxStream<'static, Result<pb::LogChunk, ClientError>>,
    lines: LogLines,
    ready: VecDeque<LogLine>,
}

impl Open {
    /// The next line; `None` when the stream has ended and every partial
    /// line has been given out.
    async fn next_line(&mut self) -> Result<Option<LogLine>, Error> {
        loop {
            if let Some(line) = self.ready.pop_front() {
                return Ok(Some(line));
            }
            match self.chunks.next().await {
                Some(chunk) => {
                    let lines = self.lines.push(chunk?);
                    self.ready.extend(lines.into_iter().map(LogLine::from));
                }
                None => {
                    let rest = self.lines.finish();
                    if rest.is_empty() {
                        return Ok(None);
                    }
                    self.ready.extend(rest.into_iter().map(LogLine::from));
                }
            }
        }
    }
}

/// The lines of a service's (or component's) output, as an iterator of
/// `LogLine`. With `follow`, it yields lines as they are written until it
/// is closed (`close()`, leaving a `with` block, `break` and dropping it,
/// or Ctrl-C); without, it ends after the existing output.
#[pyclass(module = "metacircular_mcp", frozen)]
pub struct LogStream {
    /// `None` once ended or closed. Taken out while a `next()` waits, so a
    /// `close()` from another thread meanwhile does not block.
    open: Mutex<Option<Open>>,
    /// Set when the stream ends, fails or is closed; a `next()` waiting
    /// while another thread closes it sees this when it returns.
    done: Mutex<bool>,
}

impl LogStream {
    pub(crate) fn new(chunks: BoxStream<'static, Result<pb::LogChunk, ClientError>>) -> Self {
        LogStream {
            open: Mutex::new(Some(Open {
                chunks,
                lines: LogLines::default(),
                ready: VecDeque::new(),
            })),
            done: Mutex::new(false),
        }
    }

    fn take(&self) -> Option<Open> {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn is_done(&self) -> bool {
        *self.done.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_done(&self) {
        *self.done.lock().unwrap_or_else(|p| p.into_inner()) = true;
    }
}

#[pymethods]
impl LogStream {
    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<LogLine>> {
        let Some(mut open) = self.take() else {
            return Ok(None);
        };
        // On an error or Ctrl-C the call is dropped here: the stream ends.
        let next = wait(py, async move {
            let line = open.next_line().await?;
            Ok((line, open))
        });
        match next {
            Ok((Some(line), open)) if !self.is_done() => {
                *self.open.lock().unwrap_or_else(|p| p.into_inner()) = Some(open);
                Ok(Some(line))
            }
            Ok((line, _)) => {
                self.set_done();
                Ok(line)
            }
            Err(err) => {
                self.set_done();
                Err(err)
            }
        }
    }

    /// Ends the call; further iteration stops at once. Idempotent.
    fn close(&self) {
        self.set_done();
        drop(self.take());
    }

    /// Whether the stream has ended or was closed.
    #[getter]
    fn closed(&self) -> bool {
        self.is_done()
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close();
        false
    }
}
