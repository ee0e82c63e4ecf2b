//! The one table of which RPC needs which [`Role`].
//!
//! Every method a server serves (the agent's API, which the master serves
//! too, the master's fleet API, gRPC health checking and reflection) has a
//! row here. A method missing from the table is treated
//! as needing [`Role::Admin`] (fail closed), and the coverage test that
//! walks the service descriptors fails until the row is added.

use super::Role;

/// `(gRPC path, role required)`, one row per method served.
pub const METHOD_ROLES: &[(&str, Role)] = &[
    // State changes.
    ("/mcp.v1.AgentService/Deploy", Role::Admin),
    ("/mcp.v1.AgentService/DeployStream", Role::Admin),
    ("/mcp.v1.AgentService/Stop", Role::Admin),
    ("/mcp.v1.AgentService/Start", Role::Admin),
    ("/mcp.v1.AgentService/Restart", Role::Admin),
    ("/mcp.v1.AgentService/Remove", Role::Admin),
    // A dry run changes nothing, but the same RPC converges the node.
    ("/mcp.v1.AgentService/Sync", Role::Admin),
    ("/mcp.v1.AgentService/Adopt", Role::Admin),
    ("/mcp.v1.AgentService/Rollback", Role::Admin),
    ("/mcp.v1.AgentService/PushFile", Role::Admin),
    ("/mcp.v1.AgentService/RemoveFile", Role::Admin),
    // Queries.
    ("/mcp.v1.AgentService/Status", Role::ReadOnly),
    ("/mcp.v1.AgentService/List", Role::ReadOnly),
    ("/mcp.v1.AgentService/Ps", Role::ReadOnly),
    ("/mcp.v1.AgentService/Logs", Role::ReadOnly),
    ("/mcp.v1.AgentService/NodeInfo", Role::ReadOnly),
    ("/mcp.v1.AgentService/Events", Role::ReadOnly),
    ("/mcp.v1.AgentService/History", Role::ReadOnly),
    ("/mcp.v1.AgentService/PullFile", Role::ReadOnly),
    ("/mcp.v1.AgentService/ListFiles", Role::ReadOnly),
    ("/mcp.v1.AgentService/StatFile", Role::ReadOnly),
    // The master's fleet API. Agents join with a `node` token, which may
    // do nothing else.
    ("/mcp.v1.FleetService/Register", Role::Node),
    ("/mcp.v1.FleetService/Heartbeat", Role::Node),
    ("/mcp.v1.FleetService/Drain", Role::Admin),
    ("/mcp.v1.FleetService/Undrain", Role::Admin),
    ("/mcp.v1.FleetService/ListNodes", Role::ReadOnly),
    ("/mcp.v1.FleetService/Plan", Role::ReadOnly),
    // Standard services: authenticated like everything else.
    ("/grpc.health.v1.Health/Check", Role::ReadOnly),
    ("/grpc.health.v1.Health/Watch", Role::ReadOnly),
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        Role::ReadOnly,
    ),
    (
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        Role::ReadOnly,
    ),
];

/// The role `path` (`/package.Service/Method`) needs: its row in
/// [`METHOD_ROLES`], or [`Role::Admin`] for a method without one.
pub fn required_role(path: &str) -> Role {
    METHOD_ROLES
        .iter()
        .find(|(p, _)| *p == path)
        .map_or(Role::Admin, |(_, r)| *r)
}

/// Whether `path` has a row in [`METHOD_ROLES`].
pub fn is_listed(path: &str) -> bool {
    METHOD_ROLES.iter().any(|(p, _)| *p == path)
}

/// The method name of a gRPC path (`Deploy` of `/mcp.v1.AgentService/Deploy`).
pub fn method_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlisted_methods_need_admin() {
        assert_eq!(required_role("/mcp.v1.AgentService/Status"), Role::ReadOnly);
        assert_eq!(required_role("/mcp.v1.AgentService/Deploy"), Role::Admin);
        assert_eq!(required_role("/mcp.v1.AgentService/NewThing"), Role::Admin);
        assert!(!is_listed("/mcp.v1.AgentService/NewThing"));
        assert_eq!(method_name("/mcp.v1.AgentService/Deploy"), "Deploy");
    }

    #[test]
    fn rows_are_unique() {
        let mut paths: Vec<_> = METHOD_ROLES.iter().map(|(p, _)| *p).collect();
        paths.sort_unstable();
        let n = paths.len();
        paths.dedup();
        assert_eq!(paths.len(), n);
    }
}
