//! `metacircular_mcp._native`: the Python bindings of MCP's client and
//! service definitions, imported through the `metacircular_mcp` package.
//!
//! Everything here is a thin shell over `mcp-core`: [`client::Client`]
//! wraps the Rust client the `mcp` CLI uses, [`servicedef`] the definition
//! parser, and [`error`] maps their errors onto Python exceptions in one
//! place. Calls block on one process-wide tokio runtime
//! ([`runtime`]) with the GIL released.

mod client;
mod error;
mod logs;
mod runtime;
mod servicedef;
mod types;

use pyo3::prelude::*;

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<client::Client>()?;
    m.add_class::<logs::LogStream>()?;
    m.add_class::<servicedef::ServiceDef>()?;
    m.add_class::<servicedef::Component>()?;
    m.add_class::<servicedef::Route>()?;
    m.add_class::<servicedef::HealthCheck>()?;
    m.add_class::<types::ActionResult>()?;
    m.add_class::<types::ComponentResult>()?;
    m.add_class::<types::ComponentStatus>()?;
    m.add_class::<types::Instance>()?;
    m.add_class::<types::StatusReport>()?;
    m.add_class::<types::PsReport>()?;
    m.add_class::<types::ServiceSummary>()?;
    m.add_class::<types::Event>()?;
    m.add_class::<types::Revision>()?;
    m.add_class::<types::FieldChange>()?;
    m.add_class::<types::PlannedComponent>()?;
    m.add_class::<types::PlannedService>()?;
    m.add_class::<types::SyncResult>()?;
    m.add_class::<types::AdoptResult>()?;
    m.add_class::<types::NodeInfo>()?;
    m.add_class::<types::Resources>()?;
    m.add_class::<types::FleetNode>()?;
    m.add_class::<types::Placement>()?;
    m.add_class::<types::FileEntry>()?;
    m.add_class::<types::Transfer>()?;
    m.add_class::<types::TransferResult>()?;
    m.add_class::<types::LogLine>()?;
    m.add_class::<types::Node>()?;
    m.add_class::<types::Config>()?;
    m.add_function(wrap_pyfunction!(servicedef::parse_service, m)?)?;
    m.add_function(wrap_pyfunction!(servicedef::load_services, m)?)?;
    m.add_function(wrap_pyfunction!(servicedef::set_image, m)?)?;
    m.add_function(wrap_pyfunction!(servicedef::set_active, m)?)?;
    m.add_function(wrap_pyfunction!(client::load_config, m)?)?;
    m.add("McpError", py.get_type::<error::McpError>())?;
    m.add(
        "AuthenticationError",
        py.get_type::<error::AuthenticationError>(),
    )?;
    m.add(
        "PermissionDeniedError",
        py.get_type::<error::PermissionDeniedError>(),
    )?;
    m.add("NotFoundError", py.get_type::<error::NotFoundError>())?;
    m.add(
        "InvalidArgumentError",
        py.get_type::<error::InvalidArgumentError>(),
    )?;
    m.add(
        "InvalidDefinitionError",
        py.get_type::<error::InvalidDefinitionError>(),
    )?;
    m.add("UnavailableError", py.get_type::<error::UnavailableError>())?;
    m.add("ConflictError", py.get_type::<error::ConflictError>())?;
    m.add("ConfigError", py.get_type::<error::ConfigError>())?;
    m.add("DeployError", py.get_type::<error::DeployError>())?;
    m.add("TransferError", py.get_type::<error::TransferError>())?;
    Ok(())
}
