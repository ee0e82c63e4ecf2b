//! The audit log: one record per RPC, accepted or rejected, as an info-level
//! `tracing` event (target `mcp::audit`) and, when configured, as a JSON line
//! appended to a dedicated file. Records never hold tokens or other secrets.
//!
//! File lines are formatted and appended by a dedicated thread every
//! [`FILE_FLUSH_INTERVAL`] (sooner when many are waiting, and at shutdown),
//! so an RPC never waits on the disk nor wakes a thread. A `kill -9` can
//! lose at most that interval of file lines; the log records are written
//! at once.
//!
//! The queue holds at most [`MAX_QUEUED`] records; more are dropped and
//! counted. When the file cannot take a write (a full disk), the file is
//! cut back to where it was, so it never holds half a line; the records
//! stay queued and are tried again each interval; the failure is logged
//! loudly (once per spell) and counted ([`AuditLog::unwritten`]), and
//! [`AuditLog::is_failing`] says so until a write succeeds again, for the
//! agent to refuse changes meanwhile when `[auth] audit_required`.

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

/// The `tracing` target of audit events.
pub const AUDIT_TARGET: &str = "mcp::audit";

/// How often queued records are appended to the audit file.
pub const FILE_FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// Queued records that wake the writer before its interval ends.
const WAKE_AT: usize = 4096;
/// Most records queued for the file; more are dropped (and counted).
pub const MAX_QUEUED: usize = 65_536;

/// One RPC as the audit log records it.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    /// When the RPC arrived (written as RFC 3339, milliseconds, UTC).
    #[serde(serialize_with = "rfc3339_millis")]
    pub time: SystemTime,
    /// The gRPC path, `/mcp.v1.AgentService/Deploy`.
    pub method: String,
    /// The caller's token name or user name; `-` when unauthenticated.
    pub caller: String,
    /// Which validator vouched for the caller (`local`, `mcias`), or `-`.
    pub auth: &'static str,
    /// The peer's address, when known.
    pub peer: Option<SocketAddr>,
    /// The outcome's gRPC code name (`Ok`, `Unauthenticated`, ...).
    pub outcome: String,
    /// The outcome's numeric gRPC code.
    pub code: i32,
    /// Wall time from arrival to the end of the response, in milliseconds.
    pub duration_ms: f64,
    /// Why the RPC was rejected, for authentication and permission failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl AuditRecord {
    /// A record for `method` that arrived at `started`.
    pub fn new(method: &str, started: SystemTime) -> AuditRecord {
        AuditRecord {
            time: started,
            method: method.to_string(),
            caller: "-".to_string(),
            auth: "-",
            peer: None,
            outcome: String::new(),
            code: 0,
            duration_ms: 0.0,
            reason: None,
        }
    }

    /// Sets the outcome and duration.
    pub fn finish(&mut self, code: tonic::Code, elapsed: Duration) {
        self.outcome = code_name(code).to_string();
        self.code = code as i32;
        self.duration_ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3;
    }
}

fn rfc3339_millis<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&DateTime::<Utc>::from(*t).to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// The name of a gRPC code as the audit log writes it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "Ok",
        Cancelled => "Cancelled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// Why the audit file could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("audit file {path}: {source}")]
pub struct AuditFileError {
    /// The file.
    pub path: PathBuf,
    /// The cause.
    pub source: std::io::Error,
}

/// Records waiting for the file writer.
#[derive(Debug, Default)]
struct Queue {
    records: Vec<AuditRecord>,
    closed: bool,
}

#[derive(Debug)]
struct FileWriter {
    queue: Arc<(Mutex<Queue>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
    health: Arc<Health>,
}

/// How the file is faring, shared with its writer.
#[derive(Debug, Default)]
struct Health {
    /// The last write failed.
    failing: AtomicBool,
    /// Records that never reach the file: dropped from a full queue, or
    /// still unwritten when the log closed.
    unwritten: AtomicU64,
}

/// Where audit records go.
#[derive(Debug, Default)]
pub struct AuditLog {
    file: Option<FileWriter>,
}

impl AuditLog {
    /// Records go to the `tracing` log only.
    pub fn log_only() -> AuditLog {
        AuditLog { file: None }
    }

    /// Whether the audit file's last write failed (and none succeeded
    /// since); `false` without a file.
    pub fn is_failing(&self) -> bool {
        self.file
            .as_ref()
            .is_some_and(|w| w.health.failing.load(Ordering::Relaxed))
    }

    /// How many records never reached the file since the log opened:
    /// dropped from a full queue (a write that failed keeps its records
    /// queued and tries again).
    pub fn unwritten(&self) -> u64 {
        self.file
            .as_ref()
            .map_or(0, |w| w.health.unwritten.load(Ordering::Relaxed))
    }

    /// Records also go to `path`, appended as JSON lines (created with mode
    /// 0600, its directory created if missing) by a dedicated thread.
    pub fn with_file(path: &Path) -> Result<AuditLog, AuditFileError> {
        use std::os::unix::fs::OpenOptionsExt;
        let err = |source| AuditFileError {
            path: path.to_path_buf(),
            source,
        };
        crate::fsutil::create_parent_dir(path).map_err(err)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(err)?;
        let queue = Arc::new((Mutex::new(Queue::default()), Condvar::new()));
        let health = Arc::new(Health::default());
        let owned = path.to_path_buf();
        let (shared, writer_health) = (queue.clone(), health.clone());
        let thread = std::thread::Builder::new()
            .name("mcp-audit".into())
            .spawn(move || write_lines(owned, file, &shared, &writer_health))
            .map_err(err)?;
        Ok(AuditLog {
            file: Some(FileWriter {
                queue,
                thread: Some(thread),
                health,
            }),
        })
    }

    /// Writes `record` to the log (and queues it for the file).
    pub fn record(&self, record: AuditRecord) {
        let peer = record
            .peer
            .map_or_else(|| "-".to_string(), |p| p.to_string());
        tracing::info!(
            target: AUDIT_TARGET,
            method = %record.method,
            caller = %record.caller,
            auth = record.auth,
            peer = %peer,
            outcome = %record.outcome,
            code = record.code,
            duration_ms = record.duration_ms,
            reason = record.reason.as_deref(),
            "rpc"
        );
        if let Some(w) = &self.file {
            let (lock, wake) = &*w.queue;
            let mut q = lock.lock().unwrap_or_else(|p| p.into_inner());
            if q.records.len() >= MAX_QUEUED {
                let lost = w.health.unwritten.fetch_add(1, Ordering::Relaxed) + 1;
                if lost.is_power_of_two() {
                    tracing::error!(
                        lost,
                        "the audit queue is full: records are dropped from the audit file"
                    );
                }
                return;
            }
            q.records.push(record);
            if q.records.len() == WAKE_AT {
                wake.notify_one();
            }
        }
    }
}

impl Drop for AuditLog {
    /// Writes what is still queued before the log goes away.
    fn drop(&mut self) {
        if let Some(w) = &mut self.file {
            let (lock, wake) = &*w.queue;
            lock.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
            wake.notify_one();
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// The file writer: every interval (or when woken), takes what is queued
/// and appends it in one write; ends after a final write once closed. A
/// write that fails is undone (the file cut back to its length before) and
/// its records put back at the head of the queue for the next try.
fn write_lines(path: PathBuf, mut file: File, queue: &(Mutex<Queue>, Condvar), health: &Health) {
    let (lock, wake) = queue;
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        let (records, closed) = {
            let q = lock.lock().unwrap_or_else(|p| p.into_inner());
            let (mut q, _) = wake
                .wait_timeout_while(q, FILE_FLUSH_INTERVAL, |q| {
                    !q.closed && q.records.len() < WAKE_AT
                })
                .unwrap_or_else(|p| p.into_inner());
            (std::mem::take(&mut q.records), q.closed)
        };
        if !records.is_empty() {
            buf.clear();
            for record in &records {
                if serde_json::to_writer(&mut buf, record).is_ok() {
                    buf.push(b'\n');
                }
            }
            match append_whole(&mut file, &buf) {
                Ok(()) => {
                    if health.failing.swap(false, Ordering::Relaxed) {
                        tracing::warn!(path = %path.display(), "the audit file takes records again");
                    }
                }
                Err(e) => {
                    let pending = records.len();
                    if !health.failing.swap(true, Ordering::Relaxed) {
                        tracing::error!(path = %path.display(), error = %e, pending, "cannot append to the audit file; records are kept and tried again");
                    }
                    if closed {
                        health
                            .unwritten
                            .fetch_add(pending as u64, Ordering::Relaxed);
                    } else {
                        let mut q = lock.lock().unwrap_or_else(|p| p.into_inner());
                        let newer = std::mem::replace(&mut q.records, records);
                        let room = MAX_QUEUED.saturating_sub(q.records.len());
                        let dropped = newer.len().saturating_sub(room);
                        q.records.extend(newer.into_iter().take(room));
                        health
                            .unwritten
                            .fetch_add(dropped as u64, Ordering::Relaxed);
                    }
                }
            }
        }
        if closed {
            return;
        }
    }
}

/// Appends `buf` as one write; on failure (a full disk), cuts the file
/// back to its length before, so that no half line stays.
fn append_whole(file: &mut File, buf: &[u8]) -> std::io::Result<()> {
    let before = file.metadata()?.len();
    // With O_APPEND each write lands whole at the end of the file.
    file.write_all(buf).inspect_err(|_| {
        let _ = file.set_len(before);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_gets_one_json_line_per_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit/audit.jsonl");
        let log = AuditLog::with_file(&path).unwrap();
        let mut r = AuditRecord::new("/mcp.v1.AgentService/Status", SystemTime::now());
        r.caller = "kyle".into();
        r.peer = Some("127.0.0.1:5000".parse().unwrap());
        r.finish(tonic::Code::PermissionDenied, Duration::from_micros(1500));
        log.record(r.clone());
        log.record(r);
        // Dropping the log ends the writer once the queue is written.
        drop(log);
        let mut text = String::new();
        for _ in 0..100 {
            text = std::fs::read_to_string(&path).unwrap();
            if text.lines().count() == 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["method"], "/mcp.v1.AgentService/Status");
        assert_eq!(v["caller"], "kyle");
        assert_eq!(v["outcome"], "PermissionDenied");
        assert_eq!(v["code"], 7);
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["peer"], "127.0.0.1:5000");
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
