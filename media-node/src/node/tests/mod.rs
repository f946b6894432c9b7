//! The node driven in memory on a virtual clock, with real `rtc` peers as participants: ICE,
//! DTLS, SRTP, RTCP and the interceptor chains all run as in a call, but datagrams travel
//! through a queue instead of sockets and time moves as fast as the work allows. Nothing is
//! mocked: the control plane's part is played by the test, which opens sessions and relays
//! signals as the gateway would.

//!
//! The `testing` feature makes the harness available outside the crate's tests (the fuzzers
//! drive a connected session's datagram entry with it).

#[cfg(test)]
mod abuse;
#[cfg(test)]
mod calls;
pub mod peer;
#[cfg(test)]
mod spanning;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use treffpunkt_proto::v1;

use super::{Admission, Command, Event, Node};
use peer::{Publish, TestPeer};

/// One-way delay of every datagram on the in-memory network.
const LATENCY: Duration = Duration::from_millis(5);
/// The room every test meets in.
const ROOM: &str = "public/chor";

/// Which way a datagram goes, for a test that drops some.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From a participant to the node.
    Up,
    /// From the node to a participant.
    Down,
    /// From one node to another (the participant's address is the receiving node's).
    Between,
}

/// A datagram on its way.
struct InFlight {
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

/// Datagrams someone sends the node at a steady rate, in batches of a millisecond.
pub struct Flood {
    /// The source and contents of the `n`th datagram.
    pub datagram: Box<dyn FnMut(u64) -> (SocketAddr, Vec<u8>)>,
    /// How many a second.
    pub per_second: u64,
    /// Until when.
    pub until: Instant,
    next: Instant,
    /// How many were sent so far.
    pub sent: u64,
}

impl Flood {
    /// A flood that starts now.
    pub fn new(
        now: Instant,
        duration: Duration,
        per_second: u64,
        datagram: impl FnMut(u64) -> (SocketAddr, Vec<u8>) + 'static,
    ) -> Self {
        Self {
            datagram: Box::new(datagram),
            per_second,
            until: now + duration,
            next: now,
            sent: 0,
        }
    }
}

/// Decides which datagrams the network loses: (direction, participant's address, bytes).
type LossRule = Box<dyn FnMut(Direction, SocketAddr, &[u8]) -> bool>;

/// The node (or several), its participants and the network between them.
pub struct Net {
    pub now: Instant,
    pub node: Node,
    node_address: SocketAddr,
    /// Further nodes, for rooms that span nodes: numbered from 1 (0 is [`Self::node`]).
    pub more_nodes: Vec<(SocketAddr, Node)>,
    /// The node each participant is on, by session id (0 when not named).
    placed: std::collections::HashMap<String, usize>,
    /// The nodes at the two ends of each link.
    links: std::collections::HashMap<crate::core::LinkId, (usize, usize)>,
    pub peers: Vec<TestPeer>,
    in_flight: BinaryHeap<Reverse<(Instant, u64)>>,
    datagrams: std::collections::HashMap<u64, InFlight>,
    next_datagram: u64,
    /// Sessions the node closed, with why.
    pub closed: Vec<(String, v1::CloseReason)>,
    /// The node's answers to resumes: session, outcome, generation.
    pub answers: Vec<(String, v1::ResumeOutcome, u64)>,
    loss: Option<LossRule>,
    /// Datagrams the loss rule dropped.
    pub lost: u32,
    /// Garbage sent to the node, if any.
    pub flood: Option<Flood>,
    /// When the node answered a connectivity or consent check (a STUN binding success
    /// response), and to whom.
    pub stun_down: Vec<(Instant, SocketAddr)>,
    /// Steps in a row at one instant; many mean a timer that never clears.
    stalled: u32,
    /// How many participants a room admits.
    pub room_limit: u32,
    /// Time spent in the nodes' own calls (commands, datagrams, timers, polls), without the
    /// peers' or the network's: what forwarding and signalling cost the node, for the
    /// benchmarks.
    pub node_busy: Duration,
    /// The part of [`Self::node_busy`] spent on the control plane's commands: admissions and
    /// signals, with the offers they make the node send.
    pub node_commands: Duration,
    /// The longest of the nodes' calls: what a live node's loop forwarded nothing for at a
    /// stretch (reset it to measure a stretch of the call).
    pub node_longest_call: Duration,
    /// The most offers one call of a node made (a command or a turn of its timers).
    pub most_offers_in_one_call: u64,
    /// RTP packets the nodes sent to participants.
    pub rtp_down: u64,
    /// The participants the nodes' offers went to, in the order they were made.
    pub offered_to: Vec<usize>,
}

impl Net {
    /// A node with room for `max_participants` and nobody in it yet.
    pub fn new(max_participants: u32) -> Self {
        let now = Instant::now();
        let node_address = SocketAddr::from(([10, 0, 0, 100], 10_000));
        Self {
            now,
            node: Node::new(now, node_address, max_participants),
            node_address,
            more_nodes: Vec::new(),
            placed: std::collections::HashMap::new(),
            links: std::collections::HashMap::new(),
            peers: Vec::new(),
            in_flight: BinaryHeap::new(),
            datagrams: std::collections::HashMap::new(),
            next_datagram: 0,
            closed: Vec::new(),
            answers: Vec::new(),
            loss: None,
            lost: 0,
            flood: None,
            stun_down: Vec::new(),
            stalled: 0,
            room_limit: 10,
            node_busy: Duration::ZERO,
            node_commands: Duration::ZERO,
            node_longest_call: Duration::ZERO,
            most_offers_in_one_call: 0,
            offered_to: Vec::new(),
            rtp_down: 0,
        }
    }

    /// Adds a node; returns its number.
    pub fn add_node(&mut self, max_participants: u32) -> usize {
        let number = self.more_nodes.len() + 1;
        let address = SocketAddr::from(([10, 0, 1, number as u8], 10_000));
        let node = Node::new(self.now, address, max_participants);
        self.more_nodes.push((address, node));
        number
    }

    /// Node `number` (0 is [`Self::node`]).
    pub fn node_mut(&mut self, number: usize) -> &mut Node {
        match number {
            0 => &mut self.node,
            _ => &mut self.more_nodes[number - 1].1,
        }
    }

    /// The media address of node `number`.
    pub fn node_address_of(&self, number: usize) -> SocketAddr {
        match number {
            0 => self.node_address,
            _ => self.more_nodes[number - 1].0,
        }
    }

    fn node_count(&self) -> usize {
        1 + self.more_nodes.len()
    }

    /// Opens a link of the room between nodes `a` and `b`, as the control plane would.
    pub fn link(&mut self, link: crate::core::LinkId, a: usize, b: usize) {
        let key: [u8; 32] = std::array::from_fn(|index| index as u8 ^ link.0 as u8);
        self.links.insert(link, (a, b));
        for (this, other, first) in [(a, b, true), (b, a, false)] {
            let spec = super::LinkSpec {
                link,
                room: ROOM.to_owned(),
                address: self.node_address_of(other),
                key,
                first,
                peer_node: format!("node-{other}"),
            };
            self.command(this, Command::OpenLink(spec));
        }
        self.exchange();
    }

    /// Admits a participant called `name` to the room, as the control plane would after its
    /// join; returns its index in [`Self::peers`].
    pub fn join(&mut self, name: &str, publish: Publish) -> usize {
        self.join_as(name, &format!("p-{name}"), publish)
    }

    /// The same, on node `node`.
    pub fn join_on(&mut self, node: usize, name: &str, publish: Publish) -> usize {
        let index = self.peers.len();
        let number = index as u8 + 1;
        let address = SocketAddr::from(([10, 0, 0, number], 5000 + u16::from(number)));
        let peer = TestPeer::new(name, address, publish);
        let admission = self.admission(&peer, name, &format!("p-{name}"), "");
        self.placed.insert(peer.session_id.clone(), node);
        self.peers.push(peer);
        self.command(node, Command::Open(admission));
        self.exchange();
        index
    }

    fn admission(
        &self,
        peer: &TestPeer,
        name: &str,
        participant_id: &str,
        continues: &str,
    ) -> Admission {
        Admission {
            session_id: peer.session_id.clone(),
            room: ROOM.to_owned(),
            participant_id: participant_id.to_owned(),
            display_name: name.to_owned(),
            max_participants: self.room_limit,
            last_n: 0,
            continues: continues.to_owned(),
            moderator: false,
            lobby: false,
            first_moderates: false,
        }
    }

    /// The node participant `index` is on.
    fn node_of(&self, index: usize) -> usize {
        self.placed
            .get(&self.peers[index].session_id)
            .copied()
            .unwrap_or(0)
    }

    /// The same, with the participant id `participant_id` (the same person's second session
    /// when the id is taken).
    pub fn join_as(&mut self, name: &str, participant_id: &str, publish: Publish) -> usize {
        self.join_continuing(name, participant_id, "", publish)
    }

    /// The same, for a session that continues the lost session `continues`.
    pub fn join_continuing(
        &mut self,
        name: &str,
        participant_id: &str,
        continues: &str,
        publish: Publish,
    ) -> usize {
        self.open_session(name, publish, |net, peer| {
            net.admission(peer, name, participant_id, continues)
        })
    }

    /// Participant `name` asks to come into the room through its lobby; returns its index.
    pub fn knock(&mut self, name: &str) -> usize {
        self.open_session(name, Publish::Nothing, |net, peer| Admission {
            lobby: true,
            ..net.admission(peer, name, &format!("p-{name}"), "")
        })
    }

    /// A new participant on the first node, its session opened with the admission `admit`
    /// makes for it; its index.
    fn open_session(
        &mut self,
        name: &str,
        publish: Publish,
        admit: impl FnOnce(&Self, &TestPeer) -> Admission,
    ) -> usize {
        let index = self.peers.len();
        let number = index as u8 + 1;
        let address = SocketAddr::from(([10, 0, 0, number], 5000 + u16::from(number)));
        let peer = TestPeer::new(name, address, publish);
        let admission = admit(self, &peer);
        self.peers.push(peer);
        self.command(0, Command::Open(admission));
        self.exchange();
        index
    }

    /// Relays a signal of participant `index` to the node.
    pub fn signal(&mut self, index: usize, kind: v1::signal::Kind) {
        let session_id = self.peers[index].session_id.clone();
        let signal = v1::Signal::new(kind);
        let node = self.node_of(index);
        self.command(node, Command::Signal { session_id, signal });
        self.exchange();
    }

    /// Loses the datagrams `rule` picks from now on.
    pub fn lose(&mut self, rule: impl FnMut(Direction, SocketAddr, &[u8]) -> bool + 'static) {
        self.loss = Some(Box::new(rule));
    }

    /// Counts `spent` in one call of a node towards its time.
    fn count_node_time(&mut self, spent: Duration) {
        self.node_busy += spent;
        self.node_longest_call = self.node_longest_call.max(spent);
    }

    /// The offers all nodes have made so far.
    fn offers_made(&self) -> u64 {
        self.node.offers_made()
            + self
                .more_nodes
                .iter()
                .map(|(_, n)| n.offers_made())
                .sum::<u64>()
    }

    /// Hands `command` to node `number` as the control link would, counting the node's time.
    fn command(&mut self, number: usize, command: Command) {
        let now = self.now;
        let offers = self.offers_made();
        let started = Instant::now();
        self.node_mut(number).command(now, command);
        let spent = started.elapsed();
        self.most_offers_in_one_call = self
            .most_offers_in_one_call
            .max(self.offers_made() - offers);
        self.count_node_time(spent);
        self.node_commands += spent;
    }

    /// Runs the call for `duration` of virtual time.
    pub fn run_for(&mut self, duration: Duration) {
        let until = self.now + duration;
        while self.now < until {
            self.step(until);
        }
    }

    /// Runs the call until `done` holds or `limit` of virtual time has passed; whether it held.
    pub fn run_until(&mut self, limit: Duration, done: impl Fn(&Net) -> bool) -> bool {
        let until = self.now + limit;
        while !done(self) {
            if self.now >= until {
                return false;
            }
            self.step(until);
        }
        true
    }

    /// Moves the clock to the next thing that happens (no later than `until`) and lets it
    /// happen.
    fn step(&mut self, until: Instant) {
        let more_nodes = self
            .more_nodes
            .iter_mut()
            .map(|(_, node)| node.poll_timeout());
        let next = [
            self.in_flight.peek().map(|Reverse((at, _))| *at),
            self.node.poll_timeout(),
            more_nodes.flatten().min(),
            self.flood
                .as_ref()
                .filter(|flood| flood.next < flood.until)
                .map(|flood| flood.next),
        ]
        .into_iter()
        .chain(self.peers.iter_mut().map(TestPeer::poll_timeout))
        .flatten()
        .min()
        .unwrap_or(until)
        .min(until);
        if next <= self.now {
            self.stalled += 1;
            assert!(
                self.stalled < 10_000,
                "time stands still at {:?}: node {:?}, peers {:?}",
                self.now,
                self.node
                    .poll_timeout()
                    .map(|at| at.saturating_duration_since(self.now)),
                self.peers
                    .iter_mut()
                    .map(|p| p.describe_timers(self.now))
                    .collect::<Vec<_>>()
            );
        } else {
            self.stalled = 0;
        }
        self.now = self.now.max(next);
        let now = self.now;
        while let Some(Reverse((at, id))) = self.in_flight.peek().copied() {
            if at > now {
                break;
            }
            self.in_flight.pop();
            let Some(datagram) = self.datagrams.remove(&id) else {
                continue;
            };
            let offers = self.offers_made();
            let node = if datagram.to == self.node_address {
                Some(&mut self.node)
            } else {
                self.more_nodes
                    .iter_mut()
                    .find(|(at, _)| *at == datagram.to)
                    .map(|(_, node)| node)
            };
            if let Some(node) = node {
                let started = Instant::now();
                node.datagram(now, now, datagram.from, &datagram.bytes);
                self.count_node_time(started.elapsed());
                self.most_offers_in_one_call = self
                    .most_offers_in_one_call
                    .max(self.offers_made() - offers);
            } else if let Some(peer) = self.peers.iter_mut().find(|p| p.address == datagram.to) {
                peer.datagram(now, datagram.from, &datagram.bytes);
            }
        }
        self.send_flood(now);
        for number in 0..self.node_count() {
            let offers = self.offers_made();
            let started = Instant::now();
            let node = self.node_mut(number);
            if node.poll_timeout().is_some_and(|at| at <= now) {
                node.handle_timeout(now);
            }
            self.count_node_time(started.elapsed());
            self.most_offers_in_one_call = self
                .most_offers_in_one_call
                .max(self.offers_made() - offers);
        }
        for peer in &mut self.peers {
            if peer.poll_timeout().is_some_and(|at| at <= now) {
                peer.handle_timeout(now);
            }
        }
        self.exchange();
    }

    /// Sends the flood's datagrams that are due, straight to the node.
    fn send_flood(&mut self, now: Instant) {
        let Some(flood) = &mut self.flood else {
            return;
        };
        while flood.next <= now && flood.next < flood.until {
            for _ in 0..flood.per_second / 1000 {
                let (from, bytes) = (flood.datagram)(flood.sent);
                flood.sent += 1;
                let started = Instant::now();
                self.node.datagram(now, now, from, &bytes);
                let spent = started.elapsed();
                self.node_busy += spent;
                self.node_longest_call = self.node_longest_call.max(spent);
            }
            flood.next += Duration::from_millis(1);
        }
    }

    /// Carries everything the node and the peers want to send and say, until nobody has
    /// anything more.
    fn exchange(&mut self) {
        let now = self.now;
        let (mut transmits, mut events) = (Vec::new(), Vec::new());
        loop {
            let mut quiet = true;
            for number in 0..self.node_count() {
                let from = self.node_address_of(number);
                // What the node says is gathered first, so that only the node's own work counts
                // towards its time.
                let started = Instant::now();
                let node = self.node_mut(number);
                transmits.extend(std::iter::from_fn(|| node.poll_transmit()));
                events.extend(std::iter::from_fn(|| node.poll_event()));
                self.count_node_time(started.elapsed());
                quiet &= transmits.is_empty() && events.is_empty();
                for transmit in transmits.drain(..) {
                    let to = transmit.destination;
                    let between = (0..self.node_count()).any(|n| self.node_address_of(n) == to);
                    let direction = if between {
                        Direction::Between
                    } else {
                        Direction::Down
                    };
                    self.send(direction, from, to, &transmit.contents);
                }
                for event in events.drain(..) {
                    self.on_event(number, event);
                }
            }
            for index in 0..self.peers.len() {
                self.peers[index].poll(now);
                while let Some((to, bytes)) = self.peers[index].poll_transmit() {
                    quiet = false;
                    let from = self.peers[index].address;
                    self.send(Direction::Up, from, to, &bytes);
                }
            }
            if quiet {
                return;
            }
        }
    }

    fn on_event(&mut self, from: usize, event: Event) {
        match event {
            Event::Signal { session_id, signal } => {
                let now = self.now;
                let Some(index) = self.peers.iter().position(|p| p.session_id == session_id) else {
                    return;
                };
                if matches!(signal.kind, Some(v1::signal::Kind::Offer(_))) {
                    self.offered_to.push(index);
                }
                let peer = &mut self.peers[index];
                if let Some(reply) = peer.on_signal(now, signal) {
                    let command = Command::Signal {
                        session_id,
                        signal: reply,
                    };
                    self.command(from, command);
                }
            }
            Event::Closed {
                session_id, reason, ..
            } => self.closed.push((session_id, reason)),
            Event::ResumeAnswer {
                resume,
                outcome,
                generation,
            } => self.answers.push((resume.session_id, outcome, generation)),
            Event::Relay { link, message, .. } => {
                // Through the control plane's wire form, as in a fleet.
                let Some((a, b)) = self.links.get(&link).copied() else {
                    return;
                };
                let to = if from == a { b } else { a };
                let wire = crate::control::relay::to_wire(link, message);
                let (link, message) =
                    crate::control::relay::from_wire(wire).expect("a node's own messages parse");
                self.command(to, Command::Relayed { link, message });
            }
            Event::Load(_) | Event::Draining { .. } => {}
        }
    }

    fn send(&mut self, direction: Direction, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        let participant = match direction {
            Direction::Up => from,
            Direction::Down | Direction::Between => to,
        };
        if direction == Direction::Down && bytes.starts_with(&[0x01, 0x01]) {
            self.stun_down.push((self.now, to));
        }
        if direction == Direction::Down && rtp_header(bytes).is_some() {
            self.rtp_down += 1;
        }
        if let Some(rule) = &mut self.loss
            && rule(direction, participant, bytes)
        {
            self.lost += 1;
            return;
        }
        let id = self.next_datagram;
        self.next_datagram += 1;
        self.in_flight.push(Reverse((self.now + LATENCY, id)));
        let bytes = bytes.to_vec();
        self.datagrams.insert(id, InFlight { from, to, bytes });
    }
}

/// The SSRC and sequence number of an SRTP packet (its RTP header travels in the clear), or
/// `None` for anything else: STUN and DTLS start with other bits, and SRTCP's packet types sit
/// where RTP's marker and payload type are (RFC 5761).
pub fn rtp_header(datagram: &[u8]) -> Option<(u32, u16)> {
    if datagram.len() < 12 || datagram[0] >> 6 != 2 || (192..=223).contains(&datagram[1]) {
        return None;
    }
    let sequence_number = u16::from_be_bytes([datagram[2], datagram[3]]);
    let ssrc = u32::from_be_bytes([datagram[8], datagram[9], datagram[10], datagram[11]]);
    Some((ssrc, sequence_number))
}

/// Whether participant `index` has received at least `audio` audio and `video` video packets
/// from `from`.
#[cfg(test)]
pub fn has_media(net: &Net, index: usize, from: &str, audio: usize, video: usize) -> bool {
    use rtc::rtp_transceiver::rtp_sender::RtpCodecKind::{Audio, Video};
    let peer = &net.peers[index];
    peer.from(from, Audio).len() >= audio && peer.from(from, Video).len() >= video
}

/// Asserts that each (participant, publisher) pair received the publisher's audio and video
/// without gaps or reordering.
#[cfg(test)]
pub fn assert_complete_and_in_order(net: &Net, pairs: &[(usize, &str)]) {
    use rtc::rtp_transceiver::rtp_sender::RtpCodecKind::{Audio, Video};
    for (index, from) in pairs {
        for kind in [Audio, Video] {
            let indices: Vec<u32> = net.peers[*index]
                .from(from, kind)
                .iter()
                .map(|a| a.index)
                .collect();
            assert!(
                indices.windows(2).all(|pair| pair[1] == pair[0] + 1),
                "{from}'s {kind} arrives at participant {index} without gaps or reordering: \
                 {indices:?}"
            );
        }
    }
}
