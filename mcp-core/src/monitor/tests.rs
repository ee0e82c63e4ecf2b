//! The monitor's loop against an in-memory runtime and registry.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream;
use mcp_runtime::{
    EventStream, InstanceInfo, InstanceSpec, InstanceState, LogOptions, LogStream, RuntimeError,
    RuntimeEvent, RuntimeKind, RuntimeResult, RuntimeVersion,
};
use tokio::sync::broadcast;

use super::*;
use crate::registry::{ComponentRecord, EventRecord, ServiceRecord};

/// A runtime holding a list of instances; events are sent by the test.
struct FakeRuntime {
    instances: Mutex<Vec<InstanceInfo>>,
    up: AtomicBool,
    /// `None` ends every open event stream (the runtime went away).
    events: broadcast::Sender<Option<RuntimeEvent>>,
}

impl FakeRuntime {
    fn new() -> Arc<FakeRuntime> {
        Arc::new(FakeRuntime {
            instances: Mutex::new(Vec::new()),
            up: AtomicBool::new(true),
            events: broadcast::channel(64).0,
        })
    }

    fn unavailable() -> RuntimeError {
        RuntimeError::Unavailable {
            endpoint: "fake".into(),
            reason: "down".into(),
        }
    }

    fn check_up(&self) -> RuntimeResult<()> {
        if self.up.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(FakeRuntime::unavailable())
        }
    }

    fn set(&self, name: &str, state: Option<InstanceState>) {
        let mut list = self.instances.lock().unwrap();
        list.retain(|i| i.name != name);
        if let Some(state) = state {
            list.push(instance(name, state));
        }
        drop(list);
        let _ = self.events.send(Some(RuntimeEvent {
            action: "test".into(),
            id: format!("id-{name}"),
            name: name.into(),
        }));
    }

    fn go_down(&self) {
        self.up.store(false, Ordering::SeqCst);
        let _ = self.events.send(None);
    }
}

const IMAGE: &str = "registry.test/app:1";

fn instance(name: &str, state: InstanceState) -> InstanceInfo {
    InstanceInfo {
        id: format!("id-{name}"),
        name: name.into(),
        image: IMAGE.into(),
        image_id: String::new(),
        state,
        status: String::new(),
        exit_code: None,
        labels: [("mcp.managed".to_string(), "true".to_string())].into(),
        ports: Vec::new(),
        created_at: 0,
        started_at: 0,
        runtime: RuntimeKind::Container,
        details: None,
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Container
    }
    async fn ping(&self) -> RuntimeResult<RuntimeVersion> {
        Err(FakeRuntime::unavailable())
    }
    async fn image_exists(&self, _: &str) -> RuntimeResult<bool> {
        Err(FakeRuntime::unavailable())
    }
    async fn pull(&self, _: &str) -> RuntimeResult<()> {
        Err(FakeRuntime::unavailable())
    }
    async fn create(&self, _: &InstanceSpec) -> RuntimeResult<String> {
        Err(FakeRuntime::unavailable())
    }
    async fn start(&self, _: &str) -> RuntimeResult<()> {
        Err(FakeRuntime::unavailable())
    }
    async fn stop(&self, _: &str, _: Duration) -> RuntimeResult<()> {
        Err(FakeRuntime::unavailable())
    }
    async fn remove(&self, _: &str, _: bool) -> RuntimeResult<()> {
        Err(FakeRuntime::unavailable())
    }
    async fn rename(&self, _: &str, _: &str) -> RuntimeResult<()> {
        Err(FakeRuntime::unavailable())
    }
    async fn inspect(&self, _: &str) -> RuntimeResult<Option<InstanceInfo>> {
        Err(FakeRuntime::unavailable())
    }
    async fn list(&self) -> RuntimeResult<Vec<InstanceInfo>> {
        self.check_up()?;
        Ok(self.instances.lock().unwrap().clone())
    }
    async fn logs(&self, _: &str, _: &LogOptions) -> RuntimeResult<LogStream> {
        Err(FakeRuntime::unavailable())
    }
    async fn events(&self) -> RuntimeResult<EventStream> {
        self.check_up()?;
        let rx = self.events.subscribe();
        Ok(Box::pin(stream::unfold(Some(rx), |rx| async move {
            let mut rx = rx?;
            loop {
                match rx.recv().await {
                    Ok(Some(ev)) => return Some((Ok(ev), Some(rx))),
                    Ok(None) | Err(broadcast::error::RecvError::Closed) => {
                        return Some((Err(FakeRuntime::unavailable()), None));
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                }
            }
        })))
    }
}

struct Setup {
    runtime: Arc<FakeRuntime>,
    registry: Arc<Registry>,
    reconciler: Arc<Reconciler>,
}

/// A registry with service `svc` (components `web` and `db`, active), both
/// instances running.
fn setup() -> Setup {
    let runtime = FakeRuntime::new();
    let registry = Arc::new(Registry::open_in_memory().unwrap());
    let def = crate::servicedef::parse(
        &format!(
            "name = \"svc\"\nactive = true\n\n[[components]]\nname = \"web\"\nimage = \"{IMAGE}\"\n\n[[components]]\nname = \"db\"\nimage = \"{IMAGE}\"\n"
        ),
        Path::new("svc.toml"),
    )
    .unwrap();
    let comps: Vec<ComponentRecord> = def
        .components
        .iter()
        .map(|c| ComponentRecord::from_def(&def.name, c))
        .collect();
    registry
        .record_deploy(&ServiceRecord::from_def(&def), &comps, &[])
        .unwrap();
    runtime.set("svc-web", Some(InstanceState::Running));
    runtime.set("svc-db", Some(InstanceState::Running));
    let reconciler = Arc::new(Reconciler::new(
        runtime.clone(),
        registry.clone(),
        Duration::from_secs(1),
    ));
    Setup {
        runtime,
        registry,
        reconciler,
    }
}

fn settings(alert_command: &[&str], burst: u32) -> MonitorSettings {
    MonitorSettings {
        interval: Duration::from_millis(200),
        alert_command: alert_command.iter().map(|s| s.to_string()).collect(),
        alert_timeout: Duration::from_secs(5),
        alert_cooldown: Duration::from_secs(300),
        alert_burst: burst,
        event_retention: Duration::from_secs(86_400),
    }
}

impl Setup {
    fn spawn(&self, settings: MonitorSettings, activity: Option<Activity>) -> AbortOnDrop {
        let mut m = Monitor::new(self.reconciler.clone(), "node1".into(), settings);
        m.settle = Duration::from_millis(100);
        if let Some(a) = activity {
            m = m.with_activity(a);
        }
        AbortOnDrop(tokio::spawn(m.run()))
    }

    /// The monitor's events so far (kind starting with drift or alert), as
    /// `component kind`.
    fn monitor_events(&self) -> Vec<String> {
        self.records()
            .iter()
            .filter(|e| e.kind.starts_with("drift") || e.kind.starts_with("alert"))
            .map(|e| format!("{} {}", e.component.as_deref().unwrap_or("-"), e.kind))
            .collect()
    }

    fn records(&self) -> Vec<EventRecord> {
        self.registry.events(&EventFilter::default()).unwrap()
    }

    /// Waits until the events are `want`: drift events in that order,
    /// alert events (recorded by the alert task) in any order among them.
    async fn wait_for_events(&self, want: &[&str]) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        let drift_only = |v: &[String]| -> Vec<String> {
            v.iter().filter(|e| e.contains(" drift")).cloned().collect()
        };
        let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        loop {
            let got = self.monitor_events();
            if sorted(&got) == sorted(&want) {
                assert_eq!(drift_only(&got), drift_only(&want));
                return got;
            }
            assert!(
                Instant::now() < deadline && got.len() <= want.len(),
                "want {want:?}, got {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asserts that the events stay `want` for a while (sweeps run meanwhile).
    async fn stays(&self, want: &[&str]) {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let mut got = self.monitor_events();
        got.sort();
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(got, want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_recorded_alerted_once_then_cleared() {
    let s = setup();
    let _m = s.spawn(settings(&["/bin/true"], 3), None);
    s.stays(&[]).await;

    s.runtime.set("svc-web", None);
    s.wait_for_events(&["web drift:missing", "web alert-sent"])
        .await;
    let missing = s
        .records()
        .into_iter()
        .find(|e| e.kind == "drift:missing")
        .unwrap();
    assert_eq!(missing.detail, "no instance named svc-web");
    // Sweeps and further events do not repeat it.
    s.runtime.set("svc-db", Some(InstanceState::Running));
    s.stays(&["web drift:missing", "web alert-sent"]).await;

    s.runtime.set("svc-web", Some(InstanceState::Exited));
    s.wait_for_events(&[
        "web drift:missing",
        "web alert-sent",
        "web drift:stopped",
        "web alert-sent",
    ])
    .await;
    s.runtime.set("svc-web", Some(InstanceState::Running));
    let all = [
        "web drift:missing",
        "web alert-sent",
        "web drift:stopped",
        "web alert-sent",
        "web drift-cleared",
        "web alert-sent",
    ];
    s.wait_for_events(&all).await;
    let records = s.records();
    let cleared = records.iter().find(|e| e.kind == "drift-cleared").unwrap();
    assert_eq!(cleared.detail, "stopped");
    let sent: Vec<&str> = records
        .iter()
        .filter(|e| e.kind == "alert-sent")
        .map(|e| e.detail.as_str())
        .collect();
    assert_eq!(
        sent,
        [
            "drift:missing: exit status 0",
            "drift:stopped: exit status 0",
            "drift-cleared: exit status 0"
        ]
    );
    s.stays(&all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brief_absence_is_not_drift() {
    let s = setup();
    let _m = s.spawn(settings(&[], 3), None);
    s.stays(&[]).await;
    s.runtime.set("svc-web", Some(InstanceState::Exited));
    tokio::time::sleep(Duration::from_millis(40)).await;
    s.runtime.set("svc-web", Some(InstanceState::Running));
    s.stays(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_does_not_report_recorded_drift_again() {
    let s = setup();
    s.runtime.set("svc-web", None);
    s.runtime.set("svc-db", None);
    // An earlier run recorded web as missing, and db as missing then cleared.
    s.registry
        .record_event(
            "svc",
            Some("web"),
            "drift:missing",
            "no instance named svc-web",
        )
        .unwrap();
    s.registry
        .record_event("svc", Some("db"), "drift:missing", "")
        .unwrap();
    s.registry
        .record_event("svc", Some("db"), "drift-cleared", "missing")
        .unwrap();
    let _m = s.spawn(settings(&["/bin/true"], 3), None);
    // Only db's drift is new.
    let want = [
        "web drift:missing",
        "db drift:missing",
        "db drift-cleared",
        "db drift:missing",
        "db alert-sent",
    ];
    s.wait_for_events(&want).await;
    s.stays(&want).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_runtime_is_not_drift_and_the_stream_reconnects() {
    let s = setup();
    // No sweep during the test: only events and reconnections cause checks.
    let mut quiet = settings(&[], 3);
    quiet.interval = Duration::from_secs(600);
    let _m = s.spawn(quiet, None);
    s.stays(&[]).await;
    s.runtime.go_down();
    s.stays(&[]).await;
    // Back, with web gone: the reconnection alone causes a check.
    s.runtime
        .instances
        .lock()
        .unwrap()
        .retain(|i| i.name != "svc-web");
    s.runtime.up.store(true, Ordering::SeqCst);
    s.wait_for_events(&["web drift:missing"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_wait_for_operations_in_progress() {
    let s = setup();
    let activity = Activity::new();
    let _m = s.spawn(settings(&[], 3), Some(activity.clone()));
    s.stays(&[]).await;
    let op = activity.begin();
    s.runtime.set("svc-web", Some(InstanceState::Exited));
    s.stays(&[]).await;
    drop(op);
    s.wait_for_events(&["web drift:stopped"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_is_rate_limited() {
    let s = setup();
    let _m = s.spawn(settings(&["/bin/true"], 2), None);
    s.stays(&[]).await;
    for _ in 0..3 {
        s.runtime.set("svc-web", Some(InstanceState::Exited));
        tokio::time::sleep(Duration::from_millis(600)).await;
        s.runtime.set("svc-web", Some(InstanceState::Running));
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let want = [
        "web drift:stopped",
        "web alert-sent",
        "web drift-cleared",
        "web alert-sent",
        "web drift:stopped",
        "web alert-suppressed",
        "web drift-cleared",
        "web drift:stopped",
        "web drift-cleared",
    ];
    s.wait_for_events(&want).await;
    let suppressed = s
        .records()
        .into_iter()
        .find(|e| e.kind == "alert-suppressed")
        .unwrap();
    assert!(
        suppressed
            .detail
            .starts_with("drift:stopped: not alerted: the limit of 2 alerts per 300s for this component is reached; alerts resume in "),
        "{}",
        suppressed.detail
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmanaged_instances_are_drift() {
    let s = setup();
    let _m = s.spawn(settings(&[], 3), None);
    s.stays(&[]).await;
    let mut extra = instance("svc-extra", InstanceState::Running);
    extra.labels.clear();
    s.runtime.instances.lock().unwrap().push(extra);
    s.runtime.set("svc-db", Some(InstanceState::Running));
    s.wait_for_events(&["extra drift:unmanaged"]).await;
    s.runtime.set("svc-extra", None);
    s.wait_for_events(&["extra drift:unmanaged", "extra drift-cleared"])
        .await;
}
