//! A small async client of QEMU's machine protocol (QMP) over a unix socket.
//!
//! QMP is line-delimited JSON: on connect QEMU sends a greeting
//! (`{"QMP": {...}}`), the client must send `qmp_capabilities` before any
//! other command, and each command gets one `{"return": ...}` or
//! `{"error": {...}}` answer, with asynchronous `{"event": ...}` lines in
//! between. QEMU serves one QMP client at a time on a socket, so callers
//! connect for an operation and drop the client when done.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// Why a QMP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be connected to.
    #[error("cannot connect to QMP socket {path}: {source}")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Reading or writing the socket failed, or QEMU closed it.
    #[error("QMP socket {path}: {reason}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// QEMU did not answer in time.
    #[error("QMP socket {path}: no answer to {what} within {} ms", timeout.as_millis())]
    Timeout {
        /// The socket path.
        path: PathBuf,
        /// What was awaited (the greeting or a command).
        what: String,
        /// How long was waited.
        timeout: Duration,
    },
    /// QEMU sent something that is not QMP.
    #[error("QMP socket {path}: unexpected message: {message}")]
    Protocol {
        /// The socket path.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// QEMU refused a command.
    #[error("QMP command {command} failed: {class}: {desc}")]
    Command {
        /// The command.
        command: String,
        /// QEMU's error class, such as `GenericError`.
        class: String,
        /// QEMU's description.
        desc: String,
    },
}

/// The VM's run state, as `query-status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct QmpStatus {
    /// Whether the guest's CPUs run.
    pub running: bool,
    /// QEMU's run state: `running`, `paused`, `shutdown`, `prelaunch`,
    /// `inmigrate`, `internal-error`, `guest-panicked`, ...
    pub status: String,
}

/// One QMP line from QEMU.
#[derive(Debug, Deserialize)]
struct Message {
    #[serde(rename = "QMP")]
    greeting: Option<Value>,
    #[serde(rename = "return")]
    ret: Option<Value>,
    error: Option<ErrorBody>,
    event: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    class: String,
    #[serde(default)]
    desc: String,
}

/// A connected QMP session, past capabilities negotiation.
#[derive(Debug)]
pub struct QmpClient {
    path: PathBuf,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    timeout: Duration,
    version: String,
    events: Vec<String>,
}

impl QmpClient {
    /// Connects to the QMP socket at `path`, reads the greeting and
    /// negotiates capabilities. Each step, and later each command, must be
    /// answered within `timeout`.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<QmpClient, QmpError> {
        let stream = match tokio::time::timeout(timeout, UnixStream::connect(path)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => {
                return Err(QmpError::Connect {
                    path: path.to_path_buf(),
                    source,
                });
            }
            Err(_) => {
                return Err(QmpError::Timeout {
                    path: path.to_path_buf(),
                    what: "connect".into(),
                    timeout,
                });
            }
        };
        let (read, writer) = stream.into_split();
        let mut client = QmpClient {
            path: path.to_path_buf(),
            reader: BufReader::new(read),
            writer,
            timeout,
            version: String::new(),
            events: Vec::new(),
        };
        let greeting = client.read_message("greeting").await?;
        let Some(greeting) = greeting.greeting else {
            return Err(client.protocol("no greeting"));
        };
        client.version = version_of(&greeting);
        client.execute("qmp_capabilities", None).await?;
        Ok(client)
    }

    /// QEMU's version from the greeting, such as `7.2.22`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The names of the events seen so far on this session (`SHUTDOWN`,
    /// `POWERDOWN`, ...), oldest first.
    pub fn events(&self) -> &[String] {
        &self.events
    }

    /// Runs `command` with optional `arguments` and returns its `return`
    /// value. Events that arrive in between are recorded in
    /// [`events`](Self::events).
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        let mut request = serde_json::json!({ "execute": command });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        let mut line = request.to_string();
        line.push('\n');
        let write = async {
            self.writer.write_all(line.as_bytes()).await?;
            self.writer.flush().await
        };
        match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(self.io(format!("sending {command}: {e}"))),
            Err(_) => {
                return Err(QmpError::Timeout {
                    path: self.path.clone(),
                    what: command.into(),
                    timeout: self.timeout,
                });
            }
        }
        loop {
            let message = self.read_message(command).await?;
            if let Some(event) = message.event {
                tracing::debug!(socket = %self.path.display(), event, "qmp event");
                self.events.push(event);
                continue;
            }
            if let Some(error) = message.error {
                return Err(QmpError::Command {
                    command: command.into(),
                    class: error.class,
                    desc: error.desc,
                });
            }
            if let Some(ret) = message.ret {
                return Ok(ret);
            }
        }
    }

    /// `query-status`: the VM's run state.
    pub async fn query_status(&mut self) -> Result<QmpStatus, QmpError> {
        let value = self.execute("query-status", None).await?;
        serde_json::from_value(value)
            .map_err(|e| self.protocol(&format!("query-status answer: {e}")))
    }

    /// `system_powerdown`: presses the ACPI power button. The guest decides
    /// what to do with it.
    pub async fn system_powerdown(&mut self) -> Result<(), QmpError> {
        self.execute("system_powerdown", None).await.map(drop)
    }

    /// `quit`: QEMU exits at once, without asking the guest.
    pub async fn quit(&mut self) -> Result<(), QmpError> {
        match self.execute("quit", None).await {
            Ok(_) => Ok(()),
            // QEMU may close the socket before its answer arrives.
            Err(QmpError::Io { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Reads one message, waiting at most the timeout.
    async fn read_message(&mut self, what: &str) -> Result<Message, QmpError> {
        let mut line = String::new();
        loop {
            line.clear();
            let read = tokio::time::timeout(self.timeout, self.reader.read_line(&mut line)).await;
            match read {
                Ok(Ok(0)) => return Err(self.io(format!("closed while awaiting {what}"))),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(self.io(format!("awaiting {what}: {e}"))),
                Err(_) => {
                    return Err(QmpError::Timeout {
                        path: self.path.clone(),
                        what: what.into(),
                        timeout: self.timeout,
                    });
                }
            }
            let trimmed = line.trim();
            if trimmed.is_empty() {
                continue;
            }
            return serde_json::from_str(trimmed)
                .map_err(|e| self.protocol(&format!("{e} in {trimmed:?}")));
        }
    }

    fn io(&self, reason: String) -> QmpError {
        QmpError::Io {
            path: self.path.clone(),
            reason,
        }
    }

    fn protocol(&self, message: &str) -> QmpError {
        QmpError::Protocol {
            path: self.path.clone(),
            message: message.into(),
        }
    }
}

/// `major.minor.micro` from the greeting's `version.qemu`.
fn version_of(greeting: &Value) -> String {
    let q = &greeting["version"]["qemu"];
    match (
        q["major"].as_u64(),
        q["minor"].as_u64(),
        q["micro"].as_u64(),
    ) {
        (Some(a), Some(b), Some(c)) => format!("{a}.{b}.{c}"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A fake QEMU that greets, then answers each command line with the
    /// next scripted line(s).
    async fn fake(script: Vec<Vec<&'static str>>) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        tokio::spawn(async move {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            let greeting = r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}"#;
            let _ = write.write_all(format!("{greeting}\r\n").as_bytes()).await;
            for answers in script {
                if lines.next_line().await.ok().flatten().is_none() {
                    return;
                }
                for answer in answers {
                    let _ = write.write_all(format!("{answer}\r\n").as_bytes()).await;
                }
            }
            // Hold the connection open until the client goes away.
            while let Ok(Some(_)) = lines.next_line().await {}
        });
        (dir, path)
    }

    #[tokio::test]
    async fn negotiates_and_queries_status_skipping_events() {
        let (_dir, path) = fake(vec![
            vec![r#"{"return": {}}"#],
            vec![
                r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESUME"}"#,
                r#"{"return": {"status": "running", "singlestep": false, "running": true}}"#,
            ],
        ])
        .await;
        let mut client = QmpClient::connect(&path, Duration::from_secs(2))
            .await
            .expect("connect");
        assert_eq!(client.version(), "7.2.22");
        let status = client.query_status().await.expect("status");
        assert_eq!(
            status,
            QmpStatus {
                running: true,
                status: "running".into()
            }
        );
        assert_eq!(client.events(), ["RESUME".to_string()]);
    }

    #[tokio::test]
    async fn command_errors_name_the_class_and_description() {
        let (_dir, path) = fake(vec![
            vec![r#"{"return": {}}"#],
            vec![r#"{"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}"#],
        ])
        .await;
        let mut client = QmpClient::connect(&path, Duration::from_secs(2))
            .await
            .expect("connect");
        let err = client.execute("nope", None).await.expect_err("error");
        assert_eq!(
            err.to_string(),
            "QMP command nope failed: CommandNotFound: The command nope has not been found"
        );
    }

    #[tokio::test]
    async fn a_silent_peer_times_out() {
        let (_dir, path) = fake(vec![vec![r#"{"return": {}}"#], vec![]]).await;
        let mut client = QmpClient::connect(&path, Duration::from_millis(200))
            .await
            .expect("connect");
        let err = client.query_status().await.expect_err("timeout");
        assert!(
            matches!(err, QmpError::Timeout { ref what, .. } if what == "query-status"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_missing_socket_is_a_connect_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = QmpClient::connect(&dir.path().join("none.sock"), Duration::from_secs(1))
            .await
            .expect_err("no socket");
        assert!(matches!(err, QmpError::Connect { .. }), "{err}");
    }
}
