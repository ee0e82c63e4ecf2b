//! Compiles `proto/mcp/v1/*.proto` with the pure-Rust `protox` compiler (no
//! system `protoc`) and generates the tonic client and server code, plus the
//! encoded file descriptor sets served by gRPC reflection (every file, the
//! agent's API alone, the fleet API alone).

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/mcp/v1/service.proto",
        "proto/mcp/v1/agent.proto",
        "proto/mcp/v1/fleet.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("mcp_descriptor.bin"), fds.encode_to_vec())?;
    // What an agent serves: its own API alone (and the definitions it
    // imports); what only the master serves: the fleet API alone.
    let agent = protox::compile([protos[1]], ["proto"])?;
    std::fs::write(out.join("agent_descriptor.bin"), agent.encode_to_vec())?;
    let fleet = protox::compile([protos[2]], ["proto"])?;
    std::fs::write(out.join("fleet_descriptor.bin"), fleet.encode_to_vec())?;
    tonic_prost_build::configure()
        // File content as `Bytes`: chunks pass between the wire and the
        // file system without copies.
        .bytes(".mcp.v1.PushFileRequest.data")
        .bytes(".mcp.v1.PullFileResponse.data")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
