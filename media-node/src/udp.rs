//! The node's media ports and their run loop: the only part of the media node that touches a
//! socket or reads a clock.
//!
//! Media comes in on one UDP port and, for networks that block UDP, on an ICE-TCP port
//! ([`tcp`]). The loop waits for the next of four things: a command from the control plane, a
//! datagram, a frame from an ICE-TCP connection, or the time the [`Node`] asked for. It hands
//! that to the node with the current time (a datagram together with all that wait already, up
//! to `batch::RECEIVE_BATCH`, read in one call, each with the time the kernel received it),
//! then delivers the node's events to the control link (adding the process's CPU use to each
//! load report, which the node cannot measure) and sends every datagram the node wants to send,
//! `batch::BATCH` messages per system call, runs of datagrams to one address as one segmented
//! message where the kernel can (see `batch`).

pub mod batch;
mod options;
pub mod tcp;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::node::{Command, Event, Node, Transmit};
use crate::status::NodeStatus;
use tcp::{TcpLink, TcpPort};

/// The largest datagram read; anything larger than an Ethernet frame is not media.
const MAX_DATAGRAM: usize = 2048;
/// Events the run loop may have handed to the control link before it takes them: the link only
/// routes each to a stream, so a full queue means the link is stuck, and the media loop drops
/// events (counted, and logged once every few seconds) rather than wait for it. A large room
/// makes bursts as large as its participants here times a few messages each: a notice to each
/// of them for every newcomer, and its whole roster relayed to a node the room spreads to
/// (8,192 overflowed in a livestream of 750 over three nodes).
pub const EVENT_QUEUE: usize = 65_536;
/// How often dropped events are logged, when there are any.
const DROPPED_EVENTS_SUMMARY: Duration = Duration::from_secs(10);
/// How long the loop sleeps when the node wants no timeout at all.
const IDLE: Duration = Duration::from_secs(3600);
/// The longest a datagram's kernel receive time may lie before its read: a longer wait says
/// the system clock was set in between, and the read's time stands instead.
const MAX_WAIT: Duration = Duration::from_secs(1);

/// When a datagram the kernel received at `received` (system clock, since the Unix epoch)
/// arrived on the monotonic clock, given both clocks read at one moment after it (`clocks`);
/// `None` without a receive time, or with one the system clock has since been set past (or
/// one no clock can hold).
fn arrival(
    received: Option<Duration>,
    (instant, system): (Instant, SystemTime),
) -> Option<Instant> {
    let waited = system
        .duration_since(UNIX_EPOCH.checked_add(received?)?)
        .ok()?;
    if waited > MAX_WAIT {
        return None;
    }
    instant.checked_sub(waited)
}

/// The receive and send buffers asked of the kernel for the media port, unless configured: a
/// burst of a few thousand datagrams (a flood, or many keyframes at once) overflows the usual
/// default of about 200 KiB.
pub const DEFAULT_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// How large the media port's buffers should be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffers {
    /// The receive buffer, in bytes.
    pub receive: usize,
    /// The send buffer, in bytes.
    pub send: usize,
}

impl Default for Buffers {
    fn default() -> Self {
        Self {
            receive: DEFAULT_BUFFER_BYTES,
            send: DEFAULT_BUFFER_BYTES,
        }
    }
}

/// The node's media port and the address it announces for it.
#[derive(Debug)]
pub struct MediaSocket {
    socket: UdpSocket,
    announced: SocketAddr,
    tcp: Option<TcpPort>,
    /// Whether runs of datagrams to one address go as one segmented message (see [`batch`]):
    /// on where the kernel can, until a send says it cannot.
    segmentation: AtomicBool,
    /// Whether the kernel hands over runs of datagrams from one sender as one message (see
    /// [`batch`]), so that the inbox's buffers must hold the largest.
    coalescing: bool,
}

impl MediaSocket {
    /// Binds the UDP port at `bind` with `buffers` and announces it under `announce_ip` (the
    /// port is the bound one, so port 0 picks a free port). A kernel that grants smaller buffers
    /// than asked for is warned about at start-up, with the setting to raise.
    ///
    /// When `bind` is the unspecified address and `announce_ip` is one of this host's own, the
    /// port is bound to `announce_ip` instead: what the node sends must leave from the address
    /// it announced, and a host with several addresses would otherwise pick its primary one as
    /// the source of packets to another of its own addresses (a TURN server beside the node
    /// would not know them). Behind a NAT, where the announced address is not the host's,
    /// `bind` stands.
    pub async fn bind(
        bind: SocketAddr,
        announce_ip: IpAddr,
        buffers: Buffers,
    ) -> std::io::Result<Self> {
        if bind.ip().is_unspecified() && !announce_ip.is_unspecified() {
            let own = SocketAddr::new(announce_ip, bind.port());
            match Self::bind_exactly(own, announce_ip, buffers).await {
                Err(error) if error.kind() == std::io::ErrorKind::AddrNotAvailable => {}
                bound => return bound,
            }
        }
        Self::bind_exactly(bind, announce_ip, buffers).await
    }

    async fn bind_exactly(
        bind: SocketAddr,
        announce_ip: IpAddr,
        buffers: Buffers,
    ) -> std::io::Result<Self> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(bind),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        socket.set_nonblocking(true)?;
        if bind.is_ipv6() {
            // An unspecified IPv6 address takes IPv4 as well, as `UdpSocket::bind` does.
            let _ = socket.set_only_v6(false);
        }
        socket.bind(&bind.into())?;
        set_buffer("receive", buffers.receive, "net.core.rmem_max", |size| {
            socket.set_recv_buffer_size(size)?;
            if socket.recv_buffer_size()? < size {
                // Past the cap, if the process may; otherwise what the cap allowed stands.
                let _ = options::force_buffer(&socket, options::Buffer::Receive, size);
            }
            socket.recv_buffer_size()
        });
        set_buffer("send", buffers.send, "net.core.wmem_max", |size| {
            socket.set_send_buffer_size(size)?;
            if socket.send_buffer_size()? < size {
                let _ = options::force_buffer(&socket, options::Buffer::Send, size);
            }
            socket.send_buffer_size()
        });
        if let Err(error) = options::enable_arrival_times(&socket) {
            info!(%error, "no kernel receive times: a datagram's arrival is when the node reads it");
        }
        let segmentation = batch::segmentation_supported(&socket);
        if !segmentation {
            info!("this kernel cannot segment UDP: the media port sends one datagram per packet");
        }
        let coalescing = match options::enable_receive_offload(&socket) {
            Ok(()) => true,
            Err(error) => {
                info!(%error, "no UDP receive offload: the media port reads one datagram per message");
                false
            }
        };
        let socket = UdpSocket::from_std(socket.into())?;
        let port = socket.local_addr()?.port();
        Ok(Self {
            socket,
            announced: SocketAddr::new(announce_ip, port),
            tcp: None,
            segmentation: AtomicBool::new(segmentation),
            coalescing,
        })
    }

    /// Takes media over ICE-TCP on `port` as well.
    pub fn with_ice_tcp(mut self, port: TcpPort) -> Self {
        self.tcp = Some(port);
        self
    }

    /// The address clients send media to.
    pub fn announced(&self) -> SocketAddr {
        self.announced
    }

    /// The ICE-TCP address clients connect to, if the node takes media over TCP.
    pub fn announced_tcp(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().map(TcpPort::announced)
    }

    /// Hands `node` the datagrams that wait, up to `batch::RECEIVE_BATCH`, read in one call,
    /// each with the time the kernel received it.
    fn receive(&self, inbox: &mut batch::Inbox, node: &mut Node) {
        match self.socket.try_io(tokio::io::Interest::READABLE, || {
            batch::receive(&self.socket, inbox)
        }) {
            Ok(_) => {
                let clocks = (Instant::now(), SystemTime::now());
                for datagram in inbox.datagrams() {
                    let now = Instant::now();
                    let arrived = arrival(datagram.arrived, clocks).unwrap_or(now);
                    node.datagram(now, arrived, datagram.from, datagram.contents);
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(error) => debug!(%error, "udp receive failed"),
        }
    }

    /// Sends the datagrams in `outbox`, `batch::BATCH` messages per system call, and empties
    /// it: ordered by address first (each address's own order kept), so that runs to one
    /// address go as one segmented message. A datagram the kernel refuses (an unreachable
    /// address) is dropped, and the rest go on. A kernel or device that cannot segment after
    /// all is told once, and the port sends without segmentation from then on.
    async fn send(&self, outbox: &mut Vec<Transmit>) {
        let mut segment = self.segmentation.load(Ordering::Relaxed);
        if segment {
            outbox.sort_by_key(|transmit| transmit.destination);
        }
        let datagrams: Vec<(&[u8], SocketAddr)> = outbox
            .iter()
            .map(|transmit| (&transmit.contents[..], transmit.destination))
            .collect();
        let mut sent = 0;
        while sent < datagrams.len() {
            match self.socket.try_io(tokio::io::Interest::WRITABLE, || {
                batch::send(&self.socket, &datagrams[sent..], segment)
            }) {
                Ok(call) => sent += call.datagrams.max(1),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Err(error) = self.socket.writable().await {
                        debug!(%error, "udp socket not writable");
                        break;
                    }
                }
                Err(error) if segment && batch::is_segmentation_error(&error) => {
                    warn!(
                        %error,
                        "the network cannot segment UDP: the media port sends one datagram per \
                         packet from now on"
                    );
                    segment = false;
                    self.segmentation.store(false, Ordering::Relaxed);
                }
                Err(error) => {
                    debug!(%error, "udp send failed");
                    sent += 1;
                }
            }
        }
        drop(datagrams);
        outbox.clear();
    }
}

/// Asks for a buffer of `wanted` bytes through `set` (which returns what the kernel granted) and
/// warns when the kernel granted less. Linux reports twice the usable size it keeps, and caps
/// what it grants at `limit` (a sysctl) unless the process may exceed it.
fn set_buffer(
    which: &str,
    wanted: usize,
    limit: &str,
    set: impl FnOnce(usize) -> std::io::Result<usize>,
) {
    match set(wanted) {
        Ok(granted) if granted >= wanted => {
            info!(buffer = which, bytes = granted, "media port buffer");
        }
        Ok(granted) => warn!(
            buffer = which,
            wanted,
            granted,
            "the kernel granted the media port a smaller {which} buffer than configured; bursts \
             of datagrams may be lost: raise {limit} to at least {wanted}"
        ),
        Err(error) => warn!(buffer = which, %error, "could not size the media port's buffer"),
    }
}

/// Lets the process ask a running node to drain.
#[derive(Clone, Debug)]
pub struct NodeHandle(pub(crate) mpsc::Sender<Command>);

impl NodeHandle {
    /// Takes no new rooms; ends once the rooms are empty or `grace` has passed. With
    /// `move_sessions`, the control plane moves the participants to other nodes first.
    pub async fn drain(&self, move_sessions: bool, grace: Duration) {
        let _ = self
            .0
            .send(Command::Drain {
                move_sessions,
                grace,
                keep_running: false,
            })
            .await;
    }
}

/// Runs `node` on `socket` until the command channel closes or the node has drained, then
/// closes every session. Events go to `events`; what the node tells about itself to `status`.
pub async fn run(
    mut node: Node,
    mut socket: MediaSocket,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    status: NodeStatus,
    clock: CpuClock,
) {
    let mut inbox = match socket.coalescing {
        true => batch::Inbox::coalescing(MAX_DATAGRAM),
        false => batch::Inbox::new(MAX_DATAGRAM),
    };
    let mut outbox = Vec::new();
    let mut outputs = Outputs {
        events,
        status,
        cpu: CpuMeter::new(Instant::now(), clock),
        dropped: 0,
        next_summary: Instant::now(),
    };
    info!(address = %socket.announced, "media node listening");
    let mut tcp = socket.tcp.take().map(TcpPort::serve);
    loop {
        let deadline = node.poll_timeout().unwrap_or_else(|| Instant::now() + IDLE);
        tokio::select! {
            biased;
            command = commands.recv() => match command {
                Some(command) => node.command(Instant::now(), command),
                None => break,
            },
            ready = socket.socket.readable() => match ready {
                // Whatever waits is taken at once, and what it all makes the node send leaves
                // in one flush: fewer wake-ups, fuller batches, and runs to one address that
                // go as one segmented message.
                Ok(()) => socket.receive(&mut inbox, &mut node),
                Err(error) => debug!(%error, "udp receive failed"),
            },
            Some((from, frame)) = next_frame(&mut tcp) => {
                let belongs = node.tcp_frame(Instant::now(), from, &frame);
                if let (false, Some(link)) = (belongs, tcp.as_mut()) {
                    link.close(from);
                }
            }
            () = tokio::time::sleep_until(deadline.into()) => node.handle_timeout(Instant::now()),
        }
        outputs.deliver(&mut node);
        outbox.extend(std::iter::from_fn(|| node.poll_transmit()));
        hand_to_tcp(&mut outbox, tcp.as_mut());
        socket.send(&mut outbox).await;
        if node.is_finished() {
            info!("drained: the media node stops");
            break;
        }
    }
    node.stop(Instant::now());
    outputs.deliver(&mut node);
    outbox.extend(std::iter::from_fn(|| node.poll_transmit()));
    hand_to_tcp(&mut outbox, tcp.as_mut());
    socket.send(&mut outbox).await;
    if let Some(dropped) = tcp
        .map(|link| link.dropped())
        .filter(|dropped| *dropped > 0)
    {
        info!(
            dropped,
            "packets for ICE-TCP connections that were full or gone were dropped"
        );
    }
}

/// The next frame from an ICE-TCP connection; never, when the node takes no ICE-TCP.
async fn next_frame(tcp: &mut Option<TcpLink>) -> Option<(SocketAddr, bytes::BytesMut)> {
    match tcp {
        Some(link) => link.next().await,
        None => std::future::pending().await,
    }
}

/// Hands the packets in `outbox` that go over ICE-TCP to their connections; the rest stay.
fn hand_to_tcp(outbox: &mut Vec<Transmit>, tcp: Option<&mut TcpLink>) {
    if let Some(link) = tcp {
        link.send_from(outbox);
    }
}

/// Where the node's events go.
struct Outputs {
    events: mpsc::Sender<Event>,
    status: NodeStatus,
    cpu: CpuMeter,
    /// Events dropped since the last summary, because the control link's queue was full.
    dropped: u64,
    next_summary: Instant,
}

impl Outputs {
    fn deliver(&mut self, node: &mut Node) {
        while let Some(mut event) = node.poll_event() {
            match &mut event {
                Event::Load(load) => {
                    load.cpu_millicores = self.cpu.sample(Instant::now());
                    self.status.set_load(load.rooms, load.participants);
                    self.status.set_links(node.link_status());
                    let cpu_seconds = self.cpu.total_seconds();
                    let (stats, round_trips) = node.stats(Instant::now());
                    self.status
                        .metrics()
                        .observe(&stats, cpu_seconds, &round_trips);
                }
                Event::Draining { .. } => self.status.set_draining(),
                Event::Signal { .. }
                | Event::Closed { .. }
                | Event::ResumeAnswer { .. }
                | Event::Relay { .. } => {}
            }
            match self.events.try_send(event) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => self.dropped += 1,
                // The control link ends only when the node shuts down.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        if self.dropped > 0 && Instant::now() >= self.next_summary {
            warn!(
                dropped = self.dropped,
                "the control link fell behind: events for the control plane were dropped"
            );
            self.dropped = 0;
            self.next_summary = Instant::now() + DROPPED_EVENTS_SUMMARY;
        }
    }
}

/// Whose CPU time is the node's: what its metrics and load reports give as its CPU use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CpuClock {
    /// The process's: the node is the process (a media node of a cluster).
    #[default]
    Process,
    /// The thread's that runs the node: the node is one of several in a process, each alone
    /// on a thread of its own (the shards of standalone mode).
    Thread,
}

/// The node's CPU use between two samples.
struct CpuMeter {
    clock: CpuClock,
    last: (Instant, Option<u64>),
}

impl CpuMeter {
    fn new(now: Instant, clock: CpuClock) -> Self {
        Self {
            clock,
            last: (now, cpu_ticks(clock)),
        }
    }

    /// CPU seconds the process has used, as of the last sample.
    fn total_seconds(&self) -> f64 {
        // Linux counts CPU time in ticks of 1/100 s.
        self.last.1.map_or(0.0, |ticks| ticks as f64 / 100.0)
    }

    /// Thousandths of a core used since the last sample.
    fn sample(&mut self, now: Instant) -> u32 {
        let (since, before) = self.last;
        let after = cpu_ticks(self.clock);
        self.last = (now, after);
        let seconds = now.duration_since(since).as_secs_f64().max(0.001);
        match (after, before) {
            // Linux counts CPU time in ticks of 1/100 s.
            (Some(after), Some(before)) => {
                (after.saturating_sub(before) as f64 * 10.0 / seconds) as u32
            }
            _ => 0,
        }
    }
}

/// CPU time of this process or of the calling thread in clock ticks (user + system), from
/// `/proc/self/stat` or `/proc/thread-self/stat`.
fn cpu_ticks(clock: CpuClock) -> Option<u64> {
    let path = match clock {
        CpuClock::Process => "/proc/self/stat",
        CpuClock::Thread => "/proc/thread-self/stat",
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name may contain spaces; the fields after it are space-separated.
    let after_name = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(user + system)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_receive_time_becomes_an_instant_unless_the_clock_was_set_in_between() {
        let instant = Instant::now();
        let system = SystemTime::now();
        let since_epoch = system.duration_since(UNIX_EPOCH).unwrap();
        let waited = Duration::from_millis(20);
        assert_eq!(
            arrival(Some(since_epoch - waited), (instant, system)),
            Some(instant - waited)
        );
        assert_eq!(arrival(None, (instant, system)), None, "no receive time");
        assert_eq!(
            arrival(Some(since_epoch + waited), (instant, system)),
            None,
            "received after it was read: the clock went back"
        );
        assert_eq!(
            arrival(Some(since_epoch - 2 * MAX_WAIT), (instant, system)),
            None,
            "waited longer than any datagram does: the clock went forward"
        );
        assert_eq!(
            arrival(Some(Duration::MAX), (instant, system)),
            None,
            "a time past what the system clock can hold"
        );
    }

    /// What the kernel lets an unprivileged process have, doubled as Linux reports it.
    fn kernel_cap(setting: &str) -> usize {
        std::fs::read_to_string(format!("/proc/sys/net/core/{setting}"))
            .ok()
            .and_then(|text| text.trim().parse::<usize>().ok())
            .map_or(0, |cap| cap * 2)
    }

    /// A veth pair from this host into a network namespace of its own, with an MTU of 1,280
    /// bytes; removed when dropped.
    struct NarrowLink {
        namespace: String,
        host_if: String,
    }

    impl NarrowLink {
        fn create() -> Result<Self, String> {
            let run = |args: &[&str]| -> Result<(), String> {
                let output = std::process::Command::new("ip")
                    .args(args)
                    .output()
                    .map_err(|error| format!("ip: {error}"))?;
                if output.status.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "ip {}: {}",
                        args.join(" "),
                        String::from_utf8_lossy(&output.stderr).trim()
                    ))
                }
            };
            let pid = std::process::id();
            let link = Self {
                namespace: format!("tpgso-{pid}"),
                host_if: format!("tpg{pid}-h"),
            };
            let guest_if = format!("tpg{pid}-g");
            let ns = link.namespace.as_str();
            run(&["netns", "add", ns])?;
            run(&[
                "link",
                "add",
                &link.host_if,
                "mtu",
                "1280",
                "type",
                "veth",
                "peer",
                "name",
                &guest_if,
                "mtu",
                "1280",
                "netns",
                ns,
            ])?;
            run(&["addr", "add", "10.214.0.1/30", "dev", &link.host_if])?;
            run(&["link", "set", &link.host_if, "up"])?;
            run(&["-n", ns, "addr", "add", "10.214.0.2/30", "dev", &guest_if])?;
            run(&["-n", ns, "link", "set", &guest_if, "up"])?;
            Ok(link)
        }
    }

    impl Drop for NarrowLink {
        fn drop(&mut self) {
            for args in [
                &["link", "del", self.host_if.as_str()][..],
                &["netns", "del", self.namespace.as_str()][..],
            ] {
                let _ = std::process::Command::new("ip").args(args).output();
            }
        }
    }

    /// The kernel refuses a segmented message whose datagrams are larger than the path's MTU,
    /// as it refuses segmentation on a device that cannot do it: the port then sends without
    /// segmentation (the datagrams fragmented, as they always were) and keeps doing so. Real
    /// sockets, and a real veth pair into a namespace of the test's own.
    #[tokio::test]
    async fn a_network_that_cannot_segment_gets_every_datagram_without_segmentation() {
        let link = match NarrowLink::create() {
            Ok(link) => link,
            Err(error) if std::env::var("TREFFPUNKT_SKIP_NETNS").as_deref() == Ok("1") => {
                eprintln!("skipped: no network namespace ({error})");
                return;
            }
            Err(error) => panic!(
                "this test needs a network namespace and a veth pair (root and iproute2's ip), \
                 and could not make one: {error}. Set TREFFPUNKT_SKIP_NETNS=1 to skip it."
            ),
        };
        let socket = MediaSocket::bind(
            "10.214.0.1:0".parse().unwrap(),
            [10, 214, 0, 1].into(),
            Buffers::default(),
        )
        .await
        .unwrap();
        if !socket.segmentation.load(Ordering::Relaxed) {
            eprintln!("this kernel cannot segment UDP at all: the port never tries");
        }
        let receiver =
            batch::bind_in_namespace(&link.namespace, "10.214.0.2:0".parse().unwrap()).unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let to = receiver.local_addr().unwrap();
        let transmits = |first: u8| -> Vec<Transmit> {
            (first..first + 5)
                .map(|i| Transmit {
                    destination: to,
                    tcp: false,
                    contents: bytes::BytesMut::from(&[i; 1400][..]),
                })
                .collect()
        };
        socket.send(&mut transmits(0)).await;
        assert!(
            !socket.segmentation.load(Ordering::Relaxed),
            "segmentation is off after the kernel refused it"
        );
        socket.send(&mut transmits(5)).await;
        let mut buffer = [0u8; 2048];
        for i in 0..10u8 {
            let (length, _) = receiver.recv_from(&mut buffer).unwrap();
            assert_eq!(length, 1400, "datagram {i} whole");
            assert!(
                buffer[..length].iter().all(|byte| *byte == i),
                "datagram {i} in order"
            );
        }
        drop(link);
    }

    #[tokio::test]
    async fn the_media_port_gets_the_buffers_it_asks_for_or_all_the_kernel_allows() {
        let wanted = 4 * 1024 * 1024;
        let buffers = Buffers {
            receive: wanted,
            send: wanted,
        };
        let socket = MediaSocket::bind(
            "127.0.0.1:0".parse().unwrap(),
            [127, 0, 0, 1].into(),
            buffers,
        )
        .await
        .unwrap();
        let socket = socket2::SockRef::from(&socket.socket);
        let receive = socket.recv_buffer_size().unwrap();
        let send = socket.send_buffer_size().unwrap();
        assert!(
            receive >= wanted.min(kernel_cap("rmem_max")),
            "receive buffer {receive}"
        );
        assert!(
            send >= wanted.min(kernel_cap("wmem_max")),
            "send buffer {send}"
        );
        assert!(receive > 212_992, "more than the usual default");
    }
}
