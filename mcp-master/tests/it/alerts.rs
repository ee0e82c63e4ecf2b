//! The master's alerts: a node that stops heartbeating pages someone
//! within the heartbeat TTL plus the grace (measured), once per
//! transition; a service whose data lives on a down node is alerted as
//! waiting; the rate limit holds and what it suppresses is an event.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mcp_core::servicedef;
use mcp_master::store::Store;
use mcp_proto::v1 as pb;

use crate::harness::{TestMaster, heartbeat, registration};

/// A script that appends one line per alert, `<unix time> <args...>`, to
/// `out`.
fn recorder(dir: &Path) -> (PathBuf, PathBuf) {
    let script = dir.join("page.sh");
    let out = dir.join("pages.txt");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$(date +%s.%N) $*\" >> {}\n",
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, out)
}

/// The alert lines so far: (unix time, the arguments).
fn pages(out: &Path) -> Vec<(f64, String)> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (t, rest) = l.split_once(' ')?;
            // An empty {service} is an empty argument: words only.
            let words: Vec<&str> = rest.split_whitespace().collect();
            Some((t.parse().ok()?, words.join(" ")))
        })
        .collect()
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_pages_within_the_ttl_and_grace_once_per_transition() {
    let scratch = tempfile::tempdir().unwrap();
    let (script, out) = recorder(scratch.path());
    let master = TestMaster::start_with(|c| {
        c.monitor.alert_command = vec![
            script.display().to_string(),
            "{node}".into(),
            "{service}".into(),
            "{event}".into(),
        ];
        c.monitor.alert_burst = 3;
    })
    .await;
    let mut agent = master.client(&master.tokens.node).await;
    // "db" keeps its data on the node: it waits when the node is down.
    let db = servicedef::parse(
        "name = \"db\"\n[[components]]\nname = \"pg\"\nimage = \"pg:1\"\nvolumes = [\"/srv/db/data:/data\"]\n",
        Path::new("db.toml"),
    )
    .unwrap();
    let held = pb::InventoryService {
        definition: Some(db.to_proto()),
        generation: 1,
        instance_ids: Default::default(),
    };
    agent
        .register(registration("a", "boot", vec![held]))
        .await
        .unwrap();
    agent.heartbeat(heartbeat("a", "boot")).await.unwrap();
    let last_beat = unix_now();
    let silent = Instant::now();

    // TTL (2 x 100 ms) + grace (100 ms) = 300 ms; then down after 1 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    while pages(&out).len() < 3 {
        assert!(Instant::now() < deadline, "pages: {:?}", pages(&out));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = pages(&out);
    assert_eq!(got[0].1, "a node-suspect");
    // The down alert and the waiting service's run at once, in any order.
    let mut then: Vec<&str> = got[1..].iter().map(|(_, l)| l.as_str()).collect();
    then.sort_unstable();
    assert_eq!(then, ["a db service-waiting", "a node-down"]);
    let paged_after = got[0].0 - last_beat;
    eprintln!(
        "silent node paged {:.0} ms after its last heartbeat (TTL + grace: 300 ms; sweep every 25 ms)",
        paged_after * 1000.0
    );
    assert!(paged_after >= 0.29, "{paged_after}");
    assert!(paged_after < 0.3 + 0.25, "{paged_after}");
    assert!(silent.elapsed() >= Duration::from_millis(990));

    // Nothing more while it stays down (one alert per transition)...
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pages(&out).len(), 3);
    // ...and one when it comes back.
    agent.heartbeat(heartbeat("a", "boot")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while pages(&out).len() < 4 {
        assert!(
            Instant::now() < deadline,
            "no back alert: {:?}",
            pages(&out)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(pages(&out)[3].1, "a node-back");

    // Node a has had 3 alerts (suspect, down, back) in the window: the
    // next transition is suppressed, recorded once.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let events = Store::open(&master.config.db).unwrap().events(0).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.node == "a" && e.kind == "alert-suppressed"),
        "{events:?}"
    );
    assert_eq!(pages(&out).len(), 4, "{:?}", pages(&out));
    master.stop().await;
}
