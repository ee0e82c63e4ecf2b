//! A small development PKI: a CA and a server certificate for
//! `mcp-agent --dev`, and certificates signed by an existing CA.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;

use super::client::server_name_for;
use super::pem::{certified_key, load_certs, load_key, load_roots, read_file};
use super::{TlsError, provider};

/// Validity of the development CA.
const DEV_CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Validity of issued and development server certificates.
const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// A development server certificate expiring within this is replaced.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Certificates are valid from this long before their creation, so that a
/// peer whose clock is slightly behind accepts them.
const BACKDATE: Duration = Duration::from_secs(3600);

/// Common name of the development CA.
const DEV_CA_NAME: &str = "MCP development CA";

/// Names always covered by the development server certificate.
const DEV_DEFAULT_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Development PKI for `mcp-agent --dev` and tests: where the CA and the
/// server certificate are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevPki {
    /// The CA certificate (PEM): give it to clients as their `ca_cert`.
    pub ca_cert: PathBuf,
    /// The CA's private key (PEM, mode 0600).
    pub ca_key: PathBuf,
    /// The agent's certificate (PEM), signed by the CA.
    pub server_cert: PathBuf,
    /// The agent's private key (PEM, mode 0600).
    pub server_key: PathBuf,
}

/// Makes sure `dir` holds a development CA and a server certificate for
/// `names`, creating what is missing.
///
/// `dir` is created with mode 0700 if missing. `ca.pem`/`ca.key` are reused
/// when present, else a self-signed CA ("MCP development CA", 10 years) is
/// generated. `server.pem`/`server.key` are kept when they belong together,
/// are signed by that CA, stay valid for the next 30 days and cover every
/// name in `names` plus `localhost`, `127.0.0.1` and `::1` (DNS names or IP
/// literals, as subject alternative names); otherwise they are generated
/// anew (valid one year). Every file is written atomically with mode 0600.
pub fn ensure_dev_pki(dir: &Path, names: &[String]) -> Result<DevPki, TlsError> {
    create_private_dir(dir)?;
    let pki = DevPki {
        ca_cert: dir.join("ca.pem"),
        ca_key: dir.join("ca.key"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
    };
    let mut all_names: Vec<String> = Vec::new();
    for name in DEV_DEFAULT_NAMES
        .iter()
        .map(|s| s.to_string())
        .chain(names.iter().cloned())
    {
        let name = normalize_name(&name)?;
        if !all_names.contains(&name) {
            all_names.push(name);
        }
    }

    match (pki.ca_cert.exists(), pki.ca_key.exists()) {
        (true, true) => {}
        (false, false) => {
            generate_ca(&pki.ca_cert, &pki.ca_key)?;
            tracing::info!(path = %pki.ca_cert.display(), "generated a development CA");
        }
        (true, false) => {
            return Err(TlsError::IncompletePair {
                present: pki.ca_cert.clone(),
                missing: pki.ca_key.clone(),
            });
        }
        (false, true) => {
            return Err(TlsError::IncompletePair {
                present: pki.ca_key.clone(),
                missing: pki.ca_cert.clone(),
            });
        }
    }

    match server_cert_problem(&pki, &all_names)? {
        None => {}
        Some(why) => {
            let common_name = names
                .first()
                .cloned()
                .unwrap_or_else(|| "localhost".to_string());
            issue_cert(
                &pki.ca_cert,
                &pki.ca_key,
                &common_name,
                &all_names,
                false,
                &pki.server_cert,
                &pki.server_key,
            )?;
            tracing::info!(path = %pki.server_cert.display(), names = ?all_names, reason = %why, "generated a development server certificate");
        }
    }
    Ok(pki)
}

/// Why the development server certificate must be (re)generated, or `None`
/// when it can be kept. Errors only when the CA itself is unusable.
fn server_cert_problem(pki: &DevPki, names: &[String]) -> Result<Option<String>, TlsError> {
    let roots = load_roots(&pki.ca_cert)?;
    if !pki.server_cert.exists() || !pki.server_key.exists() {
        return Ok(Some("missing".into()));
    }
    let (certs, key) = match (load_certs(&pki.server_cert), load_key(&pki.server_key)) {
        (Ok(c), Ok(k)) => (c, k),
        (Err(e), _) | (_, Err(e)) => return Ok(Some(e.to_string())),
    };
    if let Err(e) = certified_key(certs.clone(), key, &pki.server_cert, &pki.server_key) {
        return Ok(Some(e.to_string()));
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TlsError::BadCertificate {
            path: pki.ca_cert.clone(),
            detail: e.to_string(),
        })?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let (end_entity, intermediates) = match certs.split_first() {
        Some(split) => split,
        None => return Ok(Some("no certificate".into())),
    };
    for name in names {
        let server_name = server_name_for(name)?;
        for at in [now, now + RENEW_BEFORE] {
            if let Err(e) = verifier.verify_server_cert(
                end_entity,
                intermediates,
                &server_name,
                &[],
                UnixTime::since_unix_epoch(at),
            ) {
                return Ok(Some(format!("not valid for {name} within 30 days: {e}")));
            }
        }
    }
    Ok(None)
}

/// Issues a certificate signed by the CA at (`ca_cert`, `ca_key`) for
/// `names` (DNS names or IP literals, as subject alternative names) with
/// subject common name `common_name`, valid for one year. When `client` is
/// true it is a client certificate (extended key usage ClientAuth), else a
/// server certificate (ServerAuth, at least one name required). The PEM
/// certificate and its new private key are written atomically, mode 0600,
/// to `cert_out` and `key_out`.
///
/// The CA key must be PKCS#8 PEM; the CA certificate's subject is copied
/// into the new certificate's issuer, and the new certificate is checked to
/// chain to the CA before anything is written.
pub fn issue_cert(
    ca_cert: &Path,
    ca_key: &Path,
    common_name: &str,
    names: &[String],
    client: bool,
    cert_out: &Path,
    key_out: &Path,
) -> Result<(), TlsError> {
    let ca_certs = load_certs(ca_cert)?;
    let ca_der = ca_certs[0].clone();
    // Checks that the key belongs to the certificate, naming both files.
    certified_key(vec![ca_der.clone()], load_key(ca_key)?, ca_cert, ca_key)?;
    let ca_key_pem = String::from_utf8(read_file(ca_key)?).map_err(|_| TlsError::Pem {
        path: ca_key.to_path_buf(),
        detail: "not UTF-8 text".into(),
    })?;
    let ca_key_pair = rcgen::KeyPair::from_pem(&ca_key_pem).map_err(|e| TlsError::Pem {
        path: ca_key.to_path_buf(),
        detail: format!("cannot use the CA key: {e}"),
    })?;
    // rcgen reads the CA's subject (re-encoded as the issuer field)
    // and its subject key identifier (for the authority key identifier).
    let issuer = rcgen::Issuer::from_ca_cert_der(&ca_der, ca_key_pair).map_err(|e| {
        TlsError::BadCertificate {
            path: ca_cert.to_path_buf(),
            detail: e.to_string(),
        }
    })?;

    let mut sans = Vec::new();
    let mut normalized = Vec::new();
    for name in names {
        let name = normalize_name(name)?;
        if normalized.contains(&name) {
            continue;
        }
        sans.push(san_for(&name)?);
        normalized.push(name);
    }
    if !client && normalized.is_empty() {
        return Err(TlsError::InvalidName {
            name: common_name.to_string(),
            detail: "a server certificate needs at least one DNS name or IP address".into(),
        });
    }

    let now = SystemTime::now();
    let mut params = rcgen::CertificateParams::default();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + LEAF_VALIDITY).into();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params.subject_alt_names = sans;
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![if client {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    }];
    params.use_authority_key_identifier_extension = true;
    let key = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| TlsError::Generate(e.to_string()))?;

    check_chains_to(ca_cert, ca_der, cert.der(), client, &normalized)?;

    write_pair(&cert, &key, cert_out, key_out)
}

/// Verifies that a freshly issued certificate chains to the CA, as a
/// client or as a server for every name: catches a CA whose subject could
/// not be reproduced exactly in the issuer field.
fn check_chains_to(
    ca_path: &Path,
    ca_der: CertificateDer<'static>,
    cert: &CertificateDer<'static>,
    client: bool,
    names: &[String],
) -> Result<(), TlsError> {
    let bad_ca = |detail: String| TlsError::BadCertificate {
        path: ca_path.to_path_buf(),
        detail,
    };
    let mut roots = RootCertStore::empty();
    roots.add(ca_der).map_err(|e| bad_ca(e.to_string()))?;
    let roots = Arc::new(roots);
    let now = UnixTime::now();
    let failed = |e: rustls::Error| {
        TlsError::Generate(format!(
            "the new certificate does not verify against the CA {}: {e}",
            ca_path.display()
        ))
    };
    if client {
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| bad_ca(e.to_string()))?;
        verifier
            .verify_client_cert(cert, &[], now)
            .map_err(failed)?;
    } else {
        let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| bad_ca(e.to_string()))?;
        for name in names {
            verifier
                .verify_server_cert(cert, &[], &server_name_for(name)?, &[], now)
                .map_err(failed)?;
        }
    }
    Ok(())
}

/// Generates a self-signed development CA and writes it.
fn generate_ca(cert_out: &Path, key_out: &Path) -> Result<(), TlsError> {
    let now = SystemTime::now();
    let mut params = rcgen::CertificateParams::default();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + DEV_CA_VALIDITY).into();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, DEV_CA_NAME);
    // Every development CA has the same common name; a random unit keeps
    // their subjects apart, so that a certificate from another development
    // CA is reported as an unknown issuer rather than a bad signature.
    params.distinguished_name.push(
        rcgen::DnType::OrganizationalUnitName,
        format!("{:016x}", rand::random::<u64>()),
    );
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let key = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    write_pair(&cert, &key, cert_out, key_out)
}

/// Writes a certificate and its key as PEM (both 0600, each atomically),
/// the key first so a certificate never sits beside a missing key.
fn write_pair(
    cert: &rcgen::Certificate,
    key: &rcgen::KeyPair,
    cert_out: &Path,
    key_out: &Path,
) -> Result<(), TlsError> {
    for (path, pem) in [(key_out, key.serialize_pem()), (cert_out, cert.pem())] {
        crate::fsutil::write_private(path, pem.as_bytes()).map_err(|source| TlsError::Write {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// Creates `dir` (and missing parents) with mode 0700 if it does not exist.
fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| TlsError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })
}

/// A name as it goes into a certificate: IP literals in canonical form
/// (brackets stripped), DNS names lower-cased; rejects anything rustls
/// could not match.
fn normalize_name(name: &str) -> Result<String, TlsError> {
    let trimmed = name.trim();
    let unbracketed = trimmed
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(trimmed);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    let dns = trimmed.to_ascii_lowercase();
    match ServerName::try_from(dns.as_str()) {
        Ok(ServerName::DnsName(_)) => Ok(dns),
        _ => Err(TlsError::InvalidName {
            name: name.to_string(),
            detail: "not a DNS name or an IP address".into(),
        }),
    }
}

/// The subject alternative name for a normalized name.
fn san_for(name: &str) -> Result<rcgen::SanType, TlsError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(rcgen::SanType::IpAddress(ip));
    }
    let dns = rcgen::string::Ia5String::try_from(name).map_err(|e| TlsError::InvalidName {
        name: name.to_string(),
        detail: e.to_string(),
    })?;
    Ok(rcgen::SanType::DnsName(dns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::server::{ServerTlsFiles, server_config};

    #[test]
    fn dev_pki_is_idempotent_and_follows_names() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("pki");
        let names = vec!["agent.example".to_string()];
        let pki = ensure_dev_pki(&dir, &names).unwrap();
        assert_eq!(crate::tls::file_mode(&dir), 0o700);
        assert_eq!(crate::tls::file_mode(&pki.ca_key), 0o600);
        assert_eq!(crate::tls::file_mode(&pki.server_key), 0o600);
        let ca = std::fs::read(&pki.ca_cert).unwrap();
        let ca_key = std::fs::read(&pki.ca_key).unwrap();
        let server = std::fs::read(&pki.server_cert).unwrap();

        // Same names (defaults repeated, different case): nothing changes.
        let again = ensure_dev_pki(
            &dir,
            &["AGENT.example".to_string(), "127.0.0.1".to_string()],
        )
        .unwrap();
        assert_eq!(again, pki);
        assert_eq!(std::fs::read(&pki.ca_cert).unwrap(), ca);
        assert_eq!(std::fs::read(&pki.ca_key).unwrap(), ca_key);
        assert_eq!(std::fs::read(&pki.server_cert).unwrap(), server);

        // A new name: a new server certificate under the same CA.
        let more = vec!["agent.example".to_string(), "[fd00::7]".to_string()];
        ensure_dev_pki(&dir, &more).unwrap();
        assert_eq!(std::fs::read(&pki.ca_cert).unwrap(), ca);
        let renewed = std::fs::read(&pki.server_cert).unwrap();
        assert_ne!(renewed, server);
        assert_eq!(crate::tls::file_mode(&pki.server_key), 0o600);
        assert_eq!(
            server_cert_problem(&pki, &["fd00::7".to_string()]).unwrap(),
            None
        );
        // ... which is kept on the next call.
        ensure_dev_pki(&dir, &more).unwrap();
        assert_eq!(std::fs::read(&pki.server_cert).unwrap(), renewed);

        // A server key that does not match its certificate is replaced.
        std::fs::copy(&pki.ca_key, &pki.server_key).unwrap();
        ensure_dev_pki(&dir, &more).unwrap();
        assert_ne!(std::fs::read(&pki.server_cert).unwrap(), renewed);
        assert!(
            server_config(&ServerTlsFiles {
                cert: pki.server_cert.clone(),
                key: pki.server_key.clone(),
                client_ca: None,
            })
            .is_ok()
        );
    }

    #[test]
    fn dev_pki_refuses_half_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        let pki = ensure_dev_pki(dir.path(), &[]).unwrap();
        std::fs::remove_file(&pki.ca_key).unwrap();
        let e = ensure_dev_pki(dir.path(), &[]).unwrap_err().to_string();
        assert!(e.contains("ca.key is missing"), "{e}");
    }

    #[test]
    fn invalid_names_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let e = ensure_dev_pki(dir.path(), &["not a name".to_string()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"not a name\""), "{e}");
    }

    #[test]
    fn issues_under_a_foreign_ca() {
        // A CA not made by us: several subject attributes, string types
        // other than UTF-8, and a key identifier rcgen would not derive.
        let dir = tempfile::tempdir().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            rcgen::DnType::CountryName,
            rcgen::DnValue::PrintableString("DE".try_into().unwrap()),
        );
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Acme Ü GmbH");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Acme Root");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        params.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(vec![7; 20]);
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = params.self_signed(&key).unwrap();
        let ca_cert = dir.path().join("acme.pem");
        let ca_key = dir.path().join("acme.key");
        std::fs::write(&ca_cert, ca.pem()).unwrap();
        std::fs::write(&ca_key, key.serialize_pem()).unwrap();

        // issue_cert verifies the chain before writing.
        let out = dir.path().join("srv.pem");
        let out_key = dir.path().join("srv.key");
        issue_cert(
            &ca_cert,
            &ca_key,
            "srv",
            &["srv.acme.example".to_string(), "10.1.2.3".to_string()],
            false,
            &out,
            &out_key,
        )
        .unwrap();
        // The authority key identifier is the CA's, not one rcgen derived.
        let issued = load_certs(&out).unwrap();
        assert!(
            issued[0].windows(20).any(|w| w == [7; 20]),
            "the CA's key identifier is missing"
        );
        assert!(
            server_config(&ServerTlsFiles {
                cert: out,
                key: out_key,
                client_ca: Some(ca_cert),
            })
            .is_ok()
        );
    }

    #[test]
    fn server_certificates_need_a_name() {
        let dir = tempfile::tempdir().unwrap();
        let pki = ensure_dev_pki(dir.path(), &[]).unwrap();
        let e = issue_cert(
            &pki.ca_cert,
            &pki.ca_key,
            "x",
            &[],
            false,
            &dir.path().join("x.pem"),
            &dir.path().join("x.key"),
        )
        .unwrap_err();
        assert!(matches!(e, TlsError::InvalidName { .. }), "{e}");
    }
}
