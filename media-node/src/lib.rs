//! Treffpunkt's media node: a selective forwarding unit on webrtc-rs's Sans-I/O core (`rtc`).
//!
//! The node owns no policy. It admits whom the control plane admits, hosts the rooms it is
//! given, forwards media, and reports load and events. From the inside out:
//!
//! - [`core`]: rooms, participants, publications, down-tracks and the forwarder, as a pure,
//!   synchronous state machine with the time passed in. Everything that decides something lives
//!   here: the roster, the subscriptions, the hot path that fans each packet out
//!   ([`core::forwarder`] rewrites one down-track's headers), and every tick the sharing of each
//!   subscriber's downlink among its videos ([`core::allocation`]) and the dominant speaker
//!   ([`core::speaker`]).
//! - [`congestion`]: how much each subscriber's line carries: the downlink estimate from its
//!   transport-wide feedback, probes with padding before the node sends more, and a pacer that
//!   lets audio pass before video.
//! - [`session`]: one participant's `rtc` peer connection (ICE-lite, DTLS server) with its
//!   negotiation and down-tracks, what it negotiates and its interceptor chain.
//! - [`node`]: the node, Sans-I/O: datagrams and control-plane commands in, datagrams to send
//!   and events for the control plane out, and the time it next wants to be woken. It
//!   demultiplexes the media port (and the frames of ICE-TCP connections) by ICE username,
//!   then by address, onto the sessions, hands their media and events to the core and carries
//!   out what the core decides.
//! - [`udp`]: the node's UDP port, its ICE-TCP port for networks that block UDP
//!   ([`udp::tcp`]), and the run loop around the node: the only part with a socket or a clock.
//!   It sends many datagrams per system call.
//! - [`control`]: the `Attach` client. The node dials the control plane (never the other way
//!   round), registers, reports load, and relays each participant's signalling.
//! - [`health`]: the node's own HTTP endpoint (liveness, readiness, status, metrics), reading
//!   [`status`] and [`metrics`]: what the node forwards and drops, its sessions and rooms, its
//!   subscribers' downlink estimates, its clients' lines (loss, NACKs, round trips, pacer
//!   queues) and its CPU.
//!
//! [`MediaNode`] wires them together; [`cli`] is its command line, shared by the
//! `treffpunkt-media-node` binary and `treffpunkt media-node`. Both binaries allocate with
//! [`Allocator`] (mimalloc): forwarding allocates and frees per packet and subscriber inside
//! `rtc`, and it measured faster than the system's allocator (docs/benchmarks.md,
//! 2026-12-07). Tests drive [`Node`] with real `rtc` peers in memory on a virtual clock (see
//! `node/tests`), and the control plane's tests run whole nodes on loopback.
// Two modules of the UDP port make system calls the standard library lacks (many datagrams in
// one call, buffers past the kernel's cap) and say why they may use `unsafe`.
#![deny(unsafe_code)]

pub mod cli;
pub mod congestion;
pub mod control;
pub mod core;
mod error;
pub mod health;
pub mod keys;
pub mod metrics;
pub mod node;
pub mod session;
pub mod status;
pub mod udp;

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use tokio::sync::mpsc;
use treffpunkt_proto::grant::SharedKeyring;
use treffpunkt_proto::v1;

pub use error::{Error, Result};
/// The allocator of the binaries that forward media (the module doc says why).
pub use mimalloc::MiMalloc as Allocator;
pub use node::{Admission, Command, Event, Node, Transmit};
pub use udp::tcp::TcpPort;
pub use udp::{MediaSocket, NodeHandle};

/// How a media node runs.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The control plane's gRPC addresses, e.g. `http://127.0.0.1:7001`; a name that resolves
    /// to several addresses (a headless Service) means one replica per address.
    pub control_plane: Vec<String>,
    /// Unique in the fleet.
    pub node_id: String,
    /// The MediaPool the node belongs to; empty in standalone mode.
    pub pool: String,
    /// Where the media port binds, e.g. `0.0.0.0:10000`.
    pub udp_bind: SocketAddr,
    /// The address announced to clients in ICE candidates.
    pub announce_ip: IpAddr,
    /// Participants the node accepts.
    pub max_participants: u32,
    /// The keys shared with the control plane for grants; replaced while the node runs when
    /// they are rotated.
    pub grant_key: SharedKeyring,
    /// Where the health endpoint (`/healthz`, `/readyz`, `/status`, `/metrics`) listens, if
    /// anywhere.
    pub health_listen: Option<SocketAddr>,
    /// The file with the bearer token that `/status` and `/metrics` ask for; without one they
    /// answer only on loopback.
    pub metrics_token_file: Option<std::path::PathBuf>,
    /// The media port's receive and send buffers.
    pub udp_buffers: udp::Buffers,
    /// Where the ICE-TCP port binds, e.g. `0.0.0.0:10443`, if the node takes media over TCP
    /// (for networks that block UDP); announced under `announce_ip`.
    pub tcp_bind: Option<SocketAddr>,
    /// The folder with the node's certificate for the control plane (`ca.crt`, `tls.crt`,
    /// `tls.key`), when the control plane's Attach port runs mutual TLS.
    pub attach_tls_dir: Option<std::path::PathBuf>,
    /// Whose CPU time is the node's: the process's, or, for a node that runs alone on a thread
    /// of a process that runs several, the thread's.
    pub cpu: udp::CpuClock,
}

/// A bound media node, ready to run.
pub struct MediaNode {
    config: NodeConfig,
    socket: MediaSocket,
    commands: mpsc::Sender<Command>,
    command_queue: mpsc::Receiver<Command>,
    status: status::NodeStatus,
    /// Where the control link and the health endpoint run, when not beside the media loop.
    beside: Option<tokio::runtime::Handle>,
}

impl MediaNode {
    /// Binds the media port.
    pub async fn bind(config: NodeConfig) -> Result<Self> {
        let mut socket =
            MediaSocket::bind(config.udp_bind, config.announce_ip, config.udp_buffers).await?;
        if let Some(bind) = config.tcp_bind {
            let limits = udp::tcp::TcpLimits::default();
            socket = socket.with_ice_tcp(TcpPort::bind(bind, config.announce_ip, limits).await?);
        }
        let (commands, command_queue) = mpsc::channel(1024);
        Ok(Self {
            config,
            socket,
            commands,
            command_queue,
            status: status::NodeStatus::default(),
            beside: None,
        })
    }

    /// Names the node in its metrics' series (`node="…"`), for a process that serves the
    /// metrics of several nodes as one document.
    pub fn naming_itself_in_metrics(mut self) -> Self {
        self.status = status::NodeStatus::of_node(&self.config.node_id);
        self
    }

    /// Runs the node's control link and health endpoint on `runtime` instead of the one that
    /// runs the media loop: a loop busy with a burst (hundreds of handshakes at once) then
    /// delays neither the answers to the health probes nor the control plane's messages.
    pub fn beside(mut self, runtime: tokio::runtime::Handle) -> Self {
        self.beside = Some(runtime);
        self
    }

    /// What the node tells about itself, its metrics among it, while it runs.
    pub fn status(&self) -> status::NodeStatus {
        self.status.clone()
    }

    /// A handle to ask the node to drain while it runs.
    pub fn handle(&self) -> NodeHandle {
        NodeHandle(self.commands.clone())
    }

    /// The address clients send media to.
    pub fn media_address(&self) -> SocketAddr {
        self.socket.announced()
    }

    /// The ICE-TCP address clients connect to, if the node takes media over TCP.
    pub fn tcp_address(&self) -> Option<SocketAddr> {
        self.socket.announced_tcp()
    }

    /// Attaches to the control plane and forwards media until the node has drained.
    pub async fn run(self) -> Result<()> {
        let announced = self.socket.announced();
        let mut node = Node::new(Instant::now(), announced, self.config.max_participants);
        let mut media_addresses = vec![v1::MediaAddress {
            protocol: v1::TransportProtocol::Udp as i32,
            ip: announced.ip().to_string(),
            port: u32::from(announced.port()),
        }];
        if let Some(tcp) = self.socket.announced_tcp() {
            node = node.with_ice_tcp(tcp);
            media_addresses.push(v1::MediaAddress {
                protocol: v1::TransportProtocol::Tcp as i32,
                ip: tcp.ip().to_string(),
                port: u32::from(tcp.port()),
            });
        }
        let identity = control::Identity {
            node_id: self.config.node_id.clone(),
            instance_id: node.instance().to_owned(),
            pool: self.config.pool.clone(),
            max_participants: self.config.max_participants,
            media_addresses,
            certificate: self.config.attach_tls_dir.clone(),
        };
        let (commands, command_queue) = (self.commands, self.command_queue);
        let (events, event_queue) = mpsc::channel(udp::EVENT_QUEUE);
        let status = self.status;
        let runtime = self.beside.unwrap_or_else(tokio::runtime::Handle::current);
        // On another runtime, the tasks would outlive this future if it were dropped (a
        // standalone server stopping its shards): they end with it.
        let health = self.config.health_listen.map(|address| {
            let endpoint = health::Endpoint {
                node_id: self.config.node_id.clone(),
                status: status.clone(),
                token_file: self.config.metrics_token_file.clone(),
            };
            AbortOnDrop(runtime.spawn(async move {
                if let Err(error) = health::serve(address, endpoint).await {
                    tracing::warn!(%error, "the health endpoint stopped");
                }
            }))
        });
        let mut control = AbortOnDrop(runtime.spawn(control::run(
            self.config.control_plane,
            identity,
            self.config.grant_key,
            commands,
            event_queue,
            status.clone(),
        )));
        udp::run(
            node,
            self.socket,
            command_queue,
            events,
            status,
            self.config.cpu,
        )
        .await;
        // The node's reports end with it; the control link delivers what is left, then ends.
        if tokio::time::timeout(std::time::Duration::from_secs(2), &mut control.0)
            .await
            .is_err()
        {
            tracing::debug!("the control link did not finish in time");
        }
        drop(health);
        Ok(())
    }

    /// Binds a node as `config` says on a thread of its own (named `thread`) with a one-thread
    /// runtime of its own and runs its media loop there, until it has drained or `until`
    /// completes; its control link and health endpoint run on the calling runtime. `prepare`
    /// may change the bound node first. Returns once the ports are bound.
    ///
    /// On one runtime of several threads, one thread noticed that a datagram had come and woke
    /// the loop on another, a hand-over per wake-up that cost 13-14 % of the node's CPU per
    /// forwarded packet (docs/benchmarks.md); the loop alone on its thread waits for its
    /// sockets itself. On one thread together, a loop busy with a burst of joins held back the
    /// health endpoint's answers for up to 20 s: apart, neither waits for the other.
    pub async fn start_alone(
        config: NodeConfig,
        thread: String,
        prepare: impl FnOnce(Self) -> Self + Send + 'static,
        until: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<MediaThread> {
        let beside = tokio::runtime::Handle::current();
        let (bound, bound_here) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new().name(thread).spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let node = prepare(Self::bind(config).await?.beside(beside));
                let started = Started {
                    handle: node.handle(),
                    media_address: node.media_address(),
                    tcp_address: node.tcp_address(),
                    status: node.status(),
                };
                if bound.send(started).is_err() {
                    return Ok(());
                }
                tokio::select! {
                    result = node.run() => result,
                    () = until => Ok(()),
                }
            })
        })?;
        match bound_here.await {
            Ok(started) => Ok(MediaThread { started, thread }),
            // The thread ended before it bound the ports: its error says why.
            Err(_) => match tokio::task::spawn_blocking(move || thread.join()).await {
                Ok(Ok(Err(error))) => Err(error),
                _ => Err(Error::Internal("starting the media loop's thread")),
            },
        }
    }
}

/// What a node started on a thread of its own ([`MediaNode::start_alone`]) tells once it has
/// bound its ports.
pub struct Started {
    /// Asks the node to drain.
    pub handle: NodeHandle,
    /// Where clients send media.
    pub media_address: SocketAddr,
    /// The ICE-TCP address, if the node takes media over TCP.
    pub tcp_address: Option<SocketAddr>,
    /// What the node tells about itself while it runs.
    pub status: status::NodeStatus,
}

/// A node running alone on a thread of its own ([`MediaNode::start_alone`]).
pub struct MediaThread {
    /// The node's handle, addresses and status.
    pub started: Started,
    /// Ends when the node has drained or was stopped, with the error that stopped it, if any.
    pub thread: std::thread::JoinHandle<Result<()>>,
}

/// A task that is aborted when this is dropped (a [`tokio::task::JoinHandle`] dropped lets its
/// task run on).
pub(crate) struct AbortOnDrop<T>(pub(crate) tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests;
