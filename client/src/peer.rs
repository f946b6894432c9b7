//! One media connection of a synthetic participant: a `webrtc` peer connection to the node
//! that hosts the room, the tracks it publishes, and what it receives.
//!
//! A participant may have several in turn: when its session moves to another node, the old
//! connection is closed and a new one offered. What it received and the indices of what it
//! sends carry on across connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::Slot;
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
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription,
    Registry, SettingEngineBuilder, register_default_interceptors,
};
use webrtc::rtp_transceiver::RtpSender;

use crate::feedback::{self, KeyframeRequests};
use crate::media::{self, Kind, Stamp};
use crate::outgoing::{Outgoing, OutgoingAudio, OutgoingVideo};
use crate::{Error, Received, Result};

/// How often candidate pairs are checked while connecting.
const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(50);
/// Checks of a pair before it fails: 1.4 s at [`ICE_CHECK_INTERVAL`].
const ICE_MAX_BINDING_REQUESTS: u16 = 28;

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
                let intact = media::check(kind, &packet.payload)
                    .filter(|stamp| stamp.source == source)
                    .map(|stamp| (stamp.index, stamp.sent_at_us));
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
    fn counter(&self, kind: Kind) -> &AtomicU32 {
        match kind {
            Kind::Audio => &self.audio,
            Kind::Video => &self.video,
        }
    }

    fn next(&self, kind: Kind) -> u32 {
        self.counter(kind).fetch_add(1, Ordering::Relaxed)
    }

    /// How many packets of `kind` were sent so far (the next index).
    pub fn sent(&self, kind: Kind) -> u32 {
        self.counter(kind).load(Ordering::Relaxed)
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
    pub outgoing: Option<&'a Outgoing>,
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
        let registry = register_default_interceptors(Registry::new(), &mut engine)?
            .with(Slot::from(feedback::SLOT), KeyframeRequests::default());
        let pc: Arc<dyn PeerConnection> = Arc::new(
            PeerConnectionBuilder::new()
                .with_configuration(RTCConfigurationBuilder::new().build())
                .with_media_engine(engine)
                .with_interceptor_registry(registry)
                .with_setting_engine(
                    SettingEngineBuilder::new()
                        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
                        // Check candidate pairs every 50 ms as browsers do (RFC 8445's Ta),
                        // not every 200 ms, which alone added 150 ms to each join; as many
                        // checks as fit the default 1.4 s before a pair fails.
                        .with_ice_connection_attempts(
                            Some(ICE_CHECK_INTERVAL),
                            Some(ICE_MAX_BINDING_REQUESTS),
                        )
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
        let sends = |kind| {
            setup.outgoing.is_some_and(|outgoing| match kind {
                Kind::Audio => outgoing.audio.is_some(),
                Kind::Video => outgoing.video.is_some(),
            })
        };
        if sends(Kind::Audio) || sends(Kind::Video) {
            for (kind, rtp_kind) in [
                (Kind::Audio, RtpCodecKind::Audio),
                (Kind::Video, RtpCodecKind::Video),
            ] {
                if !sends(kind) {
                    continue;
                }
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
        outgoing: &Outgoing,
        indices: &Arc<Indices>,
    ) -> Result<()> {
        if !self.writers.is_empty() {
            return Ok(());
        }
        for (kind, ssrc, track, sender) in &self.tracks {
            let stream = Stream {
                source: source.to_owned(),
                ssrc: *ssrc,
                payload_type: negotiated_payload_type(sender, *kind).await?,
                track: track.clone(),
                indices: indices.clone(),
            };
            let writer = match (kind, &outgoing.audio, &outgoing.video) {
                (Kind::Audio, Some(audio), _) => tokio::spawn(send_audio(stream, audio.clone())),
                (Kind::Video, _, Some(video)) => {
                    let requested = Arc::new(AtomicBool::new(false));
                    self.writers.push(tokio::spawn(listen_for_keyframe_requests(
                        track.clone(),
                        requested.clone(),
                    )));
                    tokio::spawn(send_video(stream, video.clone(), requested))
                }
                _ => continue,
            };
            self.writers.push(writer);
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

/// One published stream of a connection.
struct Stream {
    source: String,
    ssrc: u32,
    payload_type: u8,
    track: Arc<TrackLocalStaticRTP>,
    indices: Arc<Indices>,
}

impl Stream {
    /// Sends one packet of `kind`; `false` once the track is gone.
    async fn send(&self, kind: Kind, header: rtp::Header, size: usize, frame: Frame) -> bool {
        let stamp = Stamp {
            source: self.source.clone(),
            kind,
            index: self.indices.next(kind),
            sent_at_us: unix_us(),
            keyframe: frame.keyframe,
        };
        let packet = rtp::Packet {
            header,
            payload: media::payload_part(&stamp, size, frame.starts),
        };
        self.track.write_rtp(packet).await.is_ok()
    }

    fn header(&self, marker: bool, sequence_number: u16, timestamp: u32) -> rtp::Header {
        rtp::Header {
            version: 2,
            marker,
            payload_type: self.payload_type,
            sequence_number,
            timestamp,
            ssrc: self.ssrc,
            ..Default::default()
        }
    }
}

/// Where a packet stands in its frame.
#[derive(Clone, Copy)]
struct Frame {
    keyframe: bool,
    starts: bool,
}

async fn send_audio(stream: Stream, audio: OutgoingAudio) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut sequence_number = 0u16;
    let mut timestamp = 0u32;
    loop {
        tick.tick().await;
        let header = stream.header(false, sequence_number, timestamp);
        let frame = Frame {
            keyframe: false,
            starts: true,
        };
        if !stream
            .send(Kind::Audio, header, audio.packet_size, frame)
            .await
        {
            return;
        }
        sequence_number = sequence_number.wrapping_add(1);
        timestamp = timestamp.wrapping_add(960);
    }
}

/// Sets `requested` whenever the node asks for a keyframe of `track`.
async fn listen_for_keyframe_requests(track: Arc<TrackLocalStaticRTP>, requested: Arc<AtomicBool>) {
    while let Some(event) = track.poll().await {
        let TrackLocalEvent::OnRtcpPacket(packets) = event else {
            continue;
        };
        if packets
            .iter()
            .any(|packet| feedback::is_keyframe_request(packet.as_ref()))
        {
            requested.store(true, Ordering::Relaxed);
        }
    }
}

/// Sends video frames; a frame is a keyframe on schedule or when one was `requested`.
async fn send_video(stream: Stream, video: OutgoingVideo, requested: Arc<AtomicBool>) {
    let fps = video.fps.max(1);
    let mut tick = tokio::time::interval(Duration::from_secs(1) / fps);
    let (delta_size, key_size) = video.frame_sizes();
    let mut sequence_number = 0u16;
    // The frame count of this connection: it starts with a keyframe, then one every interval.
    let mut frames = 0u32;
    loop {
        tick.tick().await;
        let keyframe = frames.is_multiple_of(video.keyframe_interval.max(1))
            | requested.swap(false, Ordering::Relaxed);
        let timestamp = frames.wrapping_mul(90_000 / fps);
        let sizes: Vec<usize> = video
            .packets_of(if keyframe { key_size } else { delta_size })
            .collect();
        for (i, size) in sizes.iter().enumerate() {
            let last = i + 1 == sizes.len();
            let header = stream.header(last, sequence_number, timestamp);
            let frame = Frame {
                keyframe,
                starts: i == 0,
            };
            if !stream.send(Kind::Video, header, *size, frame).await {
                return;
            }
            sequence_number = sequence_number.wrapping_add(1);
        }
        frames = frames.wrapping_add(1);
    }
}
