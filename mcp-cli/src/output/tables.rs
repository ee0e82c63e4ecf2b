//! Tables for people: one per answer, fitted to the terminal's width when
//! standard output is one and never cut when it is not (a file, a pipe);
//! an answer with nothing in it says so in a line.

use std::io::{IsTerminal, Write};

use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{ContentArrangement, Table};
use mcp_core::client::action_name;
use mcp_core::client::transfer::TreeMoved;
use mcp_core::config::NodeEntry;
use mcp_core::proto as pb;

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    let arrangement = if std::io::stdout().is_terminal() {
        ContentArrangement::Dynamic
    } else {
        ContentArrangement::Disabled
    };
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(arrangement)
        .set_header(header.iter().copied());
    t
}

/// Prints `t`, or the line `empty` when it has no rows.
fn print_table(t: &Table, empty: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if t.row_count() == 0 {
        writeln!(out, "{empty}")?;
    } else {
        writeln!(out, "{t}")?;
    }
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

/// The DRIFT cell of `status` and `ps`: `-`, or the kinds.
fn drift_cell(drift: &[String]) -> String {
    if drift.is_empty() {
        "-".into()
    } else {
        format!("DRIFT: {}", drift.join(","))
    }
}

/// `mcp push` / `mcp pull`: the files moved and their digests.
pub fn moved(verb: &str, tree: &TreeMoved) -> anyhow::Result<()> {
    let (node, service, moved, skipped) = (&tree.node, &tree.service, &tree.files, &tree.skipped);
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
pub fn files(entries: &[pb::FileEntry]) -> anyhow::Result<()> {
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
    print_table(&t, "no entries")
}

/// `mcp rm`.
pub fn removed_file(node: &str, service: &str, path: &str) -> anyhow::Result<()> {
    writeln!(std::io::stdout().lock(), "removed {node}:{service}/{path}")?;
    Ok(())
}

/// Per-component results of a state-changing command.
pub fn results(service: &str, results: &[pb::ComponentResult]) -> anyhow::Result<()> {
    let mut t = table(&["COMPONENT", "ACTION", "ID", "ERROR"]);
    for r in results {
        t.add_row(vec![
            format!("{service}-{}", r.component),
            action_name(r.action).to_string(),
            short_id(&r.container_id).to_string(),
            r.error.clone(),
        ]);
    }
    print_table(&t, "no components changed")
}

/// `mcp status`.
pub fn status(reports: &[pb::StatusResponse]) -> anyhow::Result<()> {
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
    print_table(&t, "no services")?;
    if !unmanaged.is_empty() {
        let mut u = table(&["NODE", "UNMANAGED", "IMAGE", "STATE"]);
        for (node, i) in unmanaged {
            u.add_row(vec![node, i.name.clone(), i.image.clone(), i.state.clone()]);
        }
        print_table(&u, "")?;
    }
    Ok(())
}

/// `mcp ps`.
pub fn ps(reports: &[pb::PsResponse]) -> anyhow::Result<()> {
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
    print_table(&t, "no instances")?;
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
        print_table(&m, "")?;
    }
    Ok(())
}

/// `mcp sync`: the plan per node, then (unless a dry run) what was done.
pub fn sync(answers: &[(String, pb::SyncResponse)]) -> anyhow::Result<()> {
    let describe = |f: &[pb::FieldChange]| -> String {
        f.iter()
            .map(|c| format!("{}: {} -> {}", c.field, c.from, c.to))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let mut plan = table(&["NODE", "SERVICE", "COMPONENT", "CHANGE", "DETAIL"]);
    for (node, r) in answers {
        for s in &r.plan {
            let placed = match s.placement.as_str() {
                "" | "kept" => String::new(),
                "new" => format!("placed on {node}"),
                "moved" => format!("moves to {node}"),
                "waiting" => format!("waits for {node}, which is down (its data lives there)"),
                other => other.to_string(),
            };
            let detail = [placed, describe(&s.fields)]
                .into_iter()
                .filter(|d| !d.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            plan.add_row(vec![
                node.clone(),
                s.service.clone(),
                "-".into(),
                s.action.clone(),
                detail,
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
    print_table(&plan, "nothing to sync")?;
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
        print_table(&done, "")?;
    }
    Ok(())
}

/// `mcp adopt`.
pub fn adopt(
    node: &str,
    res: &pb::AdoptResponse,
    written: Option<&std::path::Path>,
) -> anyhow::Result<()> {
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
    print_table(&t, "nothing adopted")?;
    if let Some(path) = written {
        println!("definition written to {}", path.display());
    }
    Ok(())
}

/// `mcp events`.
pub fn events(all: &[(String, pb::EventsResponse)]) -> anyhow::Result<()> {
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
    print_table(&t, "no events")
}

/// `mcp history`: one row per revision, newest first.
pub fn history(res: &pb::HistoryResponse) -> anyhow::Result<()> {
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
    print_table(&t, "no revisions")
}

/// `mcp list`.
pub fn list(lists: &[(String, pb::ListResponse)]) -> anyhow::Result<()> {
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
    print_table(&t, "no services")
}

/// `mcp node list`.
pub fn nodes(nodes: &[NodeEntry]) -> anyhow::Result<()> {
    let mut t = table(&["NODE", "ADDRESS"]);
    for n in nodes {
        t.add_row(vec![n.name.clone(), n.address.clone()]);
    }
    print_table(&t, "no nodes configured")
}

/// `mcp node list` with a master.
pub fn fleet_nodes(nodes: &[pb::NodeSummary]) -> anyhow::Result<()> {
    use mcp_core::placement::format_bytes;
    let mut t = table(&[
        "NODE",
        "ROLE",
        "STATE",
        "ADDRESS",
        "ARCH",
        "LAST HEARTBEAT",
        "MEMORY (ALLOCATED / CAPACITY)",
        "CPUS",
        "SERVICES",
    ]);
    for n in nodes {
        let (cap, alloc) = (
            n.capacity.unwrap_or_default(),
            n.allocated.unwrap_or_default(),
        );
        t.add_row(vec![
            n.name.clone(),
            n.role.clone(),
            n.state.clone(),
            n.address.clone(),
            n.arch.clone(),
            n.last_heartbeat.clone(),
            format!(
                "{} / {}",
                format_bytes(alloc.memory_bytes),
                format_bytes(cap.memory_bytes)
            ),
            format!("{} / {}", alloc.cpus, cap.cpus),
            n.services.to_string(),
        ]);
    }
    print_table(&t, "no nodes have joined the master")
}

/// `mcp node info`.
pub fn node_info(
    infos: &[(NodeEntry, anyhow::Result<pb::NodeInfoResponse>)],
) -> anyhow::Result<()> {
    let mut t = table(&[
        "NODE",
        "ADDRESS",
        "AGENT",
        "RUNTIME",
        "UNIKERNELS",
        "VOLUMES",
    ]);
    for (n, r) in infos {
        let unikernels = |i: &pb::NodeInfoResponse| {
            if !i.unikernels {
                return "no (QEMU not found)".to_string();
            }
            let ops = if i.ops { ", ops" } else { "" };
            format!("qemu, {}{ops}", i.accel)
        };
        let volumes = match r {
            Ok(i) if i.allowed_volume_roots.is_empty() => "anywhere".to_string(),
            Ok(i) => format!("under {}", i.allowed_volume_roots.join(", ")),
            Err(_) => "-".to_string(),
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
            Err(e) => (
                "unreachable".to_string(),
                super::one_line(e),
                "-".to_string(),
            ),
        };
        t.add_row(vec![
            n.name.clone(),
            n.address.clone(),
            agent,
            runtime,
            vms,
            volumes,
        ]);
    }
    print_table(&t, "no nodes")
}
