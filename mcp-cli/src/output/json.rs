//! The JSON of every answer (README, "JSON output"): one envelope,
//! `{"nodes": [answer, ...]}`, an answer per node asked, each naming its
//! `node`; the same field names as the Python client's attributes; times in
//! RFC 3339; an absent value is `null`, never `""` or `0`.

use mcp_core::client::action_name;
use mcp_core::client::transfer::TreeMoved;
use mcp_core::config::NodeEntry;
use mcp_core::proto as pb;
use serde_json::{Value, json};

/// The envelope every `--json` answer is printed in.
pub fn envelope(answers: Vec<Value>) -> Value {
    json!({ "nodes": answers })
}

/// A string that may be empty on the wire: `null` when it is.
fn opt(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::String(s.to_string())
    }
}

/// A time the wire carries as RFC 3339 text (or empty): as it is, or
/// `null`.
fn time(text: &str) -> Value {
    opt(text)
}

/// A time the wire carries as Unix seconds (0 for none), in RFC 3339.
fn unix_time(secs: i64) -> Value {
    if secs <= 0 {
        return Value::Null;
    }
    chrono::DateTime::from_timestamp(secs, 0)
        .map_or(Value::Null, |t| Value::String(mcp_core::wire::timestamp(t)))
}

/// One component's result (Python `ComponentResult`).
pub fn component_result(r: &pb::ComponentResult) -> Value {
    json!({
        "component": r.component,
        "action": action_name(r.action),
        "instance_id": opt(&r.container_id),
        "error": opt(&r.error),
    })
}

/// A state-changing command's answer (Python `ActionResult`).
pub fn action(node: &str, service: &str, results: &[pb::ComponentResult]) -> Value {
    json!({
        "node": node,
        "service": service,
        "results": results.iter().map(component_result).collect::<Vec<_>>(),
    })
}

/// Desired versus observed of one component (Python `ComponentStatus`).
pub fn component_status(c: &pb::ComponentStatus) -> Value {
    json!({
        "service": c.service,
        "component": c.component,
        "runtime": c.runtime,
        "desired_active": c.desired_active,
        "desired_image": c.desired_image,
        "observed_state": c.observed_state,
        "observed_image": opt(&c.observed_image),
        "instance_id": opt(&c.container_id),
        "instance_name": c.container_name,
        "drift": c.drift,
        "started_at": unix_time(c.started_at),
        "health": opt(&c.health),
        "health_detail": opt(&c.health_detail),
    })
}

/// An instance on a node (Python `Instance`).
pub fn instance(i: &pb::RuntimeInstance) -> Value {
    json!({
        "name": i.name,
        "id": i.id,
        "image": i.image,
        "state": i.state,
        "status": i.status,
        "runtime": i.runtime,
        "managed": i.managed,
        "service": opt(&i.service),
        "component": opt(&i.component),
        "ports": i.ports,
        "created_at": unix_time(i.created_at),
        "drift": i.drift,
    })
}

/// `mcp status` (Python `StatusReport`).
pub fn status(r: &pb::StatusResponse) -> Value {
    json!({
        "node": r.node,
        "components": r.components.iter().map(component_status).collect::<Vec<_>>(),
        "unmanaged": r.unmanaged.iter().map(instance).collect::<Vec<_>>(),
    })
}

/// `mcp ps` (Python `PsReport`).
pub fn ps(r: &pb::PsResponse) -> Value {
    json!({
        "node": r.node,
        "instances": r.instances.iter().map(instance).collect::<Vec<_>>(),
        "missing": r.missing.iter().map(component_status).collect::<Vec<_>>(),
    })
}

/// `mcp list`: a node's services (Python `ServiceSummary` each).
pub fn list(node: &str, l: &pb::ListResponse) -> Value {
    json!({
        "node": node,
        "services": l.services.iter().map(|s| json!({
            "name": s.name,
            "active": s.active,
            "components": s.components,
            "updated_at": time(&s.updated_at),
        })).collect::<Vec<_>>(),
    })
}

/// `mcp events`: a node's events (Python `Event` each).
pub fn events(node: &str, r: &pb::EventsResponse) -> Value {
    json!({
        "node": node,
        "events": r.events.iter().map(|e| json!({
            "id": e.id,
            "time": time(&e.time),
            "service": e.service,
            "component": opt(&e.component),
            "kind": e.kind,
            "detail": e.detail,
        })).collect::<Vec<_>>(),
    })
}

/// `mcp history` (Python `Revision` each).
pub fn history(node: &str, r: &pb::HistoryResponse) -> Value {
    json!({
        "node": node,
        "service": r.service,
        "revisions": r.revisions.iter().map(|v| json!({
            "revision": v.revision,
            "component": v.component,
            "time": time(&v.time),
            "image": v.image,
            "outcome": v.outcome,
            "detail": v.detail,
            "spec_hash": v.spec_hash,
        })).collect::<Vec<_>>(),
    })
}

fn field_changes(f: &[pb::FieldChange]) -> Vec<Value> {
    f.iter()
        .map(|c| json!({"field": c.field, "before": c.from, "after": c.to}))
        .collect()
}

/// `mcp sync` (Python `SyncResult`).
pub fn sync(node: &str, r: &pb::SyncResponse) -> Value {
    json!({
        "node": node,
        "dry_run": r.dry_run,
        "plan": r.plan.iter().map(|s| json!({
            "service": s.service,
            "action": s.action,
            "placement": opt(&s.placement),
            "fields": field_changes(&s.fields),
            "components": s.components.iter().map(|c| json!({
                "component": c.component,
                "change": c.change,
                "fields": field_changes(&c.fields),
                "reason": opt(&c.reason),
                "recreate": c.recreate,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "results": r.results.iter().map(|s| action(node, &s.service, &s.results)).collect::<Vec<_>>(),
    })
}

/// `mcp adopt` (Python `AdoptResult`; the definition as TOML text), and
/// where it was written.
pub fn adopt(
    node: &str,
    definition: &str,
    res: &pb::AdoptResponse,
    written: Option<&std::path::Path>,
) -> Value {
    json!({
        "node": node,
        "definition": definition,
        "adopted": res.adopted,
        "already_managed": res.already_managed,
        "written": written.map(|p| p.display().to_string()),
    })
}

/// `mcp node list`: the configured nodes (Python `Node` each).
pub fn configured(nodes: &[NodeEntry]) -> Vec<Value> {
    nodes
        .iter()
        .map(|n| json!({"name": n.name, "address": n.address}))
        .collect()
}

/// Memory and CPUs (Python `Resources`).
fn resources(r: Option<&pb::Resources>) -> Value {
    let r = r.copied().unwrap_or_default();
    json!({"memory_bytes": r.memory_bytes, "cpus": r.cpus})
}

/// A node as the master sees it (Python `FleetNode`).
pub fn fleet_node(n: &pb::NodeSummary) -> Value {
    json!({
        "node": n.name,
        "role": n.role,
        "state": n.state,
        "state_since": time(&n.state_since),
        "address": n.address,
        "arch": opt(&n.arch),
        "version": opt(&n.version),
        "last_heartbeat": time(&n.last_heartbeat),
        "capacity": resources(n.capacity.as_ref()),
        "allocated": resources(n.allocated.as_ref()),
        "used": resources(n.used.as_ref()),
        "services": n.services,
        "publish_address": opt(&n.publish_address),
    })
}

/// `mcp node info` of a node that answered (Python `NodeInfo`).
pub fn node_info(node: &str, i: &pb::NodeInfoResponse) -> Value {
    json!({
        "node": node,
        "agent_version": i.agent_version,
        "runtime_available": i.runtime_available,
        "runtime_version": i.runtime_version,
        "runtime_error": opt(&i.runtime_error),
        "unikernels": i.unikernels,
        "qemu": opt(&i.qemu),
        "accel": opt(&i.accel),
        "ops": i.ops,
        "allowed_volume_roots": i.allowed_volume_roots,
        "audit_file_failing": i.audit_file_failing,
        "audit_records_lost": i.audit_records_lost,
    })
}

/// `mcp ls` (Python `FileEntry` each).
pub fn files(node: &str, service: &str, entries: &[pb::FileEntry]) -> Value {
    json!({
        "node": node,
        "service": service,
        "entries": entries.iter().map(|e| json!({
            "path": e.path,
            "kind": e.kind,
            "size": e.size,
            "mode": e.mode,
            "mtime": unix_time(e.mtime),
            "symlink_target": opt(&e.symlink_target),
        })).collect::<Vec<_>>(),
    })
}

/// `mcp rm`.
pub fn removed_file(node: &str, service: &str, path: &str) -> Value {
    json!({"node": node, "service": service, "path": path})
}

/// `mcp push` and `mcp pull` (Python `TransferResult`).
pub fn moved(tree: &TreeMoved) -> Value {
    json!({
        "node": tree.node,
        "service": tree.service,
        "files": tree.files.iter().map(|m| json!({
            "local": m.local.display().to_string(),
            "remote": m.remote,
            "size": m.size,
            "sha256": m.sha256,
        })).collect::<Vec<_>>(),
        "skipped": tree.skipped,
    })
}

/// One line of `mcp logs --json` (Python `LogLine`, with its node and
/// service): JSON Lines, one object per line of output.
pub fn log_line(node: &str, service: &str, line: &mcp_core::client::LogLine) -> Value {
    json!({
        "node": node,
        "service": service,
        "component": line.component,
        "stream": line.stream,
        "text": String::from_utf8_lossy(&line.data),
    })
}

/// An error under `--json`, on standard error: what went wrong, the gRPC
/// status name when a node answered with one (as the Python exceptions'
/// `code`), and the node concerned.
pub fn error(message: &str, code: Option<&str>, node: Option<&str>) -> Value {
    json!({"error": {"message": message, "code": code, "node": node}})
}
