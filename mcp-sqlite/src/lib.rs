//! The SQLite conventions of the MCP daemons' databases (the agent's
//! registry, the master's store): one home for how such a database is
//! opened and migrated, so that both keep the same guarantees.
//!
//! - [`open`] makes the file's directory, waits up to five seconds for
//!   another connection's lock, asks for WAL with `synchronous = NORMAL`
//!   (durable across a process crash, a commit costs no fsync) and turns
//!   foreign keys on;
//! - then applies the [`Schema`]'s migrations the file lacks, each in its
//!   own write-locked transaction that first reads the version again, so
//!   two processes opening one file at once never both apply one;
//! - and refuses a file whose schema version is newer than the code's
//!   ([`OpenError::TooNew`]), changing nothing in it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

/// How long a statement waits for a lock another connection holds.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A database's schema: its migrations, in order, and how errors name it.
#[derive(Debug, Clone, Copy)]
pub struct Schema {
    /// What the database is, in messages and logs (`registry`, `master
    /// database`).
    pub what: &'static str,
    /// The program to upgrade when a file is newer (`mcp`, `mcp-master`).
    pub program: &'static str,
    /// Migration `i` takes a file from version `i` to `i + 1`.
    pub migrations: &'static [&'static str],
}

impl Schema {
    /// The version this code writes: the number of migrations.
    pub const fn version(&self) -> u32 {
        self.migrations.len() as u32
    }
}

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The database's directory could not be created.
    #[error("cannot create the directory of the {what}, {}: {source}", path.display())]
    CreateDir {
        /// What the database is.
        what: &'static str,
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file was written by a newer version.
    #[error(
        "{what} {path} has schema version {found}, newer than the latest this version of {program} knows ({supported}); upgrade {program}"
    )]
    TooNew {
        /// What the database is.
        what: &'static str,
        /// The program to upgrade.
        program: &'static str,
        /// The database file.
        path: String,
        /// Its schema version.
        found: i64,
        /// The latest version this code knows.
        supported: u32,
    },
    /// The file's schema version is not one any version writes.
    #[error("{what} {path} has schema version {found}, which no version of {program} writes")]
    BadVersion {
        /// What the database is.
        what: &'static str,
        /// The program.
        program: &'static str,
        /// The database file.
        path: String,
        /// Its schema version.
        found: i64,
    },
    /// SQLite failed while doing what `context` says.
    #[error("{context}: {source}")]
    Sqlite {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
}

fn sqlite(context: String) -> impl FnOnce(rusqlite::Error) -> OpenError {
    move |source| OpenError::Sqlite { context, source }
}

/// Opens (creating and migrating to `version`) the database at `path`;
/// returns the connection and the path as messages show it. `version` is
/// the schema's own but for tests of migrations.
pub fn open(path: &Path, schema: &Schema, version: u32) -> Result<(Connection, String), OpenError> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|source| OpenError::CreateDir {
            what: schema.what,
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let shown = path.display().to_string();
    let conn =
        Connection::open(path).map_err(sqlite(format!("opening {} {shown}", schema.what)))?;
    let conn = init(conn, &shown, schema, version)?;
    Ok((conn, shown))
}

/// A database in memory, migrated to the schema's version (for tests).
pub fn open_in_memory(schema: &Schema) -> Result<Connection, OpenError> {
    let conn = Connection::open_in_memory()
        .map_err(sqlite(format!("opening a {} in memory", schema.what)))?;
    init(conn, ":memory:", schema, schema.version())
}

fn init(
    mut conn: Connection,
    path: &str,
    schema: &Schema,
    version: u32,
) -> Result<Connection, OpenError> {
    let setup = || sqlite(format!("configuring {} {path}", schema.what));
    // First, so that the pragmas below wait for other connections too.
    conn.busy_timeout(BUSY_TIMEOUT).map_err(setup())?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(setup())?;
    if !mode.eq_ignore_ascii_case("wal") && path != ":memory:" {
        tracing::warn!(db = %path, journal_mode = %mode, "SQLite refused WAL mode");
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(setup())?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(setup())?;
    migrate(&mut conn, path, schema, version)?;
    Ok(conn)
}

/// The schema version a database records (`PRAGMA user_version`).
pub fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
}

/// Applies the migrations a database lacks, up to `target`, one
/// transaction each. The version is read again inside each (immediate, so
/// write-locked) transaction, so two processes opening the same file at
/// once do not both apply a migration.
fn migrate(
    conn: &mut Connection,
    path: &str,
    schema: &Schema,
    target: u32,
) -> Result<(), OpenError> {
    let what = schema.what;
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite(format!("migrating {what} {path}")))?;
        let found =
            user_version(&tx).map_err(sqlite(format!("reading the schema version of {path}")))?;
        let current = match u32::try_from(found) {
            Ok(v) if v <= schema.version() => v,
            Err(_) if found < 0 => {
                return Err(OpenError::BadVersion {
                    what,
                    program: schema.program,
                    path: path.to_string(),
                    found,
                });
            }
            _ => {
                return Err(OpenError::TooNew {
                    what,
                    program: schema.program,
                    path: path.to_string(),
                    found,
                    supported: schema.version(),
                });
            }
        };
        if current >= target {
            return tx
                .commit()
                .map_err(sqlite(format!("migrating {what} {path}")));
        }
        let next = current + 1;
        let step = || sqlite(format!("migrating {what} {path} to schema version {next}"));
        tx.execute_batch(schema.migrations[current as usize])
            .map_err(step())?;
        tx.pragma_update(None, "user_version", next)
            .map_err(step())?;
        tx.commit().map_err(step())?;
        tracing::info!(db = %path, version = next, "{what} schema migrated");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: Schema = Schema {
        what: "test database",
        program: "mcp-test",
        migrations: &[
            "CREATE TABLE a (x INTEGER NOT NULL)",
            "ALTER TABLE a ADD COLUMN y TEXT NOT NULL DEFAULT ''",
        ],
    };

    #[test]
    fn a_file_is_migrated_step_by_step_once_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/t.db");
        let (conn, shown) = open(&path, &SCHEMA, 1).unwrap();
        assert_eq!(shown, path.display().to_string());
        assert_eq!(user_version(&conn).unwrap(), 1);
        conn.execute("INSERT INTO a (x) VALUES (7)", []).unwrap();
        drop(conn);
        let (conn, _) = open(&path, &SCHEMA, SCHEMA.version()).unwrap();
        assert_eq!(user_version(&conn).unwrap(), 2);
        let (x, y): (i64, String) = conn
            .query_row("SELECT x, y FROM a", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!((x, y.as_str()), (7, ""));
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let fk: i64 = conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
        // Opened again: nothing to do.
        drop(conn);
        open(&path, &SCHEMA, SCHEMA.version()).unwrap();

        // A file from a newer version: refused, and left as it was.
        let (conn, _) = open(&path, &SCHEMA, SCHEMA.version()).unwrap();
        conn.pragma_update(None, "user_version", 3).unwrap();
        drop(conn);
        let err = open(&path, &SCHEMA, SCHEMA.version()).unwrap_err();
        assert!(
            matches!(
                err,
                OpenError::TooNew {
                    found: 3,
                    supported: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "test database {} has schema version 3, newer than the latest this version of mcp-test knows (2); upgrade mcp-test",
                path.display()
            )
        );
        let conn = Connection::open(&path).unwrap();
        assert_eq!(user_version(&conn).unwrap(), 3);
        conn.pragma_update(None, "user_version", -1).unwrap();
        drop(conn);
        let err = open(&path, &SCHEMA, SCHEMA.version()).unwrap_err();
        assert!(
            matches!(err, OpenError::BadVersion { found: -1, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_failing_migration_leaves_the_file_at_the_version_before() {
        const BROKEN: Schema = Schema {
            what: "test database",
            program: "mcp-test",
            migrations: &["CREATE TABLE a (x INTEGER)", "CREATE TABLE a (x INTEGER)"],
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let err = open(&path, &BROKEN, BROKEN.version()).unwrap_err();
        assert!(
            err.to_string()
                .contains("to schema version 2: table a already exists"),
            "{err}"
        );
        let conn = Connection::open(&path).unwrap();
        assert_eq!(user_version(&conn).unwrap(), 1);
    }

    #[test]
    fn a_directory_that_cannot_be_made_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, b"").unwrap();
        let err = open(&file.join("t.db"), &SCHEMA, SCHEMA.version()).unwrap_err();
        assert!(matches!(err, OpenError::CreateDir { .. }), "{err}");
        assert!(
            err.to_string().starts_with(&format!(
                "cannot create the directory of the test database, {}",
                file.display()
            )),
            "{err}"
        );
    }
}
