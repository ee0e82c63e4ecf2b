//! The configuration files MCP reads, and what they share: one error type
//! for every file (naming the file, and the line and column of a TOML
//! mistake), the `line:col` of a byte offset, and the ranges numeric
//! settings must lie in.
//!
//! - [`cli`]: the CLI's `mcp.toml` (nodes, token, TLS, services directory),
//!   which the Python bindings read too.
//!
//! Every file key is optional unless said otherwise, and unknown keys are
//! errors that name the file, line and column. The agent's own file is
//! `mcp_agent::config`.

use std::path::{Path, PathBuf};

use toml::Spanned;

pub mod cli;
pub mod server;

pub use cli::{CliConfig, CliTls, NodeEntry, cli_config_path};

/// The port the agent listens on when the configuration does not say.
pub const DEFAULT_AGENT_PORT: u16 = 9444;

/// Why a file MCP reads (a configuration file, the token file) could not
/// be read, parsed or changed. Messages name the file, and the line and
/// column of a TOML mistake.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("{path}:{line}:{col}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// What is wrong.
        message: String,
    },
    /// A value is well-formed TOML but not acceptable.
    #[error("{path}: {message}")]
    Invalid {
        /// The file (or `<flags>`).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// No user directory could be found for the default paths.
    #[error("cannot determine the {0} directory; set HOME or XDG_* variables")]
    NoHome(&'static str),
}

/// Parses a TOML file of type `T`; a mistake is an error at its line and
/// column.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let (line, col, message) = toml_error_at(text, &e);
        ConfigError::Parse {
            path: path.to_path_buf(),
            line,
            col,
            message,
        }
    })
}

/// Where in `text` a TOML error is (1-based line and column) and what it
/// says, for `file:line:col: message` errors.
fn toml_error_at(text: &str, e: &toml::de::Error) -> (usize, usize, String) {
    let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
    (line, col, e.message().trim().to_string())
}

/// 1-based line and column (counted in characters) of byte `offset` in
/// `source`. Offsets inside a character or past the end are clamped.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// Reads a configuration file, naming it in the error.
pub fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The range a numeric setting of a configuration must lie in,
/// and its unit. Every such setting has one: a value far beyond any use (a
/// cooldown of centuries) would overflow the clock where it is added to a
/// time, so it is a configuration error, named with its place in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The smallest value allowed.
    pub min: u64,
    /// The largest value allowed.
    pub max: u64,
    /// What the number counts: `seconds`, `milliseconds`, `days`, `alerts`.
    pub unit: &'static str,
}

impl Bounds {
    /// The range `min..=max`, counted in `unit`.
    pub const fn new(min: u64, max: u64, unit: &'static str) -> Bounds {
        Bounds { min, max, unit }
    }
}

/// One day, in seconds.
pub const DAY: u64 = 86_400;

/// `[deploy] timeout` of the agent, and the longest wait a deploy request
/// may ask for, in seconds.
pub const DEPLOY_TIMEOUT_BOUNDS: Bounds = Bounds::new(1, DAY, "seconds");

/// Checks the number `value` of `key` in `text` (the file at `path`)
/// against `bounds`; a value outside is an error at its line and column.
pub fn bounded(
    path: &Path,
    text: &str,
    key: &str,
    value: &Spanned<u64>,
    bounds: Bounds,
) -> Result<u64, ConfigError> {
    let n = *value.get_ref();
    if (bounds.min..=bounds.max).contains(&n) {
        return Ok(n);
    }
    Err(ConfigError::at(
        path,
        text,
        value.span(),
        format!(
            "{key} = {n}: must be between {} and {} {}",
            bounds.min, bounds.max, bounds.unit
        ),
    ))
}

impl ConfigError {
    /// An error about the value at `span` of `text` (the file at `path`),
    /// reported at its line and column.
    pub fn at(
        path: &Path,
        text: &str,
        span: std::ops::Range<usize>,
        message: String,
    ) -> ConfigError {
        let (line, col) = line_col(text, span.start);
        ConfigError::Parse {
            path: path.to_path_buf(),
            line,
            col,
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters_from_one() {
        let s = "ab\ncdé f\n";
        assert_eq!(line_col(s, 0), (1, 1));
        assert_eq!(line_col(s, 1), (1, 2));
        assert_eq!(line_col(s, 3), (2, 1));
        // 'é' is two bytes; the space after it is the 4th character.
        assert_eq!(line_col(s, 7), (2, 4));
        assert_eq!(line_col(s, 6), (2, 3));
        assert_eq!(line_col(s, s.len()), (3, 1));
        assert_eq!(line_col(s, 999), (3, 1));
        assert_eq!(line_col("", 0), (1, 1));
    }
}
