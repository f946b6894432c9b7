//! One media connection of a synthetic participant: a `webrtc` peer connection to the node
//! that hosts the room, the tracks it publishes, and what it receives.
//!
//! A participant may have several in turn: when its session moves to another node, the old
//! connection is closed and a new one offered. What it received and the indices of what it
//! sends carry on across connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rtc::ice::mdns::MulticastDnsMode;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
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

use crate::media::{self, Kind, Stamp};
use crate::{Error, Publish, Received, Result};

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
            while let Some(event) = track.poll().await {
                let TrackRemoteEvent::OnRtpPacket(packet) = event else {
                    continue;
                };
                let intact =
                    media::verify(kind, &packet.payload).filter(|stamp| stamp.source == source);
                received
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry((source.clone(), kind))
                    .or_default()
                    .record(intact.as_ref(), Instant::now());
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

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as u64)
}

fn rand_ssrc() -> u32 {
    // Unique enough for a test client: the clock's nanoseconds mixed with a counter.
    static COUNTER: AtomicU32 = AtomicU32::new(1);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos ^ COUNTER.fetch_add(0x9e37_79b9, Ordering::Relaxed)) | 1
}

/// The next index of each published stream, shared by the connections in turn.
#[derive(Debug, Default)]
pub(crate) struct Indices {
    audio: AtomicU32,
    video: AtomicU32,
}

impl Indices {
    fn next(&self, kind: Kind) -> u32 {
        match kind {
            Kind::Audio => self.audio.fetch_add(1, Ordering::Relaxed),
            Kind::Video => self.video.fetch_add(1, Ordering::Relaxed),
        }
    }
}

/// A published track: its kind, SSRC, the track and its sender.
type Publication = (Kind, u32, Arc<TrackLocalStaticRTP>, Arc<dyn RtpSender>);

/// A media connection.
pub(crate) struct MediaConnection {
    pub pc: Arc<dyn PeerConnection>,
    tracks: Vec<Publication>,
    writers: Vec<JoinHandle<()>>,
}

/// Everything a new connection needs.
pub(crate) struct ConnectionSetup<'a> {
    pub generation: u32,
    pub participant_id: &'a str,
    pub publish: bool,
    pub states: mpsc::UnboundedSender<StateChange>,
    pub received: Received,
}

impl MediaConnection {
    /// Builds a connection, adds the published tracks (or a receive-only section for a
    /// listener), and returns it with its offer.
    pub async fn offer(setup: ConnectionSetup<'_>) -> Result<(Self, String)> {
        let (gathered_tx, mut gathered) = mpsc::unbounded_channel();
        let mut engine = MediaEngine::default();
        for (kind, rtp_kind, payload_type) in [
            (Kind::Audio, RtpCodecKind::Audio, 111),
            (Kind::Video, RtpCodecKind::Video, 96),
        ] {
            engine.register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: codec(kind),
                    payload_type,
                },
                rtp_kind,
            )?;
        }
        let registry = register_default_interceptors(Registry::new(), &mut engine)?;
        let pc: Arc<dyn PeerConnection> = Arc::new(
            PeerConnectionBuilder::new()
                .with_configuration(RTCConfigurationBuilder::new().build())
                .with_media_engine(engine)
                .with_interceptor_registry(registry)
                .with_setting_engine(
                    SettingEngineBuilder::new()
                        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
                        .build(),
                )
                .with_handler(Arc::new(Handler {
                    generation: setup.generation,
                    states: setup.states,
                    gathered: gathered_tx,
                    received: setup.received,
                }))
                .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
                .build()
                .await?,
        );
        let mut tracks = Vec::new();
        if setup.publish {
            for (kind, rtp_kind) in [
                (Kind::Audio, RtpCodecKind::Audio),
                (Kind::Video, RtpCodecKind::Video),
            ] {
                let ssrc = rand_ssrc();
                let track_id = format!("{}-{kind:?}", setup.participant_id).to_lowercase();
                let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                    setup.participant_id.to_owned(),
                    track_id.clone(),
                    track_id,
                    rtp_kind,
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(ssrc),
                            ..Default::default()
                        },
                        codec: codec(kind),
                        ..Default::default()
                    }],
                )));
                let sender = pc.add_track(track.clone() as Arc<dyn TrackLocal>).await?;
                tracks.push((kind, ssrc, track, sender));
            }
        } else {
            // A listener still needs a media section to carry the connection's ICE and DTLS.
            pc.add_transceiver_from_kind(
                RtpCodecKind::Audio,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    streams: vec![],
                    send_encodings: vec![],
                }),
            )
            .await?;
        }
        let offer = pc.create_offer(None).await?;
        pc.set_local_description(offer).await?;
        let _ = tokio::time::timeout(Duration::from_secs(5), gathered.recv()).await;
        let sdp = pc
            .local_description()
            .await
            .ok_or(Error::Timeout("the local description"))?
            .sdp;
        Ok((
            Self {
                pc,
                tracks,
                writers: Vec::new(),
            },
            sdp,
        ))
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

    /// Starts sending once connected (again); does nothing when already sending.
    pub async fn start_sending(
        &mut self,
        source: &str,
        publish: &Publish,
        indices: &Arc<Indices>,
    ) -> Result<()> {
        if !self.writers.is_empty() {
            return Ok(());
        }
        for (kind, ssrc, track, sender) in &self.tracks {
            let payload_type = negotiated_payload_type(sender, *kind).await?;
            self.writers.push(tokio::spawn(send_media(
                source.to_owned(),
                *kind,
                *ssrc,
                payload_type,
                track.clone(),
                publish.clone(),
                indices.clone(),
            )));
        }
        Ok(())
    }

    /// Stops sending and closes the connection.
    pub async fn close(self) {
        for writer in &self.writers {
            writer.abort();
        }
        let _ = self.pc.close().await;
    }
}

async fn negotiated_payload_type(sender: &Arc<dyn RtpSender>, kind: Kind) -> Result<u8> {
    let mime = codec(kind).mime_type;
    let parameters = sender.get_parameters().await?;
    parameters
        .rtp_parameters
        .codecs
        .iter()
        .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(&mime))
        .map(|c| c.payload_type)
        .ok_or(Error::Timeout("a negotiated codec"))
}

async fn send_media(
    source: String,
    kind: Kind,
    ssrc: u32,
    payload_type: u8,
    track: Arc<TrackLocalStaticRTP>,
    publish: Publish,
    indices: Arc<Indices>,
) {
    let (interval, clock_step, size) = match kind {
        Kind::Audio => (Duration::from_millis(20), 960u32, publish.audio_packet_size),
        Kind::Video => (
            Duration::from_secs(1) / publish.video_fps.max(1),
            90_000 / publish.video_fps.max(1),
            publish.video_packet_size,
        ),
    };
    let mut tick = tokio::time::interval(interval);
    let mut sequence_number = 0u16;
    let mut first = true;
    loop {
        tick.tick().await;
        let index = indices.next(kind);
        let stamp = Stamp {
            source: source.clone(),
            kind,
            index,
            sent_at_us: unix_us(),
            // A new connection starts with a keyframe, then one every interval.
            keyframe: kind == Kind::Video
                && (first || index.is_multiple_of(publish.keyframe_interval.max(1))),
        };
        first = false;
        let packet = rtp::Packet {
            header: rtp::Header {
                version: 2,
                marker: kind == Kind::Video,
                payload_type,
                sequence_number,
                timestamp: index.wrapping_mul(clock_step),
                ssrc,
                ..Default::default()
            },
            payload: media::payload(&stamp, size),
        };
        if track.write_rtp(packet).await.is_err() {
            return;
        }
        sequence_number = sequence_number.wrapping_add(1);
    }
}
