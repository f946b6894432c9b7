//! A UDP relay that loses packets on purpose, standing between one client and the media node.
//!
//! Loss, delay and reordering cannot come from the kernel here (no netem), so tests model a bad
//! line with this relay instead. It forwards everything both ways, each way after the line's
//! delay if it has one, and drops every n-th RTP packet in the chosen directions; STUN, DTLS and
//! RTCP always pass, so the connection comes up and feedback flows.
//!
//! It also notes what anyone on the line can see: the SRTP protection profiles of the DTLS
//! handshake (those the client offers, the one the node chooses) and RTP packets that go again
//! under a packet index already used, with other bytes: repairs sent without RTX.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What the line does: which way packets are lost, and how long they take.
#[derive(Clone, Copy, Debug, Default)]
pub struct Loss {
    /// Drop every n-th RTP packet from the client to the node (0: none).
    pub uplink_every: u64,
    /// Drop every n-th RTP packet from the node to the client (0: none).
    pub downlink_every: u64,
    /// How long every datagram takes each way (half the line's round trip), in order.
    pub delay: Duration,
}

/// Where one direction's datagrams go: out of `socket` at once, or after a delay.
enum Way {
    Now(Arc<UdpSocket>),
    Later(
        Duration,
        mpsc::UnboundedSender<(tokio::time::Instant, Vec<u8>, SocketAddr)>,
    ),
}

impl Way {
    /// Sends out of `socket` after `delay`; the sending task ends with the relay's.
    fn new(socket: Arc<UdpSocket>, delay: Duration) -> Self {
        if delay.is_zero() {
            return Self::Now(socket);
        }
        let (queue, mut queued) = mpsc::unbounded_channel::<(_, Vec<u8>, _)>();
        tokio::spawn(async move {
            while let Some((due, datagram, to)) = queued.recv().await {
                tokio::time::sleep_until(due).await;
                let _ = socket.send_to(&datagram, to).await;
            }
        });
        Self::Later(delay, queue)
    }

    async fn send(&self, datagram: &[u8], to: SocketAddr) {
        match self {
            Self::Now(socket) => {
                let _ = socket.send_to(datagram, to).await;
            }
            Self::Later(delay, queue) => {
                let due = tokio::time::Instant::now() + *delay;
                let _ = queue.send((due, datagram.to_vec(), to));
            }
        }
    }
}

/// Counters of a relay.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// RTP packets dropped towards the node.
    pub dropped_up: AtomicU64,
    /// RTP packets dropped towards the client.
    pub dropped_down: AtomicU64,
    /// RTP packets towards the node under an index (SSRC and sequence number) that an earlier
    /// packet of the last few seconds had, with other bytes.
    pub resealed_up: AtomicU64,
    /// The same towards the client.
    pub resealed_down: AtomicU64,
    /// What the DTLS handshake said about SRTP.
    pub handshake: Mutex<Handshake>,
}

/// The SRTP protection profiles of a DTLS handshake (`use_srtp`, RFC 5764), by their numbers:
/// 1 is `SRTP_AES128_CM_HMAC_SHA1_80`, 7 and 8 are AES-GCM with 128- and 256-bit keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Handshake {
    /// What the client offered, in its order of preference.
    pub offered: Vec<u16>,
    /// What the node chose.
    pub chosen: Option<u16>,
}

/// How long the relay remembers a packet's index to tell a packet sent again under it; far less
/// than the time a stream takes to run through its sequence numbers.
const INDEX_KEPT: Duration = Duration::from_secs(5);

/// The packet indices of one direction seen in the last [`INDEX_KEPT`], with a hash of the
/// bytes sent under each.
#[derive(Default)]
struct Indices {
    seen: HashMap<(u32, u16), (Instant, u64)>,
}

impl Indices {
    /// Notes an RTP datagram; whether it went under a recent packet's index with other bytes.
    fn resealed(&mut self, datagram: &[u8], now: Instant) -> bool {
        let (Some(sequence), Some(ssrc)) = (datagram.get(2..4), datagram.get(8..12)) else {
            return false;
        };
        let index = (
            u32::from_be_bytes([ssrc[0], ssrc[1], ssrc[2], ssrc[3]]),
            u16::from_be_bytes([sequence[0], sequence[1]]),
        );
        let mut hasher = DefaultHasher::new();
        datagram.hash(&mut hasher);
        let bytes = hasher.finish();
        if self.seen.len() > 200_000 {
            self.seen
                .retain(|_, (at, _)| now.duration_since(*at) < INDEX_KEPT);
        }
        match self.seen.insert(index, (now, bytes)) {
            Some((at, before)) => now.duration_since(at) < INDEX_KEPT && before != bytes,
            None => false,
        }
    }
}

/// The SRTP protection profiles in a DTLS record that carries a ClientHello or ServerHello
/// (RFC 6347, RFC 5764), and whether it is the server's; `None` for anything else, including
/// a hello split across records.
fn srtp_profiles(datagram: &[u8]) -> Option<(bool, Vec<u16>)> {
    let u16_at = |bytes: &[u8], at: usize| {
        bytes
            .get(at..at + 2)
            .map(|two| u16::from_be_bytes([two[0], two[1]]))
    };
    // Record header: type 22 (handshake), version, epoch, sequence number, length.
    if *datagram.first()? != 22 {
        return None;
    }
    let length = usize::from(u16_at(datagram, 11)?);
    let handshake = datagram.get(13..13 + length)?;
    // Handshake header: type, length, message sequence, fragment offset and length.
    let server = match handshake.first()? {
        1 => false,
        2 => true,
        _ => return None,
    };
    let body = handshake.get(12..)?;
    // Version and random, then the session id.
    let mut at = 34;
    at += 1 + usize::from(*body.get(at)?);
    if server {
        at += 3; // cipher suite and compression method
    } else {
        at += 1 + usize::from(*body.get(at)?); // cookie
        at += 2 + usize::from(u16_at(body, at)?); // cipher suites
        at += 1 + usize::from(*body.get(at)?); // compression methods
    }
    let extensions_end = at + 2 + usize::from(u16_at(body, at)?);
    at += 2;
    while at + 4 <= extensions_end {
        let (kind, length) = (u16_at(body, at)?, usize::from(u16_at(body, at + 2)?));
        if kind == 14 {
            let listed = usize::from(u16_at(body, at + 4)?);
            let profiles = body.get(at + 6..at + 6 + listed)?;
            let profiles = profiles
                .chunks_exact(2)
                .map(|two| u16::from_be_bytes([two[0], two[1]]));
            return Some((server, profiles.collect()));
        }
        at += 4 + length;
    }
    None
}

impl RelayStats {
    /// Notes what a datagram shows anyone on the line; `up` is towards the node.
    fn note(&self, datagram: &[u8], up: bool, indices: &mut Indices) {
        if is_rtp(datagram) {
            if indices.resealed(datagram, Instant::now()) {
                let resealed = if up {
                    &self.resealed_up
                } else {
                    &self.resealed_down
                };
                resealed.fetch_add(1, Ordering::Relaxed);
            }
        } else if let Some((server, profiles)) = srtp_profiles(datagram) {
            let mut handshake = self.handshake.lock().unwrap_or_else(|e| e.into_inner());
            match (server, up) {
                (false, true) => handshake.offered = profiles,
                (true, false) => handshake.chosen = profiles.first().copied(),
                _ => {}
            }
        }
    }
}

/// A running relay.
pub struct LossyRelay {
    /// Where the client sends to instead of the node.
    pub address: SocketAddr,
    /// What it dropped.
    pub stats: Arc<RelayStats>,
    task: JoinHandle<()>,
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// RTP, not RTCP (RFC 5761: RTCP packet types are 192..=223) and not STUN or DTLS.
fn is_rtp(datagram: &[u8]) -> bool {
    datagram.len() >= 12
        && (128..=191).contains(&datagram[0])
        && !(192..=223).contains(&datagram[1])
}

/// Whether to lose this datagram: every `every`-th RTP packet counted in `count`.
fn lose(datagram: &[u8], count: &mut u64, every: u64, dropped: &AtomicU64) -> bool {
    if !is_rtp(datagram) {
        return false;
    }
    *count += 1;
    let lost = every > 0 && count.is_multiple_of(every);
    if lost {
        dropped.fetch_add(1, Ordering::Relaxed);
    }
    lost
}

impl LossyRelay {
    /// Starts a relay on loopback in front of `node`.
    pub async fn start(node: SocketAddr, loss: Loss) -> std::io::Result<Self> {
        let client_side = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let node_side = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let address = client_side.local_addr()?;
        let stats = Arc::new(RelayStats::default());
        let counters = stats.clone();
        let task = tokio::spawn(async move {
            let up = Way::new(node_side.clone(), loss.delay);
            let down = Way::new(client_side.clone(), loss.delay);
            let mut client: Option<SocketAddr> = None;
            let (mut up_rtp, mut down_rtp) = (0u64, 0u64);
            let (mut up_indices, mut down_indices) = (Indices::default(), Indices::default());
            let mut from_client = vec![0u8; 2048];
            let mut from_node = vec![0u8; 2048];
            loop {
                tokio::select! {
                    Ok((len, from)) = client_side.recv_from(&mut from_client) => {
                        client = Some(from);
                        let datagram = &from_client[..len];
                        counters.note(datagram, true, &mut up_indices);
                        if !lose(datagram, &mut up_rtp, loss.uplink_every, &counters.dropped_up) {
                            up.send(datagram, node).await;
                        }
                    }
                    Ok((len, _)) = node_side.recv_from(&mut from_node) => {
                        let Some(client) = client else { continue };
                        let datagram = &from_node[..len];
                        counters.note(datagram, false, &mut down_indices);
                        if !lose(datagram, &mut down_rtp, loss.downlink_every, &counters.dropped_down) {
                            down.send(datagram, client).await;
                        }
                    }
                }
            }
        });
        Ok(Self {
            address,
            stats,
            task,
        })
    }
}

/// Replaces the address and port of every host candidate in `sdp` with `to`.
pub fn redirect_candidates(sdp: &str, to: SocketAddr) -> String {
    sdp.split("\r\n")
        .map(|line| {
            if !line.starts_with("a=candidate:") {
                return line.to_owned();
            }
            // a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ ...
            let mut fields: Vec<String> = line.split(' ').map(str::to_owned).collect();
            if fields.len() > 5 {
                fields[4] = to.ip().to_string();
                fields[5] = to.port().to_string();
            }
            fields.join(" ")
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_redirected_and_nothing_else_changes() {
        let sdp = "v=0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 10000 typ host\r\na=mid:0\r\n";
        let to: SocketAddr = "127.0.0.1:4242".parse().unwrap();
        assert_eq!(
            redirect_candidates(sdp, to),
            "v=0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 4242 typ host\r\na=mid:0\r\n"
        );
    }

    /// A DTLS record carrying a hello of `kind` (1: client, 2: server) whose extensions are an
    /// unrelated one and then `use_srtp` with `profiles`.
    fn hello(kind: u8, profiles: &[u16]) -> Vec<u8> {
        let mut use_srtp = vec![0, 14];
        let listed: Vec<u8> = profiles.iter().flat_map(|p| p.to_be_bytes()).collect();
        use_srtp.extend((listed.len() as u16 + 3).to_be_bytes());
        use_srtp.extend((listed.len() as u16).to_be_bytes());
        use_srtp.extend(listed);
        use_srtp.push(0); // no MKI
        let mut extensions = vec![0, 23, 0, 0]; // extended master secret
        extensions.extend(use_srtp);
        let mut body = vec![0xfe, 0xfd];
        body.extend([7; 32]); // random
        body.extend([1, 9]); // a session id of one byte
        if kind == 1 {
            body.extend([0, 0, 4, 0xc0, 0x2b, 0xc0, 0x2f, 1, 0]); // cookie, suites, compression
        } else {
            body.extend([0xc0, 0x2b, 0]);
        }
        body.extend((extensions.len() as u16).to_be_bytes());
        body.extend(extensions);
        let length = (body.len() as u32).to_be_bytes();
        let mut handshake = vec![kind, length[1], length[2], length[3], 0, 0, 0, 0, 0];
        handshake.extend([length[1], length[2], length[3]]);
        handshake.extend(body);
        let mut record = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0];
        record.extend((handshake.len() as u16).to_be_bytes());
        record.extend(handshake);
        record
    }

    #[test]
    fn the_srtp_profiles_of_both_hellos_are_read_and_broken_hellos_are_not() {
        let client = hello(1, &[7, 8, 1]);
        assert_eq!(srtp_profiles(&client), Some((false, vec![7, 8, 1])));
        let server = hello(2, &[1]);
        assert_eq!(srtp_profiles(&server), Some((true, vec![1])));
        for cut in 0..client.len() {
            assert_eq!(srtp_profiles(&client[..cut]), None, "cut at {cut}");
        }
        let mut certificate = server.clone();
        certificate[13] = 11;
        assert_eq!(srtp_profiles(&certificate), None);
    }

    #[test]
    fn a_packet_again_under_its_index_with_other_bytes_is_noted() {
        let stats = RelayStats::default();
        let mut indices = Indices::default();
        let mut packet = vec![0x90, 96, 0, 5, 0, 0, 0, 1, 0, 0, 0, 42, 1, 2, 3];
        stats.note(&packet, false, &mut indices);
        stats.note(&packet, false, &mut indices);
        assert_eq!(
            stats.resealed_down.load(Ordering::Relaxed),
            0,
            "the same bytes"
        );
        packet[14] = 4;
        stats.note(&packet, false, &mut indices);
        assert_eq!(stats.resealed_down.load(Ordering::Relaxed), 1);
        packet[11] = 43; // another stream
        stats.note(&packet, false, &mut indices);
        assert_eq!(stats.resealed_down.load(Ordering::Relaxed), 1);
        stats.note(&hello(1, &[7, 1]), true, &mut indices);
        stats.note(&hello(2, &[1]), false, &mut indices);
        let handshake = stats.handshake.lock().unwrap().clone();
        assert_eq!(
            handshake,
            Handshake {
                offered: vec![7, 1],
                chosen: Some(1)
            }
        );
    }

    #[test]
    fn rtp_is_told_from_rtcp_stun_and_dtls() {
        let mut rtp = [0u8; 12];
        rtp[0] = 0x80;
        rtp[1] = 96;
        assert!(is_rtp(&rtp));
        rtp[1] = 200; // sender report
        assert!(!is_rtp(&rtp));
        assert!(!is_rtp(&[0u8; 20]), "STUN");
        assert!(!is_rtp(&[22u8; 20]), "DTLS");
    }
}
