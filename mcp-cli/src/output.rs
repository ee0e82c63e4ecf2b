//! Printing: tables for people, JSON for scripts, one-line errors.

use std::io::Write;

use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{ContentArrangement, Table};
use mcp_core::client::action_name;
use mcp_core::client::transfer::{TreeMoved, TreeProgress};
use mcp_core::config::NodeEntry;
use mcp_core::proto as pb;
use serde_json::{Value, json};

/// Where and how results are printed.
pub struct Output {
    /// JSON instead of tables.
    pub json: bool,
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().copied());
    t
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

fn print_table(t: &Table) -> anyhow::Result<()> {
    writeln!(std::io::stdout().lock(), "{t}")?;
    Ok(())
}

fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn ago(unix: i64) -> String {
    if unix <= 0 {
        return "-".into();
    }
    let secs = chrono::Utc::now().timestamp() - unix;
    match secs {
        s if s < 60 => format!("{}s", s.max(0)),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// Transfers at least this large get a progress bar on a terminal.
const PROGRESS_MIN_BYTES: u64 = 4 << 20;

/// A size for people: `512 B`, `1.5 KiB`, `3.2 GiB`.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `rwxr-x---` for permission bits, prefixed by the kind's letter.
fn mode_string(kind: &str, mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(match kind {
        "dir" => 'd',
        "symlink" => 'l',
        "other" => '?',
        _ => '-',
    });
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn time_string(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| "-".into())
}

/// The progress bar of one push or pull ([`Output::progress`]).
pub struct TransferBar {
    bar: indicatif::ProgressBar,
    drawable: bool,
}

impl TransferBar {
    /// Shows how the transfer is going.
    pub fn show(&self, p: TreeProgress) {
        match p {
            TreeProgress::Planned { total_bytes } => {
                self.bar.set_length(total_bytes);
                if self.drawable && total_bytes >= PROGRESS_MIN_BYTES {
                    self.bar
                        .set_draw_target(indicatif::ProgressDrawTarget::stderr());
                }
            }
            TreeProgress::Moved(n) => self.bar.inc(n),
        }
    }

    /// Takes the bar off the terminal.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Output {
    /// An output in the chosen format.
    pub fn new(json: bool) -> Self {
        Output { json }
    }

    /// A progress bar for a push or pull, drawn on standard error once the
    /// transfer is known to be large enough to be worth one, when standard
    /// error is a terminal and the output is not JSON; hidden otherwise.
    pub fn progress(&self) -> TransferBar {
        use std::io::IsTerminal;
        let bar = indicatif::ProgressBar::hidden();
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style);
        }
        TransferBar {
            bar,
            drawable: !self.json && std::io::stderr().is_terminal(),
        }
    }

    /// `mcp push` / `mcp pull`: the files moved and their digests.
    pub fn moved(&self, verb: &str, tree: &TreeMoved) -> anyhow::Result<()> {
        let (node, service, moved, skipped) =
            (&tree.node, &tree.service, &tree.files, &tree.skipped);
        if self.json {
            return print_json(&json!({
                "node": node,
                "service": service,
                verb: moved.iter().map(|m| json!({
                    "local": m.local.display().to_string(),
                    "remote": m.remote,
                    "size": m.size,
                    "sha256": m.sha256,
                })).collect::<Vec<_>>(),
                "skipped": skipped,
            }));
        }
        let mut out = std::io::stdout().lock();
        for m in moved {
            let (from, to) = if verb == "pushed" {
                (
                    m.local.display().to_string(),
                    format!("{node}:{service}/{}", m.remote),
                )
            } else {
                (
                    format!("{node}:{service}/{}", m.remote),
                    m.local.display().to_string(),
                )
            };
            writeln!(
                out,
                "{verb} {from} -> {to} ({}, sha256 {})",
                human_size(m.size),
                &m.sha256[..16.min(m.sha256.len())]
            )?;
        }
        for s in skipped {
            writeln!(out, "skipped {s} (not a regular file or directory)")?;
        }
        if moved.is_empty() && skipped.is_empty() {
            writeln!(out, "nothing to {}", verb.trim_end_matches("ed"))?;
        }
        Ok(())
    }

    /// `mcp ls`.
    pub fn files(
        &self,
        node: &str,
        service: &str,
        entries: &[pb::FileEntry],
    ) -> anyhow::Result<()> {
        if self.json {
            return print_json(&json!({
                "node": node,
                "service": service,
                "entries": entries.iter().map(|e| json!({
                    "path": e.path,
                    "kind": e.kind,
                    "size": e.size,
                    "mode": format!("{:04o}", e.mode),
                    "mtime": e.mtime,
                    "symlink_target": (!e.symlink_target.is_empty()).then_some(&e.symlink_target),
                })).collect::<Vec<_>>(),
            }));
        }
        let mut t = table(&["MODE", "SIZE", "MODIFIED", "PATH"]);
        for e in entries {
            let path = if e.kind == "symlink" {
                format!("{} -> {}", e.path, e.symlink_target)
            } else if e.kind == "dir" {
                format!("{}/", e.path)
            } else {
                e.path.clone()
            };
            t.add_row(vec![
                mode_string(&e.kind, e.mode),
                if e.kind == "dir" {
                    "-".into()
                } else {
                    human_size(e.size)
                },
                time_string(e.mtime),
                path,
            ]);
        }
        print_table(&t)
    }

    /// `mcp rm`.
    pub fn removed_file(&self, node: &str, service: &str, path: &str) -> anyhow::Result<()> {
        if self.json {
            return print_json(&json!({"node": node, "service": service, "removed": path}));
        }
        writeln!(std::io::stdout().lock(), "removed {node}:{service}/{path}")?;
        Ok(())
    }

    /// One step of a deploy in progress, on standard error (not with
    /// `--json`): `web-api: waiting (check 2: HTTP 503 from ...)`.
    pub fn deploy_progress(&self, service: &str, p: &pb::DeployProgress) {
        if self.json {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = if p.detail.is_empty() {
            writeln!(err, "{service}-{}: {}", p.component, p.phase)
        } else {
            writeln!(err, "{service}-{}: {} ({})", p.component, p.phase, p.detail)
        };
    }

    /// Per-component results of a state-changing command.
    pub fn results(
        &self,
        node: &str,
        service: &str,
        results: &[pb::ComponentResult],
    ) -> anyhow::Result<()> {
        if self.json {
            let rows: Vec<Value> = results
                .iter()
                .map(|r| {
                    json!({
                        "component": r.component,
                        "action": action_name(r.action),
                        "container_id": r.container_id,
                        "error": (!r.error.is_empty()).then_some(&r.error),
                    })
                })
                .collect();
            return print_json(&json!({"node": node, "service": service, "results": rows}));
        }
        let mut t = table(&["COMPONENT", "ACTION", "ID", "ERROR"]);
        for r in results {
            t.add_row(vec![
                format!("{service}-{}", r.component),
                action_name(r.action).to_string(),
                short_id(&r.container_id).to_string(),
                r.error.clone(),
            ]);
        }
        print_table(&t)
    }

    /// `mcp status`.
    pub fn status(&self, reports: &[pb::StatusResponse]) -> anyhow::Result<()> {
        if self.json {
            let nodes: Vec<Value> = reports
                .iter()
                .map(|r| {
                    json!({
                        "node": r.node,
                        "components": r.components.iter().map(|c| json!({
                            "service": c.service,
                            "component": c.component,
                            "container": c.container_name,
                            "runtime": c.runtime,
                            "desired_active": c.desired_active,
                            "desired_image": c.desired_image,
                            "observed_state": c.observed_state,
                            "observed_image": c.observed_image,
                            "container_id": c.container_id,
                            "started_at": c.started_at,
                            "health": (!c.health.is_empty()).then_some(&c.health),
                            "health_detail": (!c.health_detail.is_empty()).then_some(&c.health_detail),
                            "drift": c.drift,
                        })).collect::<Vec<_>>(),
                        "unmanaged": r.unmanaged.iter().map(instance_json).collect::<Vec<_>>(),
                    })
                })
                .collect();
            return print_json(&json!({ "nodes": nodes }));
        }
        let mut t = table(&[
            "NODE",
            "SERVICE",
            "COMPONENT",
            "DESIRED",
            "OBSERVED",
            "IMAGE",
            "UP",
            "HEALTH",
            "DRIFT",
        ]);
        let mut unmanaged = Vec::new();
        for r in reports {
            for c in &r.components {
                t.add_row(vec![
                    r.node.clone(),
                    c.service.clone(),
                    c.component.clone(),
                    if c.desired_active {
                        "running"
                    } else {
                        "stopped"
                    }
                    .to_string(),
                    c.observed_state.clone(),
                    c.desired_image.clone(),
                    if c.observed_state == "running" {
                        ago(c.started_at)
                    } else {
                        "-".into()
                    },
                    if c.health.is_empty() {
                        "-".into()
                    } else {
                        c.health.clone()
                    },
                    drift_cell(&c.drift),
                ]);
            }
            unmanaged.extend(r.unmanaged.iter().map(|u| (r.node.clone(), u)));
        }
        print_table(&t)?;
        if !unmanaged.is_empty() {
            let mut u = table(&["NODE", "UNMANAGED", "IMAGE", "STATE"]);
            for (node, i) in unmanaged {
                u.add_row(vec![node, i.name.clone(), i.image.clone(), i.state.clone()]);
            }
            print_table(&u)?;
        }
        Ok(())
    }

    /// `mcp ps`.
    pub fn ps(&self, reports: &[pb::PsResponse]) -> anyhow::Result<()> {
        if self.json {
            let nodes: Vec<Value> = reports
                .iter()
                .map(|r| {
                    json!({
                        "node": r.node,
                        "instances": r.instances.iter().map(|i| {
                            let mut v = instance_json(i);
                            v["drift"] = json!(i.drift);
                            v
                        }).collect::<Vec<_>>(),
                        "missing": r.missing.iter().map(|c| json!({
                            "service": c.service,
                            "component": c.component,
                            "container": c.container_name,
                            "image": c.desired_image,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            return print_json(&json!({ "nodes": nodes }));
        }
        let mut t = table(&[
            "NODE", "NAME", "RUNTIME", "IMAGE", "STATE", "STATUS", "PORTS", "MANAGED", "DRIFT",
        ]);
        let mut missing = Vec::new();
        for r in reports {
            for i in &r.instances {
                t.add_row(vec![
                    r.node.clone(),
                    i.name.clone(),
                    i.runtime.clone(),
                    i.image.clone(),
                    i.state.clone(),
                    i.status.clone(),
                    i.ports.join(", "),
                    if i.managed { "yes" } else { "no" }.to_string(),
                    drift_cell(&i.drift),
                ]);
            }
            missing.extend(r.missing.iter().map(|c| (r.node.clone(), c)));
        }
        print_table(&t)?;
        if !missing.is_empty() {
            let mut m = table(&["NODE", "MISSING", "SERVICE", "COMPONENT", "IMAGE"]);
            for (node, c) in missing {
                m.add_row(vec![
                    node,
                    c.container_name.clone(),
                    c.service.clone(),
                    c.component.clone(),
                    c.desired_image.clone(),
                ]);
            }
            print_table(&m)?;
        }
        Ok(())
    }

    /// `mcp sync`: the plan per node, then (unless a dry run) what was done.
    pub fn sync(&self, answers: &[(String, pb::SyncResponse)]) -> anyhow::Result<()> {
        let fields = |f: &[pb::FieldChange]| -> Vec<Value> {
            f.iter()
                .map(|c| json!({"field": c.field, "from": c.from, "to": c.to}))
                .collect()
        };
        if self.json {
            let nodes: Vec<Value> = answers
                .iter()
                .map(|(node, r)| {
                    json!({
                        "node": node,
                        "dry_run": r.dry_run,
                        "plan": r.plan.iter().map(|s| json!({
                            "service": s.service,
                            "action": s.action,
                            "fields": fields(&s.fields),
                            "components": s.components.iter().map(|c| json!({
                                "component": c.component,
                                "change": c.change,
                                "fields": fields(&c.fields),
                                "reason": (!c.reason.is_empty()).then_some(&c.reason),
                                "recreate": c.recreate,
                            })).collect::<Vec<_>>(),
                        })).collect::<Vec<_>>(),
                        "results": r.results.iter().map(|s| json!({
                            "service": s.service,
                            "results": s.results.iter().map(|c| json!({
                                "component": c.component,
                                "action": action_name(c.action),
                                "container_id": c.container_id,
                                "error": (!c.error.is_empty()).then_some(&c.error),
                            })).collect::<Vec<_>>(),
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            return print_json(&json!({ "nodes": nodes }));
        }
        let describe = |f: &[pb::FieldChange]| -> String {
            f.iter()
                .map(|c| format!("{}: {} -> {}", c.field, c.from, c.to))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let mut plan = table(&["NODE", "SERVICE", "COMPONENT", "CHANGE", "DETAIL"]);
        for (node, r) in answers {
            for s in &r.plan {
                plan.add_row(vec![
                    node.clone(),
                    s.service.clone(),
                    "-".into(),
                    s.action.clone(),
                    describe(&s.fields),
                ]);
                for c in &s.components {
                    let detail = match c.change.as_str() {
                        "update" => describe(&c.fields),
                        _ => c.reason.clone(),
                    };
                    plan.add_row(vec![
                        node.clone(),
                        s.service.clone(),
                        c.component.clone(),
                        c.change.clone(),
                        detail,
                    ]);
                }
            }
        }
        print_table(&plan)?;
        let mut done = table(&["NODE", "COMPONENT", "ACTION", "ID", "ERROR"]);
        let mut any = false;
        for (node, r) in answers {
            for s in &r.results {
                for c in &s.results {
                    any = true;
                    done.add_row(vec![
                        node.clone(),
                        format!("{}-{}", s.service, c.component),
                        action_name(c.action).to_string(),
                        short_id(&c.container_id).to_string(),
                        c.error.clone(),
                    ]);
                }
            }
        }
        if any {
            print_table(&done)?;
        }
        Ok(())
    }

    /// `mcp adopt`.
    pub fn adopt(
        &self,
        node: &str,
        res: &pb::AdoptResponse,
        written: Option<&std::path::Path>,
    ) -> anyhow::Result<()> {
        if self.json {
            return print_json(&json!({
                "node": node,
                "service": res.definition.as_ref().map(|d| d.name.clone()),
                "adopted": res.adopted,
                "already_managed": res.already_managed,
                "written": written,
            }));
        }
        let service = res.definition.as_ref().map_or("", |d| d.name.as_str());
        let mut t = table(&["NODE", "COMPONENT", "RESULT"]);
        for c in &res.adopted {
            t.add_row(vec![
                node.to_string(),
                format!("{service}-{c}"),
                "adopted".into(),
            ]);
        }
        for c in &res.already_managed {
            t.add_row(vec![
                node.to_string(),
                format!("{service}-{c}"),
                "already managed (unchanged)".into(),
            ]);
        }
        print_table(&t)?;
        if let Some(path) = written {
            println!("definition written to {}", path.display());
        }
        Ok(())
    }

    /// `mcp events`.
    pub fn events(&self, all: &[(String, pb::EventsResponse)]) -> anyhow::Result<()> {
        if self.json {
            let nodes: Vec<Value> = all
                .iter()
                .map(|(node, r)| {
                    json!({"node": node, "events": r.events.iter().map(|e| json!({
                        "id": e.id, "time": e.time, "service": e.service,
                        "component": (!e.component.is_empty()).then_some(&e.component),
                        "kind": e.kind, "detail": e.detail,
                    })).collect::<Vec<_>>()})
                })
                .collect();
            return print_json(&json!({ "nodes": nodes }));
        }
        let mut t = table(&["TIME", "NODE", "SERVICE", "COMPONENT", "EVENT", "DETAIL"]);
        for (node, r) in all {
            for e in &r.events {
                t.add_row(vec![
                    e.time.clone(),
                    node.clone(),
                    e.service.clone(),
                    if e.component.is_empty() {
                        "-".into()
                    } else {
                        e.component.clone()
                    },
                    e.kind.clone(),
                    e.detail.clone(),
                ]);
            }
        }
        print_table(&t)
    }

    /// `mcp history`: one row per revision, newest first.
    pub fn history(&self, node: &str, res: &pb::HistoryResponse) -> anyhow::Result<()> {
        if self.json {
            return print_json(&json!({
                "node": node,
                "service": res.service,
                "revisions": res.revisions.iter().map(|r| json!({
                    "revision": r.revision,
                    "component": r.component,
                    "time": r.time,
                    "image": r.image,
                    "outcome": r.outcome,
                    "detail": r.detail,
                    "spec_hash": r.spec_hash,
                })).collect::<Vec<_>>(),
            }));
        }
        let mut t = table(&["REV", "COMPONENT", "TIME", "IMAGE", "OUTCOME", "DETAIL"]);
        for r in &res.revisions {
            t.add_row(vec![
                r.revision.to_string(),
                r.component.clone(),
                r.time.clone(),
                r.image.clone(),
                r.outcome.clone(),
                r.detail.clone(),
            ]);
        }
        print_table(&t)
    }

    /// `mcp list`.
    pub fn list(&self, lists: &[(String, pb::ListResponse)]) -> anyhow::Result<()> {
        if self.json {
            let nodes: Vec<Value> = lists
                .iter()
                .map(|(node, l)| {
                    json!({"node": node, "services": l.services.iter().map(|s| json!({
                        "name": s.name, "active": s.active, "components": s.components, "updated_at": s.updated_at,
                    })).collect::<Vec<_>>()})
                })
                .collect();
            return print_json(&json!({ "nodes": nodes }));
        }
        let mut t = table(&["NODE", "SERVICE", "ACTIVE", "COMPONENTS", "UPDATED"]);
        for (node, l) in lists {
            for s in &l.services {
                t.add_row(vec![
                    node.clone(),
                    s.name.clone(),
                    s.active.to_string(),
                    s.components.join(", "),
                    s.updated_at.clone(),
                ]);
            }
        }
        print_table(&t)
    }

    /// `mcp node list`.
    pub fn nodes(&self, nodes: &[NodeEntry]) -> anyhow::Result<()> {
        if self.json {
            return print_json(&json!({ "nodes": nodes }));
        }
        let mut t = table(&["NODE", "ADDRESS"]);
        for n in nodes {
            t.add_row(vec![n.name.clone(), n.address.clone()]);
        }
        print_table(&t)
    }

    /// `mcp node info`.
    pub fn node_info(
        &self,
        infos: &[(NodeEntry, anyhow::Result<pb::NodeInfoResponse>)],
    ) -> anyhow::Result<()> {
        if self.json {
            let rows: Vec<Value> = infos
                .iter()
                .map(|(n, r)| match r {
                    Ok(i) => json!({
                        "node": n.name, "address": n.address, "reachable": true,
                        "node_name": i.node_name, "agent_version": i.agent_version,
                        "runtime_available": i.runtime_available, "runtime_version": i.runtime_version,
                        "runtime_error": (!i.runtime_error.is_empty()).then_some(&i.runtime_error),
                        "unikernels": i.unikernels,
                        "qemu": (!i.qemu.is_empty()).then_some(&i.qemu),
                        "accel": (!i.accel.is_empty()).then_some(&i.accel),
                        "ops": i.ops,
                    }),
                    Err(e) => json!({"node": n.name, "address": n.address, "reachable": false, "error": one_line(e)}),
                })
                .collect();
            return print_json(&json!({ "nodes": rows }));
        }
        let mut t = table(&["NODE", "ADDRESS", "AGENT", "RUNTIME", "UNIKERNELS"]);
        for (n, r) in infos {
            let unikernels = |i: &pb::NodeInfoResponse| {
                if !i.unikernels {
                    return "no (QEMU not found)".to_string();
                }
                let ops = if i.ops { ", ops" } else { "" };
                format!("qemu, {}{ops}", i.accel)
            };
            let (agent, runtime, vms) = match r {
                Ok(i) if i.runtime_available => (
                    i.agent_version.clone(),
                    format!("podman {}", i.runtime_version),
                    unikernels(i),
                ),
                Ok(i) => (
                    i.agent_version.clone(),
                    format!("unavailable: {}", i.runtime_error),
                    unikernels(i),
                ),
                Err(e) => ("unreachable".to_string(), one_line(e), "-".to_string()),
            };
            t.add_row(vec![n.name.clone(), n.address.clone(), agent, runtime, vms]);
        }
        print_table(&t)
    }

    /// One log chunk as a JSON line.
    pub fn log_json(&self, chunk: &pb::LogChunk) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(
            &mut out,
            &json!({
                "component": chunk.component,
                "stream": chunk.stream,
                "data": String::from_utf8_lossy(&chunk.data),
            }),
        )?;
        writeln!(out)?;
        Ok(())
    }
}

/// The DRIFT cell of `status` and `ps`: `-`, or the kinds.
fn drift_cell(drift: &[String]) -> String {
    if drift.is_empty() {
        "-".into()
    } else {
        format!("DRIFT: {}", drift.join(","))
    }
}

fn instance_json(i: &pb::RuntimeInstance) -> Value {
    json!({
        "name": i.name, "id": i.id, "image": i.image, "state": i.state, "status": i.status,
        "runtime": i.runtime, "managed": i.managed, "service": i.service, "component": i.component,
        "ports": i.ports, "created_at": i.created_at,
    })
}

/// Writes `data` with every line prefixed by `component | `.
pub fn write_prefixed(w: &mut dyn Write, component: &str, data: &[u8]) -> std::io::Result<()> {
    for line in data.split_inclusive(|b| *b == b'\n') {
        write!(w, "{component} | ")?;
        w.write_all(line)?;
    }
    Ok(())
}

/// Fails when any component failed, naming them.
pub fn check_results(service: &str, results: &[pb::ComponentResult]) -> anyhow::Result<()> {
    match mcp_core::client::failures(service, results) {
        Some(failed) => anyhow::bail!("{failed}"),
        None => Ok(()),
    }
}

/// An error chain as one line: `context: cause: root cause`.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let s = cause.to_string();
        if parts.last().is_none_or(|p| !p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ").replace('\n', " ")
}

/// Whether the error is a closed stdout (as with `mcp ps | head`).
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
