//! One media connection of a synthetic participant: a `webrtc` peer connection to the node
//! that hosts the room, the tracks it publishes, and what it receives.
//!
//! A participant may have several in turn: when its session moves to another node, the old
//! connection is closed and a new one offered. What it received and the indices of what it
//! sends carry on across connections.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::{NackGeneratorBuilder, Slot};
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sdp::extmap::{AUDIO_LEVEL_URI, SDES_MID_URI, SDES_RTP_STREAM_ID_URI};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use treffpunkt_media_node::core::Codec;
use treffpunkt_media_node::session::interceptors::{
    KEYFRAME_REQUESTS_SLOT, KeyframeRequests, RTX_UNWRAP_SLOT, RtxUnwrap,
};
use treffpunkt_media_node::session::setup::{payload_type, rtx_parameters};
use treffpunkt_proto::random;
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription,
    Registry, SettingEngineBuilder, register_default_interceptors,
};
use webrtc::rtp_transceiver::RtpSender;

use crate::media::{self, Kind};
use crate::outgoing::{Outgoing, SINGLE, VideoLayer};
use crate::received::Arrival;
use crate::sender::{self, Extensions, Sending, Stream, unix_us};
use crate::{Error, Received, Result};

/// How late an SRTP packet may come and still be taken, as in browsers: to a subscriber without
/// RTX the node repairs loss by sending the packet again under its own sequence number, a round
/// trip after it (this client takes RTX, whose repairs come on a stream of their own).
const SRTP_REPLAY_WINDOW: usize = 1_024;

/// How often candidate pairs are checked while connecting. Browsers pace their checks at about
/// 50 ms; this client goes faster because its library (`rtc` 0.21.1) sends the DTLS
/// ClientHello only at the ICE agent's next tick after the pair is chosen, not at once as
/// browsers do, which at 50 ms added 35-50 ms to every join.
const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(10);
/// Checks of a pair before it fails: 1.4 s at [`ICE_CHECK_INTERVAL`], as browsers give it.
const ICE_MAX_BINDING_REQUESTS: u16 = 140;
/// How often one lost packet is asked for again before it is given up, as in Chromium.
const MAX_NACKS_PER_PACKET: u16 = 10;

/// A connection's state change, tagged with the connection's generation.
pub(crate) type StateChange = (u32, RTCPeerConnectionState);

struct Handler {
    generation: u32,
    states: mpsc::UnboundedSender<StateChange>,
    gathered: mpsc::UnboundedSender<()>,
    received: Received,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.states.send((self.generation, state));
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(());
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let received = self.received.clone();
        tokio::spawn(async move {
            let source = track.stream_id().await;
            let kind = match track.kind().await {
                RtpCodecKind::Audio => Kind::Audio,
                _ => Kind::Video,
            };
            // One log per remote track, looked up once: the packets then take only its own
            // lock, which nobody else holds for long.
            let log = received
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry((source.clone(), kind))
                .or_default()
                .clone();
            while let Some(event) = track.poll().await {
                let TrackRemoteEvent::OnRtpPacket(packet) = event else {
                    continue;
                };
                if packet.payload.is_empty() {
                    // Padding only (the node probing the line): no media to check.
                    continue;
                }
                let intact = media::check(kind, &packet.payload)
                    .filter(|stamp| stamp.source == source)
                    .map(|stamp| Arrival {
                        layer: stamp.layer,
                        index: stamp.index,
                        sent_at_us: stamp.sent_at_us,
                        bytes: packet.payload.len(),
                    });
                log.record(intact, Instant::now(), unix_us());
            }
        });
    }
}

pub(crate) fn codec(kind: Kind) -> RTCRtpCodec {
    match kind {
        Kind::Audio => RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        Kind::Video => RTCRtpCodec {
            mime_type: MIME_TYPE_VP8.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![],
        },
    }
}

/// A published track: its kind, its streams with their SSRCs (three for a simulcast camera;
/// one otherwise, described like a layer without a rid), the track and its sender.
struct Publication {
    kind: Kind,
    layers: Vec<(VideoLayer, u32)>,
    track: Arc<TrackLocalStaticRTP>,
    sender: Arc<dyn RtpSender>,
}

/// A media connection.
pub(crate) struct MediaConnection {
    pub pc: Arc<dyn PeerConnection>,
    tracks: Vec<Publication>,
    writers: Vec<JoinHandle<()>>,
    /// Says when the connection's candidates are gathered (once per description).
    gathered: mpsc::UnboundedReceiver<()>,
}

/// Everything a new connection needs.
pub(crate) struct ConnectionSetup<'a> {
    pub generation: u32,
    pub participant_id: &'a str,
    pub outgoing: Option<&'a Outgoing>,
    pub local_ip: IpAddr,
    pub states: mpsc::UnboundedSender<StateChange>,
    pub received: Received,
}

/// An offer and what its media sections carry, by mid (`microphone`, `camera`), as the node
/// wants to know it.
pub(crate) struct Offer {
    pub sdp: String,
    pub sources: BTreeMap<String, &'static str>,
}

/// The media engine of a connection: Opus and VP8 with its RTX format (as browsers offer it;
/// the node sends repairs on it), the audio level on audio; the default interceptors add NACK,
/// RTCP reports, transport-wide congestion control feedback (the node's downlink estimate runs
/// on it) and the mid and rid extensions on video.
fn media_engine() -> Result<MediaEngine> {
    let mut engine = MediaEngine::default();
    for (kind, rtp_kind, forwarded) in [
        (Kind::Audio, RtpCodecKind::Audio, Codec::Opus),
        (Kind::Video, RtpCodecKind::Video, Codec::Vp8),
    ] {
        engine.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: codec(kind),
                payload_type: payload_type(forwarded),
            },
            rtp_kind,
        )?;
    }
    if let Some(rtx) = rtx_parameters(Codec::Vp8) {
        engine.register_codec(rtx, RtpCodecKind::Video)?;
    }
    engine.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: AUDIO_LEVEL_URI.to_owned(),
        },
        RtpCodecKind::Audio,
        None,
    )?;
    Ok(engine)
}

/// A peer connection with this client's media engine, interceptors and ICE settings, bound to
/// `local_ip`, reporting to `handler`.
async fn peer_connection(handler: Handler, local_ip: IpAddr) -> Result<Arc<dyn PeerConnection>> {
    let mut engine = media_engine()?;
    let registry = register_default_interceptors(Registry::new(), &mut engine)?
        // The default generator asks for every missing packet again every 100 ms for as
        // long as it is missing. On a line that drops packets because it is full, the
        // retransmissions fill it further: after one overload the node spent the whole
        // line resending, the estimate stayed at its floor and video never came back.
        // Browsers give a packet up after ten requests; so does this client.
        .with(
            Slot::NackGenerator,
            NackGeneratorBuilder::new()
                .with_max_nacks_per_packet(MAX_NACKS_PER_PACKET)
                .build(),
        )
        .with(
            Slot::from(KEYFRAME_REQUESTS_SLOT),
            KeyframeRequests::default(),
        )
        .with(Slot::from(RTX_UNWRAP_SLOT), RtxUnwrap::default());
    Ok(Arc::new(
        PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(engine)
            .with_interceptor_registry(registry)
            .with_setting_engine(
                SettingEngineBuilder::new()
                    .with_multicast_dns_mode(MulticastDnsMode::Disabled)
                    // Check candidate pairs every 10 ms (see `ICE_CHECK_INTERVAL`), not
                    // every 200 ms, which alone added 150 ms to each join; as many checks
                    // as fit the default 1.4 s before a pair fails.
                    .with_ice_connection_attempts(
                        Some(ICE_CHECK_INTERVAL),
                        Some(ICE_MAX_BINDING_REQUESTS),
                    )
                    .with_srtp_replay_protection_window(SRTP_REPLAY_WINDOW)
                    .build(),
            )
            .with_handler(Arc::new(handler))
            .with_udp_addrs(vec![format!("{local_ip}:0")])
            .build()
            .await?,
    ))
}

/// Adds a track for the microphone and one for the camera of `outgoing` (with a stream per
/// layer), each with SSRCs of its own.
async fn publish(
    pc: &Arc<dyn PeerConnection>,
    participant_id: &str,
    outgoing: Option<&Outgoing>,
) -> Result<Vec<Publication>> {
    let mut tracks = Vec::new();
    let audio = outgoing.and_then(|outgoing| outgoing.audio.as_ref());
    let video = outgoing.and_then(|outgoing| outgoing.video.as_ref());
    let mut published: Vec<(Kind, Vec<(VideoLayer, u32)>)> = Vec::new();
    if audio.is_some() {
        published.push((Kind::Audio, vec![(SINGLE, random::u32())]));
    }
    if let Some(video) = video {
        let layers = video.layers().iter().map(|l| (*l, random::u32())).collect();
        published.push((Kind::Video, layers));
    }
    for (kind, layers) in published {
        let rtp_kind = match kind {
            Kind::Audio => RtpCodecKind::Audio,
            Kind::Video => RtpCodecKind::Video,
        };
        let track_id = format!("{participant_id}-{kind:?}").to_lowercase();
        // With simulcast, one encoding per layer, each named by its rid: the offer then
        // says `a=rid:<rid> send` for each, lowest first, and `a=simulcast:send q;h;f`.
        let encodings = layers
            .iter()
            .map(|(layer, ssrc)| RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    rid: layer.rid.unwrap_or_default().to_owned(),
                    ssrc: Some(*ssrc),
                    ..Default::default()
                },
                active: true,
                codec: codec(kind),
                ..Default::default()
            })
            .collect();
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            participant_id.to_owned(),
            track_id.clone(),
            track_id,
            rtp_kind,
            encodings,
        )));
        let sender = pc.add_track(track.clone() as Arc<dyn TrackLocal>).await?;
        tracks.push(Publication {
            kind,
            layers,
            track,
            sender,
        });
    }
    Ok(tracks)
}

impl MediaConnection {
    /// Builds a connection with the published tracks of `setup`, without a description yet.
    async fn build(setup: ConnectionSetup<'_>) -> Result<Self> {
        let (gathered_tx, gathered) = mpsc::unbounded_channel();
        let handler = Handler {
            generation: setup.generation,
            states: setup.states,
            gathered: gathered_tx,
            received: setup.received,
        };
        let pc = peer_connection(handler, setup.local_ip).await?;
        let tracks = publish(&pc, setup.participant_id, setup.outgoing).await?;
        Ok(Self {
            pc,
            tracks,
            writers: Vec::new(),
            gathered,
        })
    }

    /// Builds a connection that receives only and waits for the server's offer
    /// ([`Self::answer_complete`]), as a server that offers its subscribers wants.
    pub async fn receiving(setup: ConnectionSetup<'_>) -> Result<Self> {
        Self::build(ConnectionSetup {
            outgoing: None,
            ..setup
        })
        .await
    }

    /// Builds a connection, adds the published tracks (or a receive-only section for a
    /// listener), and returns it with its offer.
    pub async fn offer(setup: ConnectionSetup<'_>) -> Result<(Self, Offer)> {
        let mut connection = Self::build(setup).await?;
        if connection.tracks.is_empty() {
            // A listener still needs a media section to carry the connection's ICE and DTLS.
            connection
                .pc
                .add_transceiver_from_kind(
                    RtpCodecKind::Audio,
                    Some(RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Recvonly,
                        streams: vec![],
                        send_encodings: vec![],
                    }),
                )
                .await?;
        }
        let offer = connection.pc.create_offer(None).await?;
        connection.pc.set_local_description(offer).await?;
        let sdp = connection.gathered_description().await?;
        let sources = connection.sources().await?;
        Ok((connection, Offer { sdp, sources }))
    }

    /// The local description once its candidates are gathered (or after 5 s with those that
    /// are).
    async fn gathered_description(&mut self) -> Result<String> {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.gathered.recv()).await;
        Ok(self
            .pc
            .local_description()
            .await
            .ok_or(Error::Timeout("the local description"))?
            .sdp)
    }

    /// What each published track's media section carries, by mid.
    async fn sources(&self) -> Result<BTreeMap<String, &'static str>> {
        let mut sources = BTreeMap::new();
        for transceiver in self.pc.get_transceivers().await {
            let (Some(sender), Some(mid)) = (transceiver.sender().await?, transceiver.mid().await?)
            else {
                continue;
            };
            if let Some(publication) = self.tracks.iter().find(|p| p.sender.id() == sender.id()) {
                let source = match publication.kind {
                    Kind::Audio => "microphone",
                    Kind::Video => "camera",
                };
                sources.insert(mid, source);
            }
        }
        Ok(sources)
    }

    /// Applies the node's answer to this connection's offer.
    pub async fn apply_answer(&self, sdp: String) -> Result<()> {
        self.pc
            .set_remote_description(RTCSessionDescription::answer(sdp)?)
            .await?;
        Ok(())
    }

    /// Answers an offer of the node.
    pub async fn answer(&self, sdp: String) -> Result<String> {
        self.pc
            .set_remote_description(RTCSessionDescription::offer(sdp)?)
            .await?;
        let answer = self.pc.create_answer(None).await?;
        self.pc.set_local_description(answer.clone()).await?;
        Ok(self
            .pc
            .local_description()
            .await
            .map_or(answer.sdp, |description| description.sdp))
    }

    /// Answers a first offer with every candidate in the answer, for a server that does not
    /// take candidates one by one.
    pub async fn answer_complete(&mut self, sdp: String) -> Result<String> {
        self.pc
            .set_remote_description(RTCSessionDescription::offer(sdp)?)
            .await?;
        let answer = self.pc.create_answer(None).await?;
        self.pc.set_local_description(answer).await?;
        self.gathered_description().await
    }

    /// Starts sending once connected (again); does nothing when already sending.
    pub async fn start_sending(
        &mut self,
        source: &str,
        outgoing: &Outgoing,
        sending: &Arc<Sending>,
    ) -> Result<()> {
        if !self.writers.is_empty() {
            return Ok(());
        }
        for publication in &self.tracks {
            let (payload_type, ids) = negotiated(&publication.sender, publication.kind).await?;
            let mid = self.mid_of(&publication.sender).await?;
            let stream = |layer: usize, spec: &VideoLayer, ssrc: u32| {
                let mut extensions = Extensions {
                    fixed: Vec::new(),
                    audio_level: ids.audio_level,
                };
                // The node binds a simulcast layer only from packets that carry both, and
                // again after every renegotiation: they go on every packet.
                if let (Some(id), Some(mid)) = (ids.mid, &mid) {
                    extensions.fixed.push((id, Bytes::from(mid.clone())));
                }
                if let (Some(id), Some(rid)) = (ids.rid, spec.rid) {
                    extensions
                        .fixed
                        .push((id, Bytes::from_static(rid.as_bytes())));
                }
                Stream {
                    source: source.to_owned(),
                    layer: layer as u8,
                    ssrc,
                    payload_type,
                    extensions,
                    track: publication.track.clone(),
                    sending: sending.clone(),
                }
            };
            match (publication.kind, &outgoing.audio, &outgoing.video) {
                (Kind::Audio, Some(audio), _) => {
                    let (spec, ssrc) = &publication.layers[0];
                    self.writers.push(tokio::spawn(sender::send_audio(
                        stream(0, spec, *ssrc),
                        audio.clone(),
                    )));
                }
                (Kind::Video, _, Some(video)) => {
                    let mut requests = Vec::new();
                    for (layer, (spec, ssrc)) in publication.layers.iter().enumerate() {
                        let requested = Arc::new(AtomicBool::new(false));
                        requests.push((*ssrc, requested.clone()));
                        self.writers.push(tokio::spawn(sender::send_video_layer(
                            stream(layer, spec, *ssrc),
                            video.clone(),
                            *spec,
                            requested,
                        )));
                    }
                    self.writers
                        .push(tokio::spawn(sender::listen_for_keyframe_requests(
                            publication.track.clone(),
                            requests,
                        )));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The mid of the media section `sender` sends in.
    async fn mid_of(&self, sender: &Arc<dyn RtpSender>) -> Result<Option<String>> {
        for transceiver in self.pc.get_transceivers().await {
            if let Some(candidate) = transceiver.sender().await?
                && candidate.id() == sender.id()
            {
                return Ok(transceiver.mid().await?);
            }
        }
        Ok(None)
    }

    /// Stops sending and closes the connection.
    pub async fn close(self) {
        for writer in &self.writers {
            writer.abort();
        }
        let _ = self.pc.close().await;
    }
}

/// The header extension ids a sender negotiated that the client writes.
#[derive(Clone, Copy, Debug, Default)]
struct ExtensionIds {
    mid: Option<u8>,
    rid: Option<u8>,
    audio_level: Option<u8>,
}

/// The payload type and header extension ids `sender` negotiated for `kind`.
async fn negotiated(sender: &Arc<dyn RtpSender>, kind: Kind) -> Result<(u8, ExtensionIds)> {
    let mime = codec(kind).mime_type;
    let parameters = sender.get_parameters().await?;
    let payload_type = parameters
        .rtp_parameters
        .codecs
        .iter()
        .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(&mime))
        .map(|c| c.payload_type)
        .ok_or(Error::Timeout("a negotiated codec"))?;
    let id = |uri: &str| {
        parameters
            .rtp_parameters
            .header_extensions
            .iter()
            .find(|extension| extension.uri == uri)
            .and_then(|extension| u8::try_from(extension.id).ok())
    };
    let ids = match kind {
        Kind::Audio => ExtensionIds {
            audio_level: id(AUDIO_LEVEL_URI),
            ..Default::default()
        },
        Kind::Video => ExtensionIds {
            mid: id(SDES_MID_URI),
            rid: id(SDES_RTP_STREAM_ID_URI),
            ..Default::default()
        },
    };
    Ok((payload_type, ids))
}
