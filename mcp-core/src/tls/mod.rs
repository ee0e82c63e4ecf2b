//! TLS for the agent's gRPC port and the client.
//!
//! This module owns everything TLS in MCP:
//!
//! - [`pem`]: loading PEM certificates and keys ([`load_certs`],
//!   [`load_key`]) with errors that name the file ([`TlsError`]);
//! - [`server`]: a server's rustls configuration ([`server_config`]) and
//!   the streams of accepted connections handed to tonic
//!   ([`tls_incoming`], [`plain_incoming`]), which survive garbage, silent
//!   clients and accept errors;
//! - [`client`]: the client's rustls configuration ([`client_config`]) and
//!   a connector for tonic ([`TlsConnector`]) whose errors say in one
//!   sentence what went wrong ([`ConnectError`]);
//! - [`dev`]: a small development PKI: a CA and a server certificate for
//!   `mcp-agent --dev` ([`ensure_dev_pki`]) and certificates signed by an
//!   existing CA ([`issue_cert`]).
//!
//! Every rustls configuration is built with the `ring` provider explicitly;
//! nothing depends on a process-wide default provider.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;

pub mod admit;
pub mod client;
pub mod dev;
pub mod pem;
pub mod server;

pub use client::{
    ClientTlsFiles, ConnectError, ConnectErrorKind, DEFAULT_CLIENT_AUTH_WAIT, TlsConnector,
    client_config,
};
pub use dev::{DevPki, ensure_dev_pki, issue_cert};
pub use pem::{load_certs, load_key};
pub use server::{
    DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_PENDING_HANDSHAKES, ServerTlsFiles, plain_incoming,
    server_config, tls_incoming,
};

/// The ALPN protocol spoken over TLS: gRPC is HTTP/2.
const ALPN_H2: &[u8] = b"h2";

/// Why TLS material could not be loaded or made. Messages name the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A file could not be written.
    #[error("{}: cannot write: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A directory could not be created.
    #[error("{}: cannot create directory: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A file is not well-formed PEM.
    #[error("{}: invalid PEM: {detail}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// A file has no `CERTIFICATE` section.
    #[error("{}: no PEM certificate found", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A file has no private key section (PKCS#8, PKCS#1 or SEC1).
    #[error("{}: no private key found", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// A certificate cannot be used (not parseable, or not a trust anchor).
    #[error("{}: not a usable certificate: {detail}", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// A certificate chain does not belong to its private key, or the key
    /// cannot be used.
    #[error("{}: not a valid certificate chain for this key ({}): {detail}", cert.display(), key.display())]
    CertKeyMismatch {
        /// The certificate chain file.
        cert: PathBuf,
        /// The private key file.
        key: PathBuf,
        /// What rustls reported.
        detail: String,
    },
    /// A client certificate was configured without its key, or the reverse.
    #[error("client TLS: {} is set but the client {missing} is not; set both or neither", given.display())]
    IncompleteClientAuth {
        /// The file that is set.
        given: PathBuf,
        /// What is missing: `"key"` or `"certificate"`.
        missing: &'static str,
    },
    /// Only half of a key pair exists on disk.
    #[error("{}: exists but {} is missing; remove it to generate a new pair", present.display(), missing.display())]
    IncompletePair {
        /// The file that exists.
        present: PathBuf,
        /// The file that does not.
        missing: PathBuf,
    },
    /// A name for a certificate is neither a DNS name nor an IP address.
    #[error("invalid certificate name {name:?}: {detail}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it is invalid.
        detail: String,
    },
    /// A certificate could not be generated or signed.
    #[error("cannot generate certificate: {0}")]
    Generate(String),
    /// rustls rejected the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The crypto provider used for every configuration in MCP.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The permission bits of `path` (tests check what is written private).
#[cfg(test)]
fn file_mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
