//! Unit tests of every registry operation, on database files in temporary
//! directories.

use std::path::Path;
use std::sync::Arc;

use chrono::{Duration as ChronoDuration, TimeZone, Utc};
use mcp_runtime::RuntimeKind;

use super::*;
use mcp_core::servicedef;

fn def(src: &str) -> ServiceDef {
    servicedef::parse(src, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"))
}

const WEB: &str = r#"
name = "web"
node = "rift"
[[components]]
name = "app"
image = "app:1"
memory = "256M"
[[components]]
name = "db"
image = "postgres:16"
runtime = "unikernel"
vcpus = 2
"#;

fn open() -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().expect("tempdir");
    let reg = Registry::open(dir.path().join("sub/dir/registry.db")).expect("open");
    (dir, reg)
}

fn deploy(reg: &Registry, d: &ServiceDef) {
    let comps: Vec<_> = d
        .components
        .iter()
        .map(|c| ComponentRecord::from_def(&d.name, c))
        .collect();
    reg.record_deploy(&ServiceRecord::from_def(d), &comps, &[])
        .expect("record_deploy");
}

#[test]
fn open_creates_directory_and_latest_schema() {
    let (dir, reg) = open();
    assert!(dir.path().join("sub/dir/registry.db").exists());
    assert_eq!(reg.schema_version().expect("version"), SCHEMA_VERSION);
    assert_eq!(SCHEMA_VERSION, 5);
    let mode: String = reg
        .conn()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal");
    let fk: i64 = reg
        .conn()
        .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
        .expect("foreign_keys");
    assert_eq!(fk, 1);
    let sync: i64 = reg
        .conn()
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .expect("synchronous");
    assert_eq!(sync, 1, "NORMAL");
}

#[test]
fn registry_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Registry>();
}

#[test]
fn record_deploy_then_read_back() {
    let (_dir, reg) = open();
    let d = def(WEB);
    deploy(&reg, &d);

    let svc = reg.get_service("web").expect("get").expect("recorded");
    assert_eq!(svc.name, "web");
    assert!(svc.active);
    assert_eq!(svc.node.as_deref(), Some("rift"));
    assert_eq!(svc.tier, "worker");
    assert!(DateTime::parse_from_rfc3339(&svc.created_at).is_ok());
    assert_eq!(svc.created_at, svc.updated_at);
    assert_eq!(reg.get_service("nope").expect("get"), None);

    let comps = reg.components("web").expect("components");
    assert_eq!(comps.len(), 2);
    let (app, db) = (&comps[0], &comps[1]);
    assert_eq!((app.name.as_str(), db.name.as_str()), ("app", "db"));
    assert_eq!(app.definition, d.components[0]);
    assert_eq!(app.spec_hash, d.components[0].spec_hash());
    assert_eq!(app.runtime, RuntimeKind::Container);
    assert_eq!(app.memory, Some(256 << 20));
    assert_eq!(app.vcpus, None);
    assert_eq!(app.container_id, None);
    assert_eq!(db.runtime, RuntimeKind::Unikernel);
    assert_eq!(db.vcpus, Some(2));
    assert_eq!(
        reg.get_component("web", "db").expect("get").as_ref(),
        Some(db)
    );
    assert_eq!(reg.get_component("web", "zz").expect("get"), None);
    assert!(reg.components("nope").expect("components").is_empty());
}

#[test]
fn redeploy_updates_and_keeps_created_at_and_container_id() {
    let (_dir, reg) = open();
    let d = def(WEB);
    deploy(&reg, &d);
    assert!(
        reg.set_container_id("web", "app", Some("c0ffee"))
            .expect("set")
    );
    let first = reg.get_service("web").expect("get").expect("recorded");

    std::thread::sleep(std::time::Duration::from_millis(5));
    let mut d2 = d.clone();
    d2.active = false;
    d2.node = None;
    d2.components[0].image = "app:2".into();
    deploy(&reg, &d2);

    let svc = reg.get_service("web").expect("get").expect("recorded");
    assert!(!svc.active);
    assert_eq!(svc.node, None);
    assert_eq!(svc.created_at, first.created_at);
    assert!(svc.updated_at > first.updated_at);
    let app = reg.get_component("web", "app").expect("get").expect("app");
    assert_eq!(app.image, "app:2");
    assert_eq!(app.definition.image, "app:2");
    assert_eq!(
        app.container_id.as_deref(),
        Some("c0ffee"),
        "None keeps the id"
    );

    // A given container id replaces the recorded one.
    let mut rec = ComponentRecord::from_def("web", &d2.components[0]);
    rec.container_id = Some("beef".into());
    reg.record_deploy(&ServiceRecord::from_def(&d2), &[rec], &[])
        .expect("deploy");
    let app = reg.get_component("web", "app").expect("get").expect("app");
    assert_eq!(app.container_id.as_deref(), Some("beef"));
}

#[test]
fn partial_deploy_keeps_other_components() {
    let (_dir, reg) = open();
    let d = def(WEB);
    deploy(&reg, &d);
    let mut app = d.components[0].clone();
    app.image = "app:3".into();
    reg.record_deploy(
        &ServiceRecord::from_def(&d),
        &[ComponentRecord::from_def("web", &app)],
        &[],
    )
    .expect("partial deploy");
    let comps = reg.components("web").expect("components");
    assert_eq!(comps.len(), 2, "db is not forgotten");
    assert_eq!(comps[0].image, "app:3");
    assert_eq!(comps[1].image, "postgres:16");
}

#[test]
fn record_deploy_removes_listed_components() {
    let (_dir, reg) = open();
    let d = def(WEB);
    deploy(&reg, &d);
    let svc = reg.get_service("web").expect("get").expect("recorded");
    reg.record_deploy(&svc, &[], &["db".to_string(), "never-there".to_string()])
        .expect("remove");
    let names: Vec<_> = reg
        .components("web")
        .expect("components")
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["app"]);
}

#[test]
fn record_deploy_refuses_foreign_components_and_rolls_back() {
    let (_dir, reg) = open();
    let d = def(WEB);
    let rec = ComponentRecord::from_def("other", &d.components[0]);
    let err = reg
        .record_deploy(&ServiceRecord::from_def(&d), &[rec], &[])
        .expect_err("foreign component");
    assert!(matches!(err, RegistryError::Invalid(_)), "{err}");
    assert_eq!(
        reg.get_service("web").expect("get"),
        None,
        "nothing written"
    );
}

#[test]
fn list_services_and_all_components_are_ordered() {
    let (_dir, reg) = open();
    for name in ["zeta", "alpha", "mid"] {
        deploy(
            &reg,
            &def(&format!(
                "name = \"{name}\"\n[[components]]\nname = \"b\"\nimage = \"i\"\n[[components]]\nname = \"a\"\nimage = \"i\"\n"
            )),
        );
    }
    let names: Vec<_> = reg
        .list_services()
        .expect("list")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["alpha", "mid", "zeta"]);
    let all: Vec<_> = reg
        .all_components()
        .expect("all")
        .into_iter()
        .map(|c| format!("{}/{}", c.service, c.name))
        .collect();
    assert_eq!(
        all,
        ["alpha/a", "alpha/b", "mid/a", "mid/b", "zeta/a", "zeta/b"]
    );
}

#[test]
fn set_active_reports_whether_found() {
    let (_dir, reg) = open();
    deploy(&reg, &def(WEB));
    assert!(reg.set_active("web", false).expect("set"));
    assert!(!reg.get_service("web").expect("get").expect("svc").active);
    assert!(reg.set_active("web", true).expect("set"));
    assert!(reg.get_service("web").expect("get").expect("svc").active);
    assert!(!reg.set_active("nope", true).expect("set"));
}

#[test]
fn set_container_id_sets_and_clears() {
    let (_dir, reg) = open();
    deploy(&reg, &def(WEB));
    assert!(reg.set_container_id("web", "db", Some("abc")).expect("set"));
    let db = reg.get_component("web", "db").expect("get").expect("db");
    assert_eq!(db.container_id.as_deref(), Some("abc"));
    assert!(reg.set_container_id("web", "db", None).expect("clear"));
    let db = reg.get_component("web", "db").expect("get").expect("db");
    assert_eq!(db.container_id, None);
    assert!(!reg.set_container_id("web", "zz", Some("x")).expect("set"));
}

#[test]
fn delete_service_cascades_to_components_not_events() {
    let (_dir, reg) = open();
    deploy(&reg, &def(WEB));
    reg.record_event("web", None, "deployed", "")
        .expect("event");
    assert!(reg.delete_service("web").expect("delete"));
    assert_eq!(reg.get_service("web").expect("get"), None);
    assert!(reg.all_components().expect("all").is_empty());
    assert_eq!(
        reg.events(&EventFilter::default()).expect("events").len(),
        1
    );
    assert!(!reg.delete_service("web").expect("delete again"));
}

#[test]
fn events_filter_limit_and_order() {
    let (_dir, reg) = open();
    let t0 = Utc
        .with_ymd_and_hms(2024, 5, 1, 12, 0, 0)
        .single()
        .expect("time");
    let at = |s: i64| t0 + ChronoDuration::seconds(s);
    reg.record_event_at(at(0), "web", Some("app"), "created", "image app:1")
        .expect("e");
    reg.record_event_at(at(10), "db", None, "deployed", "")
        .expect("e");
    reg.record_event_at(at(20), "web", Some("app"), "stopped", "")
        .expect("e");
    let last = reg
        .record_event_at(at(30), "web", None, "drift:missing", "x")
        .expect("e");
    assert_eq!(last.ts, "2024-05-01T12:00:30.000Z");
    assert_eq!(last.time().expect("time"), at(30));

    let kinds = |f: EventFilter| -> Vec<String> {
        reg.events(&f)
            .expect("events")
            .into_iter()
            .map(|e| e.kind)
            .collect()
    };
    assert_eq!(
        kinds(EventFilter::default()),
        ["created", "deployed", "stopped", "drift:missing"]
    );
    assert_eq!(
        kinds(EventFilter {
            service: Some("web".into()),
            ..Default::default()
        }),
        ["created", "stopped", "drift:missing"]
    );
    assert_eq!(
        kinds(EventFilter {
            since: Some(at(10)),
            ..Default::default()
        }),
        ["deployed", "stopped", "drift:missing"]
    );
    assert_eq!(
        kinds(EventFilter {
            limit: Some(2),
            ..Default::default()
        }),
        ["stopped", "drift:missing"],
        "the most recent two, oldest first"
    );
    assert_eq!(
        kinds(EventFilter {
            service: Some("web".into()),
            since: Some(at(5)),
            limit: Some(1),
        }),
        ["drift:missing"]
    );
    let all = reg.events(&EventFilter::default()).expect("events");
    assert_eq!(all[0].component.as_deref(), Some("app"));
    assert_eq!(all[0].detail, "image app:1");
    assert_eq!(all[1].component, None);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(all[3], last);
}

#[test]
fn record_event_now_is_returned_as_stored() {
    let (_dir, reg) = open();
    let e = reg
        .record_event("web", Some("app"), "started", "ok")
        .expect("event");
    let stored = reg.events(&EventFilter::default()).expect("events");
    assert_eq!(stored, std::slice::from_ref(&e));
    assert!(e.ts.ends_with('Z') && e.ts.len() == "2024-05-01T12:00:00.000Z".len());
}

#[test]
fn prune_events_deletes_older_ones() {
    let (_dir, reg) = open();
    let t0 = Utc
        .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
        .single()
        .expect("time");
    for days in 0..5 {
        reg.record_event_at(t0 + ChronoDuration::days(days), "web", None, "tick", "")
            .expect("e");
    }
    assert_eq!(reg.prune_events(t0).expect("prune"), 0);
    assert_eq!(
        reg.prune_events(t0 + ChronoDuration::days(3))
            .expect("prune"),
        3
    );
    let left = reg.events(&EventFilter::default()).expect("events");
    assert_eq!(left.len(), 2);
    assert_eq!(left[0].time().expect("time"), t0 + ChronoDuration::days(3));
}

#[test]
fn data_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("r.db");
    {
        let reg = Registry::open(&path).expect("open");
        deploy(&reg, &def(WEB));
        reg.record_event("web", None, "deployed", "")
            .expect("event");
    }
    let reg = Registry::open(&path).expect("reopen");
    assert_eq!(reg.components("web").expect("components").len(), 2);
    assert_eq!(
        reg.events(&EventFilter::default()).expect("events").len(),
        1
    );
}

#[test]
fn corrupt_rows_are_reported() {
    let (_dir, reg) = open();
    deploy(&reg, &def(WEB));
    reg.conn()
        .execute(
            "UPDATE components SET definition = '{not json' WHERE name = 'app'",
            [],
        )
        .expect("corrupt");
    let err = reg.components("web").expect_err("corrupt json");
    assert!(
        matches!(&err, RegistryError::CorruptDefinition { service, component, .. } if service == "web" && component == "app"),
        "{err}"
    );
    assert!(err.to_string().contains("web/app"), "{err}");

    reg.conn()
        .execute("UPDATE components SET runtime = 'vm' WHERE name = 'db'", [])
        .expect("corrupt");
    let err = reg.get_component("web", "db").expect_err("bad runtime");
    assert!(
        err.to_string().contains("runtime of component web/db"),
        "{err}"
    );
}

#[test]
fn too_new_database_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("r.db");
    drop(Registry::open(&path).expect("open"));
    {
        let conn = Connection::open(&path).expect("raw open");
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .expect("bump");
    }
    let err = Registry::open(&path).expect_err("too new");
    assert!(
        matches!(err, RegistryError::Open(mcp_sqlite::OpenError::TooNew { found, supported, .. }) if found == i64::from(SCHEMA_VERSION) + 1 && supported == SCHEMA_VERSION),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade mcp"), "{err}");
}

#[test]
fn concurrent_writers_share_one_registry() {
    let (_dir, reg) = open();
    let reg = Arc::new(reg);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let reg = Arc::clone(&reg);
            std::thread::spawn(move || {
                for i in 0..25 {
                    reg.record_event(&format!("s{t}"), None, "tick", &i.to_string())
                        .expect("event");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    assert_eq!(
        reg.events(&EventFilter::default()).expect("events").len(),
        100
    );
}

#[test]
fn two_connections_to_one_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("r.db");
    let a = Registry::open(&path).expect("a");
    let b = Registry::open(&path).expect("b");
    deploy(&a, &def(WEB));
    assert!(b.get_service("web").expect("get").is_some());
}

#[test]
fn in_memory_registry_works() {
    let reg = Registry::open_in_memory().expect("memory");
    deploy(&reg, &def(WEB));
    assert_eq!(reg.list_services().expect("list").len(), 1);
    assert_eq!(reg.path(), ":memory:");
}

/// Component `app` of `WEB` with image `image`.
fn app(image: &str) -> ComponentDef {
    let mut c = def(WEB).components[0].clone();
    c.image = image.into();
    c
}

/// Records `def` as the component's current definition, as a deploy
/// settles it.
fn settle(reg: &Registry, c: &ComponentDef) {
    reg.record_deploy(
        &ServiceRecord::from_def(&def(WEB)),
        &[ComponentRecord::from_def("web", c)],
        &[],
    )
    .expect("record_deploy");
}

fn numbers_and_images(revs: &[RevisionRecord]) -> Vec<(u64, &str, &str)> {
    revs.iter()
        .map(|r| (r.revision, r.image.as_str(), r.outcome.as_str()))
        .collect()
}

#[test]
fn revisions_are_numbered_per_component_and_listed_newest_first() {
    let (_dir, reg) = open();
    let db = def(WEB).components[1].clone();
    let first = reg
        .record_revision("web", &app("app:1"), RevisionOutcome::Deployed, "")
        .expect("record");
    assert_eq!((first.revision, first.component.as_str()), (1, "app"));
    assert_eq!(first.spec_hash, app("app:1").spec_hash());
    assert_eq!(first.definition, app("app:1"));
    assert!(first.time().is_ok());
    let both = reg
        .record_revisions(
            "web",
            &[
                NewRevision {
                    definition: &app("app:2"),
                    outcome: RevisionOutcome::Deployed,
                    detail: "",
                },
                NewRevision {
                    definition: &db,
                    outcome: RevisionOutcome::Failed,
                    detail: "pull failed",
                },
            ],
        )
        .expect("record two");
    assert_eq!(both[0].revision, 2, "app's second");
    assert_eq!(both[1].revision, 1, "db's first");
    assert_eq!(both[0].ts, both[1].ts, "recorded together, one time");
    assert!(both[0].ts > first.ts, "times increase");
    // Another service numbers its own.
    let other = reg
        .record_revision("other", &app("app:9"), RevisionOutcome::Deployed, "")
        .expect("record");
    assert_eq!(other.revision, 1);

    let all = reg.revisions("web", None, None).expect("revisions");
    assert_eq!(
        all.iter()
            .map(|r| (r.component.as_str(), r.revision))
            .collect::<Vec<_>>(),
        [("db", 1), ("app", 2), ("app", 1)],
        "newest first; within one deploy, last recorded first"
    );
    assert_eq!(all[0].detail, "pull failed");
    assert_eq!(all[0].outcome, RevisionOutcome::Failed);
    assert_eq!(all[1], both[0], "read back as recorded");
    assert_eq!(
        numbers_and_images(&reg.revisions("web", Some("app"), None).expect("app")),
        [(2, "app:2", "deployed"), (1, "app:1", "deployed")]
    );
    assert_eq!(
        numbers_and_images(&reg.revisions("web", Some("app"), Some(1)).expect("limit")),
        [(2, "app:2", "deployed")]
    );
    assert_eq!(reg.revisions("web", None, Some(2)).expect("limit").len(), 2);
    assert!(reg.revisions("nope", None, None).expect("none").is_empty());
    assert!(
        reg.revisions("web", Some("zz"), None)
            .expect("none")
            .is_empty()
    );
}

#[test]
fn revision_times_increase_even_when_the_clock_goes_back() {
    let (_dir, reg) = open();
    let t0 = Utc
        .with_ymd_and_hms(2024, 5, 1, 12, 0, 0)
        .single()
        .expect("time");
    let at = |t, image: &str| {
        reg.record_revisions_at(
            t,
            "web",
            &[NewRevision {
                definition: &app(image),
                outcome: RevisionOutcome::Deployed,
                detail: "",
            }],
        )
        .expect("record")
        .remove(0)
    };
    assert_eq!(at(t0, "app:1").ts, "2024-05-01T12:00:00.000Z");
    assert_eq!(at(t0, "app:2").ts, "2024-05-01T12:00:00.001Z");
    assert_eq!(
        at(t0 - ChronoDuration::hours(1), "app:3").ts,
        "2024-05-01T12:00:00.002Z"
    );
    assert_eq!(
        at(t0 + ChronoDuration::seconds(5), "app:4").ts,
        "2024-05-01T12:00:05.000Z"
    );
}

#[test]
fn only_the_last_revisions_of_each_component_are_kept() {
    let (_dir, reg) = open();
    let db = def(WEB).components[1].clone();
    reg.record_revision("web", &db, RevisionOutcome::Deployed, "")
        .expect("db");
    let total = REVISIONS_KEPT + 5;
    for n in 1..=total {
        reg.record_revision(
            "web",
            &app(&format!("app:{n}")),
            RevisionOutcome::Deployed,
            "",
        )
        .expect("record");
    }
    let kept = reg.revisions("web", Some("app"), None).expect("app");
    assert_eq!(kept.len() as u64, REVISIONS_KEPT);
    assert_eq!(kept[0].revision, total, "numbers go on");
    assert_eq!(
        kept.last().map(|r| r.revision),
        Some(total - REVISIONS_KEPT + 1)
    );
    assert_eq!(
        reg.revisions("web", Some("db"), None).expect("db").len(),
        1,
        "other components keep theirs"
    );
    // The next number follows the newest kept, not the count.
    let next = reg
        .record_revision("web", &app("app:x"), RevisionOutcome::Deployed, "")
        .expect("record");
    assert_eq!(next.revision, total + 1);
}

#[test]
fn rollback_target_is_the_newest_revision_that_ran_and_differs_from_now() {
    let (_dir, reg) = open();
    let target = |reg: &Registry| {
        reg.rollback_target("web", "app")
            .expect("target")
            .map(|r| (r.revision, r.image))
    };
    assert_eq!(target(&reg), None, "no history");

    // v1 deployed: nothing earlier.
    reg.record_revision("web", &app("app:1"), RevisionOutcome::Deployed, "")
        .expect("r1");
    settle(&reg, &app("app:1"));
    assert_eq!(target(&reg), None, "the only revision is the current one");

    // v2 deployed: back to v1.
    reg.record_revision("web", &app("app:2"), RevisionOutcome::Deployed, "")
        .expect("r2");
    settle(&reg, &app("app:2"));
    assert_eq!(target(&reg), Some((1, "app:1".into())));

    // v3 failed (the registry keeps v2): failed revisions are skipped, and
    // so is one rolled back.
    reg.record_revision(
        "web",
        &app("app:3"),
        RevisionOutcome::Failed,
        "no such image",
    )
    .expect("r3");
    reg.record_revision(
        "web",
        &app("app:4"),
        RevisionOutcome::RolledBack,
        "unhealthy",
    )
    .expect("r4");
    assert_eq!(target(&reg), Some((1, "app:1".into())));

    // Rolled back to v1: the newest that ran and differs is v2 now.
    reg.record_revision(
        "web",
        &app("app:1"),
        RevisionOutcome::Rollback,
        "revision 1",
    )
    .expect("r5");
    settle(&reg, &app("app:1"));
    assert_eq!(target(&reg), Some((2, "app:2".into())));

    // And again: back to v1, by way of the rollback revision.
    reg.record_revision(
        "web",
        &app("app:2"),
        RevisionOutcome::Rollback,
        "revision 2",
    )
    .expect("r6");
    settle(&reg, &app("app:2"));
    assert_eq!(target(&reg), Some((5, "app:1".into())));

    // A component the registry does not hold (any more): its newest that ran.
    assert!(reg.delete_service("web").expect("delete"));
    assert_eq!(target(&reg), Some((6, "app:2".into())));
    assert_eq!(
        reg.revisions("web", None, None).expect("kept").len(),
        6,
        "revisions outlive the service"
    );
}

#[test]
fn corrupt_revisions_are_reported() {
    let (_dir, reg) = open();
    reg.record_revision("web", &app("app:1"), RevisionOutcome::Deployed, "")
        .expect("record");
    reg.conn()
        .execute("UPDATE revisions SET outcome = 'maybe'", [])
        .expect("corrupt");
    let err = reg.revisions("web", None, None).expect_err("bad outcome");
    assert!(
        err.to_string().contains("outcome of revision 1 of web/app"),
        "{err}"
    );
    assert_eq!(
        RevisionOutcome::parse("rolled-back"),
        Some(RevisionOutcome::RolledBack)
    );
    assert_eq!(RevisionOutcome::parse("maybe"), None);
}

#[test]
fn events_come_in_bounded_pages_that_resume_where_they_stopped() {
    use crate::registry::{EventCursor, MAX_EVENTS_PAGE};
    let (_dir, reg) = open();
    let t0 = Utc
        .with_ymd_and_hms(2024, 5, 1, 12, 0, 0)
        .single()
        .expect("time");
    // Two services interleaved, several events per timestamp.
    for i in 0..2_500i64 {
        let service = if i % 2 == 0 { "web" } else { "db" };
        reg.record_event_at(
            t0 + ChronoDuration::seconds(i / 3),
            service,
            None,
            "e",
            &i.to_string(),
        )
        .expect("event");
    }
    let pages = |filter: &EventFilter, size: usize| {
        let (mut seen, mut cursor, mut count) = (Vec::new(), None::<EventCursor>, 0);
        loop {
            let page = reg
                .events_page(filter, cursor.as_ref(), size)
                .expect("page");
            assert!(page.events.len() <= size.min(MAX_EVENTS_PAGE));
            seen.extend(page.events.into_iter().map(|e| e.detail));
            count += 1;
            // Through its text, as a client hands it back.
            match page.next {
                Some(next) => cursor = Some(EventCursor::decode(&next.encode()).expect("decode")),
                None => return (seen, count),
            }
        }
    };
    let all: Vec<String> = (0..2_500).map(|i| i.to_string()).collect();
    assert_eq!(pages(&EventFilter::default(), 1_000), (all.clone(), 3));
    // A page larger than the most is cut to it.
    assert_eq!(pages(&EventFilter::default(), 1_000_000).1, 3);
    assert_eq!(pages(&EventFilter::default(), 7).0, all);
    let web = EventFilter {
        service: Some("web".into()),
        ..EventFilter::default()
    };
    let evens: Vec<String> = (0..2_500).step_by(2).map(|i: i64| i.to_string()).collect();
    assert_eq!(pages(&web, 100), (evens.clone(), 13));
    // The most recent 1,200, across pages, oldest first.
    let last = EventFilter {
        limit: Some(1_200),
        ..EventFilter::default()
    };
    assert_eq!(pages(&last, 500), (all[1_300..].to_vec(), 3));
    assert_eq!(reg.events(&last).expect("events").len(), 1_200);
    let web_last = EventFilter {
        limit: Some(5),
        ..web
    };
    assert_eq!(pages(&web_last, 2).0, evens[evens.len() - 5..].to_vec());
    // Events recorded between pages come after, never in between.
    let first = reg
        .events_page(&EventFilter::default(), None, 1_000)
        .expect("page");
    reg.record_event_at(
        t0 + ChronoDuration::seconds(5_000),
        "web",
        None,
        "e",
        "late",
    )
    .expect("event");
    let (mut seen, mut cursor) = (first.events, first.next);
    while let Some(c) = cursor {
        let page = reg
            .events_page(&EventFilter::default(), Some(&c), 1_000)
            .expect("page");
        seen.extend(page.events);
        cursor = page.next;
    }
    assert_eq!(seen.len(), 2_501);
    assert_eq!(seen.last().map(|e| e.detail.as_str()), Some("late"));
    for bad in [
        "",
        "x",
        "12",
        "12..",
        "12.x.2024-05-01T12:00:00.000Z",
        "12..not-a-time",
    ] {
        assert!(EventCursor::decode(bad).is_none(), "{bad}");
    }
}

#[test]
fn a_service_keeps_the_generation_a_master_placed_it_with() {
    let (_dir, reg) = open();
    let d = def(WEB);
    deploy(&reg, &d);
    assert_eq!(reg.get_service("web").unwrap().unwrap().generation, 0);
    assert!(reg.set_generation("web", 7).unwrap());
    assert!(!reg.set_generation("nothing", 7).unwrap());
    // A deploy of the same service keeps it: the master records the next.
    deploy(&reg, &d);
    assert_eq!(reg.get_service("web").unwrap().unwrap().generation, 7);
    assert_eq!(reg.list_services().unwrap()[0].generation, 7);
}
