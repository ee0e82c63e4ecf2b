//! Registry schema migrations: every older schema version migrates to the
//! latest with its rows intact, a newer one is refused, reopening is a no-op.

use std::path::Path;

use mcp_agent::registry::{
    EventFilter, MIGRATIONS, Registry, RegistryError, RevisionOutcome, SCHEMA_VERSION,
};
use mcp_core::servicedef::{self, ComponentDef};
use mcp_runtime::RuntimeKind;
use rusqlite::{Connection, params};

const TS: &str = "2024-05-01T12:00:00.000Z";

fn component_json() -> String {
    let def = servicedef::parse(
        "name = \"web\"\n[[components]]\nname = \"app\"\nimage = \"app:1\"\nports = [\"8080:80\"]\n",
        Path::new("web.toml"),
    )
    .expect("valid");
    serde_json::to_string(&def.components[0]).expect("json")
}

fn raw(path: &Path) -> Connection {
    Connection::open(path).expect("raw open")
}

fn user_version(path: &Path) -> i64 {
    raw(path)
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("user_version")
}

/// Inserts rows that are valid at schema `version`.
fn insert_rows_at(conn: &Connection, version: u32) {
    let json = component_json();
    if version >= 1 {
        conn.execute(
            "INSERT INTO services (name, active, node, tier, created_at, updated_at)
             VALUES ('web', 1, 'rift', 'worker', ?1, ?1)",
            [TS],
        )
        .expect("service");
        conn.execute(
            "INSERT INTO components (service, name, image, definition, spec_hash, container_id, updated_at)
             VALUES ('web', 'app', 'app:1', ?1, 'h1', 'cid1', ?2)",
            params![json, TS],
        )
        .expect("component");
    }
    if version >= 2 {
        conn.execute(
            "INSERT INTO components (service, name, image, definition, spec_hash, container_id, updated_at, runtime, memory, vcpus)
             VALUES ('web', 'vm', 'vm.img', ?1, 'h2', NULL, ?2, 'unikernel', 1024, 2)",
            params![json, TS],
        )
        .expect("v2 component");
    }
    if version >= 3 {
        conn.execute(
            "INSERT INTO events (ts, service, component, kind, detail) VALUES (?1, 'web', 'app', 'deployed', 'v3')",
            [TS],
        )
        .expect("event");
    }
    if version >= 4 {
        conn.execute(
            "INSERT INTO revisions (service, component, revision, ts, image, definition, spec_hash, outcome, detail)
             VALUES ('web', 'app', 1, ?1, 'app:1', ?2, 'h1', 'deployed', 'v4')",
            params![TS, json],
        )
        .expect("revision");
    }
}

#[test]
fn latest_version_is_the_number_of_migrations() {
    assert_eq!(SCHEMA_VERSION as usize, MIGRATIONS.len());
    const { assert!(SCHEMA_VERSION >= 4) };
}

#[test]
fn opens_an_empty_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("registry.db");
    std::fs::write(&path, b"").expect("empty file");
    let reg = Registry::open(&path).expect("open");
    assert_eq!(reg.schema_version().expect("version"), SCHEMA_VERSION);
    assert!(reg.list_services().expect("list").is_empty());
    assert!(
        reg.events(&EventFilter::default())
            .expect("events")
            .is_empty()
    );
}

#[test]
fn every_older_version_migrates_with_rows_intact() {
    let expected_json: ComponentDef =
        serde_json::from_str(&component_json()).expect("component json");
    for k in 1..SCHEMA_VERSION {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("registry.db");
        drop(Registry::open_at_version_for_tests(&path, k).expect("open at version"));
        assert_eq!(user_version(&path), i64::from(k), "built at version {k}");
        insert_rows_at(&raw(&path), k);

        let reg = Registry::open(&path).unwrap_or_else(|e| panic!("migrating from {k}: {e}"));
        assert_eq!(reg.schema_version().expect("version"), SCHEMA_VERSION);

        let svc = reg.get_service("web").expect("get").expect("service kept");
        assert!(svc.active);
        assert_eq!(svc.node.as_deref(), Some("rift"));
        assert_eq!(svc.created_at, TS);
        // Placed by no master before version 5.
        assert_eq!(svc.generation, 0);

        let app = reg
            .components("web")
            .expect("components")
            .into_iter()
            .find(|c| c.name == "app")
            .expect("component kept");
        assert_eq!(app.image, "app:1");
        assert_eq!(app.definition, expected_json);
        assert_eq!(app.spec_hash, "h1");
        assert_eq!(app.container_id.as_deref(), Some("cid1"));
        // Columns added after version k take their defaults.
        if k < 2 {
            assert_eq!(app.runtime, RuntimeKind::Container);
            assert_eq!(app.memory, None);
            assert_eq!(app.vcpus, None);
        } else {
            let vm = reg
                .get_component("web", "vm")
                .expect("get")
                .expect("v2 component kept");
            assert_eq!(vm.runtime, RuntimeKind::Unikernel);
            assert_eq!((vm.memory, vm.vcpus), (Some(1024), Some(2)));
        }

        // Before version 4 there was no history: each component recorded
        // becomes its first revision, as deployed. (From version 4 on, the
        // row inserted above is the only one.)
        let revisions = reg.revisions("web", None, None).expect("revisions");
        let mut seeded: Vec<(&str, u64, &str, &str)> = revisions
            .iter()
            .map(|r| {
                (
                    r.component.as_str(),
                    r.revision,
                    r.outcome.as_str(),
                    r.ts.as_str(),
                )
            })
            .collect();
        seeded.sort();
        let mut expected = vec![("app", 1, "deployed", TS)];
        if (2..4).contains(&k) {
            expected.push(("vm", 1, "deployed", TS));
        }
        assert_eq!(seeded, expected, "from version {k}");
        let first = reg
            .revisions("web", Some("app"), None)
            .expect("app revisions")
            .remove(0);
        assert_eq!(
            (first.image.as_str(), first.spec_hash.as_str()),
            ("app:1", "h1")
        );
        assert_eq!(first.definition, expected_json);
        let next = reg
            .record_revision("web", &expected_json, RevisionOutcome::Deployed, "migrated")
            .expect("revision");
        assert_eq!(next.revision, 2);

        // New tables work after the migration.
        let e = reg
            .record_event("web", None, "migrated", &format!("from {k}"))
            .expect("event");
        assert_eq!(
            reg.events(&EventFilter::default()).expect("events").last(),
            Some(&e)
        );
    }
}

#[test]
fn open_at_version_refuses_unknown_versions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = Registry::open_at_version_for_tests(dir.path().join("r.db"), SCHEMA_VERSION + 1)
        .expect_err("no such version");
    assert!(matches!(err, RegistryError::Invalid(_)), "{err}");
}

#[test]
fn newer_database_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("registry.db");
    drop(Registry::open(&path).expect("open"));
    raw(&path)
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .expect("bump version");
    let err = Registry::open(&path).expect_err("too new");
    assert!(
        matches!(
            err,
            RegistryError::Open(mcp_sqlite::OpenError::TooNew { .. })
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("schema version {}", SCHEMA_VERSION + 1)),
        "{msg}"
    );
    assert!(msg.contains("registry.db"), "{msg}");
    // Refusing does not touch the database.
    assert_eq!(user_version(&path), i64::from(SCHEMA_VERSION) + 1);
}

#[test]
fn wal_mode_is_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("registry.db");
    let _reg = Registry::open(&path).expect("open");
    let mode: String = raw(&path)
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal");
}

#[test]
fn reopening_the_latest_schema_is_a_no_op() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("registry.db");
    {
        let reg = Registry::open(&path).expect("open");
        reg.record_event("web", None, "deployed", "")
            .expect("event");
    }
    let schema = |path: &Path| -> Vec<String> {
        let conn = raw(path);
        let mut stmt = conn
            .prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
            .expect("prepare");
        stmt.query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    let before = schema(&path);
    let changes_before: i64 = raw(&path)
        .query_row("PRAGMA schema_version", [], |r| r.get(0))
        .expect("schema_version");
    let reg = Registry::open(&path).expect("reopen");
    assert_eq!(reg.schema_version().expect("version"), SCHEMA_VERSION);
    drop(reg);
    assert_eq!(schema(&path), before);
    let changes_after: i64 = raw(&path)
        .query_row("PRAGMA schema_version", [], |r| r.get(0))
        .expect("schema_version");
    assert_eq!(changes_after, changes_before, "no DDL ran");
    assert_eq!(
        Registry::open(&path)
            .expect("again")
            .events(&EventFilter::default())
            .expect("events")
            .len(),
        1
    );
}
