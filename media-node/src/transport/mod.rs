//! The transport: the node's one UDP socket, the demultiplexer, and one `rtc` connection per
//! participant, all driven by a single task with no task per peer.
//!
//! The run loop waits for the next of three things: a datagram, a command from the control
//! plane, or the earliest timer. It feeds that to the connection concerned (or to the
//! [`Core`]), polls what comes out, hands media and events to the core, carries out what the core
//! decides, and finally sends every datagram the touched connections want to send.

mod batch;
mod demux;
pub mod downlink;
mod media;
mod pacer;
mod peer;
pub mod probe;
mod signal;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use treffpunkt_proto::v1::{self, signal::Kind as SignalKind};

pub use demux::{Demux, is_stun, stun_local_ufrag};
use peer::Peer;

use crate::core::{
    Core, JoinError, JoinRequest, LeaveReason, Output, PeerId, Rewrite, VideoState, vp8,
};
use crate::error::Error;

/// The largest datagram read; anything larger than an Ethernet frame is not media.
const MAX_DATAGRAM: usize = 2048;
/// How often housekeeping runs and load is reported.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);
/// The most viewports one signal may report.
const MAX_VIEWPORTS: usize = 256;

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
    /// A session's client came back through another control-plane replica: tell it where the
    /// session stands.
    Resume {
        /// Whose.
        session_id: String,
    },
    /// Take no new sessions; exit once the rooms are empty or `grace` has passed.
    Drain {
        /// Whether the control plane moves the participants to other nodes.
        move_sessions: bool,
        /// How long the rooms may take to empty.
        grace: Duration,
    },
}

/// What the node tells the control plane.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
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
    /// The node's load over the last interval.
    Load(v1::LoadReport),
    /// The node is draining.
    Draining {
        /// Whether the control plane should move the participants.
        move_sessions: bool,
        /// When the node closes what is left.
        deadline_unix_ms: u64,
    },
}

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
}

/// Counters for load reports.
#[derive(Debug, Default, Clone, Copy)]
struct Traffic {
    packets_in: u64,
    packets_out: u64,
    bytes_in: u64,
    bytes_out: u64,
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

/// The media node's run loop and everything it owns.
pub struct Node {
    socket: UdpSocket,
    announced: SocketAddr,
    core: Core,
    peers: HashMap<PeerId, Peer>,
    sessions: HashMap<String, PeerId>,
    demux: Demux,
    reports: mpsc::UnboundedSender<Report>,
    max_participants: u32,
    next_peer: u64,
    timers: BinaryHeap<Reverse<(Instant, PeerId)>>,
    /// Connections touched since the last flush.
    touched: Vec<PeerId>,
    /// Connections that ended and still have goodbyes to send.
    closing: Vec<Peer>,
    /// Reused by the hot path: subscribers and rewritten headers of one packet.
    fanout: Vec<(PeerId, Rewrite)>,
    /// Datagrams of one flush, sent in batches.
    outbox: Vec<(BytesMut, SocketAddr)>,
    traffic: Traffic,
    last_report: (Instant, Traffic, Option<u64>),
    /// Set while draining: when the remaining sessions are closed.
    drain_deadline: Option<Instant>,
    /// The run loop ends at the next turn.
    finished: bool,
    /// What the node tells its health endpoint.
    status: crate::health::NodeStatus,
}

impl Node {
    /// A node on `socket` that reports to the control plane through `reports` and admits at
    /// most `max_participants`.
    pub fn new(
        socket: MediaSocket,
        reports: mpsc::UnboundedSender<Report>,
        max_participants: u32,
        status: crate::health::NodeStatus,
    ) -> Self {
        let seed = {
            use ring::rand::{SecureRandom, SystemRandom};
            let mut bytes = [0u8; 8];
            SystemRandom::new()
                .fill(&mut bytes)
                .expect("the operating system's random source is available");
            u64::from_le_bytes(bytes)
        };
        Self {
            socket: socket.socket,
            announced: socket.announced,
            core: Core::new(seed),
            peers: HashMap::new(),
            sessions: HashMap::new(),
            demux: Demux::default(),
            reports,
            max_participants,
            next_peer: 0,
            timers: BinaryHeap::new(),
            touched: Vec::new(),
            closing: Vec::new(),
            fanout: Vec::new(),
            outbox: Vec::new(),
            traffic: Traffic::default(),
            last_report: (Instant::now(), Traffic::default(), process_cpu_ticks()),
            drain_deadline: None,
            finished: false,
            status,
        }
    }

    /// Runs until the command channel closes, then closes every session.
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING_INTERVAL);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        info!(address = %self.announced, "media node listening");
        loop {
            let deadline = self.next_deadline();
            let sleep = tokio::time::sleep_until(deadline.map_or_else(
                || tokio::time::Instant::now() + Duration::from_secs(3600),
                Into::into,
            ));
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(command) => self.on_command(Instant::now(), command),
                    None => break,
                },
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => self.on_datagram(Instant::now(), from, &buf[..len]),
                    Err(error) => debug!(%error, "udp receive failed"),
                },
                () = sleep => self.on_timeout(Instant::now()),
                _ = housekeeping.tick() => self.housekeeping(Instant::now()),
            }
            self.flush().await;
            if self.finished {
                info!("drained: the media node stops");
                break;
            }
        }
        let sessions: Vec<PeerId> = self.peers.keys().copied().collect();
        for peer in sessions {
            self.close_peer(
                peer,
                LeaveReason::Left,
                Some(v1::CloseReason::RoomClosed),
                "node stopped",
            );
        }
        self.flush().await;
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        // Drop stale timer entries so the heap's top is a live deadline.
        while let Some(Reverse((at, peer))) = self.timers.peek().copied() {
            match self.peers.get(&peer) {
                Some(p) if p.deadline == Some(at) => break,
                _ => {
                    self.timers.pop();
                }
            }
        }
        let peer_deadline = self.timers.peek().map(|Reverse((at, _))| *at);
        [peer_deadline, self.core.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    fn report(&self, report: Report) {
        // The control link ends only when the node shuts down.
        let _ = self.reports.send(report);
    }

    fn signal(&self, peer: PeerId, signal: v1::Signal) {
        if let Some(p) = self.peers.get(&peer) {
            self.report(Report::Signal {
                session_id: p.session_id.clone(),
                signal,
            });
        }
    }

    fn touch(&mut self, peer: PeerId) {
        self.touched.push(peer);
    }

    // --------------------------------------------------------------------------------------
    // Commands from the control plane
    // --------------------------------------------------------------------------------------

    fn on_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Open(admission) => self.open(now, admission),
            Command::Signal { session_id, signal } => {
                let Some(peer) = self.sessions.get(&session_id).copied() else {
                    debug!("signal for an unknown session");
                    return;
                };
                self.on_signal(now, peer, signal);
            }
            Command::Close { session_id } => {
                if let Some(peer) = self.sessions.get(&session_id).copied() {
                    self.close_peer(peer, LeaveReason::Left, None, "closed by the control plane");
                }
            }
            Command::Resume { session_id } => self.resume(&session_id),
            Command::Drain {
                move_sessions,
                grace,
            } => self.drain(now, move_sessions, grace),
            Command::CloseRoom { room } => {
                let members = self.core.room_members(&room).to_vec();
                for peer in members {
                    self.close_peer(
                        peer,
                        LeaveReason::Left,
                        Some(v1::CloseReason::RoomClosed),
                        "room closed",
                    );
                }
            }
        }
    }

    /// Tells a resumed session's client where it stands: the roster, and the node's offer if
    /// one is waiting for an answer.
    fn resume(&mut self, session_id: &str) {
        let Some(peer_id) = self.sessions.get(session_id).copied() else {
            self.report(Report::Closed {
                session_id: session_id.to_owned(),
                reason: v1::CloseReason::ConnectionLost,
                detail: "no such session on this node".to_owned(),
            });
            return;
        };
        if let Some(welcome) = self.core.roster_for(peer_id) {
            self.signal(peer_id, signal::roster_with(welcome, true));
        }
        let pending_offer = self.peers.get(&peer_id).and_then(|peer| {
            matches!(peer.negotiation, peer::Negotiation::OfferSent { .. })
                .then(|| peer.pc.local_description().map(|d| d.sdp))
                .flatten()
        });
        if let Some(sdp) = pending_offer {
            self.signal(
                peer_id,
                v1::Signal::new(SignalKind::Offer(v1::SessionDescription {
                    sdp,
                    ..Default::default()
                })),
            );
        }
    }

    /// Takes no new sessions from now on, and ends once the rooms are empty or `grace` has
    /// passed.
    fn drain(&mut self, now: Instant, move_sessions: bool, grace: Duration) {
        let deadline = now + grace;
        if self
            .drain_deadline
            .is_some_and(|current| current <= deadline)
        {
            return;
        }
        info!(move_sessions, grace_seconds = grace.as_secs(), "draining");
        self.drain_deadline = Some(deadline);
        self.status.set_draining();
        let deadline_unix_ms = std::time::SystemTime::now()
            .checked_add(grace)
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64);
        self.report(Report::Draining {
            move_sessions,
            deadline_unix_ms,
        });
        if self.peers.is_empty() {
            self.finished = true;
        }
    }

    fn refuse(&self, session_id: &str, code: &str, message: &str) {
        self.report(Report::Signal {
            session_id: session_id.to_owned(),
            signal: v1::Signal::error(code, message),
        });
        self.report(Report::Closed {
            session_id: session_id.to_owned(),
            reason: v1::CloseReason::Refused,
            detail: message.to_owned(),
        });
    }

    fn open(&mut self, now: Instant, admission: Admission) {
        if self.sessions.contains_key(&admission.session_id) {
            return;
        }
        if self.drain_deadline.is_some() {
            self.refuse(
                &admission.session_id,
                "unavailable",
                "this media node is draining",
            );
            return;
        }
        if self.peers.len() >= self.max_participants as usize {
            self.refuse(
                &admission.session_id,
                "platform-full",
                "this media node is full",
            );
            return;
        }
        self.next_peer += 1;
        let id = PeerId(self.next_peer);
        let peer = match Peer::new(id, admission.session_id.clone(), self.announced, now) {
            Ok(peer) => peer,
            Err(error) => {
                warn!(%error, "could not create a connection");
                self.refuse(
                    &admission.session_id,
                    "unavailable",
                    "the media node failed",
                );
                return;
            }
        };
        let request = JoinRequest {
            room: admission.room,
            participant_id: admission.participant_id,
            display_name: admission.display_name,
            max_participants: admission.max_participants,
            last_n: admission.last_n,
        };
        match self.core.join(id, request) {
            Ok(()) => {}
            Err(JoinError::RoomFull { .. }) => {
                self.refuse(&admission.session_id, "room-full", "the room is full");
                return;
            }
            Err(JoinError::AlreadyJoined) => return,
        }
        self.demux.add_peer(id, peer.ufrag.clone());
        self.sessions.insert(admission.session_id, id);
        self.peers.insert(id, peer);
        self.apply_core_outputs(now);
    }

    fn on_signal(&mut self, now: Instant, peer_id: PeerId, signal: v1::Signal) {
        let Some(kind) = signal.kind else {
            self.signal(peer_id, v1::Signal::error("bad-message", "empty signal"));
            return;
        };
        match kind {
            SignalKind::Offer(offer) => {
                let Some(peer) = self.peers.get_mut(&peer_id) else {
                    return;
                };
                match peer.answer_offer(now, offer.sdp, &offer.sources) {
                    Ok(sdp) => {
                        self.signal(
                            peer_id,
                            v1::Signal::new(SignalKind::Answer(v1::SessionDescription {
                                sdp,
                                ..Default::default()
                            })),
                        );
                    }
                    Err(error) => {
                        debug!(%error, "client offer refused");
                        self.signal(
                            peer_id,
                            v1::Signal::error(error_code(&error), error.to_string()),
                        );
                    }
                }
                self.drive(now, peer_id);
            }
            SignalKind::Answer(answer) => {
                let Some(peer) = self.peers.get_mut(&peer_id) else {
                    return;
                };
                match peer.apply_answer(now, answer.sdp) {
                    Ok(ready) => {
                        if peer.connected {
                            for ssrc in ready {
                                self.core.down_track_ready(now, peer_id, ssrc);
                            }
                        }
                    }
                    Err(error) => {
                        debug!(%error, "client answer refused");
                        self.signal(
                            peer_id,
                            v1::Signal::error(error_code(&error), error.to_string()),
                        );
                    }
                }
                self.drive(now, peer_id);
                self.apply_core_outputs(now);
            }
            // ICE-lite: the node learns the client's address from its connectivity checks and
            // needs no remote candidates.
            SignalKind::Candidate(_) => {}
            SignalKind::MediaState(state) => {
                self.core.set_media_state(
                    peer_id,
                    state.audio_muted,
                    state.video_muted,
                    state.screen_sharing,
                );
                self.apply_core_outputs(now);
            }
            SignalKind::Leave(_) => {
                self.close_peer(
                    peer_id,
                    LeaveReason::Left,
                    Some(v1::CloseReason::Left),
                    "left",
                );
            }
            SignalKind::Viewports(viewports) => {
                for viewport in viewports.viewports.iter().take(MAX_VIEWPORTS) {
                    self.core
                        .set_viewport(peer_id, &viewport.stream_id, viewport.height);
                }
            }
            SignalKind::ReceiveSettings(settings) => {
                self.core.set_audio_only(peer_id, settings.audio_only);
            }
            SignalKind::Chat(message) => {
                if let Err(error) = self.core.chat(now, peer_id, &message.text) {
                    self.signal(peer_id, v1::Signal::error("chat", error.to_string()));
                }
                self.apply_core_outputs(now);
            }
            SignalKind::Welcome(_)
            | SignalKind::ParticipantJoined(_)
            | SignalKind::ParticipantLeft(_)
            | SignalKind::PublishLayers(_)
            | SignalKind::VideoState(_)
            | SignalKind::DominantSpeaker(_)
            | SignalKind::Error(_) => {
                self.signal(
                    peer_id,
                    v1::Signal::error("bad-message", "clients cannot send this signal"),
                );
            }
        }
    }

    /// Ends a participant's session and frees everything that belonged to it. `report` tells
    /// the control plane, unless it asked for the close itself.
    fn close_peer(
        &mut self,
        peer_id: PeerId,
        reason: LeaveReason,
        report: Option<v1::CloseReason>,
        detail: &str,
    ) {
        let Some(mut peer) = self.peers.remove(&peer_id) else {
            return;
        };
        self.sessions.remove(&peer.session_id);
        self.demux.remove_peer(peer_id, &peer.ufrag);
        self.core.leave(peer_id, reason);
        if let Err(error) = peer.pc.close() {
            debug!(%error, "closing a connection");
        }
        if let Some(reason) = report {
            self.report(Report::Closed {
                session_id: peer.session_id.clone(),
                reason,
                detail: detail.to_owned(),
            });
        }
        self.closing.push(peer);
        self.apply_core_outputs(Instant::now());
    }

    // --------------------------------------------------------------------------------------
    // Media and timers
    // --------------------------------------------------------------------------------------

    fn on_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.traffic.packets_in += 1;
        self.traffic.bytes_in += datagram.len() as u64;
        let Some(peer_id) = self.demux.route(from, datagram) else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        let message = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.announced,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(datagram),
        };
        if let Err(error) = peer.pc.handle_read(message) {
            debug!(%error, "datagram refused");
        }
        self.drive(now, peer_id);
    }

    fn on_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, peer_id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(peer) = self.peers.get_mut(&peer_id) else {
                continue;
            };
            if peer.deadline != Some(at) {
                continue;
            }
            peer.deadline = None;
            if let Err(error) = peer.pc.handle_timeout(now) {
                debug!(%error, "connection timer failed");
            }
            self.drive(now, peer_id);
        }
        if self.core.poll_timeout().is_some_and(|at| at <= now) {
            for (peer_id, peer) in &self.peers {
                self.core.set_estimate(*peer_id, peer.estimate.get());
            }
            self.core.handle_timeout(now);
            for (peer_id, peer) in &mut self.peers {
                peer.estimate
                    .set_wanted(self.core.wanted_estimate(*peer_id));
                peer.estimate
                    .set_floor(self.core.catch_up_estimate(*peer_id));
                let Some(request) = peer.estimate.take_probe_request() else {
                    continue;
                };
                let sendable = |ssrc| peer.can_send_on(ssrc);
                match self.core.probe_padding(*peer_id, request.packets, sendable) {
                    Some((ssrc, first, timestamp)) => {
                        if let Err(error) =
                            peer.write_padding(now, ssrc, first, request.packets, timestamp)
                        {
                            debug!(%error, "probe padding failed");
                        }
                        self.touched.push(*peer_id);
                    }
                    None => peer.estimate.probe_unavailable(),
                }
            }
            self.apply_core_outputs(now);
        }
    }

    /// Polls a connection's events and incoming media and acts on them.
    fn drive(&mut self, now: Instant, peer_id: PeerId) {
        self.touch(peer_id);
        let mut lost = false;
        let mut packets = Vec::new();
        let mut keyframe_requests = Vec::new();
        {
            let Some(peer) = self.peers.get_mut(&peer_id) else {
                return;
            };
            while let Some(event) = peer.pc.poll_event() {
                match event {
                    RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                        debug!(peer = peer_id.0, %state, "connection state");
                        match state {
                            RTCPeerConnectionState::Connected => {
                                peer.connected = true;
                                for ssrc in peer.negotiated_down_tracks() {
                                    self.core.down_track_ready(now, peer_id, ssrc);
                                }
                            }
                            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                                lost = true;
                            }
                            _ => {}
                        }
                    }
                    RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                        peer.track_receiver(init.ssrc, init.receiver_id);
                        match peer.published_layer(init.receiver_id, init.ssrc, init.rid.as_deref())
                        {
                            Some(layer) => {
                                self.core.publish(now, peer_id, layer);
                            }
                            None => debug!(
                                ssrc = init.ssrc,
                                "ignoring a track in an unknown codec or layer"
                            ),
                        }
                    }
                    _ => {}
                }
            }
            while let Some(TaggedRTCMessage { message, .. }) = peer.pc.poll_read() {
                match message {
                    RTCMessage::RtpPacket(_, packet) => packets.push(packet),
                    RTCMessage::RtcpPacket(_, rtcp) => {
                        keyframe_requests.extend(media::keyframe_request_ssrcs(&rtcp));
                    }
                    _ => {}
                }
            }
        }
        for ssrc in keyframe_requests {
            self.core.keyframe_requested(now, peer_id, ssrc);
        }
        if !packets.is_empty() {
            self.forward(now, peer_id, packets);
        }
        self.apply_core_outputs(now);
        if lost {
            self.close_peer(
                peer_id,
                LeaveReason::ConnectionLost,
                Some(v1::CloseReason::ConnectionLost),
                "media connection failed",
            );
        }
    }

    /// The hot path: each packet of a publisher to every subscriber the core names.
    fn forward(&mut self, now: Instant, publisher: PeerId, packets: Vec<rtc::rtp::Packet>) {
        let audio_level = self.peers.get(&publisher).and_then(Peer::audio_level_in);
        let Self {
            core,
            peers,
            fanout,
            touched,
            ..
        } = self;
        for packet in packets {
            let header = &packet.header;
            let Some(forwarded) = core.forward(
                now,
                publisher,
                header.ssrc,
                header.sequence_number,
                header.timestamp,
                &packet.payload,
                fanout,
            ) else {
                continue;
            };
            if forwarded.audio
                && let Some(id) = audio_level
                && let Some(level) = header.get_extension(id).and_then(|v| v.first().copied())
            {
                core.audio_level(now, publisher, level & 0x7f);
            }
            for (subscriber, rewrite) in fanout.iter() {
                let Some(peer) = peers.get_mut(subscriber) else {
                    continue;
                };
                let rewritten;
                let payload = match forwarded.vp8 {
                    Some(descriptor)
                        if rewrite.picture_id != forwarded.picture_id
                            || rewrite.tl0_picture_index != forwarded.tl0_picture_index =>
                    {
                        let mut copy = BytesMut::from(&packet.payload[..]);
                        vp8::rewrite(
                            &mut copy,
                            &descriptor,
                            rewrite.picture_id,
                            rewrite.tl0_picture_index,
                        );
                        rewritten = copy.freeze();
                        &rewritten
                    }
                    _ => &packet.payload,
                };
                if let Err(error) = peer.write_forwarded(now, header, audio_level, rewrite, payload)
                {
                    debug!(%error, "forwarding failed");
                }
                touched.push(*subscriber);
            }
        }
    }

    fn apply_core_outputs(&mut self, now: Instant) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Roster { to, event } => self.signal(to, signal::roster(event)),
                Output::AddDownTrack(track) => {
                    let subscriber = track.subscriber;
                    if let Some(peer) = self.peers.get_mut(&subscriber)
                        && let Err(error) = peer.add_down_track(&track)
                    {
                        warn!(%error, "could not add a down-track");
                    }
                    self.touch(subscriber);
                }
                Output::RemoveDownTrack { subscriber, ssrc } => {
                    if let Some(peer) = self.peers.get_mut(&subscriber)
                        && let Err(error) = peer.remove_down_track(ssrc)
                    {
                        warn!(%error, "could not remove a down-track");
                    }
                    self.touch(subscriber);
                }
                Output::RequestKeyframe { publisher, ssrc } => {
                    if let Some(peer) = self.peers.get_mut(&publisher)
                        && let Err(error) = peer.request_keyframe(now, ssrc)
                    {
                        debug!(%error, "could not request a keyframe");
                    }
                    self.touch(publisher);
                }
                Output::PublisherLayers {
                    publisher,
                    source,
                    active,
                } => self.signal(
                    publisher,
                    v1::Signal::new(SignalKind::PublishLayers(v1::PublishLayers {
                        source: source.as_str().to_owned(),
                        active,
                    })),
                ),
                Output::Video {
                    to,
                    stream_id,
                    state,
                } => {
                    let state = match state {
                        VideoState::Playing => v1::video_state::State::Playing,
                        VideoState::PausedForBandwidth => v1::video_state::State::PausedBandwidth,
                        VideoState::PausedForLastN => v1::video_state::State::PausedLastN,
                    };
                    self.signal(
                        to,
                        v1::Signal::new(SignalKind::VideoState(v1::VideoState {
                            stream_id,
                            state: state as i32,
                        })),
                    );
                }
                Output::DominantSpeaker { to, participant_id } => self.signal(
                    to,
                    v1::Signal::new(SignalKind::DominantSpeaker(v1::DominantSpeaker {
                        participant_id,
                    })),
                ),
                Output::Chat { to, message } => self.signal(
                    to,
                    v1::Signal::new(SignalKind::Chat(v1::ChatMessage {
                        participant_id: message.from,
                        display_name: message.display_name,
                        text: message.text,
                    })),
                ),
            }
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        let stuck: Vec<(PeerId, &'static str)> = self
            .peers
            .values()
            .filter_map(|peer| {
                if peer.answer_overdue(now) {
                    Some((peer.id, "no answer to the node's offer"))
                } else if !peer.connected
                    && now.duration_since(peer.opened_at) > peer::CONNECT_TIMEOUT
                {
                    Some((peer.id, "the media connection did not come up"))
                } else {
                    None
                }
            })
            .collect();
        for (peer, detail) in stuck {
            self.close_peer(
                peer,
                LeaveReason::ConnectionLost,
                Some(v1::CloseReason::ConnectionLost),
                detail,
            );
        }
        if let Some(deadline) = self.drain_deadline {
            if now >= deadline {
                let remaining: Vec<PeerId> = self.peers.keys().copied().collect();
                for peer in remaining {
                    self.close_peer(
                        peer,
                        LeaveReason::Left,
                        Some(v1::CloseReason::RoomClosed),
                        "the media node was drained",
                    );
                }
            }
            if self.peers.is_empty() {
                self.finished = true;
            }
        }
        self.report_load(now);
    }

    fn report_load(&mut self, now: Instant) {
        let (since, before, cpu_before) = self.last_report;
        let seconds = now.duration_since(since).as_secs_f64().max(0.001);
        let rate = |after: u64, before: u64| ((after - before) as f64 / seconds) as u64;
        let cpu = process_cpu_ticks();
        // Linux reports CPU time in ticks of 1/100 s.
        let cpu_millicores = match (cpu, cpu_before) {
            (Some(after), Some(before)) => ((after - before) as f64 * 10.0 / seconds) as u32,
            _ => 0,
        };
        let traffic = self.traffic;
        self.status.set_load(
            self.core.room_count() as u32,
            self.core.participant_count() as u32,
        );
        self.report(Report::Load(v1::LoadReport {
            rooms: self.core.room_count() as u32,
            participants: self.core.participant_count() as u32,
            published_tracks: self.core.publication_count() as u32,
            forwarded_tracks: self.core.down_track_count() as u32,
            packets_in_per_second: rate(traffic.packets_in, before.packets_in),
            packets_out_per_second: rate(traffic.packets_out, before.packets_out),
            bits_in_per_second: rate(traffic.bytes_in, before.bytes_in) * 8,
            bits_out_per_second: rate(traffic.bytes_out, before.bytes_out) * 8,
            cpu_millicores,
            room_loads: self
                .core
                .rooms()
                .filter_map(|(room, participants)| {
                    let (tenant, name) = room.split_once('/')?;
                    Some(v1::RoomLoad {
                        room: Some(v1::RoomRef {
                            tenant: tenant.to_owned(),
                            name: name.to_owned(),
                        }),
                        participants: participants as u32,
                    })
                })
                .collect(),
        }));
        self.last_report = (now, traffic, cpu);
    }

    /// Creates due offers, sends what touched connections want to send, and schedules their
    /// next timeouts.
    async fn flush(&mut self) {
        let now = Instant::now();
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        for peer_id in &touched {
            let offer = match self.peers.get_mut(peer_id) {
                Some(peer) => peer.offer_if_needed(now),
                None => continue,
            };
            match offer {
                Ok(Some(sdp)) => self.signal(
                    *peer_id,
                    v1::Signal::new(SignalKind::Offer(v1::SessionDescription {
                        sdp,
                        ..Default::default()
                    })),
                ),
                Ok(None) => {}
                Err(error) => warn!(%error, "could not create an offer"),
            }
        }
        for peer_id in &touched {
            let Some(peer) = self.peers.get_mut(peer_id) else {
                continue;
            };
            while let Some(datagram) = peer.pc.poll_write() {
                self.traffic.packets_out += 1;
                self.traffic.bytes_out += datagram.message.len() as u64;
                self.outbox
                    .push((datagram.message, datagram.transport.peer_addr));
            }
            let deadline = peer
                .pc
                .poll_timeout()
                .map(|at| at.max(now + Duration::from_millis(1)));
            if deadline != peer.deadline {
                peer.deadline = deadline;
                if let Some(at) = deadline {
                    self.timers.push(Reverse((at, *peer_id)));
                }
            }
        }
        self.touched = touched;
        self.touched.clear();
        self.send_outbox().await;
        for mut peer in std::mem::take(&mut self.closing) {
            while let Some(datagram) = peer.pc.poll_write() {
                let _ = self
                    .socket
                    .send_to(&datagram.message, datagram.transport.peer_addr)
                    .await;
            }
        }
    }

    /// Sends the datagrams of this flush, [`batch::BATCH`] per system call. A datagram the
    /// kernel refuses (an unreachable address) is dropped, and the rest go on.
    async fn send_outbox(&mut self) {
        let mut sent = 0;
        while sent < self.outbox.len() {
            let pending = self.outbox[sent..]
                .iter()
                .map(|(datagram, to)| (&datagram[..], *to));
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
        self.outbox.clear();
    }

    /// Sessions on the node, for tests: (sessions, routing entries).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }
}

/// The client's error code for a refused signal.
fn error_code(error: &Error) -> &'static str {
    match error {
        Error::BadSdp(_) => "bad-sdp",
        Error::Negotiation(_) => "negotiation",
        _ => "unavailable",
    }
}
