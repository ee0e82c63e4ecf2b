//! The MCP wire protocol: the `mcp.v1` protobuf messages and the tonic
//! clients and servers for `AgentService` (every agent, and the master for
//! its fleet) and `FleetService` (the master), generated at build time from
//! `proto/mcp/v1/*.proto` by a pure-Rust protobuf compiler.
#![allow(missing_docs)]

/// Version 1 of the protocol.
pub mod v1 {
    tonic::include_proto!("mcp.v1");

    /// The encoded `FileDescriptorSet` of every `mcp.v1` file.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("mcp_descriptor");

    /// The encoded `FileDescriptorSet` of `agent.proto` alone, for gRPC
    /// reflection on an agent (which serves `AgentService` only).
    pub const AGENT_FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("agent_descriptor");

    /// The encoded `FileDescriptorSet` of `fleet.proto` alone (with the
    /// definitions it imports), for gRPC reflection on the master.
    pub const FLEET_FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("fleet_descriptor");

    /// Fully qualified name of the agent service, as used by gRPC health checking.
    pub const AGENT_SERVICE_NAME: &str = "mcp.v1.AgentService";

    /// Fully qualified name of the master's fleet service.
    pub const FLEET_SERVICE_NAME: &str = "mcp.v1.FleetService";
}
