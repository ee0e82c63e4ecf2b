//! The agent's SQLite registry: which services and components the node
//! should run (the desired state), the instances that run them, a history
//! of events, and each component's revisions.
//!
//! A revision is one definition of a component as a deploy left it
//! ([`RevisionRecord`]): numbered 1, 2, 3, ... per component of a service,
//! with its outcome (deployed, failed, rolled back, or a rollback to an
//! earlier revision). [`Registry::rollback_target`] picks the revision a
//! rollback returns to. Only the last [`REVISIONS_KEPT`] revisions of each
//! component are kept: older ones are deleted as new ones are recorded.
//! Like events, revisions outlive the removal of their service.
//!
//! One [`Registry`] owns one connection behind a mutex: every write goes
//! through it, one transaction per operation, so there is a single writer
//! path in the process. The database runs in WAL mode with
//! `synchronous=NORMAL`, so a process killed at any moment leaves a
//! consistent database (the last transactions may be lost, never half
//! applied). Foreign keys are enforced: deleting a service deletes its
//! components.
//!
//! The schema is versioned with `PRAGMA user_version`. [`Registry::open`]
//! applies the missing entries of [`MIGRATIONS`] in order, each in its own
//! transaction, and refuses a database written by a newer version (the
//! conventions of [`mcp_sqlite`], which the master's store follows too).
//!
//! Timestamps are stored and returned as RFC 3339 UTC text with
//! milliseconds (`2024-05-01T12:00:00.123Z`, see [`mcp_core::wire::timestamp`]), which sorts
//! in time order.
//!
//! Calls block on SQLite; async callers with heavy use may want
//! `spawn_blocking`.
//!
//! ```
//! use mcp_agent::registry::{EventFilter, Registry};
//!
//! let dir = tempfile::tempdir()?;
//! let registry = Registry::open(dir.path().join("registry.db"))?;
//! registry.record_event("metacrypt", Some("api"), "started", "")?;
//! let events = registry.events(&EventFilter::default())?;
//! assert_eq!(events[0].kind, "started");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, SubsecRound, Utc};
use mcp_core::wire::timestamp;
use mcp_runtime::RuntimeKind;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use mcp_core::servicedef::{ComponentDef, ServiceDef};

/// The schema migrations, in order: entry `k` takes a database from version
/// `k` to `k + 1` (`PRAGMA user_version`). Never edit a released entry; add a
/// new one.
pub const MIGRATIONS: &[&str] = &[
    // v1: services and their components.
    "CREATE TABLE services (
        name        TEXT PRIMARY KEY NOT NULL,
        active      INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
        node        TEXT,
        tier        TEXT NOT NULL DEFAULT 'worker',
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL
    );
    CREATE TABLE components (
        service      TEXT NOT NULL REFERENCES services(name) ON DELETE CASCADE,
        name         TEXT NOT NULL,
        image        TEXT NOT NULL,
        definition   TEXT NOT NULL,
        spec_hash    TEXT NOT NULL,
        container_id TEXT,
        updated_at   TEXT NOT NULL,
        PRIMARY KEY (service, name)
    );",
    // v2: runtimes other than containers, and their sizing.
    "ALTER TABLE components ADD COLUMN runtime TEXT NOT NULL DEFAULT 'container';
    ALTER TABLE components ADD COLUMN memory INTEGER;
    ALTER TABLE components ADD COLUMN vcpus INTEGER;",
    // v3: the event history.
    "CREATE TABLE events (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        ts         TEXT NOT NULL,
        service    TEXT NOT NULL,
        component  TEXT,
        kind       TEXT NOT NULL,
        detail     TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX events_service_ts ON events (service, ts);
    CREATE INDEX events_ts ON events (ts);",
    // v4: the revision history of each component; what the registry holds
    // already becomes each component's first revision.
    "CREATE TABLE revisions (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        service     TEXT NOT NULL,
        component   TEXT NOT NULL,
        revision    INTEGER NOT NULL,
        ts          TEXT NOT NULL,
        image       TEXT NOT NULL,
        definition  TEXT NOT NULL,
        spec_hash   TEXT NOT NULL,
        outcome     TEXT NOT NULL,
        detail      TEXT NOT NULL DEFAULT '',
        UNIQUE (service, component, revision)
    );
    CREATE INDEX revisions_service_ts ON revisions (service, ts);
    INSERT INTO revisions
        (service, component, revision, ts, image, definition, spec_hash, outcome, detail)
    SELECT service, name, 1, updated_at, image, definition, spec_hash, 'deployed',
        'deployed before history was kept'
    FROM components;",
    // v5: the placement generation a master deployed each service with (0:
    // never placed by a master).
    "ALTER TABLE services ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;",
];

/// The registry's schema: [`MIGRATIONS`], opened the way
/// [`mcp_sqlite`] opens every daemon database.
pub const SCHEMA: mcp_sqlite::Schema = mcp_sqlite::Schema {
    what: "registry",
    program: "mcp",
    migrations: MIGRATIONS,
};

/// The schema version this code writes: the number of [`MIGRATIONS`].
pub const SCHEMA_VERSION: u32 = SCHEMA.version();

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The database could not be opened: its directory, its file, or a
    /// schema newer than this code's.
    #[error(transparent)]
    Open(#[from] mcp_sqlite::OpenError),
    /// SQLite failed while doing what `context` says.
    #[error("{context}: {source}")]
    Sqlite {
        /// What was being done, e.g. `recording deploy of service "web"`.
        context: String,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },
    /// A stored component definition is not valid JSON of a [`ComponentDef`].
    #[error("corrupt definition of component {service}/{component} in the registry: {source}")]
    CorruptDefinition {
        /// The service.
        service: String,
        /// The component.
        component: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A stored value cannot be read back.
    #[error("corrupt {what} in the registry: {value:?}")]
    Corrupt {
        /// Which value, e.g. `runtime of component web/app`.
        what: String,
        /// The value found.
        value: String,
    },
    /// The arguments do not fit together.
    #[error("{0}")]
    Invalid(String),
}

/// Adds what was being done to a SQLite error.
trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, RegistryError>;
}

impl<T> Context<T> for Result<T, rusqlite::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, RegistryError> {
        self.map_err(|source| RegistryError::Sqlite {
            context: what(),
            source,
        })
    }
}

/// A service as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRecord {
    /// The service's name.
    pub name: String,
    /// Desired state.
    pub active: bool,
    /// The node it is pinned to.
    pub node: Option<String>,
    /// `core` or `worker`.
    pub tier: String,
    /// When it was first recorded (RFC 3339 UTC).
    pub created_at: String,
    /// When it was last changed (RFC 3339 UTC).
    pub updated_at: String,
    /// The placement generation a master deployed it with (0: none did).
    /// Kept by the registry across deploys; see [`Registry::set_generation`].
    pub generation: u64,
}

impl ServiceRecord {
    /// The record of a definition (timestamps set to now; the registry keeps
    /// the first `created_at` on update).
    pub fn from_def(def: &ServiceDef) -> ServiceRecord {
        let now = timestamp(Utc::now());
        ServiceRecord {
            name: def.name.clone(),
            active: def.active,
            node: def.node.clone(),
            tier: def.tier.as_str().to_string(),
            created_at: now.clone(),
            updated_at: now,
            generation: 0,
        }
    }
}

/// A component as recorded: its definition and the instance running it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentRecord {
    /// The service it belongs to.
    pub service: String,
    /// The component's name.
    pub name: String,
    /// Container or unikernel.
    pub runtime: RuntimeKind,
    /// Image reference.
    pub image: String,
    /// The full definition.
    pub definition: ComponentDef,
    /// [`ComponentDef::spec_hash`] of the definition.
    pub spec_hash: String,
    /// Memory in bytes.
    pub memory: Option<u64>,
    /// Virtual CPUs.
    pub vcpus: Option<u32>,
    /// Id of the instance running it, when known.
    pub container_id: Option<String>,
    /// When it was last changed (RFC 3339 UTC).
    pub updated_at: String,
}

impl ComponentRecord {
    /// The record of component `def` of `service`, its fields derived from the
    /// definition, with no instance yet.
    pub fn from_def(service: &str, def: &ComponentDef) -> ComponentRecord {
        ComponentRecord {
            service: service.to_string(),
            name: def.name.clone(),
            runtime: def.runtime,
            image: def.image.clone(),
            definition: def.clone(),
            spec_hash: def.spec_hash(),
            memory: def.memory.as_ref().map(|m| m.bytes()),
            vcpus: def.vcpus,
            container_id: None,
            updated_at: timestamp(Utc::now()),
        }
    }
}

/// One entry of the event history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// Increasing id.
    pub id: i64,
    /// When it happened (RFC 3339 UTC, milliseconds).
    pub ts: String,
    /// The service.
    pub service: String,
    /// The component, for component events.
    pub component: Option<String>,
    /// What happened, e.g. `deployed`, `stopped`, `drift:missing`.
    pub kind: String,
    /// Free-form detail.
    pub detail: String,
}

impl EventRecord {
    /// The time of the event.
    pub fn time(&self) -> Result<DateTime<Utc>, RegistryError> {
        parse_timestamp(&self.ts, || format!("timestamp of event {}", self.id))
    }
}

/// Which events [`Registry::events`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only this service's events.
    pub service: Option<String>,
    /// Only events at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only the most recent `limit` events (still returned oldest first).
    pub limit: Option<usize>,
}

/// The most events one page holds.
pub const MAX_EVENTS_PAGE: usize = 1000;

/// Where the next page of events starts: after the event at `ts` with
/// `id`, with `remaining` events left of a `limit`. Opaque to clients (see
/// [`EventCursor::encode`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventCursor {
    /// The last event's time.
    pub ts: String,
    /// The last event's id.
    pub id: i64,
    /// How many more events a `limit` allows; `None` without one.
    pub remaining: Option<usize>,
}

impl EventCursor {
    fn after(last: &EventRecord, remaining: Option<usize>) -> EventCursor {
        EventCursor {
            ts: last.ts.clone(),
            id: last.id,
            remaining,
        }
    }

    /// The cursor as a page token: `<id>.<remaining>.<ts>`.
    pub fn encode(&self) -> String {
        format!(
            "{}.{}.{}",
            self.id,
            self.remaining.map_or_else(String::new, |r| r.to_string()),
            self.ts
        )
    }

    /// The cursor a page token holds; `None` when it is not one.
    pub fn decode(token: &str) -> Option<EventCursor> {
        let mut parts = token.splitn(3, '.');
        let id = parts.next()?.parse().ok()?;
        let remaining = match parts.next()? {
            "" => None,
            r => Some(r.parse().ok()?),
        };
        let ts = parts.next()?.to_string();
        chrono::DateTime::parse_from_rfc3339(&ts).ok()?;
        Some(EventCursor { ts, id, remaining })
    }
}

/// One page of events and where the next starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPage {
    /// The events, oldest first.
    pub events: Vec<EventRecord>,
    /// The next page's cursor; `None` on the last page.
    pub next: Option<EventCursor>,
}

/// How many revisions of each component the registry keeps: recording one
/// more deletes the oldest.
pub const REVISIONS_KEPT: u64 = 50;

/// What became of one revision of a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RevisionOutcome {
    /// The definition was deployed and is (or was) what runs.
    Deployed,
    /// Deploying the definition failed; the previous revision kept running.
    Failed,
    /// The definition was deployed, then undone (the previous revision was
    /// put back). Never a rollback target.
    RolledBack,
    /// A rollback deployed an earlier revision's definition again.
    Rollback,
}

impl RevisionOutcome {
    /// The outcome as stored and shown: `deployed`, `failed`,
    /// `rolled-back` or `rollback`.
    pub fn as_str(self) -> &'static str {
        match self {
            RevisionOutcome::Deployed => "deployed",
            RevisionOutcome::Failed => "failed",
            RevisionOutcome::RolledBack => "rolled-back",
            RevisionOutcome::Rollback => "rollback",
        }
    }

    /// The outcome called `text` ([`RevisionOutcome::as_str`]).
    pub fn parse(text: &str) -> Option<RevisionOutcome> {
        [
            RevisionOutcome::Deployed,
            RevisionOutcome::Failed,
            RevisionOutcome::RolledBack,
            RevisionOutcome::Rollback,
        ]
        .into_iter()
        .find(|o| o.as_str() == text)
    }

    /// Whether a revision with this outcome ran successfully, so a rollback
    /// may return to it.
    pub fn ran(self) -> bool {
        matches!(self, RevisionOutcome::Deployed | RevisionOutcome::Rollback)
    }
}

impl std::fmt::Display for RevisionOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One revision of a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionRecord {
    /// The service.
    pub service: String,
    /// The component.
    pub component: String,
    /// Its number: 1 for the component's first, one more for each after.
    pub revision: u64,
    /// When it was recorded (RFC 3339 UTC, milliseconds). Revisions
    /// recorded together (by one deploy) share their time.
    pub ts: String,
    /// The image of the definition.
    pub image: String,
    /// The component's full definition.
    pub definition: ComponentDef,
    /// [`ComponentDef::spec_hash`] of the definition.
    pub spec_hash: String,
    /// What became of it.
    pub outcome: RevisionOutcome,
    /// Why it failed, or which revision a rollback restored; may be empty.
    pub detail: String,
}

impl RevisionRecord {
    /// The time it was recorded.
    pub fn time(&self) -> Result<DateTime<Utc>, RegistryError> {
        parse_timestamp(&self.ts, || {
            format!(
                "timestamp of revision {} of {}/{}",
                self.revision, self.service, self.component
            )
        })
    }
}

/// A revision to record with [`Registry::record_revisions`].
#[derive(Debug, Clone, Copy)]
pub struct NewRevision<'a> {
    /// The component's definition.
    pub definition: &'a ComponentDef,
    /// What became of it.
    pub outcome: RevisionOutcome,
    /// Why it failed, or which revision a rollback restored.
    pub detail: &'a str,
}

fn parse_timestamp(
    text: &str,
    what: impl FnOnce() -> String,
) -> Result<DateTime<Utc>, RegistryError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| RegistryError::Corrupt {
            what: what(),
            value: text.to_string(),
        })
}

/// The agent's registry. Cheap to share behind an `Arc`; `Send + Sync`.
#[derive(Debug)]
pub struct Registry {
    conn: Mutex<Connection>,
    path: String,
}

impl Registry {
    /// Opens (creating it and its directory if needed) the registry at
    /// `path`, and migrates it to the latest schema.
    pub fn open(path: impl AsRef<Path>) -> Result<Registry, RegistryError> {
        Self::open_at(path.as_ref(), SCHEMA_VERSION)
    }

    /// A registry in memory, for tests: everything but durability and WAL.
    pub fn open_in_memory() -> Result<Registry, RegistryError> {
        let conn = mcp_sqlite::open_in_memory(&SCHEMA)?;
        Ok(Registry {
            conn: Mutex::new(conn),
            path: ":memory:".into(),
        })
    }

    /// Opens the registry at `path` migrated only to schema version
    /// `version` (at most the latest): for migration tests, which build old
    /// databases this way.
    #[doc(hidden)]
    pub fn open_at_version_for_tests(
        path: impl AsRef<Path>,
        version: u32,
    ) -> Result<Registry, RegistryError> {
        if version > SCHEMA_VERSION {
            return Err(RegistryError::Invalid(format!(
                "schema version {version} does not exist; the latest is {SCHEMA_VERSION}"
            )));
        }
        Self::open_at(path.as_ref(), version)
    }

    fn open_at(path: &Path, version: u32) -> Result<Registry, RegistryError> {
        let (conn, path) = mcp_sqlite::open(path, &SCHEMA, version)?;
        Ok(Registry {
            conn: Mutex::new(conn),
            path,
        })
    }

    /// The database file, as given to [`Registry::open`].
    pub fn path(&self) -> &str {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a transaction half
        // applied (dropping it rolls back), so the connection stays usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The schema version of the database (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<u32, RegistryError> {
        let v =
            mcp_sqlite::user_version(&self.conn()).context(|| "reading schema version".into())?;
        u32::try_from(v).map_err(|_| RegistryError::Corrupt {
            what: "schema version".into(),
            value: v.to_string(),
        })
    }

    /// Records a deploy, in one transaction: creates or updates `service`,
    /// creates or updates each of `components`, and deletes the components
    /// named in `remove_components`. Components of the service that are in
    /// neither list are left as they are, so deploying one component does
    /// not forget the others.
    ///
    /// The registry sets the timestamps: `created_at` when the service is
    /// first recorded (kept afterwards), `updated_at` now. A component's
    /// `container_id` of `None` keeps the recorded id (use
    /// [`Registry::set_container_id`] to clear it).
    pub fn record_deploy(
        &self,
        service: &ServiceRecord,
        components: &[ComponentRecord],
        remove_components: &[String],
    ) -> Result<(), RegistryError> {
        if let Some(c) = components.iter().find(|c| c.service != service.name) {
            return Err(RegistryError::Invalid(format!(
                "component {:?} belongs to service {:?}, not {:?}",
                c.name, c.service, service.name
            )));
        }
        let now = timestamp(Utc::now());
        let what = || format!("recording deploy of service {:?}", service.name);
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context(what)?;
        tx.execute(
            "INSERT INTO services (name, active, node, tier, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)
             ON CONFLICT (name) DO UPDATE SET
                active = excluded.active, node = excluded.node, tier = excluded.tier,
                updated_at = excluded.updated_at",
            params![
                service.name,
                service.active,
                service.node,
                service.tier,
                now
            ],
        )
        .context(what)?;
        for c in components {
            let definition = serde_json::to_string(&c.definition).map_err(|source| {
                RegistryError::CorruptDefinition {
                    service: c.service.clone(),
                    component: c.name.clone(),
                    source,
                }
            })?;
            let memory = c.memory.map(i64::try_from).transpose().map_err(|_| {
                RegistryError::Invalid(format!("memory of {:?} is too large", c.name))
            })?;
            tx.execute(
                "INSERT INTO components
                    (service, name, image, definition, spec_hash, container_id, updated_at,
                     runtime, memory, vcpus)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (service, name) DO UPDATE SET
                    image = excluded.image, definition = excluded.definition,
                    spec_hash = excluded.spec_hash,
                    container_id = COALESCE(excluded.container_id, components.container_id),
                    updated_at = excluded.updated_at, runtime = excluded.runtime,
                    memory = excluded.memory, vcpus = excluded.vcpus",
                params![
                    c.service,
                    c.name,
                    c.image,
                    definition,
                    c.spec_hash,
                    c.container_id,
                    now,
                    c.runtime.as_str(),
                    memory,
                    c.vcpus,
                ],
            )
            .context(what)?;
        }
        for name in remove_components {
            tx.execute(
                "DELETE FROM components WHERE service = ?1 AND name = ?2",
                params![service.name, name],
            )
            .context(what)?;
        }
        tx.commit().context(what)
    }

    /// The service called `name`, if recorded.
    pub fn get_service(&self, name: &str) -> Result<Option<ServiceRecord>, RegistryError> {
        self.conn()
            .query_row(
                &format!("{SERVICE_COLUMNS} WHERE name = ?1"),
                [name],
                service_row,
            )
            .optional()
            .context(|| format!("reading service {name:?}"))
    }

    /// Every recorded service, ordered by name.
    pub fn list_services(&self) -> Result<Vec<ServiceRecord>, RegistryError> {
        let conn = self.conn();
        let what = || "listing services".to_string();
        let mut stmt = conn
            .prepare(&format!("{SERVICE_COLUMNS} ORDER BY name"))
            .context(what)?;
        let rows = stmt.query_map([], service_row).context(what)?;
        rows.collect::<Result<Vec<_>, _>>().context(what)
    }

    /// The components of `service`, ordered by name (empty when the service
    /// is not recorded).
    pub fn components(&self, service: &str) -> Result<Vec<ComponentRecord>, RegistryError> {
        self.query_components(
            &format!("{COMPONENT_COLUMNS} WHERE service = ?1 ORDER BY name"),
            &[&service],
            || format!("reading components of service {service:?}"),
        )
    }

    /// One component, if recorded.
    pub fn get_component(
        &self,
        service: &str,
        name: &str,
    ) -> Result<Option<ComponentRecord>, RegistryError> {
        Ok(self
            .query_components(
                &format!("{COMPONENT_COLUMNS} WHERE service = ?1 AND name = ?2"),
                &[&service, &name],
                || format!("reading component {service}/{name}"),
            )?
            .pop())
    }

    /// Every recorded component, ordered by service then name.
    pub fn all_components(&self) -> Result<Vec<ComponentRecord>, RegistryError> {
        self.query_components(
            &format!("{COMPONENT_COLUMNS} ORDER BY service, name"),
            &[],
            || "listing components".into(),
        )
    }

    fn query_components(
        &self,
        sql: &str,
        args: &[&dyn rusqlite::ToSql],
        what: impl Fn() -> String,
    ) -> Result<Vec<ComponentRecord>, RegistryError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(sql).context(&what)?;
        let rows = stmt.query_map(args, ComponentRow::read).context(&what)?;
        let rows = rows.collect::<Result<Vec<_>, _>>().context(&what)?;
        rows.into_iter().map(ComponentRow::into_record).collect()
    }

    /// Sets the desired state of `service`; returns whether it is recorded.
    pub fn set_active(&self, service: &str, active: bool) -> Result<bool, RegistryError> {
        let n = self
            .conn()
            .execute(
                "UPDATE services SET active = ?2, updated_at = ?3 WHERE name = ?1",
                params![service, active, timestamp(Utc::now())],
            )
            .context(|| format!("setting service {service:?} active={active}"))?;
        Ok(n > 0)
    }

    /// Records that a master placed `service` at `generation`; returns
    /// whether the service is recorded.
    pub fn set_generation(&self, service: &str, generation: u64) -> Result<bool, RegistryError> {
        let n = self
            .conn()
            .execute(
                "UPDATE services SET generation = ?2 WHERE name = ?1",
                params![service, i64::try_from(generation).unwrap_or(i64::MAX)],
            )
            .context(|| format!("recording generation {generation} of service {service:?}"))?;
        Ok(n > 0)
    }

    /// Records (or with `None` clears) the id of the instance running a
    /// component; returns whether the component is recorded.
    pub fn set_container_id(
        &self,
        service: &str,
        component: &str,
        container_id: Option<&str>,
    ) -> Result<bool, RegistryError> {
        let n = self
            .conn()
            .execute(
                "UPDATE components SET container_id = ?3, updated_at = ?4
                 WHERE service = ?1 AND name = ?2",
                params![service, component, container_id, timestamp(Utc::now())],
            )
            .context(|| format!("setting container id of component {service}/{component}"))?;
        Ok(n > 0)
    }

    /// Forgets a service and its components (its events stay); returns
    /// whether it was recorded.
    pub fn delete_service(&self, name: &str) -> Result<bool, RegistryError> {
        let n = self
            .conn()
            .execute("DELETE FROM services WHERE name = ?1", [name])
            .context(|| format!("deleting service {name:?}"))?;
        Ok(n > 0)
    }

    /// Appends an event, stamped now, and returns it.
    pub fn record_event(
        &self,
        service: &str,
        component: Option<&str>,
        kind: &str,
        detail: &str,
    ) -> Result<EventRecord, RegistryError> {
        self.record_event_at(Utc::now(), service, component, kind, detail)
    }

    pub(crate) fn record_event_at(
        &self,
        time: DateTime<Utc>,
        service: &str,
        component: Option<&str>,
        kind: &str,
        detail: &str,
    ) -> Result<EventRecord, RegistryError> {
        let ts = timestamp(time.trunc_subsecs(3));
        let conn = self.conn();
        let what = || format!("recording event {kind:?} of service {service:?}");
        conn.execute(
            "INSERT INTO events (ts, service, component, kind, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![ts, service, component, kind, detail],
        )
        .context(what)?;
        Ok(EventRecord {
            id: conn.last_insert_rowid(),
            ts,
            service: service.to_string(),
            component: component.map(str::to_string),
            kind: kind.to_string(),
            detail: detail.to_string(),
        })
    }

    /// Events matching `filter`, oldest first. With a `limit`, the most
    /// recent `limit` of them.
    pub fn events(&self, filter: &EventFilter) -> Result<Vec<EventRecord>, RegistryError> {
        let mut all = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.events_page(filter, cursor.as_ref(), MAX_EVENTS_PAGE)?;
            all.extend(page.events);
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// One page of the events matching `filter`, oldest first: at most
    /// `size` (capped at [`MAX_EVENTS_PAGE`]) of them, starting after
    /// `cursor` (from the page before), and the cursor of the next page
    /// when there is one. With a `limit`, the pages together hold the most
    /// recent `limit` events as they were at the first page. Each page is
    /// one bounded query over an index, the lock held only for it.
    pub fn events_page(
        &self,
        filter: &EventFilter,
        cursor: Option<&EventCursor>,
        size: usize,
    ) -> Result<EventPage, RegistryError> {
        let size = size.clamp(1, MAX_EVENTS_PAGE);
        let mut cond = String::from(" WHERE 1 = 1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(service) = &filter.service {
            args.push(service.clone().into());
            cond.push_str(&format!(" AND service = ?{}", args.len()));
        }
        if let Some(since) = filter.since {
            args.push(timestamp(since.trunc_subsecs(3)).into());
            cond.push_str(&format!(" AND ts >= ?{}", args.len()));
        }
        let conn = self.conn();
        let what = || "reading events".to_string();
        // Where the pages start, and how many events they may still hold.
        let (from, remaining) = match cursor {
            Some(c) => (Some((c.ts.clone(), c.id, false)), c.remaining),
            None => match filter.limit {
                Some(limit) => {
                    let first: Option<(String, i64)> = conn
                        .query_row(
                            &format!(
                                "SELECT ts, id FROM events{cond} ORDER BY ts DESC, id DESC LIMIT 1 OFFSET {}",
                                limit.saturating_sub(1)
                            ),
                            rusqlite::params_from_iter(args.iter()),
                            |row| Ok((row.get(0)?, row.get(1)?)),
                        )
                        .optional()
                        .context(what)?;
                    (first.map(|(ts, id)| (ts, id, true)), Some(limit))
                }
                None => (None, None),
            },
        };
        if let Some((ts, id, inclusive)) = from {
            args.push(ts.into());
            args.push(id.into());
            cond.push_str(&format!(
                " AND (ts, id) {} (?{}, ?{})",
                if inclusive { ">=" } else { ">" },
                args.len() - 1,
                args.len()
            ));
        }
        let take = remaining.map_or(size, |r| r.min(size));
        let sql = format!(
            "SELECT id, ts, service, component, kind, detail FROM events{cond} ORDER BY ts, id LIMIT {}",
            take + 1
        );
        let mut stmt = conn.prepare(&sql).context(what)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args.iter()), |row| {
                Ok(EventRecord {
                    id: row.get(0)?,
                    ts: row.get(1)?,
                    service: row.get(2)?,
                    component: row.get(3)?,
                    kind: row.get(4)?,
                    detail: row.get(5)?,
                })
            })
            .context(what)?;
        let mut events = rows.collect::<Result<Vec<_>, _>>().context(what)?;
        let more = events.len() > take;
        events.truncate(take);
        let left = remaining.map(|r| r - events.len());
        let next = match (more, left, events.last()) {
            (true, None, Some(last)) => Some(EventCursor::after(last, None)),
            (true, Some(left), Some(last)) if left > 0 => {
                Some(EventCursor::after(last, Some(left)))
            }
            _ => None,
        };
        Ok(EventPage { events, next })
    }

    /// Deletes events older than `older_than`; returns how many.
    pub fn prune_events(&self, older_than: DateTime<Utc>) -> Result<usize, RegistryError> {
        self.conn()
            .execute(
                "DELETE FROM events WHERE ts < ?1",
                [timestamp(older_than.trunc_subsecs(3))],
            )
            .context(|| "pruning events".into())
    }

    /// Records a new revision of component `definition` of `service`,
    /// stamped now, and returns it (see [`Registry::record_revisions`]).
    pub fn record_revision(
        &self,
        service: &str,
        definition: &ComponentDef,
        outcome: RevisionOutcome,
        detail: &str,
    ) -> Result<RevisionRecord, RegistryError> {
        let new = NewRevision {
            definition,
            outcome,
            detail,
        };
        let mut recorded = self.record_revisions(service, &[new])?;
        recorded.pop().ok_or_else(|| {
            RegistryError::Invalid(format!("no revision of service {service:?} was recorded"))
        })
    }

    /// Records one new revision per entry of `revisions` (components of
    /// `service`), in one transaction, and returns them. Each is numbered
    /// one more than its component's last; all share one time, now (or, if
    /// the clock went back, one millisecond after the service's last
    /// revision, so a service's revision times only ever increase). Each
    /// component keeps its last [`REVISIONS_KEPT`] revisions; older ones are
    /// deleted.
    pub fn record_revisions(
        &self,
        service: &str,
        revisions: &[NewRevision<'_>],
    ) -> Result<Vec<RevisionRecord>, RegistryError> {
        self.record_revisions_at(Utc::now(), service, revisions)
    }

    pub(crate) fn record_revisions_at(
        &self,
        time: DateTime<Utc>,
        service: &str,
        revisions: &[NewRevision<'_>],
    ) -> Result<Vec<RevisionRecord>, RegistryError> {
        let what = || format!("recording revisions of service {service:?}");
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context(what)?;
        let mut time = time.trunc_subsecs(3);
        let last: Option<String> = tx
            .query_row(
                "SELECT MAX(ts) FROM revisions WHERE service = ?1",
                [service],
                |row| row.get(0),
            )
            .context(what)?;
        if let Some(last) = last {
            let last = parse_timestamp(&last, || {
                format!("timestamp of a revision of service {service:?}")
            })?;
            if last >= time {
                time = last + chrono::Duration::milliseconds(1);
            }
        }
        let ts = timestamp(time);
        let mut recorded = Vec::with_capacity(revisions.len());
        for new in revisions {
            let component = new.definition.name.as_str();
            let definition = serde_json::to_string(new.definition).map_err(|source| {
                RegistryError::CorruptDefinition {
                    service: service.to_string(),
                    component: component.to_string(),
                    source,
                }
            })?;
            let last: Option<i64> = tx
                .query_row(
                    "SELECT MAX(revision) FROM revisions WHERE service = ?1 AND component = ?2",
                    params![service, component],
                    |row| row.get(0),
                )
                .context(what)?;
            let revision = last.unwrap_or(0).saturating_add(1);
            let spec_hash = new.definition.spec_hash();
            tx.execute(
                "INSERT INTO revisions
                    (service, component, revision, ts, image, definition, spec_hash, outcome,
                     detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    service,
                    component,
                    revision,
                    ts,
                    new.definition.image,
                    definition,
                    spec_hash,
                    new.outcome.as_str(),
                    new.detail,
                ],
            )
            .context(what)?;
            let kept = i64::try_from(REVISIONS_KEPT).unwrap_or(i64::MAX);
            tx.execute(
                "DELETE FROM revisions WHERE service = ?1 AND component = ?2 AND revision <= ?3",
                params![service, component, revision.saturating_sub(kept)],
            )
            .context(what)?;
            recorded.push(RevisionRecord {
                service: service.to_string(),
                component: component.to_string(),
                revision: u64::try_from(revision).unwrap_or_default(),
                ts: ts.clone(),
                image: new.definition.image.clone(),
                definition: new.definition.clone(),
                spec_hash,
                outcome: new.outcome,
                detail: new.detail.to_string(),
            });
        }
        tx.commit().context(what)?;
        Ok(recorded)
    }

    /// The revisions of `service` (of one `component` when given), newest
    /// first; with a `limit`, the newest `limit` of them.
    pub fn revisions(
        &self,
        service: &str,
        component: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<RevisionRecord>, RegistryError> {
        let limit = limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
        self.query_revisions(
            &format!(
                "{REVISION_COLUMNS} WHERE service = ?1 AND (?2 IS NULL OR component = ?2)
                 ORDER BY ts DESC, id DESC LIMIT ?3"
            ),
            &[&service, &component, &limit],
            || format!("reading revisions of service {service:?}"),
        )
    }

    /// The revision a rollback of `component` of `service` returns to: the
    /// newest that ran (outcome `deployed` or `rollback`, see
    /// [`RevisionOutcome::ran`]) and whose spec hash differs from the one
    /// the component has now. `None` when there is none.
    pub fn rollback_target(
        &self,
        service: &str,
        component: &str,
    ) -> Result<Option<RevisionRecord>, RegistryError> {
        Ok(self
            .query_revisions(
                &format!(
                    "{REVISION_COLUMNS} WHERE service = ?1 AND component = ?2
                        AND outcome IN ('{}', '{}')
                        AND spec_hash <> COALESCE(
                            (SELECT spec_hash FROM components WHERE service = ?1 AND name = ?2),
                            '')
                     ORDER BY revision DESC LIMIT 1",
                    RevisionOutcome::Deployed.as_str(),
                    RevisionOutcome::Rollback.as_str(),
                ),
                &[&service, &component],
                || format!("finding the revision to roll {service}/{component} back to"),
            )?
            .pop())
    }

    fn query_revisions(
        &self,
        sql: &str,
        args: &[&dyn rusqlite::ToSql],
        what: impl Fn() -> String,
    ) -> Result<Vec<RevisionRecord>, RegistryError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(sql).context(&what)?;
        let rows = stmt.query_map(args, RevisionRow::read).context(&what)?;
        let rows = rows.collect::<Result<Vec<_>, _>>().context(&what)?;
        rows.into_iter().map(RevisionRow::into_record).collect()
    }
}

const REVISION_COLUMNS: &str = "SELECT service, component, revision, ts, image, definition,
    spec_hash, outcome, detail FROM revisions";

/// A revision row as stored, before its JSON and outcome are decoded.
struct RevisionRow {
    service: String,
    component: String,
    revision: i64,
    ts: String,
    image: String,
    definition: String,
    spec_hash: String,
    outcome: String,
    detail: String,
}

impl RevisionRow {
    fn read(row: &Row<'_>) -> rusqlite::Result<RevisionRow> {
        Ok(RevisionRow {
            service: row.get(0)?,
            component: row.get(1)?,
            revision: row.get(2)?,
            ts: row.get(3)?,
            image: row.get(4)?,
            definition: row.get(5)?,
            spec_hash: row.get(6)?,
            outcome: row.get(7)?,
            detail: row.get(8)?,
        })
    }

    fn into_record(self) -> Result<RevisionRecord, RegistryError> {
        let corrupt = |field: &str, value: String| RegistryError::Corrupt {
            what: format!(
                "{field} of revision {} of {}/{}",
                self.revision, self.service, self.component
            ),
            value,
        };
        let outcome = RevisionOutcome::parse(&self.outcome)
            .ok_or_else(|| corrupt("outcome", self.outcome.clone()))?;
        let revision = u64::try_from(self.revision)
            .map_err(|_| corrupt("number", self.revision.to_string()))?;
        let definition = serde_json::from_str(&self.definition).map_err(|source| {
            RegistryError::CorruptDefinition {
                service: self.service.clone(),
                component: self.component.clone(),
                source,
            }
        })?;
        Ok(RevisionRecord {
            service: self.service,
            component: self.component,
            revision,
            ts: self.ts,
            image: self.image,
            definition,
            spec_hash: self.spec_hash,
            outcome,
            detail: self.detail,
        })
    }
}

const SERVICE_COLUMNS: &str =
    "SELECT name, active, node, tier, created_at, updated_at, generation FROM services";

fn service_row(row: &Row<'_>) -> rusqlite::Result<ServiceRecord> {
    Ok(ServiceRecord {
        name: row.get(0)?,
        active: row.get(1)?,
        node: row.get(2)?,
        tier: row.get(3)?,
        created_at: row.get(4)?,
        updated_at: row.get(5)?,
        generation: u64::try_from(row.get::<_, i64>(6)?).unwrap_or(0),
    })
}

const COMPONENT_COLUMNS: &str = "SELECT service, name, runtime, image, definition, spec_hash,
    memory, vcpus, container_id, updated_at FROM components";

/// A component row as stored, before its JSON and enums are decoded.
struct ComponentRow {
    service: String,
    name: String,
    runtime: String,
    image: String,
    definition: String,
    spec_hash: String,
    memory: Option<i64>,
    vcpus: Option<i64>,
    container_id: Option<String>,
    updated_at: String,
}

impl ComponentRow {
    fn read(row: &Row<'_>) -> rusqlite::Result<ComponentRow> {
        Ok(ComponentRow {
            service: row.get(0)?,
            name: row.get(1)?,
            runtime: row.get(2)?,
            image: row.get(3)?,
            definition: row.get(4)?,
            spec_hash: row.get(5)?,
            memory: row.get(6)?,
            vcpus: row.get(7)?,
            container_id: row.get(8)?,
            updated_at: row.get(9)?,
        })
    }

    fn into_record(self) -> Result<ComponentRecord, RegistryError> {
        let corrupt = |field: &str, value: String| RegistryError::Corrupt {
            what: format!("{field} of component {}/{}", self.service, self.name),
            value,
        };
        let runtime = match self.runtime.as_str() {
            "container" => RuntimeKind::Container,
            "unikernel" => RuntimeKind::Unikernel,
            other => return Err(corrupt("runtime", other.to_string())),
        };
        let memory = self
            .memory
            .map(|m| u64::try_from(m).map_err(|_| corrupt("memory", m.to_string())))
            .transpose()?;
        let vcpus = self
            .vcpus
            .map(|v| u32::try_from(v).map_err(|_| corrupt("vcpus", v.to_string())))
            .transpose()?;
        let definition = serde_json::from_str(&self.definition).map_err(|source| {
            RegistryError::CorruptDefinition {
                service: self.service.clone(),
                component: self.name.clone(),
                source,
            }
        })?;
        Ok(ComponentRecord {
            service: self.service,
            name: self.name,
            runtime,
            image: self.image,
            definition,
            spec_hash: self.spec_hash,
            memory,
            vcpus,
            container_id: self.container_id,
            updated_at: self.updated_at,
        })
    }
}
