//! What two thousand WebSockets that never join cost the gateway: the resident memory of this
//! process (standalone mode in it, the sockets opened by hand against it) before and after
//! opening them. A test binary of its own, so that no other test's memory counts.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use support::sockets::{open_websocket, raise_open_files_limit, resident_kib};
use treffpunkt_operator::gateway::Limits;
use treffpunkt_operator::standalone::{self, StandaloneConfig};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const SOCKETS: usize = 2_000;
/// What one unjoined socket may cost the gateway, at most. It holds a 4 KiB read buffer, the
/// upgraded connection's few hundred bytes of state, and its session task, and the kernel
/// keeps its socket buffers outside the process: some 10 KiB in all. The bound leaves room for
/// the allocator's slack; before the gateway bounded its read buffers, a socket cost 133 KiB.
const BOUND_KIB_PER_SOCKET: u64 = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_unjoined_sockets_cost_less_than_32_kib_each() {
    // Each socket is two descriptors here: the test's end and the gateway's.
    let limit = raise_open_files_limit(2 * SOCKETS as u64 + 1_000);
    assert!(
        limit >= 2 * SOCKETS as u64 + 200,
        "the open-files limit is {limit}; this test needs {} descriptors",
        2 * SOCKETS
    );
    let server = standalone::start(StandaloneConfig {
        http: SocketAddr::new(LOOPBACK, 0),
        grpc: SocketAddr::new(LOOPBACK, 0),
        udp: SocketAddr::new(LOOPBACK, 0),
        announce_ip: LOOPBACK,
        limits: Limits {
            // All of them come from this one address, and must stay while they are counted.
            max_connections_per_address: 2 * SOCKETS,
            max_websockets_per_address: 2 * SOCKETS,
            join_timeout: Duration::from_secs(300),
            ..Limits::default()
        },
        ..StandaloneConfig::default()
    })
    .await
    .expect("standalone mode starts");
    // Warm up: the runtime's and the allocator's structures for many sockets exist from now.
    let warm: Vec<_> =
        futures::future::join_all((0..200).map(|_| open_websocket(server.http, "public", "chor")))
            .await;
    assert!(warm.iter().all(Option::is_some));
    drop(warm);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = resident_kib();

    let mut sockets = Vec::with_capacity(SOCKETS);
    for _ in 0..SOCKETS {
        let socket = open_websocket(server.http, "public", "chor")
            .await
            .expect("the gateway upgrades the socket");
        sockets.push(socket);
    }
    // Let every session task start and settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = resident_kib();

    let per_socket = after.saturating_sub(before) / SOCKETS as u64;
    eprintln!(
        "{SOCKETS} unjoined sockets: {before} KiB before, {after} KiB after, {per_socket} KiB each"
    );
    assert!(
        per_socket < BOUND_KIB_PER_SOCKET,
        "{SOCKETS} unjoined sockets cost {per_socket} KiB each; at most {BOUND_KIB_PER_SOCKET} expected"
    );
    drop(sockets);
    server.stop();
}
