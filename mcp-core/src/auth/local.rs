//! Local tokens: a TOML file of SHA-256 token hashes, each with a name, a
//! role and an optional expiry, for single-operator nodes and `--dev`.
//!
//! A token is `mcp_` followed by 43 base64url characters (256 random bits),
//! so a plain SHA-256 is a safe way to store it: there is nothing to guess.
//! The plaintext is shown once, by [`TokenStore::add`], and never stored.
//!
//! ```toml
//! [[token]]
//! name = "kyle"
//! role = "admin"
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! created = "2026-11-23T18:00:00Z"
//! expires = "2027-11-23T18:00:00Z"   # optional
//! ```
//!
//! [`LocalTokens`] validates against the file and picks up changes made
//! while the agent runs (a token added or removed) within a second.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::{AuthError, Caller, Role, TokenValidator, token_digest};
use crate::config::{ConfigError, parse_toml};

/// Prefix of every token this module issues.
pub const TOKEN_PREFIX: &str = "mcp_";

/// How often [`LocalTokens`] looks at the file for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// One stored token: everything but the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Who or what the token is for; shown in the audit log.
    pub name: String,
    /// What the token may do.
    pub role: Role,
    /// SHA-256 of the token, lowercase hex.
    pub sha256: String,
    /// When it was created (RFC 3339).
    pub created: String,
    /// When it stops working (RFC 3339), if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

impl TokenEntry {
    /// The expiry as a time, if set and well-formed.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires
            .as_deref()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| SystemTime::from(t.with_timezone(&Utc)))
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFileContents {
    #[serde(default, rename = "token")]
    tokens: Vec<TokenEntry>,
}

/// The token file on disk: list, add and remove tokens.
#[derive(Debug, Clone)]
pub struct TokenStore {
    path: PathBuf,
}

const HEADER: &str = "# MCP agent tokens: SHA-256 hashes only, never the tokens.\n\
# Manage with `mcp-agent token add|list|remove`.\n\n";

impl TokenStore {
    /// The store kept at `path` (which need not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> TokenStore {
        TokenStore { path: path.into() }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> ConfigError {
        ConfigError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// A refused change to the file.
    fn invalid(&self, message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            message,
        }
    }

    /// The stored tokens; none when the file does not exist.
    pub fn list(&self) -> Result<Vec<TokenEntry>, ConfigError> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => self.parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(self.io(e)),
        }
    }

    fn parse(&self, text: &str) -> Result<Vec<TokenEntry>, ConfigError> {
        let contents: TokenFileContents = parse_toml(&self.path, text)?;
        for entry in &contents.tokens {
            let bad = |message: String| ConfigError::Parse {
                path: self.path.clone(),
                line: 1,
                col: 1,
                message,
            };
            if entry.sha256.len() != 64 || !entry.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(format!(
                    "token {:?}: sha256 must be 64 hex digits",
                    entry.name
                )));
            }
            if entry.expires.is_some() && entry.expires_at().is_none() {
                return Err(bad(format!(
                    "token {:?}: expires is not an RFC 3339 time",
                    entry.name
                )));
            }
        }
        Ok(contents.tokens)
    }

    /// Creates a token called `name` with `role`, valid until `expires` (or
    /// forever), stores its hash and returns the token. This is the only
    /// time the token exists in plain text.
    pub fn add(
        &self,
        name: &str,
        role: Role,
        expires: Option<SystemTime>,
    ) -> Result<String, ConfigError> {
        validate_name(name).map_err(|m| self.invalid(m))?;
        let token = generate_token();
        self.update(|tokens| {
            if tokens.iter().any(|t| t.name == name) {
                return Err(self.invalid(format!(
                    "a token named {name:?} exists already; remove it first"
                )));
            }
            tokens.push(TokenEntry {
                name: name.to_string(),
                role,
                sha256: token_digest(&token),
                created: rfc3339(SystemTime::now()),
                expires: expires.map(rfc3339),
            });
            Ok(())
        })?;
        Ok(token)
    }

    /// Stores the hash of an existing `token` under `name` (used by `--dev`,
    /// which keeps its token in the CLI's token file).
    pub fn add_existing(&self, name: &str, role: Role, token: &str) -> Result<(), ConfigError> {
        validate_name(name).map_err(|m| self.invalid(m))?;
        super::check_token_syntax(token.as_bytes()).map_err(|e| self.invalid(e.to_string()))?;
        self.update(|tokens| {
            tokens.retain(|t| t.name != name);
            tokens.push(TokenEntry {
                name: name.to_string(),
                role,
                sha256: token_digest(token),
                created: rfc3339(SystemTime::now()),
                expires: None,
            });
            Ok(())
        })
    }

    /// Removes the token called `name`; returns whether there was one.
    pub fn remove(&self, name: &str) -> Result<bool, ConfigError> {
        let mut found = false;
        self.update(|tokens| {
            let before = tokens.len();
            tokens.retain(|t| t.name != name);
            found = tokens.len() != before;
            Ok(())
        })?;
        Ok(found)
    }

    /// Whether `token` is stored and unexpired.
    pub fn contains(&self, token: &str) -> Result<bool, ConfigError> {
        let digest = token_digest(token);
        let now = SystemTime::now();
        Ok(self
            .list()?
            .iter()
            .any(|t| t.sha256 == digest && t.expires_at().is_none_or(|e| e > now)))
    }

    /// Read-modify-write under an exclusive lock on a side file, replacing
    /// the file atomically (mode 0600) so readers never see half of it.
    fn update(
        &self,
        change: impl FnOnce(&mut Vec<TokenEntry>) -> Result<(), ConfigError>,
    ) -> Result<(), ConfigError> {
        crate::fsutil::create_parent_dir(&self.path).map_err(|e| self.io(e))?;
        let mut lock_path = self.path.clone().into_os_string();
        lock_path.push(".lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| self.io(e))?;
        lock.lock().map_err(|e| self.io(e))?;
        let mut tokens = self.list()?;
        change(&mut tokens)?;
        let mut text = String::from(HEADER);
        let body = toml::to_string_pretty(&TokenFileContents { tokens })
            .map_err(|e| self.invalid(e.to_string()))?;
        text.push_str(&body);
        crate::fsutil::write_private(&self.path, text.as_bytes()).map_err(|e| self.io(e))
    }
}

fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid token name {name:?}: use 1 to 64 letters, digits, '-', '_', '.' or '@'"
        ))
    }
}

fn rfc3339(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A new random token: `mcp_` and 256 bits in base64url.
pub fn generate_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// What validation needs of a stored token, parsed once per load.
struct Known {
    name: String,
    role: Role,
    expires_at: Option<SystemTime>,
}

struct Loaded {
    by_digest: HashMap<String, Arc<Known>>,
    /// The file's [`Stamp`] when read; `None` when absent.
    stamp: Option<Stamp>,
    checked: Instant,
}

/// Validates bearer tokens against a [`TokenStore`] file, re-reading it
/// when it changes.
pub struct LocalTokens {
    store: TokenStore,
    loaded: Mutex<Loaded>,
}

/// What tells that the token file changed: its modification time, length,
/// mode and owner.
type Stamp = (SystemTime, u64, u32, u32);

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.mode(), meta.uid()))
}

/// Refuses a token file another user could rewrite (and so grant
/// themselves a role): one writable by its group or by others, or owned by
/// another user than the one reading it. A missing file is fine (no tokens).
pub fn check_ownership(path: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ConfigError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let invalid = |message: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(invalid(format!(
            "the token file is writable by {} (mode {mode:04o}), so anyone there could add a token: `chmod 600 {}`",
            if mode & 0o002 != 0 {
                "everyone"
            } else {
                "its group"
            },
            path.display()
        )));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(invalid(format!(
            "the token file is owned by uid {}, not by the user reading it (uid {me}): `chown {me} {}`",
            meta.uid(),
            path.display()
        )));
    }
    Ok(())
}

impl LocalTokens {
    /// Loads the token file at `path`; a missing file means no tokens yet.
    /// A file others could rewrite is refused ([`check_ownership`]).
    pub fn open(path: impl Into<PathBuf>) -> Result<LocalTokens, ConfigError> {
        let store = TokenStore::new(path);
        check_ownership(store.path())?;
        let stamp = stamp(store.path());
        let by_digest = index(store.list()?);
        Ok(LocalTokens {
            store,
            loaded: Mutex::new(Loaded {
                by_digest,
                stamp,
                checked: Instant::now(),
            }),
        })
    }

    /// How many tokens are loaded.
    pub fn len(&self) -> usize {
        self.loaded.lock().map(|l| l.by_digest.len()).unwrap_or(0)
    }

    /// Whether no token is loaded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.store.path()
    }

    fn lookup(&self, digest: &str) -> Option<Arc<Known>> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if loaded.checked.elapsed() >= RELOAD_CHECK {
            loaded.checked = Instant::now();
            let now = stamp(self.store.path());
            if now != loaded.stamp {
                loaded.stamp = now;
                match check_ownership(self.store.path()).and_then(|()| self.store.list()) {
                    Ok(tokens) => {
                        loaded.by_digest = index(tokens);
                        tracing::info!(path = %self.store.path().display(), tokens = loaded.by_digest.len(), "reloaded local tokens");
                    }
                    // Fail closed: a file that no longer parses (or that
                    // others may now write) may have been edited to revoke
                    // a token, so no token of it is trusted until it is
                    // fixed.
                    Err(e) => {
                        loaded.by_digest.clear();
                        tracing::error!(error = %e, "the local token file changed and cannot be used: every local token is refused until it is fixed");
                    }
                }
            }
        }
        loaded.by_digest.get(digest).cloned()
    }
}

fn index(tokens: Vec<TokenEntry>) -> HashMap<String, Arc<Known>> {
    tokens
        .into_iter()
        .map(|t| {
            let known = Known {
                expires_at: t.expires_at(),
                name: t.name,
                role: t.role,
            };
            (t.sha256.to_ascii_lowercase(), Arc::new(known))
        })
        .collect()
}

#[async_trait]
impl TokenValidator for LocalTokens {
    async fn validate(&self, token: &str) -> Result<Caller, AuthError> {
        let known = self
            .lookup(&token_digest(token))
            .ok_or(AuthError::Invalid)?;
        if known.expires_at.is_some_and(|e| e <= SystemTime::now()) {
            return Err(AuthError::Expired);
        }
        Ok(Caller {
            name: known.name.clone(),
            role: Some(known.role),
            expires_at: known.expires_at,
            source: "local",
        })
    }
}

/// Writes `token` to `path` with mode 0600 (the CLI side of `--dev`).
pub fn write_token_file(path: &Path, token: &str) -> std::io::Result<()> {
    crate::fsutil::create_parent_dir(path)?;
    let mut text = Vec::with_capacity(token.len() + 1);
    text.write_all(token.as_bytes())?;
    text.push(b'\n');
    crate::fsutil::write_private(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_prefixed() {
        let a = generate_token();
        let b = generate_token();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 43);
        super::super::check_token_syntax(a.as_bytes()).unwrap();
    }

    #[tokio::test]
    async fn add_validate_remove() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let store = TokenStore::new(&path);
        let admin = store.add("kyle", Role::Admin, None).unwrap();
        let ro = store.add("grafana", Role::ReadOnly, None).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&admin) && !text.contains(&ro), "{text}");
        assert!(text.contains(&token_digest(&admin)));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(store.add("kyle", Role::Admin, None).is_err());

        let v = LocalTokens::open(&path).unwrap();
        assert_eq!(v.len(), 2);
        let c = v.validate(&admin).await.unwrap();
        assert_eq!((c.name.as_str(), c.role), ("kyle", Some(Role::Admin)));
        assert_eq!(v.validate(&ro).await.unwrap().role, Some(Role::ReadOnly));
        assert_eq!(v.validate("mcp_nope").await, Err(AuthError::Invalid));

        assert!(store.remove("kyle").unwrap());
        assert!(!store.remove("kyle").unwrap());
        // The validator notices within a second.
        tokio::time::sleep(RELOAD_CHECK + Duration::from_millis(50)).await;
        assert_eq!(v.validate(&admin).await, Err(AuthError::Invalid));
        assert!(v.validate(&ro).await.is_ok());
    }

    #[tokio::test]
    async fn expired_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path().join("t.toml"));
        let past = SystemTime::now() - Duration::from_secs(60);
        let future = SystemTime::now() + Duration::from_secs(3600);
        let old = store.add("old", Role::Admin, Some(past)).unwrap();
        let new = store.add("new", Role::Admin, Some(future)).unwrap();
        let v = LocalTokens::open(store.path()).unwrap();
        assert_eq!(v.validate(&old).await, Err(AuthError::Expired));
        assert!(v.validate(&new).await.unwrap().expires_at.is_some());
        assert!(!store.contains(&old).unwrap());
        assert!(store.contains(&new).unwrap());
    }

    #[test]
    fn bad_files_and_names_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(
            &path,
            "[[token]]\nname = \"a\"\nrole = \"root\"\nsha256 = \"x\"\ncreated = \"\"\n",
        )
        .unwrap();
        let err = TokenStore::new(&path).list().unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}:3:", path.display())), "{err}");
        assert!(LocalTokens::open(&path).is_err());
        std::fs::write(
            &path,
            "[[token]]\nname = \"a\"\nrole = \"admin\"\nsha256 = \"x\"\ncreated = \"\"\n",
        )
        .unwrap();
        let err = TokenStore::new(&path).list().unwrap_err().to_string();
        assert!(err.contains("64 hex digits"), "{err}");
        let store = TokenStore::new(dir.path().join("u.toml"));
        let err = store
            .add("has space", Role::Admin, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid token name"), "{err}");
        // A missing file is an empty store, not an error.
        assert!(store.list().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_broken_edit_revokes_every_token_until_fixed() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path().join("t.toml"));
        let t = store.add("a", Role::Admin, None).unwrap();
        let good = std::fs::read_to_string(store.path()).unwrap();
        let v = LocalTokens::open(store.path()).unwrap();
        assert!(v.validate(&t).await.is_ok());
        crate::fsutil::write_private(store.path(), b"not toml [").unwrap();
        tokio::time::sleep(RELOAD_CHECK + Duration::from_millis(50)).await;
        assert_eq!(v.validate(&t).await.unwrap_err(), AuthError::Invalid);
        assert!(v.is_empty());
        crate::fsutil::write_private(store.path(), good.as_bytes()).unwrap();
        tokio::time::sleep(RELOAD_CHECK + Duration::from_millis(50)).await;
        assert!(v.validate(&t).await.is_ok());
    }

    #[test]
    fn a_file_owned_by_another_user_is_refused() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = if rustix::process::geteuid().is_root() {
            let path = dir.path().join("t.toml");
            TokenStore::new(&path).add("a", Role::Admin, None).unwrap();
            std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
            path
        } else {
            // Not root: a file root owns and keeps to itself will do.
            PathBuf::from("/etc/passwd")
        };
        let owner = std::fs::metadata(&path).unwrap().uid();
        let err = LocalTokens::open(&path).err().expect("refused");
        assert!(
            err.to_string()
                .contains(&format!("owned by uid {owner}, not by the user reading it")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_file_others_may_write_is_refused_at_start_and_on_reload() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path().join("t.toml"));
        let t = store.add("a", Role::Admin, None).unwrap();
        for (mode, who) in [(0o620, "its group"), (0o602, "everyone")] {
            std::fs::set_permissions(store.path(), std::fs::Permissions::from_mode(mode)).unwrap();
            let err = LocalTokens::open(store.path()).err().expect("refused");
            let text = err.to_string();
            assert!(text.contains(&format!("writable by {who}")), "{text}");
            assert!(text.contains("chmod 600"), "{text}");
        }
        std::fs::set_permissions(store.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
        let v = LocalTokens::open(store.path()).unwrap();
        assert!(v.validate(&t).await.is_ok());
        // Made group-writable while in use: refused from the next reload.
        std::fs::set_permissions(store.path(), std::fs::Permissions::from_mode(0o660)).unwrap();
        tokio::time::sleep(RELOAD_CHECK + Duration::from_millis(50)).await;
        assert_eq!(v.validate(&t).await.unwrap_err(), AuthError::Invalid);
    }
}
