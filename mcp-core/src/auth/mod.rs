//! Who may call the agent: bearer-token validation, roles and the table of
//! which RPC needs which role.
//!
//! - [`TokenValidator`]: turns a bearer token into a [`Caller`]. Two
//!   implementations: [`local::LocalTokens`] (a file of hashed tokens, for
//!   single-operator nodes and `--dev`) and [`mcias::Mcias`] (the platform's
//!   identity service over HTTPS, with a short-lived cache).
//! - [`policy`]: the one table mapping each RPC to the [`Role`] it needs.
//!
//! - [`guard`]: the layer every server puts in front of its handlers: it
//!   applies all of this to every RPC and writes the [`audit`] record.

pub mod audit;
pub mod budget;
pub mod guard;
pub mod local;
pub mod mcias;
pub mod policy;
pub mod recheck;

use std::time::SystemTime;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Longest bearer token accepted, in bytes. Longer ones are refused before
/// any lookup or network call.
pub const MAX_TOKEN_LEN: usize = 4096;

/// What a caller may do. `Admin` includes everything `ReadOnly` may do;
/// `Node` is apart: an agent's credential at its master, which may only
/// register and heartbeat, and nothing `Node` does is open to the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May only query: status, list, ps, logs, events, file listing and download.
    #[serde(rename = "readonly")]
    ReadOnly,
    /// May also change state.
    Admin,
    /// An agent joining its master: may register and heartbeat, nothing else.
    Node,
}

impl Role {
    /// Whether a caller holding `self` may call an RPC that requires `needed`.
    pub fn permits(self, needed: Role) -> bool {
        matches!(
            (self, needed),
            (Role::Admin, Role::Admin | Role::ReadOnly)
                | (Role::ReadOnly, Role::ReadOnly)
                | (Role::Node, Role::Node)
        )
    }

    /// The name used in token files, configuration and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ReadOnly => "readonly",
            Role::Admin => "admin",
            Role::Node => "node",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad` honours width and alignment, for tables.
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "readonly" => Ok(Role::ReadOnly),
            "node" => Ok(Role::Node),
            other => Err(format!(
                "unknown role {other:?}: expected \"admin\", \"readonly\" or \"node\""
            )),
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name (local tokens) or the user name (MCIAS).
    pub name: String,
    /// The strongest role the caller holds, if any.
    pub role: Option<Role>,
    /// When the credential stops being valid, if it does.
    pub expires_at: Option<SystemTime>,
    /// Which validator vouched for the caller: `"local"` or `"mcias"`.
    pub source: &'static str,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `authorization` metadata was sent.
    #[error("no bearer token: send `authorization: Bearer <token>`")]
    Missing,
    /// The metadata is not of the form `Bearer <token>`, is too long or
    /// holds characters a token never has.
    #[error("malformed bearer token: {0}")]
    Malformed(&'static str),
    /// The token is unknown or was revoked.
    #[error("invalid token")]
    Invalid,
    /// The token has expired.
    #[error("token expired")]
    Expired,
    /// The identity service could not be asked and the token is not cached.
    /// Fails closed.
    #[error("cannot validate the token: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// The gRPC status this error becomes.
    pub fn code(&self) -> tonic::Code {
        match self {
            AuthError::Unavailable(_) => tonic::Code::Unavailable,
            _ => tonic::Code::Unauthenticated,
        }
    }
}

/// Turns a bearer token into a [`Caller`]. Implementations must never log
/// the token.
#[async_trait]
pub trait TokenValidator: Send + Sync + 'static {
    /// Validates `token` (already stripped of `Bearer ` and checked by
    /// [`check_token_syntax`]).
    async fn validate(&self, token: &str) -> Result<Caller, AuthError>;

    /// Validates `token` without asking any service over the network (for
    /// a peer whose failed attempts are being rate-limited): local
    /// validators answer as [`TokenValidator::validate`] does; a remote one
    /// says [`AuthError::Invalid`] without asking.
    async fn validate_locally(&self, token: &str) -> Result<Caller, AuthError> {
        self.validate(token).await
    }
}

/// Tries validators in order: the first that recognises the token wins.
/// A token unknown to one validator ([`AuthError::Invalid`]) is passed to the
/// next; any other answer is final.
pub struct ChainValidator {
    validators: Vec<Box<dyn TokenValidator>>,
}

impl ChainValidator {
    /// A chain over `validators`, asked in order.
    pub fn new(validators: Vec<Box<dyn TokenValidator>>) -> ChainValidator {
        ChainValidator { validators }
    }
}

#[async_trait]
impl TokenValidator for ChainValidator {
    async fn validate(&self, token: &str) -> Result<Caller, AuthError> {
        let mut last = AuthError::Invalid;
        for v in &self.validators {
            match v.validate(token).await {
                Err(AuthError::Invalid) => last = AuthError::Invalid,
                other => return other,
            }
        }
        Err(last)
    }

    async fn validate_locally(&self, token: &str) -> Result<Caller, AuthError> {
        for v in &self.validators {
            match v.validate_locally(token).await {
                Err(AuthError::Invalid) => {}
                other => return other,
            }
        }
        Err(AuthError::Invalid)
    }
}

/// Extracts the token from an `authorization` header value
/// (`Bearer <token>`, scheme case-insensitive) and checks its syntax: at most
/// [`MAX_TOKEN_LEN`] bytes of printable ASCII without spaces.
pub fn bearer_token(header: Option<&[u8]>) -> Result<&str, AuthError> {
    let raw = header.ok_or(AuthError::Missing)?;
    if raw.len() > MAX_TOKEN_LEN + 7 {
        return Err(AuthError::Malformed("longer than 4096 bytes"));
    }
    let scheme_ok = raw.len() > 7 && raw[..7].eq_ignore_ascii_case(b"bearer ");
    if !scheme_ok {
        return Err(AuthError::Malformed("expected `Bearer <token>`"));
    }
    let token = &raw[7..];
    check_token_syntax(token)?;
    // Checked above: printable ASCII only.
    std::str::from_utf8(token).map_err(|_| AuthError::Malformed("not ASCII"))
}

/// Checks that `token` is non-empty printable ASCII (0x21..=0x7e) of at most
/// [`MAX_TOKEN_LEN`] bytes.
pub fn check_token_syntax(token: &[u8]) -> Result<(), AuthError> {
    if token.is_empty() {
        return Err(AuthError::Malformed("empty token"));
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::Malformed("longer than 4096 bytes"));
    }
    if !token.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(AuthError::Malformed(
            "control, space or non-ASCII characters",
        ));
    }
    Ok(())
}

/// The SHA-256 of a token as lowercase hex: how tokens are stored and how
/// caches key them, so that no plaintext token is kept.
pub fn token_digest(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token(None), Err(AuthError::Missing));
        assert_eq!(bearer_token(Some(b"Bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(Some(b"bearer abc")), Ok("abc"));
        assert!(matches!(
            bearer_token(Some(b"Basic abc")),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            bearer_token(Some(b"Bearer ")),
            Err(AuthError::Malformed(_))
        ));
        for bad in [
            &b"Bearer a\tb"[..],
            b"Bearer a b",
            b"Bearer a\x7fb",
            b"Bearer a\xffb",
            b"Bearer a\x01b",
        ] {
            assert!(
                matches!(bearer_token(Some(bad)), Err(AuthError::Malformed(_))),
                "{bad:?}"
            );
        }
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1));
        assert!(matches!(
            bearer_token(Some(long.as_bytes())),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn roles_order() {
        assert!(Role::Admin.permits(Role::ReadOnly));
        assert!(Role::Admin.permits(Role::Admin));
        assert!(Role::ReadOnly.permits(Role::ReadOnly));
        assert!(!Role::ReadOnly.permits(Role::Admin));
        assert!(Role::Node.permits(Role::Node));
        for other in [Role::Admin, Role::ReadOnly] {
            assert!(!Role::Node.permits(other), "node may not {other}");
            assert!(
                !other.permits(Role::Node),
                "{other} may not do a node's part"
            );
        }
        assert_eq!("node".parse::<Role>(), Ok(Role::Node));
        assert_eq!("readonly".parse::<Role>(), Ok(Role::ReadOnly));
        assert!("root".parse::<Role>().is_err());
    }
}
