//! A UDP relay that loses packets on purpose, standing between one client and the media node.
//!
//! Loss, delay and reordering cannot come from the kernel here (no netem), so tests model a bad
//! line with this relay instead. It forwards everything both ways, each way after the line's
//! delay if it has one, and drops every n-th RTP packet in the chosen directions; STUN, DTLS and
//! RTCP always pass, so the connection comes up and feedback flows.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
            let mut from_client = vec![0u8; 2048];
            let mut from_node = vec![0u8; 2048];
            loop {
                tokio::select! {
                    Ok((len, from)) = client_side.recv_from(&mut from_client) => {
                        client = Some(from);
                        let datagram = &from_client[..len];
                        if !lose(datagram, &mut up_rtp, loss.uplink_every, &counters.dropped_up) {
                            up.send(datagram, node).await;
                        }
                    }
                    Ok((len, _)) = node_side.recv_from(&mut from_node) => {
                        let Some(client) = client else { continue };
                        let datagram = &from_node[..len];
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
