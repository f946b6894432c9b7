//! Media driving: datagrams and timers into the sessions' connections, what comes out of them
//! (connection states, new tracks, media, keyframe requests) into the core, and the hot path
//! that forwards each packet to the subscribers the core names.

use std::cmp::Reverse;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tracing::debug;
use treffpunkt_proto::v1;

use super::Node;
use super::gate::{self, Drop, Verdict};
use super::relay::{Media, RELAY_MARKER};
use crate::core::{LeaveReason, PeerId, vp8};
use crate::session::{Session, interceptors::keyframe_request_ssrcs};

/// What one session's connection produced in one turn.
#[derive(Default)]
struct Produced {
    packets: Vec<rtc::rtp::Packet>,
    keyframe_requests: Vec<u32>,
    lost: bool,
}

impl Node {
    /// A datagram from `from` that arrived at `arrived`: through the gate (see [`gate`]), then
    /// to its session's connection, whose output is driven at once. Returns whether it belonged
    /// to a session (it may still have been dropped over its session's budget).
    pub(super) fn on_datagram(
        &mut self,
        now: Instant,
        arrived: Instant,
        from: SocketAddr,
        protocol: TransportProtocol,
        datagram: &[u8],
    ) -> bool {
        self.traffic.packets_in += 1;
        self.traffic.bytes_in += datagram.len() as u64;
        if protocol == TransportProtocol::UDP && datagram.first() == Some(&RELAY_MARKER) {
            if let Err(reason) = self.on_relay_datagram(now, from, datagram) {
                debug!(?reason, %from, "relayed datagram dropped");
                self.drops.count(Drop::Relay, from);
            }
            return true;
        }
        let header = match gate::inspect(datagram) {
            Ok(header) => header,
            Err(reason) if self.demux.knows(from) => {
                self.drops.count_participants(reason);
                return false;
            }
            Err(reason) => {
                self.drops.count(reason, from);
                return false;
            }
        };
        let Some((peer, session)) = self
            .demux
            .route(from, datagram)
            .and_then(|peer| Some((peer, self.sessions.get_mut(&peer)?)))
        else {
            self.drops.count_unrouted(now, from);
            return false;
        };
        let verdict = session.gate.admit(now, header, session.connected);
        if verdict == Verdict::OverBudget {
            self.drops.count_participants(Drop::OverBudget);
            return true;
        }
        let message = TaggedBytesMut {
            now: arrived,
            transport: TransportContext {
                local_addr: match (protocol, self.announced_tcp) {
                    (TransportProtocol::TCP, Some(tcp)) => tcp,
                    _ => self.announced,
                },
                peer_addr: from,
                ecn: None,
                transport_protocol: protocol,
            },
            message: BytesMut::from(datagram),
        };
        let arrived = session.arrivals.count();
        if let Err(error) = session.pc.handle_read(message) {
            debug!(%error, "datagram refused");
        }
        // RTP and RTCP that failed authentication leave no trace but this: nothing arrived.
        if let Some(ssrc) = header.ssrc {
            if session.arrivals.count() == arrived {
                self.drops.count_participants(Drop::Refused);
            } else if verdict == Verdict::Probation {
                session.gate.learn(ssrc);
            }
        }
        self.drive(now, peer);
        true
    }

    /// Hands every session whose connection's timer is due its timeout.
    pub(super) fn on_session_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, peer))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(session) = self.sessions.get_mut(&peer) else {
                continue;
            };
            if session.deadline != Some(at) {
                continue;
            }
            session.deadline = None;
            if let Err(error) = session.pc.handle_timeout(now) {
                debug!(%error, "connection timer failed");
            }
            self.drive(now, peer);
        }
    }

    /// The core's tick: it reads every subscriber's downlink estimate first, and afterwards each
    /// estimator learns how far the core would like its estimate to grow, and sends the line
    /// probe it asks for as padding on one of the subscriber's video down-tracks.
    pub(super) fn on_core_timeout(&mut self, now: Instant) {
        for (peer, session) in &self.sessions {
            self.core.set_estimate(*peer, session.estimate.get());
        }
        self.core.handle_timeout(now);
        for (peer, session) in &mut self.sessions {
            session
                .estimate
                .set_wanted(self.core.wanted_estimate(*peer));
            session
                .estimate
                .set_floor(self.core.catch_up_estimate(*peer));
            let Some(request) = session.estimate.take_probe_request() else {
                continue;
            };
            let sendable = |ssrc| session.can_send_on(ssrc);
            match self
                .core
                .probe_padding(now, *peer, request.packets, sendable)
            {
                Some((ssrc, first, timestamp)) => {
                    self.traffic.probes += 1;
                    if let Err(error) = session.write_padding(
                        now,
                        ssrc,
                        first,
                        request.packets,
                        timestamp,
                        request.fill,
                    ) {
                        debug!(%error, "probe padding failed");
                    }
                    self.touched.push(*peer);
                }
                None => session.estimate.probe_unavailable(),
            }
        }
        self.apply_core_outputs(now);
    }

    /// Polls a session's connection for events and incoming media and acts on them.
    pub(super) fn drive(&mut self, now: Instant, peer: PeerId) {
        self.touch(peer);
        let Some(session) = self.sessions.get_mut(&peer) else {
            return;
        };
        let produced = poll_connection(session, &mut self.core, now, peer);
        for ssrc in produced.keyframe_requests {
            self.core.keyframe_requested(now, peer, ssrc);
        }
        if !produced.packets.is_empty() {
            self.forward(now, peer, produced.packets);
        }
        self.apply_core_outputs(now);
        if produced.lost {
            let reason = Some(v1::CloseReason::ConnectionLost);
            let detail = "media connection failed";
            self.close_session(now, peer, LeaveReason::ConnectionLost, reason, detail);
        }
    }

    /// The hot path: each packet of a publisher to every subscriber the core names.
    fn forward(&mut self, now: Instant, publisher: PeerId, packets: Vec<rtc::rtp::Packet>) {
        let audio_level = self
            .sessions
            .get(&publisher)
            .and_then(Session::audio_level_in);
        for packet in packets {
            let header = &packet.header;
            let level = audio_level
                .and_then(|id| header.get_extension(id))
                .and_then(|value| value.first().copied());
            let media = Media {
                ssrc: header.ssrc,
                sequence_number: header.sequence_number,
                timestamp: header.timestamp,
                marker: header.marker,
                audio_level: level,
            };
            self.forward_packet(now, publisher, &media, &packet.payload);
        }
    }

    /// One packet of a publisher, local or remote, to every subscriber the core names and to
    /// every link its room has to other nodes.
    pub(super) fn forward_packet(
        &mut self,
        now: Instant,
        publisher: PeerId,
        media: &Media,
        payload: &Bytes,
    ) {
        let Self {
            core,
            sessions,
            fanout,
            touched,
            ..
        } = self;
        let Some(forwarded) = core.forward(
            now,
            publisher,
            media.ssrc,
            media.sequence_number,
            media.timestamp,
            payload,
            fanout,
        ) else {
            return;
        };
        if forwarded.audio
            && let Some(level) = media.audio_level
        {
            core.audio_level(now, publisher, level & 0x7f);
        }
        for (subscriber, rewrite) in fanout.iter() {
            let Some(session) = sessions.get_mut(subscriber) else {
                continue;
            };
            let rewritten;
            let payload = match forwarded.vp8 {
                Some(descriptor)
                    if rewrite.picture_id != forwarded.picture_id
                        || rewrite.tl0_picture_index != forwarded.tl0_picture_index =>
                {
                    let mut copy = BytesMut::from(&payload[..]);
                    vp8::rewrite(
                        &mut copy,
                        &descriptor,
                        rewrite.picture_id,
                        rewrite.tl0_picture_index,
                    );
                    rewritten = copy.freeze();
                    &rewritten
                }
                _ => payload,
            };
            if let Err(error) =
                session.write_forwarded(now, media.marker, media.audio_level, rewrite, payload)
            {
                debug!(%error, "forwarding failed");
            }
            touched.push(*subscriber);
        }
        if forwarded.relayed {
            self.relay_media(publisher, media, payload);
        }
    }
}

/// Reads what a session's connection produced: its state changes and new tracks go to the core
/// at once; media, keyframe requests and a lost connection are returned to act on.
fn poll_connection(
    session: &mut Session,
    core: &mut crate::core::Core,
    now: Instant,
    peer: PeerId,
) -> Produced {
    let mut produced = Produced::default();
    while let Some(event) = session.pc.poll_event() {
        match event {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                debug!(peer = peer.0, %state, "connection state");
                match state {
                    RTCPeerConnectionState::Connected => {
                        session.connected = true;
                        for ssrc in session.negotiated_down_tracks() {
                            core.down_track_ready(now, peer, ssrc);
                        }
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        produced.lost = true;
                    }
                    _ => {}
                }
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                session.track_receiver(init.ssrc, init.receiver_id);
                match session.published_layer(init.receiver_id, init.ssrc, init.rid.as_deref()) {
                    Some(layer) => {
                        debug!(
                            ?peer,
                            ssrc = init.ssrc,
                            rid = ?init.rid,
                            codec = ?layer.codec,
                            layer = layer.layer,
                            layers = layer.layer_count,
                            "a track opens"
                        );
                        core.publish(now, peer, layer);
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
    while let Some(TaggedRTCMessage { message, .. }) = session.pc.poll_read() {
        match message {
            RTCMessage::RtpPacket(_, packet) => produced.packets.push(packet),
            RTCMessage::RtcpPacket(_, rtcp) => {
                produced
                    .keyframe_requests
                    .extend(keyframe_request_ssrcs(&rtcp));
            }
            _ => {}
        }
    }
    produced
}
