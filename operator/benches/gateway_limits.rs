//! What the gateway's limits cost it under abuse: the memory one unjoined WebSocket holds, and
//! how many refused joins a second the gateway answers.
//!
//! Standalone mode runs in this process, so that its resident memory can be read from `/proc`;
//! the clients run in the same process, on the same cores, so the join rates are what the
//! gateway and its clients manage together on this machine.
//!
//! - Memory: opens `--sockets` WebSockets by hand (the handshake written on a bare TCP socket,
//!   so the client side costs next to nothing) that never join, and divides the growth of the
//!   resident memory by their number.
//! - Refused joins: `--clients` tasks, each on a WebSocket of its own, send joins one after
//!   another, each after the answer to the previous one, for `--seconds`. A socket is replaced
//!   after 90 joins, before the message budget of a socket (100 in a burst) would answer in
//!   the gateway's place. Two cases: joins to a suspended tenant, with the limit per address
//!   lifted, so that each goes through admission and is refused with `tenant-suspended`; and
//!   joins to the public space under the default limit of 30 joins per address per minute, so
//!   that all but the first 30 are refused with `too-many-joins` before admission.
//!
//! `cargo bench -p treffpunkt-operator --bench gateway_limits`
//! (`-- --sockets 2000 --clients 64 --seconds 5`).

#[path = "../tests/support/mod.rs"]
mod support;

use support::argument;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::SinkExt;
use support::sockets::{next_reply, open_websocket, raise_open_files_limit, resident_kib};
use tokio_tungstenite::tungstenite::Message;
use treffpunkt_client::signal_url;
use treffpunkt_operator::domain::{Tenant, TenantName};
use treffpunkt_operator::gateway::Limits;
use treffpunkt_operator::standalone::{self, Standalone, StandaloneConfig};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Joins sent on one socket before it is replaced: below the socket's message burst.
const JOINS_PER_SOCKET: usize = 90;

async fn start(limits: Limits) -> Standalone {
    let mut suspended = Tenant::public();
    suspended.name = TenantName::new("gesperrt").expect("a valid name");
    suspended.suspended = true;
    standalone::start(StandaloneConfig {
        http: SocketAddr::new(LOOPBACK, 0),
        grpc: SocketAddr::new(LOOPBACK, 0),
        udp: SocketAddr::new(LOOPBACK, 0),
        announce_ip: LOOPBACK,
        tenants: vec![suspended],
        limits,
        ..StandaloneConfig::default()
    })
    .await
    .expect("standalone mode starts")
}

/// Limits per address that every client of this one machine fits in.
fn for_one_address(sockets: usize) -> Limits {
    Limits {
        max_connections_per_address: 2 * sockets + 1_000,
        max_websockets_per_address: 2 * sockets + 1_000,
        join_timeout: Duration::from_secs(600),
        ..Limits::default()
    }
}

/// Resident KiB per unjoined socket, for `sockets` of them.
async fn memory_per_socket(sockets: usize) -> serde_json::Value {
    let server = start(for_one_address(sockets)).await;
    let warm: Vec<_> =
        futures::future::join_all((0..200).map(|_| open_websocket(server.http, "public", "chor")))
            .await;
    drop(warm);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = resident_kib();
    let mut open = Vec::with_capacity(sockets);
    for _ in 0..sockets {
        match open_websocket(server.http, "public", "chor").await {
            Some(socket) => open.push(socket),
            None => break,
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = resident_kib();
    let opened = open.len();
    drop(open);
    server.stop();
    serde_json::json!({
        "sockets": opened,
        "rss_kib_before": before,
        "rss_kib_after": after,
        "kib_per_socket": after.saturating_sub(before) as f64 / opened.max(1) as f64,
    })
}

/// Answers to joins, by code.
#[derive(Default)]
struct Answers {
    expected: AtomicU64,
    other: AtomicU64,
}

/// One client: joins `tenant/room` as fast as the answers come until `until`.
async fn refused_joins(url: String, expected: &'static str, until: Instant, answers: Arc<Answers>) {
    let join = serde_json::json!({"type": "join", "name": "Mallory"}).to_string();
    while Instant::now() < until {
        let Ok((mut socket, _)) = tokio_tungstenite::connect_async(&url).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        for _ in 0..JOINS_PER_SOCKET {
            if Instant::now() >= until
                || socket
                    .send(Message::Text(join.clone().into()))
                    .await
                    .is_err()
            {
                break;
            }
            let code = next_reply(&mut socket)
                .await
                .and_then(|reply| reply["code"].as_str().map(str::to_owned))
                .unwrap_or_default();
            let counter = if code == expected {
                &answers.expected
            } else {
                &answers.other
            };
            counter.fetch_add(1, Ordering::Relaxed);
            if code.is_empty() {
                break;
            }
        }
    }
}

/// Refused joins per second that `clients` clients get answered for `seconds`.
async fn refusal_rate(
    limits: Limits,
    tenant: &str,
    expected: &'static str,
    clients: usize,
    seconds: u64,
) -> serde_json::Value {
    let server = start(limits).await;
    let answers = Arc::new(Answers::default());
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let url = signal_url(server.http, tenant, &format!("raum-{client}"));
            tokio::spawn(refused_joins(url, expected, until, answers.clone()))
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    server.stop();
    let refused = answers.expected.load(Ordering::Relaxed);
    serde_json::json!({
        "code": expected,
        "clients": clients,
        "seconds": elapsed,
        "refused": refused,
        "other_answers": answers.other.load(Ordering::Relaxed),
        "refused_per_second": refused as f64 / elapsed,
    })
}

fn main() {
    let sockets = argument("--sockets", 2_000);
    let clients = argument("--clients", 64);
    let seconds = argument("--seconds", 5) as u64;
    let limit = raise_open_files_limit(2 * sockets as u64 + 1_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let memory = memory_per_socket(sockets).await;
        let suspended = refusal_rate(
            Limits {
                joins_per_minute: u32::MAX,
                ..for_one_address(clients)
            },
            "gesperrt",
            "tenant-suspended",
            clients,
            seconds,
        )
        .await;
        let over_the_rate = refusal_rate(
            for_one_address(clients),
            "public",
            "too-many-joins",
            clients,
            seconds,
        )
        .await;
        let report = serde_json::json!({
            "open_files_limit": limit,
            "unjoined_socket_memory": memory,
            "refused_joins": [suspended, over_the_rate],
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("a report")
        );
    });
}
