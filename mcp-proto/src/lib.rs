//! The MCP wire protocol: the `mcp.v1` protobuf messages and the tonic
//! client and server for `AgentService`, generated at build time from
//! `proto/mcp/v1/*.proto` by a pure-Rust protobuf compiler.
#![allow(missing_docs)]

/// Version 1 of the protocol.
pub mod v1 {
    tonic::include_proto!("mcp.v1");

    /// The encoded `FileDescriptorSet` of every `mcp.v1` file, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("mcp_descriptor");

    /// Fully qualified name of the agent service, as used by gRPC health checking.
    pub const AGENT_SERVICE_NAME: &str = "mcp.v1.AgentService";
}
