//! `run_alert` with real programs: values full of shell metacharacters
//! arrive literally, and a missing, failing or hanging program is a failed
//! outcome, never a panic or a hang.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mcp_agent::monitor::alert::{AlertEvent, AlertFailure, run_alert};

/// Writing an executable while another thread forks can leave the file open
/// in the child and make exec fail with "text file busy": writes take this
/// lock exclusively, runs share it.
static EXEC: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

async fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let _w = EXEC.write().await;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

async fn run(
    argv: &[String],
    event: &AlertEvent,
    timeout: Duration,
) -> mcp_agent::monitor::AlertOutcome {
    let _r = EXEC.read().await;
    run_alert(argv, event, timeout).await
}

fn event(service: &str, detail: &str) -> AlertEvent {
    AlertEvent {
        node: "node-1".into(),
        service: service.into(),
        component: "web".into(),
        event: "drift:missing".into(),
        detail: detail.into(),
        time: "2026-11-23T22:51:32.007Z".into(),
    }
}

/// Splits NUL-terminated fields.
fn fields(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .map(|f| String::from_utf8(f.to_vec()).expect("utf-8"))
        .collect::<Vec<_>>()
        .split_last()
        .map(|(_, rest)| rest.to_vec())
        .unwrap_or_default()
}

#[tokio::test]
async fn values_arrive_literally_and_nothing_is_interpreted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    // Each of these would create a file in `dir` if any shell evaluated it.
    let service =
        format!("$(touch {d}/x); rm -rf /tmp/nope; `touch {d}/y` && touch {d}/z || touch {d}/w");
    let detail = format!(
        "it's \"quoted\" $HOME ${{PATH}} \\n * ? [a] ~ | > {d}/v < /dev/null & disown\nsecond line; touch {d}/u\n"
    );
    let recorder = script(
        dir.path(),
        "record",
        "for a in \"$@\"; do printf '%s\\0' \"$a\"; done > \"$(dirname \"$0\")/argv\"\n\
         printf '%s\\0' \"$MCP_NODE\" \"$MCP_SERVICE\" \"$MCP_COMPONENT\" \"$MCP_EVENT\" \"$MCP_DETAIL\" \"$MCP_TIME\" > \"$(dirname \"$0\")/env\"\n\
         echo recorded; echo to-stderr >&2",
    ).await;
    let argv: Vec<String> = vec![
        recorder.display().to_string(),
        "{service}".into(),
        "{detail}".into(),
        "--svc={service}".into(),
        "{node}".into(),
        "{component}".into(),
        "{event}".into(),
        "{time}".into(),
        "$(touch x)".into(),
        String::new(),
    ];
    let ev = event(&service, &detail);
    let out = run(&argv, &ev, Duration::from_secs(10)).await;
    assert!(out.is_sent(), "{out:?}");
    assert_eq!(out.detail(), "exit status 0");
    assert_eq!(out.stdout, "recorded\n");
    assert_eq!(out.stderr, "to-stderr\n");

    let got_argv = fields(&std::fs::read(dir.path().join("argv")).unwrap());
    assert_eq!(
        got_argv,
        [
            service.as_str(),
            detail.as_str(),
            "--svc={service}",
            "node-1",
            "web",
            "drift:missing",
            "2026-11-23T22:51:32.007Z",
            "$(touch x)",
            "",
        ]
    );
    let got_env = fields(&std::fs::read(dir.path().join("env")).unwrap());
    assert_eq!(
        got_env,
        [
            "node-1",
            service.as_str(),
            "web",
            "drift:missing",
            detail.as_str(),
            "2026-11-23T22:51:32.007Z",
        ]
    );
    for f in ["x", "y", "z", "w", "v", "u"] {
        assert!(!dir.path().join(f).exists(), "{f} was created");
    }
    assert!(
        !Path::new("x").exists(),
        "x was created in the working directory"
    );
}

#[tokio::test]
async fn a_missing_program_fails() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-program").display().to_string();
    let out = run(
        std::slice::from_ref(&missing),
        &event("s", "d"),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(out.result, Err(AlertFailure::NotFound(missing.clone())));
    assert_eq!(out.detail(), format!("not found: {missing}"));
    // Looked up in PATH when it has no slash.
    let out = run(
        &["mcp-no-such-alert-program".to_string()],
        &event("s", "d"),
        Duration::from_secs(5),
    )
    .await;
    assert!(
        matches!(out.result, Err(AlertFailure::NotFound(_))),
        "{out:?}"
    );
}

#[tokio::test]
async fn a_file_that_cannot_be_executed_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain");
    std::fs::write(&path, "not a program").unwrap();
    let out = run(
        &[path.display().to_string()],
        &event("s", "d"),
        Duration::from_secs(5),
    )
    .await;
    assert!(
        matches!(out.result, Err(AlertFailure::Spawn { .. })),
        "{out:?}"
    );
    assert!(
        out.detail().contains("ermission denied"),
        "{}",
        out.detail()
    );
}

#[tokio::test]
async fn a_non_zero_exit_fails_with_its_code() {
    let dir = tempfile::tempdir().unwrap();
    let prog = script(dir.path(), "fail", "echo 'no route to pager' >&2\nexit 3").await;
    let out = run(
        &[prog.display().to_string()],
        &event("s", "d"),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(out.result, Err(AlertFailure::Exit(3)));
    assert_eq!(out.detail(), "exit code 3");
    assert_eq!(out.stderr, "no route to pager\n");
}

#[tokio::test]
async fn a_program_past_its_timeout_is_killed_with_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let prog = script(
        dir.path(),
        "hang",
        &format!(
            "sleep 60 &\necho $! > {}\necho started\nwait",
            pidfile.display()
        ),
    )
    .await;
    let started = Instant::now();
    let out = run(
        &[prog.display().to_string()],
        &event("s", "d"),
        Duration::from_secs(1),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(
        out.result,
        Err(AlertFailure::TimedOut(Duration::from_secs(1)))
    );
    assert_eq!(out.detail(), "timed out after 1s");
    // Its child holds the output for 60 s: the run did not wait for it.
    assert!(took < Duration::from_secs(60), "took {took:?}");
    assert!(took >= Duration::from_secs(1), "took {took:?}");
    assert_eq!(out.stdout, "started\n");
    // The program's own child went with it.
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
        // Gone, or a zombie waiting for its new parent to reap it.
        let alive = state.is_some_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
        });
        if !alive {
            break;
        }
        assert!(Instant::now() < deadline, "sleep {pid} still runs");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn a_program_that_exits_early_but_leaves_a_child_holding_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let prog = script(
        dir.path(),
        "bg",
        &format!(
            "echo done\nsleep 30 &\necho $! > {}\nexit 0",
            pidfile.display()
        ),
    )
    .await;
    let started = Instant::now();
    let out = run(
        &[prog.display().to_string()],
        &event("s", "d"),
        Duration::from_secs(20),
    )
    .await;
    assert!(out.is_sent(), "{out:?}");
    // Its child holds the output for 30 s: the run ended with the program.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.stdout, "done\n");
    // Left alone after a normal exit; the test cleans it up.
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = std::process::Command::new("kill")
        .arg(pid.to_string())
        .status();
}
