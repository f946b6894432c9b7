//! The media port's send path against the alternatives, in CPU time of the sending thread per
//! datagram of 1,000 bytes, each method measured in turn in the same run (rounds alternate):
//!
//! - `sendto`: one system call per datagram, the floor a naive forwarder pays;
//! - `sendmmsg`: the node's `udp::batch::send` without segmentation, up to 64 messages a call;
//! - `sendmmsg+GSO`: the same with runs to one address as one segmented message (what the node
//!   does);
//! - `quinn-udp`: `quinn_udp::UdpSocketState::try_send`, one transmit per address (segmented where
//!   a run goes to one address), which the issue proposed in place of the hand-written module.
//!
//! Two shapes of a flush of 25 datagrams: the fan-out (one packet to 25 subscribers, every
//! datagram to another address) and runs (a frame of 5 packets to each of 5 subscribers).
//! Receivers on loopback drain every socket on threads of their own; their cost is not counted.
//!
//! `cargo bench -p treffpunkt-client --bench udp_send [-- DATAGRAMS ROUNDS]` (it lives with the
//! benchmarks' other measuring code; the module it measures is the media node's)

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use treffpunkt_client::baseline::{drained_sinks, thread_cpu_ns};
use treffpunkt_media_node::udp::batch;

const SIZE: usize = 1000;
const FLUSH: usize = 25;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Method {
    SendTo,
    Sendmmsg,
    SendmmsgGso,
    QuinnUdp,
}

impl Method {
    const ALL: [Self; 4] = [
        Self::SendTo,
        Self::Sendmmsg,
        Self::SendmmsgGso,
        Self::QuinnUdp,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::SendTo => "sendto",
            Self::Sendmmsg => "sendmmsg",
            Self::SendmmsgGso => "sendmmsg+GSO",
            Self::QuinnUdp => "quinn-udp",
        }
    }
}

/// One flush: the datagrams and where each goes, ordered by address.
fn flush(
    receivers: &[SocketAddr],
    per_address: usize,
    payload: &[u8],
) -> Vec<(Vec<u8>, SocketAddr)> {
    receivers
        .iter()
        .take(FLUSH / per_address)
        .flat_map(|to| (0..per_address).map(move |_| (payload.to_vec(), *to)))
        .collect()
}

/// Sends `datagrams` flushes' worth with `method`; returns CPU ns per datagram.
fn measure(
    method: Method,
    socket: &UdpSocket,
    state: &quinn_udp::UdpSocketState,
    flush: &[(Vec<u8>, SocketAddr)],
    datagrams: usize,
) -> f64 {
    let slices: Vec<(&[u8], SocketAddr)> = flush.iter().map(|(b, a)| (b.as_slice(), *a)).collect();
    // Runs of one address as quinn-udp transmits: the contents of each run side by side.
    let mut runs: Vec<(Vec<u8>, SocketAddr, usize)> = Vec::new();
    for (buffer, to) in flush {
        match runs.last_mut() {
            Some((contents, address, count)) if address == to => {
                contents.extend_from_slice(buffer);
                *count += 1;
            }
            _ => runs.push((buffer.clone(), *to, 1)),
        }
    }
    let flushes = datagrams.div_ceil(flush.len());
    let start = thread_cpu_ns();
    for _ in 0..flushes {
        match method {
            Method::SendTo => {
                for (buffer, to) in &slices {
                    let _ = socket.send_to(buffer, to);
                }
            }
            Method::Sendmmsg | Method::SendmmsgGso => {
                let mut sent = 0;
                while sent < slices.len() {
                    match batch::send(socket, &slices[sent..], method == Method::SendmmsgGso) {
                        Ok(done) => sent += done.datagrams,
                        Err(_) => break,
                    }
                }
            }
            Method::QuinnUdp => {
                for (contents, destination, count) in &runs {
                    let transmit = quinn_udp::Transmit {
                        destination: *destination,
                        ecn: None,
                        contents,
                        segment_size: (*count > 1).then_some(SIZE),
                        src_ip: None,
                    };
                    let _ = state.try_send(quinn_udp::UdpSockRef::from(socket), &transmit);
                }
            }
        }
    }
    (thread_cpu_ns() - start) as f64 / (flushes * flush.len()) as f64
}

fn main() -> std::io::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let datagrams = args.first().copied().unwrap_or(200_000);
    let rounds = args.get(1).copied().unwrap_or(3);
    // Drained until the measurements are over (a second with nothing).
    let (receivers, drains) = drained_sinks(FLUSH, Duration::from_secs(1))?;
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    let state = quinn_udp::UdpSocketState::new(quinn_udp::UdpSockRef::from(&socket))?;
    let payload = [7u8; SIZE];
    let shapes = [
        (
            "fan-out: 25 addresses, 1 datagram each",
            flush(&receivers, 1, &payload),
        ),
        (
            "runs: 5 addresses, 5 datagrams each",
            flush(&receivers, 5, &payload),
        ),
    ];
    println!(
        "CPU µs per 1,000-byte datagram on loopback, flushes of {FLUSH}, {datagrams} datagrams per \
         measurement, {rounds} rounds (quinn-udp's largest segmented send: {})",
        state.max_gso_segments()
    );
    for (shape, flush) in &shapes {
        let mut results: Vec<Vec<f64>> = vec![Vec::new(); Method::ALL.len()];
        for _ in 0..rounds {
            for (i, method) in Method::ALL.iter().enumerate() {
                results[i].push(measure(*method, &socket, &state, flush, datagrams) / 1000.0);
            }
        }
        let mean = |values: &[f64]| values.iter().sum::<f64>() / values.len() as f64;
        let sendto = mean(&results[0]);
        println!("\n{shape}");
        println!("| method | µs per datagram (rounds) | mean | × sendto |");
        println!("|---|---|--:|--:|");
        for (method, values) in Method::ALL.iter().zip(&results) {
            let rounds: Vec<String> = values.iter().map(|v| format!("{v:.2}")).collect();
            println!(
                "| {} | {} | {:.2} | {:.2} |",
                method.name(),
                rounds.join(", "),
                mean(values),
                mean(values) / sendto
            );
        }
    }
    for drain in drains {
        let _ = drain.join();
    }
    Ok(())
}
