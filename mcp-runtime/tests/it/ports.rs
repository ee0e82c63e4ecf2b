//! Ports for the published ports of test containers and guests.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// A TCP port on 127.0.0.1 that is free now and lies below the kernel's
/// ephemeral range.
///
/// A port is handed out here and bound later by someone else (an agent, a
/// container's published port), and it may be free for a while in between,
/// as when a component's old instance stops before the new one starts. A
/// port from the ephemeral range (what binding port 0 gives) can be taken
/// in such a gap by any outgoing connection on the host; a port below it
/// never is. Each test process walks its own stretch of the range (chosen
/// from its pid) and skips ports something already holds.
pub fn free_port() -> u16 {
    const LOWEST: u32 = 10_000;
    const STRETCH: u32 = 2_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768)
        .clamp(LOWEST + STRETCH, 65_536);
    let size = ephemeral_start - LOWEST;
    let start = (std::process::id() % (size / STRETCH)) * STRETCH;
    for _ in 0..size {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOWEST + (start + n) % size;
        let port = u16::try_from(port).expect("ports below the ephemeral range fit in u16");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 between {LOWEST} and {ephemeral_start}");
}
