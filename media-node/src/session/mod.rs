//! One participant's session on the node: an `rtc` peer connection (Sans-I/O) and what the node
//! keeps beside it: the negotiation state, its down-tracks, and the SSRCs it publishes.
//!
//! - [`setup`]: what every connection negotiates (codecs, feedback, header extensions) and its
//!   interceptor chain;
//! - [`interceptors`]: the node's own interceptors in that chain;
//! - [`retransmission`]: the one of them that answers subscribers' NACKs;
//! - `sdp`: what the node reads from a client's offer (its simulcast layers) and changes in the
//!   descriptions it sends (no RTX where it receives).
//!
//! Negotiation follows one rule that avoids glare: the client offers once, for what it sends;
//! from then on only the node offers, one offer at a time, whenever the set of down-tracks has
//! changed.

pub mod interceptors;
pub mod retransmission;
mod sdp;
pub mod setup;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::network_type::NetworkType;
use rtc::ice::tcp_type::TcpType;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{
    RTCRtpReceiverId, RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverId,
    RTCRtpTransceiverInit,
};
use rtc::sansio::Protocol;
use rtc::sdp::extmap::AUDIO_LEVEL_URI;
use rustc_hash::FxHashMap;

use self::interceptors::Arrivals;
use self::retransmission::Repairs;
use self::sdp::{offered_rids, without_rtx_where_receiving};
use self::setup::{media_setup, rtp_codec};
use crate::congestion::EstimateCell;
use crate::congestion::probe::{PADDING_EXTENSION_ID, PADDING_FILL};
use crate::core::{
    Codec, DownTrack, MediaKind, OfferedTrack, PeerId, PublishedLayer, Rewrite, Source,
};
use crate::error::{Error, Result};
use crate::node::gate::SessionGate;

/// Every byte value, so that a one-byte header extension is written without an allocation.
static BYTE_VALUES: [u8; 256] = {
    let mut values = [0u8; 256];
    let mut index = 0;
    while index < 256 {
        values[index] = index as u8;
        index += 1;
    }
    values
};

/// The most media sections a client may offer: audio, camera, and room for a screen share.
pub const MAX_OFFERED_MEDIA: usize = 4;
/// How long the node waits for the answer to one of its offers.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a connection may take to come up after the client's offer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The most simulcast layers a track may have.
pub const MAX_LAYERS: usize = 3;

/// Where a connection stands in offer/answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Negotiation {
    /// Waiting for the client's first offer.
    AwaitingOffer,
    /// Nothing in flight.
    Stable,
    /// The node sent an offer and waits for the answer.
    OfferSent {
        /// When it was sent.
        at: Instant,
    },
}

/// One down-track on this connection.
#[derive(Debug)]
struct DownSender {
    sender: RTCRtpSenderId,
    kind: MediaKind,
    codec: Codec,
    /// The payload type negotiated on this leg, once the answer is in.
    payload_type: Option<u8>,
    /// Included in an offer that was answered.
    negotiated: bool,
    /// Included in the offer in flight.
    in_offer: bool,
}

/// A participant's session: its connection and what the node keeps beside it.
pub struct Session {
    /// The core's id of this participant.
    pub id: PeerId,
    /// The control plane's session id.
    pub session_id: String,
    /// The local ICE username fragment, the demultiplexing key.
    pub ufrag: String,
    /// The `rtc` connection.
    pub pc: RTCPeerConnection,
    /// Offer/answer state.
    pub negotiation: Negotiation,
    /// Down-tracks were added or removed since the last offer.
    pub needs_offer: bool,
    /// DTLS is up and media can flow.
    pub connected: bool,
    /// When the session was opened.
    pub opened_at: Instant,
    /// The next timeout the connection asked for, as scheduled.
    pub deadline: Option<Instant>,
    down: FxHashMap<u32, DownSender>,
    /// Published SSRC -> receiver, for keyframe requests.
    receivers: FxHashMap<u32, RTCRtpReceiverId>,
    /// The audio-level extension id the client sends with, and the one it receives with.
    audio_level_in: Option<u8>,
    audio_level_out: Option<u8>,
    /// What each media section of the client's offer carries, by mid.
    sources: HashMap<String, Source>,
    /// The simulcast rids each media section of the client's offer sends, lowest first.
    rids: HashMap<String, Vec<String>>,
    /// The downlink estimate of this connection.
    pub estimate: EstimateCell,
    /// How many packets arrived through SRTP: authenticated.
    pub arrivals: Arrivals,
    /// What the connection's NACK responder sent again, and what it no longer had.
    pub repairs: Repairs,
    /// What the media port's gate knows of this client: its SSRCs, its budgets.
    pub gate: SessionGate,
    /// How often the session was resumed: only a ticket of this generation resumes it.
    pub resume_generation: u64,
    /// What the node's metrics last read of this connection's line.
    pub line_seen: crate::node::line::LineReading,
}

/// Reads the sources a client named for its media sections; unknown names are refused.
fn parse_sources(sources: &HashMap<String, String>) -> Result<HashMap<String, Source>> {
    sources
        .iter()
        .map(|(mid, source)| {
            let source = match source.as_str() {
                "microphone" => Source::Microphone,
                "camera" => Source::Camera,
                "screen" => Source::Screen,
                other => {
                    return Err(Error::BadSdp(format!(
                        "unknown source {other:?} for media section {mid:?}"
                    )));
                }
            };
            Ok((mid.clone(), source))
        })
        .collect()
}

/// Random printable text for ICE credentials (ice-chars are alphanumerics, '+' and '/').
fn random_ice_text(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    treffpunkt_proto::random::text(len, ALPHABET)
}

/// The node's host candidate at `address`: UDP, or with `tcp_type` passive a TCP candidate
/// that browsers connect to (RFC 6544).
fn host_candidate(address: SocketAddr, tcp_type: TcpType) -> Result<RTCIceCandidateInit> {
    let network = if tcp_type == TcpType::Unspecified {
        "udp"
    } else {
        "tcp"
    };
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: network.to_owned(),
            address: address.ip().to_string(),
            port: address.port(),
            component: 1,
            ..Default::default()
        },
        tcp_type,
    }
    .new_candidate_host()?;
    Ok(RTCIceCandidate::from(&candidate).to_json()?)
}

/// Runs `f`, turning a panic inside `rtc` (which must not happen, but would take every call
/// on the node with it) into an error for this one connection.
fn guarded<T>(what: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or(Err(Error::Internal(what)))
}

impl Session {
    /// A new connection, ICE-lite, answering DTLS as server, with the node's host candidate
    /// at `announced` and, when the node takes ICE-TCP, a passive TCP candidate at
    /// `announced_tcp`.
    pub fn new(
        id: PeerId,
        session_id: String,
        announced: SocketAddr,
        announced_tcp: Option<SocketAddr>,
        now: Instant,
    ) -> Result<Self> {
        let ufrag = random_ice_text(16);
        let password = random_ice_text(32);
        let mut networks = vec![if announced.is_ipv4() {
            NetworkType::Udp4
        } else {
            NetworkType::Udp6
        }];
        if let Some(tcp) = announced_tcp {
            networks.push(if tcp.is_ipv4() {
                NetworkType::Tcp4
            } else {
                NetworkType::Tcp6
            });
        }
        let settings = SettingEngineBuilder::new()
            .with_lite(true)
            .with_ice_credentials(ufrag.clone(), password)
            .with_answering_dtls_role(RTCDtlsRole::Server)
            .with_multicast_dns_mode(MulticastDnsMode::Disabled)
            .with_network_types(networks)
            .with_srtp_replay_protection_window(setup::SRTP_REPLAY_WINDOW)
            .with_srtp_protection_profiles(setup::SRTP_PROFILES.to_vec())
            .build();
        let estimate = EstimateCell::new();
        let arrivals = Arrivals::default();
        let repairs = Repairs::default();
        let (engine, registry) = media_setup(estimate.clone(), arrivals.clone(), repairs.clone())?;
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(settings)
            .with_media_engine(engine)
            .with_interceptor_registry(registry)
            .build(now)?;
        pc.add_local_candidate(host_candidate(announced, TcpType::Unspecified)?)?;
        if let Some(tcp) = announced_tcp {
            pc.add_local_candidate(host_candidate(tcp, TcpType::Passive)?)?;
        }
        Ok(Self {
            id,
            session_id,
            ufrag,
            pc,
            negotiation: Negotiation::AwaitingOffer,
            needs_offer: false,
            connected: false,
            opened_at: now,
            deadline: None,
            down: FxHashMap::default(),
            receivers: FxHashMap::default(),
            audio_level_in: None,
            audio_level_out: None,
            sources: HashMap::new(),
            rids: HashMap::new(),
            estimate,
            arrivals,
            repairs,
            gate: SessionGate::default(),
            resume_generation: 0,
            line_seen: Default::default(),
        })
    }

    /// Answers the client's offer, which names what its media sections carry (`sources`, by
    /// mid). Offers are accepted only when nothing else is in flight.
    pub fn answer_offer(
        &mut self,
        now: Instant,
        sdp: String,
        sources: &HashMap<String, String>,
    ) -> Result<String> {
        if matches!(self.negotiation, Negotiation::OfferSent { .. }) {
            return Err(Error::Negotiation(
                "an offer from the node is waiting for your answer",
            ));
        }
        let media_sections = sdp.lines().filter(|line| line.starts_with("m=")).count();
        if media_sections > MAX_OFFERED_MEDIA + self.down.len() {
            return Err(Error::BadSdp(format!(
                "too many media sections ({media_sections})"
            )));
        }
        if sources.len() > MAX_OFFERED_MEDIA {
            return Err(Error::BadSdp("too many sources".to_owned()));
        }
        let parsed_sources = parse_sources(sources)?;
        let rids = offered_rids(&sdp);
        if rids.values().any(|rids| rids.len() > MAX_LAYERS) {
            return Err(Error::BadSdp(format!(
                "more than {MAX_LAYERS} simulcast layers"
            )));
        }
        let pc = &mut self.pc;
        let answer = guarded("setting a remote offer", || {
            let offer = RTCSessionDescription::offer(sdp).map_err(Error::bad_sdp)?;
            pc.set_remote_description(now, offer)
                .map_err(Error::bad_sdp)?;
            let answer = pc.create_answer(None)?;
            pc.set_local_description(now, answer.clone())?;
            Ok(without_rtx_where_receiving(&answer.sdp))
        })?;
        self.negotiation = Negotiation::Stable;
        self.sources = parsed_sources;
        self.rids = rids;
        self.refresh_extension_ids();
        Ok(answer)
    }

    /// The tracks the client's last offer says it sends from its microphone and camera, to
    /// announce before their first packet (see [`crate::core::Core::announce`]). A screen's
    /// section is left out: browsers offer it before anything is shared, and it is published
    /// when sharing starts.
    pub fn offered_tracks(&mut self) -> Vec<OfferedTrack> {
        let mut tracks = Vec::new();
        let ids: Vec<RTCRtpTransceiverId> = self.pc.get_transceivers().collect();
        for id in ids {
            let Some(transceiver) = self.pc.rtp_transceiver(id) else {
                continue;
            };
            let (Some(mid), Some(receiver)) = (transceiver.mid().clone(), transceiver.receiver())
            else {
                continue;
            };
            if !transceiver.direction().has_recv() {
                continue;
            }
            let Some(source) = self.sources.get(&mid).copied() else {
                continue;
            };
            let Some(mut receiver) = self.pc.rtp_receiver(receiver) else {
                continue;
            };
            let codec = receiver
                .get_parameters()
                .rtp_parameters
                .codecs
                .iter()
                .find_map(|codec| Codec::from_mime(&codec.rtp_codec.mime_type));
            let kind = match source {
                Source::Microphone => MediaKind::Audio,
                Source::Camera => MediaKind::Video,
                Source::Screen => continue,
            };
            let Some(codec) = codec.filter(|codec| codec.kind() == kind) else {
                continue;
            };
            tracks.push(OfferedTrack {
                track: id as u64,
                layer_count: self.rids.get(&mid).map_or(1, Vec::len).max(1),
                codec,
                source,
            });
        }
        tracks
    }

    /// Whether an offer is due: down-tracks changed and nothing is in flight.
    pub fn offer_due(&self) -> bool {
        self.needs_offer && self.negotiation == Negotiation::Stable
    }

    /// Whether no down-track of this connection is negotiated yet: a joiner's first offer of the
    /// others' tracks, which opens every pair it is part of at once.
    pub fn receives_nothing_yet(&self) -> bool {
        !self.down.values().any(|down| down.negotiated)
    }

    /// Creates the node's offer if one is due: down-tracks changed and nothing is in flight.
    pub fn offer_if_needed(&mut self, now: Instant) -> Result<Option<String>> {
        if !self.offer_due() {
            return Ok(None);
        }
        let pc = &mut self.pc;
        let offer = guarded("creating an offer", || {
            let offer = pc.create_offer(None)?;
            pc.set_local_description(now, offer.clone())?;
            Ok(without_rtx_where_receiving(&offer.sdp))
        })?;
        for down in self.down.values_mut() {
            down.in_offer = true;
        }
        self.needs_offer = false;
        self.negotiation = Negotiation::OfferSent { at: now };
        Ok(Some(offer))
    }

    /// Applies the client's answer to the node's offer. Returns the down-tracks that became
    /// negotiated.
    pub fn apply_answer(&mut self, now: Instant, sdp: String) -> Result<Vec<u32>> {
        if !matches!(self.negotiation, Negotiation::OfferSent { .. }) {
            return Err(Error::Negotiation("there is no offer to answer"));
        }
        let pc = &mut self.pc;
        guarded("setting a remote answer", || {
            let answer = RTCSessionDescription::answer(sdp).map_err(Error::bad_sdp)?;
            pc.set_remote_description(now, answer)
                .map_err(Error::bad_sdp)?;
            Ok(())
        })?;
        self.negotiation = Negotiation::Stable;
        self.refresh_extension_ids();
        let mut ready = Vec::new();
        for (ssrc, down) in &mut self.down {
            if down.in_offer && !down.negotiated {
                down.negotiated = true;
                down.payload_type = self.pc.rtp_sender(down.sender).and_then(|mut sender| {
                    let mime = rtp_codec(down.codec).mime_type;
                    sender
                        .get_parameters()
                        .rtp_parameters
                        .codecs
                        .iter()
                        .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(&mime))
                        .map(|c| c.payload_type)
                });
                ready.push(*ssrc);
            }
        }
        Ok(ready)
    }

    /// Whether an offer of the node has waited too long for its answer.
    pub fn answer_overdue(&self, now: Instant) -> bool {
        matches!(self.negotiation, Negotiation::OfferSent { at } if now.duration_since(at) > ANSWER_TIMEOUT)
    }

    /// The down-tracks that are negotiated, for when the connection comes up.
    pub fn negotiated_down_tracks(&self) -> Vec<u32> {
        self.down
            .iter()
            .filter(|(_, down)| down.negotiated)
            .map(|(ssrc, _)| *ssrc)
            .collect()
    }

    fn refresh_extension_ids(&mut self) {
        let receivers: Vec<RTCRtpReceiverId> = self.pc.get_receivers().collect();
        self.audio_level_in = receivers.into_iter().find_map(|id| {
            let mut receiver = self.pc.rtp_receiver(id)?;
            if receiver.track().kind() != RtpCodecKind::Audio {
                return None;
            }
            extension_id(&receiver.get_parameters().rtp_parameters.header_extensions)
        });
        let senders: Vec<RTCRtpSenderId> = self.pc.get_senders().collect();
        self.audio_level_out = senders.into_iter().find_map(|id| {
            let mut sender = self.pc.rtp_sender(id)?;
            if sender.track().kind() != RtpCodecKind::Audio {
                return None;
            }
            extension_id(&sender.get_parameters().rtp_parameters.header_extensions)
        });
    }

    /// Adds a down-track: a send-only transceiver carrying another participant's track.
    pub fn add_down_track(&mut self, track: &DownTrack) -> Result<()> {
        let kind = match track.kind {
            MediaKind::Audio => RtpCodecKind::Audio,
            MediaKind::Video => RtpCodecKind::Video,
        };
        let media_track = MediaStreamTrack::new(
            track.stream_id.clone(),
            track.track_id.clone(),
            track.track_id.clone(),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(track.ssrc),
                    ..Default::default()
                },
                active: true,
                codec: rtp_codec(track.codec),
                ..Default::default()
            }],
        );
        let transceiver = self.pc.add_transceiver_from_track(
            media_track,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                streams: vec![track.stream_id.clone()],
                send_encodings: vec![],
            }),
        )?;
        self.down.insert(
            track.ssrc,
            DownSender {
                sender: RTCRtpSenderId::from(transceiver),
                kind: track.kind,
                codec: track.codec,
                payload_type: None,
                negotiated: false,
                in_offer: false,
            },
        );
        self.needs_offer = true;
        Ok(())
    }

    /// Removes a down-track; its media section turns inactive at the next offer.
    pub fn remove_down_track(&mut self, ssrc: u32) -> Result<()> {
        if let Some(down) = self.down.remove(&ssrc) {
            self.pc.remove_track(down.sender)?;
            self.needs_offer = true;
        }
        Ok(())
    }

    /// Remembers which receiver carries a published SSRC.
    pub fn track_receiver(&mut self, ssrc: u32, receiver: RTCRtpReceiverId) {
        self.receivers.insert(ssrc, receiver);
    }

    /// What a publisher's SSRC that began to arrive is: its track, codec, source and layer.
    /// `None` for a codec the node does not forward or a rid the offer did not name.
    pub fn published_layer(
        &mut self,
        receiver: RTCRtpReceiverId,
        ssrc: u32,
        rid: Option<&str>,
    ) -> Option<PublishedLayer> {
        let track = RTCRtpTransceiverId::from(receiver);
        let mid = self
            .pc
            .rtp_transceiver(track)
            .and_then(|transceiver| transceiver.mid().clone());
        let codec = {
            let receiver = self.pc.rtp_receiver(receiver)?;
            Codec::from_mime(&receiver.track().codec(ssrc)?.mime_type)?
        };
        let source = mid
            .as_ref()
            .and_then(|mid| self.sources.get(mid))
            .copied()
            .unwrap_or(match codec.kind() {
                MediaKind::Audio => Source::Microphone,
                MediaKind::Video => Source::Camera,
            });
        let rids = mid.as_ref().and_then(|mid| self.rids.get(mid));
        let (layer, layer_count) = match (rid, rids) {
            (Some(rid), Some(rids)) => (rids.iter().position(|r| r == rid)?, rids.len()),
            (Some(_), None) => return None,
            (None, _) => (0, 1),
        };
        Some(PublishedLayer {
            track: track as u64,
            ssrc,
            layer,
            layer_count,
            codec,
            source,
        })
    }

    /// Asks the client for a keyframe on one of its SSRCs.
    pub fn request_keyframe(&mut self, now: Instant, ssrc: u32) -> Result<()> {
        let Some(receiver) = self.receivers.get(&ssrc).copied() else {
            return Ok(());
        };
        if let Some(mut receiver) = self.pc.rtp_receiver(receiver) {
            receiver.write_rtcp(
                now,
                vec![Box::new(PictureLossIndication {
                    sender_ssrc: 1,
                    media_ssrc: ssrc,
                })],
            )?;
        }
        Ok(())
    }

    /// Sends one forwarded packet on a down-track: the header rewritten as the core decided,
    /// the payload type and header extensions as negotiated on this leg. The payload is shared,
    /// not copied.
    pub fn write_forwarded(
        &mut self,
        now: Instant,
        marker: bool,
        audio_level: Option<u8>,
        rewrite: &Rewrite,
        payload: &Bytes,
    ) -> Result<()> {
        let Some((payload_type, sender, kind)) = self.negotiated(rewrite.ssrc) else {
            return Ok(());
        };
        let mut header = rtp::Header {
            version: 2,
            marker,
            payload_type,
            sequence_number: rewrite.sequence_number,
            timestamp: rewrite.timestamp,
            ssrc: rewrite.ssrc,
            ..Default::default()
        };
        // Only the audio level travels on; mid and transport-wide sequence numbers belong to
        // each leg (the interceptors write this leg's own).
        if kind == MediaKind::Audio
            && let (Some(level), Some(out_id)) = (audio_level, self.audio_level_out)
        {
            let level = usize::from(level);
            header.set_extension(out_id, Bytes::from_static(&BYTE_VALUES[level..=level]))?;
        }
        self.write_down(
            now,
            sender,
            rtp::Packet {
                header,
                payload: payload.clone(),
            },
        )
    }

    /// Hands a packet for a negotiated down-track to the connection, while its sender still
    /// sends. `RTCRtpSender::write_rtp` would check again, for every packet, what negotiation
    /// settled once (the SSRC is the down-track's, the payload type and the extension ids are
    /// the leg's negotiated ones) and allocate the track's id for a message that does not read
    /// it; the connection's own write is the same path after those checks.
    fn write_down(
        &mut self,
        now: Instant,
        sender: RTCRtpSenderId,
        packet: rtp::Packet,
    ) -> Result<()> {
        if self.pc.rtp_sender(sender).is_none() {
            return Ok(());
        }
        self.pc.handle_write(TaggedRTCMessage {
            now,
            message: RTCMessage::RtpPacket(String::new(), packet),
        })?;
        Ok(())
    }

    /// The payload type, sender and kind of the down-track `ssrc`, once it is negotiated.
    fn negotiated(&self, ssrc: u32) -> Option<(u8, RTCRtpSenderId, MediaKind)> {
        let down = self.down.get(&ssrc)?;
        Some((down.payload_type?, down.sender, down.kind))
    }

    /// Whether the down-track `ssrc` is negotiated, so that packets can be sent on it.
    pub fn can_send_on(&self, ssrc: u32) -> bool {
        self.negotiated(ssrc).is_some()
    }

    /// Sends `count` padding-only packets on the video down-track `ssrc`, numbered from
    /// `first`, each with `fill` bytes of filler, to probe the subscriber's line; the pacer
    /// spreads them out.
    pub fn write_padding(
        &mut self,
        now: Instant,
        ssrc: u32,
        first: u16,
        count: u16,
        timestamp: u32,
        fill: usize,
    ) -> Result<()> {
        let Some((payload_type, sender, _)) = self.negotiated(ssrc) else {
            return Ok(());
        };
        for index in 0..count {
            // Marked as padded with nothing before the padding: the receiver reads an empty
            // payload, which is how padding-only packets look.
            let mut header = rtp::Header {
                version: 2,
                padding: true,
                payload_type,
                sequence_number: first.wrapping_add(index),
                timestamp,
                ssrc,
                ..Default::default()
            };
            // The filler that gives the packet its size (see `PADDING_FILL`): an extension id
            // of the node's own that no receiver reads.
            if fill > 0 {
                let filler = Bytes::from_static(&[0; PADDING_FILL]);
                header
                    .set_extension(PADDING_EXTENSION_ID, filler.slice(..fill.min(PADDING_FILL)))?;
            }
            let packet = rtp::Packet {
                header,
                payload: Bytes::new(),
            };
            self.write_down(now, sender, packet)?;
        }
        Ok(())
    }

    /// The audio-level extension id this client sends with.
    pub fn audio_level_in(&self) -> Option<u8> {
        self.audio_level_in
    }
}

fn extension_id(
    extensions: &[rtc::rtp_transceiver::rtp_sender::RTCRtpHeaderExtensionParameters],
) -> Option<u8> {
    extensions
        .iter()
        .find(|extension| extension.uri == AUDIO_LEVEL_URI)
        .and_then(|extension| u8::try_from(extension.id).ok())
}
