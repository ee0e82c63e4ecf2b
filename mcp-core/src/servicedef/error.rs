//! [`ServiceDefError`]: why a definition could not be read, parsed or edited.

use std::io;
use std::path::Path;

use super::raw::{Issue, Loc};
use crate::config::line_col;

/// The file name given to errors in definitions that came in a request.
pub const REQUEST_ORIGIN: &str = "<request>";

/// Why a service definition could not be read, parsed, validated or edited.
///
/// Errors in a file point at the offending key or value and display as
/// `<file>:<line>:<col>: <message>`, e.g.
/// `metacrypt.toml:9:12: invalid port "8080:abc": container port "abc" is not a number`.
/// Errors in a definition received over the wire (see
/// [`ServiceDef::from_proto`](super::ServiceDef::from_proto)) have no
/// position; their message starts with the field path instead:
/// `<request>: components[1].ports[0]: invalid port ...`.
#[derive(Debug, thiserror::Error)]
pub enum ServiceDefError {
    /// The file's text is invalid: TOML syntax, an unknown key, a wrong type
    /// or a bad value.
    #[error("{file}:{line}:{col}: {message}")]
    Invalid {
        /// The file, as given.
        file: String,
        /// 1-based line of the offending text.
        line: usize,
        /// 1-based column (in characters) of the offending text.
        col: usize,
        /// What is wrong, lower-case, naming the bad value.
        message: String,
    },
    /// A definition received in a request is invalid.
    #[error("{REQUEST_ORIGIN}: {message}")]
    InvalidRequest {
        /// Path of the offending field, e.g. `components[1].ports[0]`.
        field: String,
        /// The field path, `: `, and what is wrong.
        message: String,
    },
    /// The file could not be read or written.
    #[error("{file}: {message}: {source}")]
    Io {
        /// The file, as given.
        file: String,
        /// What was being done, e.g. `cannot read service definition`.
        message: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl ServiceDefError {
    /// The file the error is about (`<request>` for a request).
    pub fn file(&self) -> &str {
        match self {
            ServiceDefError::Invalid { file, .. } | ServiceDefError::Io { file, .. } => file,
            ServiceDefError::InvalidRequest { .. } => REQUEST_ORIGIN,
        }
    }

    /// 1-based line of the offending text, when the error is about a file's text.
    pub fn line(&self) -> Option<usize> {
        match self {
            ServiceDefError::Invalid { line, .. } => Some(*line),
            _ => None,
        }
    }

    /// 1-based column (in characters) of the offending text, when the error
    /// is about a file's text.
    pub fn col(&self) -> Option<usize> {
        match self {
            ServiceDefError::Invalid { col, .. } => Some(*col),
            _ => None,
        }
    }

    /// What is wrong, without the location prefix (for a request, starting
    /// with the field path).
    pub fn message(&self) -> &str {
        match self {
            ServiceDefError::Invalid { message, .. }
            | ServiceDefError::InvalidRequest { message, .. }
            | ServiceDefError::Io { message, .. } => message,
        }
    }

    /// Whether the error is about reading or writing the file rather than
    /// about its content.
    pub fn is_io(&self) -> bool {
        matches!(self, ServiceDefError::Io { .. })
    }

    /// An issue found in `source`, read from `origin`.
    pub(crate) fn from_issue(origin: &Path, source: &str, issue: Issue) -> ServiceDefError {
        match issue.loc {
            Loc::Span(span) => {
                let (line, col) = line_col(source, span.start);
                ServiceDefError::Invalid {
                    file: origin.display().to_string(),
                    line,
                    col,
                    message: issue.message,
                }
            }
            Loc::Field(field) => ServiceDefError::InvalidRequest {
                message: format!("{field}: {}", issue.message),
                field,
            },
        }
    }

    pub(crate) fn io(path: &Path, message: &str, source: io::Error) -> ServiceDefError {
        ServiceDefError::Io {
            file: path.display().to_string(),
            message: message.to_string(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_forms() {
        let e = ServiceDefError::Invalid {
            file: "a.toml".into(),
            line: 3,
            col: 9,
            message: "bad".into(),
        };
        assert_eq!(e.to_string(), "a.toml:3:9: bad");
        assert_eq!(
            (e.file(), e.line(), e.col(), e.message()),
            ("a.toml", Some(3), Some(9), "bad")
        );
        let e = ServiceDefError::from_issue(
            Path::new("x"),
            "",
            Issue::new(&Loc::Field("components[1].ports[0]".into()), "invalid port"),
        );
        assert_eq!(
            e.to_string(),
            "<request>: components[1].ports[0]: invalid port"
        );
        assert_eq!(e.file(), "<request>");
        assert_eq!(e.line(), None);
        assert_eq!(e.message(), "components[1].ports[0]: invalid port");
    }
}
