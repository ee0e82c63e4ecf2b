//! The master's SQLite database, of which it is the single writer: the
//! nodes (what they registered and when they last heartbeat), the
//! placements (each service's definition, node and generation) and the
//! fleet's events.
//!
//! Losing it loses nothing: a master started on an empty database learns
//! the nodes and placements again from the agents' registrations.
//!
//! Opened like the agent's registry, by [`mcp_sqlite`]: WAL mode with
//! `synchronous=NORMAL` (a process killed at any moment leaves a consistent
//! database), a schema versioned with `PRAGMA user_version` and migrated in
//! order at open, one transaction each, and a database of a newer version
//! refused.
//! Timestamps are RFC 3339 UTC text with milliseconds, which sorts in time
//! order.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, SubsecRound, Utc};
use mcp_core::placement::{NodeRole, Resources};
use mcp_core::servicedef::ServiceDef;
use mcp_core::wire::timestamp;
use rusqlite::{Connection, OptionalExtension, Row, params};

/// The schema migrations, in order: entry `k` takes a database from version
/// `k` to `k + 1`. Never edit a released entry; add a new one.
pub const MIGRATIONS: &[&str] = &[
    // 1: nodes, placements, events.
    "CREATE TABLE nodes (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        address TEXT NOT NULL,
        arch TEXT NOT NULL,
        version TEXT NOT NULL,
        capacity_memory INTEGER NOT NULL,
        capacity_cpus INTEGER NOT NULL,
        boot_id TEXT NOT NULL,
        publish_address TEXT NOT NULL DEFAULT '',
        registered_at TEXT NOT NULL,
        last_heartbeat TEXT NOT NULL,
        used_memory INTEGER NOT NULL DEFAULT 0,
        used_cpus INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL,
        state_since TEXT NOT NULL,
        draining INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE placements (
        service TEXT PRIMARY KEY,
        node TEXT NOT NULL,
        generation INTEGER NOT NULL,
        definition TEXT NOT NULL,
        demand_memory INTEGER NOT NULL,
        demand_cpus INTEGER NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX placements_node ON placements(node);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts TEXT NOT NULL,
        node TEXT NOT NULL,
        service TEXT NOT NULL DEFAULT '',
        kind TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX events_ts ON events(ts, id);",
    // 2: the digest of the inventory a node registered with.
    "ALTER TABLE nodes ADD COLUMN inventory_digest TEXT NOT NULL DEFAULT '';",
];

/// The master database's schema: [`MIGRATIONS`], opened the way
/// [`mcp_sqlite`] opens every daemon database.
pub const SCHEMA: mcp_sqlite::Schema = mcp_sqlite::Schema {
    what: "master database",
    program: "mcp-master",
    migrations: MIGRATIONS,
};

/// The schema version this code writes.
pub const SCHEMA_VERSION: u32 = SCHEMA.version();

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened: its directory, its file, or a
    /// schema newer than this code's.
    #[error(transparent)]
    Open(#[from] mcp_sqlite::OpenError),
    /// SQLite failed while doing what `context` says.
    #[error("{context}: {source}")]
    Sqlite {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// A stored value cannot be read back.
    #[error("master database: {what} holds {value:?}, which this version cannot read")]
    Corrupt {
        /// Which value.
        what: String,
        /// What it holds.
        value: String,
    },
}

trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, rusqlite::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Sqlite {
            context: what(),
            source,
        })
    }
}

/// A node as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    /// Its name.
    pub name: String,
    /// Worker, core or edge.
    pub role: NodeRole,
    /// `host:port` the master dials.
    pub address: String,
    /// Machine architecture.
    pub arch: String,
    /// Agent version.
    pub version: String,
    /// What it offers.
    pub capacity: Resources,
    /// The boot id of its last registration.
    pub boot_id: String,
    /// Where it publishes ports without a host address; empty for everywhere.
    pub publish_address: String,
    /// When it last registered.
    pub registered_at: DateTime<Utc>,
    /// When it last heartbeat (or registered).
    pub last_heartbeat: DateTime<Utc>,
    /// What it reported using.
    pub used: Resources,
    /// The state last recorded (`ready`, `suspect`, `down`, `draining`).
    pub state: String,
    /// Since when.
    pub state_since: DateTime<Utc>,
    /// Whether an operator drains it.
    pub draining: bool,
}

/// What a node says of itself when it registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Its name.
    pub name: String,
    /// Worker, core or edge.
    pub role: NodeRole,
    /// `host:port` the master dials.
    pub address: String,
    /// Machine architecture.
    pub arch: String,
    /// Agent version.
    pub version: String,
    /// What it offers.
    pub capacity: Resources,
    /// This start's boot id.
    pub boot_id: String,
    /// Its publish address; empty for everywhere.
    pub publish_address: String,
    /// The digest of the inventory it registered with.
    pub inventory_digest: String,
}

/// A service's placement as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementRecord {
    /// The service.
    pub service: String,
    /// The node it is placed on.
    pub node: String,
    /// Its placement generation.
    pub generation: u64,
    /// Its definition.
    pub definition: ServiceDef,
    /// What it asks of its node.
    pub demand: Resources,
    /// When the placement last changed.
    pub updated_at: DateTime<Utc>,
}

/// One fleet event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetEvent {
    /// Its id, in recording order.
    pub id: i64,
    /// When (RFC 3339).
    pub time: String,
    /// The node it is about.
    pub node: String,
    /// The service, or empty.
    pub service: String,
    /// What happened (`joined`, `suspect`, `down`, `back`, `draining`, ...).
    pub kind: String,
    /// More words.
    pub detail: String,
}

/// The master's database.
pub struct Store {
    conn: Mutex<Connection>,
    path: String,
}

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

fn parse_time(what: &str, text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| StoreError::Corrupt {
            what: what.to_string(),
            value: text.to_string(),
        })
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(what: &str, n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt {
        what: what.to_string(),
        value: n.to_string(),
    })
}

fn to_u32(what: &str, n: i64) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| StoreError::Corrupt {
        what: what.to_string(),
        value: n.to_string(),
    })
}

const NODE_COLUMNS: &str = "name, role, address, arch, version, capacity_memory, capacity_cpus, \
     boot_id, publish_address, registered_at, last_heartbeat, used_memory, used_cpus, state, \
     state_since, draining";

/// A node row as SQLite holds it, before its values are checked.
struct NodeRow {
    name: String,
    role: String,
    address: String,
    arch: String,
    version: String,
    capacity_memory: i64,
    capacity_cpus: i64,
    boot_id: String,
    publish_address: String,
    registered_at: String,
    last_heartbeat: String,
    used_memory: i64,
    used_cpus: i64,
    state: String,
    state_since: String,
    draining: bool,
}

impl NodeRow {
    fn read(row: &Row) -> rusqlite::Result<NodeRow> {
        Ok(NodeRow {
            name: row.get(0)?,
            role: row.get(1)?,
            address: row.get(2)?,
            arch: row.get(3)?,
            version: row.get(4)?,
            capacity_memory: row.get(5)?,
            capacity_cpus: row.get(6)?,
            boot_id: row.get(7)?,
            publish_address: row.get(8)?,
            registered_at: row.get(9)?,
            last_heartbeat: row.get(10)?,
            used_memory: row.get(11)?,
            used_cpus: row.get(12)?,
            state: row.get(13)?,
            state_since: row.get(14)?,
            draining: row.get(15)?,
        })
    }

    fn check(self) -> Result<NodeRecord, StoreError> {
        let what = |field: &str| format!("node {:?} {field}", self.name);
        let role = NodeRole::parse(&self.role).ok_or_else(|| StoreError::Corrupt {
            what: what("role"),
            value: self.role.clone(),
        })?;
        Ok(NodeRecord {
            role,
            capacity: Resources {
                memory: to_u64(&what("capacity"), self.capacity_memory)?,
                cpus: to_u32(&what("capacity"), self.capacity_cpus)?,
            },
            used: Resources {
                memory: to_u64(&what("use"), self.used_memory)?,
                cpus: to_u32(&what("use"), self.used_cpus)?,
            },
            registered_at: parse_time(&what("registered_at"), &self.registered_at)?,
            last_heartbeat: parse_time(&what("last_heartbeat"), &self.last_heartbeat)?,
            state_since: parse_time(&what("state_since"), &self.state_since)?,
            name: self.name,
            address: self.address,
            arch: self.arch,
            version: self.version,
            boot_id: self.boot_id,
            publish_address: self.publish_address,
            state: self.state,
            draining: self.draining,
        })
    }
}

impl Store {
    /// Opens (creating and migrating) the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let (conn, path) = mcp_sqlite::open(path.as_ref(), &SCHEMA, SCHEMA_VERSION)?;
        Ok(Store {
            conn: Mutex::new(conn),
            path,
        })
    }

    /// A database in memory, for tests.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        Ok(Store {
            conn: Mutex::new(mcp_sqlite::open_in_memory(&SCHEMA)?),
            path: ":memory:".into(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &str {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // Dropping a transaction rolls it back: a panic cannot leave one
        // half applied, so the connection stays usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The schema version of the database.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        let v = mcp_sqlite::user_version(&self.conn())
            .context(|| "reading the schema version".into())?;
        to_u32("schema version", v)
    }

    /// Every node, by name.
    pub fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY name"))
            .context(|| "listing nodes".into())?;
        let rows = stmt
            .query_map([], NodeRow::read)
            .context(|| "listing nodes".into())?
            .collect::<rusqlite::Result<Vec<_>>>()
            .context(|| "listing nodes".into())?;
        rows.into_iter().map(NodeRow::check).collect()
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Result<Option<NodeRecord>, StoreError> {
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!("SELECT {NODE_COLUMNS} FROM nodes WHERE name = ?1"),
                [name],
                NodeRow::read,
            )
            .optional()
            .context(|| format!("reading node {name:?}"))?;
        row.map(NodeRow::check).transpose()
    }

    /// Records a registration: a new node, or a known one with what it says
    /// now and a fresh heartbeat. Its state becomes `state` (with an event
    /// of `kind`) and its draining flag stays.
    pub fn register(
        &self,
        node: &Registration,
        state: &str,
        kind: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        let at = timestamp(now());
        let mut conn = self.conn();
        let what = || format!("registering node {:?}", node.name);
        let tx = conn.transaction().context(what)?;
        tx.execute(
            "INSERT INTO nodes (name, role, address, arch, version, capacity_memory, capacity_cpus,
                 boot_id, publish_address, registered_at, last_heartbeat, state, state_since,
                 inventory_digest)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11, ?10, ?12)
             ON CONFLICT(name) DO UPDATE SET role = ?2, address = ?3, arch = ?4, version = ?5,
                 capacity_memory = ?6, capacity_cpus = ?7, boot_id = ?8, publish_address = ?9,
                 registered_at = ?10, last_heartbeat = ?10, inventory_digest = ?12,
                 state_since = CASE WHEN state = ?11 THEN state_since ELSE ?10 END,
                 state = ?11",
            params![
                node.name,
                node.role.as_str(),
                node.address,
                node.arch,
                node.version,
                to_i64(node.capacity.memory),
                node.capacity.cpus,
                node.boot_id,
                node.publish_address,
                at,
                state,
                node.inventory_digest,
            ],
        )
        .context(what)?;
        insert_event(&tx, &at, &node.name, "", kind, detail).context(what)?;
        tx.commit().context(what)
    }

    /// Records a heartbeat of `name` with `boot_id`, its use and the digest
    /// of what it holds; false when no such node registered with that boot
    /// id and that inventory digest (it must register again).
    pub fn heartbeat(
        &self,
        name: &str,
        boot_id: &str,
        used: Resources,
        inventory_digest: &str,
    ) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .execute(
                "UPDATE nodes SET last_heartbeat = ?3, used_memory = ?4, used_cpus = ?5
                 WHERE name = ?1 AND boot_id = ?2 AND inventory_digest = ?6",
                params![
                    name,
                    boot_id,
                    timestamp(now()),
                    to_i64(used.memory),
                    used.cpus,
                    inventory_digest
                ],
            )
            .context(|| format!("recording a heartbeat of node {name:?}"))?;
        Ok(n == 1)
    }

    /// Records that `name` is now in `state`, with an event of `kind`;
    /// false (and nothing recorded) when it already was.
    pub fn set_state(
        &self,
        name: &str,
        state: &str,
        kind: &str,
        detail: &str,
    ) -> Result<bool, StoreError> {
        let at = timestamp(now());
        let mut conn = self.conn();
        let what = || format!("recording node {name:?} {state}");
        let tx = conn.transaction().context(what)?;
        let n = tx
            .execute(
                "UPDATE nodes SET state = ?2, state_since = ?3 WHERE name = ?1 AND state <> ?2",
                params![name, state, at],
            )
            .context(what)?;
        if n == 1 {
            insert_event(&tx, &at, name, "", kind, detail).context(what)?;
        }
        tx.commit().context(what)?;
        Ok(n == 1)
    }

    /// Sets or clears the draining flag of `name`; false when there is no
    /// such node.
    pub fn set_draining(&self, name: &str, draining: bool) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .execute(
                "UPDATE nodes SET draining = ?2 WHERE name = ?1",
                params![name, draining],
            )
            .context(|| format!("draining node {name:?}"))?;
        Ok(n == 1)
    }

    /// Every placement, by service.
    pub fn placements(&self) -> Result<Vec<PlacementRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {PLACEMENT_COLUMNS} FROM placements ORDER BY service"
            ))
            .context(|| "listing placements".into())?;
        let rows = stmt
            .query_map([], PlacementRow::read)
            .context(|| "listing placements".into())?
            .collect::<rusqlite::Result<Vec<_>>>()
            .context(|| "listing placements".into())?;
        rows.into_iter().map(PlacementRow::check).collect()
    }

    /// The placement of `service`, if it has one.
    pub fn placement(&self, service: &str) -> Result<Option<PlacementRecord>, StoreError> {
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!("SELECT {PLACEMENT_COLUMNS} FROM placements WHERE service = ?1"),
                [service],
                PlacementRow::read,
            )
            .optional()
            .context(|| format!("reading the placement of {service:?}"))?;
        row.map(PlacementRow::check).transpose()
    }

    /// Records that `service` (with `definition` and `demand`) is placed on
    /// `node` at `generation`, with an event of `kind` unless empty.
    pub fn place(
        &self,
        placement: &PlacementRecord,
        kind: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        let at = timestamp(now());
        let definition =
            serde_json::to_string(&placement.definition).map_err(|e| StoreError::Corrupt {
                what: format!("definition of {:?}", placement.service),
                value: e.to_string(),
            })?;
        let mut conn = self.conn();
        let what = || format!("placing service {:?}", placement.service);
        let tx = conn.transaction().context(what)?;
        tx.execute(
            "INSERT INTO placements (service, node, generation, definition, demand_memory, demand_cpus, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(service) DO UPDATE SET node = ?2, generation = ?3, definition = ?4,
                 demand_memory = ?5, demand_cpus = ?6, updated_at = ?7",
            params![
                placement.service,
                placement.node,
                to_i64(placement.generation),
                definition,
                to_i64(placement.demand.memory),
                placement.demand.cpus,
                at,
            ],
        )
        .context(what)?;
        if !kind.is_empty() {
            insert_event(&tx, &at, &placement.node, &placement.service, kind, detail)
                .context(what)?;
        }
        tx.commit().context(what)
    }

    /// Forgets the placement of `service`, with an event of `kind` (about
    /// `node`) unless empty; false when there was none.
    pub fn unplace(
        &self,
        service: &str,
        node: &str,
        kind: &str,
        detail: &str,
    ) -> Result<bool, StoreError> {
        let at = timestamp(now());
        let mut conn = self.conn();
        let what = || format!("forgetting the placement of {service:?}");
        let tx = conn.transaction().context(what)?;
        let n = tx
            .execute("DELETE FROM placements WHERE service = ?1", [service])
            .context(what)?;
        if n == 1 && !kind.is_empty() {
            insert_event(&tx, &at, node, service, kind, detail).context(what)?;
        }
        tx.commit().context(what)?;
        Ok(n == 1)
    }

    /// Records an event.
    pub fn record_event(
        &self,
        node: &str,
        service: &str,
        kind: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        let at = timestamp(now());
        insert_event(&self.conn(), &at, node, service, kind, detail)
            .context(|| format!("recording a {kind} event"))
    }

    /// The most recent `limit` events (all for 0), oldest first.
    pub fn events(&self, limit: usize) -> Result<Vec<FleetEvent>, StoreError> {
        let conn = self.conn();
        let limit = if limit == 0 { -1 } else { to_i64(limit as u64) };
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, ts, node, service, kind, detail FROM
                   (SELECT * FROM events ORDER BY ts DESC, id DESC LIMIT ?1)
                 ORDER BY ts, id",
            )
            .context(|| "listing events".into())?;
        stmt.query_map([limit], |row| {
            Ok(FleetEvent {
                id: row.get(0)?,
                time: row.get(1)?,
                node: row.get(2)?,
                service: row.get(3)?,
                kind: row.get(4)?,
                detail: row.get(5)?,
            })
        })
        .context(|| "listing events".into())?
        .collect::<rusqlite::Result<Vec<_>>>()
        .context(|| "listing events".into())
    }
}

fn insert_event(
    conn: &Connection,
    at: &str,
    node: &str,
    service: &str,
    kind: &str,
    detail: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO events (ts, node, service, kind, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![at, node, service, kind, detail],
    )
    .map(|_| ())
}

const PLACEMENT_COLUMNS: &str =
    "service, node, generation, definition, demand_memory, demand_cpus, updated_at";

/// A placement row as stored, before its JSON, numbers and time are checked.
struct PlacementRow {
    service: String,
    node: String,
    generation: i64,
    definition: String,
    memory: i64,
    cpus: i64,
    updated_at: String,
}

impl PlacementRow {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<PlacementRow> {
        Ok(PlacementRow {
            service: row.get(0)?,
            node: row.get(1)?,
            generation: row.get(2)?,
            definition: row.get(3)?,
            memory: row.get(4)?,
            cpus: row.get(5)?,
            updated_at: row.get(6)?,
        })
    }

    fn check(self) -> Result<PlacementRecord, StoreError> {
        let service = self.service;
        let what = |field: &str| format!("placement of {service:?} {field}");
        Ok(PlacementRecord {
            generation: to_u64(&what("generation"), self.generation)?,
            definition: serde_json::from_str(&self.definition).map_err(|_| {
                StoreError::Corrupt {
                    what: what("definition"),
                    value: self.definition.chars().take(80).collect(),
                }
            })?,
            demand: Resources {
                memory: to_u64(&what("demand"), self.memory)?,
                cpus: to_u32(&what("demand"), self.cpus)?,
            },
            updated_at: parse_time(&what("updated_at"), &self.updated_at)?,
            node: self.node,
            service,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(name: &str, boot: &str) -> Registration {
        Registration {
            name: name.into(),
            role: NodeRole::Worker,
            address: "127.0.0.2:9444".into(),
            arch: "x86_64".into(),
            version: "0.1.0".into(),
            capacity: Resources {
                memory: 8 << 30,
                cpus: 4,
            },
            boot_id: boot.into(),
            publish_address: "127.0.0.2".into(),
            inventory_digest: String::new(),
        }
    }

    #[test]
    fn nodes_register_heartbeat_and_change_state() {
        let store = Store::open_in_memory().unwrap();
        store
            .register(&registration("a", "b1"), "ready", "joined", "")
            .unwrap();
        let used = Resources {
            memory: 1 << 30,
            cpus: 1,
        };
        assert!(store.heartbeat("a", "b1", used, "").unwrap());
        assert!(
            !store.heartbeat("a", "b2", used, "").unwrap(),
            "another boot id"
        );
        assert!(
            !store.heartbeat("z", "b1", used, "").unwrap(),
            "unknown node"
        );
        assert!(
            !store.heartbeat("a", "b1", used, "changed").unwrap(),
            "another inventory"
        );
        let a = store.node("a").unwrap().unwrap();
        assert_eq!(
            (a.used, a.state.as_str(), a.draining),
            (used, "ready", false)
        );
        assert!(
            store
                .set_state("a", "suspect", "suspect", "silent")
                .unwrap()
        );
        assert!(
            !store
                .set_state("a", "suspect", "suspect", "silent")
                .unwrap()
        );
        assert!(store.set_draining("a", true).unwrap());
        assert!(!store.set_draining("nope", true).unwrap());
        store
            .register(&registration("a", "b2"), "draining", "back", "")
            .unwrap();
        let a = store.node("a").unwrap().unwrap();
        assert_eq!((a.boot_id.as_str(), a.draining), ("b2", true));
        let kinds: Vec<String> = store
            .events(0)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, ["joined", "suspect", "back"]);
        assert_eq!(store.events(1).unwrap()[0].kind, "back");
    }

    #[test]
    fn placements_keep_definitions_and_generations() {
        let store = Store::open_in_memory().unwrap();
        let definition = mcp_core::servicedef::parse(
            "name = \"web\"\n[[components]]\nname = \"a\"\nimage = \"x:1\"\n",
            Path::new("web.toml"),
        )
        .unwrap();
        let mut p = PlacementRecord {
            service: "web".into(),
            node: "a".into(),
            generation: 1,
            definition,
            demand: Resources {
                memory: 256 << 20,
                cpus: 0,
            },
            updated_at: now(),
        };
        store.place(&p, "placed", "on a").unwrap();
        p.node = "b".into();
        p.generation = 2;
        store.place(&p, "moved", "from a").unwrap();
        let all = store.placements().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].node.as_str(), all[0].generation), ("b", 2));
        assert_eq!(all[0].definition.components[0].image, "x:1");
        assert_eq!(store.placement("web").unwrap().as_ref(), all.first());
        assert_eq!(store.placement("db").unwrap(), None);
        let events = store.events(0).unwrap();
        assert_eq!(
            events
                .iter()
                .map(|e| (e.node.as_str(), e.kind.as_str()))
                .collect::<Vec<_>>(),
            [("a", "placed"), ("b", "moved")]
        );
    }

    #[test]
    fn a_database_is_migrated_once_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/master.db");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        store
            .register(&registration("a", "b"), "ready", "joined", "")
            .unwrap();
        drop(store);
        let again = Store::open(&path).unwrap();
        assert_eq!(again.nodes().unwrap().len(), 1, "reopened, nothing lost");
        again
            .conn()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(again);
        let err = Store::open(&path).err().unwrap().to_string();
        assert!(err.contains("newer than the latest"), "{err}");
    }
}
