//! The node's one UDP port and its run loop: the only part of the media node that touches a
//! socket or reads a clock.
//!
//! The loop waits for the next of three things: a command from the control plane, a datagram,
//! or the time the [`Node`] asked for. It hands that to the node with the current time, then
//! delivers the node's events to the control link (adding the process's CPU use to each load
//! report, which the node cannot measure) and sends every datagram the node wants to send,
//! `batch::BATCH` per system call.

mod batch;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::node::{Command, Event, Node, Transmit};
use crate::status::NodeStatus;

/// The largest datagram read; anything larger than an Ethernet frame is not media.
const MAX_DATAGRAM: usize = 2048;
/// How long the loop sleeps when the node wants no timeout at all.
const IDLE: Duration = Duration::from_secs(3600);

/// The node's media port and the address it announces for it.
#[derive(Debug)]
pub struct MediaSocket {
    socket: UdpSocket,
    announced: SocketAddr,
}

impl MediaSocket {
    /// Binds the UDP port at `bind` and announces it under `announce_ip` (the port is the bound
    /// one, so port 0 picks a free port).
    pub async fn bind(bind: SocketAddr, announce_ip: IpAddr) -> std::io::Result<Self> {
        let socket = UdpSocket::bind(bind).await?;
        let port = socket.local_addr()?.port();
        Ok(Self {
            socket,
            announced: SocketAddr::new(announce_ip, port),
        })
    }

    /// The address clients send media to.
    pub fn announced(&self) -> SocketAddr {
        self.announced
    }

    /// Sends the datagrams in `outbox`, `batch::BATCH` per system call, and empties it. A
    /// datagram the kernel refuses (an unreachable address) is dropped, and the rest go on.
    async fn send(&self, outbox: &mut Vec<Transmit>) {
        let mut sent = 0;
        while sent < outbox.len() {
            let pending = outbox[sent..]
                .iter()
                .map(|transmit| (&transmit.contents[..], transmit.destination));
            match self.socket.try_io(tokio::io::Interest::WRITABLE, || {
                batch::send(&self.socket, pending)
            }) {
                Ok(count) => sent += count.max(1),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Err(error) = self.socket.writable().await {
                        debug!(%error, "udp socket not writable");
                        break;
                    }
                }
                Err(error) => {
                    debug!(%error, "udp send failed");
                    sent += 1;
                }
            }
        }
        outbox.clear();
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
            })
            .await;
    }
}

/// Runs `node` on `socket` until the command channel closes or the node has drained, then
/// closes every session. Events go to `events`; what the node tells about itself to `status`.
pub async fn run(
    mut node: Node,
    socket: MediaSocket,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::UnboundedSender<Event>,
    status: NodeStatus,
) {
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    let mut outbox = Vec::new();
    let mut outputs = Outputs {
        events,
        status,
        cpu: CpuMeter::new(Instant::now()),
    };
    info!(address = %socket.announced, "media node listening");
    loop {
        let deadline = node.poll_timeout().unwrap_or_else(|| Instant::now() + IDLE);
        tokio::select! {
            biased;
            command = commands.recv() => match command {
                Some(command) => node.command(Instant::now(), command),
                None => break,
            },
            received = socket.socket.recv_from(&mut buffer) => match received {
                Ok((len, from)) => node.datagram(Instant::now(), from, &buffer[..len]),
                Err(error) => debug!(%error, "udp receive failed"),
            },
            () = tokio::time::sleep_until(deadline.into()) => node.handle_timeout(Instant::now()),
        }
        outputs.deliver(&mut node);
        outbox.extend(std::iter::from_fn(|| node.poll_transmit()));
        socket.send(&mut outbox).await;
        if node.is_finished() {
            info!("drained: the media node stops");
            break;
        }
    }
    node.stop(Instant::now());
    outputs.deliver(&mut node);
    outbox.extend(std::iter::from_fn(|| node.poll_transmit()));
    socket.send(&mut outbox).await;
}

/// Where the node's events go.
struct Outputs {
    events: mpsc::UnboundedSender<Event>,
    status: NodeStatus,
    cpu: CpuMeter,
}

impl Outputs {
    fn deliver(&mut self, node: &mut Node) {
        while let Some(mut event) = node.poll_event() {
            match &mut event {
                Event::Load(load) => {
                    load.cpu_millicores = self.cpu.sample(Instant::now());
                    self.status.set_load(load.rooms, load.participants);
                }
                Event::Draining { .. } => self.status.set_draining(),
                Event::Signal { .. } | Event::Closed { .. } => {}
            }
            // The control link ends only when the node shuts down.
            let _ = self.events.send(event);
        }
    }
}

/// The process's CPU use between two samples.
struct CpuMeter {
    last: (Instant, Option<u64>),
}

impl CpuMeter {
    fn new(now: Instant) -> Self {
        Self {
            last: (now, process_cpu_ticks()),
        }
    }

    /// Thousandths of a core used since the last sample.
    fn sample(&mut self, now: Instant) -> u32 {
        let (since, before) = self.last;
        let after = process_cpu_ticks();
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

/// CPU time of this process in clock ticks (user + system), from `/proc/self/stat`.
fn process_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may contain spaces; the fields after it are space-separated.
    let after_name = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(user + system)
}
