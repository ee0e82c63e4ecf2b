//! The audit log: one record per RPC, accepted or rejected, as an info-level
//! `tracing` event (target `mcp::audit`) and, when configured, as a JSON line
//! appended to a dedicated file. Records never hold tokens or other secrets.

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

/// The `tracing` target of audit events.
pub const AUDIT_TARGET: &str = "mcp::audit";

/// One RPC as the audit log records it.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    /// When the RPC arrived (RFC 3339, milliseconds, UTC).
    pub time: String,
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
            time: DateTime::<Utc>::from(started).to_rfc3339_opts(SecondsFormat::Millis, true),
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

/// Where audit records go.
#[derive(Debug, Default)]
pub struct AuditLog {
    file: Option<(PathBuf, Mutex<File>)>,
}

impl AuditLog {
    /// Records go to the `tracing` log only.
    pub fn log_only() -> AuditLog {
        AuditLog { file: None }
    }

    /// Records also go to `path`, appended as JSON lines (created with mode
    /// 0600, its directory created if missing).
    pub fn with_file(path: &Path) -> Result<AuditLog, AuditFileError> {
        use std::os::unix::fs::OpenOptionsExt;
        let err = |source| AuditFileError {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(err)?;
        Ok(AuditLog {
            file: Some((path.to_path_buf(), Mutex::new(file))),
        })
    }

    /// Writes `record` to the log (and the file).
    pub fn record(&self, record: &AuditRecord) {
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
            reason = record.reason.as_deref().unwrap_or(""),
            "rpc"
        );
        if let Some((path, file)) = &self.file {
            let Ok(mut line) = serde_json::to_vec(record) else {
                return;
            };
            line.push(b'\n');
            let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
            // One write per record: with O_APPEND the line lands whole.
            if let Err(e) = file.write_all(&line) {
                tracing::error!(path = %path.display(), error = %e, "cannot append to the audit file");
            }
        }
    }
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
        log.record(&r);
        log.record(&r);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["method"], "/mcp.v1.AgentService/Status");
        assert_eq!(v["caller"], "kyle");
        assert_eq!(v["outcome"], "PermissionDenied");
        assert_eq!(v["code"], 7);
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["peer"], "127.0.0.1:5000");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
