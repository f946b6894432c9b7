//! Ports on loopback for the processes that tests and benchmarks start.
//!
//! Asking the kernel for port 0 and closing the socket again hands out a port from its
//! ephemeral range, the range it also takes the source ports of outgoing connections from: a
//! test that opens connections to the API server between choosing the port and starting the
//! process that listens on it sometimes finds the port taken ("Address already in use").
//! [`free_port`] chooses below that range instead, where only explicit binds go.

use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};

/// The lowest port handed out.
const LOW: u32 = 20_000;
/// How many ports there are to hand out: up to 31,999, below Linux's default ephemeral range
/// (32,768 to 60,999).
const SPAN: u32 = 12_000;

/// A port on 127.0.0.1 that is free for TCP and UDP now and outside the range of source ports.
///
/// Every call in a process returns another port; processes start at different places of the
/// range (by their id), so that tests running side by side rarely try the same ports.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(2_654_435_761) % SPAN;
    loop {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (start + offset) % SPAN) as u16;
        let free = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
            && UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok();
        if free {
            return port;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_below_the_ephemeral_range_and_skip_taken_ones() {
        let first = free_port();
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, first + 1));
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        assert!(ports.iter().all(|port| (20_000..32_000).contains(port)));
        if taken.is_ok() {
            assert!(!ports.contains(&(first + 1)), "{ports:?}");
        }
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
        for port in ports {
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("a port given out is free");
        }
    }
}
