//! Garbage for the media port, as an attacker would send it: random bytes and datagrams shaped
//! like RTP, RTCP, STUN and DTLS as far as their headers go, at a steady rate, from addresses
//! the node has never seen or forged with a participant's own address as their source.
//!
//! Forging a source address takes a raw socket (`CAP_NET_RAW`): the datagram's IPv4 and UDP
//! headers are written here, with the forged source, and the kernel sends them as they are. It
//! is only for the project's own tests and only sends to the address it is given, which the
//! tests keep on loopback.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use socket2::{Domain, Protocol, Socket, Type};

/// What to flood, where, how fast.
#[derive(Debug, clap::Args)]
pub struct FloodArgs {
    /// The media port to flood (IPv4).
    #[arg(long)]
    pub to: SocketAddrV4,
    /// Datagrams per second.
    #[arg(long, default_value_t = 20_000)]
    pub per_second: u32,
    /// For how long, in seconds.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Forge these source addresses (a participant's), comma-separated; half of the datagrams
    /// then come from them and half from unknown sources. Needs CAP_NET_RAW.
    #[arg(long, value_delimiter = ',')]
    pub spoof: Vec<SocketAddrV4>,
}

/// A small, fast source of noise; not for anything that needs real randomness.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The `n`th datagram of garbage, cut from `pool` and shaped by `n`.
fn garbage(n: u64, pool: &[u8], noise: &mut Noise) -> Vec<u8> {
    let length = 60 + (noise.next() % 1100) as usize;
    let start = (noise.next() % (pool.len() - length) as u64) as usize;
    let mut bytes = pool[start..start + length].to_vec();
    match n % 6 {
        0 => {}
        1 => bytes[..2].copy_from_slice(&[0x80, 96]),
        2 => {
            let words = ((length - 14) / 4 - 1) as u16;
            bytes[..2].copy_from_slice(&[0x80, 200]);
            bytes[2..4].copy_from_slice(&words.to_be_bytes());
        }
        3 => {
            bytes.truncate(28);
            bytes[..8].copy_from_slice(&[0, 1, 0, 8, 0x21, 0x12, 0xa4, 0x42]);
            bytes[20..24].copy_from_slice(&[0, 6, 0, 4]);
        }
        4 => {
            bytes[..3].copy_from_slice(&[23, 0xfe, 0xfd]);
            bytes[11..13].copy_from_slice(&((length - 13) as u16).to_be_bytes());
        }
        _ => bytes[0] = 22,
    }
    bytes
}

/// An IPv4 + UDP datagram from `from` to `to` (checksums: the kernel fills the IP one, and a
/// UDP checksum of 0 means none, which IPv4 allows).
fn forged(from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut packet = Vec::with_capacity(total);
    packet.extend_from_slice(&[0x45, 0, 0, 0]);
    packet[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    packet.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    packet.extend_from_slice(&from.ip().octets());
    packet.extend_from_slice(&to.ip().octets());
    packet.extend_from_slice(&from.port().to_be_bytes());
    packet.extend_from_slice(&to.port().to_be_bytes());
    packet.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    packet.extend_from_slice(&[0, 0]);
    packet.extend_from_slice(payload);
    packet
}

/// Sends the flood; returns how many datagrams went out.
pub fn run(args: &FloodArgs) -> anyhow::Result<u64> {
    if args.per_second == 0 {
        bail!("--per-second must be more than 0");
    }
    let unknown: Vec<UdpSocket> = (0..16)
        .map(|_| UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<Result<_, _>>()
        .context("binding the unknown sources")?;
    let raw = if args.spoof.is_empty() {
        None
    } else {
        let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP))
            .context("a raw socket to forge source addresses (needs CAP_NET_RAW)")?;
        socket.set_header_included_v4(true)?;
        Some(socket)
    };
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let pool: Vec<u8> = (0..4096).map(|_| noise.next() as u8).collect();
    let destination = SocketAddr::V4(args.to);
    let per_millisecond = u64::from(args.per_second).div_ceil(1000);
    let start = Instant::now();
    let end = start + Duration::from_secs(args.seconds);
    let mut sent = 0u64;
    let mut tick = start;
    while tick < end {
        for _ in 0..per_millisecond {
            let payload = garbage(sent / 2, &pool, &mut noise);
            let forge = raw.as_ref().filter(|_| sent % 2 == 1);
            let result = match forge {
                Some(raw) => {
                    let from = args.spoof[(sent / 2) as usize % args.spoof.len()];
                    raw.send_to(&forged(from, args.to, &payload), &destination.into())
                }
                None => unknown[(sent % 16) as usize].send_to(&payload, destination),
            };
            // A full socket buffer loses a datagram of garbage; that is all.
            let _ = result;
            sent += 1;
        }
        tick += Duration::from_millis(1);
        if let Some(wait) = tick.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forged_datagram_says_it_comes_from_the_forged_address() {
        let from = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 9), 4242);
        let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 10_000);
        let packet = forged(from, to, b"hallo");
        assert_eq!(packet.len(), 33);
        assert_eq!(&packet[12..16], &[127, 0, 0, 9]);
        assert_eq!(u16::from_be_bytes([packet[20], packet[21]]), 4242);
        assert_eq!(u16::from_be_bytes([packet[22], packet[23]]), 10_000);
        assert_eq!(u16::from_be_bytes([packet[24], packet[25]]), 13);
        assert_eq!(&packet[28..], b"hallo");
    }

    #[test]
    fn every_shape_of_garbage_is_made_without_panicking() {
        let mut noise = Noise(1);
        let pool: Vec<u8> = (0..4096).map(|_| noise.next() as u8).collect();
        for n in 0..600 {
            let datagram = garbage(n, &pool, &mut noise);
            assert!(datagram.len() >= 28);
        }
    }
}
