//! The node's ICE-TCP port (RFC 6544): browsers on networks that block UDP connect here, and
//! each connection carries what a UDP flow would (STUN, DTLS, SRTP), every packet framed by a
//! two-byte length (RFC 4571).
//!
//! The run loop owns the node; this module owns the connections. Each connection's task reads
//! frames and hands them to the loop, waiting when the loop is behind so that TCP's own flow
//! control pushes back on the sender, and writes what the loop gives it, dropping packets when
//! its queue is full, as a congested UDP path would. A connection is closed, and nothing else
//! touched, when its framing is broken (a frame of zero bytes or longer than any media
//! packet), when its first frame is not STUN or does not come within [`TcpLimits::first_frame`],
//! when nothing arrives for [`TcpLimits::idle`] (browsers check consent every few seconds), and
//! when the node finds that a frame belongs to no session ([`Node::tcp_frame`]: a request
//! that names no session, anything after the session ended), so that a stranger holds no place.
//!
//! [`Node::tcp_frame`]: crate::Node::tcp_frame
//! At most [`TcpLimits::connections`] are open at once; more are closed on arrival.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, info, warn};

use super::MAX_DATAGRAM;

/// Packets waiting to be written to one connection; more are dropped.
const WRITE_QUEUE: usize = 512;
/// Frames read from all connections that the run loop has not taken yet.
const READ_QUEUE: usize = 1024;
/// The most bytes one write gathers from a connection's queue.
const WRITE_BATCH: usize = 64 * 1024;

/// How long connections may take and how many there may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpLimits {
    /// The time a new connection has to deliver its first frame (a STUN binding request).
    pub first_frame: Duration,
    /// The time after which a connection that delivered nothing more is closed.
    pub idle: Duration,
    /// Connections open at once.
    pub connections: usize,
}

impl Default for TcpLimits {
    fn default() -> Self {
        Self {
            first_frame: Duration::from_secs(5),
            idle: Duration::from_secs(30),
            connections: 1024,
        }
    }
}

/// The ICE-TCP port, bound, and the address announced for it.
#[derive(Debug)]
pub struct TcpPort {
    listener: TcpListener,
    announced: SocketAddr,
    limits: TcpLimits,
}

/// The write queue of an open connection, the only sender of its queue: dropping it closes the
/// connection. The number tells a connection from a later one from the same address.
struct Writer {
    queue: mpsc::Sender<BytesMut>,
    connection: u64,
}

/// The write queues of the open connections, by the browser's address.
type Writers = Arc<Mutex<HashMap<SocketAddr, Writer>>>;

/// Numbers the connections.
static CONNECTIONS: AtomicU64 = AtomicU64::new(0);

impl TcpPort {
    /// Binds `bind` and announces it under `announce_ip` (the bound port, so port 0 picks a
    /// free one).
    pub async fn bind(
        bind: SocketAddr,
        announce_ip: IpAddr,
        limits: TcpLimits,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(bind).await?;
        let port = listener.local_addr()?.port();
        Ok(Self {
            listener,
            announced: SocketAddr::new(announce_ip, port),
            limits,
        })
    }

    /// The address browsers connect to.
    pub fn announced(&self) -> SocketAddr {
        self.announced
    }

    /// Accepts connections from now on, in a task of their own; the returned link carries
    /// their frames to the run loop and its packets to them. The task ends with the link.
    pub(super) fn serve(self) -> TcpLink {
        let (frames, inbound) = mpsc::channel(READ_QUEUE);
        let writers = Writers::default();
        info!(address = %self.announced, "ICE-TCP port listening");
        let accepting = tokio::spawn(accept(self, frames, writers.clone()));
        TcpLink {
            inbound,
            writers,
            accepting,
            dropped: 0,
        }
    }
}

/// The run loop's end of the ICE-TCP port.
pub(super) struct TcpLink {
    inbound: mpsc::Receiver<(SocketAddr, BytesMut)>,
    writers: Writers,
    accepting: tokio::task::JoinHandle<()>,
    /// Packets dropped because a connection's queue was full or it had closed.
    dropped: u64,
}

impl TcpLink {
    /// The next frame from any connection, with the browser's address.
    pub(super) async fn next(&mut self) -> Option<(SocketAddr, BytesMut)> {
        self.inbound.recv().await
    }

    /// Takes the packets of `outbox` that go over ICE-TCP and queues each for the connection
    /// from its destination, dropping it when that connection is gone or cannot keep up; the
    /// rest stay in `outbox`.
    pub(super) fn send_from(&mut self, outbox: &mut Vec<crate::node::Transmit>) {
        if !outbox.iter().any(|transmit| transmit.tcp) {
            return;
        }
        let writers = self.writers.lock().unwrap_or_else(PoisonError::into_inner);
        outbox.retain_mut(|transmit| {
            if !transmit.tcp {
                return true;
            }
            let packet = std::mem::take(&mut transmit.contents);
            let queued = (writers.get(&transmit.destination))
                .is_some_and(|writer| writer.queue.try_send(packet).is_ok());
            if !queued {
                self.dropped += 1;
            }
            false
        });
    }

    /// Closes the connection from `from`.
    pub(super) fn close(&mut self, from: SocketAddr) {
        (self.writers.lock().unwrap_or_else(PoisonError::into_inner)).remove(&from);
    }

    /// Packets dropped so far.
    pub(super) fn dropped(&self) -> u64 {
        self.dropped
    }
}

impl Drop for TcpLink {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

async fn accept(port: TcpPort, frames: mpsc::Sender<(SocketAddr, BytesMut)>, writers: Writers) {
    let open = Arc::new(Semaphore::new(port.limits.connections));
    let mut refused: u64 = 0;
    loop {
        let (stream, from) = match port.listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, say: wait a little rather than spin.
                debug!(%error, "ICE-TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if frames.is_closed() {
            return;
        }
        let Ok(permit) = open.clone().try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                warn!(
                    refused,
                    limit = port.limits.connections,
                    "ICE-TCP connections refused: too many open"
                );
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (frames, writers, limits) = (frames.clone(), writers.clone(), port.limits);
        tokio::spawn(async move {
            let outcome = connection(stream, from, frames, writers, limits).await;
            debug!(%from, %outcome, "ICE-TCP connection closed");
            drop(permit);
        });
    }
}

/// Why a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Closed {
    /// The browser closed it, or the node stopped.
    Ended,
    Framing(&'static str),
    NotStun,
    Silent,
    Io(std::io::ErrorKind),
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ended => f.write_str("ended"),
            Self::Framing(what) => write!(f, "broken framing: {what}"),
            Self::NotStun => f.write_str("the first frame was not STUN"),
            Self::Silent => f.write_str("nothing arrived in time"),
            Self::Io(kind) => write!(f, "{kind}"),
        }
    }
}

async fn connection(
    stream: TcpStream,
    from: SocketAddr,
    frames: mpsc::Sender<(SocketAddr, BytesMut)>,
    writers: Writers,
    limits: TcpLimits,
) -> Closed {
    let (queue, packets) = mpsc::channel(WRITE_QUEUE);
    let connection = CONNECTIONS.fetch_add(1, Ordering::Relaxed);
    let writer = Writer { queue, connection };
    (writers.lock().unwrap_or_else(PoisonError::into_inner)).insert(from, writer);
    let (reader, writer) = stream.into_split();
    let outcome = tokio::select! {
        outcome = read_frames(reader, from, &frames, limits) => outcome,
        outcome = write_packets(writer, packets) => outcome,
    };
    let mut writers = writers.lock().unwrap_or_else(PoisonError::into_inner);
    // Unless a new connection from the same address took the place meanwhile.
    if writers
        .get(&from)
        .is_some_and(|writer| writer.connection == connection)
    {
        writers.remove(&from);
    }
    outcome
}

async fn read_frames(
    mut reader: OwnedReadHalf,
    from: SocketAddr,
    frames: &mpsc::Sender<(SocketAddr, BytesMut)>,
    limits: TcpLimits,
) -> Closed {
    let mut first = true;
    loop {
        let wait = if first {
            limits.first_frame
        } else {
            limits.idle
        };
        let frame = match tokio::time::timeout(wait, read_frame(&mut reader)).await {
            Err(_) => return Closed::Silent,
            Ok(Err(closed)) => return closed,
            Ok(Ok(frame)) => frame,
        };
        if first && !is_stun(&frame) {
            return Closed::NotStun;
        }
        first = false;
        if frames.send((from, frame)).await.is_err() {
            return Closed::Ended;
        }
    }
}

/// One RFC 4571 frame: a two-byte length, then that many bytes.
async fn read_frame(reader: &mut OwnedReadHalf) -> Result<BytesMut, Closed> {
    let io = |error: std::io::Error| match error.kind() {
        std::io::ErrorKind::UnexpectedEof => Closed::Ended,
        kind => Closed::Io(kind),
    };
    let length = usize::from(reader.read_u16().await.map_err(io)?);
    if length == 0 {
        return Err(Closed::Framing("an empty frame"));
    }
    if length > MAX_DATAGRAM {
        return Err(Closed::Framing("a frame longer than any media packet"));
    }
    let mut frame = BytesMut::zeroed(length);
    reader.read_exact(&mut frame).await.map_err(io)?;
    Ok(frame)
}

/// Writes each queued packet with its length in front, as many as are queued in one write.
async fn write_packets(
    mut writer: OwnedWriteHalf,
    mut packets: mpsc::Receiver<BytesMut>,
) -> Closed {
    let mut out = BytesMut::with_capacity(WRITE_BATCH);
    while let Some(packet) = packets.recv().await {
        out.clear();
        let mut next = Some(packet);
        while let Some(packet) = next.take() {
            // A packet longer than a frame can say is not media; the node never sends one.
            let Ok(length) = u16::try_from(packet.len()) else {
                continue;
            };
            out.put_u16(length);
            out.extend_from_slice(&packet);
            if out.len() < WRITE_BATCH {
                next = packets.try_recv().ok();
            }
        }
        if let Err(error) = writer.write_all(&out).await {
            return Closed::Io(error.kind());
        }
    }
    Closed::Ended
}

/// Whether `frame` is a STUN message (RFC 5389: two zero bits, then the magic cookie).
fn is_stun(frame: &[u8]) -> bool {
    frame.len() >= 20 && frame[0] & 0xc0 == 0 && frame[4..8] == [0x21, 0x12, 0xa4, 0x42]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::Transmit;

    async fn port(limits: TcpLimits) -> (TcpLink, SocketAddr) {
        let port = TcpPort::bind(
            "127.0.0.1:0".parse().unwrap(),
            [127, 0, 0, 1].into(),
            limits,
        )
        .await
        .unwrap();
        let address = port.announced();
        (port.serve(), address)
    }

    fn stun() -> Vec<u8> {
        let mut message = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        message.extend_from_slice(&[7; 12]);
        message
    }

    fn transmit(to: SocketAddr, bytes: &[u8]) -> Transmit {
        Transmit {
            destination: to,
            tcp: true,
            contents: BytesMut::from(bytes),
        }
    }

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(payload);
        out
    }

    /// Whether the node closed `stream` (reading ends) within a few seconds.
    async fn closed(stream: &mut TcpStream) -> bool {
        let mut buffer = [0u8; 64];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }

    #[tokio::test]
    async fn frames_arrive_whole_and_in_order_and_packets_go_back_framed() {
        let (mut link, address) = port(TcpLimits::default()).await;
        let mut browser = TcpStream::connect(address).await.unwrap();
        let from = browser.local_addr().unwrap();
        // Two frames in one write, the second split across two writes.
        let mut bytes = framed(&stun());
        bytes.extend(framed(&[0x80; 1200]));
        let second = framed(&[0x81; 300]);
        bytes.extend_from_slice(&second[..100]);
        browser.write_all(&bytes).await.unwrap();
        browser.write_all(&second[100..]).await.unwrap();
        for expected in [stun(), vec![0x80; 1200], vec![0x81; 300]] {
            let (sender, frame) = link.next().await.unwrap();
            assert_eq!(sender, from);
            assert_eq!(&frame[..], &expected[..]);
        }
        let mut outbox = vec![transmit(from, &[1, 2, 3]), transmit(from, &[4; 1000])];
        link.send_from(&mut outbox);
        assert!(outbox.is_empty(), "both went to the connection");
        let mut answer = vec![0u8; 2 + 3 + 2 + 1000];
        browser.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer[..5], &[0, 3, 1, 2, 3]);
        assert_eq!(&answer[5..7], &1000u16.to_be_bytes());
        assert_eq!(link.dropped(), 0);
        // The node found the connection to belong to no session.
        link.close(from);
        assert!(closed(&mut browser).await, "closed by the node");
    }

    #[tokio::test]
    async fn broken_framing_closes_that_connection_only() {
        let (mut link, address) = port(TcpLimits::default()).await;
        let mut good = TcpStream::connect(address).await.unwrap();
        good.write_all(&framed(&stun())).await.unwrap();
        assert!(link.next().await.is_some());

        let oversized = [&[0xff, 0xff][..], &[0u8; 100]].concat();
        let empty = [0u8, 0, 0, 20].to_vec();
        let not_stun = framed(&[0x80; 100]);
        for garbage in [oversized, empty, not_stun] {
            let mut bad = TcpStream::connect(address).await.unwrap();
            bad.write_all(&garbage).await.unwrap();
            assert!(
                closed(&mut bad).await,
                "a connection that sent {:?}... is closed",
                &garbage[..4]
            );
        }

        good.write_all(&framed(&[0x80; 500])).await.unwrap();
        let (_, frame) = link.next().await.unwrap();
        assert_eq!(frame.len(), 500, "the good connection goes on");
    }

    #[tokio::test]
    async fn a_half_open_or_silent_connection_is_closed_and_the_limit_holds() {
        let limits = TcpLimits {
            first_frame: Duration::from_millis(300),
            idle: Duration::from_millis(600),
            connections: 2,
        };
        let (mut link, address) = port(limits).await;
        // Half a frame, then nothing.
        let mut half = TcpStream::connect(address).await.unwrap();
        half.write_all(&[0, 20, 0, 1]).await.unwrap();
        let mut silent = TcpStream::connect(address).await.unwrap();
        silent.write_all(&framed(&stun())).await.unwrap();
        assert!(link.next().await.is_some());
        // Both slots are taken: a third connection is closed at once.
        let mut third = TcpStream::connect(address).await.unwrap();
        assert!(closed(&mut third).await, "past the limit");
        assert!(closed(&mut half).await, "a frame not finished in time");
        assert!(closed(&mut silent).await, "nothing after the first frame");
        // Their slots are free again.
        let mut fourth = TcpStream::connect(address).await.unwrap();
        fourth.write_all(&framed(&stun())).await.unwrap();
        assert!(link.next().await.is_some());
    }

    #[tokio::test]
    async fn packets_for_a_gone_connection_are_dropped() {
        let (mut link, _) = port(TcpLimits::default()).await;
        let gone = "127.0.0.1:9".parse().unwrap();
        let udp = Transmit {
            tcp: false,
            ..transmit(gone, &[2])
        };
        let mut outbox = vec![transmit(gone, &[1]), udp];
        link.send_from(&mut outbox);
        assert_eq!(link.dropped(), 1);
        assert_eq!(outbox.len(), 1, "what goes over UDP stays");
        assert!(!outbox[0].tcp);
    }
}
