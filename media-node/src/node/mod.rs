//! The node, Sans-I/O: every session of the media node, the demultiplexer and the [`Core`],
//! driven by inputs with the time passed in, producing outputs to poll.
//!
//! Inputs:
//! - [`Node::datagram`]: a datagram arrived on the media port from an address;
//! - [`Node::command`]: the control plane asks for something ([`Command`]);
//! - [`Node::handle_timeout`]: the time [`Node::poll_timeout`] named has come.
//!
//! Outputs, read after each input until they return `None`:
//! - [`Node::poll_transmit`]: a datagram to send ([`Transmit`]);
//! - [`Node::poll_event`]: something for the control plane ([`Event`]): a participant's
//!   signal, a closed session, a load report, the start of a drain;
//! - [`Node::poll_timeout`]: when the node next wants [`Node::handle_timeout`].
//!
//! The node reads no socket and no clock: the run loop (see [`crate::udp`]) owns both, and tests
//! drive the node on a virtual clock with `rtc` peers in memory. Inside, each input goes to the
//! session concerned (an `rtc` connection, [`crate::session`]) or to the core; the node polls what
//! comes out, hands media and events to the core (`media`), carries out what the core decides
//! (`decisions`), and at the end of the input makes the offers that are due (a few per input,
//! the rest at the next turns, so that a join into a large room does not hold up forwarding)
//! and collects every datagram the touched sessions want to send. The parts:
//!
//! - `commands`: what the control plane asks: open, signal, close, resume, drain;
//! - `media`: datagrams and timers into the sessions, their media and keyframe requests into
//!   the core, and the hot path that forwards each packet to its subscribers;
//! - `decisions`: the core's outputs carried out on sessions and told to clients;
//! - `housekeeping`: once a second, stuck sessions, the drain's deadline and the load report;
//! - [`gate`]: what a datagram must show before the node spends real work on it, and the
//!   periodic summary of what it dropped;
//! - [`demux`]: which session a datagram on the one port belongs to;
//! - [`relay`]: links to the other nodes of a room that spans nodes: sealed media on the media
//!   port, room messages through the control plane;
//! - `signal`: the core's roster events as `treffpunkt.v1` signals.

mod commands;
mod decisions;
pub mod demux;
pub mod gate;
mod housekeeping;
pub mod line;
mod media;
pub mod relay;
mod repair;
pub(crate) mod signal;
#[cfg(any(test, feature = "testing"))]
pub mod tests;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::sansio::Protocol;
use rtc::shared::TransportProtocol;
use rustc_hash::FxHashMap;
use treffpunkt_proto::v1::{self, signal::Kind as SignalKind};

use crate::core::{Core, LinkId, PeerId, RelayMessage, Rewrite};
use crate::session::Session;
pub use demux::Demux;
pub use relay::LinkSpec;

/// How often housekeeping runs and load is reported.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);
/// The offers the node makes at the end of one input. A join changes what every participant in
/// the room receives, and each offer lists every track in the room, so that a join into a room
/// of 16 took the loop about 14 ms at a stretch when all offers were made at once (the
/// `joining` benchmark); a few at each turn let the loop forward between them.
pub const OFFERS_PER_TURN: usize = 2;
/// How long the offer of a participant already receiving waits after what it receives changed,
/// so that the joins (and leaves) of a burst reach it in one renegotiation instead of one each.
/// The joiner's own first offer does not wait, and the joiner's connection takes longer than
/// this to come up, so the others are renegotiated by the time its media flows.
pub const OFFER_HOLD: Duration = Duration::from_millis(15);

/// A participant admitted by the control plane (its grant already checked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admission {
    /// The control plane's session id.
    pub session_id: String,
    /// The room's key, `tenant/name`.
    pub room: String,
    /// The participant's id.
    pub participant_id: String,
    /// Their name.
    pub display_name: String,
    /// The room's participant limit.
    pub max_participants: u32,
    /// How many speakers' cameras each participant receives; 0 for all.
    pub last_n: u32,
    /// The session of a lost node that this one continues; empty for a new participant.
    pub continues: String,
    /// They moderate.
    pub moderator: bool,
    /// They wait in the lobby until a moderator lets them in.
    pub lobby: bool,
    /// They moderate if nobody in the room does when they come in.
    pub first_moderates: bool,
}

/// A client's ticket, presented to resume its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// Whose.
    pub session_id: String,
    /// The node instance the ticket names.
    pub node_instance: String,
    /// The ticket's generation.
    pub generation: u64,
    /// The asking replica's id for this request.
    pub request_id: u64,
    /// The replica that asks, which gets the answer.
    pub via: String,
}

/// What the control plane asks of the node.
#[derive(Debug)]
pub enum Command {
    /// Admit a participant.
    Open(Admission),
    /// A signal from a participant's client.
    Signal {
        /// Whose.
        session_id: String,
        /// What.
        signal: v1::Signal,
    },
    /// End a session.
    Close {
        /// Whose.
        session_id: String,
    },
    /// End every session of a room.
    CloseRoom {
        /// The room's key.
        room: String,
    },
    /// A session's client came back, with a ticket, through a control-plane replica: if the
    /// ticket is the session's current one, hand the session to that replica and tell the
    /// client where it stands.
    Resume(Resume),
    /// Open a link to another node that hosts participants of a room.
    OpenLink(LinkSpec),
    /// Close a link.
    CloseLink {
        /// Which.
        link: LinkId,
    },
    /// A message from the other end of a link.
    Relayed {
        /// Which link.
        link: LinkId,
        /// What.
        message: RelayMessage,
    },
    /// Take no new sessions; finish once the rooms are empty or `grace` has passed.
    Drain {
        /// Whether the control plane moves the participants to other nodes.
        move_sessions: bool,
        /// How long the rooms may take to empty.
        grace: Duration,
        /// Whether the node stays up, idle, once its rooms are empty (until told to drain
        /// without it, e.g. by SIGTERM), rather than ending.
        keep_running: bool,
    },
}

/// What the node tells the control plane.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A signal for a participant's client.
    Signal {
        /// Whose.
        session_id: String,
        /// What.
        signal: v1::Signal,
    },
    /// A session ended on the node.
    Closed {
        /// Whose.
        session_id: String,
        /// Why.
        reason: v1::CloseReason,
        /// Detail for operators.
        detail: String,
    },
    /// The node's load over the last interval. The node measures no CPU (it reads no clock
    /// and no process statistics): `cpu_millicores` is 0 here, and the run loop fills it in.
    Load(v1::LoadReport),
    /// The answer to a [`Command::Resume`], for the replica that asked.
    ResumeAnswer {
        /// The request answered.
        resume: Resume,
        /// What became of it.
        outcome: v1::ResumeOutcome,
        /// With [`v1::ResumeOutcome::Resumed`], the generation of the session's next tickets.
        generation: u64,
    },
    /// A message for the other end of a link.
    Relay {
        /// Which link.
        link: LinkId,
        /// The link's room.
        room: String,
        /// The node at the other end.
        to_node: String,
        /// What.
        message: RelayMessage,
    },
    /// The node drains from now on.
    Draining {
        /// Whether the control plane should move the participants.
        move_sessions: bool,
        /// How long from now until the node closes what is left.
        grace: Duration,
    },
}

/// A datagram the node sends.
#[derive(Debug)]
pub struct Transmit {
    /// Where to.
    pub destination: SocketAddr,
    /// Over the ICE-TCP connection from `destination` rather than the UDP port.
    pub tcp: bool,
    /// What.
    pub contents: BytesMut,
}

/// Counters for load reports.
#[derive(Debug, Default, Clone, Copy)]
struct Traffic {
    packets_in: u64,
    packets_out: u64,
    bytes_in: u64,
    bytes_out: u64,
    probes: u64,
    /// Packets sent to and taken from links to other nodes.
    relayed_out: u64,
    relayed_in: u64,
}

/// Every session of the media node and the core that decides for them.
pub struct Node {
    /// The node's media address, as announced in its ICE candidate.
    announced: SocketAddr,
    /// The node's ICE-TCP address (a passive candidate), when it takes media over TCP.
    announced_tcp: Option<SocketAddr>,
    core: Core,
    sessions: FxHashMap<PeerId, Session>,
    /// The control plane's session ids.
    by_session_id: HashMap<String, PeerId>,
    demux: Demux,
    /// Datagrams the gate dropped, for the periodic summary.
    drops: gate::Drops,
    max_participants: u32,
    next_peer: u64,
    /// When each session's connection wants its next timeout; entries whose time no longer
    /// matches the session's deadline are stale and skipped.
    timers: BinaryHeap<Reverse<(Instant, PeerId)>>,
    /// Sessions touched by the current input.
    touched: Vec<PeerId>,
    /// Sessions whose offer is due, joiners' first, then oldest first: [`OFFERS_PER_TURN`] are
    /// made at the end of each input, the rest at the next turns of the loop (see
    /// [`Self::poll_timeout`]). Others than joiners come here from [`Self::offers_held`].
    offers_due: VecDeque<PeerId>,
    /// Sessions whose offer waits for [`OFFER_HOLD`], with when it is due, earliest first.
    offers_held: VecDeque<(Instant, PeerId)>,
    /// The input after which offers were left waiting: the timer [`Self::poll_timeout`] gives,
    /// due at once, so that the loop's next turn makes them.
    offers_waiting_since: Option<Instant>,
    /// Offers made so far.
    offers_made: u64,
    /// Sessions that ended and still have goodbyes to send.
    closing: Vec<Session>,
    /// Reused by the hot path: subscribers and rewritten headers of one packet.
    fanout: Vec<(PeerId, Rewrite)>,
    /// The links to other nodes of spanning rooms.
    links: FxHashMap<LinkId, relay::Link>,
    /// Reused to open relayed datagrams in.
    relay_buffer: Vec<u8>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    traffic: Traffic,
    /// What the sessions' lines counted, added up since the node started.
    line: line::LineReading,
    last_report: (Instant, Traffic),
    next_housekeeping: Instant,
    /// Set while draining: when the remaining sessions are closed.
    drain_deadline: Option<Instant>,
    /// Whether a drained node stays up rather than ending.
    drain_keeps_running: bool,
    finished: bool,
    /// New with every node: tells a session this node ended from one an earlier process lost.
    instance: String,
    /// Sessions of lost nodes that a session here continues, with when: each is continued
    /// once (a replayed ticket of a lost session opens nothing). Forgotten after
    /// [`CONTINUED_MEMORY`], by when every ticket for them has expired.
    continued: HashMap<String, Instant>,
}

/// How long the node remembers which lost sessions it continued: longer than a resume ticket
/// lives.
pub(crate) const CONTINUED_MEMORY: Duration = Duration::from_secs(15 * 60);

impl Node {
    /// This node's instance id, new with every node.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// A node whose media port is announced as `announced` and that admits at most
    /// `max_participants`.
    pub fn new(now: Instant, announced: SocketAddr, max_participants: u32) -> Self {
        Self {
            announced,
            announced_tcp: None,
            core: Core::new(treffpunkt_proto::random::u64()),
            sessions: FxHashMap::default(),
            by_session_id: HashMap::new(),
            demux: Demux::default(),
            drops: gate::Drops::default(),
            max_participants,
            next_peer: 0,
            timers: BinaryHeap::new(),
            touched: Vec::new(),
            offers_due: VecDeque::new(),
            offers_held: VecDeque::new(),
            offers_waiting_since: None,
            offers_made: 0,
            closing: Vec::new(),
            fanout: Vec::new(),
            links: FxHashMap::default(),
            relay_buffer: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            traffic: Traffic::default(),
            line: line::LineReading::default(),
            last_report: (now, Traffic::default()),
            // The first load report goes out at once, so the control plane knows the node is idle.
            next_housekeeping: now,
            drain_deadline: None,
            drain_keeps_running: false,
            finished: false,
            instance: treffpunkt_proto::random::hex(8),
            continued: HashMap::new(),
        }
    }

    /// Offers every new session a passive ICE-TCP candidate at `announced` as well (RFC 6544),
    /// for networks that block UDP; its priority is below the UDP candidate's.
    pub fn with_ice_tcp(mut self, announced: SocketAddr) -> Self {
        self.announced_tcp = Some(announced);
        self
    }

    /// A datagram from `from` arrived on the media port, at `arrived` (the kernel's receive
    /// time, at most `now`): its connection's arrival statistics use that (transport-wide
    /// feedback to the publisher, jitter), so that time the datagram waited for the node is not
    /// taken for delay on the network.
    pub fn datagram(&mut self, now: Instant, arrived: Instant, from: SocketAddr, datagram: &[u8]) {
        self.on_datagram(now, arrived, from, TransportProtocol::UDP, datagram);
        self.settle(now);
    }

    /// A frame arrived on the ICE-TCP connection from `from` (RFC 4571 framing already
    /// removed). What the node sends back to `from` is marked [`Transmit::tcp`]. Returns
    /// whether the frame belonged to a session: a connection whose frames belong to none (a
    /// STUN request naming no session, anything after its session ended) is to be closed.
    pub fn tcp_frame(&mut self, now: Instant, from: SocketAddr, frame: &[u8]) -> bool {
        let belongs = self.on_datagram(now, now, from, TransportProtocol::TCP, frame);
        self.settle(now);
        belongs
    }

    /// The control plane asks for something.
    pub fn command(&mut self, now: Instant, command: Command) {
        self.on_command(now, command);
        self.settle(now);
    }

    /// Runs what is due at `now`: the sessions' timers, the core's tick and housekeeping.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.on_session_timers(now);
        if self.core.poll_timeout().is_some_and(|at| at <= now) {
            self.on_core_timeout(now);
        }
        if now >= self.next_housekeeping {
            self.housekeeping(now);
            self.next_housekeeping = now + HOUSEKEEPING_INTERVAL;
        }
        self.settle(now);
    }

    /// Closes every session: the node stops.
    pub fn stop(&mut self, now: Instant) {
        let sessions: Vec<PeerId> = self.sessions.keys().copied().collect();
        for peer in sessions {
            self.close_session(
                now,
                peer,
                crate::core::LeaveReason::Left,
                Some(v1::CloseReason::RoomClosed),
                "node stopped",
            );
        }
        self.settle(now);
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the control plane.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When the node next wants [`Self::handle_timeout`].
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        // Drop stale timer entries so the heap's top is a live deadline.
        while let Some(Reverse((at, peer))) = self.timers.peek().copied() {
            match self.sessions.get(&peer) {
                Some(session) if session.deadline == Some(at) => break,
                _ => {
                    self.timers.pop();
                }
            }
        }
        let session = self.timers.peek().map(|Reverse((at, _))| *at);
        [
            self.offers_waiting_since,
            self.offers_held.front().map(|(at, _)| *at),
            session,
            self.core.poll_timeout(),
            Some(self.next_housekeeping),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// How many offers the node has made to its participants.
    pub fn offers_made(&self) -> u64 {
        self.offers_made
    }

    /// Whether the node has drained: its run loop may end.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// What the node has counted, for its metrics. Also reads each session's line (see
    /// [`mod@line`]): the round-trip times come back beside.
    pub fn stats(&mut self, now: Instant) -> (crate::metrics::Stats, Vec<f64>) {
        let mut totals = line::LineTotals {
            counted: self.line,
            ..Default::default()
        };
        for session in self.sessions.values_mut().filter(|s| s.connected) {
            let (reading, round_trip) = line::read(session, now);
            totals.take(&mut session.line_seen, reading, round_trip);
            totals.queued += session.estimate.queued();
        }
        self.line = totals.counted;
        let estimates: Vec<u64> = self.sessions.values().map(|s| s.estimate.get()).collect();
        let stats = crate::metrics::Stats {
            packets_in: self.traffic.packets_in,
            packets_out: self.traffic.packets_out,
            bytes_in: self.traffic.bytes_in,
            bytes_out: self.traffic.bytes_out,
            dropped: self.drops.all_time_by_reason,
            sessions: self.sessions.len() as u64,
            rooms: self.core.room_count() as u64,
            participants: self.core.participant_count() as u64,
            published_tracks: self.core.publication_count() as u64,
            forwarded_tracks: self.core.down_track_count() as u64,
            estimate_sum_bits: estimates.iter().sum(),
            estimate_min_bits: estimates.iter().copied().min().unwrap_or(0),
            probes: self.traffic.probes,
            line: self.line,
            pacer_queued: totals.queued,
            relayed_out: self.traffic.relayed_out,
            relayed_in: self.traffic.relayed_in,
        };
        (stats, totals.round_trips)
    }

    /// Sessions on the node.
    pub fn session_count(&self) -> usize {
        self.by_session_id.len()
    }

    /// Datagrams the media port's gate dropped since the node started, and the warnings it
    /// logged about them.
    pub fn dropped_datagrams(&self) -> (u64, u64) {
        (self.drops.all_time, self.drops.summaries)
    }

    /// Packets sent to links to other nodes and taken from them, since the node started.
    pub fn relayed_packets(&self) -> (u64, u64) {
        (self.traffic.relayed_out, self.traffic.relayed_in)
    }

    /// Routing entries the demultiplexer holds: (ICE username fragments, addresses).
    pub fn routing_entries(&self) -> (usize, usize) {
        self.demux.entries()
    }

    fn event(&mut self, event: Event) {
        self.events.push_back(event);
    }

    fn signal(&mut self, peer: PeerId, signal: v1::Signal) {
        if let Some(session) = self.sessions.get(&peer) {
            let session_id = session.session_id.clone();
            self.event(Event::Signal { session_id, signal });
        }
    }

    fn touch(&mut self, peer: PeerId) {
        self.touched.push(peer);
    }

    /// The end of every input: creates up to [`OFFERS_PER_TURN`] of the due offers, collects
    /// what the touched sessions want to send, and schedules their next timeouts.
    fn settle(&mut self, now: Instant) {
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        for peer in &touched {
            let Some(session) = self.sessions.get(peer) else {
                continue;
            };
            if !session.offer_due()
                || self.offers_due.contains(peer)
                || self.offers_held.iter().any(|(_, held)| held == peer)
            {
                continue;
            }
            if session.receives_nothing_yet() {
                // A joiner's offer goes at once and before the others' (after joiners already
                // waiting): it opens every pair the joiner is part of, where another's opens
                // one.
                let at = self
                    .offers_due
                    .iter()
                    .position(|waiting| {
                        !self
                            .sessions
                            .get(waiting)
                            .is_some_and(Session::receives_nothing_yet)
                    })
                    .unwrap_or(self.offers_due.len());
                self.offers_due.insert(at, *peer);
            } else {
                self.offers_held.push_back((now + OFFER_HOLD, *peer));
            }
        }
        while let Some((at, peer)) = self.offers_held.front().copied()
            && at <= now
        {
            self.offers_held.pop_front();
            self.offers_due.push_back(peer);
        }
        let mut made = 0;
        while made < OFFERS_PER_TURN
            && let Some(peer) = self.offers_due.pop_front()
        {
            let offer = match self.sessions.get_mut(&peer) {
                Some(session) => session.offer_if_needed(now),
                None => continue,
            };
            match offer {
                Ok(Some(sdp)) => {
                    made += 1;
                    self.offers_made += 1;
                    tracing::debug!(?peer, "the node offers");
                    self.signal(peer, offer_signal(sdp));
                    touched.push(peer);
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "could not create an offer"),
            }
        }
        self.offers_waiting_since = (!self.offers_due.is_empty()).then_some(now);
        for peer in &touched {
            let Some(session) = self.sessions.get_mut(peer) else {
                continue;
            };
            while let Some(datagram) = session.pc.poll_write() {
                self.traffic.packets_out += 1;
                self.traffic.bytes_out += datagram.message.len() as u64;
                self.transmits.push_back(Transmit {
                    destination: datagram.transport.peer_addr,
                    tcp: datagram.transport.transport_protocol == TransportProtocol::TCP,
                    contents: datagram.message,
                });
            }
            let deadline = session
                .pc
                .poll_timeout()
                .map(|at| at.max(now + Duration::from_millis(1)));
            if deadline != session.deadline {
                session.deadline = deadline;
                if let Some(at) = deadline {
                    self.timers.push(Reverse((at, *peer)));
                }
            }
        }
        touched.clear();
        self.touched = touched;
        for mut session in std::mem::take(&mut self.closing) {
            while let Some(datagram) = session.pc.poll_write() {
                self.transmits.push_back(Transmit {
                    destination: datagram.transport.peer_addr,
                    tcp: datagram.transport.transport_protocol == TransportProtocol::TCP,
                    contents: datagram.message,
                });
            }
        }
    }
}

/// The signal that carries an offer of the node.
fn offer_signal(sdp: String) -> v1::Signal {
    v1::Signal::new(SignalKind::Offer(v1::SessionDescription {
        sdp,
        ..Default::default()
    }))
}
