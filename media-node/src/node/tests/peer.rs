//! A participant for the in-memory tests: a real `rtc` peer connection on the client side,
//! driven on the test's clock, that answers the node's signals as the web client does and
//! publishes synthetic audio and (simulcast) VP8 video whose packets say which layer and index
//! they are.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::{Registry, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::sdp::extmap::{SDES_MID_URI, SDES_RTP_STREAM_ID_URI};
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use treffpunkt_proto::v1::{self, signal::Kind};

use crate::core::{Codec, vp8};
use crate::session::interceptors::{
    KEYFRAME_REQUESTS_SLOT, KeyframeRequests, RTX_UNWRAP_SLOT, RtxUnwrap, keyframe_request_ssrcs,
};
use crate::session::setup::{codec_parameters, rtp_codec, rtx_parameters};

/// The simulcast layers a camera sends: rid, picture height, bytes per frame (about 50, 100
/// and 200 kbit/s at 30 frames a second: small, so that every line in these tests carries all
/// of them and only what a subscriber shows decides its layer).
pub const LAYERS: [(&str, u16, usize); 3] = [("q", 180, 200), ("h", 360, 400), ("f", 720, 800)];
const FRAME: Duration = Duration::from_micros(33_333);
const AUDIO_PACKET: Duration = Duration::from_millis(20);
const AUDIO_BYTES: usize = 80;
/// Every synthetic payload ends with this mark, the layer and the packet's index in its stream.
const MARK: u8 = 0xa5;
const TRAILER: usize = 6;

/// What a participant sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Publish {
    /// Nothing: a listener.
    Nothing,
    /// A microphone and a camera in one layer.
    Plain,
    /// A microphone and a camera in the three [`LAYERS`].
    Simulcast,
    /// A microphone and a camera in one layer whose frames are one packet of `bytes` bytes
    /// each, `per_second` of them: the fan-out shape of the benchmarks.
    Steady { per_second: u32, bytes: usize },
}

impl Publish {
    /// How often the camera sends a frame.
    fn frame_interval(self) -> Duration {
        match self {
            Self::Steady { per_second, .. } => Duration::from_secs(1) / per_second.max(1),
            _ => FRAME,
        }
    }

    /// The size of a frame of the camera's layer `layer`.
    fn frame_bytes(self, layer: u8) -> usize {
        match self {
            Self::Steady { bytes, .. } => bytes,
            _ => LAYERS[usize::from(layer)].2,
        }
    }
}

/// One packet as a subscriber received it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival {
    /// When.
    pub at: Instant,
    /// The simulcast layer it was sent on (0 without simulcast).
    pub layer: u8,
    /// Its index in the sender's stream of that layer.
    pub index: u32,
}

/// One stream the participant sends: a microphone, or one layer of its camera.
struct Outgoing {
    ssrc: u32,
    rid: Option<&'static str>,
    layer: u8,
    sequence_number: u16,
    index: u32,
    picture_id: u16,
    keyframe_due: bool,
    active: bool,
}

/// A participant's connection and what it sent and received.
pub struct TestPeer {
    /// The control plane's id of its session.
    pub session_id: String,
    /// Its own address on the in-memory network.
    pub address: SocketAddr,
    publish: Publish,
    /// Its participant id, from the welcome.
    pub participant_id: Option<String>,
    pc: Option<RTCPeerConnection>,
    audio: Option<(RTCRtpSenderId, Outgoing)>,
    video: Option<(RTCRtpSenderId, Vec<Outgoing>)>,
    /// The mid of the camera's media section.
    video_mid: Option<String>,
    next_audio: Option<Instant>,
    next_frame: Option<Instant>,
    started: Option<Instant>,
    /// DTLS and ICE are up.
    pub connected: bool,
    /// Every signal the node sent it, in order.
    pub signals: Vec<Kind>,
    /// The media stream and kind of each track it receives, by track id.
    tracks: HashMap<String, (String, RtpCodecKind)>,
    /// What arrived, by (stream id, kind).
    pub received: HashMap<(String, RtpCodecKind), Vec<Arrival>>,
    /// Keyframe requests the node sent it.
    pub keyframe_requests: u32,
}

impl TestPeer {
    /// A participant at `address` that will publish as `publish` once welcomed.
    pub fn new(name: &str, address: SocketAddr, publish: Publish) -> Self {
        Self {
            session_id: format!("session-{name}"),
            address,
            publish,
            participant_id: None,
            pc: None,
            audio: None,
            video: None,
            video_mid: None,
            next_audio: None,
            next_frame: None,
            started: None,
            connected: false,
            signals: Vec::new(),
            tracks: HashMap::new(),
            received: HashMap::new(),
            keyframe_requests: 0,
        }
    }

    /// The packets received from `participant` of `kind`.
    pub fn from(&self, participant: &str, kind: RtpCodecKind) -> &[Arrival] {
        self.received
            .get(&(participant.to_owned(), kind))
            .map_or(&[], Vec::as_slice)
    }

    /// Handles a signal from the node; returns the signal to send back, if any.
    pub fn on_signal(&mut self, now: Instant, signal: v1::Signal) -> Option<v1::Signal> {
        let kind = signal.kind?;
        self.signals.push(kind.clone());
        match kind {
            Kind::Welcome(welcome) if !welcome.resumed => {
                self.participant_id = Some(welcome.participant_id);
                Some(self.offer(now))
            }
            Kind::Answer(answer) => {
                let pc = self.pc.as_mut()?;
                let answer = RTCSessionDescription::answer(answer.sdp).ok()?;
                pc.set_remote_description(now, answer)
                    .expect("the node's answer applies");
                None
            }
            Kind::Offer(offer) => {
                let pc = self.pc.as_mut()?;
                let offer = RTCSessionDescription::offer(offer.sdp).ok()?;
                pc.set_remote_description(now, offer)
                    .expect("the node's offer applies");
                let answer = pc.create_answer(None).expect("an answer");
                pc.set_local_description(now, answer.clone())
                    .expect("the answer applies locally");
                Some(v1::Signal::new(Kind::Answer(v1::SessionDescription {
                    sdp: answer.sdp,
                    ..Default::default()
                })))
            }
            Kind::PublishLayers(layers) if layers.source == "camera" => {
                if let Some((_, streams)) = &mut self.video {
                    for (stream, active) in streams.iter_mut().zip(layers.active) {
                        stream.keyframe_due |= active && !stream.active;
                        stream.active = active;
                    }
                }
                None
            }
            _ => None,
        }
    }

    /// Builds the connection with its tracks and returns its offer, with what each media
    /// section carries.
    fn offer(&mut self, now: Instant) -> v1::Signal {
        let mut pc = connection(now, self.address);
        let id = self.participant_id.clone().unwrap_or_default();
        if self.publish != Publish::Nothing {
            let ssrc = 1000 * u32::from(self.address.port());
            let sender = pc
                .add_track(track(
                    &id,
                    RtpCodecKind::Audio,
                    Codec::Opus,
                    &[(None, ssrc)],
                ))
                .expect("an audio track");
            self.audio = Some((sender, stream(ssrc, None, 0)));
            let layers: Vec<(Option<&'static str>, u32)> = match self.publish {
                Publish::Simulcast => LAYERS
                    .iter()
                    .enumerate()
                    .map(|(i, (rid, _, _))| (Some(*rid), ssrc + 10 + i as u32))
                    .collect(),
                _ => vec![(None, ssrc + 10)],
            };
            let sender = pc
                .add_track(track(&id, RtpCodecKind::Video, Codec::Vp8, &layers))
                .expect("a video track");
            let streams = layers
                .iter()
                .enumerate()
                .map(|(i, (rid, ssrc))| stream(*ssrc, *rid, i as u8))
                .collect();
            self.video = Some((sender, streams));
        } else {
            pc.add_transceiver_from_kind(RtpCodecKind::Audio, None)
                .expect("a receive-only section");
        }
        let offer = pc.create_offer(None).expect("an offer");
        pc.set_local_description(now, offer.clone())
            .expect("the offer applies locally");
        self.pc = Some(pc);
        let sources = sources(&offer.sdp, self.publish != Publish::Nothing);
        self.video_mid = sources
            .iter()
            .find(|(_, source)| source.as_str() == "camera")
            .map(|(mid, _)| mid.clone());
        v1::Signal::new(Kind::Offer(v1::SessionDescription {
            sdp: offer.sdp,
            sources: sources.into_iter().collect(),
        }))
    }

    /// A datagram from the network.
    pub fn datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let Some(pc) = self.pc.as_mut() else {
            return;
        };
        let _ = pc.handle_read(TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.address,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(datagram),
        });
    }

    /// When the peer next wants [`Self::handle_timeout`].
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let pc = self.pc.as_mut()?.poll_timeout();
        [pc, self.next_audio, self.next_frame]
            .into_iter()
            .flatten()
            .min()
    }

    /// Its timers relative to `now`, for a test that fails because time stands still.
    pub fn describe_timers(&mut self, now: Instant) -> String {
        let after = |at: Option<Instant>| at.map(|at| at.saturating_duration_since(now));
        let pc = self.pc.as_mut().and_then(|pc| pc.poll_timeout());
        format!(
            "connection {:?}, audio {:?}, frame {:?}, connected {}",
            after(pc),
            after(self.next_audio),
            after(self.next_frame),
            self.connected
        )
    }

    /// Runs the connection's timers and sends the media that is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(pc) = self.pc.as_mut() else {
            return;
        };
        if pc.poll_timeout().is_some_and(|at| at <= now) {
            let _ = pc.handle_timeout(now);
        }
        if self.connected {
            self.send_media(now);
        }
    }

    /// Datagrams the connection wants to send: (to, bytes).
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, BytesMut)> {
        let datagram = self.pc.as_mut()?.poll_write()?;
        Some((datagram.transport.peer_addr, datagram.message))
    }

    /// Reads the connection's events and what arrived.
    pub fn poll(&mut self, now: Instant) {
        let Some(pc) = self.pc.as_mut() else {
            return;
        };
        while let Some(event) = pc.poll_event() {
            match event {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(
                    RTCPeerConnectionState::Connected,
                ) if !self.connected => {
                    self.connected = true;
                    self.started = Some(now);
                    self.next_audio = self.audio.as_ref().map(|_| now);
                    self.next_frame = self.video.as_ref().map(|_| now);
                }
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    let kind = pc
                        .rtp_receiver(init.receiver_id)
                        .map_or(RtpCodecKind::Audio, |r| r.track().kind());
                    let stream = init.stream_ids.first().cloned().unwrap_or_default();
                    self.tracks.insert(init.track_id.clone(), (stream, kind));
                }
                _ => {}
            }
        }
        while let Some(TaggedRTCMessage { message, .. }) = pc.poll_read() {
            match message {
                RTCMessage::RtpPacket(track, packet) => {
                    let Some((stream, kind)) = self.tracks.get(&track).cloned() else {
                        continue;
                    };
                    if let Some((layer, index)) = trailer(&packet.payload) {
                        let arrivals = self.received.entry((stream, kind)).or_default();
                        arrivals.push(Arrival {
                            at: now,
                            layer,
                            index,
                        });
                    }
                }
                RTCMessage::RtcpPacket(_, rtcp) => {
                    for ssrc in keyframe_request_ssrcs(&rtcp) {
                        self.keyframe_requests += 1;
                        if let Some((_, streams)) = &mut self.video {
                            for stream in streams.iter_mut().filter(|s| s.ssrc == ssrc) {
                                stream.keyframe_due = true;
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Sends an audio packet every 20 ms and a video frame on every active layer every 33 ms
    /// (or at the steady rate it was asked for).
    fn send_media(&mut self, now: Instant) {
        let publish = self.publish;
        let started = self.started.unwrap_or(now);
        let Some(pc) = self.pc.as_mut() else {
            return;
        };
        if let (Some((sender, audio)), Some(at)) = (&mut self.audio, self.next_audio)
            && at <= now
        {
            let timestamp = (now.duration_since(started).as_micros() * 48 / 1000) as u32;
            let payload = marked(vec![0; AUDIO_BYTES], audio.layer, audio.index);
            write(now, pc, (*sender, None), audio, timestamp, payload);
            self.next_audio = Some(at + AUDIO_PACKET);
        }
        if let (Some((sender, streams)), Some(at)) = (&mut self.video, self.next_frame)
            && at <= now
        {
            let timestamp = (now.duration_since(started).as_micros() * 90 / 1000) as u32;
            for stream in streams.iter_mut().filter(|s| s.active) {
                let height = LAYERS[usize::from(stream.layer)].1;
                let bytes = publish.frame_bytes(stream.layer);
                let keyframe = std::mem::take(&mut stream.keyframe_due) || stream.index == 0;
                stream.picture_id = (stream.picture_id + 1) & 0x7fff;
                let payload =
                    vp8::test_payload(stream.picture_id, 0, true, keyframe, height, bytes);
                let payload = marked(payload, stream.layer, stream.index);
                write(
                    now,
                    pc,
                    (*sender, self.video_mid.as_deref()),
                    stream,
                    timestamp,
                    payload,
                );
            }
            self.next_frame = Some(at + publish.frame_interval());
        }
    }

    /// The SSRCs of its camera's layers, lowest first.
    pub fn video_ssrcs(&self) -> Vec<u32> {
        self.video
            .iter()
            .flat_map(|(_, streams)| streams.iter().map(|s| s.ssrc))
            .collect()
    }

    /// The peer vanishes: its connection is gone without a word.
    pub fn vanish(&mut self) {
        self.pc = None;
        self.next_audio = None;
        self.next_frame = None;
    }
}

fn stream(ssrc: u32, rid: Option<&'static str>, layer: u8) -> Outgoing {
    Outgoing {
        ssrc,
        rid,
        layer,
        sequence_number: 1,
        index: 0,
        picture_id: 0,
        keyframe_due: true,
        active: true,
    }
}

/// A client connection as a browser makes it: full ICE, the default interceptors, keyframe
/// requests handed to the application, and one host candidate at `address`.
fn connection(now: Instant, address: SocketAddr) -> RTCPeerConnection {
    let mut engine = MediaEngine::default();
    for (codec, kind) in [
        (Codec::Opus, RtpCodecKind::Audio),
        (Codec::Vp8, RtpCodecKind::Video),
    ] {
        engine
            .register_codec(codec_parameters(codec), kind)
            .expect("a codec registers");
    }
    // RTX, as browsers offer it: the node answers it only where it sends.
    let rtx = rtx_parameters(Codec::Vp8).expect("video has an RTX format");
    engine
        .register_codec(rtx, RtpCodecKind::Video)
        .expect("RTX registers");
    for uri in [SDES_MID_URI, SDES_RTP_STREAM_ID_URI] {
        let capability = RTCRtpHeaderExtensionCapability {
            uri: uri.to_owned(),
        };
        engine
            .register_header_extension(capability, RtpCodecKind::Video, None)
            .expect("an extension registers");
    }
    let registry = register_default_interceptors(Registry::new(), &mut engine)
        .expect("the default interceptors")
        .with(
            Slot::from(KEYFRAME_REQUESTS_SLOT),
            KeyframeRequests::default(),
        )
        .with(Slot::from(RTX_UNWRAP_SLOT), RtxUnwrap::default());
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_ice_connection_attempts(Some(Duration::from_millis(50)), Some(28))
        .build();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(settings)
        .with_media_engine(engine)
        .with_interceptor_registry(registry)
        .build(now)
        .expect("a connection");
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: address.ip().to_string(),
            port: address.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .expect("a host candidate");
    let candidate = RTCIceCandidate::from(&candidate).to_json().expect("json");
    pc.add_local_candidate(candidate).expect("the candidate");
    pc
}

/// A track of `kind` with one encoding per (rid, SSRC).
fn track(
    stream_id: &str,
    kind: RtpCodecKind,
    codec: Codec,
    encodings: &[(Option<&str>, u32)],
) -> MediaStreamTrack {
    let id = format!("{stream_id}-{kind}");
    let encodings = encodings
        .iter()
        .map(|(rid, ssrc)| RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                rid: rid.unwrap_or_default().to_owned(),
                ssrc: Some(*ssrc),
                ..Default::default()
            },
            active: true,
            codec: rtp_codec(codec),
            ..Default::default()
        })
        .collect();
    MediaStreamTrack::new(stream_id.to_owned(), id.clone(), id, kind, encodings)
}

/// What each media section of an offer carries, by mid: the first audio section is the
/// microphone, the first video section the camera.
fn sources(sdp: &str, publishing: bool) -> BTreeMap<String, String> {
    let mut sources = BTreeMap::new();
    if !publishing {
        return sources;
    }
    let mut kind = "";
    for line in sdp.lines() {
        if let Some(media) = line.strip_prefix("m=") {
            kind = if media.starts_with("audio") {
                "microphone"
            } else {
                "camera"
            };
        } else if let Some(mid) = line.strip_prefix("a=mid:") {
            sources.insert(mid.trim().to_owned(), kind.to_owned());
        }
    }
    sources
}

/// `payload` with the mark, layer and index at its end.
fn marked(mut payload: Vec<u8>, layer: u8, index: u32) -> Bytes {
    let at = payload.len().saturating_sub(TRAILER);
    payload.truncate(at);
    payload.push(MARK);
    payload.push(layer);
    payload.extend_from_slice(&index.to_be_bytes());
    Bytes::from(payload)
}

/// The layer and index a payload ends with.
fn trailer(payload: &[u8]) -> Option<(u8, u32)> {
    let at = payload.len().checked_sub(TRAILER)?;
    let trailer = &payload[at..];
    (trailer[0] == MARK).then(|| {
        let index = u32::from_be_bytes([trailer[2], trailer[3], trailer[4], trailer[5]]);
        (trailer[1], index)
    })
}

/// Sends one packet of `stream`, with the mid and rid extensions the node binds layers by.
fn write(
    now: Instant,
    pc: &mut RTCPeerConnection,
    (sender, mid): (RTCRtpSenderId, Option<&str>),
    stream: &mut Outgoing,
    timestamp: u32,
    payload: Bytes,
) {
    let Some(mut sender) = pc.rtp_sender(sender) else {
        return;
    };
    let parameters = sender.get_parameters().rtp_parameters.clone();
    let Some(payload_type) = parameters.codecs.first().map(|c| c.payload_type) else {
        return;
    };
    let mut header = rtp::Header {
        version: 2,
        marker: true,
        payload_type,
        sequence_number: stream.sequence_number,
        timestamp,
        ssrc: stream.ssrc,
        ..Default::default()
    };
    let mid_extension = parameters
        .header_extensions
        .iter()
        .find(|e| e.uri == SDES_MID_URI);
    let rid = parameters
        .header_extensions
        .iter()
        .find(|e| e.uri == SDES_RTP_STREAM_ID_URI);
    if let (Some(rid_extension), Some(rid)) = (rid, stream.rid) {
        let _ = header.set_extension(rid_extension.id as u8, Bytes::from_static(rid.as_bytes()));
        if let (Some(mid_extension), Some(mid)) = (mid_extension, mid) {
            let _ = header.set_extension(mid_extension.id as u8, Bytes::from(mid.to_owned()));
        }
    }
    stream.sequence_number = stream.sequence_number.wrapping_add(1);
    stream.index += 1;
    let _ = sender.write_rtp(now, rtp::Packet { header, payload });
}
