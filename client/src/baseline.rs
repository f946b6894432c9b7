//! The baseline the benchmarks measure in the same run: a bare UDP relay thread that receives
//! each datagram once and sends it on to a few receivers, the least any forwarder must do. The
//! machines are shared and noisy, so the node's cost is reported as a multiple of this as well
//! as in microseconds.

use std::net::{SocketAddr, UdpSocket};
use std::thread::JoinHandle;
use std::time::Duration;

/// The size of each datagram, about a video packet's.
pub const DATAGRAM_SIZE: usize = 1000;

/// CPU nanoseconds this thread has run, from `/proc/thread-self/schedstat`.
pub fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// `count` sockets on loopback, each drained by a thread of its own until nothing came for
/// `quiet`: their addresses, and the threads to join once the sending is over.
pub fn drained_sinks(
    count: usize,
    quiet: Duration,
) -> std::io::Result<(Vec<SocketAddr>, Vec<JoinHandle<()>>)> {
    let mut addresses = Vec::with_capacity(count);
    let mut drains = Vec::with_capacity(count);
    for _ in 0..count {
        let sink = UdpSocket::bind("127.0.0.1:0")?;
        sink.set_read_timeout(Some(quiet))?;
        addresses.push(sink.local_addr()?);
        drains.push(std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while sink.recv(&mut buf).is_ok() {}
        }));
    }
    Ok((addresses, drains))
}

/// The relay thread's CPU microseconds per forwarded datagram, over `datagrams` received
/// datagrams, each forwarded to `fan_out` receivers; `None` when it could not be measured.
pub fn relay_us_per_datagram(datagrams: u64, fan_out: usize) -> std::io::Result<Option<f64>> {
    if datagrams == 0 || fan_out == 0 {
        return Ok(None);
    }
    let relay = UdpSocket::bind("127.0.0.1:0")?;
    relay.set_read_timeout(Some(Duration::from_millis(500)))?;
    let relay_address = relay.local_addr()?;
    let (sink_addresses, drains) = drained_sinks(fan_out, Duration::from_millis(200))?;
    let relay_thread = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let start = thread_cpu_ns();
        let mut forwarded = 0u64;
        while forwarded < datagrams * fan_out as u64 {
            let Ok(len) = relay.recv(&mut buf) else { break };
            for sink in &sink_addresses {
                if relay.send_to(&buf[..len], sink).is_ok() {
                    forwarded += 1;
                }
            }
        }
        let spent = thread_cpu_ns().saturating_sub(start);
        (spent > 0 && forwarded > 0).then(|| spent as f64 / 1000.0 / forwarded as f64)
    });
    let sender = UdpSocket::bind("127.0.0.1:0")?;
    let payload = [7u8; DATAGRAM_SIZE];
    for i in 0..datagrams {
        sender.send_to(&payload, relay_address)?;
        if i % 32 == 0 {
            // Keep the relay's receive buffer from overflowing.
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    let per_datagram = relay_thread.join().unwrap_or(None);
    for drain in drains {
        let _ = drain.join();
    }
    Ok(per_datagram)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_small_relay_run_measures_something() {
        let per_datagram = super::relay_us_per_datagram(2_000, 4).unwrap();
        assert!(per_datagram.is_some_and(|us| us > 0.0));
    }
}
