//! Loading PEM certificates and keys, with errors that name the file.

use std::path::Path;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::{TlsError, provider};

/// Reads a whole file; the error names it.
pub(super) fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// A PEM syntax error, naming the file.
fn pem_error(path: &Path, e: rustls::pki_types::pem::Error) -> TlsError {
    TlsError::Pem {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

/// Reads every `CERTIFICATE` section of the PEM file at `path`, in order
/// (a chain: the end-entity certificate first). Fails when there is none.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) of the PEM file at
/// `path`.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_file(path)?;
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Ok(key),
        Err(rustls::pki_types::pem::Error::NoItemsFound) => Err(TlsError::NoKey {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(pem_error(path, e)),
    }
}

/// A root store holding every certificate of the PEM file at `path`.
pub(super) fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::BadCertificate {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// Checks that the first certificate of `certs` belongs to `key`.
pub(super) fn certified_key(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    let mismatch = |e: rustls::Error| TlsError::CertKeyMismatch {
        cert: cert_path.to_path_buf(),
        key: key_path.to_path_buf(),
        detail: e.to_string(),
    };
    let signing_key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(mismatch)?;
    let certified = CertifiedKey::new(certs, signing_key);
    certified.keys_match().map_err(mismatch)?;
    Ok(certified)
}

// ---------------------------------------------------------------------------
// Server side
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::dev::ensure_dev_pki;

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("agent.pem");
        let e = load_certs(&missing).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}: cannot read: ", missing.display())),
            "{e}"
        );

        let pki = ensure_dev_pki(dir.path(), &[]).unwrap();
        let e = load_certs(&pki.ca_key).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("{}: no PEM certificate found", pki.ca_key.display())
        );
        let e = load_key(&pki.ca_cert).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("{}: no private key found", pki.ca_cert.display())
        );

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\n!!!\n").unwrap();
        let e = load_certs(&garbage).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}: invalid PEM", garbage.display())),
            "{e}"
        );
    }
}
