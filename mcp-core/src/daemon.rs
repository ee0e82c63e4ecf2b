//! What the MCP daemons (`mcp-agent`, `mcp-master`) share around their
//! libraries: their async runtime, log output, the signals that stop them,
//! what they tell their service manager (readiness, status, the watchdog,
//! stopping: systemd's notify protocol), and the commands that manage
//! their token files.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::auth::Role;
use crate::auth::local::TokenStore;
use crate::config::ConfigError;

/// Log output format of a daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The data directory `--dev` daemons use: `$XDG_DATA_HOME/mcp`.
pub fn dev_data_dir() -> Result<std::path::PathBuf, ConfigError> {
    dirs::data_dir()
        .map(|d| d.join("mcp"))
        .ok_or(ConfigError::NoHome("data"))
}

/// The runtime a daemon serves on: two worker threads (a daemon's work is
/// mostly waiting on the network, podman and disks) and at most
/// `max_blocking_threads` threads for blocking work (SQLite, files), which
/// are made as needed and end after ten idle seconds.
pub fn runtime(max_blocking_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(max_blocking_threads)
        .enable_all()
        .build()
}

/// Sends `tracing` output to standard error in `format`, filtered by
/// `RUST_LOG` (default `info`), in colour only on a terminal. When standard
/// error is the journal (systemd's `JOURNAL_STREAM` names it), text lines
/// carry no time of their own: the journal stamps each.
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text if stderr_is_the_journal() => builder.without_time().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Whether standard error is the stream `JOURNAL_STREAM` (`DEVICE:INODE`)
/// names: set by systemd for a service's output, and inherited by
/// processes whose output goes elsewhere, hence the comparison.
fn stderr_is_the_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stat) = rustix::fs::fstat(std::io::stderr()) else {
        return false;
    };
    journal_stream_is(&stream.to_string_lossy(), stat.st_dev, stat.st_ino)
}

/// Whether `JOURNAL_STREAM`'s value names the file of device `dev` and
/// inode `ino`.
fn journal_stream_is(value: &str, dev: u64, ino: u64) -> bool {
    value
        .split_once(':')
        .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
        == Some((dev, ino))
}

/// Resolves at the first SIGTERM or SIGINT (never, if their handlers
/// cannot be installed: the daemon then runs until killed).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down");
    notify_stopping();
}

/// Sends `states` to the service manager over `$NOTIFY_SOCKET` (nothing
/// without it); a failure is only logged.
fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "cannot notify the service manager");
    }
}

/// Tells the service manager the daemon serves (`READY=1`), and what it is
/// doing (`STATUS=`). Sent once everything it needs to answer is up.
pub fn notify_ready(status: &str) {
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

/// Tells the service manager what the daemon is doing now (`STATUS=`,
/// shown by `systemctl status`).
pub fn notify_status(status: &str) {
    notify(&[sd_notify::NotifyState::Status(status)]);
}

/// Tells the service manager the daemon is stopping (`STOPPING=1`).
pub fn notify_stopping() {
    notify(&[sd_notify::NotifyState::Stopping]);
}

/// The service manager's watchdog interval (`WATCHDOG_USEC`, for this
/// process), when it asks for one.
pub fn watchdog_interval() -> Option<std::time::Duration> {
    sd_notify::watchdog_enabled()
}

/// Keeps the service manager's watchdog fed while the daemon works: every
/// half of `interval` ([`watchdog_interval`]) `alive` runs on a blocking
/// thread, and `WATCHDOG=1` is sent only when it answered true within that
/// half. `alive` is to prove the daemon does its work (a query of its
/// database, say), not merely that a timer fires: a daemon wedged there (or
/// out of blocking threads) is not fed, and the manager restarts it. Runs
/// for ever.
pub async fn watchdog(
    interval: std::time::Duration,
    alive: impl Fn() -> bool + Send + Sync + 'static,
) {
    let alive = std::sync::Arc::new(alive);
    let half = interval / 2;
    tracing::info!(
        interval_ms = interval.as_millis() as u64,
        "service manager watchdog on"
    );
    let mut ticks = tokio::time::interval(half);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let check = alive.clone();
        let answer = tokio::task::spawn_blocking(move || check());
        let answer = async { answer.await.unwrap_or(false) };
        match tokio::time::timeout(half, answer).await {
            Ok(true) => notify(&[sd_notify::NotifyState::Watchdog]),
            Ok(false) => {
                tracing::warn!("watchdog: the liveness check failed; not feeding the watchdog")
            }
            Err(_) => tracing::warn!(
                timeout_ms = half.as_millis() as u64,
                "watchdog: the liveness check did not answer in time; not feeding the watchdog"
            ),
        }
    }
}

/// A `token` subcommand of a daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCommand {
    /// Make a token, print it once, store its hash.
    Add {
        /// Who or what it is for.
        name: String,
        /// What it may do.
        role: Role,
        /// When it stops working; never when `None`.
        expires: Option<SystemTime>,
    },
    /// Store the hash of a token made elsewhere, read from a file (the
    /// master's token for agents, say); the file is not changed.
    Import {
        /// Who or what it is for.
        name: String,
        /// What it may do.
        role: Role,
        /// The file holding the token.
        file: std::path::PathBuf,
    },
    /// List the stored tokens (never the tokens themselves).
    List,
    /// Remove a token.
    Remove {
        /// Its name.
        name: String,
    },
}

/// Runs `command` on `store`: the new token on standard output (once, and
/// nowhere else), everything else on standard error, the list as a table
/// on standard output.
pub fn token_command(store: &TokenStore, command: TokenCommand) -> Result<(), ConfigError> {
    match command {
        TokenCommand::Add {
            name,
            role,
            expires,
        } => {
            let token = store.add(&name, role, expires)?;
            eprintln!(
                "token {name:?} ({role}) stored as a hash in {}; it is shown only now:",
                store.path().display()
            );
            println!("{token}");
        }
        TokenCommand::Import { name, role, file } => {
            let token = crate::config::read(&file)?;
            store.add_existing(&name, role, token.trim())?;
            eprintln!(
                "token {name:?} ({role}) from {} stored as a hash in {}",
                file.display(),
                store.path().display()
            );
        }
        TokenCommand::List => {
            let tokens = store.list()?;
            if tokens.is_empty() {
                eprintln!("no tokens in {}", store.path().display());
            }
            println!("{:<24} {:<9} {:<21} EXPIRES", "NAME", "ROLE", "CREATED");
            for t in tokens {
                println!(
                    "{:<24} {:<9} {:<21} {}",
                    t.name,
                    t.role,
                    t.created,
                    t.expires.as_deref().unwrap_or("never")
                );
            }
        }
        TokenCommand::Remove { name } => {
            if !store.remove(&name)? {
                return Err(ConfigError::Invalid {
                    path: store.path().to_path_buf(),
                    message: format!("no token named {name:?}"),
                });
            }
            eprintln!("removed token {name:?}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::journal_stream_is;

    #[test]
    fn journal_stream_names_one_file() {
        assert!(journal_stream_is("8:12345", 8, 12345));
        assert!(!journal_stream_is("8:12345", 8, 12346));
        assert!(!journal_stream_is("9:12345", 8, 12345));
        assert!(!journal_stream_is("", 8, 12345));
        assert!(!journal_stream_is("8", 8, 12345));
        assert!(!journal_stream_is("x:y", 8, 12345));
    }
}
