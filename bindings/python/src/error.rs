//! The exception classes and the one place errors of the Rust client,
//! the definition parser and file transfers become Python exceptions.
//!
//! Every exception is a [`McpError`] and carries `message` (the agent's or
//! parser's own words), `code` (the gRPC status name, e.g. `NOT_FOUND`, or
//! `None` for errors raised on this side) and `node`.

use mcp_core::client::ClientError;
use mcp_core::servicedef::{REQUEST_ORIGIN, ServiceDefError};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyOSError};
use pyo3::prelude::*;
use pyo3::types::PyType;

use crate::types::{ActionResult, SyncResult};
use mcp_core::client::transfer::TransferError as Transfer;

create_exception!(
    metacircular_mcp,
    McpError,
    PyException,
    "Base class of every error MCP raises."
);
create_exception!(
    metacircular_mcp,
    AuthenticationError,
    McpError,
    "The agent did not accept the token (missing, unknown, expired)."
);
create_exception!(
    metacircular_mcp,
    PermissionDeniedError,
    McpError,
    "The token is valid but its role does not allow the call."
);
create_exception!(
    metacircular_mcp,
    NotFoundError,
    McpError,
    "The service, component or file does not exist on the node."
);
create_exception!(
    metacircular_mcp,
    InvalidArgumentError,
    McpError,
    "An argument was refused: a bad name, path or value."
);
create_exception!(
    metacircular_mcp,
    InvalidDefinitionError,
    InvalidArgumentError,
    "A service definition is invalid; `file`, `line` and `column` say where."
);
create_exception!(
    metacircular_mcp,
    UnavailableError,
    McpError,
    "The agent could not be reached, or TLS with it failed."
);
create_exception!(
    metacircular_mcp,
    ConflictError,
    McpError,
    "The node's state does not allow the call (e.g. an image that cannot be pulled, a stopped service)."
);
create_exception!(
    metacircular_mcp,
    ConfigError,
    McpError,
    "The CLI configuration, a token file or a TLS file cannot be used."
);
create_exception!(
    metacircular_mcp,
    DeployError,
    McpError,
    "The agent answered but one or more components failed; `result` holds the whole answer."
);
create_exception!(
    metacircular_mcp,
    TransferError,
    McpError,
    "A file arrived damaged or the transfer broke its protocol; nothing was replaced."
);

/// The answer attached to a `DeployError`.
pub(crate) enum Failed {
    /// Of deploy, stop, start, restart or remove.
    Action(ActionResult),
    /// Of sync.
    Sync(SyncResult),
}

/// Everything a call can fail with, before it becomes an exception.
pub(crate) enum Error {
    /// The agent refused or failed the call, or could not be reached.
    Client(ClientError),
    /// A definition could not be read or is invalid.
    Definition(ServiceDefError),
    /// A file transfer failed.
    Transfer(mcp_core::client::transfer::TransferError),
    /// The CLI configuration (or a file it names) is unusable.
    Config(mcp_core::config::ConfigError),
    /// Components failed; the answer is attached.
    Failed(String, Failed),
    /// A bad argument, found on this side.
    Invalid(String),
    /// A Python exception (e.g. `KeyboardInterrupt`) to pass on as is.
    Python(PyErr),
}

impl From<ClientError> for Error {
    fn from(e: ClientError) -> Self {
        Error::Client(e)
    }
}

impl From<ServiceDefError> for Error {
    fn from(e: ServiceDefError) -> Self {
        Error::Definition(e)
    }
}

impl From<mcp_core::client::transfer::TransferError> for Error {
    fn from(e: mcp_core::client::transfer::TransferError) -> Self {
        match e {
            mcp_core::client::transfer::TransferError::Client(c) => Error::Client(c),
            mcp_core::client::transfer::TransferError::Invalid(text) => Error::Invalid(text),
            other => Error::Transfer(other),
        }
    }
}

impl From<mcp_core::config::ConfigError> for Error {
    fn from(e: mcp_core::config::ConfigError) -> Self {
        Error::Config(e)
    }
}

impl From<mcp_core::ops::OpsError> for Error {
    fn from(e: mcp_core::ops::OpsError) -> Self {
        use mcp_core::ops::OpsError;
        match e {
            OpsError::Config(e) => e.into(),
            OpsError::Definition(e) => e.into(),
            OpsError::Client(e) => e.into(),
            OpsError::Transfer(e) => e.into(),
            other @ (OpsError::Unresolved { .. } | OpsError::Restore { .. }) => {
                Error::Invalid(other.to_string())
            }
        }
    }
}

impl From<PyErr> for Error {
    fn from(e: PyErr) -> Self {
        Error::Python(e)
    }
}

impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        Python::attach(|py| to_exception(py, e))
    }
}

/// An exception of class `class` whose `str()` is `text`, with the common
/// attributes set.
fn exception(
    py: Python<'_>,
    class: Bound<'_, PyType>,
    text: String,
    message: &str,
    code: Option<&str>,
    node: Option<&str>,
) -> PyErr {
    let err = PyErr::from_type(class, text);
    let value = err.value(py);
    // Setting attributes on a fresh exception instance cannot fail.
    let _ = value.setattr("message", message);
    let _ = value.setattr("code", code);
    let _ = value.setattr("node", node);
    err
}

/// An exception for an error found on this side: no gRPC code, no node.
fn local(py: Python<'_>, class: Bound<'_, PyType>, text: String) -> PyErr {
    exception(py, class, text.clone(), &text, None, None)
}

fn to_exception(py: Python<'_>, e: Error) -> PyErr {
    match e {
        Error::Python(err) => err,
        Error::Client(err) => client_exception(py, err),
        Error::Definition(err) => definition_exception(py, &err),
        Error::Config(err) => local(py, py.get_type::<ConfigError>(), err.to_string()),
        Error::Invalid(text) => local(py, py.get_type::<InvalidArgumentError>(), text),
        Error::Failed(text, result) => {
            let node = match &result {
                Failed::Action(r) => r.node.clone(),
                Failed::Sync(r) => r.node.clone(),
            };
            let err = exception(
                py,
                py.get_type::<DeployError>(),
                text.clone(),
                &text,
                None,
                Some(&node),
            );
            let value = err.value(py);
            let _ = match result {
                Failed::Action(r) => value.setattr("result", r),
                Failed::Sync(r) => value.setattr("result", r),
            };
            err
        }
        Error::Transfer(Transfer::Local { path, source }) => {
            os_error(&source, path.display().to_string())
        }
        // Client and Invalid became Error::Client and Error::Invalid on the
        // way in (`From<TransferError>`).
        Error::Transfer(other) => local(py, py.get_type::<TransferError>(), other.to_string()),
    }
}

/// `OSError(errno, strerror, filename)`, which Python turns into the
/// matching subclass (`FileNotFoundError`, `PermissionError`, ...).
fn os_error(source: &std::io::Error, filename: String) -> PyErr {
    let text = source.to_string();
    let reason = match text.find(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    PyOSError::new_err((source.raw_os_error().unwrap_or(0), reason, filename))
}

/// A definition error: `InvalidDefinitionError` with where it is, or
/// `OSError` when the file could not be read.
fn definition_exception(py: Python<'_>, err: &ServiceDefError) -> PyErr {
    if let ServiceDefError::Io { file, source, .. } = err
        && source.raw_os_error().is_some()
    {
        return os_error(source, file.clone());
    }
    let e = exception(
        py,
        py.get_type::<InvalidDefinitionError>(),
        err.to_string(),
        err.message(),
        None,
        None,
    );
    set_location(py, &e, err.file(), err.line(), err.col());
    e
}

/// Sets where an `InvalidDefinitionError` points.
fn set_location(py: Python<'_>, e: &PyErr, file: &str, line: Option<usize>, col: Option<usize>) {
    let value = e.value(py);
    let _ = value.setattr("file", file);
    let _ = value.setattr("line", line);
    let _ = value.setattr("column", col);
}

fn client_exception(py: Python<'_>, err: ClientError) -> PyErr {
    let text = err.to_string();
    let code = err.code().map(mcp_core::client::code_name);
    let (class, message, node) = match &err {
        ClientError::Connect { node, reason, .. } => (
            py.get_type::<UnavailableError>(),
            reason.clone(),
            Some(node.clone()),
        ),
        ClientError::Tls { node, reason, .. } => (
            py.get_type::<UnavailableError>(),
            reason.clone(),
            Some(node.clone()),
        ),
        ClientError::Address { reason, .. } => {
            (py.get_type::<InvalidArgumentError>(), reason.clone(), None)
        }
        ClientError::TlsSettings(e) => (py.get_type::<ConfigError>(), e.to_string(), None),
        ClientError::Unauthenticated { node, message, .. } => (
            py.get_type::<AuthenticationError>(),
            message.clone(),
            Some(node.clone()),
        ),
        ClientError::PermissionDenied { node, message } => (
            py.get_type::<PermissionDeniedError>(),
            message.clone(),
            Some(node.clone()),
        ),
        ClientError::Rpc {
            node,
            code,
            message,
        } => {
            use tonic::Code;
            let class = match code {
                Code::NotFound => py.get_type::<NotFoundError>(),
                Code::InvalidArgument if message.starts_with(REQUEST_ORIGIN) => {
                    let e = exception(
                        py,
                        py.get_type::<InvalidDefinitionError>(),
                        text,
                        message,
                        mcp_core::client::code_name(*code).into(),
                        Some(node),
                    );
                    set_location(py, &e, REQUEST_ORIGIN, None, None);
                    return e;
                }
                Code::InvalidArgument | Code::OutOfRange => py.get_type::<InvalidArgumentError>(),
                Code::Unavailable | Code::DeadlineExceeded => py.get_type::<UnavailableError>(),
                Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => {
                    py.get_type::<ConflictError>()
                }
                Code::Unauthenticated => py.get_type::<AuthenticationError>(),
                Code::PermissionDenied => py.get_type::<PermissionDeniedError>(),
                Code::DataLoss => py.get_type::<TransferError>(),
                _ => py.get_type::<McpError>(),
            };
            (class, message.clone(), Some(node.clone()))
        }
    };
    exception(py, class, text, &message, code, node.as_deref())
}

/// Raises `InvalidDefinitionError` for `err`.
pub(crate) fn definition_error(err: ServiceDefError) -> PyErr {
    Python::attach(|py| definition_exception(py, &err))
}
